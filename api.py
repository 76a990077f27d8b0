"""nnc's Python API, for notebooks and scripts: encode, decode, evaluate, info.

    import nnc
    report = nnc.encode("clip.y4m", "clip.nnc", model="hnerv", size="60k", time_budget="2m")
    frames = nnc.decode("clip.nnc")            # numpy (T, H, W, 3), uint8 (uint16 above 8 bits)
    nnc.evaluate("clip.y4m", "clip.nnc")["results"]["psnr-rgb"]
    nnc.info("clip.nnc")["header"]

Arrays work in place of paths: ``nnc.encode(frames)`` takes (T, H, W, 3) or (H, W, 3)
uint8/uint16 RGB.  The options are the ``nnc encode`` flags with underscores
(``epochs=300``, ``time_budget="20m"``, ``dry_run=True``); errors are
:class:`nnc.errors.NncError` with the CLI's one-line message.  Progress bars use
``tqdm.auto`` (widgets in Jupyter).  This module sits above ``eval`` in the layers and
imports torch only when called, so ``import nnc`` stays light.
"""

from __future__ import annotations

import re
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import NncError

__all__ = ["encode", "decode", "evaluate", "info"]

_SIZE = re.compile(r"(\d+(?:\.\d+)?)([kmg]?)")
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def _model_size(value) -> float:
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip().lower())
        if not match:
            raise NncError(f"size {value!r}: expected a parameter count like 1.5M or 60k")
        return float(match[1]) * _SCALE[match[2]]
    return float(value)


def _video_from_array(frames: np.ndarray, fps) -> "Video":
    from .media import Video, VideoInfo

    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise NncError(f"frames must be (T, H, W, 3) or (H, W, 3) RGB; got shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16):
        raise NncError(f"frames must be uint8 or uint16 RGB; got {array.dtype}")
    depth = 8 if array.dtype == np.uint8 else 16
    info = VideoInfo(width=array.shape[2], height=array.shape[1], num_frames=array.shape[0], fps=Fraction(fps),
                     pix_fmt="rgb24" if depth == 8 else "rgb48le", bit_depth=depth, color_matrix="rgb",
                     color_range="pc")
    return Video(frames=np.ascontiguousarray(array), info=info)


def encode(source, output=None, model: str = "hnerv", *, fps=25, frames=None, show_progress: bool = True,
           **options):
    """Encode a video file, image file or RGB array into a .nnc file; returns the encode report
    (``.path``, ``.file_bytes``, ``.bpp``, ``.psnr``, ``.stats``), or with ``dry_run=True``
    the plan (``.plan``) and nothing written.

    ``output`` defaults to the source's name with ``.nnc`` (a temporary file for arrays).
    ``frames`` is ``--frames``: N (the first N), ``"10:20"`` or ``(10, 20)`` (STOP exclusive)."""
    from .codec.files import encode_file, encode_media, make_options
    from .units import parse_frame_range

    if "size" in options and options["size"] is not None:
        options["size"] = _model_size(options["size"])
    start, stop = parse_frame_range(frames, "frames") or (0, None)
    built = make_options(model, show_progress=show_progress, **options)
    if isinstance(source, (str, Path)):
        output = Path(output) if output is not None else Path(source).with_suffix(".nnc")
        media = {"start_frame": start, "max_frames": None if stop is None else stop - start}
        return encode_file([Path(source)], output, model, built, media=media)
    video = _video_from_array(source, fps)
    if (start, stop) != (0, None):
        if start >= video.info.num_frames:
            raise NncError(f"frames start at {start}, but the array has {video.info.num_frames} frames")
        video = _video_from_array(video.frames[start:stop], fps)
    if output is None:
        handle = tempfile.NamedTemporaryFile(prefix="nnc-", suffix=".nnc", delete=False)
        handle.close()
        output = handle.name
    return encode_media(video, Path(output), model, built)


def decode(path, *, frames: int | str | tuple[int, int | None] | None = None, device: str = "cpu") -> np.ndarray:
    """The decoded RGB frames of a .nnc file: numpy (T, H, W, 3), uint8 (uint16 above 8 bits).
    ``frames`` decodes only some, as ``nnc decode --frames``: N (the first N), ``"10:20"`` or
    ``(10, 20)`` (STOP exclusive; ``(10, None)`` to the end)."""
    from .codec.files import decode_to_frames
    from .codec.video_api import decode_frames, media_info, read_for_decode, resolve_frame_range
    from .units import parse_frame_range

    if frames is None:
        return decode_to_frames(Path(path), device=device).frames
    frame_range = parse_frame_range(frames, "frames")
    bitstream = read_for_decode(Path(path), frame_range)  # a segmented file: only the segments needed
    wanted = resolve_frame_range(frame_range, media_info(bitstream).num_frames)
    return np.concatenate(list(decode_frames(bitstream, device=device, frames=wanted)))


def evaluate(reference, distorted) -> dict:
    """Quality of ``distorted`` against ``reference``.  Paths (a video, an image, or a .nnc
    file as the distorted one): ``nnc eval``'s CompressAI-style dict (``results`` holds
    psnr-rgb, psnr-y/u/v/yuv, ms-ssim-rgb, bpp).  Arrays (T, H, W, 3) or (H, W, 3): the RGB
    metrics only (``results``: psnr-rgb, ms-ssim-rgb)."""
    if isinstance(reference, (str, Path)) and isinstance(distorted, (str, Path)):
        from .eval.compare import evaluate as evaluate_files
        from .media import read_video

        return evaluate_files(Path(reference), Path(distorted), read=lambda path: read_video(path))
    from .metrics import compare

    ref = reference if not isinstance(reference, (str, Path)) else _read_frames(reference)
    dist = decode(distorted) if isinstance(distorted, (str, Path)) and str(distorted).endswith(".nnc") else (
        _read_frames(distorted) if isinstance(distorted, (str, Path)) else distorted)
    ref, dist = np.asarray(ref), np.asarray(dist)
    if ref.ndim == 3:
        ref, dist = ref[None], dist.reshape((1, *dist.shape[-3:]))
    if ref.shape != dist.shape or ref.dtype != dist.dtype:
        raise NncError(f"reference is {ref.shape} {ref.dtype}, distorted is {dist.shape} {dist.dtype}")
    max_value = 255 if ref.dtype == np.uint8 else 65535
    return {"results": compare(ref, dist, max_value), "meta": {"frames": ref.shape[0],
                                                             "resolution": f"{ref.shape[2]}x{ref.shape[1]}"}}


def _read_frames(path) -> np.ndarray:
    from .media import read_video

    return read_video(Path(path)).frames


def info(path) -> dict:
    """``nnc info --json``: the file's header, chunks and where its bytes go."""
    from .codec.files import describe

    return describe(Path(path))["data"]
