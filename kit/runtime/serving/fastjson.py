"""Dense numeric arrays in a JSON body, decoded by numpy instead of json.loads.

json.loads builds a Python float object per number and np.asarray walks the
nested lists again: for a 8x224x224x3 image batch (25 MB of JSON as
`json.dumps(x.tolist())` writes it) that is 1.2 million objects and about a
second. Here every large array made only of numbers ([[0.1, 0.2], [0.3, 0.4]])
is cut out of the body and decoded in bulk:

- in place (the common body: one array, json.dumps' ", " or "," separators):
  the shape below the outer list is read off its first lists, and the numbers
  are read in the body itself (tornado's bytearray, no copy), a block of about
  256 KiB at a time so every temporary stays small (cache-resident, no fresh
  pages per request). Every byte is checked where it stands: the commas, one
  space after each, the brackets where the shape puts them, and in each number
  a leading minus, at most one dot and digits for the rest (one count of the
  bytes up to "." per block; the digit windows check every byte they read).
  The outer length is the count of numbers read; any irregularity takes the
  general path;
- general path: the skeleton (brackets and commas, from one bytes.translate)
  must equal the skeleton of a regular nested list of the shape its first
  lists show, then brackets and whitespace are removed and the text read as
  above;
- numbers: the text is checked against JSON's number grammar with a few numpy
  passes over positions (one dot per number at most, a minus only first,
  digits on both sides of a dot, no leading zeros), then the digits of every
  number are read at once: right-aligned windows of the integer and fraction
  digits, checked to be digits, turned into exact integers with SWAR
  multiply-and-shift steps, and divided by an exact power of ten (see
  parse_numbers). The rare numbers with an exponent are parsed one by one by
  float().

The body then goes to json.loads with an unguessable placeholder string in
each array's place. Anything that does not fit (ragged lists, NaN, strings,
escapes, a number JSON refuses, digits beyond int64) is left in the body for
json.loads, so errors and edge cases behave exactly as without this module.
Python 3.6 and numpy 1.16 (the Jetson's) and newer.
"""

import binascii
import json
import os
import re

import numpy as np

# Numbers, commas, brackets, whitespace: nothing else can appear in a dense numeric array.
_ARRAY = re.compile(br"\[[\[\]0-9eE+\-., \t\r\n]*\]")
_SPACES = b" \t\r\n"
_MARKED_SKELETON_DROP = b"0123456789-." + _SPACES  # keeps e, E and +: whether any stands is then cheap to see
_NUMBERS_DROP = b"[]" + _SPACES
# Two number characters with only whitespace between them: two numbers JSON refuses, one after deletion.
_SPACE_INSIDE = re.compile(br"[0-9.eE+\-][ \t\r\n]+[0-9.eE+\-]")
_JSON_NUMBER = re.compile(br"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
_MAX_DEPTH = 64  # nesting beyond any tensor's rank (TF Serving's clients send up to a few levels)
_MIN_BYTES = 256  # smaller arrays: json.loads is as fast

_SPACE, _PLUS, _COMMA, _MINUS, _DOT, _ZERO, _OPEN, _CLOSE = 32, 43, 44, 45, 46, 48, 91, 93
_TEXT_BLOCK = 1 << 18  # number text per block (256 KiB): its temporaries stay in cache
_WINDOW_REACH = 24  # the widest digit window: numbers ending before it are read again by float()
IRREGULAR = "irregular whitespace"  # parse_numbers' answer when whitespace is not json.dumps' ", "
_POW10 = 10.0 ** np.arange(25)  # exact in float64 up to 1e22 (Python writes up to 24 decimals: 0.000xxx)
_POW10_INT = 10 ** np.arange(19, dtype=np.int64)
_MAX_EXPONENT_SHARE = 0.05  # more numbers with exponents than this: json.loads decides


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


# ---- structure ------------------------------------------------------------------------


def _shape(skeleton):
    """The shape of a regular nested list from its skeleton (brackets and commas only), or None.

    The first list at each depth gives that depth's length; the skeleton of the regular list of that
    shape is then built and compared with the whole skeleton (C speed: joins and one comparison).
    """
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if depth == 0 or depth > _MAX_DEPTH:
        return None  # deeper: json.loads decides (each level below costs a search of the skeleton)
    shape = []
    token = None
    for level in range(1, depth + 1):
        closing = b"]" * level
        end = skeleton.find(closing)
        if end < 0:
            return None
        first = skeleton[depth - level:end + level]
        if token is None:
            size = first.count(b",") + 1
            token = b"[" + b"," * (size - 1) + b"]"
        else:
            step = len(token) + 1
            size, rest = divmod(len(first) - 2 + 1, step)
            if rest or size < 1:
                return None
            token = b"[" + b",".join([token] * size) + b"]"
        if first != token:
            return None
        shape.insert(0, size)
    return shape if token == skeleton else None


# ---- numbers ----------------------------------------------------------------------------


# Entry k: the mask of a little-endian 8-byte word whose first k bytes are not the number's: 0x00 there,
# 0xFF elsewhere.
_WORD_KEEP = np.array([sum(0xFF << (8 * i) for i in range(k, 8)) for k in range(9)], dtype=np.uint64)
# A digit character xor "0" is its value, 0..9: + 0x76 keeps such a byte below 0x80, any other byte is
# at or above it (no carry reaches a digit's byte from a lower one that is not flagged itself).
_DIGIT_ZERO, _DIGIT_ADD, _DIGIT_HIGH = (np.uint64(0x3030303030303030), np.uint64(0x7676767676767676),
                                        np.uint64(0x8080808080808080))
_U8 = [np.uint64(v) for v in (2561, 8, 0x00FF00FF00FF00FF, 6553601, 16,
                              0x0000FFFF0000FFFF, 42949672960001, 32, 100000000)]


def _digit_values(c, right, length, width):
    """The integers written by the digit runs c[right-length:right] (at most 24 digits) -> uint64, or None
    when one of them does not fit (more than 19 significant digits) or holds a byte that is not a digit.
    Runs whose window would start before the text (right < the window's width) read as 0: the caller
    reads those numbers again (see _reread_first).

    Each run is read as a right-aligned window of 8, 16 or 24 bytes (an item of a void-dtype view of
    the text with a stride of one byte, so a block of windows is one fancy-index copy), the bytes left
    of the run are masked to zero, and
    every 8 bytes become their 8-digit value with the well-known SWAR multiply-and-shift steps
    (two digits, then four, then eight per step); the words then combine as base 10**8 digits.
    """
    padded_width = 8 * ((width + 7) // 8)
    windows = np.ndarray(shape=(c.size - padded_width + 1,), dtype=np.dtype("V%d" % padded_width), buffer=c,
                         strides=(1,))
    m1, s1, mid, m2, s2, high, m3, s3, base = _U8
    at = right - padded_width
    if at[0] < 0:  # positions ascend: only the first numbers of the text can be this close to its start
        clipped = at < 0
        length = np.where(clipped, 0, length)
        at[clipped] = 0
    v = windows[at].view("<u8").reshape(right.size, -1)  # n windows, contiguous; then in place (a block is small)
    # Digit characters to their values, then zero the bytes left of each run: in the first word
    # nearly always, in the others only for short runs (a 9-entry table, not a mask row per number).
    v ^= _DIGIT_ZERO
    skip = padded_width - length
    v[:, 0] &= _WORD_KEEP[np.minimum(skip, 8)]
    for j in range(1, v.shape[1]):
        short = np.flatnonzero(skip > 8 * j)
        if short.size:
            v[short, j] &= _WORD_KEEP[np.minimum(skip[short] - 8 * j, 8)]
    # Every byte of every run must be a digit: nothing else (a bracket, a letter, a stray sign) was
    # checked elsewhere inside a number.
    check = v + _DIGIT_ADD
    check |= v
    if np.bitwise_or.reduce(check, axis=None) & _DIGIT_HIGH:
        return None
    v *= m1
    v >>= s1
    v &= mid
    v *= m2
    v >>= s2
    v &= high
    v *= m3
    v >>= s3
    out = v[:, 0].copy()
    if v.shape[1] == 3 and out.max() > 1800:
        return None  # out * 10**16 would leave uint64
    for j in range(1, v.shape[1]):
        out *= base
        out += v[:, j]
    return out


def _exponent_tokens(c, seg, lo, starts, ends, text):
    """Numbers of the block seg = c[lo:...] with an exponent: parsed one by one, their characters then
    overwritten with zeros (so the bulk pass sees plain numbers) -> (token indexes, values), or None when
    JSON refuses one."""
    marks = np.flatnonzero((seg == 101) | (seg == 69)) + lo
    tokens = np.unique(np.searchsorted(starts, marks, side="right") - 1)
    values = np.empty(tokens.size, dtype=np.float64)
    for i, t in enumerate(tokens.tolist()):
        token = text[int(starts[t]):int(ends[t])]
        if not _JSON_NUMBER.match(token):
            return None
        values[i] = float(token)
        # A plain number of the same length ("0.00...") for the bulk pass; its result is replaced later.
        c[starts[t]:ends[t]] = _ZERO
        c[starts[t] + 1] = _DOT
    if not np.isfinite(values).all():
        return None  # 1e999: json.loads' parse_float hook refuses it with the server's message
    return tokens, values


def _dots_near(c, first):
    """A dot per number within its first 5 bytes -> their positions, or None when some number has none
    there. Numbers usually have a short integer part: the dot is looked for right after it."""
    guess = first + 1
    for _ in range(4):
        missing = c.take(guess, mode="clip") != _DOT
        if not missing.any():
            return guess
        guess = np.where(missing, guess + 1, guess)
    return None


def _find_dots(c, seg, lo, first, ends, count):
    """(dot position per number, has_dot or None when every number has one) or None when a number has two
    dots; seg = c[lo:...] is the block."""
    if int(np.count_nonzero(seg == _DOT)) == count:
        guess = _dots_near(c, first)
        if guess is not None:
            return guess, None
    dots = np.flatnonzero(seg == _DOT) + lo
    owner = np.searchsorted(first, dots, side="right") - 1
    if dots.size and (np.diff(owner) == 0).any():
        return None
    dot_at = ends.copy()
    dot_at[owner] = dots
    has_dot = np.zeros(count, dtype=bool)
    has_dot[owner] = True
    return dot_at, has_dot


def _block_bounds(text, lo, size, block):
    """[lo, hi) ranges of text[lo:size] of about `block` bytes, each ending at a comma (or at size)."""
    while lo < size:
        hi = text.find(b",", lo + block, size) if lo + block < size else -1
        hi = size if hi < 0 else hi
        yield lo, hi
        lo = hi + 1


def parse_numbers(text, count, start=0, stop=None, block=_TEXT_BLOCK, sizes=None, plain=False):
    """`count` comma-separated JSON numbers, text[start:stop] -> float64 array; None when they are not
    that; IRREGULAR when whitespace stands anywhere but as one space right after a comma (json.dumps' ", ").
    count None: as many as the text holds (the array returned says how many).

    sizes: the brackets are still in the text, as a regular array has them (its list sizes in numbers,
    innermost first; see _brackets_in_place): each is checked where it should stand. plain: numbers with
    an exponent (or a +) are refused, with no search for them first.

    Every byte is checked: commas, the spaces after them and the brackets where they stand; in each
    number a leading minus, at most one dot, and digits (checked in the digit windows) for all the rest.

    The text is read in blocks of about `block` bytes (whole numbers), so every temporary is small:
    cache-resident and reused by malloc instead of fresh pages faulted in on every request.

    Every plain decimal is an exact integer mantissa (int64, at most 18 significant digits) divided by a
    power of ten: up to 15 significant digits (below 2**53) and 22 decimals IEEE division rounds as strtod
    does; longer ones (Python's repr of a float32 has up to 17 digits) may differ by one float64 ulp,
    which rounding to float32, the usual input dtype, removes. Integers above 15 digits go to json.loads
    (int64 inputs stay exact there).
    """
    stop = len(text) if stop is None else stop
    if stop - start < 2 * _WINDOW_REACH:
        return None  # too short for the digit windows: json.loads decides
    c = np.frombuffer(text, dtype=np.uint8)
    exponents = not plain and (text.find(b"e", start, stop) >= 0 or text.find(b"E", start, stop) >= 0)
    if exponents:
        numbers = text.count(b",", start, stop) + 1 if count is None else count
        if text.count(b"e", start, stop) + text.count(b"E", start, stop) > _MAX_EXPONENT_SHARE * numbers:
            return None
        c = c.copy()  # exponent numbers are overwritten with plain ones (see _exponent_tokens)
    elif not plain and text.find(b"+", start, stop) >= 0:
        return None
    # Count unknown: room for a number per 4 bytes, grown when a block might not fit (pages never
    # written are never faulted in).
    out = np.empty((stop - start) // 4 + 1 if count is None else count, dtype=np.float64)
    done = 0
    for lo, hi in _block_bounds(text, start, stop, block):
        if count is None and out.size - done <= (hi - lo) // 2:
            grown = np.empty(max(2 * out.size, done + (hi - lo) // 2 + 1), dtype=np.float64)
            grown[:done] = out[:done]
            out = grown
        brackets = None if sizes is None else (sizes, done, hi == stop)
        n = _parse_block(c, lo, hi, out[done:], text if exponents else None, lo == start, brackets)
        if n is None or n is IRREGULAR:
            return n
        done += n
    if count is not None and done != count:
        return None
    return out[:done]


def _block_positions(c, lo, hi, first_block, brackets):
    """(starts, ends, spaces after commas) of the numbers in c[lo:hi] (global positions; the spaces
    stepped over), IRREGULAR for brackets elsewhere than where `brackets` (see _brackets_in_place) puts
    them, None for an empty element. Whitespace elsewhere is found by _signs_and_dots."""
    seg = c[lo:hi]
    commas = np.flatnonzero(seg == _COMMA)
    count = commas.size + 1
    starts = np.empty(count, dtype=np.int64)
    starts[0] = lo
    np.add(commas, lo + 1, out=starts[1:])
    ends = np.empty(count, dtype=np.int64)
    np.add(commas, lo, out=ends[:-1])
    ends[-1] = hi
    # Every number but the text's first follows a comma (a block starts after one).
    spaced = c.take(starts, mode="clip") == _SPACE
    spaced[0] &= not first_block
    n_spaced = int(np.count_nonzero(spaced))
    if n_spaced:
        starts += spaced
    if brackets is not None and not _brackets_in_place(c, starts, ends, brackets):
        return IRREGULAR
    if (ends - starts).min() < 1:
        return None  # an empty element: a syntax error json.loads reports
    return starts, ends, n_spaced


def _brackets_in_place(c, starts, ends, brackets):
    """brackets = (list sizes in numbers, innermost first: shape[-1], shape[-2] * shape[-1], ...; the
    index of the block's first number; whether the block is the array's last). Moves ends before the "]" each number
    closes and starts after the "[" that open the next one (in place), and checks those bytes are
    brackets. The skeleton holds exactly these brackets, so when every one stands where the shape puts
    it, none is left inside a number."""
    sizes, first, last = brackets
    count = starts.size
    for size in sizes:
        # Numbers that end a list of this depth: every size-th one (never the array's last: its
        # brackets lie outside the text); the next number opens one. Inner lists were stepped over.
        # Strided views: the moves are in place.
        offset = (-(first + 1)) % size
        ending = ends[offset:count - 1 if last else count:size]
        ending -= 1
        if not (c[ending] == _CLOSE).all():
            return False
        for opening in (starts[offset + 1::size], starts[:1] if first and first % size == 0 else None):
            if opening is not None and opening.size:
                if not (c[opening] == _OPEN).all():
                    return False
                opening += 1
    return True


def _parse_block(c, lo, hi, out, text, first_block, brackets):
    """The numbers of c[lo:hi] into out[:n] -> n, None when JSON refuses one (or json.loads should
    decide), IRREGULAR for stray whitespace. `text`: the original text when it has exponents, else None."""
    positions = _block_positions(c, lo, hi, first_block, brackets)
    if positions is None or positions is IRREGULAR:
        return positions
    starts, ends, n_spaced = positions
    count = starts.size
    if count > out.size:
        return None
    seg = c[lo:hi]
    exponents = None
    if text is not None:
        exponents = _exponent_tokens(c, seg, lo, starts, ends, text)
        if exponents is None:
            return None
        if np.count_nonzero(seg == _PLUS):
            return None  # a plus sign outside an exponent
    found = _signs_and_dots(c, seg, lo, starts, ends, n_spaced)
    if found is None or found is IRREGULAR:
        return found
    negative, n_negative, first, dot_at, has_dot = found
    # Dots: digits on both sides.
    if has_dot is None:
        if not ((dot_at > first) & (dot_at < ends - 1)).all():
            return None
        decimals = ends - dot_at - 1
    else:
        if not ((dot_at > first) & ((dot_at < ends - 1) | ~has_dot)).all():
            return None
        decimals = np.maximum(ends - dot_at - 1, 0)
    int_len = dot_at - first
    # The character after the sign must be a digit (covers "-" and "-.5"); no leading zeros.
    head = c[first]
    if ((head < _ZERO) | (head > _ZERO + 9) | ((head == _ZERO) & (int_len > 1))).any():
        return None
    int_width, dec_width = int(int_len.max()), int(decimals.max())
    if has_dot is not None and int_width > 15 and (int_len[~has_dot] > 15).any():
        return None  # a large integer: json.loads keeps it exact (int64 inputs)
    if int_width > 24 or dec_width > 24:
        return None
    if int_width == 1:
        ints = (head - _ZERO).astype(np.int64)
    else:
        ints = _digit_values(c, dot_at, int_len, int_width)
    fracs = _digit_values(c, ends, decimals, dec_width) if dec_width else np.zeros(count, dtype=np.uint64)
    if ints is None or fracs is None:
        return None
    # mantissa = ints * 10**decimals + fracs must stay an exact int64: only long numbers can leave it.
    long_ = np.flatnonzero(int_len + decimals > 18)
    if long_.size and (ints[long_].astype(np.float64) * _POW10[decimals[long_]]
                       + fracs[long_].astype(np.float64)).max() >= 9.0e18:
        return None
    mantissa = fracs.view(np.int64)
    whole = np.flatnonzero(ints)  # images in [0, 1]: few numbers have an integer part
    if whole.size:
        mantissa[whole] += ints[whole].astype(np.int64) * _POW10_INT[np.minimum(decimals[whole], 18)]
    result = out[:count]
    np.divide(mantissa, _POW10[decimals], out=result)
    if n_negative:
        np.negative(result, out=result, where=negative)
        if has_dot is not None:
            result[negative & ~has_dot & (mantissa == 0)] = 0.0  # "-0" is the integer 0 for json.loads
    if dot_at[0] < _WINDOW_REACH and not _reread_first(c, starts, ends, dot_at, result):
        return None
    if exponents is not None:
        result[exponents[0]] = exponents[1]
    return count


def _signs_and_dots(c, seg, lo, starts, ends, n_spaced):
    """(negative, their count, first digits, dot positions, has_dot or None when every number has one):
    a minus only first and at most one dot per number -> None otherwise; IRREGULAR for whitespace other
    than the n_spaced spaces after commas.

    Commonly every number has a dot right after its first digits: then one count of the bytes up to "."
    (whitespace, "+", ",", "-", ".") against the commas, spaces, minus signs and dots found shows
    nothing else stands in the block."""
    count = starts.size
    negative = c[starts] == _MINUS
    n_negative = int(np.count_nonzero(negative))
    first = starts + negative if n_negative else starts
    if (ends - first).min() < 1:
        return None  # a lone minus
    dot_at = _dots_near(c, first)
    if dot_at is not None and int(np.count_nonzero(seg <= _DOT)) == 2 * count - 1 + n_spaced + n_negative:
        return negative, n_negative, first, dot_at, None
    if int(np.count_nonzero(seg < _PLUS)) != n_spaced:  # whitespace: the only characters below "+" here
        return IRREGULAR
    if int(np.count_nonzero(seg == _MINUS)) != n_negative:
        return None
    found = _find_dots(c, seg, lo, first, ends, count)
    if found is None:
        return None
    return (negative, n_negative, first) + found


def _reread_first(c, starts, ends, dot_at, result):
    """The numbers whose digit windows would start before the text (see _digit_values) read one by one
    into result -> False when JSON refuses one."""
    for t in range(int(np.searchsorted(dot_at, _WINDOW_REACH))):
        token = c[starts[t]:ends[t]].tobytes()
        value = float(json.loads(token.decode("ascii"))) if _JSON_NUMBER.match(token) else None
        if value is None or not np.isfinite(value):
            return False  # 1e999: json.loads' parse_float hook refuses it with the server's message
        result[t] = value  # json.loads: "-0" is the integer 0
    return True


def parse_decimals(text, count):
    """Kept name: parse_numbers (plain decimals and the rare exponent), None when JSON would refuse."""
    return parse_numbers(text, count)


def _translated(source, lo, hi, drop):
    """source.translate(None, drop) and the bounds of source[lo:hi]'s part in it. The whole source is
    translated (no copy of a body-sized span first); the parts before and after are short."""
    text = source.translate(None, drop)
    if lo == 0 and hi == len(source):
        return text, 0, len(text)
    return text, len(source[:lo].translate(None, drop)), len(text) - len(source[hi:].translate(None, drop))


def _list_sizes(shape):
    """Numbers per list at each depth, innermost first: [shape[-1], shape[-2] * shape[-1], ...]."""
    sizes, size = [], 1
    for d in reversed(shape[1:]):
        size *= d
        sizes.append(size)
    return sizes


def _inner_shape(source, lo, hi):
    """The shape below the outermost list of the array source[lo:hi], from its first lists (the first
    list at each depth: its commas over the numbers of one list below) -> list, or None. Only a guess:
    the in-place parse checks every bracket where this shape puts it."""
    head = source[lo:lo + _MAX_DEPTH + 1]
    depth = len(head) - len(head.lstrip(b"["))
    if depth == 0 or depth > _MAX_DEPTH or source[hi - depth:hi] != b"]" * depth:
        return None
    shape, below = [], 1
    for level in range(1, depth):
        end = source.find(b"]" * level, lo, hi)
        numbers = source.count(b",", lo + depth - level, end) + 1
        size, rest = divmod(numbers, below)
        if end < 0 or rest or size < 1:
            return None  # end < 0: numbers counted to the text's end, never a regular list
        shape.insert(0, size)
        below = numbers
    return shape


def _parse_in_place(source, lo, hi, inner):
    """The array source[lo:hi] of shape [n] + inner parsed in the body, brackets and json.dumps' spaces
    included -> float64 ndarray, None (json.loads decides) or IRREGULAR (the general path decides)."""
    depth = len(inner) + 1
    sizes = _list_sizes([0] + inner)
    flat = parse_numbers(source, None, lo + depth, hi - depth, sizes=sizes, plain=True)
    if flat is None and (source.find(b"e", lo, hi) >= 0 or source.find(b"E", lo, hi) >= 0
                         or source.find(b"+", lo, hi) >= 0):
        flat = parse_numbers(source, None, lo + depth, hi - depth, sizes=sizes)  # the rare exponents
    if flat is None or flat is IRREGULAR:
        return flat
    per_item = sizes[-1] if sizes else 1
    if flat.size % per_item:
        return IRREGULAR  # the last list is short: ragged
    return flat.reshape([flat.size // per_item] + inner)


def _parse_span(source, lo=0, hi=None):
    """A candidate array's text, source[lo:hi] -> float64 ndarray of its shape, or None (json.loads
    decides). The common text (json.dumps' ", " separators, or none) is parsed in place."""
    hi = len(source) if hi is None else hi
    inner = _inner_shape(source, lo, hi)
    if inner is not None:
        array = _parse_in_place(source, lo, hi, inner)
        if array is not IRREGULAR:
            return array
    return _parse_translated(source, lo, hi)


def _parse_translated(source, lo, hi):
    """The general path: the skeleton (brackets and commas) gives the shape and is checked whole, then the
    numbers are parsed with brackets and whitespace removed -> float64 ndarray, or None."""
    marked, start, stop = _translated(source, lo, hi, _MARKED_SKELETON_DROP)
    skeleton = marked[start:stop]
    plain = not (b"e" in skeleton or b"E" in skeleton or b"+" in skeleton)
    if not plain:
        skeleton = skeleton.translate(None, b"eE+")
    shape = _shape(skeleton)
    if shape is None:
        return None
    count = 1
    for d in shape:
        count *= d
    # Whitespace may only separate numbers from brackets and commas: `1 2` would read as 12 once the
    # whitespace is gone.
    if _SPACE_INSIDE.search(source, lo, hi):
        return None
    text, start, stop = _translated(source, lo, hi, _NUMBERS_DROP)
    flat = parse_numbers(text, count, start, stop, plain=plain)
    if flat is None or flat is IRREGULAR:
        return None
    return flat.reshape(shape)


def _single_array(body, min_bytes):
    """The common body holds one array ({"instances": [...]}): the span from the first "[" to the last
    "]" -> ((start, end), float64 ndarray), or None. Parsed in place, the span is checked byte by byte (only
    numbers, commas, brackets, ", " spaces: no quote, brace or backslash), so the body-wide searches for
    those are left to the general path."""
    first, last = body.find(b"["), body.rfind(b"]")
    if first < 0 or last - first < min_bytes:
        return None
    # Before the array no backslash may escape a quote: then an even count of quotes puts it outside strings.
    if body.find(b"\\", 0, first) >= 0 or body.find(b"\\", last) >= 0 or body.count(b'"', 0, first) % 2:
        return None
    inner = _inner_shape(body, first, last + 1)
    array = IRREGULAR if inner is None else _parse_in_place(body, first, last + 1, inner)
    if array is IRREGULAR and body.find(b'"', first, last) < 0 and body.find(b"{", first, last) < 0:
        array = _parse_translated(body, first, last + 1)
    if array is None or array is IRREGULAR:
        return None
    return (first, last + 1), array


def loads(body, min_bytes=_MIN_BYTES, **hooks):
    """Decode a JSON body (bytes); large dense numeric arrays come back as numpy arrays via Decoded.resolve.
    hooks go to json.loads (parse_constant, parse_float: the server refuses NaN and out-of-range floats)."""
    if isinstance(body, memoryview):
        body = bytes(body)  # bytes and bytearray (tornado's body, used in place) have the methods used here
    if len(body) < min_bytes * 2:
        return Decoded(json.loads(body.decode("utf-8"), **hooks), {})  # small bodies gain nothing
    nonce = "kit-array-" + binascii.hexlify(os.urandom(8)).decode("ascii") + "-"
    arrays = {}
    pieces = []
    spans = []
    single = _single_array(body, min_bytes)
    if single is not None:
        spans = [single[0]]
        arrays[nonce + "0"] = single[1]
    elif b"\\" in body:
        # With backslashes a quote could be escaped and the string test below fails.
        return Decoded(json.loads(body.decode("utf-8"), **hooks), {})
    if not spans:
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
            arrays[nonce + str(len(arrays))] = array
            spans.append((start, end))
    if not arrays:
        return Decoded(json.loads(body.decode("utf-8"), **hooks), {})
    position = 0
    for i, (start, end) in enumerate(spans):
        pieces.append(body[position:start])
        pieces.append(b'"' + (nonce + str(i)).encode("ascii") + b'"')
        position = end
    pieces.append(body[position:])
    return Decoded(json.loads(b"".join(pieces).decode("utf-8"), **hooks), arrays)
