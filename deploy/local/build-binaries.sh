#!/usr/bin/env bash
# Build the pinned upstream binaries the local test clusters run: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok,
# plus grpcurl, the operators' gRPC client the tests check us against.
#
# Each is built with the Go toolchain from the Go module proxy (wrapper modules
# with committed go.mod/go.sum in deploy/local/gomod/), once, into a cache
# outside the checkout keyed by version:
#
#   $MCD_CACHE_DIR/bin/kubernetes-<version>/{kube-apiserver,...}
#   $MCD_CACHE_DIR/bin/etcd-<version>/etcd
#   $MCD_CACHE_DIR/bin/kwok-<version>/kwok
#   $MCD_CACHE_DIR/bin/grpcurl-<version>/grpcurl
#
# MCD_CACHE_DIR defaults to ${XDG_CACHE_HOME:-~/.cache}/multicluster-destination.
# A second run finds the binaries and returns at once. Prints the
# directories on stdout, one line each as NAME=DIR, for scripts to read.
#
# Usage: deploy/local/build-binaries.sh [--quiet]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${MCD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/multicluster-destination}"
quiet=0
[[ "${1:-}" == "--quiet" ]] && quiet=1

log() { [[ $quiet == 1 ]] || echo "build-binaries: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  echo "build-binaries: the Go toolchain (go) is required to build the test cluster binaries; install Go >= 1.24" >&2
  exit 1
fi

# Never let the go command download another toolchain: the pinned modules all
# build with Go 1.24+, and a silent download would fail on a closed network.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -trimpath"
export CGO_ENABLED=0

# build_into NAME DIR MODULE_DIR LDFLAGS PACKAGE...
# Builds PACKAGEs from MODULE_DIR into DIR atomically: a half-finished build
# never looks like a finished one, so an interrupted run is simply repeated.
build_into() {
  local name="$1" dir="$2" module="$3" ldflags="$4"
  shift 4
  if [[ -f "$dir/.complete" ]]; then
    log "$name: cached in $dir"
    return
  fi
  local tmp="$dir.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "$name: building $* (first run only; this takes several minutes)"
  local start=$SECONDS
  (cd "$module" && go build -ldflags "$ldflags" -o "$tmp/" "$@")
  touch "$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "$name: built in $((SECONDS - start))s into $dir"
}

k8s_minor="${KUBERNETES_VERSION#v1.}"
k8s_minor="${k8s_minor%%.*}"
# Without these the binaries report v0.0.0, which clients and kwok reject.
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

etcd_dir="$cache/bin/etcd-$ETCD_VERSION"
kube_dir="$cache/bin/kubernetes-$KUBERNETES_VERSION"
kwok_dir="$cache/bin/kwok-$KWOK_VERSION"
grpcurl_dir="$cache/bin/grpcurl-$GRPCURL_VERSION"

build_into etcd "$etcd_dir" "$here/gomod/etcd" "-s -w" .
build_into kwok "$kwok_dir" "$here/gomod/kwok" "-s -w" sigs.k8s.io/kwok/cmd/kwok
build_into grpcurl "$grpcurl_dir" "$here/gomod/grpcurl" "-s -w" github.com/fullstorydev/grpcurl/cmd/grpcurl
build_into kubernetes "$kube_dir" "$here/gomod/kubernetes" "$k8s_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl

echo "ETCD_DIR=$etcd_dir"
echo "KUBERNETES_DIR=$kube_dir"
echo "KWOK_DIR=$kwok_dir"
echo "GRPCURL_DIR=$grpcurl_dir"
