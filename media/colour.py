"""Pixel formats and YUV<->RGB conversion, done the way the ffmpeg command line does it.

Conversions go through swscale (PyAV's reformatter) with the flags the ffmpeg CLI uses
(``bicubic``), the matrix and range recorded in a :class:`VideoInfo`.  With a source's
own tags, or BT.601 limited range when it has none, this is what ``ffmpeg -i in.mp4
f%05d.png`` produces, pixel for pixel; the tests and the media report check that.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from ..errors import MediaError
from .clip import VideoInfo, is_gray_pix_fmt, is_rgb_pix_fmt, rgb_pix_fmt_for_depth

# The ffmpeg CLI sets sws_flags=bicubic on its automatic scalers.  For >8-bit sources
# (generic scaler path: the chroma upsampling filter depends on it) and odd frame
# sizes, anything else gives different pixels from `ffmpeg -i in f%05d.png`.
SWS_FLAGS = Interpolation.BICUBIC
# Writing: RGB -> YUV has no ffmpeg result to match, so it is chosen for the best
# read-back.  Area averaging is the inverse of the chroma replication of the 8-bit
# reader path, and measured best for 4:2:0 round trips; accurate rounding avoids
# swscale's low-precision path that is off by up to 6 levels (in 8-bit terms) for
# 16-bit RGB input.
SWS_FLAGS_FROM_RGB = Interpolation.AREA | Interpolation.ACCURATE_RND

_SWS_MATRIX = {"bt601": Colorspace.ITU601, "bt709": Colorspace.ITU709, "bt2020": Colorspace.BT2020}
_AV_RANGE = {"tv": ColorRange.MPEG, "pc": ColorRange.JPEG}

# AVColorSpace values (the matrix_coefficients of H.264/HEVC VUI, also used by MKV/MP4).
AVCOL_SPC_RGB, AVCOL_SPC_BT709, AVCOL_SPC_UNSPECIFIED = 0, 1, 2
AVCOL_SPC_FCC, AVCOL_SPC_BT470BG, AVCOL_SPC_SMPTE170M, AVCOL_SPC_SMPTE240M = 4, 5, 6, 7
AVCOL_SPC_BT2020_NCL, AVCOL_SPC_BT2020_CL = 9, 10
_MATRIX_OF_TAG = {
    AVCOL_SPC_UNSPECIFIED: "bt601",  # swscale's (and so ffmpeg's) default
    AVCOL_SPC_BT470BG: "bt601",
    AVCOL_SPC_SMPTE170M: "bt601",
    AVCOL_SPC_BT709: "bt709",
    AVCOL_SPC_BT2020_NCL: "bt2020",
    # swscale has no constant-luminance path either; it applies the NCL matrix.
    AVCOL_SPC_BT2020_CL: "bt2020",
    # Obsolete matrices, mapped to the nearest one we can record and write back
    # (FCC ~ BT.601, SMPTE 240M ~ BT.709): ffmpeg itself would use their exact
    # coefficients, so these rare sources differ from ffmpeg by a few levels.
    AVCOL_SPC_FCC: "bt601",
    AVCOL_SPC_SMPTE240M: "bt709",
}
# What encoders and containers get tagged with, so that a read-back (ours or any
# player's) uses the matrix the pixels were made with.
TAG_OF_MATRIX = {"bt601": AVCOL_SPC_SMPTE170M, "bt709": AVCOL_SPC_BT709, "bt2020": AVCOL_SPC_BT2020_NCL}
AV_RANGE_OF = {"tv": 1, "pc": 2}  # AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG

_DEPTH_OF_BITS = {8: 8, 9: 10, 10: 10, 11: 12, 12: 12, 14: 16, 16: 16}
_YUV_SUFFIX = {8: "", 10: "10le", 12: "12le", 16: "16le"}


def canonical_pix_fmt(av_pix_fmt: str) -> tuple[str, bool]:
    """Fold a decoder's pixel format onto the VideoInfo list.

    Returns (pix_fmt, full_range_by_format): the second is True for the JPEG-range
    formats (yuvj420p, ...) whose range is implied by the format itself.  Alpha is
    dropped; nv12/p010 and the like map to their planar equivalents; rare chroma
    layouts (4:4:0, 4:1:1, 4:1:0) map to 4:4:4, which holds them without loss.
    """
    try:
        fmt = av.VideoFormat(av_pix_fmt, 16, 16)
    except (ValueError, av.FFmpegError):
        raise MediaError(f"unsupported pixel format {av_pix_fmt}") from None
    colour_components = [c for c in fmt.components if not c.is_alpha]
    one_bit_gray = av_pix_fmt in ("monob", "monow")
    if fmt.is_bayer or (fmt.is_bit_stream and not one_bit_gray) or not colour_components:
        raise MediaError(f"unsupported pixel format {av_pix_fmt}")
    bits = 8 if one_bit_gray else max(c.bits for c in colour_components)
    depth = _DEPTH_OF_BITS.get(bits)
    if depth is None:
        raise MediaError(f"unsupported pixel format {av_pix_fmt} ({bits}-bit)")
    if fmt.is_rgb or fmt.has_palette:
        return rgb_pix_fmt_for_depth(8 if depth == 8 else 16), False
    if len(colour_components) == 1:
        return ("gray" if depth == 8 else f"gray{depth}le"), False
    chroma = (fmt.chroma_width(), fmt.chroma_height())
    layout = {(8, 8): "420", (8, 16): "422", (16, 16): "444"}.get(chroma, "444")
    return f"yuv{layout}p{_YUV_SUFFIX[depth]}", av_pix_fmt.startswith("yuvj")


def source_colour(
    frame: av.VideoFrame, pix_fmt: str, full_range_by_format: bool,
    color_matrix: str | None = None, color_range: str | None = None, *, source: str = "input",
) -> tuple[str, str]:
    """The (matrix, range) a decoded frame is converted with: override, else tag, else ffmpeg's default."""
    if is_rgb_pix_fmt(pix_fmt):
        if color_matrix is not None or color_range is not None:
            raise MediaError(f"{source} is RGB ({frame.format.name}): colour matrix/range overrides do not apply")
        return "rgb", "pc"
    if is_gray_pix_fmt(pix_fmt):
        # swscale (and so ffmpeg) reads gray as full range whatever the tag says.
        if color_range == "tv":
            raise MediaError(f"{source} is gray: it is always read full range (pc), --color-range tv does not apply")
        return color_matrix or "bt601", "pc"
    matrix = color_matrix
    if matrix is None:
        matrix = _MATRIX_OF_TAG.get(frame.colorspace)
        if matrix is None:
            raise MediaError(
                f"{source} uses an unsupported colour matrix (tag {frame.colorspace}); "
                "choose one with --color-matrix bt601|bt709|bt2020"
            )
    value_range = color_range
    if value_range is None:
        value_range = "pc" if full_range_by_format or frame.color_range == AV_RANGE_OF["pc"] else "tv"
    return matrix, value_range


def _as_limited_format(frame: av.VideoFrame) -> av.VideoFrame:
    """Copy a yuvj* frame into the matching yuv* format.

    swscale treats yuvj formats as full range whatever it is told, so honouring a
    --color-range tv override needs the planes under a format name without the j.
    """
    relabelled = av.VideoFrame(frame.width, frame.height, frame.format.name.replace("yuvj", "yuv"))
    for source_plane, target_plane in zip(frame.planes, relabelled.planes):
        rows = source_plane.height
        source_rows = np.frombuffer(source_plane, np.uint8).reshape(rows, source_plane.line_size)
        target_rows = np.frombuffer(target_plane, np.uint8).reshape(rows, target_plane.line_size)
        usable = min(source_plane.line_size, target_plane.line_size)
        target_rows[:, :usable] = source_rows[:, :usable]
    relabelled.colorspace = frame.colorspace
    return relabelled


def source_to_rgb(frame: av.VideoFrame, info: VideoInfo, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """One decoded frame -> (H, W, 3) RGB: uint8, or uint16 on the 0..65535 scale for >8-bit sources.

    Pass one ``reformatter`` for a whole video: reusing its swscale context makes the
    conversion about five times faster than setting one up per frame.
    """
    reformatter = reformatter or VideoReformatter()
    rgb_format = rgb_pix_fmt_for_depth(info.bit_depth)
    if is_rgb_pix_fmt(info.pix_fmt) or is_gray_pix_fmt(info.pix_fmt):
        return reformatter.reformat(frame, format=rgb_format, interpolation=SWS_FLAGS).to_ndarray()
    if frame.format.name.startswith("yuvj") and info.color_range == "tv":
        frame = _as_limited_format(frame)
    return reformatter.reformat(
        frame, format=rgb_format, interpolation=SWS_FLAGS, src_colorspace=_SWS_MATRIX[info.color_matrix],
        src_color_range=_AV_RANGE[info.color_range], dst_color_range=ColorRange.JPEG,
    ).to_ndarray()


def rgb_to_source(
    rgb: np.ndarray, info: VideoInfo, pix_fmt: str, *, color_matrix: str | None = None,
    color_range: str | None = None, reformatter: VideoReformatter | None = None,
) -> av.VideoFrame:
    """One (H, W, 3) RGB frame -> a frame in ``pix_fmt``, made with the given (default: info's) matrix and range.

    ``pix_fmt`` may be any FFmpeg format; RGB targets (rgb48be for PNG, bgr0 for FFV1)
    are plain repacking, gray keeps full range (swscale's only gray range).
    """
    reformatter = reformatter or VideoReformatter()
    matrix = color_matrix or info.color_matrix
    value_range = color_range or info.color_range
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=rgb_pix_fmt_for_depth(info.bit_depth))
    target = av.VideoFormat(pix_fmt)
    if target.is_rgb:
        return reformatter.reformat(frame, format=pix_fmt, interpolation=SWS_FLAGS_FROM_RGB)
    if len([c for c in target.components if not c.is_alpha]) == 1:
        return reformatter.reformat(frame, format=pix_fmt, interpolation=SWS_FLAGS_FROM_RGB,
                                    dst_color_range=ColorRange.JPEG)
    if matrix == "rgb":
        raise ValueError("a YUV target needs a YUV colour matrix")
    return reformatter.reformat(
        frame, format=pix_fmt, interpolation=SWS_FLAGS_FROM_RGB, src_color_range=ColorRange.JPEG,
        dst_colorspace=_SWS_MATRIX[matrix], dst_color_range=_AV_RANGE[value_range],
    )


def frame_planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The planes of a planar frame as 2-D arrays (uint8, or native uint16 for >8-bit), padding removed."""
    sample_bytes = 2 if max(c.bits for c in frame.format.components) > 8 else 1
    dtype = np.uint8 if sample_bytes == 1 else np.dtype("<u2")
    planes = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        planes.append(rows[:, : plane.width * sample_bytes].copy().view(dtype))
    return planes


def describe_colour(info: VideoInfo, overridden: bool = False) -> str:
    """One phrase for logs: which conversion turned the source into RGB."""
    if info.color_matrix == "rgb":
        return "rgb (source is RGB, no conversion)"
    if is_gray_pix_fmt(info.pix_fmt):
        return "gray pc (luma only)"
    origin = "override" if overridden else "ffmpeg default"
    return f"{info.color_matrix} {info.color_range} ({origin})"
