"""One check of a file's header, shared by ``nnc decode`` and ``nnc info``.

A header is untrusted JSON.  :func:`check_header` parses the parts the decoder acts on
(the media info, or each video's for a set, and the codec's config) exactly as decode
does, so ``nnc info`` refuses what decode refuses and never meets a value it cannot
show.  :func:`encoder_record` reads the encoder's record, which decode ignores, into
values that are safe to print (a finite PSNR or none, strings without lone surrogates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..bitstream import SEGMENTS_VERSION
from ..errors import InvalidBitstreamError
from ..media import VideoInfo
from .base import Codec, CodecKind
from .registry import get_codec
from .segments import SEGMENTS_KEY, Segment, parse_segments


@dataclass
class CheckedHeader:
    codec: type[Codec]
    config: object  # the codec's config dataclass (None for a codec without one, or a segmented file)
    videos: list[VideoInfo]  # one entry; a multi-video set: one per video
    segments: list[Segment] | None = None  # a segmented file's table (codec/segments.py)


def parse_media(media: object, what: str = "media header") -> VideoInfo:
    try:
        return VideoInfo.from_dict(media)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as error:
        raise InvalidBitstreamError(f"bad {what}: {error}") from None


def check_header(codec_name: object, header: object, format_version: int | None = None) -> CheckedHeader:
    """The checked media and config (or segment table) of a file's header;
    InvalidBitstreamError (one line) on anything decode would refuse.  ``format_version``
    (the file's, when known) must be one whose readers know what the header holds."""
    if not isinstance(codec_name, str):
        raise InvalidBitstreamError("codec name is not a string")
    codec = get_codec(codec_name, from_file=True)
    if not isinstance(header, dict):
        raise InvalidBitstreamError("header is not an object")
    model = header.get("model")
    if SEGMENTS_KEY in header:
        if format_version is not None and format_version < SEGMENTS_VERSION:
            raise InvalidBitstreamError(f"a segment table in a format version {format_version} file (segments "
                                        f"need version {SEGMENTS_VERSION})")
        if model is not None:
            raise InvalidBitstreamError("a segmented file has a model section besides its segment table")
        info = parse_media(header.get("media"))
        return CheckedHeader(codec, None, [info], parse_segments(header[SEGMENTS_KEY], info.num_frames, codec))
    if codec.kind == CodecKind.VIDEO_SET:
        from .pfnr import parse_set_header  # the one multi-video format

        config, videos = parse_set_header(model)
        if header.get("media") is not None:
            # nnc writes each video's media in the set's model header and none at the top;
            # one found there is still checked, since `nnc info` prints it.
            parse_media(header.get("media"), "top-level media header of a video set")
        return CheckedHeader(codec, config, videos)
    info = parse_media(header.get("media"))
    return CheckedHeader(codec, codec.parse_config(model), [info])


def safe_text(value: object, limit: int = 200) -> str:
    """``value`` as printable text: lone surrogates escaped, long strings cut."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def finite_number(value: object) -> float | None:
    """``value`` as a finite float, or None (a string, a bool, inf, an int beyond float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def encoder_record(header: dict) -> dict:
    """The encoder record (``nnc`` version, PSNR, settings) as printable values; an
    absent or malformed record gives an empty dict (decode does not read it)."""
    record = header.get("encoder") if isinstance(header, dict) else None
    if not isinstance(record, dict):
        return {}
    settings = record.get("settings")
    return {
        "nnc": safe_text(record.get("nnc"), 40) if record.get("nnc") is not None else None,
        "psnr_rgb": finite_number(record.get("psnr_rgb")),
        "settings": safe_text(settings, 400) if settings is not None else None,
    }
