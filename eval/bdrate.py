"""Bjontegaard delta rate and delta PSNR (VCEG-M33) with piecewise-cubic interpolation.

The JCT-VC / JVET common-test-condition sheets replaced Bjontegaard's cubic polynomial
fit by piecewise cubic Hermite interpolation (PCHIP), which cannot overshoot between
points; this module does the same: each curve is interpolated with scipy's
``PchipInterpolator`` and the difference is integrated over the overlap only.

* BD-rate: log-rate as a function of quality; the mean log-rate difference over the
  common quality interval, as a percentage (negative: the test codec needs fewer bits).
* BD-PSNR: quality as a function of log-rate; the mean quality difference over the
  common log-rate interval (positive: the test codec is better).

Rates may be in any unit (bpp, kbps) as long as both curves use the same one.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import PchipInterpolator

from ..errors import NncError


def _curve(rates, qualities, what: str) -> tuple[np.ndarray, np.ndarray]:
    rates = np.asarray(rates, dtype=np.float64).ravel()
    qualities = np.asarray(qualities, dtype=np.float64).ravel()
    if rates.shape != qualities.shape:
        raise NncError(f"BD: the {what} curve has {rates.size} rates but {qualities.size} quality values")
    if rates.size < 2:
        raise NncError(f"BD: the {what} curve needs at least 2 points, it has {rates.size}")
    if not (np.all(np.isfinite(rates)) and np.all(np.isfinite(qualities))):
        raise NncError(f"BD: the {what} curve has non-finite values")
    if np.any(rates <= 0):
        raise NncError(f"BD: the {what} curve has rates <= 0")
    return np.log(rates), qualities


def _mean_difference(anchor_x, anchor_y, test_x, test_y, what: str) -> float:
    """Mean of test(x) - anchor(x) over the common x interval of two PCHIP curves."""
    interpolants = []
    for x, y, name in ((anchor_x, anchor_y, "anchor"), (test_x, test_y, "test")):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        if np.any(np.diff(x) <= 0):
            # Two points at the same abscissa: no function passes through both.
            raise NncError(f"BD: the {name} curve repeats a {what} value; it must be strictly monotonic")
        interpolants.append(PchipInterpolator(x, y))
    low = max(anchor_x.min(), test_x.min())
    high = min(anchor_x.max(), test_x.max())
    if not high > low:
        raise NncError(f"BD: the curves do not overlap in {what}")
    anchor, test = interpolants
    return float((test.integrate(low, high) - anchor.integrate(low, high)) / (high - low))


def bd_rate(anchor_rates, anchor_psnrs, test_rates, test_psnrs) -> float:
    """Average rate difference of test versus anchor at equal quality, in percent."""
    anchor_log_rate, anchor_quality = _curve(anchor_rates, anchor_psnrs, "anchor")
    test_log_rate, test_quality = _curve(test_rates, test_psnrs, "test")
    mean_log_difference = _mean_difference(anchor_quality, anchor_log_rate, test_quality, test_log_rate, "quality")
    return (math.exp(mean_log_difference) - 1.0) * 100.0


def bd_psnr(anchor_rates, anchor_psnrs, test_rates, test_psnrs) -> float:
    """Average quality difference of test versus anchor at equal rate (dB for PSNR)."""
    anchor_log_rate, anchor_quality = _curve(anchor_rates, anchor_psnrs, "anchor")
    test_log_rate, test_quality = _curve(test_rates, test_psnrs, "test")
    return _mean_difference(anchor_log_rate, anchor_quality, test_log_rate, test_quality, "rate")
