#!/usr/bin/env bash
# Interop check with a real linkerd2-proxy (docs/proxy-e2e.md): builds the
# pinned proxy (build-proxy.sh) and the test cluster binaries
# (build-binaries.sh) if they are not cached yet, then runs
# deploy/local/proxy_e2e in a private network namespace: a local cluster,
# `destination serve`, a test certificate signer, two HTTP backends and the
# proxy, and checks that requests through the proxy reach endpoints we served
# and that a ServiceProfile's route timeout and retry are applied by the proxy.
# Prints PASS/FAIL per check; exits non-zero on any failure.
#
# Not part of `make test`: the proxy's source is not on a package registry, and
# its first build takes several minutes.
#
# Needs: Rust (cargo) and git for the build; util-linux (unshare), iproute2
# (ip) and iptables for the namespace; root, or unprivileged user namespaces.
#
# Environment: PYTHON (default .venv/bin/python of this checkout), and the
# variables of build-proxy.sh (LINKERD2_PROXY_REPO, LINKERD_KUBERT_REPO, ...).
# Arguments are passed on: --keep keeps the logs, --hold keeps everything
# running after the checks (then `nsenter --net --target <pid>` gets you in).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"

die() {
  echo "proxy-e2e: $*" >&2
  exit 1
}

[[ -x "$py" ]] ||
  die "no Python at $py; run \`make setup\` (or set PYTHON to a Python with the package and its dev extras)"
command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is required to make a private network namespace"
command -v ip >/dev/null 2>&1 || die "ip (iproute2) is required to set up the private network namespace"
command -v iptables >/dev/null 2>&1 ||
  die "iptables is required for the proxy's original-destination lookups (e.g. apt-get install iptables)"

"$here/build-binaries.sh" --quiet >/dev/null
proxy_dir="$("$here/build-proxy.sh" | sed -n 's/^LINKERD2_PROXY_DIR=//p')"
[[ -n "$proxy_dir" ]] || die "build-proxy.sh did not name the proxy's directory"

# A network namespace of our own: the NAT rule and addresses the check adds
# exist only there, and vanish with it. Without root, a user namespace gives
# the capabilities to set it up.
netns=(unshare --net --kill-child)
if [[ $(id -u) != 0 ]]; then
  netns=(unshare --user --map-root-user --net --kill-child)
fi
if ! "${netns[@]}" true 2>/dev/null; then
  die "cannot create a network namespace (${netns[*]}); run as root or enable unprivileged user namespaces"
fi

cd "$root"
exec "${netns[@]}" env MCD_E2E_PRIVATE_NETNS=1 PYTHONPATH="$here:$root${PYTHONPATH:+:$PYTHONPATH}" \
  "$py" -m proxy_e2e --proxy "$proxy_dir/linkerd2-proxy" "$@"
