//go:build tools

// Package tools pins kwok (simulated nodes and pods) for the local test
// clusters; build-binaries.sh builds sigs.k8s.io/kwok/cmd/kwok from it.
package tools

import _ "sigs.k8s.io/kwok/pkg/kwok/cmd"
