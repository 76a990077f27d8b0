"""How much one decode may produce, checked before the first frame is rendered.

A compressed file legitimately expands a lot, so a few-KB .nnc file may describe a
16384x16384 frame or a million frames, all within the format's limits
(:data:`~nnc.media.clip.MAX_DIMENSION`, :data:`~nnc.media.clip.MAX_FRAMES`).  Like
ffmpeg, nnc decodes such a file only when asked to: the frame size and the estimated
output size are checked against bounds with sane defaults, which ``nnc decode
--max-pixels`` and ``--max-output-bytes`` raise.
"""

from __future__ import annotations

import math

import av

from ..errors import MediaError
from ..fileio import human_size
from ..units import plural
from .clip import VideoInfo

# Largest frame decoded without --max-pixels: DCI 4K (4096x2160) and UHD fit, 8K does
# not.  Decoding one frame of this size through a conv decoder takes a few GB.
DEFAULT_MAX_PIXELS = 4096 * 2304
# Largest output written without --max-output-bytes: about 22,000 frames of 1080p
# yuv420p Y4M (15 minutes at 25 fps), far more than any nnc model is fitted to.
DEFAULT_MAX_OUTPUT_BYTES = 64 << 30
# MP4 (x264/x265 at the default CRF) is lossy: estimated at a quarter of the raw frame,
# a generous bound for the smooth frames INR decoders produce.
_MP4_FRACTION = 4
_Y4M_FRAME_HEADER = len(b"FRAME\n")


def raw_frame_bytes(pix_fmt: str, width: int, height: int) -> int:
    """Bytes of one uncompressed frame in ``pix_fmt`` (each plane at its own size)."""
    layout = av.VideoFormat(pix_fmt, width, height)
    planar = sum(c.width * c.height * ((c.bits + 7) // 8) for c in layout.components)
    padded = math.ceil(layout.padded_bits_per_pixel * width * height / 8)  # bgr0's padding byte
    return max(planar, padded)


def estimated_output_bytes(info: VideoInfo, format: str, num_frames: int | None = None) -> int:
    """An upper estimate of the bytes ``nnc decode`` writes for ``num_frames`` frames
    (default: all of them) in output ``format``: exact for Y4M and raw YUV, the raw
    size for PNG and FFV1 (lossless coders rarely beat it by much on noise), a quarter
    of it for MP4."""
    from .writer import _plan  # the pixel format each output format stores

    frames = info.num_frames if num_frames is None else num_frames
    plan = _plan(info, format, None)
    per_frame = raw_frame_bytes(plan.pix_fmt, info.width, info.height)
    if format == "y4m":
        per_frame += _Y4M_FRAME_HEADER
    elif format == "mp4":
        per_frame = -(-per_frame // _MP4_FRACTION)
    return per_frame * frames


def check_output_limits(info: VideoInfo, format: str, *, num_frames: int | None = None,
                        max_pixels: int = DEFAULT_MAX_PIXELS,
                        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> None:
    """MediaError (one line, naming the option that raises the bound) when a decode of
    ``info`` to ``format`` would render frames above ``max_pixels`` or write more than
    ``max_output_bytes``.  Call it after reading the header, before decoding anything."""
    pixels = info.width * info.height
    if pixels > max_pixels:
        raise MediaError(
            f"the file decodes to {info.width}x{info.height} frames ({pixels} pixels), above the limit of "
            f"{max_pixels} pixels: pass --max-pixels {pixels} if you mean it"
        )
    estimate = estimated_output_bytes(info, format, num_frames)
    if estimate > max_output_bytes:
        frames = info.num_frames if num_frames is None else num_frames
        raise MediaError(
            f"decoding {plural(frames, 'frame')} of {info.width}x{info.height} to {format} would write about "
            f"{human_size(estimate)}, above the limit of {human_size(max_output_bytes)}: pass "
            f"--max-output-bytes {estimate} (or decode fewer frames with --frames) if you mean it"
        )
