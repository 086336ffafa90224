"""The null/NaN policy's building blocks: which rows are finite, and the float32 conversion every
reader of vectors uses (``store.vectors``)."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest

from img_search.store.vectors import as_float32, finite_rows


@pytest.mark.parametrize("torch_loaded", [True, False])
def test_finite_rows_agree_for_float16_and_float32_and_the_conversion_is_exact(
    monkeypatch, torch_loaded: bool
) -> None:
    """The policy's test gives one answer for float16 and float32; the conversion is exact, by
    torch when the process has it loaded, by numpy otherwise."""
    if torch_loaded:
        import torch  # noqa: F401
    else:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    half = np.array([[1, 2], [np.nan, 0], [0, np.inf], [-np.inf, 1], [65504, 65504]], np.float16)
    single = as_float32(half)
    assert single.dtype == np.float32 and single.flags.c_contiguous
    np.testing.assert_array_equal(single, half.astype(np.float32))
    expected = [True, False, False, False, True]
    assert finite_rows(half).tolist() == expected
    assert finite_rows(single).tolist() == expected
    assert as_float32(single) is single
    assert as_float32(half[:0]).shape == (0, 2)
    # Arrow's buffers are read-only: converted without a copy of them, and without a warning
    values = pa.array(half.ravel()).to_numpy(zero_copy_only=True).reshape(5, 2)
    assert not values.flags.writeable
    np.testing.assert_array_equal(as_float32(values), half.astype(np.float32))
