#!/usr/bin/env bash
# The README's main command (`make demo`): the multicluster walkthrough on two
# local clusters, east (the target, which exports) and west (the source, where
# the mirrors appear and the proxies ask).
#
#   1. podinfo runs in both clusters, frontend in east (kwok pods).
#   2. `destination multicluster link-gen` runs against east and its output is
#      piped into `kubectl apply` on west: a Link and two credentials Secrets
#      (the mirror's and the destination server's), with a reader identity of
#      least privilege on east.
#   3. `destination mirror` and `destination serve` run against west.
#   4. east exports podinfo in gateway mode (podinfo-east), frontend for
#      remote discovery (frontend-east), and podinfo as a federated member
#      beside west's own podinfo (podinfo-federated).
#   5. `kubectl get` shows the mirrors, `multicluster check` and `gateways`
#      diagnose the link, `destination profile` shows what GetProfile gives a
#      proxy for the federated service (a ServiceProfile's route), and live
#      `destination endpoints` views show the gateway going down and up
#      (podinfo-east) and the federated service's members scaling in both
#      clusters (podinfo-federated).
#
# East's gateway is a stand-in (deploy/local/demo_gateway.py) on this host's
# non-loopback address: it answers the mirror's probes; SIGUSR1 flips it.
# Ctrl-C stops everything.
#
# Environment: DEMO_SECONDS (default: until Ctrl-C) ends the last live view by
# itself; DEMO_PORT (8086), DEMO_ADMIN_PORT (9996) and DEMO_MIRROR_ADMIN_PORT
# (9997) move the servers.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$root/.venv/bin/python"
destination="$root/.venv/bin/destination"
port="${DEMO_PORT:-8086}"
admin_port="${DEMO_ADMIN_PORT:-9996}"
mirror_admin_port="${DEMO_MIRROR_ADMIN_PORT:-9997}"
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

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; }

# Retries a command quietly until it succeeds (up to $1 tenths of a second).
retry() {
  local tenths=$1
  shift
  for _ in $(seq "$tenths"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  "$@"
}

step "starting clusters east (target) and west (source)"
"$py" -m tests.kube up east west --env-file "$state/clusters.env" >"$state/clusters.log" 2>&1 &
pids+=($!)
for _ in $(seq 240); do
  [[ -s "$state/clusters.env" ]] && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$state/clusters.log"; exit 1; fi
  sleep 0.5
done
[[ -s "$state/clusters.env" ]] || { cat "$state/clusters.log"; echo "clusters did not start"; exit 1; }
# shellcheck disable=SC1091
source "$state/clusters.env"
kubectl_bin="$("$py" -c 'from tests.kube.binaries import Binaries; print(Binaries.locate().kubectl)')"
east=("$kubectl_bin" --kubeconfig "$KUBECONFIG_EAST")
west=("$kubectl_bin" --kubeconfig "$KUBECONFIG_WEST")
echo "east: $KUBECONFIG_EAST"
echo "west: $KUBECONFIG_WEST"

step "deploying demo/podinfo in east (2 pods) and west (1 pod), demo/frontend in east (2 pods)"
# kubectl on one cluster: kc east|west ARGS...
kc() {
  local cluster=$1
  shift
  if [[ $cluster == east ]]; then "${east[@]}" "$@"; else "${west[@]}" "$@"; fi
}
deploy() { # cluster name replicas
  kc "$1" -n demo create deployment "$2" --image="registry.invalid/$2:1" --replicas="$3" \
    --port=9898 >/dev/null
  kc "$1" -n demo expose deployment "$2" --port=9898 --target-port=9898 >/dev/null
}
for cluster in east west; do
  kc "$cluster" create namespace demo >/dev/null
  retry 50 kc "$cluster" -n demo get serviceaccount default
done
deploy east podinfo 2
deploy east frontend 2
deploy west podinfo 1

step "east's gateway: a stand-in answering the mirror's probes"
"$py" "$here/demo_gateway.py" >"$state/gateway.out" 2>"$state/gateway.log" &
gateway_pid=$!
pids+=("$gateway_pid")
for _ in $(seq 50); do [[ -s "$state/gateway.out" ]] && break; sleep 0.1; done
read -r gateway_ip probe_port <"$state/gateway.out"
echo "gateway $gateway_ip:4143, probes http://$gateway_ip:$probe_port/ready"

step "linking east into west"
show "destination multicluster link-gen --kubeconfig \$KUBECONFIG_EAST --cluster-name east" \
  "--gateway-addresses $gateway_ip --gateway-port 4143 --probe-port $probe_port" \
  "| kubectl --kubeconfig \$KUBECONFIG_WEST apply -f -"
"${west[@]}" create namespace linkerd-multicluster >/dev/null
"${west[@]}" create namespace linkerd >/dev/null
"$destination" multicluster link-gen --kubeconfig "$KUBECONFIG_EAST" --cluster-name east \
  --gateway-addresses "$gateway_ip" --gateway-port 4143 --probe-port "$probe_port" \
  --probe-period 1s --trust-domain east.local \
  --gateway-identity linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.east.local \
  2>"$state/link-gen.log" | "${west[@]}" apply -f -
sed 's/^/  link-gen: /' "$state/link-gen.log"

step "starting destination mirror and destination serve on west"
"$destination" mirror --kubeconfig "$KUBECONFIG_WEST" --namespace linkerd-multicluster \
  --admin-address "127.0.0.1:$mirror_admin_port" --identity demo-mirror \
  --log-format console --log-level warning >"$state/mirror.log" 2>&1 &
pids+=($!)
"$destination" serve --kubeconfig "$KUBECONFIG_WEST" --cluster-name west \
  --listen-address "127.0.0.1:$port" --admin-address "127.0.0.1:$admin_port" \
  --log-format console --log-level warning >"$state/serve.log" 2>&1 &
pids+=($!)
retry 100 curl -fsS "http://127.0.0.1:$admin_port/ready"
retry 100 curl -fsS "http://127.0.0.1:$mirror_admin_port/ready"
echo "destination serve: 127.0.0.1:$port (admin :$admin_port); mirror admin :$mirror_admin_port"

step "exporting east's services"
show "kubectl --kubeconfig \$KUBECONFIG_EAST -n demo label svc/podinfo mirror.linkerd.io/exported=true mirror.linkerd.io/federated=member"
"${east[@]}" -n demo label svc/podinfo mirror.linkerd.io/exported=true \
  mirror.linkerd.io/federated=member >/dev/null
show "kubectl --kubeconfig \$KUBECONFIG_EAST -n demo label svc/frontend mirror.linkerd.io/exported=remote-discovery"
"${east[@]}" -n demo label svc/frontend mirror.linkerd.io/exported=remote-discovery >/dev/null
show "kubectl --kubeconfig \$KUBECONFIG_WEST -n demo label svc/podinfo mirror.linkerd.io/federated=member"
"${west[@]}" -n demo label svc/podinfo mirror.linkerd.io/federated=member >/dev/null

mirrored() {
  "${west[@]}" -n demo get svc podinfo-east frontend-east podinfo-federated &&
    [[ -n "$("${west[@]}" -n demo get endpoints podinfo-east -o jsonpath='{.subsets[*].addresses[*].ip}')" ]] &&
    [[ "$("${west[@]}" -n demo get svc podinfo-federated \
      -o jsonpath='{.metadata.annotations.multicluster\.linkerd\.io/remote-discovery}')" == *east* ]] &&
    [[ -n "$("${west[@]}" -n demo get svc podinfo-federated \
      -o jsonpath='{.metadata.annotations.multicluster\.linkerd\.io/local-discovery}')" ]]
}
retry 300 mirrored >/dev/null 2>&1 || { echo "the mirrors did not appear; mirror log:"; tail -20 "$state/mirror.log"; }
show "kubectl --kubeconfig \$KUBECONFIG_WEST -n demo get svc,endpoints"
"${west[@]}" -n demo get svc,endpoints 2>/dev/null # (not the warning that v1 Endpoints is deprecated)
show "kubectl --kubeconfig \$KUBECONFIG_WEST -n demo get svc podinfo-federated -o jsonpath='{.metadata.annotations}'"
"${west[@]}" -n demo get svc podinfo-federated -o jsonpath='{.metadata.annotations}'
echo

step "diagnosing the link"
show "destination multicluster check --kubeconfig \$KUBECONFIG_WEST --mirror-admin 127.0.0.1:$mirror_admin_port"
"$destination" multicluster check --kubeconfig "$KUBECONFIG_WEST" \
  --mirror-admin "127.0.0.1:$mirror_admin_port" || true
show "destination multicluster gateways --mirror-admin 127.0.0.1:$mirror_admin_port"
retry 50 "$destination" multicluster gateways --mirror-admin "127.0.0.1:$mirror_admin_port" >/dev/null || true
"$destination" multicluster gateways --mirror-admin "127.0.0.1:$mirror_admin_port" || true

step "what a proxy in west is told"
for authority in podinfo-east frontend-east; do
  show "destination endpoints $authority.demo.svc.cluster.local:9898 --once"
  "$destination" endpoints "$authority.demo.svc.cluster.local:9898" --server "127.0.0.1:$port" \
    --once | cat || true
done
echo "(podinfo-east: east's gateway, with its identity; frontend-east: east's pods, directly)"

step "east's gateway goes down for 8 s, then comes back (a live view of podinfo-east)"
(
  sleep 3
  kill -USR1 "$gateway_pid"
  sleep 8
  kill -USR1 "$gateway_pid"
) &
pids+=($!)
timeout 20 "$destination" endpoints podinfo-east.demo.svc.cluster.local:9898 \
  --server "127.0.0.1:$port" | cat || true
sed 's/^/  /' "$state/gateway.log"

# Scale both clusters' podinfo up and down in the background, one cluster at a time.
(
  while true; do
    for move in "east 4" "west 3" "east 1" "west 1" "east 2" "west 2"; do
      sleep 5
      read -r cluster replicas <<<"$move"
      kc "$cluster" -n demo scale deployment podinfo --replicas="$replicas" >/dev/null 2>&1 || exit 0
    done
  done
) &
pids+=($!)

authority=podinfo-federated.demo.svc.cluster.local:9898
step "the profile a proxy gets for $authority (GetProfile)"
show "kubectl --kubeconfig \$KUBECONFIG_WEST apply -f - # a ServiceProfile: one route, its timeout and retries"
"${west[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: podinfo-federated.demo.svc.cluster.local
  namespace: demo
spec:
  routes:
    - name: GET /api/info
      condition: {method: GET, pathRegex: '/api/info'}
      timeout: 250ms
      isRetryable: true
      responseClasses:
        - condition: {status: {min: 500, max: 599}}
          isFailure: true
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
YAML
show "destination profile $authority --once"
for _ in $(seq 50); do
  out="$("$destination" profile "$authority" --server "127.0.0.1:$port" --once 2>&1 || true)"
  [[ $out == *"GET /api/info"* ]] && break
  sleep 0.2
done
echo "$out"

step "live endpoints of $authority"
echo "east's pods (10.11.x) and west's (10.12.x) together, each Deployment scaling every 10 s."
echo "also try: destination multicluster gateways --mirror-admin 127.0.0.1:$mirror_admin_port"
echo "          destination clusters --admin 127.0.0.1:$admin_port"
echo "          grpcurl -plaintext 127.0.0.1:$port list"
sleep 2
if [[ -n "${DEMO_SECONDS:-}" ]]; then
  timeout "$DEMO_SECONDS" "$destination" endpoints "$authority" --server "127.0.0.1:$port" || true
else
  "$destination" endpoints "$authority" --server "127.0.0.1:$port" || true
fi
