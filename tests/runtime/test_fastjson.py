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


@pytest.mark.parametrize("number", [".5", "1.", "01", "-01", "00.5", "-", "+1", "1.2.3", "--1", "1-2", "1e", "1e+",
                                    "e5", "1E5.5", "0x10", "1 2"])
def test_numbers_json_refuses_are_refused_as_json_loads_refuses_them(number):
    """A number JSON's grammar refuses, inside a large dense array, is a syntax error, not a value."""
    text = "[" + ", ".join(["0.25"] * 200 + [number] + ["0.5"] * 200) + "]"
    body = '{"instances": %s}' % text
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        fastjson.loads(body.encode())


def test_every_number_form_json_allows_reads_as_json_loads_reads_it():
    """Integers, signs, exponents (a few, parsed one by one), long fractions, -0: the same float64 values."""
    rng = np.random.RandomState(5)
    values = ["0", "-0", "7", "-12", "0.0", "-0.0", "1e5", "-2.5E-3", "3e+2", "1.7976931348623157e308",
              "0.00046076028957031667", "-0.00012345678901234567", "123456789012345", "9.999999747378752e-05"]
    values += [repr(float(v)) for v in rng.uniform(-50, 50, size=3000).astype(np.float32)]
    values += [repr(float(v)) for v in np.round(rng.uniform(0, 1, size=3000), 3)]
    rng.shuffle(values)
    body = '{"instances": [%s]}' % ", ".join(values)
    decoded = fastjson.loads(body.encode())
    assert decoded.arrays, "the array was not cut out"
    got = decoded.resolve(decoded.data["instances"])
    expected = np.asarray(json.loads(body)["instances"], dtype=np.float64)
    assert got.dtype == np.float64 and got.shape == expected.shape
    # Exact where strtod's rounding is reachable by one division (<= 15 digits), within an ulp elsewhere.
    assert np.allclose(got, expected, rtol=2.5e-16, atol=0)
    with np.errstate(over="ignore"):  # 1.79e308 is inf as float32, on both sides
        assert np.array_equal(got.astype(np.float32), expected.astype(np.float32))
    assert np.array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.parametrize("text", ["[1, 2 3, 4]", "[1,\n2]", "[ 1 , 2 ]", "[1,2]\t", "[0.5,  0.25]", "[0.5 ,0.25]",
                                  "[0.5,\t0.25]", "[0.5, 0 .25]", "[0.5, 0. 25]", "[0.5, 0.25 ]"])
def test_whitespace(text):
    """Whitespace between two numbers is a syntax error; around brackets and commas it is allowed. json.dumps'
    ", " is read in place; any other whitespace takes the general path: the same result as json.loads."""
    body = '{"instances": [%s]}' % ", ".join([text] * 60)
    try:
        expected = json.loads(body)
    except ValueError:
        with pytest.raises(ValueError):
            fastjson.loads(body.encode(), min_bytes=16)
        return
    decoded = fastjson.loads(body.encode(), min_bytes=16)
    assert decoded.arrays, "the array was not cut out"
    assert np.array_equal(decoded.resolve(decoded.data["instances"]), np.asarray(expected["instances"]))


def test_large_integers_stay_exact_through_json_loads():
    """Integers beyond float64's 2**53 are not parsed as floats: json.loads keeps them exact for int64 inputs."""
    body = '{"instances": [%s]}' % ", ".join(["9007199254740993"] * 100)
    decoded = fastjson.loads(body.encode(), min_bytes=16)
    assert decoded.data["instances"][0] == 9007199254740993


def test_a_batch_as_clients_send_it():
    """The benchmark's body: a float32 image batch through json.dumps(x.tolist()) decodes to the same batch."""
    x = np.round(np.random.RandomState(6).uniform(0, 1, size=(2, 32, 32, 3)), 3).astype(np.float32)
    body = json.dumps({"signature_name": "serving_default", "instances": x.tolist()}).encode()
    decoded = fastjson.loads(body)
    got = decoded.resolve(decoded.data["instances"])
    assert np.array_equal(got.astype(np.float32), x) and decoded.data["signature_name"] == "serving_default"


def _values_as_clients_write_them(n, seed):
    """float32 reprs, short decimals, integers, signs, a few exponents, -0: every form in one list."""
    rng = np.random.RandomState(seed)
    values = [repr(float(v)) for v in rng.uniform(-2, 2, size=n).astype(np.float32)]
    values += [repr(float(v)) for v in np.round(rng.uniform(-100, 100, size=n), 3)]
    values += ["0", "-0", "17", "-3", "0.0", "-0.0", "2.5e-3", "-1E5", "7e+2"]
    rng.shuffle(values)
    return values


@pytest.mark.parametrize("block", [48, 100, 1000, 1 << 18])
@pytest.mark.parametrize("separator", [",", ", "])
def test_blocks_give_the_same_numbers_as_one_pass(block, separator):
    """The text is parsed a block at a time (block edges fall anywhere between numbers): every block size
    reads the same values, the ones json.loads reads (float32 reprs exact once rounded to float32)."""
    values = _values_as_clients_write_them(1500, 7)
    text = separator.join(values).encode()
    got = fastjson.parse_numbers(text, len(values), block=block)
    expected = np.asarray(json.loads("[" + text.decode() + "]"), dtype=np.float64)
    assert isinstance(got, np.ndarray) and np.allclose(got, expected, rtol=2.5e-16, atol=0)
    assert np.array_equal(got.astype(np.float32), expected.astype(np.float32))
    assert np.array_equal(np.signbit(got), np.signbit(expected))
    assert np.array_equal(got, fastjson.parse_numbers(text, len(values)))


@pytest.mark.parametrize("bad", ["1.2.3", "-", "01", ".5", "1.", "+1", "1e", "", "1 2", "0.5\t"])
@pytest.mark.parametrize("where", [0, 700, 1499])
def test_a_bad_number_in_any_block_is_refused(bad, where):
    """A number JSON refuses (or whitespace parse_numbers does not take) in the first, a middle or the last
    block: never a value."""
    values = ["0.125"] * 1500
    values[where] = bad
    text = ", ".join(values).encode()
    got = fastjson.parse_numbers(text, len(values), block=200)
    assert got is None or got is fastjson.IRREGULAR


def test_a_leading_minus_zero_is_the_integer_zero():
    """The first numbers are re-read one by one: "-0" (an integer) is 0.0 there too, as json.loads has it."""
    body = '{"instances": [%s]}' % ", ".join(["-0"] + ["0.5"] * 300)
    decoded = fastjson.loads(body.encode())
    got = decoded.resolve(decoded.data["instances"])
    assert got[0] == 0.0 and not np.signbit(got[0])


def test_a_bytearray_body_is_read_in_place():
    """tornado's body is a bytearray: decoded as bytes are, without a copy first."""
    x = np.round(np.random.RandomState(8).uniform(0, 1, size=(3, 16, 16, 3)), 3).astype(np.float32)
    body = json.dumps({"instances": x.tolist()}).encode()
    decoded = fastjson.loads(bytearray(body))
    got = decoded.resolve(decoded.data["instances"])
    assert np.array_equal(got.astype(np.float32), x)


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")])
def test_json_dumps_bodies_are_read_in_place(monkeypatch, separators):
    """json.dumps' output (default or compact separators) is parsed with its brackets and spaces in place
    (parse_numbers told the list sizes), never through the general path (brackets and spaces removed)."""
    calls = []
    parse = fastjson.parse_numbers
    monkeypatch.setattr(fastjson, "parse_numbers", lambda *a, **k: calls.append(k.get("sizes")) or parse(*a, **k))
    x = np.round(np.random.RandomState(9).uniform(-1, 1, size=(2, 5, 7, 3)), 3).astype(np.float32)
    body = json.dumps({"instances": x.tolist()}, separators=separators).encode()
    decoded = fastjson.loads(body)
    assert np.array_equal(decoded.resolve(decoded.data["instances"]).astype(np.float32), x)
    assert calls == [[3, 21, 105]]


@pytest.mark.parametrize("text", ["[[1.5, 2] , [3, 4]]", "[[1.5, 2],[ 3, 4]]", "[ [1.5, 2], [3, 4] ]", "[[1.5, 2]\n, [3, 4]]",
                                  "[[1.5, 2], [3, 4]] ", "[[1.5, 2 ], [3, 4]]", "[[1.5, 2], [3, 4]\t]"])
def test_whitespace_around_brackets(text):
    """Whitespace next to a bracket is allowed by JSON: the general path reads it as json.loads does."""
    body = '{"instances": [%s]}' % ", ".join([text] * 40)
    decoded = fastjson.loads(body.encode(), min_bytes=16)
    assert decoded.arrays, "the array was not cut out"
    assert np.array_equal(decoded.resolve(decoded.data["instances"]), np.asarray(json.loads(body)["instances"]))


@pytest.mark.parametrize("text", ["[[1.5, 2], [3, 4]]]", "[[1.5, 2]], [3, 4]]", "[[1.5, 2], [[3, 4]]", "[[1.5, 2], [3, 4]"])
def test_misplaced_brackets_are_json_loads_errors(text):
    body = '{"instances": [%s]}' % ", ".join(["[[0.5, 1], [2, 3]]"] * 40 + [text])
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        fastjson.loads(body.encode(), min_bytes=16)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999", ".5", "1.", "01", "+1", "1.2.3", "0x1"])
@pytest.mark.parametrize("where", [0, 5000, 11999])
def test_the_server_refuses_a_bad_number_in_a_large_body_with_400(bad, where):
    """Through protocol.load_json_arrays, as the server decodes a body: a client's mistake anywhere in a
    large batch is a 400 with json.loads' reason, never a value and never a 500."""
    from kit.runtime.serving import protocol
    values = ["0.5490000247955322"] * 12000
    values[where] = bad
    body = ('{"instances": [[%s]]}' % ", ".join(values)).encode()
    with pytest.raises(protocol.RequestError) as info:
        protocol.load_json_arrays(bytearray(body))
    assert info.value.status == 400


def test_the_server_refuses_deep_nesting_with_400():
    from kit.runtime.serving import protocol
    body = ('{"instances": %s0.5%s}' % ("[" * 100000, "]" * 100000)).encode()
    with pytest.raises(protocol.RequestError) as info:
        protocol.load_json_arrays(bytearray(body))
    assert info.value.status == 400 and "deeply" in info.value.message


_NOT_DIGITS = ["a", "e", "E", "+", "-", ".", ":", "/", "]", "[", "x", "\x00", "\xe9", " ", "\t"]


@pytest.mark.parametrize("byte", _NOT_DIGITS)
@pytest.mark.parametrize("where", [0, 1, 9, 10, 11, 599])
@pytest.mark.parametrize("digit", [0, 2, 18])
def test_a_byte_that_is_not_a_digit_inside_a_number_is_refused(byte, where, digit):
    """The digit windows check every byte they read (nothing else does): a non-digit anywhere in a number
    (its integer digit, its first or last decimal), in the first number, at a block's first or last
    number (block=200: 10 numbers a block) or the last, is never a value."""
    values = ["0.12300000339746475"] * 600
    values[where] = values[where][:digit] + byte + values[where][digit + 1:]
    text = ", ".join(values).encode("utf-8")
    got = fastjson.parse_numbers(text, len(values), block=200)
    try:
        expected = json.loads("[" + text.decode("utf-8") + "]")
    except ValueError:
        assert got is None or got is fastjson.IRREGULAR
        return
    assert byte.isspace() and digit == 18  # "0.1230000033974647 , ": whitespace json.loads allows
    assert got is fastjson.IRREGULAR or np.array_equal(got, expected)


@pytest.mark.parametrize("byte", _NOT_DIGITS)
@pytest.mark.parametrize("where", [0, 1, 2, 2999, 6000, 11999])
def test_a_byte_that_is_not_a_digit_inside_a_number_of_a_large_body_is_a_400(byte, where):
    """Through the server's decoder, the array parsed in place (brackets and spaces in the body): json.loads'
    error, a 400, wherever the byte stands (first numbers, list edges, block edges, the last number)."""
    from kit.runtime.serving import protocol
    x = np.full((2, 20, 100, 3), 0.12300000339746475).tolist()
    values = json.dumps(x).split(", ")
    number = values[where].strip("[]")
    values[where] = values[where].replace(number, number[:4] + byte + number[5:])
    body = ('{"instances": %s}' % ", ".join(values)).encode("utf-8")  # "0.12e000...": inf, refused too
    with pytest.raises(protocol.RequestError) as info:
        protocol.load_json_arrays(bytearray(body))
    assert info.value.status == 400


@pytest.mark.parametrize("prefix", ["", " ", "{\"a\":"])
def test_numbers_at_the_start_of_the_body_read_as_json_loads_reads_them(prefix):
    """A bare array body: the first numbers' digit windows would start before the text; they are read one
    by one, nested brackets before them or not."""
    x = np.random.RandomState(10).uniform(0, 1, size=(3, 1, 1, 40)).astype(np.float32)
    x.flat[0] = 0.12300000339746475
    body = prefix + json.dumps(x.tolist()) + ("}" if prefix.startswith("{") else "")
    decoded = fastjson.loads(body.encode(), min_bytes=16)
    assert decoded.arrays, "the array was not cut out"
    data = decoded.data["a"] if prefix.startswith("{") else decoded.data
    expected = json.loads(body)
    expected = np.asarray(expected["a"] if prefix.startswith("{") else expected)
    got = decoded.resolve(data)  # 17-digit float32 reprs: within a float64 ulp, exact as float32
    assert got[0, 0, 0, 0] == expected[0, 0, 0, 0] and np.allclose(got, expected, rtol=2.5e-16, atol=0)
    assert np.array_equal(got.astype(np.float32), x)


@pytest.mark.parametrize("shape", [(1, 7, 5, 3), (9, 1, 4), (2, 300), (5, 2, 1, 1, 30)])
def test_the_outer_length_is_counted_while_parsing(shape):
    """The shape below the outer list comes from the first lists; the outer length from the numbers read:
    every shape, exponents in it or not, reads as json.loads reads it."""
    x = np.round(np.random.RandomState(11).uniform(-1, 1, size=shape), 4)
    for exponents in (False, True):
        if exponents:
            x.flat[-1] = 2.5e-7
        body = json.dumps({"instances": x.tolist()})
        decoded = fastjson.loads(body.encode(), min_bytes=16)
        got = decoded.resolve(decoded.data["instances"])
        assert isinstance(got, np.ndarray) and np.array_equal(got, np.asarray(json.loads(body)["instances"]))


@pytest.mark.parametrize("text", ["[[0.5, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [1, 2]], [[3, 4], [5]]",
                                  "[[0.5, 1], [2, 3], [4, 5]], [[6, 7], [8, 9]]",
                                  "[[0.5, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [1, 2], [3, 4]]",
                                  "[[0.5, 1], [2, 3], [4, 5]], [[6, 7, 8], [9, 1], [2, 3]]"])
def test_first_lists_that_mislead_are_read_as_json_loads_reads_them(text):
    """The first lists give the guess of the shape; a later list of another length: json.loads decides."""
    body = '{"instances": [%s]}' % ", ".join([text] * 30)
    decoded = fastjson.loads(body.encode(), min_bytes=16)
    assert not decoded.arrays
    assert decoded.data == json.loads(body)


@pytest.mark.parametrize("body", [
    '{"note": "a \\\\\\" [b", "instances": %s}',  # an escaped quote before the array: json.loads decides
    '{"instances": %s, "note": "a \\\\\\" ]b"}',
    '{"instances": %s, "note": "\\\\u00e9"}',
    '{"note": "[0.5, 0.25]", "instances": %s}',  # the first "[" is inside a string
    '{"instances": %s, "note": "]"}',  # the last "]" is inside a string
])
def test_strings_and_escapes_around_the_array_read_as_json_loads_reads_them(body):
    """The single array is checked byte by byte, its prefix for escapes and quotes: strings next to it
    (escaped quotes, brackets inside them) decode as json.loads decodes them."""
    x = np.round(np.random.RandomState(12).uniform(0, 1, size=(4, 30)), 3)
    text = body % json.dumps(x.tolist())
    decoded = fastjson.loads(text.encode(), min_bytes=16)
    expected = json.loads(text)
    assert decoded.data["note"] == expected["note"]
    assert np.array_equal(decoded.resolve(decoded.data["instances"]), np.asarray(expected["instances"]))


@pytest.mark.parametrize("byte", ['"', "{", "}", "\\\\", ":"])
def test_json_text_inside_the_array_span_is_never_a_value(byte):
    """A quote, brace or backslash inside the span the single array is taken from: json.loads' error."""
    values = ["0.5"] * 300
    values[150] = "0.5" + byte
    text = '{"instances": [%s]}' % ", ".join(values)
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        fastjson.loads(text.encode(), min_bytes=16)


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_more_numbers_than_the_first_guess_of_room(separators):
    """The outer length is not known before the numbers are read: room for one per 4 bytes first, grown
    when a block might not fit ("0,0,..." has one per 2 bytes)."""
    x = np.zeros((50, 400), dtype=np.int64)
    x[7, 3] = 5
    body = json.dumps({"instances": x.tolist()}, separators=separators)
    got = fastjson.parse_numbers(body.encode(), None, body.index("[[") + 2, len(body) - 3, block=300, sizes=[400])
    assert got is not None and got.size == x.size and np.array_equal(got, x.ravel())
    decoded = fastjson.loads(body.encode())
    assert np.array_equal(decoded.resolve(decoded.data["instances"]), x)
