"""`kit bench MANIFEST` (no --local): the benchmark protocol in the built
runtime image, on the real engine.

Real: the digits example built by kit build (TF CPU base, builder, optimizer,
bake) into a throwaway copy, the benchmark container, the CLI. Nothing is faked.
"""

from __future__ import annotations

import json
import uuid

import pytest

from kit.build.pipeline import build
from kit.cli import main
from test_build import trained_example, write_manifest  # the example copy kit build's own tests use

pytestmark = pytest.mark.docker

REPOSITORY = f"kit-test/bench-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def built_example(engine, tf_base, tmp_path_factory):
    """The digits example, built (no smoke test: this module times the image, it does not prove it)."""
    d = tmp_path_factory.mktemp("bench-example")
    trained_example(d)
    manifest = write_manifest(d, repository=REPOSITORY)
    record = build(manifest, smoke=False)
    yield manifest, record
    engine.remove_image(record["image"], force=True)


def test_bench_runs_in_the_runtime_image(built_example, engine, capsys):
    manifest, record = built_example
    code = main(["bench", str(manifest), "--runs", "50", "--warmup", "5", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["image"] == record["image"] == f"{REPOSITORY}:0.1.0-cpu-native"
    assert report["protocol"] == {"warmup": 5, "runs": 50}
    # One row, labelled with the image's kit.optimization: the image holds only the model kit built.
    assert engine.image_inspect(record["image"]).labels["kit.optimization"] == "native"
    # One row per built batch size (the image's kit.batch_sizes), each in its own container.
    assert [(r["label"], r["batch_size"], r["error"]) for r in report["runs"]] == [("native", 1, None),
                                                                                  ("native", 8, None)]
    assert "holds only the model kit built (native)" in report["note"]
    assert report["runs"][0]["result"]["images_per_second"] > 0
    result = report["runs"][1]["result"]
    # It ran inside the image: its model path, its Python, 50 timed runs of batch 8.
    assert result["model_dir"] == "/opt/kit/model" and result["batch_size"] == 8
    assert result["runs"] == 50 and len(result["latencies_ms"]) == 50
    assert result["input_shapes"] == {"pixels": [8, 8, 8, 1]}
    assert result["images_per_second"] > 0 and result["optimization"] == "native"
    assert result["tensorflow"].startswith("2.17")
    # The benchmark containers are gone.
    assert not engine.containers(labels={"kit.bench": "digits"})


def test_bench_table_of_a_named_image_and_batch_size(built_example, capsys):
    manifest, record = built_example
    code = main(["bench", str(manifest), "--image", record["image"], "--batch-size", "8", "--runs", "50",
                 "--warmup", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = [row for row in map(str.split, captured.out.splitlines()) if row[:1] == ["native"] and row[1].isdigit()]
    assert [row[1] for row in rows] == ["8"], captured.out
    assert float(rows[0][2]) > 0  # images/s
    assert "holds only the model kit built (native)" in " ".join(captured.out.split())
    assert "batch size 8: 2 warm-up + 50 timed runs" in " ".join(captured.err.split())


def test_bench_names_a_missing_image_and_kit_build(engine, tmp_path, capsys):
    manifest = write_manifest(tmp_path, version="9.9.9", repository=REPOSITORY)  # never built; files absent
    code = main(["bench", str(manifest), "--runs", "5"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 4
    assert f"image {REPOSITORY}:9.9.9-cpu-native is not on the Docker engine" in err
    assert f"run `kit build {manifest}` first" in err
    assert "Traceback" not in err
    code = main(["bench", str(manifest), "--image", f"{REPOSITORY}:absent"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 4 and f"image {REPOSITORY}:absent is not on the Docker engine" in err and "Traceback" not in err
