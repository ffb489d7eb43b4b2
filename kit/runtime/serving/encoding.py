"""Request bodies sent with Content-Encoding gzip or deflate (tritonclient's request_compression_algorithm).

Decompression is bounded: the decompressed bytes count against the same body
limit as a plain body (a zip bomb gets 413 after at most limit + 1 bytes of
output, never the whole expansion). "deflate" is the zlib format (RFC 9110),
as tritonclient sends it; a raw deflate stream is accepted too.
"""

import zlib

from kit.runtime.serving.protocol import RequestError

_CHUNK = 64 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def supported(encoding):
    """True for no encoding, identity, gzip and deflate."""
    return _normal(encoding) in ("", "identity", "gzip", "deflate")


def _normal(encoding):
    return (encoding or "").strip().lower()


def decode(body, encoding, limit, limit_name):
    """The body as sent before compression; 413 beyond `limit` bytes, 400 for a corrupt stream."""
    encoding = _normal(encoding)
    if encoding in ("", "identity"):
        return body
    if encoding not in _WBITS:
        raise RequestError(415, "Content-Encoding %s is not supported: send gzip, deflate or identity" % encoding)
    try:
        return _inflate(body, _WBITS[encoding], limit, limit_name)
    except zlib.error:
        if encoding != "deflate":
            raise RequestError(400, "the request body is not valid %s data" % encoding)
    try:
        return _inflate(body, -zlib.MAX_WBITS, limit, limit_name)  # raw deflate, as some clients send it
    except zlib.error:
        raise RequestError(400, "the request body is not valid deflate (zlib) data")


def _inflate(body, wbits, limit, limit_name):
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    view = memoryview(body)
    for start in range(0, len(view), _CHUNK):
        data = view[start:start + _CHUNK]
        while data:
            # Never more output than one byte past the limit, whatever the ratio.
            out += inflater.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise RequestError(413, "the decompressed request body exceeds the limit of %d bytes (%s)"
                                   % (limit, limit_name))
            data = inflater.unconsumed_tail
    out += inflater.flush()
    if len(out) > limit:
        raise RequestError(413, "the decompressed request body exceeds the limit of %d bytes (%s)"
                           % (limit, limit_name))
    if not inflater.eof:
        raise zlib.error("truncated stream")
    return out
