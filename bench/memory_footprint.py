"""Memory held per pod and per endpoint by discovery's slim cache.

Builds realistic raw objects (shaped like what the API server sends for a
Deployment's pods: managed fields, two containers, env, probes, status with
conditions), projects them into the index exactly as the reflector does, and
measures with tracemalloc what stays allocated once the raw JSON is dropped.
Also measures the addresses a subscribed (service, port) keeps.

    .venv/bin/python -m bench.memory_footprint [--pods 10000] [--per-slice 100]
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc
from typing import Any

from discovery.index import ClusterIndex
from discovery.models import Kind, ServiceRef
from discovery.ports import PortSet
from discovery.project import project
from discovery.topics import Topics, ViewKey


def raw_pod(i: int) -> dict[str, Any]:
    name = f"web-7d4b9c8f6d-{i:05d}"
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{i:032d}",
            "resourceVersion": str(100000 + i),
            "generateName": "web-7d4b9c8f6d-",
            "creationTimestamp": "2026-11-23T10:00:00Z",
            "labels": {
                "app": "web",
                "pod-template-hash": "7d4b9c8f6d",
                "linkerd.io/control-plane-ns": "linkerd",
                "linkerd.io/proxy-deployment": "web",
                "linkerd.io/workload-ns": "shop",
            },
            "annotations": {
                "linkerd.io/created-by": "linkerd/proxy-injector",
                "linkerd.io/proxy-version": "stable",
                "linkerd.io/identity-mode": "default",
                "linkerd.io/trust-root-sha256": "a" * 64,
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d4b9c8f6d",
                    "uid": "rs-uid",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-11-23T10:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {}}},
                }
            ],
        },
        "spec": {
            "serviceAccountName": "web",
            "nodeName": f"node-{i % 20}",
            "containers": [
                {
                    "name": "app",
                    "image": "example/web:1.2.3",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                },
                {
                    "name": "linkerd-proxy",
                    "image": "cr.l5d.io/linkerd/proxy:stable",
                    "ports": [
                        {"name": "linkerd-proxy", "containerPort": 4143},
                        {"name": "linkerd-admin", "containerPort": 4191},
                    ],
                    "env": [
                        {"name": "LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "value": "0.0.0.0:4143"},
                        {"name": "LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "value": "0.0.0.0:4191"},
                        {"name": "LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "value": "0.0.0.0:4190"},
                        {"name": "LINKERD2_PROXY_LOG", "value": "warn,linkerd=info"},
                    ],
                },
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
            "podIPs": [{"ip": f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"}],
            "hostIP": "172.18.0.2",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-11-23T10:00:01Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
        },
    }


def raw_slice(index: int, pods: range) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{index:05d}",
            "namespace": "shop",
            "labels": {
                "kubernetes.io/service-name": "web",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [raw_pod(i)["status"]["podIP"]],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{i % 20}",
                "zone": f"zone-{i % 3}",
                "targetRef": {
                    "kind": "Pod",
                    "namespace": "shop",
                    "name": raw_pod(i)["metadata"]["name"],
                    "uid": f"uid-{i:032d}",
                },
            }
            for i in pods
        ],
    }


def measure(pods: int, per_slice: int) -> dict[str, float]:
    index = ClusterIndex()
    service = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }
    index.upsert(project(Kind.SERVICE, service))  # type: ignore[arg-type]
    sampled = range(0, pods, max(1, pods // 100))
    raw_bytes = sum(len(json.dumps(raw_pod(i))) for i in sampled) / len(sampled)
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for i in range(pods):
        index.upsert(project(Kind.POD, raw_pod(i)))  # type: ignore[arg-type]
    gc.collect()
    after_pods = tracemalloc.get_traced_memory()[0]
    for s in range(0, pods, per_slice):
        index.upsert(project(Kind.ENDPOINT_SLICE, raw_slice(s, range(s, min(s + per_slice, pods)))))  # type: ignore[arg-type]
    gc.collect()
    after_slices = tracemalloc.get_traced_memory()[0]

    class Sink:
        def on_change(self, diff: object, snapshot: object) -> None:
            pass

    topics = Topics(index, default_opaque_ports=PortSet.EMPTY, enable_ipv6=True)
    subscription = topics.subscribe(
        service=ServiceRef("shop", "web"), port=80, key=ViewKey(), sink=Sink()
    )
    gc.collect()
    after_topic = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(subscription.initial.addresses) == pods
    return {
        "raw_pod_json_bytes": raw_bytes,
        "bytes_per_pod": (after_pods - start) / pods,
        "bytes_per_slice_endpoint": (after_slices - after_pods) / pods,
        "bytes_per_subscribed_address": (after_topic - after_slices) / pods,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--per-slice", type=int, default=100)
    args = parser.parse_args()
    for name, value in measure(args.pods, args.per_slice).items():
        print(f"{name:32} {value:10.0f}")


if __name__ == "__main__":
    main()
