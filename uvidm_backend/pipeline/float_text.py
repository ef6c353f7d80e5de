"""Text lines of float32 rows (OBJ's `v` and `vn`), formatted by numpy instead of Python's `%`.

`%` holds the GIL and takes ~1 µs a number: 50-80 ms for a head's vertex and normal lines, which blocks
every other thread of the process (the GPU's launches among them). Here each number becomes 9 significant
decimal digits, computed on whole arrays: D = rint(|x| * 10^(8 - e)) with e the decimal exponent, written
in positional notation (no exponent; "-" where negative, trailing zeros and a bare "." dropped, -0 as 0).
Nine digits are within 5e-9 of the value, relatively, and a float32's neighbours are at least 6e-8 away:
every float32 reads back bit-exact, as with `%.9g` (whose text it is wherever `%g` does not switch to an
exponent, up to the last digit of a decimal tie).
"""

from __future__ import annotations

import numpy as np

__all__ = ["float_rows"]

SIGNIFICANT = 9
_POWERS = 10 ** np.arange(SIGNIFICANT + 1, dtype=np.int64)
_DIGIT, _POINT, _MINUS, _SPACE, _NEWLINE = ord("0"), ord("."), ord("-"), ord(" "), ord("\n")


def float_rows(values: np.ndarray, keyword: str) -> bytes:
    """`keyword x y ...\\n` for each row of `values` (n, k), finite floats (float32 precision)."""
    values = np.asarray(values, np.float32)
    if values.ndim != 2:
        raise ValueError(f"expected (n, k) values (got shape {values.shape})")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite")
    rows, columns = values.shape
    if rows == 0:
        return b""
    magnitude = np.abs(values.astype(np.float64))
    digits, exponent = _significand(magnitude)
    zero = magnitude == 0
    # The 9 digits, most significant first, and a 10th always 0 (places outside the 9 read it).
    by_place = np.zeros((rows, columns, SIGNIFICANT + 1), np.uint8)
    rest = digits.astype(np.int32)
    trailing = np.zeros(digits.shape, np.int16)  # trailing zeros of the 9 digits
    still_zero = np.ones(digits.shape, bool)
    for j in range(SIGNIFICANT - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        by_place[..., j] = digit
        still_zero &= digit == 0
        trailing += still_zero
    exponent = exponent.astype(np.int16)
    lowest = np.where(zero, 0, np.minimum(exponent - (SIGNIFICANT - 1) + trailing, 0)).astype(np.int16)
    highest = np.where(zero, 0, np.maximum(exponent, 0)).astype(np.int16)  # the units digit is always written
    int_places = int(highest.max()) + 1
    frac_places = -int(lowest.min())

    # One number: sign, integer places (int_places - 1 .. 0), point, fraction places (-1 .. -frac_places).
    places = np.arange(int_places - 1, -frac_places - 1, -1, dtype=np.int16)  # (P,)
    which = exponent[..., None] - places  # the place's digit among the 9, from the most significant
    which[(which < 0) | (which >= SIGNIFICANT)] = SIGNIFICANT
    starts = np.arange(0, rows * columns * (SIGNIFICANT + 1), SIGNIFICANT + 1)[:, None]  # each number's 10 digits
    chars = by_place.reshape(-1).take(which.reshape(rows * columns, -1) + starts).reshape(rows, columns, -1)
    chars += _DIGIT
    chars[(places > highest[..., None]) | (places < lowest[..., None])] = 0  # (n, k, P); 0: not written

    width = 2 + int_places + (1 + frac_places if frac_places else 0)  # space, sign, digits, point
    number = np.zeros((rows, columns, width), np.uint8)
    number[..., 0] = _SPACE
    number[..., 1] = np.where((values < 0) & ~zero, _MINUS, 0)
    number[..., 2:2 + int_places] = chars[..., :int_places]
    if frac_places:
        number[..., 2 + int_places] = np.where(lowest < 0, _POINT, 0)
        number[..., 3 + int_places:] = chars[..., int_places:]
    prefix = np.frombuffer(keyword.encode(), np.uint8)
    line = np.empty((rows, len(prefix) + columns * width + 1), np.uint8)
    line[:, :len(prefix)] = prefix
    line[:, len(prefix):-1] = number.reshape(rows, columns * width)
    line[:, -1] = _NEWLINE
    return line[line != 0].tobytes()


def _significand(magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, e) with D = rint(magnitude * 10^(8 - e)) in [10^8, 10^9) (0 and e = 0 for zeros)."""
    zero = magnitude == 0
    safe = np.where(zero, 1.0, magnitude)
    exponent = np.floor(np.log10(safe)).astype(np.int64)
    digits = np.rint(safe * 10.0 ** (SIGNIFICANT - 1 - exponent)).astype(np.int64)
    # log10 may land one off near powers of ten, and rounding may carry to 10^9: fix both.
    for _ in range(2):
        high, low = digits >= _POWERS[SIGNIFICANT], digits < _POWERS[SIGNIFICANT - 1]
        if not (high.any() or low.any()):
            break
        exponent = exponent + high - low
        digits = np.rint(safe * 10.0 ** (SIGNIFICANT - 1 - exponent)).astype(np.int64)
    return np.where(zero, 0, digits), np.where(zero, 0, exponent)
