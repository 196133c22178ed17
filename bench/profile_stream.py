"""What a `GetProfile` client keeps: the version of the profile it holds, and since when.

The profile scenario (bench/profiles.py) writes ServiceProfiles whose only
route is named `bench-v<N>` and whose retry budget allows `<N>` retries per
second, and flips the Service's opaque-ports annotation. Each
`DestinationProfile` a stream receives is reduced to a `ProfileTag`: the
version it carries (or "default" when no ServiceProfile applies) and whether
the port is opaque. A step of the scenario expects one tag per service; a
stream has seen the step when its current tag is that one, and `t_tag` (the
wall-clock time, `time.time()`, at which the current tag arrived) is when.

Only the tag is kept, not the messages: 20,000 streams hold a few bytes each.
"""

from __future__ import annotations

from dataclasses import dataclass

from destination._proto import destination_pb2 as pb

GET_PROFILE = "/io.linkerd.proxy.destination.Destination/GetProfile"
ROUTE_PREFIX = "bench-"  # route names the scenario writes: bench-v1, bench-v2, ...
ROUTE_LABEL = "route"  # the metrics label a route's name travels in
DEFAULT = "default"  # no ServiceProfile applies: the server's default profile


def version_name(version: int) -> str:
    return f"v{version}"


def route_name(version: int) -> str:
    return f"{ROUTE_PREFIX}{version_name(version)}"


@dataclass(frozen=True, slots=True)
class ProfileTag:
    """Which profile a message carries: `version` ("v3", "default", ...) and opacity."""

    version: str
    opaque: bool

    def __str__(self) -> str:
        return f"{self.version}{'+opaque' if self.opaque else ''}"


def profile_tag(message: pb.DestinationProfile) -> ProfileTag:
    """The tag of a message.

    * no `profile_ref` name: the default profile, version "default";
    * a route named `bench-v<N>` and a retry budget of `<N>` retries per
      second: version "v<N>";
    * that route with another budget: "mismatch:v<N>" (route and budget of
      two versions in one message would be a server bug worth seeing);
    * a ServiceProfile without such a route: "unmarked".
    """
    opaque = message.opaque_protocol
    if not message.profile_ref.resource.name:
        return ProfileTag(DEFAULT, opaque)
    for route in message.routes:
        name = route.metrics_labels.get(ROUTE_LABEL, "")
        if name.startswith(ROUTE_PREFIX):
            version = name[len(ROUTE_PREFIX) :]
            budget = message.retry_budget.min_retries_per_second
            if version != version_name(budget):
                return ProfileTag(f"mismatch:{version}", opaque)
            return ProfileTag(version, opaque)
    return ProfileTag("unmarked", opaque)


@dataclass(frozen=True, slots=True)
class ProfileReport:
    stream_id: int
    service: str
    connected: bool
    tag: ProfileTag | None
    t_tag: float | None  # when the current tag arrived
    messages: int
    ends: int  # times the server ended the stream (it was reopened)
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ProfileStatus:
    streams: int
    connected: int
    at_target: int
    ends: int
    messages: int
    last_change: float  # latest t_tag over all streams (0 if none)


class ProfileStream:
    """One GetProfile stream's state, fed every message in order."""

    __slots__ = (
        "connected",
        "ends",
        "last_error",
        "messages",
        "service",
        "stream_id",
        "t_connected",
        "t_tag",
        "tag",
    )

    def __init__(self, stream_id: int, service: str) -> None:
        self.stream_id = stream_id
        self.service = service
        self.connected = False
        self.t_connected: float | None = None
        self.tag: ProfileTag | None = None
        self.t_tag: float | None = None
        self.messages = 0
        self.ends = 0
        self.last_error: str | None = None

    def apply(self, message: pb.DestinationProfile, now: float) -> None:
        self.messages += 1
        if not self.connected:
            self.connected, self.t_connected = True, now
        tag = profile_tag(message)
        if tag != self.tag:
            self.tag, self.t_tag = tag, now

    def ended(self, error: str) -> None:
        """The server ended the stream; the next message (on a new stream) is a full profile."""
        self.ends += 1
        self.last_error = error

    def at(self, target: ProfileTag | None) -> bool:
        return target is not None and self.connected and self.tag == target

    def report(self) -> ProfileReport:
        return ProfileReport(
            stream_id=self.stream_id,
            service=self.service,
            connected=self.connected,
            tag=self.tag,
            t_tag=self.t_tag,
            messages=self.messages,
            ends=self.ends,
            last_error=self.last_error,
        )


def profile_status(streams: list[ProfileStream], targets: dict[str, ProfileTag]) -> ProfileStatus:
    return ProfileStatus(
        streams=len(streams),
        connected=sum(1 for s in streams if s.connected),
        at_target=sum(1 for s in streams if s.at(targets.get(s.service))),
        ends=sum(s.ends for s in streams),
        messages=sum(s.messages for s in streams),
        last_change=max((s.t_tag or 0.0 for s in streams), default=0.0),
    )
