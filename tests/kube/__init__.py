"""The project's real Kubernetes test environment (see cluster.py for the design)."""
