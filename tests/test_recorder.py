"""The recorder's fast histogram and moments agree with NumPy's reference functions."""
import numpy as np
import pytest

from initlab.recorder import _bin_counts, _fit_range, _histograms, _moments


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "uniform", "relu", "constant-ish"])
def test_bin_counts_match_numpy_histogram(dtype, kind):
    rng = np.random.default_rng(1)
    a = {"normal": rng.standard_normal((500, 40)), "uniform": rng.random((500, 40)),
         "relu": np.maximum(rng.standard_normal((500, 40)), 0),
         "constant-ish": 0.5 + 1e-4 * rng.standard_normal((500, 40))}[kind].astype(dtype)
    lo, hi = _fit_range([a])
    for mine, ref in ((_bin_counts(a, 30, lo, hi, inside=True), np.histogram(a, 30, (lo, hi))[0]),
                      (_bin_counts(a, 30, 0.0, 1.0), np.histogram(a, 30, (0.0, 1.0))[0])):
        assert mine.sum() == ref.sum()
        if kind != "constant-ish":
            np.testing.assert_array_equal(mine, ref)
        else:  # values on a float32 grid that falls on a bin edge may land in the neighbouring bin
            assert np.abs(mine - ref).sum() <= 0.002 * a.size


def test_values_outside_a_given_range_and_nan_are_left_out():
    a = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan], dtype=np.float32)
    counts = _bin_counts(a, 2, 0.0, 1.0)
    assert counts.tolist() == [1, 2]  # 0.0 | 0.5 and 1.0 (the right edge belongs to the last bin)


def test_histograms_share_one_range_across_layers():
    a, b = np.linspace(0, 1, 100).reshape(10, 10), np.linspace(0, 4, 100).reshape(10, 10)
    counts, edges = _histograms([a, b], 8, None)
    np.testing.assert_array_equal(edges[0], edges[1])
    assert edges[0][0] == 0 and edges[0][-1] == 4 and counts.sum() == 200


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments_match_numpy(dtype):
    rng = np.random.default_rng(2)
    arrays = [(0.5 + 0.01 * rng.standard_normal((300, 50))).astype(dtype), rng.standard_normal((300, 50)).astype(dtype)]
    mean, std = _moments(arrays)
    for a, m, s in zip(arrays, mean, std):
        assert m == pytest.approx(a.mean(dtype=np.float64), rel=1e-12, abs=1e-15)
        assert s == pytest.approx(a.std(dtype=np.float64), rel=1e-6)
