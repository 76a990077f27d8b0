"""Bjontegaard deltas against values derived by hand and a published constellation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnc.errors import NncError
from nnc.eval.bdrate import bd_psnr, bd_rate

# HEVC-style anchor: four points, PSNR rising with log rate but not linearly.
ANCHOR_RATES = [9487.76, 4593.60, 2486.44, 1358.24]
ANCHOR_PSNRS = [40.037, 38.615, 36.845, 34.851]
TEST_RATES = [9787.80, 4469.00, 2451.52, 1356.24]
TEST_PSNRS = [40.121, 38.651, 36.970, 34.987]


@pytest.mark.parametrize("factor", [0.8, 1.25, 0.5])
def test_a_curve_shifted_in_rate_by_a_factor_gives_that_percentage(factor):
    # Same quality at factor x the rate everywhere: the log-rate gap is log(factor) at
    # every quality, whatever the interpolation, so BD-rate is exactly (factor - 1).
    test_rates = [r * factor for r in ANCHOR_RATES]
    assert bd_rate(ANCHOR_RATES, ANCHOR_PSNRS, test_rates, ANCHOR_PSNRS) == pytest.approx((factor - 1) * 100, abs=1e-9)


def test_linear_in_log_rate_curves_give_the_closed_form():
    # PSNR = 30 + 5 ln(R) for the anchor and 0.7 dB more for the test: PCHIP reproduces
    # straight lines, so BD-PSNR is 0.7 dB and BD-rate is exp(-0.7 / 5) - 1.
    rates = np.array([0.01, 0.02, 0.05, 0.1, 0.2])
    anchor = 30 + 5 * np.log(rates)
    test = anchor + 0.7
    assert bd_psnr(rates, anchor, rates, test) == pytest.approx(0.7, abs=1e-12)
    assert bd_rate(rates, anchor, rates, test) == pytest.approx((math.exp(-0.7 / 5) - 1) * 100, abs=1e-9)


def test_published_constellation_matches_the_jctvc_pchip_sheet():
    # FAU-LMS's x265 example points; the reference values come from the `bjontegaard`
    # package 1.3.0 (method="pchip"), which reproduces the JCT-VC CTC Excel sheet
    # (JCTVC-L1100) to 10 decimals. Computed once, offline, with that package.
    assert bd_rate(ANCHOR_RATES, ANCHOR_PSNRS, TEST_RATES, TEST_PSNRS) == pytest.approx(-4.417485350589045, abs=1e-9)
    assert bd_psnr(ANCHOR_RATES, ANCHOR_PSNRS, TEST_RATES, TEST_PSNRS) == pytest.approx(0.11969278542479489, abs=1e-9)


def test_point_order_does_not_matter_and_swapping_curves_inverts():
    order = [2, 0, 3, 1]
    shuffled = bd_rate([ANCHOR_RATES[i] for i in order], [ANCHOR_PSNRS[i] for i in order], TEST_RATES, TEST_PSNRS)
    assert shuffled == pytest.approx(bd_rate(ANCHOR_RATES, ANCHOR_PSNRS, TEST_RATES, TEST_PSNRS), abs=1e-12)
    assert bd_psnr(TEST_RATES, TEST_PSNRS, ANCHOR_RATES, ANCHOR_PSNRS) == pytest.approx(
        -bd_psnr(ANCHOR_RATES, ANCHOR_PSNRS, TEST_RATES, TEST_PSNRS), abs=1e-12)


def test_only_the_overlap_is_integrated():
    # The anchor is straight (in log rate) between its top two points and bends below
    # them; a test curve covering only that top stretch, at half the rate, gives exactly
    # -50%: the anchor points outside the overlap do not count.
    rates = np.array([1.0, 2.0, 4.0, 8.0])
    psnrs = np.array([20.0, 33.0, 36.0, 39.0])
    assert bd_rate(rates, psnrs, rates[2:] / 2, psnrs[2:]) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(rates, psnrs, rates / 2, psnrs) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(rates, psnrs, rates[2:] / 2, psnrs[2:] - 1.0) != pytest.approx(-50.0, abs=1e-3)


@pytest.mark.parametrize("anchor, test, message", [
    (([1.0], [30.0]), ([1.0, 2.0], [30.0, 31.0]), "at least 2 points"),
    (([1.0, 2.0], [30.0, 31.0]), ([4.0, 8.0], [40.0, 41.0]), "do not overlap"),
    (([0.0, 2.0], [30.0, 31.0]), ([1.0, 2.0], [30.0, 31.0]), "rates <= 0"),
    (([1.0, 2.0, 3.0], [30.0, 31.0, 31.0]), ([1.0, 2.0], [30.0, 31.0]), "strictly monotonic"),
    (([1.0, 2.0], [30.0, float("nan")]), ([1.0, 2.0], [30.0, 31.0]), "non-finite"),
])
def test_bad_curves_are_one_line_errors(anchor, test, message):
    with pytest.raises(NncError, match=message):
        bd_rate(*anchor, *test)
