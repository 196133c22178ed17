"""The scenarios: the load-test plan's four, federated, soak, profile, and issue 12's shapes.

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

Two more shapes come from the side-by-side comparison with Linkerd's Go
controller (issue 12): `few-large-services` (10 services x 100 streams,
50 <-> 100 endpoints) and `many-small-services` (100 services x 20 streams,
20 <-> 40 endpoints); with `many-services` (10,000 streams on 100 services)
they make the group `shapes`.

Two scenarios are not a list of steps and carry settings of their own:

* `soak` (`SoakSettings`, run by bench/soak.py): minutes of continuous churn,
  local and federated services whose Deployments keep changing size, streams
  closed and reopened, the link Secret rotated; it watches the server's RSS
  over time and compares every stream with the API at the end;
* `profile` (`ProfileSettings`, run by bench/profiles.py): a `GetProfile` and
  a `Get` stream per client and service while ServiceProfiles and Services
  change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

NAMES = (
    "baseline",
    "small-oscillation",
    "large-rollout",
    "many-services",
    "federated",
    "soak",
    "profile",
    "few-large-services",
    "many-small-services",
)
# `--scenario all` runs these; the soak (30 minutes) and profile (20,000 streams) run alone.
DEFAULT_NAMES = NAMES[:5]
# The shapes of the side-by-side comparison with Linkerd's Go controller (issue 12):
# `--scenario shapes` runs these three, in this order.
SHAPE_NAMES = ("few-large-services", "many-small-services", "many-services")
# Names that stand for several scenarios.
GROUPS = {"all": DEFAULT_NAMES, "shapes": SHAPE_NAMES}


def expand(name: str) -> tuple[str, ...]:
    """A scenario name or a group name (`all`, `shapes`) -> the scenarios to run."""
    if name in GROUPS:
        return GROUPS[name]
    if name in NAMES:
        return (name,)
    raise ValueError(f"unknown scenario {name!r}; one of {', '.join([*NAMES, *GROUPS])}")


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
class SoakSettings:
    """The soak: what churns, how often, for how long, and how RSS growth is read.

    Targets: `local_services` Services of `east`, and `federated_services`
    federated Services over a Service of `east` and one of `west` (linked).
    Every Deployment (each member of each target) picks a new size in
    [low, high] every `scale_interval_s` (±50 %, jittered per Deployment, so
    something is always changing). Every `churn_interval_s`, `churn_fraction`
    of all streams, drawn from those not `steady`, are closed by the client
    and opened again; `steady_fraction` of each target's streams stay open
    for the whole run. The link Secret of `west` gets a fresh token every
    `rotate_interval_s`. The server's RSS is read every `rss_interval_s`.
    """

    minutes: float = 30.0
    warmup_minutes: float = 5.0
    window_minutes: float = 5.0  # RSS growth: median of the last window - median after warm-up
    local_services: int = 4
    federated_services: int = 2
    low: int = 5
    high: int = 40
    scale_interval_s: float = 20.0
    churn_interval_s: float = 30.0
    churn_fraction: float = 0.10
    steady_fraction: float = 0.20
    rotate_interval_s: float = 60.0
    rss_interval_s: float = 10.0
    ping_interval_s: float = 1.0
    streams_per_target: int = 100
    seed: int = 1

    def __post_init__(self) -> None:
        if self.minutes <= 0 or self.warmup_minutes < 0 or self.window_minutes <= 0:
            raise ValueError("soak minutes and windows must be positive")
        if not 0 < self.low <= self.high:
            raise ValueError("soak sizes need 0 < low <= high")
        if self.local_services < 0 or self.federated_services < 0:
            raise ValueError("soak service counts must be >= 0")
        if self.local_services + self.federated_services < 1:
            raise ValueError("the soak needs at least one service")
        if not 0 <= self.steady_fraction <= 1 or not 0 <= self.churn_fraction <= 1:
            raise ValueError("soak fractions lie in [0, 1]")
        if self.streams_per_target < 1:
            raise ValueError("the soak needs at least one stream per target")

    @property
    def services(self) -> int:
        return self.local_services + self.federated_services


@dataclass(frozen=True)
class ProfileSettings:
    """The GetProfile scenario: per service, ServiceProfile and Service edits, `cycles` times.

    Each cycle is five steps, each applied to every service at once: create a
    ServiceProfile (a route and a retry budget naming a new version), update
    it (the next version), set the Service's `config.linkerd.io/opaque-ports`
    to its port, remove that annotation, delete the ServiceProfile.
    """

    cycles: int = 2
    endpoints: int = 10  # ready pods per service (the Get streams' answer)

    def __post_init__(self) -> None:
        if self.cycles < 1 or self.endpoints < 1:
            raise ValueError("profile cycles and endpoints must be >= 1")


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
    # Set for the two scenarios that are not a list of steps (see the module docstring).
    soak: SoakSettings | None = None
    profile: ProfileSettings | None = None

    def __post_init__(self) -> None:
        if self.clusters[0] != LOCAL:
            raise ValueError(f"the local cluster must come first and be {LOCAL!r}")
        if len(self.clusters) > 1 and not (self.federated or self.soak):
            raise ValueError("remote clusters are only used through federated services")
        if self.soak is not None and self.profile is not None:
            raise ValueError("a scenario is a soak or a profile run, not both")

    @property
    def kind(self) -> str:
        """Which runner runs it: "steps" (bench/run.py), "soak" or "profile"."""
        if self.soak is not None:
            return "soak"
        if self.profile is not None:
            return "profile"
        return "steps"

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
        if self.soak is not None:
            return self.soak.services * self.soak.high
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
    soak: SoakSettings | None = None,
    profile_services: int = 100,
    profile_streams_per_service: int = 100,
    profile_endpoints: int = 10,
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
    if name == "few-large-services":
        # Issue 12's first shape: few services with many endpoints each.
        return Scenario(
            name=name,
            services=10,
            streams_per_service=100,
            initial=50,
            steps=oscillation(50, 100, cycles or 3),
            transition_timeout_s=300.0,
        )
    if name == "many-small-services":
        # Issue 12's second shape: many services with few endpoints and streams each,
        # where the per-service cost of an event dominates.
        return Scenario(
            name=name,
            services=100,
            streams_per_service=20,
            initial=20,
            steps=oscillation(20, 40, cycles or 3),
            transition_timeout_s=600.0,
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
    if name == "soak":
        settings = soak or SoakSettings()
        return Scenario(
            name=name,
            services=settings.services,
            streams_per_service=settings.streams_per_target,
            initial=settings.low,
            steps=(),
            clusters=(LOCAL, "west") if settings.federated_services else (LOCAL,),
            soak=settings,
        )
    if name == "profile":
        if profile_services < 1 or profile_streams_per_service < 1:
            raise ValueError("the profile scenario needs at least one service and one client")
        scaled: tuple[str, ...] = ()
        if (profile_services, profile_streams_per_service) != (100, 100):
            scaled = (
                f"scaled down from 100 services x 100 clients to {profile_services} services "
                f"x {profile_streams_per_service} clients (a GetProfile and a Get stream each)",
            )
        return Scenario(
            name=name,
            services=profile_services,
            streams_per_service=profile_streams_per_service,
            initial=profile_endpoints,
            steps=(),
            profile=ProfileSettings(cycles=cycles or 2, endpoints=profile_endpoints),
            notes=scaled,
        )
    raise ValueError(f"unknown scenario {name!r}; one of {', '.join(NAMES)} or all")
