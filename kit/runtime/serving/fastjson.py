"""Dense numeric arrays in a JSON body, decoded by numpy instead of json.loads.

json.loads builds a Python float object per number and np.asarray walks the
nested lists again: for a 8x224x224x3 image batch that is 1.2 million objects
and most of the request's time. Here every large array made only of numbers
([[0.1, 0.2], [0.3, 0.4]]) is cut out of the body first: its structure is
checked from its brackets and commas alone (a regular nested list reduces to
one token by repeated bytes.replace, level by level, in C), its numbers are
parsed by np.fromstring, and the body goes to json.loads with an unguessable
placeholder string in its place. Anything that does not fit (ragged lists,
NaN, strings, escapes, a count that does not add up) is left in the body for
json.loads, so errors and edge cases behave exactly as before.
"""

import binascii
import json
import os
import re
import warnings

import numpy as np

# Numbers, commas, brackets, whitespace: nothing else can appear in a dense numeric array.
_ARRAY = re.compile(br"\[[\[\]0-9eE+\-., \t\r\n]*\]")
_SPACES = b" \t\r\n"
_NUMBER_CHARS = b"0123456789eE+-."
_MIN_BYTES = 256  # smaller arrays: json.loads is as fast


class Decoded(object):
    """json.loads' result plus the arrays cut out (placeholder string -> float64 array)."""

    def __init__(self, data, arrays):
        self.data = data
        self.arrays = arrays

    def resolve(self, value):
        """A placeholder -> its array; a list of same-shape placeholders -> their stack; else `value`."""
        arrays = self.arrays
        if not arrays:
            return value
        if isinstance(value, str):
            return arrays.get(value, value)
        if isinstance(value, list) and value and isinstance(value[0], str) and value[0] in arrays:
            parts = [arrays.get(v) if isinstance(v, str) else None for v in value]
            if all(p is not None for p in parts) and len(set(p.shape for p in parts)) == 1:
                return np.stack(parts)
        return value


def _shape(skeleton):
    """The shape of a regular nested list from its skeleton (brackets and commas only), or None."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    shape = []
    s = skeleton
    for level in range(depth):
        end = s.find(b"]")
        if end < 0:
            return None
        inner = s[s.rfind(b"[", 0, end):end + 1]
        if level == 0:
            if inner == b"[]":
                return None  # an empty or one-element list: ambiguous here, json.loads decides
            size = inner.count(b",") + 1
            token = b"[" + b"," * (size - 1) + b"]"
        else:
            size = inner.count(b",") + 1
            token = b"[" + b",".join([b"x"] * size) + b"]"
        if inner != token:
            return None
        s = s.replace(token, b"x")
        shape.insert(0, size)
    return shape if s == b"x" else None


_COMMA, _MINUS, _DOT = 44, 45, 46
_POW10 = 10.0 ** np.arange(23)  # exact in float64 up to 1e22


def parse_decimals(text, count):
    """`count` comma-separated plain decimals (-12.345, no exponent) -> float64, or None when they are not.

    Vectorized by character column: one pass per character position (a number is at most 32 characters)
    over all numbers at once, so memory stays a few arrays of `count` elements. Each number's digits form
    an exact integer mantissa (int64, at most 18 digits) divided by an exact power of ten: up to 15 digits
    (below 2**53) IEEE division rounds as strtod does; longer ones (Python's repr of a float32 has up to
    17) may differ by one float64 ulp, which rounding to float32, the usual input dtype, removes.
    """
    buf = np.frombuffer(text, dtype=np.uint8)
    commas = np.flatnonzero(buf == _COMMA)
    if commas.size + 1 != count or not buf.size:
        return None
    starts = np.empty(count, dtype=np.int64)
    starts[0] = 0
    starts[1:] = commas + 1
    lengths = np.empty(count, dtype=np.int64)
    lengths[:-1] = commas
    lengths[-1] = buf.size
    lengths -= starts
    if lengths.min() < 1 or lengths.max() > 32:
        return None
    mantissa = np.zeros(count, dtype=np.int64)
    decimals = np.zeros(count, dtype=np.int64)
    digits = np.zeros(count, dtype=np.int64)
    significant = np.zeros(count, dtype=np.int64)
    seen_dot = np.zeros(count, dtype=bool)
    negative = None
    last = buf.size - 1
    for j in range(int(lengths.max())):
        valid = lengths > j
        ch = buf[np.minimum(starts + j, last)]
        is_digit = valid & (ch >= 48) & (ch <= 57)
        is_dot = valid & (ch == _DOT)
        is_minus = valid & (ch == _MINUS)
        if (valid & ~(is_digit | is_dot | is_minus)).any() or (is_dot & seen_dot).any():
            return None  # an exponent, a second dot, ...: the general path decides
        if j == 0:
            negative = is_minus
        elif is_minus.any():
            return None
        mantissa = np.where(is_digit, mantissa * 10 + (ch.astype(np.int64) - 48), mantissa)
        digits += is_digit
        significant += is_digit & (mantissa > 0)  # leading zeros do not count towards int64's 18 digits
        decimals += is_digit & seen_dot
        seen_dot |= is_dot
    if digits.min() < 1 or significant.max() > 18:
        return None
    result = mantissa.astype(np.float64) / _POW10[decimals]
    result[negative] *= -1.0
    return result


def _parse_span(span):
    compact = span.translate(None, _SPACES)
    skeleton = compact.translate(None, _NUMBER_CHARS)
    shape = _shape(skeleton)
    if shape is None:
        return None
    count = 1
    for d in shape:
        count *= d
    numbers = compact.translate(None, b"[]")
    flat = parse_decimals(numbers, count)
    if flat is not None:
        return flat.reshape(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bad token: numpy warns and stops short; the count check catches it
        try:
            flat = np.fromstring(numbers, dtype=np.float64, sep=",")
        except ValueError:
            return None
    if flat.size != count or not np.isfinite(flat).all():
        return None
    return flat.reshape(shape)


def loads(body, min_bytes=_MIN_BYTES, **hooks):
    """Decode a JSON body (bytes); large dense numeric arrays come back as numpy arrays via Decoded.resolve.
    hooks go to json.loads (parse_constant, parse_float: the server refuses NaN and out-of-range floats)."""
    if isinstance(body, memoryview):
        body = body.tobytes()
    if len(body) < min_bytes * 2 or b"\\" in body:
        # Small bodies gain nothing; with backslashes a quote could be escaped and the string test below fails.
        return Decoded(json.loads(body.decode("utf-8"), **hooks), {})
    nonce = "kit-array-" + binascii.hexlify(os.urandom(8)).decode("ascii") + "-"
    arrays = {}
    pieces = []
    last = 0
    quotes, counted = 0, 0
    for match in _ARRAY.finditer(body):
        start, end = match.span()
        if end - start < min_bytes:
            continue
        quotes += body.count(b'"', counted, start)
        counted = start
        if quotes % 2:
            continue  # inside a string
        array = _parse_span(match.group())
        if array is None:
            continue
        key = nonce + str(len(arrays))
        arrays[key] = array
        pieces.append(body[last:start])
        pieces.append(b'"' + key.encode("ascii") + b'"')
        last = end
    if not arrays:
        return Decoded(json.loads(body.decode("utf-8"), **hooks), {})
    pieces.append(body[last:])
    return Decoded(json.loads(b"".join(pieces).decode("utf-8"), **hooks), arrays)
