"""Quality metrics: RGB as the INR papers measure it, YUV as video coding measures it.

PSNR-RGB is computed per frame from the RGB MSE and averaged over frames.  PSNR-Y, -U,
-V are computed on a YUV source's own planes (limited range, 4:2:0 as stored) and
PSNR-YUV weights them 6:1:1 (the video-coding convention).  MS-SSIM uses
pytorch-msssim on RGB in [0, 1], also given in dB.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

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


def psnr_planes(reference: Sequence[Sequence[np.ndarray]], distorted: Sequence[Sequence[np.ndarray]],
                bit_depth: int) -> dict:
    """PSNR-Y, -U, -V and the 6:1:1 PSNR-YUV of planar YUV frames, measured on the planes as stored.

    ``reference`` and ``distorted`` hold, per frame, the integer planes ``[Y, U, V]`` (or
    ``[Y]`` for gray) of the same pixel format: limited range as stored, chroma at its
    stored (e.g. 4:2:0) resolution, as HM, VTM and ffmpeg's psnr filter measure.  The
    peak is ``2**bit_depth - 1`` (255, 1023 for 10-bit: ffmpeg's psnr filter; HM would use
    1020 for 10-bit).  Each plane's PSNR is computed per frame and averaged over frames
    (identical frames capped at 100 dB, as :func:`mean_psnr`); PSNR-YUV = (6 Y + U + V) / 8.
    """
    if len(reference) != len(distorted) or not len(reference):
        raise ValueError(f"plane PSNR needs the same number of frames, got {len(reference)} and {len(distorted)}")
    peak = float(2**bit_depth - 1)
    planes = len(reference[0])
    per_plane = np.empty((planes, len(reference)))
    for index, (ref_frame, dist_frame) in enumerate(zip(reference, distorted)):
        if len(ref_frame) != planes or len(dist_frame) != planes:
            raise ValueError(f"frame {index}: {len(ref_frame)} and {len(dist_frame)} planes, expected {planes}")
        for plane, (ref, dist) in enumerate(zip(ref_frame, dist_frame)):
            if ref.shape != dist.shape:
                raise ValueError(f"frame {index} plane {plane}: shapes {ref.shape} and {dist.shape}")
            diff = ref.astype(np.float64) - dist.astype(np.float64)
            with np.errstate(divide="ignore"):
                per_plane[plane, index] = 10.0 * np.log10(peak * peak / np.mean(diff * diff))
    result = {"psnr-y": mean_psnr(per_plane[0])}
    if planes == 3:
        result["psnr-u"], result["psnr-v"] = mean_psnr(per_plane[1]), mean_psnr(per_plane[2])
        result["psnr-yuv"] = (6 * result["psnr-y"] + result["psnr-u"] + result["psnr-v"]) / 8
    else:  # gray: luma is all there is
        result["psnr-u"] = result["psnr-v"] = None
        result["psnr-yuv"] = result["psnr-y"]
    return result


def ms_ssim_db(value: float | None) -> float | None:
    """MS-SSIM in dB, -10 log10(1 - MS-SSIM), the scale learned-compression papers plot it on."""
    if value is None:
        return None
    return 100.0 if value >= 1.0 else float(-10.0 * np.log10(1.0 - value))


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


def compare(reference: np.ndarray, distorted: np.ndarray, max_value: int) -> dict:
    """The RGB metrics of ``distorted`` against ``reference`` (same shape, same integer scale).

    YUV metrics need the planes themselves (:func:`psnr_planes`): a YUV made back from RGB
    is not what video coding measures.
    """
    if reference.shape != distorted.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape}, distorted {distorted.shape}")
    result = {"psnr-rgb": mean_psnr(psnr_per_frame(reference, distorted, max_value))}
    result["ms-ssim-rgb"] = ms_ssim_rgb(reference, distorted, max_value)
    result["ms-ssim-db"] = ms_ssim_db(result["ms-ssim-rgb"])
    return result
