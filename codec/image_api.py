"""File-level API of the image codecs (CLC): image file in, .nnc out, and back.

The image travels as a one-frame RGB clip (``rgb24``, full range), so the container,
``nnc info`` and the verification decode are shared with the video codecs.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..bitstream import read_bitstream_file
from ..errors import InvalidBitstreamError, NncError
from ..media import Video, VideoInfo
from ..media.image import read_image, write_image
from .api import EncodeReport, decode_frames, encode_video, media_info
from .base import EncodeOptions
from .registry import get_codec

IMAGE_SUFFIXES = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".webp": "WEBP",
                  ".jpg": "JPEG", ".jpeg": "JPEG"}


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
                 options: EncodeOptions | None = None) -> EncodeReport:
    """Encode an image file (or an (H, W, 3) uint8 array) into ``output``.

    The report's PSNR is measured on the decode of the file's own bytes; bpp counts
    every byte of the file over the image's pixels."""
    if getattr(get_codec(model), "kind", "video") != "image":
        raise NncError(f"--model {model} is not an image codec")
    array = read_image(image) if isinstance(image, (str, Path)) else image
    options = options or EncodeOptions(show_progress=False)
    if options.checkpoint_interval:  # nothing is trained per image: no checkpoints
        from dataclasses import replace

        options = replace(options, checkpoint_interval=0)
    return encode_video(image_as_video(array), output, model, options)


def _decoded_frames(bitstream, device: str) -> tuple[VideoInfo, np.ndarray]:
    if getattr(get_codec(bitstream.codec, from_file=True), "kind", "video") != "image":
        raise NncError(f"file holds a {bitstream.codec} video, not an image (use nnc decode)")
    info = media_info(bitstream)
    frames = np.concatenate(list(decode_frames(bitstream, device=device)))
    return info, frames


def decode_image(path: str | Path, *, device: str = "cpu") -> np.ndarray:
    """The (H, W, 3) RGB image (uint8; uint16 for a >8-bit source clip) of a one-image .nnc file."""
    info, frames = _decoded_frames(read_bitstream_file(path), device)
    if info.num_frames != 1:
        raise NncError(f"{path} holds {info.num_frames} frames, not one image")
    return frames[0]


def decode_image_file(bitstream, output: str | Path, *, format: str | None = None, device: str = "cpu") -> VideoInfo:
    """Decode an image-codec file to ``output`` (PNG by default; any Pillow format by suffix).

    A clip coded frame by frame (all-intra) goes through the video writer instead."""
    output = Path(output)
    info = media_info(bitstream)
    wants_image = format in (None, "png") and (output.suffix.lower() in IMAGE_SUFFIXES or not output.suffix)
    if info.num_frames != 1 or not wants_image:
        from ..media import VideoWriter

        with VideoWriter(output, info, format=format) as writer:
            for batch in decode_frames(bitstream, device=device):
                writer.write(batch)
        return info
    _, frames = _decoded_frames(bitstream, device)
    if frames.dtype != np.uint8:
        raise InvalidBitstreamError("image files hold 8-bit RGB")
    write_image(frames[0], output, IMAGE_SUFFIXES.get(output.suffix.lower(), "PNG"))
    return info
