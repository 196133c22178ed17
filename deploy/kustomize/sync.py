"""Copy the hand-written manifests of ``deploy/`` into the Kustomize base.

Usage::

    .venv/bin/python deploy/kustomize/sync.py           # rewrite the copies
    .venv/bin/python deploy/kustomize/sync.py --check   # exit 1 if a copy is stale

Why copies: ``deploy/destination.yaml``, ``deploy/mirror.yaml`` and
``deploy/remote-access.yaml`` are the one place their RBAC is written (with
the comments that explain it), and they stay usable with a plain
``kubectl apply -f``. Kustomize refuses to load a file from outside a
kustomization's directory, and refuses symbolic links that point outside it,
so the base cannot list them where they are; it lists these copies instead.
Each copy is the file byte for byte under a one-line "generated" header, and
``--check`` (run by ``make lint`` and ``tests/unit/test_packaging_files.py``)
fails when someone edits one side only. The CRDs need no copy:
``deploy/crds/Kustomization`` makes that directory a kustomization of its own
(a file without a ``.yaml`` extension, so ``kubectl apply -f deploy/crds/``
does not try to apply it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1]
KUSTOMIZE = DEPLOY / "kustomize"

# Hand-written manifest (under deploy/) -> its copy in the base.
COPIES: dict[str, str] = {
    "destination.yaml": "base/destination/destination.yaml",
    "mirror.yaml": "base/mirror/mirror.yaml",
    "remote-access.yaml": "base/remote-access/remote-access.yaml",
}


def header(source: str) -> str:
    return (
        f"# GENERATED from deploy/{source} by deploy/kustomize/sync.py: edit that file, "
        "then run the script.\n"
    )


def expected_copies() -> dict[Path, str]:
    """Every copy's path and the text it should hold."""
    return {
        KUSTOMIZE / copy: header(source) + (DEPLOY / source).read_text()
        for source, copy in COPIES.items()
    }


def stale_copies() -> list[Path]:
    """The copies that are missing or differ from their source."""
    return [
        path
        for path, text in expected_copies().items()
        if not path.is_file() or path.read_text() != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale copies")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_copies()
        for path in stale:
            print(f"stale: {path.relative_to(DEPLOY.parent)}", file=sys.stderr)
        if stale:
            print("run: python deploy/kustomize/sync.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in expected_copies().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
