"""`kit scan-log`: the article's own log gets the article's diagnosis; exit 0 / 5 / 2."""

import json
from pathlib import Path

from kit.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trt"


def test_the_articles_log_is_diagnosed_as_the_article_does(capsys):
    assert main(["scan-log", str(FIXTURES / "article_nano_fp16_oom.log")]) == 5
    text = " ".join(capsys.readouterr().out.split())
    assert "verdict: TF-TRT failed: the engine needed more memory than the limit allowed, engine creation failed " \
           "for TRTEngineOp_0_0; the native segment ran instead of TensorRT" in text
    assert "fix: keep max_workspace_size < memory_limit < memory available" in text
    assert "TensorFlow says this is not a failure by itself" in text  # the BFC line, a warning


def test_json_and_a_clean_log_exit_0(capsys):
    assert main(["scan-log", str(FIXTURES / "tf23_fp16_success.log"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["diagnosis"]["failed"] is False and data["diagnosis"]["problems"] == []
    assert [e["batch_size"] for e in data["findings"]["engines_built"]] == [1, 8]


def test_every_tf231_failure_kind_exits_5(capsys):
    assert main(["scan-log", str(FIXTURES / "tf231_every_pattern.log"), "--json"]) == 5
    kinds = {p["kind"] for p in json.loads(capsys.readouterr().out)["diagnosis"]["problems"]}
    assert {"segment_not_converted", "conversion_error", "calibration_failed", "native_fallback",
            "out_of_memory"} <= kinds


def test_a_log_without_tf_trt_lines_is_not_a_failure_but_says_so(tmp_path, capsys):
    log = tmp_path / "plain.log"
    log.write_text("2021-01-01 00:00:00.000000: I tensorflow/core/platform/cpu_feature_guard.cc:142] hello\n")
    assert main(["scan-log", str(log)]) == 0
    assert "no TF-TRT activity in this log" in capsys.readouterr().out


def test_unreadable_file_exits_2(tmp_path, capsys):
    assert main(["scan-log", str(tmp_path / "missing.log")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["scan-log", str(tmp_path)]) == 2  # a directory
