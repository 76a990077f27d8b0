"""In-memory video: RGB frames plus the facts about the source needed to write it back."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# Every pixel format a VideoInfo may name, with its bit depth.  Decoders produce many
# more (nv12, yuvj420p, gbrp10le, pal8, ...); the reader folds those onto this list so
# that writers and the bitstream header only ever deal with these.
PIX_FMT_BIT_DEPTH = {
    "yuv420p": 8, "yuv422p": 8, "yuv444p": 8, "gray": 8, "rgb24": 8,
    "yuv420p10le": 10, "yuv422p10le": 10, "yuv444p10le": 10, "gray10le": 10,
    "yuv420p12le": 12, "yuv422p12le": 12, "yuv444p12le": 12, "gray12le": 12,
    "yuv420p16le": 16, "yuv422p16le": 16, "yuv444p16le": 16, "gray16le": 16, "rgb48le": 16,
}
RGB_PIX_FMTS = ("rgb24", "rgb48le")
COLOR_MATRICES = ("bt601", "bt709", "bt2020", "rgb")
COLOR_RANGES = ("tv", "pc")

# The format's limits on a video (FORMAT.md, media section): every VideoInfo, hence
# every header a decoder accepts, is within them.  16384 is also libavcodec's usual
# largest side; 10**6 frames is 11 hours at 25 fps.  What one decode may produce on a
# given machine is bounded separately, and lower, by media.limits.
MAX_DIMENSION = 16384
MAX_FRAMES = 10**6
MAX_FPS_TERM = 10**6
_SHOWN_CHARS = 40


def _show(value) -> str:
    """A short ASCII rendering of an untrusted value for a one-line error (no lone
    surrogates that cannot be printed, no 10**4000-digit numbers)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return f"a {value.bit_length()}-bit integer"
    try:
        text = ascii(value)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def is_rgb_pix_fmt(pix_fmt: str) -> bool:
    return pix_fmt in RGB_PIX_FMTS


def is_gray_pix_fmt(pix_fmt: str) -> bool:
    return pix_fmt.startswith("gray")


def rgb_pix_fmt_for_depth(bit_depth: int) -> str:
    """The PyAV name of the in-memory RGB layout (native-endian on every supported host)."""
    return "rgb24" if bit_depth == 8 else "rgb48le"


def _is_int(value) -> bool:
    # bool is an int subclass; a header saying "width": true is nonsense, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a source video; also the media section of a .nnc header.

    Constructing one validates it, so every VideoInfo in the program is consistent.
    """

    width: int
    height: int
    num_frames: int
    fps: Fraction
    pix_fmt: str
    bit_depth: int
    color_matrix: str
    color_range: str

    def __post_init__(self):
        for name in ("width", "height", "num_frames", "bit_depth"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, not {_show(getattr(self, name))}")
        if not 1 <= self.width <= MAX_DIMENSION or not 1 <= self.height <= MAX_DIMENSION:
            raise ValueError(f"frame size {_show(self.width)}x{_show(self.height)} is outside 1..{MAX_DIMENSION}")
        if not 1 <= self.num_frames <= MAX_FRAMES:
            raise ValueError(f"frame count {_show(self.num_frames)} is outside 1..{MAX_FRAMES}")
        fps = self.fps
        if _is_int(fps):
            fps = Fraction(fps)
        if not isinstance(fps, Fraction):
            raise ValueError(f"fps must be a Fraction, not {_show(fps)}")
        if not (0 < fps.numerator < MAX_FPS_TERM and 0 < fps.denominator < MAX_FPS_TERM):
            raise ValueError(f"fps {_show(fps.numerator)}/{_show(fps.denominator)} is out of range")
        object.__setattr__(self, "fps", fps)
        for name in ("pix_fmt", "color_matrix", "color_range"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, not {_show(getattr(self, name))}")
        if self.pix_fmt not in PIX_FMT_BIT_DEPTH:
            raise ValueError(f"unknown pixel format {_show(self.pix_fmt)}")
        if self.bit_depth != PIX_FMT_BIT_DEPTH[self.pix_fmt]:
            raise ValueError(f"bit depth {self.bit_depth} does not match pixel format {self.pix_fmt}")
        if self.color_matrix not in COLOR_MATRICES:
            raise ValueError(f"unknown colour matrix {_show(self.color_matrix)}")
        if self.color_range not in COLOR_RANGES:
            raise ValueError(f"unknown colour range {_show(self.color_range)}")
        # "rgb" means "no matrix was applied", which is true exactly for RGB sources.
        if (self.color_matrix == "rgb") != is_rgb_pix_fmt(self.pix_fmt):
            raise ValueError(f"colour matrix {self.color_matrix} does not fit pixel format {self.pix_fmt}")
        if self.color_matrix == "rgb" and self.color_range != "pc":
            raise ValueError("RGB sources are full range (pc)")

    @property
    def max_value(self) -> int:
        """The largest RGB code value of decoded frames: 255 (uint8) for 8-bit sources, else 65535 (uint16)."""
        return 255 if self.bit_depth == 8 else 65535

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "num_frames": self.num_frames,
            "fps": [self.fps.numerator, self.fps.denominator],
            "pix_fmt": self.pix_fmt,
            "bit_depth": self.bit_depth,
            "color_matrix": self.color_matrix,
            "color_range": self.color_range,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "VideoInfo":
        """Parse an untrusted dict (a bitstream header); ValueError on anything malformed."""
        if not isinstance(d, dict):
            raise ValueError("media info must be a mapping")
        expected = {"width", "height", "num_frames", "fps", "pix_fmt", "bit_depth", "color_matrix", "color_range"}
        missing = expected - d.keys()
        if missing:
            raise ValueError(f"media info lacks {', '.join(sorted(missing))}")
        unknown = set(d) - expected
        if unknown:
            raise ValueError(f"media info has unknown fields {_show(sorted(map(str, unknown)))}")
        fps = d["fps"]
        if not isinstance(fps, (list, tuple)) or len(fps) != 2 or not all(_is_int(term) for term in fps):
            raise ValueError(f"fps must be [numerator, denominator], not {_show(fps)}")
        if not (0 < fps[0] < MAX_FPS_TERM and 0 < fps[1] < MAX_FPS_TERM):
            raise ValueError(f"fps {_show(fps[0])}/{_show(fps[1])} is out of range")
        return cls(
            width=d["width"], height=d["height"], num_frames=d["num_frames"], fps=Fraction(fps[0], fps[1]),
            pix_fmt=d["pix_fmt"], bit_depth=d["bit_depth"], color_matrix=d["color_matrix"],
            color_range=d["color_range"],
        )


@dataclass
class Video:
    """RGB frames (T, H, W, 3): uint8 for 8-bit sources, else uint16 on the full 0..65535 scale."""

    frames: np.ndarray
    info: VideoInfo

    def __post_init__(self):
        expected_dtype = np.uint8 if self.info.bit_depth == 8 else np.uint16
        if self.frames.dtype != expected_dtype:
            raise ValueError(f"frames are {self.frames.dtype}, expected {np.dtype(expected_dtype)}")
        expected_shape = (self.info.num_frames, self.info.height, self.info.width, 3)
        if self.frames.shape != expected_shape:
            raise ValueError(f"frames have shape {self.frames.shape}, expected {expected_shape}")

    @property
    def max_value(self) -> int:
        return self.info.max_value
