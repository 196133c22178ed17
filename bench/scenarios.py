"""The four scenarios of the load-test plan, and the federated one, as data.

Each scenario is a set of Deployments (kwok pods) behind Services, a number of
Get streams per Service, and a list of steps: scale every Deployment to a
replica count, or restart the rollout of every Deployment. A step is one
transition; the benchmark measures how long each stream took to see its end.

A scenario runs on one cluster (`east`), or on several: then every cluster
holds the same Deployments and Services, the first cluster is the local one
(the server's), the others are linked to it, and each stream asks for a
federated Service on the local cluster whose members are the Service of the
same name in every cluster (`federated`). A step then scales the Deployments
of every cluster at once, and a stream's target is the union.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

NAMES = ("baseline", "small-oscillation", "large-rollout", "many-services", "federated")
LOCAL = "east"
PODS_PER_NODE = 1000  # what tests/kube/cluster.py gives each kwok node
NODE_HEADROOM = 0.75  # keep nodes at most 3/4 full: terminating pods still count


@dataclass(frozen=True)
class Step:
    kind: str  # "scale" or "restart"
    replicas: int

    @property
    def label(self) -> str:
        return f"restart@{self.replicas}" if self.kind == "restart" else f"scale->{self.replicas}"


@dataclass(frozen=True)
class Scenario:
    name: str
    services: int
    streams_per_service: int
    initial: int
    steps: tuple[Step, ...]
    hold_s: float = 0.0
    transition_timeout_s: float = 300.0
    track_hash: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The first is the local cluster (the server's); the others are linked remotes.
    clusters: tuple[str, ...] = (LOCAL,)
    # Streams ask for a federated Service over every cluster's Service of that name.
    federated: bool = False

    def __post_init__(self) -> None:
        if self.clusters[0] != LOCAL:
            raise ValueError(f"the local cluster must come first and be {LOCAL!r}")
        if len(self.clusters) > 1 and not self.federated:
            raise ValueError("remote clusters are only used through federated services")

    @property
    def streams(self) -> int:
        return self.services * self.streams_per_service

    @property
    def members(self) -> int:
        """Services behind each stream's target: one per cluster when federated."""
        return len(self.clusters) if self.federated else 1

    @property
    def peak_pods(self) -> int:
        """Pods of one cluster at the highest step (every cluster holds as many)."""
        high = max([self.initial, *(s.replicas for s in self.steps)])
        surge = 1.25 if any(s.kind == "restart" for s in self.steps) else 1.0
        return math.ceil(self.services * high * surge)

    @property
    def node_count(self) -> int:
        return max(2, math.ceil(self.peak_pods / (PODS_PER_NODE * NODE_HEADROOM)))


def oscillation(low: int, high: int, cycles: int) -> tuple[Step, ...]:
    steps: list[Step] = []
    for _ in range(cycles):
        steps += [Step("scale", high), Step("scale", low)]
    return tuple(steps)


def build(
    name: str,
    *,
    cycles: int | None,
    hold_s: float,
    rolling_restart: bool,
    many_low: int,
    many_high: int,
    many_services: int,
) -> Scenario:
    if name == "baseline":
        return Scenario(
            name=name, services=10, streams_per_service=100, initial=100, steps=(), hold_s=hold_s
        )
    if name == "small-oscillation":
        return Scenario(
            name=name,
            services=10,
            streams_per_service=100,
            initial=10,
            steps=oscillation(10, 200, cycles or 3),
            transition_timeout_s=240.0,
        )
    if name == "large-rollout":
        steps: list[Step] = []
        for cycle in range(cycles or 2):
            steps.append(Step("scale", 1000))
            if cycle == 0 and rolling_restart:
                steps.append(Step("restart", 1000))
            steps.append(Step("scale", 500))
        return Scenario(
            name=name,
            services=1,
            streams_per_service=1000,
            initial=500,
            steps=tuple(steps),
            transition_timeout_s=300.0,
            track_hash=rolling_restart,
        )
    if name == "many-services":
        notes: tuple[str, ...] = ()
        if (many_low, many_high, many_services) != (50, 100, 100):
            notes = (
                f"scaled down from the plan's 100 services x 50<->100 endpoints to "
                f"{many_services} services x {many_low}<->{many_high} endpoints",
            )
        return Scenario(
            name=name,
            services=many_services,
            streams_per_service=100,
            initial=many_low,
            steps=oscillation(many_low, many_high, cycles or 2),
            transition_timeout_s=900.0,
            notes=notes,
        )
    if name == "federated":
        return Scenario(
            name=name,
            services=1,
            streams_per_service=1000,
            initial=50,
            steps=oscillation(50, 100, cycles or 3),
            transition_timeout_s=300.0,
            clusters=(LOCAL, "west", "north"),
            federated=True,
        )
    raise ValueError(f"unknown scenario {name!r}; one of {', '.join(NAMES)} or all")
