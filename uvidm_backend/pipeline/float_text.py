"""Text lines of float32 rows (OBJ's `v` and `vn`), formatted by numpy instead of Python's `%`.

`%` holds the GIL for all of a head's vertex and normal lines (tens of milliseconds), which blocks every
other thread of the process (the GPU's launches among them). Here each number becomes 9 significant decimal
digits, computed on whole arrays (numpy releases the GIL; on one core about as fast as `%`, or a little
faster): D = rint(|x| * 10^(8 - e)) with e the decimal exponent, written in positional notation (no exponent;
"-" where negative, trailing zeros and a bare "." dropped, -0 as 0), the numbers of one exponent together.
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
    flat = values.reshape(-1)
    magnitude = np.abs(flat.astype(np.float64))
    digits, exponent = _significand(magnitude)
    # The 9 digits of each number, most significant first (uint8), and how many of them end it as zeros.
    by_place = np.empty((len(flat), SIGNIFICANT), np.uint8)
    rest = digits.astype(np.int32)
    trailing = np.zeros(len(flat), np.int8)
    still_zero = np.ones(len(flat), bool)
    for j in range(SIGNIFICANT - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        by_place[:, j] = digit
        still_zero &= digit == 0
        trailing += still_zero
    by_place += _DIGIT
    # Numbers of one decimal exponent share a layout: written group by group, each into its slot.
    lowest = int(exponent.min())
    shifted = (exponent - lowest).astype(np.int16)
    members = [np.flatnonzero(shifted == value) for value in np.flatnonzero(np.bincount(shifted))]
    texts = [_positional(by_place[where], trailing[where], lowest + int(shifted[where[0]])) for where in members]
    width = 2 + max(text.shape[1] for text in texts)  # space, sign, digits and point
    number = np.zeros((len(flat), width), np.uint8)
    number[:, 0] = _SPACE
    number[:, 1] = np.where(flat < 0, _MINUS, 0)  # -0 reads as 0: its digits are those of 0
    for where, text in zip(members, texts, strict=True):
        number[where, 2:2 + text.shape[1]] = text
    number = number.reshape(rows, columns * width)
    prefix = np.frombuffer(keyword.encode(), np.uint8)
    line = np.empty((rows, len(prefix) + columns * width + 1), np.uint8)
    line[:, :len(prefix)] = prefix
    line[:, len(prefix):-1] = number
    line[:, -1] = _NEWLINE
    return line[line != 0].tobytes()


def _positional(digits: np.ndarray, trailing: np.ndarray, exponent: int) -> np.ndarray:
    """(m, W) characters of m numbers D * 10^(exponent - 8), `digits` their 9 digit characters: positional
    notation, the fraction's trailing zeros (and a bare point) as 0 bytes (not written)."""
    count = len(digits)
    if exponent >= SIGNIFICANT - 1:  # an integer: the 9 digits, then zeros
        return np.concatenate([digits, np.full((count, exponent - SIGNIFICANT + 1), _DIGIT, np.uint8)], axis=1)
    if exponent >= 0:  # integer digits, point, fraction digits
        text = np.concatenate([digits[:, :exponent + 1], np.full((count, 1), _POINT, np.uint8),
                               digits[:, exponent + 1:]], axis=1)
        fraction_at = exponent + 2  # where the fraction's first digit is
    else:  # "0." and -exponent - 1 zeros before the digits
        text = np.concatenate([np.array([[_DIGIT, _POINT]], np.uint8).repeat(count, axis=0),
                               np.full((count, -exponent - 1), _DIGIT, np.uint8), digits], axis=1)
        fraction_at = 2
    kept = text.shape[1] - trailing.astype(np.int64)  # characters before the trailing zeros
    text[np.arange(text.shape[1]) >= np.maximum(kept, fraction_at)[:, None]] = 0
    text[kept <= fraction_at, fraction_at - 1] = 0  # no fraction left: no point
    return text


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
