"""Helpers shared by the tests and the benchmarks (not part of the kit package).

Importable from the repository root: pytest puts it on sys.path (pyproject's
`pythonpath = ["."]`) and benchmarks run as `python -m bench.NAME` from there.

- server: `python -m kit.runtime.serving.main` as a background process
- fleet_harness: a real registry and dockerd "devices" for rollout tests
- swarm_harness: a real swarm of dockerd nodes in network namespaces
- manifests: kit.yaml written from data (MINIMAL, NANO, the digits example) with overrides
- layout: the size and coupling figures of kit/ (ast), for scripts/layout-figures and tests/unit/test_layout.py
Free ports come from kit.net.free_port.
"""
