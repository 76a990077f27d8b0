"""``nnc eval``: measure a decoded video (or a .nnc file) against its reference."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import NncError
from ..metrics import compare
from .planes import read_source_planes, reference_planes


def file_size(path: Path) -> int:
    """Bytes the user stores: a file, or every file of a folder of frames."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _to_common_scale(frames: np.ndarray, max_value: int, target: int) -> np.ndarray:
    if max_value == target:
        return frames
    return np.round(frames.astype(np.float64) * (target / max_value)).astype(np.uint16 if target > 255 else np.uint8)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def _read_image_or_video(path: Path, read: Callable):
    """A still image (one RGB frame, via Pillow) or a video (``read``)."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES and Path(path).is_file():
        from ..codec.image_api import image_as_video
        from ..media.image import read_image

        return image_as_video(read_image(path))
    return read(path)


def evaluate(reference: Path, distorted: Path, read: Callable) -> dict:
    """Metrics in CompressAI's results format (``name``, ``results``, ``meta``)."""
    from ..codec.files import decode_to_frames

    ref = _read_image_or_video(reference, read)
    reference_yuv = reference_planes(ref, read_source_planes(reference, ref.info))
    distorted_planes = distorted_pix_fmt = None
    started = time.perf_counter()
    if Path(distorted).suffix.lower() == ".nnc":
        decoded = decode_to_frames(distorted)
        frames, dist_max, name = decoded.frames, decoded.info.max_value, f"nnc-{decoded.codec}"
        dist_info = ref.info
    else:
        video = _read_image_or_video(distorted, read)
        frames, dist_max, name = video.frames, video.max_value, Path(distorted).suffix.lstrip(".") or "frames"
        dist_info, distorted_pix_fmt = video.info, video.info.pix_fmt
        if distorted_pix_fmt == reference_yuv.format.pix_fmt:
            distorted_planes = read_source_planes(distorted, video.info)
    seconds = time.perf_counter() - started
    if frames.shape != ref.frames.shape:
        raise NncError(
            f"{distorted} has {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}, "
            f"reference has {ref.frames.shape[0]} of {ref.frames.shape[2]}x{ref.frames.shape[1]}"
        )
    max_value = max(ref.max_value, dist_max)
    metrics = compare(
        _to_common_scale(ref.frames, ref.max_value, max_value), _to_common_scale(frames, dist_max, max_value),
        max_value,
    )
    # PSNR-Y/U/V/YUV on the reference's own planes; a decoded .nnc (or another format) is
    # converted to them as `nnc decode` writes them.
    if dist_max != ref.max_value:
        frames, dist_info = _to_common_scale(frames, dist_max, ref.max_value), ref.info
    metrics.update(reference_yuv.measure(frames, dist_info, distorted_planes, distorted_pix_fmt))
    size = file_size(Path(distorted))
    info = ref.info
    metrics["bpp"] = size * 8 / (info.width * info.height * info.num_frames)
    metrics["bytes"] = size
    return {
        "name": name,
        "description": f"{distorted} against {reference}",
        "results": metrics,
        "meta": {
            "reference": str(reference), "distorted": str(distorted), "frames": info.num_frames,
            "resolution": f"{info.width}x{info.height}", "colour": f"{info.color_matrix} {info.color_range}",
            "psnr": "per-frame RGB MSE, averaged over frames", "nnc": __version__,
            "yuv_planes": reference_yuv.describe(),
            "decode_or_read_seconds": seconds,
        },
    }
