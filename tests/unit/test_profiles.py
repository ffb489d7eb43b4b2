"""`kit profiles`: every device profile and the stack pinned for it."""

from __future__ import annotations

import json

from kit.cli import main
from kit.profiles import PROFILES, profile_table


def test_table_lists_every_profile_and_the_pinned_stack(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in PROFILES:
        assert name in out
    for fact in ("sm_53", "fp32 fp16 native", "fp32 fp16 int8 native", "32.4.4", "7.1.3", "10.2", "2.3.1",
                 "nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3", "kit/tf-cpu-base:tf2.17.1"):
        assert fact in out, fact
    nano = next(line for line in out.splitlines() if line.startswith("jetson-nano"))
    assert "4.0 GiB" in nano and "3.0 GiB" in nano  # RAM, and the largest memory_limit it accepts
    assert max(len(line) for line in out.splitlines()) <= 80


def test_json_is_the_profile_table(capsys):
    assert main(["profiles", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == json.loads(json.dumps(profile_table()))
    nano = next(r for r in rows if r["name"] == "jetson-nano")
    assert nano["int8"] is False and "int8" not in nano["precisions"]
    assert nano["stacks"][0]["tensorrt"] == "7.1.3"
    cpu = next(r for r in rows if r["name"] == "cpu")
    assert cpu["precisions"] == ["native"] and cpu["stacks"][0]["name"] == "cpu"
