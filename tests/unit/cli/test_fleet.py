"""`kit push`, `kit rollout`, `kit fleet status`: bad input fails with the
right exit code and a message, before any Docker engine is asked."""

from __future__ import annotations

from kit.cli import main


def test_push_needs_a_tag(capsys):
    assert main(["push", "127.0.0.1:5000/vision/model"]) == 2
    err = capsys.readouterr().err
    assert "push needs a tagged image" in err and "REPOSITORY:TAG" in err


def test_push_refuses_a_digest(capsys):
    assert main(["push", "127.0.0.1:5000/vision/model@sha256:" + "0" * 64]) == 2
    assert "push needs a tagged image" in capsys.readouterr().err


def test_rollout_of_a_missing_fleet_file_is_invalid_input(tmp_path, capsys):
    assert main(["rollout", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_rollout_of_a_model_manifest_says_it_wants_a_fleet(tmp_path, capsys):
    f = tmp_path / "kit.yaml"
    f.write_text("apiVersion: kit/v1\nkind: Model\nmetadata: {name: m}\n")
    assert main(["fleet", "status", str(f)]) == 2
    assert "Fleet" in capsys.readouterr().err
