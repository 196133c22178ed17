#!/usr/bin/env bash
# The README's main command (`make demo`): two local clusters, a demo
# workload, `destination serve` watching east, and a live endpoints view of
# the demo service while it scales up and down. Ctrl-C stops everything.
#
# Environment: DEMO_SECONDS (default: until Ctrl-C) ends the demo by itself,
# DEMO_PORT (default 8086) and DEMO_ADMIN_PORT (default 9996) move the server.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$root/.venv/bin/python"
port="${DEMO_PORT:-8086}"
admin_port="${DEMO_ADMIN_PORT:-9996}"
state="$(mktemp -d -t mcd-demo-XXXXXX)"
pids=()

cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
  echo "demo stopped"
}
trap cleanup EXIT INT TERM

echo "starting clusters east and west ..."
"$py" -m tests.kube up east west --env-file "$state/clusters.env" >"$state/clusters.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
  [[ -s "$state/clusters.env" ]] && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$state/clusters.log"; exit 1; fi
  sleep 0.5
done
[[ -s "$state/clusters.env" ]] || { cat "$state/clusters.log"; echo "clusters did not start"; exit 1; }
cat "$state/clusters.log"
# shellcheck disable=SC1091
source "$state/clusters.env"
kubectl=("$("$py" -c 'from tests.kube.binaries import Binaries; print(Binaries.locate().kubectl)')" --kubeconfig "$KUBECONFIG_EAST")

echo "deploying demo/web (3 replicas) in east ..."
"${kubectl[@]}" create namespace demo >/dev/null
for _ in $(seq 50); do "${kubectl[@]}" -n demo get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
"${kubectl[@]}" -n demo create deployment web --image=registry.invalid/web:1 --replicas=3 --port=8080 >/dev/null
"${kubectl[@]}" -n demo expose deployment web --port=80 --target-port=8080 >/dev/null

echo "starting destination serve on 127.0.0.1:$port (admin :$admin_port) ..."
"$root/.venv/bin/destination" serve --kubeconfig "$KUBECONFIG_EAST" --cluster-name east \
  --listen-address "127.0.0.1:$port" --admin-address "127.0.0.1:$admin_port" \
  --log-format console --log-level warning >"$state/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$admin_port/ready" >/dev/null 2>&1 && break
  sleep 0.2
done

# Scale the demo service up and down in the background.
(
  while true; do
    for replicas in 5 2 4 1 3; do
      sleep 6
      "${kubectl[@]}" -n demo scale deployment web --replicas="$replicas" >/dev/null 2>&1 || exit 0
    done
  done
) &
pids+=($!)

echo "live endpoints of web.demo.svc.cluster.local:80 (the deployment scales every 6 s):"
echo "  also try: grpcurl -plaintext 127.0.0.1:$port list    curl 127.0.0.1:$admin_port/metrics"
if [[ -n "${DEMO_SECONDS:-}" ]]; then
  timeout "$DEMO_SECONDS" "$root/.venv/bin/destination" endpoints web.demo.svc.cluster.local:80 \
    --server "127.0.0.1:$port" || true
else
  "$root/.venv/bin/destination" endpoints web.demo.svc.cluster.local:80 --server "127.0.0.1:$port" || true
fi
