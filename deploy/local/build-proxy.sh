#!/usr/bin/env bash
# Build Linkerd's data-plane proxy (linkerd2-proxy) at the commit pinned in
# versions.env, for the end-to-end check of deploy/local/proxy-e2e.sh
# (docs/proxy-e2e.md). Not part of `make test`: the proxy's source is not on a
# package registry, so this script fetches it with git and builds it with cargo.
#
# The result is cached outside the checkout, keyed by the commit:
#
#   $MCD_CACHE_DIR/bin/linkerd2-proxy-<commit>/linkerd2-proxy
#
# MCD_CACHE_DIR defaults to ${XDG_CACHE_HOME:-~/.cache}/multicluster-destination.
# A second run finds the binary and returns at once. Prints the directory on
# stdout as LINKERD2_PROXY_DIR=DIR, for scripts to read.
#
# What the build needs, and why this script sets it:
#   - RUSTFLAGS="--cfg tokio_unstable": the proxy uses tokio's unstable metrics;
#     without it the build fails.
#   - One git dependency: the proxy's Cargo.lock pins kubert-prometheus-* from
#     https://github.com/linkerd/linkerd-kubert.git at LINKERD_KUBERT_COMMIT.
#     Set LINKERD_KUBERT_REPO to a local clone or mirror of that repository and
#     cargo is pointed at it through a git URL redirect (url.<repo>.insteadOf,
#     passed in the environment, never written to your git config); cargo then
#     fetches with the git command line so the redirect applies.
#   - The toolchain: the proxy pins one in rust-toolchain.toml. If rustup has it
#     installed it is used; otherwise the default toolchain is used when it is
#     at least as new (newer stable compilers build the pinned commit), and the
#     script says so. Nothing is downloaded behind your back.
#   - LTO is off (the proxy's release profile turns it on, which more than
#     doubles the build time) and debug info is off: this binary is a test tool.
#     MCD_PROXY_LTO=true restores the upstream profile.
#
# Environment:
#   LINKERD2_PROXY_REPO   git URL or path of linkerd2-proxy
#                         (default https://github.com/linkerd/linkerd2-proxy.git)
#   LINKERD_KUBERT_REPO   git URL or path to serve linkerd-kubert from (default: GitHub itself)
#   MCD_PROXY_SRC_DIR     where to check the source out
#                         (default $MCD_CACHE_DIR/src/linkerd2-proxy-<commit>)
#   MCD_PROXY_JOBS        cargo jobs (default: cargo's, one per core); the build runs under nice
#
# Usage: deploy/local/build-proxy.sh [--quiet]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${MCD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/multicluster-destination}"
quiet=0
[[ "${1:-}" == "--quiet" ]] && quiet=1

log() { [[ $quiet == 1 ]] || echo "build-proxy: $*" >&2; }
die() {
  echo "build-proxy: $*" >&2
  exit 1
}

commit="$LINKERD2_PROXY_COMMIT"
out_dir="$cache/bin/linkerd2-proxy-$commit"
if [[ -x "$out_dir/linkerd2-proxy" && -f "$out_dir/.complete" ]]; then
  log "cached in $out_dir"
  echo "LINKERD2_PROXY_DIR=$out_dir"
  exit 0
fi

# --- prerequisites, each with the reason and the fix ---
command -v git >/dev/null 2>&1 || die "git is required to fetch the proxy's source; install git"
command -v cargo >/dev/null 2>&1 ||
  die "cargo is required to build the proxy; install Rust (https://rustup.rs), stable >= the proxy's pinned toolchain"
command -v cc >/dev/null 2>&1 ||
  die "a C compiler (cc) is required: the proxy's TLS (aws-lc-sys, ring) and allocator (jemalloc) compile C; install gcc or clang"
command -v make >/dev/null 2>&1 || die "make is required by the jemalloc build; install make"
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is required to keep two builds from running at once"

proxy_repo="${LINKERD2_PROXY_REPO:-https://github.com/linkerd/linkerd2-proxy.git}"
kubert_url="https://github.com/linkerd/linkerd-kubert.git"
kubert_repo="${LINKERD_KUBERT_REPO:-}"
src="${MCD_PROXY_SRC_DIR:-$cache/src/linkerd2-proxy-$commit}"

mkdir -p "$cache/bin"
# One Rust build at a time on this machine: a second caller waits, then finds
# the finished binary.
exec 9>"$cache/bin/.linkerd2-proxy.lock"
if ! flock -n 9; then
  log "another build of the proxy is running; waiting for it"
  flock 9
fi
if [[ -x "$out_dir/linkerd2-proxy" && -f "$out_dir/.complete" ]]; then
  log "cached in $out_dir"
  echo "LINKERD2_PROXY_DIR=$out_dir"
  exit 0
fi

# --- source at the pinned commit ---
if [[ ! -d "$src/.git" ]]; then
  log "cloning $proxy_repo into $src"
  rm -rf "$src.tmp.$$"
  git clone --quiet --no-checkout "$proxy_repo" "$src.tmp.$$" ||
    die "cannot clone $proxy_repo; set LINKERD2_PROXY_REPO to a reachable clone or mirror of linkerd/linkerd2-proxy"
  mkdir -p "$(dirname "$src")"
  mv "$src.tmp.$$" "$src"
fi
if ! git -C "$src" cat-file -e "$commit^{commit}" 2>/dev/null; then
  git -C "$src" fetch --quiet origin "$commit" ||
    die "commit $commit is not in $proxy_repo; is LINKERD2_PROXY_REPO a clone of linkerd/linkerd2-proxy?"
fi
git -C "$src" -c advice.detachedHead=false checkout --quiet --force "$commit"
git -C "$src" clean --quiet -fdx --exclude=/target
log "source: $src at $(git -C "$src" describe --tags --always "$commit" 2>/dev/null || echo "$commit")"

grep -q "linkerd-kubert.git?tag=.*#$LINKERD_KUBERT_COMMIT\"" "$src/Cargo.lock" ||
  die "the proxy's Cargo.lock no longer pins linkerd-kubert at $LINKERD_KUBERT_COMMIT; update LINKERD_KUBERT_COMMIT in versions.env"

# --- git redirect for the one git dependency ---
export CARGO_NET_GIT_FETCH_WITH_CLI=true
if [[ -n "$kubert_repo" ]]; then
  if [[ -d "$kubert_repo" ]]; then
    git -C "$kubert_repo" cat-file -e "$LINKERD_KUBERT_COMMIT^{commit}" 2>/dev/null ||
      die "LINKERD_KUBERT_REPO=$kubert_repo does not hold linkerd-kubert commit $LINKERD_KUBERT_COMMIT"
  fi
  # GIT_CONFIG_COUNT/KEY/VALUE add configuration for the git commands cargo
  # runs, and for nothing else.
  export GIT_CONFIG_COUNT=1
  export GIT_CONFIG_KEY_0="url.$kubert_repo.insteadOf"
  export GIT_CONFIG_VALUE_0="$kubert_url"
  log "serving $kubert_url from $kubert_repo"
fi

# --- toolchain ---
pinned="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$src/rust-toolchain.toml" 2>/dev/null || true)"
if [[ -n "${RUSTUP_TOOLCHAIN:-}" ]]; then
  log "toolchain: RUSTUP_TOOLCHAIN=$RUSTUP_TOOLCHAIN (from your environment)"
elif command -v rustup >/dev/null 2>&1 && [[ -n "$pinned" ]]; then
  if rustup toolchain list | grep -q "^$pinned-"; then
    export RUSTUP_TOOLCHAIN="$pinned"
    log "toolchain: $pinned (the proxy's pinned toolchain)"
  else
    default_toolchain="$(rustup default | awk '{print $1}')"
    export RUSTUP_TOOLCHAIN="$default_toolchain"
    log "toolchain: the pinned $pinned is not installed; using the default $default_toolchain" \
      "(rustup toolchain install $pinned to use the pinned one)"
  fi
fi
rustc_version="$(cd "$src" && rustc --version | awk '{print $2}')" ||
  die "rustc does not run in $src; check your Rust installation"
if [[ -n "$pinned" && "$pinned" =~ ^[0-9]+\.[0-9]+ ]]; then
  lowest="$(printf '%s\n%s\n' "$pinned" "${rustc_version%%-*}" | sort -V | head -n1)"
  [[ "$lowest" == "$pinned" ]] ||
    die "rustc $rustc_version is older than the proxy's pinned $pinned; install a newer stable (rustup update stable)"
fi

# --- build ---
export RUSTFLAGS="--cfg tokio_unstable"
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_RELEASE_LTO="${MCD_PROXY_LTO:-false}"
export CARGO_PROFILE_RELEASE_DEBUG=0
export LINKERD2_PROXY_VERSION="$LINKERD2_PROXY_VERSION"
export LINKERD2_PROXY_VENDOR="multicluster-destination build-proxy.sh"
jobs=()
[[ -n "${MCD_PROXY_JOBS:-}" ]] && jobs=(--jobs "$MCD_PROXY_JOBS")

log "fetching crates (cargo fetch --locked)"
(cd "$src" && cargo fetch --locked) ||
  die "cargo fetch failed: crates.io (and linkerd-kubert, see LINKERD_KUBERT_REPO) must be reachable"
log "building linkerd2-proxy with rustc $rustc_version, LTO=$CARGO_PROFILE_RELEASE_LTO" \
  "(first run only; about 8 minutes on 2 cores without LTO)"
start=$SECONDS
(cd "$src" && nice -n 10 cargo build --frozen --release --package linkerd2-proxy "${jobs[@]}")
elapsed=$((SECONDS - start))

tmp="$out_dir.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$src/target/release/linkerd2-proxy" "$tmp/"
{
  echo "commit=$commit"
  echo "rustc=$rustc_version"
  echo "lto=$CARGO_PROFILE_RELEASE_LTO"
  echo "build_seconds=$elapsed"
} >"$tmp/BUILD_INFO"
touch "$tmp/.complete"
rm -rf "$out_dir"
mv "$tmp" "$out_dir"
log "built in ${elapsed}s into $out_dir"
echo "LINKERD2_PROXY_DIR=$out_dir"
