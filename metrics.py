"""Quality metrics on decoded RGB frames, following the INR papers' conventions.

PSNR is computed per frame from the RGB MSE and averaged over frames.  PSNR-YUV
weights the Y, U and V PSNRs 6:1:1 (the video-coding convention).  MS-SSIM uses
pytorch-msssim on RGB in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

# Y'CbCr coefficients (Kr, Kb) of the matrices nnc records.
_MATRIX_COEFFICIENTS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}

# pytorch-msssim's 5-scale MS-SSIM needs the short side > (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161


def _as_float(frames: np.ndarray, max_value: int) -> np.ndarray:
    return frames.astype(np.float64) / max_value


def psnr_per_frame(reference: np.ndarray, distorted: np.ndarray, max_value: int) -> np.ndarray:
    """PSNR of each frame of (T, H, W, C) integer arrays, in dB (inf where identical)."""
    diff = reference.astype(np.float64) - distorted.astype(np.float64)
    mse = np.mean(diff * diff, axis=tuple(range(1, diff.ndim)))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(max_value) ** 2 / mse)


def mean_psnr(values: np.ndarray) -> float:
    """Mean over frames; identical frames (inf) are capped at 100 dB so means stay finite."""
    return float(np.mean(np.minimum(values, 100.0)))


def rgb_to_yuv(frames: np.ndarray, max_value: int, matrix: str = "bt601") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-range float Y, U, V planes in [0, 1] from RGB, with 4:2:0 chroma (2x2 means)."""
    kr, kb = _MATRIX_COEFFICIENTS.get(matrix, _MATRIX_COEFFICIENTS["bt601"])
    rgb = _as_float(frames, max_value)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = kr * r + (1 - kr - kb) * g + kb * b
    u = (b - y) / (2 * (1 - kb)) + 0.5
    v = (r - y) / (2 * (1 - kr)) + 0.5
    height, width = y.shape[1] // 2 * 2, y.shape[2] // 2 * 2
    if height and width:
        u = u[:, :height, :width].reshape(u.shape[0], height // 2, 2, width // 2, 2).mean(axis=(2, 4))
        v = v[:, :height, :width].reshape(v.shape[0], height // 2, 2, width // 2, 2).mean(axis=(2, 4))
    return y, u, v


def psnr_yuv(reference: np.ndarray, distorted: np.ndarray, max_value: int, matrix: str = "bt601") -> dict:
    """Per-plane PSNR (mean over frames) and the 6:1:1 weighted PSNR-YUV."""
    result = {}
    for plane, ref, dist in zip("yuv", rgb_to_yuv(reference, max_value, matrix), rgb_to_yuv(distorted, max_value, matrix)):
        mse = np.mean((ref - dist) ** 2, axis=tuple(range(1, ref.ndim)))
        with np.errstate(divide="ignore"):
            result[f"psnr-{plane}"] = mean_psnr(10.0 * np.log10(1.0 / mse))
    result["psnr-yuv"] = (6 * result["psnr-y"] + result["psnr-u"] + result["psnr-v"]) / 8
    return result


def ms_ssim_rgb(reference: np.ndarray, distorted: np.ndarray, max_value: int, batch: int = 4) -> float | None:
    """Mean MS-SSIM over frames, or None when frames are too small for 5 scales."""
    if min(reference.shape[1:3]) < MS_SSIM_MIN_SIDE:
        return None
    from pytorch_msssim import ms_ssim

    values = []
    for start in range(0, reference.shape[0], batch):
        ref = torch.from_numpy(_as_float(reference[start : start + batch], max_value)).permute(0, 3, 1, 2).float()
        dist = torch.from_numpy(_as_float(distorted[start : start + batch], max_value)).permute(0, 3, 1, 2).float()
        values.append(ms_ssim(ref, dist, data_range=1.0, size_average=False))
    return float(torch.cat(values).mean())


def compare(reference: np.ndarray, distorted: np.ndarray, max_value: int, matrix: str = "bt601") -> dict:
    """All metrics of ``distorted`` against ``reference`` (same shape, same integer scale)."""
    if reference.shape != distorted.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape}, distorted {distorted.shape}")
    result = {"psnr-rgb": mean_psnr(psnr_per_frame(reference, distorted, max_value))}
    result.update(psnr_yuv(reference, distorted, max_value, matrix))
    result["ms-ssim-rgb"] = ms_ssim_rgb(reference, distorted, max_value)
    return result
