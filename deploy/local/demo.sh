#!/usr/bin/env bash
# The README's main command (`make demo`): two local clusters, a demo
# workload in each, `destination serve` watching east with west linked as a
# remote cluster (a credentials Secret holding a least-privileged reader
# token), the profile GetProfile gives a proxy for a federated service (a
# ServiceProfile's routes, timeouts and retries), and a live endpoints view of
# that service (east's and west's pods together) while both scale up and down.
# Ctrl-C stops everything.
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
kubectl_bin="$("$py" -c 'from tests.kube.binaries import Binaries; print(Binaries.locate().kubectl)')"
kubectl=("$kubectl_bin" --kubeconfig "$KUBECONFIG_EAST")
kubectl_west=("$kubectl_bin" --kubeconfig "$KUBECONFIG_WEST")

for side in east west; do
  if [[ $side == east ]]; then k=("${kubectl[@]}"); else k=("${kubectl_west[@]}"); fi
  echo "deploying demo/web (2 replicas) in $side ..."
  "${k[@]}" create namespace demo >/dev/null
  for _ in $(seq 50); do "${k[@]}" -n demo get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
  "${k[@]}" -n demo create deployment web --image=registry.invalid/web:1 --replicas=2 --port=8080 >/dev/null
  "${k[@]}" -n demo expose deployment web --port=80 --target-port=8080 >/dev/null
done

echo "linking west to east (deploy/remote-access.yaml on west, a link Secret on east) ..."
"${kubectl_west[@]}" apply -f "$root/deploy/remote-access.yaml" >/dev/null
for _ in $(seq 50); do
  "${kubectl_west[@]}" -n multicluster-destination get serviceaccount destination-remote-reader \
    >/dev/null 2>&1 && break
  sleep 0.2
done
token="$("${kubectl_west[@]}" -n multicluster-destination create token destination-remote-reader --duration=24h)"
# West's admin kubeconfig (server and CA embedded), with the reader's token as its user.
"$py" - "$KUBECONFIG_WEST" "$token" >"$state/west-reader.kubeconfig" <<'PY'
import sys

import yaml

config = yaml.safe_load(open(sys.argv[1]))
config["users"] = [{"name": "remote-reader", "user": {"token": sys.argv[2]}}]
for context in config["contexts"]:
    context["context"]["user"] = "remote-reader"
print(yaml.safe_dump(config))
PY
"${kubectl[@]}" create namespace linkerd >/dev/null
"${kubectl[@]}" -n linkerd create secret generic cluster-credentials-west \
  --type=mirror.linkerd.io/remote-kubeconfig --from-file=kubeconfig="$state/west-reader.kubeconfig" >/dev/null
"${kubectl[@]}" -n linkerd label secret cluster-credentials-west multicluster.linkerd.io/cluster-name=west >/dev/null
"${kubectl[@]}" -n linkerd annotate secret cluster-credentials-west \
  multicluster.linkerd.io/trust-domain=west.local multicluster.linkerd.io/cluster-domain=cluster.local >/dev/null
"${kubectl[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: web-federated
  namespace: demo
  annotations:
    multicluster.linkerd.io/local-discovery: web
    multicluster.linkerd.io/remote-discovery: web@west
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
YAML

echo "starting destination serve on 127.0.0.1:$port (admin :$admin_port) ..."
"$root/.venv/bin/destination" serve --kubeconfig "$KUBECONFIG_EAST" --cluster-name east \
  --listen-address "127.0.0.1:$port" --admin-address "127.0.0.1:$admin_port" \
  --log-format console --log-level warning >"$state/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$admin_port/ready" >/dev/null 2>&1 && break
  sleep 0.2
done

for _ in $(seq 100); do
  "$root/.venv/bin/destination" clusters --admin "127.0.0.1:$admin_port" >/dev/null 2>&1 && break
  sleep 0.2
done
"$root/.venv/bin/destination" clusters --admin "127.0.0.1:$admin_port" || true

# A ServiceProfile for the federated service: what GetProfile gives a proxy.
"${kubectl[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: web-federated.demo.svc.cluster.local
  namespace: demo
spec:
  routes:
    - name: GET /books/{id}
      condition: {method: GET, pathRegex: '/books/\d+'}
      timeout: 250ms
      isRetryable: true
      responseClasses:
        - condition: {status: {min: 500, max: 599}}
          isFailure: true
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
YAML
echo
echo "the profile a proxy gets for web-federated.demo.svc.cluster.local:80 (destination profile):"
for _ in $(seq 50); do
  out="$("$root/.venv/bin/destination" profile web-federated.demo.svc.cluster.local:80 \
    --server "127.0.0.1:$port" --once 2>&1 || true)"
  [[ $out == *"routes      1"* ]] && break
  sleep 0.2
done
echo "$out"
echo

# Scale the demo workloads up and down in the background, one cluster at a time.
(
  while true; do
    for step in "east 4" "west 3" "east 1" "west 1" "east 2" "west 2"; do
      sleep 5
      read -r side replicas <<<"$step"
      if [[ $side == east ]]; then k=("${kubectl[@]}"); else k=("${kubectl_west[@]}"); fi
      "${k[@]}" -n demo scale deployment web --replicas="$replicas" >/dev/null 2>&1 || exit 0
    done
  done
) &
pids+=($!)

authority=web-federated.demo.svc.cluster.local:80
echo "live endpoints of $authority: east's pods (10.11.x) and west's (10.12.x),"
echo "each Deployment scaling every 10 s:"
echo "  also try: destination clusters --admin 127.0.0.1:$admin_port    grpcurl -plaintext 127.0.0.1:$port list"
if [[ -n "${DEMO_SECONDS:-}" ]]; then
  timeout "$DEMO_SECONDS" "$root/.venv/bin/destination" endpoints "$authority" \
    --server "127.0.0.1:$port" || true
else
  "$root/.venv/bin/destination" endpoints "$authority" --server "127.0.0.1:$port" || true
fi
