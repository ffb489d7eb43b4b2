"""Content-Encoding of request bodies (kit/runtime/serving/encoding.py): gzip and deflate, bounded."""

import gzip
import zlib

import pytest

from kit.runtime.serving import encoding
from kit.runtime.serving.protocol import RequestError


def _error(*args):
    with pytest.raises(RequestError) as info:
        encoding.decode(*args)
    return info.value


def test_gzip_zlib_and_raw_deflate_round_trip():
    body = b'{"inputs": []}' * 1000
    assert encoding.decode(body, None, 1 << 20, "L") is body
    assert encoding.decode(body, "identity", 1 << 20, "L") is body
    assert bytes(encoding.decode(gzip.compress(body), "gzip", 1 << 20, "L")) == body
    assert bytes(encoding.decode(zlib.compress(body), "Deflate", 1 << 20, "L")) == body
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert bytes(encoding.decode(raw.compress(body) + raw.flush(), "deflate", 1 << 20, "L")) == body
    assert bytes(encoding.decode(gzip.compress(body), "gzip", len(body), "L")) == body  # exactly at the limit


def test_the_decompressed_size_is_bounded():
    bomb = gzip.compress(b"\0" * (32 << 20), 9)
    error = _error(bomb, "gzip", 1 << 20, "KIT_MAX_JSON_BODY")
    assert error.status == 413 and "1048576 bytes (KIT_MAX_JSON_BODY)" in error.message
    assert _error(gzip.compress(b"x" * 1025), "gzip", 1024, "L").status == 413


def test_corrupt_truncated_and_unknown_encodings():
    assert _error(b"plain", "gzip", 1024, "L").status == 400
    assert _error(gzip.compress(b"abc" * 100)[:-8], "gzip", 1024, "L").status == 400
    assert _error(b"plain", "deflate", 1024, "L").status == 400
    error = _error(b"x", "br", 1024, "L")
    assert error.status == 415 and "gzip, deflate or identity" in error.message
    assert encoding.supported("GZIP") and encoding.supported(None) and not encoding.supported("compress")
