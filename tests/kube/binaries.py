"""Where the pinned upstream binaries of the test clusters live.

`deploy/local/build-binaries.sh` builds them into a cache keyed by the versions
in `deploy/local/versions.env`; this module computes the same paths and checks
that each binary is there. It never builds: a test run that lacks a binary
fails at once with the command to run, instead of starting a long build in the
middle of a test session or, worse, skipping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DEPLOY = REPO_ROOT / "deploy" / "local"
BUILD_COMMAND = "deploy/local/build-binaries.sh"


class BinariesMissing(RuntimeError):
    """A pinned binary has not been built into the cache yet."""


def cache_dir() -> Path:
    """The cache root; the same default as build-binaries.sh."""
    if explicit := os.environ.get("MCD_CACHE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "multicluster-destination"


def pinned_versions() -> dict[str, str]:
    """KEY=VALUE lines of versions.env (comments and blanks ignored)."""
    versions: dict[str, str] = {}
    for line in (LOCAL_DEPLOY / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary a local cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    grpcurl: Path

    @classmethod
    def locate(cls) -> Binaries:
        """Paths of the cached binaries, or BinariesMissing naming what to run."""
        versions = pinned_versions()
        bin_dir = cache_dir() / "bin"
        kube = bin_dir / f"kubernetes-{versions['KUBERNETES_VERSION']}"
        binaries = cls(
            etcd=bin_dir / f"etcd-{versions['ETCD_VERSION']}" / "etcd",
            kube_apiserver=kube / "kube-apiserver",
            kube_controller_manager=kube / "kube-controller-manager",
            kube_scheduler=kube / "kube-scheduler",
            kubectl=kube / "kubectl",
            kwok=bin_dir / f"kwok-{versions['KWOK_VERSION']}" / "kwok",
            grpcurl=bin_dir / f"grpcurl-{versions['GRPCURL_VERSION']}" / "grpcurl",
        )
        missing = [
            str(path)
            for path in vars(binaries).values()
            if not (path.is_file() and os.access(path, os.X_OK))
        ]
        if missing:
            raise BinariesMissing(
                "test cluster binaries are not built: "
                + ", ".join(missing)
                + f". Run `{BUILD_COMMAND}` (or `make binaries`) once; it builds them "
                "with the Go toolchain into the cache (MCD_CACHE_DIR)."
            )
        return binaries
