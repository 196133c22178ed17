#!/usr/bin/env bash
# Build Linkerd's Go controller binary (linkerd/linkerd2, `go build ./controller/cmd`)
# at the commit pinned in versions.env, so that the benchmark can run Linkerd's
# destination server side by side with ours (`python -m bench --compare-with ...`,
# bench/README.md). Not part of `make test` or `make binaries`: it is a benchmark
# tool, and the build costs a few minutes of both cores.
#
# The result is cached outside the checkout, keyed by the commit:
#
#   $MCD_CACHE_DIR/bin/linkerd2-controller-<commit>/linkerd2-controller
#
# MCD_CACHE_DIR defaults to ${XDG_CACHE_HOME:-~/.cache}/multicluster-destination.
# A second run finds the binary and returns at once. Prints the directory on
# stdout as LINKERD2_CONTROLLER_DIR=DIR, for scripts to read; the destination
# server is its subcommand: `linkerd2-controller destination -addr ... -kubeconfig ...`.
#
# Where the source comes from, and why: the Go module proxy refuses the module
# github.com/linkerd/linkerd2 itself (403 "not available"), so the source is
# checked out with git at the pinned commit; every dependency it needs is an
# ordinary module from the module proxy, checked against the go.sum of that
# commit (-mod=readonly). Nothing from the checkout enters this repository.
#
# Environment:
#   LINKERD2_REPO        git URL or path of linkerd/linkerd2
#                        (default https://github.com/linkerd/linkerd2.git)
#   MCD_LINKERD2_SRC_DIR where to check the source out
#                        (default $MCD_CACHE_DIR/src/linkerd2-<commit>)
#
# Usage: deploy/local/build-linkerd-destination.sh [--quiet]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${MCD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/multicluster-destination}"
quiet=0
[[ "${1:-}" == "--quiet" ]] && quiet=1

log() { [[ $quiet == 1 ]] || echo "build-linkerd-destination: $*" >&2; }
die() {
  echo "build-linkerd-destination: $*" >&2
  exit 1
}

commit="$LINKERD2_COMMIT"
out_dir="$cache/bin/linkerd2-controller-$commit"
finish() {
  echo "LINKERD2_CONTROLLER_DIR=$out_dir"
  log "done"
  exit 0
}
if [[ -x "$out_dir/linkerd2-controller" && -f "$out_dir/.complete" ]]; then
  log "cached in $out_dir"
  finish
fi

# --- prerequisites, each with the reason and the fix ---
command -v git >/dev/null 2>&1 || die "git is required to fetch Linkerd's source; install git"
command -v go >/dev/null 2>&1 || die "the Go toolchain (go) is required; install Go >= the go line of linkerd2's go.mod"
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is required to keep two builds from running at once"

repo="${LINKERD2_REPO:-https://github.com/linkerd/linkerd2.git}"
src="${MCD_LINKERD2_SRC_DIR:-$cache/src/linkerd2-$commit}"

mkdir -p "$cache/bin"
# One build at a time: a second caller waits, then finds the finished binary.
exec 9>"$cache/bin/.linkerd2-controller.lock"
if ! flock -n 9; then
  log "another build of the Linkerd controller is running; waiting for it"
  flock 9
fi
if [[ -x "$out_dir/linkerd2-controller" && -f "$out_dir/.complete" ]]; then
  log "cached in $out_dir"
  finish
fi

# --- source at the pinned commit ---
if [[ ! -d "$src/.git" ]]; then
  log "cloning $repo into $src"
  rm -rf "$src.tmp.$$"
  git clone --quiet --no-checkout "$repo" "$src.tmp.$$" ||
    die "cannot clone $repo; set LINKERD2_REPO to a reachable clone or mirror of linkerd/linkerd2"
  mkdir -p "$(dirname "$src")"
  mv "$src.tmp.$$" "$src"
fi
if ! git -C "$src" cat-file -e "$commit^{commit}" 2>/dev/null; then
  git -C "$src" fetch --quiet origin "$commit" ||
    die "commit $commit is not in $repo; is LINKERD2_REPO a clone of linkerd/linkerd2?"
fi
git -C "$src" -c advice.detachedHead=false checkout --quiet --force "$commit"
git -C "$src" clean --quiet -fdx
log "source: $src at $(git -C "$src" describe --tags --always "$commit" 2>/dev/null || echo "$commit")"

# --- toolchain: never download another one behind the caller's back ---
export GOTOOLCHAIN=local
wanted="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$src/go.mod")"
have="$(go env GOVERSION)"
have="${have#go}"
if [[ -n "$wanted" ]]; then
  lowest="$(printf '%s\n%s\n' "$wanted" "$have" | sort -V | head -n1)"
  [[ "$lowest" == "$wanted" ]] ||
    die "Go $have is older than the $wanted linkerd2's go.mod asks for; install a newer Go"
fi

# --- build ---
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
export CGO_ENABLED=0
log "building ./controller/cmd ($LINKERD2_VERSION) with Go $have under nice" \
  "(first run only; several minutes on 2 cores, plus module downloads)"
start=$SECONDS
(cd "$src" && go mod download) ||
  die "go mod download failed: the Go module proxy must be reachable for linkerd2's dependencies"
tmp="$out_dir.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
(cd "$src" && nice -n 10 go build \
  -ldflags "-s -w -X github.com/linkerd/linkerd2/pkg/version.Version=$LINKERD2_VERSION" \
  -o "$tmp/linkerd2-controller" ./controller/cmd)
elapsed=$((SECONDS - start))
{
  echo "commit=$commit"
  echo "version=$LINKERD2_VERSION"
  echo "go=$have"
  echo "build_seconds=$elapsed"
} >"$tmp/BUILD_INFO"
touch "$tmp/.complete"
rm -rf "$out_dir"
mv "$tmp" "$out_dir"
log "built in ${elapsed}s into $out_dir"
finish
