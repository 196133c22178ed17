// Package grpcurl pins grpcurl, the command-line gRPC client that the
// integration tests use to check that reflection and Get work for operators.
// go.mod and go.sum were written by `go get <cmd>@<version>`; do not run
// `go mod tidy` here: no Go file imports the command, so tidy would drop it.
package grpcurl
