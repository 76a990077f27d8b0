"""Images in files: encode an image into a .nnc file with an image codec (CLC), decode one.

The image travels as a one-frame RGB clip (``rgb24``, full range), so the container,
``nnc info`` and the verification decode are shared with the video codecs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..bitstream import Bitstream
from ..errors import InvalidBitstreamError, NncError
from ..media import Video, VideoInfo, VideoWriter
from ..media.image import read_image, write_image
from .base import CodecOptions
from .registry import get_codec
from .video_api import EncodeReport, decode_frames, encode_video, media_info

IMAGE_SUFFIXES = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".webp": "WEBP",
                  ".jpg": "JPEG", ".jpeg": "JPEG"}


@dataclass
class ImageReport(EncodeReport):
    def summary(self) -> str:
        return (f"wrote {self.path}: {self.file_bytes} bytes, {self.bpp:.4f} bpp, "
                f"PSNR {self.psnr:.2f} dB (RGB, after decoding), quality {self.settings.get('quality')}, "
                f"{self.encode_seconds:.1f} s")


def image_as_video(image: np.ndarray) -> Video:
    """(H, W, 3) uint8 RGB -> a one-frame rgb24 clip."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise NncError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    info = VideoInfo(width=width, height=height, num_frames=1, fps=Fraction(1), pix_fmt="rgb24", bit_depth=8,
                     color_matrix="rgb", color_range="pc")
    return Video(frames=np.ascontiguousarray(image[None]), info=info)


def encode_image(image: str | Path | np.ndarray, output: str | Path, model: str = "clc",
                 options: CodecOptions | None = None) -> ImageReport:
    """Encode an image file (or an (H, W, 3) uint8 array) into ``output`` with the image codec ``model``.

    The report's PSNR is measured on the decode of the file's own bytes; bpp counts
    every byte of the file over the image's pixels."""
    array = read_image(image) if isinstance(image, (str, Path)) else image
    options = options or get_codec(model).Options(show_progress=False)
    # Nothing is trained per image: no checkpoints.
    report = encode_video(image_as_video(array), output, model, replace(options, checkpoint_interval=0))
    return ImageReport(**vars(report))


def image_frames(bitstream: Bitstream, *, device: str = "cpu") -> np.ndarray:
    """The decoded frames (N, H, W, 3) of an image codec's file (N = 1 for one image)."""
    return np.concatenate(list(decode_frames(bitstream, device=device)))


def write_image_file(bitstream: Bitstream, output: str | Path, *, format: str | None = None,
                     device: str = "cpu") -> VideoInfo:
    """Decode an image codec's file to ``output`` (PNG by default; any Pillow format by suffix).

    A clip coded frame by frame (all-intra) goes through the video writer instead."""
    output = Path(output)
    info = media_info(bitstream)
    wants_image = format in (None, "png") and (output.suffix.lower() in IMAGE_SUFFIXES or not output.suffix)
    if info.num_frames != 1 or not wants_image:
        with VideoWriter(output, info, format=format) as writer:
            for batch in decode_frames(bitstream, device=device):
                writer.write(batch)
        return info
    frames = image_frames(bitstream, device=device)
    if frames.dtype != np.uint8:
        raise InvalidBitstreamError("image files hold 8-bit RGB")
    write_image(frames[0], output, IMAGE_SUFFIXES.get(output.suffix.lower(), "PNG"))
    return info
