"""Still images in and out (Pillow), for the image codecs.

Input: anything Pillow reads (PNG, JPEG, BMP, TIFF, WebP, PPM, ...).  Greyscale,
palette and CMYK images are converted to 8-bit RGB.  Refused with a one-line error:
an alpha channel that is not fully opaque (the codec has no alpha plane; an opaque
one is dropped), 16-bit and float images (the codec is 8-bit), and images above
MAX_PIXELS (a guard against decompression bombs).
16-bit RGB PNGs are refused too, although Pillow opens them as plain 8-bit "RGB"
(dropping the low byte): coding them silently would report PSNR against a source that
is not the user's file.  The image's own raw mode (its tile descriptor, e.g.
``RGB;16B``) gives the stored depth away.
Output: PNG (or any format Pillow writes from the suffix), written atomically through
:func:`nnc.fileio.write_atomically` (so also straight into a FIFO, a device or ``-``).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import MediaError
from ..fileio import STDOUT, write_atomically

MAX_PIXELS = 64 * 1024 * 1024  # 64 megapixels
MIN_SIDE = 1


def read_image(path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise MediaError(f"{path}: {width}x{height} is larger than {MAX_PIXELS} pixels")
                mode = image.mode
                if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") or "16" in mode or _stored_16_bit(image):
                    raise MediaError(f"{path}: {'float' if mode == 'F' else '16-bit'} images ({mode}) are not "
                                     "supported (the image codec is 8-bit); convert to 8-bit RGB")
                image.load()
                if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
                    rgba = np.asarray(image.convert("RGBA"))
                    if (rgba[..., 3] != 255).any():
                        raise MediaError(f"{path}: has transparency; the image codec codes RGB only "
                                         "(flatten the alpha channel first)")
                    return np.array(rgba[..., :3])  # a writable copy
                return np.array(image.convert("RGB"))  # a writable copy (torch warns on read-only arrays)
    except MediaError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise MediaError(f"{path}: not a readable image ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


def _stored_16_bit(image) -> bool:
    """True when the file stores more than 8 bits per sample although Pillow's mode says
    8-bit (16-bit RGB/RGBA PNGs open as "RGB"/"RGBA", rawmode "RGB;16B")."""
    return any("16" in str(tile[3] if isinstance(tile, tuple) else getattr(tile, "args", "")) for tile in image.tile)


def write_image(array: np.ndarray, path, format: str | None = None) -> None:
    """Write (H, W, 3) uint8 RGB atomically (temporary file in the same folder, then
    rename), or straight into stdout (``-``), a FIFO or a device."""
    from PIL import Image

    path = Path(path)
    if os.fspath(path) != STDOUT and path.is_dir():
        raise MediaError(f"{path}: is a folder; give an image file name (e.g. out.png)")
    suffix = "" if os.fspath(path) == STDOUT else path.suffix
    format = format or (suffix[1:].upper() if suffix else "PNG")
    format = {"JPG": "JPEG", "TIF": "TIFF"}.get(format.upper(), format.upper())
    # Encoded in memory first (an image is small next to the model that made it), so
    # the file-system part is one atomic write shared with every other output.
    buffer = io.BytesIO()
    try:
        Image.fromarray(np.ascontiguousarray(array), "RGB").save(buffer, format=format)
    except (KeyError, ValueError, OSError) as error:
        raise MediaError(f"{path}: cannot write format {format!r} ({error})") from None
    write_atomically(path, buffer.getvalue())
