"""fastjson: large dense numeric arrays cut out of a JSON body and parsed by numpy, exactly as json.loads would."""

import json

import numpy as np
import pytest

from kit.runtime.serving import fastjson


def _same(body):
    """fastjson's result, arrays resolved, equals json.loads' (as numpy where it cut an array out)."""
    decoded = fastjson.loads(body.encode(), min_bytes=16)
    return decoded


@pytest.mark.parametrize("shape", [(40,), (8, 9), (2, 5, 4, 3), (3, 1, 7)])
def test_dense_arrays_match_json_loads(shape):
    rng = np.random.RandomState(0)
    x = np.round(rng.uniform(-1e3, 1e3, size=shape), 3)
    x.flat[0] = -1.5e-7
    body = json.dumps({"signature_name": "s", "instances": x.tolist()})
    decoded = _same(body)
    assert decoded.arrays, "the array was not cut out"
    got = decoded.resolve(decoded.data["instances"])
    assert isinstance(got, np.ndarray) and got.shape == shape
    assert np.array_equal(got, np.asarray(json.loads(body)["instances"]))
    assert decoded.data["signature_name"] == "s"


def test_named_instances_stack():
    rows = [{"a": list(range(30)), "b": "text"} for _ in range(3)]
    decoded = _same(json.dumps({"instances": rows}))
    stacked = decoded.resolve([r["a"] for r in decoded.data["instances"]])
    assert stacked.shape == (3, 30) and stacked[2, 29] == 29


@pytest.mark.parametrize("text", [
    "[[1,2,3,4,5,6,7,8,9],[1,2,3,4,5,6,7,8]]",  # ragged
    "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,1e999]",  # inf: json.loads' float('inf') path, not ours
    "[1,2,3,4,5,6,7,8,9,10,11,12,13,,14]",  # empty element: a syntax error json.loads reports
    "[1,2,3,4,5,6,7,8,9,10,11,12,13,--14]",
    "[[[1,2],[3,4]],[[5,6],[7,8,9]],[[1,2],[3,4]]]",
])
def test_what_does_not_fit_is_left_to_json_loads(text):
    body = '{"instances": %s}' % text
    try:
        expected = json.loads(body)
    except ValueError:
        with pytest.raises(ValueError):
            fastjson.loads(body.encode(), min_bytes=16)
        return
    decoded = fastjson.loads(body.encode(), min_bytes=16)
    assert not decoded.arrays
    assert decoded.data == expected


def test_brackets_inside_strings_are_not_touched():
    inner = "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]"
    body = json.dumps({"instances": [inner, inner], "x": list(range(20))})
    decoded = fastjson.loads(body.encode(), min_bytes=16)
    assert decoded.data["instances"] == [inner, inner]
    assert decoded.resolve(decoded.data["x"]).tolist() == list(range(20))


def test_small_bodies_take_json_loads():
    decoded = fastjson.loads(b'{"instances": [1.0, 2.0, 5.0]}')
    assert decoded.data == {"instances": [1.0, 2.0, 5.0]} and not decoded.arrays


def test_parse_decimals_rounds_like_strtod():
    rng = np.random.RandomState(3)
    values = np.round(rng.uniform(-1e6, 1e6, size=2000), 4).tolist() + [0.0, -0.0, 1.0, -7.0, 123456789012345.0]
    text = ",".join(repr(v) for v in values).encode()
    got = fastjson.parse_decimals(text, len(values))
    assert got is not None and got.tolist() == [float(v) for v in values]


def test_parse_decimals_float32_reprs_match_after_float32_rounding():
    """Python's repr of float32 values has up to 17 digits: equal once rounded to float32, the input dtype."""
    x = np.random.RandomState(4).uniform(-1, 1, size=5000).astype(np.float32)
    text = ",".join(repr(float(v)) for v in x).encode()
    got = fastjson.parse_decimals(text, x.size)
    assert np.array_equal(got.astype(np.float32), x)


@pytest.mark.parametrize("text", [b"1e5,2", b"1..5,2", b"1-2,3", b"-,1", b",1", b"1,2,", b"12345678901234567890,1"])
def test_parse_decimals_refuses_what_is_not_a_plain_decimal(text):
    assert fastjson.parse_decimals(text, text.count(b",") + 1) is None
