"""Load benchmark of `destination serve` on a local Kubernetes cluster (not a test).

`python -m bench --scenario all` reproduces, at a scale one small machine holds,
the scenarios of Linkerd's destination load-test plan: a steady baseline, a
small oscillation, a large rollout and many services. See bench/README.md.
"""
