"""nnc's metrics against independent references: scikit-image for PSNR and SSIM, and a
float64 MS-SSIM written here from Wang et al.'s definition (scipy's Gaussian filter), so
a wrong peak, a wrong mean over frames, a swapped window or a wrong scale weight fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from nnc.codec.training import reconstruction_loss
from nnc.metrics import compare, mean_psnr, ms_ssim_rgb, psnr_per_frame, psnr_planes
from synthetic import synthetic_frames


def noisy(frames: np.ndarray, sigma: float, max_value: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = frames.astype(np.float64) + rng.normal(0, sigma, frames.shape)
    return np.clip(np.round(values), 0, max_value).astype(frames.dtype)


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_psnr_per_frame_matches_scikit_image(bit_depth):
    max_value = 2**bit_depth - 1
    reference = synthetic_frames(4, 48, 80).astype(np.uint16) * (max_value // 255)
    # Noise that grows over the clip, so each frame has its own PSNR.
    distorted = np.stack([noisy(frame, 2.0 + 3 * i, max_value, seed=i) for i, frame in enumerate(reference)])
    ours = psnr_per_frame(reference, distorted, max_value)
    expected = [peak_signal_noise_ratio(r, d, data_range=max_value) for r, d in zip(reference, distorted)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
    assert len(set(np.round(ours, 3))) == 4
    # The clip's PSNR is the mean of the frames' PSNRs (the papers' convention), not the
    # PSNR of the clip's mean squared error.
    assert compare(reference, distorted, max_value)["psnr-rgb"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert mean_psnr(ours) != pytest.approx(peak_signal_noise_ratio(reference, distorted, data_range=max_value))


def test_plane_psnr_matches_scikit_image_per_plane():
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(3):
        planes = [rng.integers(16, 236, size=shape).astype(np.uint8) for shape in ((32, 64), (16, 32), (16, 32))]
        frames.append(planes)
    distorted = [[noisy(plane, sigma, 255, seed=i) for plane, sigma in zip(frame, (2.0, 5.0, 9.0))]
                 for i, frame in enumerate(frames)]
    result = psnr_planes(frames, distorted, 8)
    for key, plane in (("psnr-y", 0), ("psnr-u", 1), ("psnr-v", 2)):
        expected = np.mean([peak_signal_noise_ratio(r[plane], d[plane], data_range=255) for r, d in zip(frames, distorted)])
        assert result[key] == pytest.approx(expected, abs=1e-9)
    assert result["psnr-yuv"] == pytest.approx((6 * result["psnr-y"] + result["psnr-u"] + result["psnr-v"]) / 8)


def test_training_loss_ssim_matches_scikit_image():
    """Fusion6 = 0.7 L1 + 0.3 (1 - SSIM): SSIM with an 11x11 Gaussian window (sigma 1.5),
    population covariances and no padding, as scikit-image computes it with
    gaussian_weights=True, use_sample_covariance=False (it crops the same border)."""
    reference = synthetic_frames(1, 64, 96)[0]
    distorted = noisy(reference, 6.0, 255)
    ref = torch.from_numpy(reference).permute(2, 0, 1)[None].double() / 255
    dist = torch.from_numpy(distorted).permute(2, 0, 1)[None].double() / 255
    loss = float(reconstruction_loss(dist, ref, "fusion6"))
    ssim = structural_similarity(reference / 255, distorted / 255, data_range=1.0, channel_axis=2,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    l1 = float(np.mean(np.abs(reference / 255 - distorted / 255)))
    assert 0.5 < ssim < 0.95
    assert loss == pytest.approx(0.7 * l1 + 0.3 * (1 - ssim), abs=2e-4)


# --------------------------------------------------------------------------- MS-SSIM
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli and Bovik (2003)


def gaussian_valid(image: np.ndarray) -> np.ndarray:
    """11-tap Gaussian (sigma 1.5) over both axes, valid part only."""
    taps = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    taps /= taps.sum()
    filtered = correlate1d(correlate1d(image, taps, axis=0, mode="constant"), taps, axis=1, mode="constant")
    return filtered[5:-5, 5:-5]


def ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(SSIM, contrast-structure) means of one channel in [0, 1]."""
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = gaussian_valid(x), gaussian_valid(y)
    var_x = gaussian_valid(x * x) - mu_x**2
    var_y = gaussian_valid(y * y) - mu_y**2
    cov = gaussian_valid(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return float(np.mean(luminance * cs)), float(np.mean(cs))


def downsample(image: np.ndarray) -> np.ndarray:
    """2x2 average (odd sides padded with zeros and averaged over 4, as avg_pool2d with padding)."""
    height, width = image.shape
    padded = np.pad(image, ((0, height % 2), (0, width % 2)))
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).mean(axis=(1, 3))


def reference_ms_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over channels of prod_j cs_j^w_j (j < 5) * SSIM_5^w_5."""
    values = []
    for channel in range(x.shape[2]):
        a, b = x[..., channel], y[..., channel]
        value = 1.0
        for scale, weight in enumerate(MS_SSIM_WEIGHTS):
            ssim, cs = ssim_terms(a, b)
            if scale < len(MS_SSIM_WEIGHTS) - 1:
                value *= max(cs, 0.0) ** weight
                a, b = downsample(a), downsample(b)
            else:
                value *= max(ssim, 0.0) ** weight
        values.append(value)
    return float(np.mean(values))


def test_ms_ssim_matches_an_independent_float64_implementation():
    reference = synthetic_frames(2, 176, 192)
    distorted = np.stack([noisy(frame, 6.0 + 10 * i, 255, seed=i) for i, frame in enumerate(reference)])
    expected = np.mean([reference_ms_ssim(r / 255.0, d / 255.0) for r, d in zip(reference, distorted)])
    ours = ms_ssim_rgb(reference, distorted, 255)
    assert 0.5 < expected < 0.999
    assert ours == pytest.approx(expected, abs=5e-5)
    assert ms_ssim_rgb(reference[:, :160], distorted[:, :160], 255) is None  # too small for 5 scales
