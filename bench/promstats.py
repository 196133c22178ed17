"""Scrapes of the server's admin `/metrics`, and quantiles of histogram differences.

Quantiles are estimated as Prometheus' `histogram_quantile` does: find the
bucket holding the rank, interpolate linearly inside it (from 0 for the first
bucket). A rank that falls in the `+Inf` bucket is reported as the largest
finite bound, flagged `above_last_bucket`.
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Scrape:
    """The samples of one scrape: name -> labels (sorted items) -> value."""

    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for key, value in self.samples.get(name, {}).items():
            have = dict(key)
            if all(have.get(k) == v for k, v in labels.items()):
                total += value
        return total

    def buckets(self, name: str, **labels: str) -> dict[float, float]:
        """Cumulative bucket counts of histogram `name` by upper bound (inf included)."""
        out: dict[float, float] = {}
        for key, value in self.samples.get(name + "_bucket", {}).items():
            have = dict(key)
            if all(have.get(k) == v for k, v in labels.items()):
                bound = float(have["le"])
                out[bound] = out.get(bound, 0.0) + value
        return out


def parse(text: str) -> Scrape:
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            scrape.samples.setdefault(sample.name, {})[key] = float(sample.value)
    return scrape


def fetch(admin_address: str, timeout_s: float = 10.0) -> Scrape:
    """GET http://<admin_address>/metrics (loopback only) and parse it."""
    if not admin_address.startswith("127.0.0.1:"):
        raise ValueError(f"refusing to scrape a non-loopback address: {admin_address}")
    with urllib.request.urlopen(f"http://{admin_address}/metrics", timeout=timeout_s) as resp:
        return parse(resp.read().decode())


@dataclass(frozen=True)
class HistogramDelta:
    """Observations of one histogram between two scrapes."""

    bounds: tuple[float, ...]  # finite upper bounds, ascending
    cumulative: tuple[float, ...]  # per finite bound, then +Inf last
    count: float
    total_s: float

    def quantile(self, q: float) -> tuple[float | None, bool]:
        """(estimate in seconds, whether the rank fell above the last finite bound)."""
        if self.count <= 0:
            return None, False
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=False):
            if cumulative >= rank:
                inside = cumulative - below
                if inside <= 0:
                    return bound, False
                return lower + (bound - lower) * (rank - below) / inside, False
            lower, below = bound, cumulative
        return (self.bounds[-1] if self.bounds else None), True

    def share_at_most(self, bound: float) -> float | None:
        """Fraction of observations at or below a bucket bound (exact at bounds)."""
        if self.count <= 0:
            return None
        for b, cumulative in zip(self.bounds, self.cumulative, strict=False):
            if math.isclose(b, bound):
                return cumulative / self.count
        return None


def histogram_delta(before: Scrape, after: Scrape, name: str, **labels: str) -> HistogramDelta:
    b, a = before.buckets(name, **labels), after.buckets(name, **labels)
    finite = sorted(k for k in a if not math.isinf(k))
    cumulative = tuple(a[k] - b.get(k, 0.0) for k in finite)
    inf = math.inf
    count = a.get(inf, 0.0) - b.get(inf, 0.0)
    total = after.value(name + "_sum", **labels) - before.value(name + "_sum", **labels)
    return HistogramDelta(
        bounds=tuple(finite), cumulative=(*cumulative, count), count=count, total_s=total
    )
