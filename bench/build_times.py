"""How long `kit build` takes, and how much a model-only change ships.

Runs the real CLI on a copy of the bundled example (cpu profile) with a
throwaway repository, three times side by side in one run:

  cold         first build of this model here (the TF base is present: `kit base`;
               the builder may already exist for this kit code: the table says)
  no change    the same manifest again: every step reused
  model only   the model retrained (3 epochs instead of 30) into the same path

and prints per-step timings, the total wall time of each, and the size of the
layer that changed against the whole image (what a push to a device sends vs
what a full image would be).

    .venv/bin/python -m bench.build_times [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from testkit import manifests

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "manifests" / "examples"


def kit_build(manifest: Path) -> tuple[dict, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "kit.cli", "build", str(manifest), "--json"],
                          capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"kit build failed (exit {proc.returncode})")
    return json.loads(proc.stdout), seconds


def train(out: Path, epochs: int) -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "digits" / "train.py"), "--out", str(out), "--epochs", str(epochs)],
                   check=True, capture_output=True)


def mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the images and the work dir")
    args = parser.parse_args(argv)

    from kit.docker_api import connect

    engine = connect()
    work = Path(tempfile.mkdtemp(prefix="kit-bench-build-"))
    repository = f"kit-bench/digits-{uuid.uuid4().hex[:8]}"
    images = []
    try:
        model = work / "digits"
        src = EXAMPLE / "digits"
        if (src / "saved_model" / "saved_model.pb").is_file() and (src / "parity.npy").is_file():
            shutil.copytree(src / "saved_model", model / "saved_model")
            shutil.copy2(src / "parity.npy", model / "parity.npy")
        else:
            train(model, 30)
        manifest = manifests.write_model(work / "digits.yaml", manifests.digits_example(image={"repository": repository}))

        runs = []
        cold, t = kit_build(manifest)
        images.append(cold["image"])
        runs.append(("cold", cold, t))
        same, t = kit_build(manifest)
        runs.append(("no change", same, t))
        train(model, 3)  # a different model, same path, same manifest
        changed, t = kit_build(manifest)
        runs.append(("model only", changed, t))

        steps = [s["name"] for s in cold["steps"]]
        print(f"kit build of the digits example (cpu profile), {time.strftime('%Y-%m-%d %H:%M')}")
        print()
        head = f"{'step':<10}" + "".join(f"{name:>22}" for name, _, _ in runs)
        print(head)
        print("-" * len(head))
        for step in steps:
            row = f"{step:<10}"
            for _, rec, _ in runs:
                s = next((x for x in rec["steps"] if x["name"] == step), None)
                cell = "%.1fs %s" % (s["seconds"], s["status"]) if s else "-"
                row += f"{cell:>22}"
            print(row)
        print("-" * len(head))
        print(f"{'wall':<10}" + "".join(f"{'%.1fs' % t:>22}" for _, _, t in runs))
        cold_t, same_t, changed_t = (t for _, _, t in runs)
        print(f"\nno-change rebuild: {same_t:.1f}s = {same_t / cold_t:.1%} of the cold build")
        print(f"model-only rebuild: {changed_t:.1f}s = {changed_t / cold_t:.1%} of the cold build")

        a, b = cold["layers"], changed["layers"]
        same_layers = sum(1 for x, y in zip(a, b) if x == y)
        print(f"\nlayers: {len(a)} before, {len(b)} after; {same_layers} identical, "
              f"changed: {[i for i, (x, y) in enumerate(zip(a, b)) if x != y]} (0 = base)")
        # Layer sizes from the image history (uncompressed); the top step with a size is the model COPY.
        history = engine.api.history(changed["image"])  # bench-only read of the engine's history
        top = next(h for h in history if h.get("Size"))
        total = changed["size"]
        print(f"changed layer (model): {mib(top['Size'])} of a {mib(total)} image "
              f"= {top['Size'] / total:.3%}; a push to a device that has the previous image sends only it")
        print(f"optimized model on disk: {mib(changed['model_layer']['size'])}")
        return 0
    finally:
        if not args.keep:
            for ref in images:
                try:
                    engine.remove_image(ref, force=True)
                except Exception:
                    pass
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept: {work} and {repository}")
        engine.close()


if __name__ == "__main__":
    sys.exit(main())
