"""Pure helpers of the rollout: waves, device addresses, smoke inputs."""

from __future__ import annotations

import pytest

from kit.fleet.rollout import zero_example, device_address, plan_waves

D = "sha256:" + "f" * 64


def test_plan_waves_canary_first_then_max_parallel():
    assert plan_waves([1, 2, 3], 1, 3) == [[1], [2, 3]]
    assert plan_waves([1, 2, 3, 4, 5], 2, 2) == [[1, 2], [3, 4], [5]]
    assert plan_waves([1, 2, 3], 0, 1) == [[1], [2], [3]]
    assert plan_waves([1, 2], 5, 4) == [[1, 2]]
    assert plan_waves([], 1, 3) == []


@pytest.mark.parametrize("host,addr", [
    ("unix:///var/run/docker.sock", "127.0.0.1"), ("tcp://10.0.0.7:2375", "10.0.0.7"),
    ("ssh://nvidia@nano-01.local", "nano-01.local"), ("ssh://nvidia@nano-02:2222", "nano-02"),
])
def test_device_address(host, addr):
    assert device_address(host) == addr


def test_smoke_example_shapes_from_tf_serving_metadata():
    image = {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "2"}, {"size": "3"}]}}
    assert zero_example(image) == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    ids = {"dtype": "DT_INT32", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "-1"}]}}
    assert zero_example(ids) == [0] and type(zero_example(ids)[0]) is int
    assert type(zero_example(image)[0][0]) is float
    text = {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]}}
    assert zero_example(text) == ""


def test_short_digest_keeps_name_and_12_hex():
    from kit.cli.views.fleet import short_digest

    assert short_digest(f"127.0.0.1:5000/vision/r@{D}") == "r@sha256:ffffffffffff"
    assert short_digest(None) == "-" and short_digest("r:1") == "r:1"
