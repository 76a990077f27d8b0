"""The YUV planes video-coding PSNR is measured on, for the reference and for each codec's output.

Reference: a YUV clip's own decoded planes (limited range as stored, 4:2:0 as stored, 8
or 10 bit), read without any RGB round trip.  Inputs that only exist in RGB (images, the
bunny CPU tier made by downscaling RGB, centre crops) have no such planes; for them the
reference planes are the RGB converted to the source's pixel format with its own matrix
and range (RGB sources: yuv420p, BT.601 limited range, ffmpeg's default) -- exactly the
planes the classical video codecs are given.

Distorted: a classical codec's decoded planes when they are in the reference's format;
otherwise (nnc codecs, 4:4:4 variants, JPEG/WebP) the decoded RGB converted to that format
with nnc.media's own conversion, i.e. what ``nnc decode`` writes to a .y4m.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from av.video.reformatter import VideoReformatter

from ..media import Video, VideoInfo, rgb_to_source
from ..media.clip import PIX_FMT_BIT_DEPTH, is_gray_pix_fmt, is_rgb_pix_fmt
from ..media.colour import frame_planes
from ..metrics import psnr_planes

Planes = list  # per frame: [Y, U, V] integer arrays (or [Y] for gray)


@dataclass(frozen=True)
class PlaneFormat:
    """The pixel format, matrix and range YUV PSNR is measured in."""

    pix_fmt: str
    matrix: str
    value_range: str

    @property
    def bit_depth(self) -> int:
        return PIX_FMT_BIT_DEPTH[self.pix_fmt]

    def describe(self) -> str:
        return f"{self.pix_fmt} {self.matrix} {self.value_range}"


def plane_format_of(info: VideoInfo) -> PlaneFormat:
    """The source's own format; for RGB sources yuv420p (10-bit above 8 bits), BT.601 limited range."""
    if is_rgb_pix_fmt(info.pix_fmt):
        return PlaneFormat("yuv420p" if info.bit_depth == 8 else "yuv420p10le", "bt601", "tv")
    return PlaneFormat(info.pix_fmt, info.color_matrix, info.color_range)


def planes_from_rgb(frames: np.ndarray, info: VideoInfo, target: PlaneFormat) -> Planes:
    """RGB frames (on ``info``'s scale) converted to ``target`` as ``nnc decode`` writes them."""
    reformatter = VideoReformatter()
    planes = []
    for rgb in frames:
        frame = rgb_to_source(rgb, info, target.pix_fmt, color_matrix=target.matrix,
                              color_range=target.value_range, reformatter=reformatter)
        planes.append(frame_planes(frame)[: 1 if is_gray_pix_fmt(target.pix_fmt) else 3])
    return planes


@dataclass
class ReferencePlanes:
    """The reference's planes, their format, and where they came from (recorded in results)."""

    format: PlaneFormat
    planes: Planes
    origin: str  # "source" (decoded planes as stored) or "rgb" (converted from the reference RGB)

    def describe(self) -> str:
        how = "the source's own decoded planes" if self.origin == "source" else \
            "converted from the reference RGB (the planes the video baselines are given)"
        return f"{self.format.describe()}, {how}"

    def measure(self, decoded_rgb: np.ndarray, info: VideoInfo, decoded_planes: Planes | None = None,
                decoded_pix_fmt: str | None = None) -> dict:
        """PSNR-Y/U/V/YUV of a codec's output: its own planes if in this format, else its RGB converted."""
        if decoded_planes is None or decoded_pix_fmt != self.format.pix_fmt:
            decoded_planes = planes_from_rgb(decoded_rgb, info, self.format)
        return psnr_planes(self.planes, decoded_planes, self.format.bit_depth)


def reference_planes(video: Video, source_planes: Planes | None = None) -> ReferencePlanes:
    """``source_planes`` (the clip's decoded planes) when given, else the planes made from ``video``'s RGB."""
    target = plane_format_of(video.info)
    if source_planes is not None:
        return ReferencePlanes(target, source_planes, "source")
    return ReferencePlanes(target, planes_from_rgb(video.frames, video.info, target), "rgb")


def read_source_planes(path, info: VideoInfo) -> Planes | None:
    """The decoded planes of the video file ``path`` that was read as ``info`` (None for RGB files)."""
    from pathlib import Path

    from ..media.reader import RAW_YUV_SUFFIXES, read_planes

    if is_rgb_pix_fmt(info.pix_fmt) or Path(path).is_dir():
        return None
    raw = Path(path).suffix.lower() in RAW_YUV_SUFFIXES
    options = dict(size=(info.width, info.height), pix_fmt=info.pix_fmt, fps=info.fps) if raw else {}
    _, planes = read_planes(path, max_frames=info.num_frames, **options)
    return planes
