"""OBJ float lines formatted by numpy: every float32 reads back bit-exact, in plain positional text."""

import numpy as np
import pytest

from uvidm_backend.pipeline.float_text import float_rows


def read_back(text: bytes, keyword: str) -> np.ndarray:
    lines = text.decode().splitlines()
    assert all(line.split()[0] == keyword for line in lines)
    assert all("e" not in line[len(keyword):] and "+" not in line for line in lines)  # no exponent
    return np.array([line.split()[1:] for line in lines], np.float32)


def test_any_finite_float32_reads_back_bit_exact():
    rng = np.random.default_rng(7)
    patterns = rng.integers(0, 2**32, size=(20000, 3), dtype=np.uint64).astype(np.uint32).view(np.float32)
    patterns = patterns[np.isfinite(patterns).all(axis=1)]  # every exponent, denormals included
    scales = rng.choice([1e-9, 1e-4, 0.01, 0.3, 1.0, 9.99, 1e3, 1e8], size=(5000, 3))
    mesh_like = (rng.standard_normal((5000, 3)) * scales).astype(np.float32)
    for values in (patterns, mesh_like):
        back = read_back(float_rows(values, "v"), "v")
        np.testing.assert_array_equal(back.view(np.uint32), (values + np.float32(0)).view(np.uint32))


@pytest.mark.parametrize(("value", "text"), [
    (0.0, "0"), (-0.0, "0"), (1.0, "1"), (-2.5, "-2.5"), (0.25, "0.25"), (123.0, "123"), (0.1, "0.100000001"),
    (1e9, "1000000000"), (-2.5e-5, "-0.0000249999994"), (9.99999999e8, "1000000000"), (0.5, "0.5"),
])
def test_numbers_are_written_as_people_write_them(value, text):
    assert float_rows(np.array([[value, 1.0]], np.float32), "vn") == f"vn {text} 1\n".encode()


def test_the_text_is_that_of_percent_g_where_it_has_no_exponent():
    values = (np.random.default_rng(1).standard_normal((3000, 2)) * 3).astype(np.float32)
    values[np.abs(values) < 1e-4] = 0.5
    expected = "".join(f"vt {row[0]:.9g} {row[1]:.9g}\n" for row in values.astype(np.float64))
    assert float_rows(values, "vt").decode() == expected


def test_bad_input_is_refused():
    assert float_rows(np.zeros((0, 3), np.float32), "v") == b""
    with pytest.raises(ValueError, match="finite"):
        float_rows(np.array([[np.nan, 0.0]]), "v")
    with pytest.raises(ValueError, match="shape"):
        float_rows(np.zeros(3), "v")
