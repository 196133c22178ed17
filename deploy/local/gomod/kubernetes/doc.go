// Package kubernetes pins the Kubernetes control-plane commands built for the
// local test clusters (kube-apiserver, kube-controller-manager, kube-scheduler,
// kubectl). k8s.io/kubernetes requires its staging modules at v0.0.0 and
// replaces them with folders of its own repository, so go.mod here replaces
// each of them with its published version (KUBERNETES_STAGING_VERSION).
//
// go.mod and go.sum were written by `go get <cmd>@<version>`; do not run
// `go mod tidy` here: no Go file imports the commands, so tidy would drop them.
package kubernetes
