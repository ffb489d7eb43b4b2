"""Helpers shared by the tests and the benchmarks (not part of the kit package).

Importable from the repository root: pytest puts it on sys.path (pyproject's
`pythonpath = ["."]`) and benchmarks run as `python -m bench.NAME` from there.

- server: `python -m kit.runtime.serving.main` as a background process
- fleet_harness: a real registry and dockerd "devices" for rollout tests
- manifests: typed ModelManifests without a file
Free ports come from kit.net.free_port.
"""
