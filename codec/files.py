"""File-level dispatch: encode inputs into a .nnc file, decode, append, describe.

This is the one place (besides the registry) that looks at a codec's kind
(:class:`~nnc.codec.base.CodecKind`) and picks the module that handles it:
:mod:`~nnc.codec.video_api` (one video), :mod:`~nnc.codec.image_api` (an image) or
:mod:`~nnc.codec.video_set_api` (several videos in one growing file).  The command line
and the reports call these functions and nothing below them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ..bitstream import Bitstream, read_bitstream_file
from ..errors import InvalidBitstreamError, NncError
from ..fileio import exclusive_lock, refuse_overwriting_inputs
from ..media import Video, VideoInfo, describe_colour, read_video
from ..media.image import read_image
from ..media.limits import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_PIXELS, check_output_limits
from ..media.writer import output_format_for
from .base import Codec, CodecKind, CodecOptions
from .describe import describe_file
from .header import check_header
from .image_api import IMAGE_SUFFIXES, encode_image, image_as_video, image_frames, write_image_file
from .registry import codec_classes, get_codec
from .video_api import (EncodeReport, check_output_path, decode_frames, encode_video, media_info, read_for_decode,
                        resolve_frame_range, write_video)
from ..units import plural
from .video_set_api import SetReport, append_to_set, decode_video_set_member, describe_set, encode_video_set, open_set

Log = Callable[[str], None]


def _silent(text: str) -> None:
    pass


def _names(kind: CodecKind) -> str:
    return ", ".join(c.name for c in codec_classes(kind)) or "none"


def make_options(model: str, *, optional: dict | None = None, **values) -> CodecOptions:
    """``model``'s options from ``values`` (an option it lacks is an error) and ``optional``
    (dropped where it lacks them: a report's --epochs means nothing to an image codec)."""
    codec = get_codec(model)
    fields = codec.Options.fields()
    return codec.make_options(**{k: v for k, v in (optional or {}).items() if k in fields}, **values)


def appendable_codecs() -> list[type[Codec]]:
    """The codecs whose files grow by ``nnc append``."""
    return codec_classes(CodecKind.VIDEO_SET)


def encode_file(inputs: list[Path], output: Path, model: str, options: CodecOptions, *,
                media: dict | None = None, log: Log = _silent) -> EncodeReport | SetReport:
    """Encode ``inputs`` with ``model`` into ``output`` (written atomically).

    ``media`` holds :func:`nnc.media.read_video`'s options for raw or ambiguous inputs;
    ``log`` receives one line per input read.  Options, inputs and output are checked
    before any training."""
    codec = get_codec(model)()
    refuse_overwriting_inputs(output, inputs)  # before anything is read or trained
    check_output_path(output)
    if codec.kind != CodecKind.VIDEO_SET and len(inputs) != 1:
        raise NncError(f"--model {model} encodes one input; got {len(inputs)} (several videos need a multi-video "
                       f"codec: {_names(CodecKind.VIDEO_SET)})")
    codec.check_options(options)
    media = media or {}
    if codec.kind == CodecKind.IMAGE:
        image = read_image(inputs[0])
        log(f"{inputs[0]}: {image.shape[1]}x{image.shape[0]} RGB image")
        return encode_image(image, output, model, options)
    if codec.kind == CodecKind.VIDEO_SET:
        videos = []
        for path in inputs:  # every input is read first: a bad one fails before any training
            video = read_video(path, **media)
            log(_describe_input(path, video))
            videos.append((str(path), video))
        return encode_video_set(videos, output, options)
    video = read_video(inputs[0], **media)
    overridden = bool(media.get("color_matrix") or media.get("color_range"))
    log(f"{_describe_input(inputs[0], video)}, colour {describe_colour(video.info, overridden=overridden)}")
    return encode_video(video, output, model, options)


def encode_media(video: Video, output: Path, model: str, options: CodecOptions) -> EncodeReport:
    """Encode an in-memory clip (one frame for an image codec) into ``output``: the reports' path."""
    kind = get_codec(model).kind
    if kind == CodecKind.IMAGE:
        if video.info.num_frames != 1:
            raise NncError(f"{model} is an image codec; the input has {video.info.num_frames} frames")
        return encode_image(video.frames[0], output, model, options)
    if kind == CodecKind.VIDEO_SET:
        raise NncError(f"{model} is a multi-video codec; encode sets with encode_file or `nnc encode A B C`")
    return encode_video(video, output, model, options)


def codec_of_set(set_path: Path) -> type[Codec]:
    """The codec of the multi-video file ``set_path`` (which must exist and be writable)."""
    bitstream, _, _ = open_set(set_path)
    return get_codec(bitstream.codec, from_file=True)


def append_file(set_path: Path, input: Path, options: CodecOptions, *, media: dict | None = None,
                log: Log = _silent) -> SetReport:
    """Learn ``input`` into the multi-video file ``set_path`` as one more video (earlier bytes kept).

    A lock file beside the set (``SET.lock``) refuses a second append to the same set at
    once.  An interrupt (Ctrl-C, SIGTERM) is re-raised with ``nnc_message`` telling the
    truth: whether the set was already written when it came."""
    refuse_overwriting_inputs(set_path, [input])
    busy = f"{set_path} is being appended to by another nnc (lock {lock_path_for(set_path)}); wait for it to finish"
    with exclusive_lock(lock_path_for(set_path), busy):
        _, _, before = open_set(set_path)  # a wrong or unwritable SET fails before the input is read
        try:
            video = read_video(input, **(media or {}))
            log(_describe_input(input, video))
            return append_to_set(set_path, video, options, name=str(input))
        except KeyboardInterrupt as interrupt:
            interrupt.nnc_message = _append_outcome(set_path, input, len(before))
            raise


def lock_path_for(set_path: Path) -> Path:
    set_path = Path(set_path)
    return set_path.with_name(set_path.name + ".lock")


def _append_outcome(set_path: Path, input: Path, videos_before: int) -> str:
    """What an interrupted append did, read from the set itself."""
    try:
        _, _, infos = open_set(set_path)
        videos_now = len(infos)
    except NncError:
        videos_now = videos_before
    if videos_now > videos_before:
        return f"interrupted after {input} was appended to {set_path} as video {videos_before} (the set is complete)"
    return f"interrupted: nothing was appended to {set_path} (it is unchanged); run the same command again"


def _describe_input(path: Path, video: Video) -> str:
    info = video.info
    name = "stdin" if str(path) == "-" else path
    return (f"{name}: {info.width}x{info.height}, {plural(info.num_frames, 'frame')} @ {float(info.fps):.3f} fps, "
            f"{info.pix_fmt}")


def _kind_of(bitstream: Bitstream) -> CodecKind:
    return get_codec(bitstream.codec, from_file=True).kind


def decode_file(source: Path, output: Path, *, format: str | None = None, crf: int | None = None,
                device: str = "cpu", batch_size: int = 4, frame_range: tuple[int, int | None] | None = None,
                video_index: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> tuple[VideoInfo, float]:
    """Decode ``source`` into a video (or image) file; returns the written media's info and the decode time.

    The header is checked (as ``nnc info`` checks it) and the frame size and output size
    are held to ``max_pixels`` and ``max_output_bytes`` before anything is decoded.  Of a
    segmented file only the segments holding ``frame_range`` are read and run."""
    started = time.perf_counter()
    refuse_overwriting_inputs(output, [source])
    bitstream = read_for_decode(source, frame_range)
    checked = check_header(bitstream.codec, bitstream.header, bitstream.version)
    kind = checked.codec.kind
    image_output = (kind == CodecKind.IMAGE and format is None
                    and Path(output).suffix.lower() in IMAGE_SUFFIXES)  # .jpg, .webp...: estimated as PNG
    _check_output_limits(checked.videos, output, "png" if image_output else format, frame_range, video_index,
                         max_pixels, max_output_bytes)
    if kind == CodecKind.IMAGE:
        if frame_range is not None or video_index is not None:
            raise NncError(f"{source} holds an image: --frames and --video do not apply")
        info = write_image_file(bitstream, output, format=format, device=device)
    elif kind == CodecKind.VIDEO_SET:
        info = decode_video_set_member(bitstream, output, video_index=video_index, frame_range=frame_range,
                                       format=format, crf=crf, device=device, batch_size=batch_size)
    else:
        if video_index is not None:
            raise NncError(f"{source} holds one video ({bitstream.codec}); --video applies to multi-video files "
                           f"({_names(CodecKind.VIDEO_SET)})")
        info = write_video(bitstream, output, format=format, crf=crf, device=device, batch_size=batch_size,
                           frame_range=frame_range)
    return info, time.perf_counter() - started


def _check_output_limits(videos: list[VideoInfo], output: Path, format: str | None,
                         frame_range: tuple[int, int | None] | None, video_index: int | None,
                         max_pixels: int, max_output_bytes: int) -> None:
    """The decode bounds for the video that will be decoded (a bad --video or --frames is
    left to the decoder's own one-line error)."""
    index = video_index if video_index is not None else 0
    if not 0 <= index < len(videos):
        return
    info = videos[index]
    frames = None
    if frame_range is not None:
        if not 0 <= frame_range[0] < info.num_frames:
            return
        frames = len(resolve_frame_range(frame_range, info.num_frames))
    check_output_limits(info, output_format_for(output, format), num_frames=frames, max_pixels=max_pixels,
                        max_output_bytes=max_output_bytes)


class DecodedFile(NamedTuple):
    codec: str
    info: VideoInfo
    frames: np.ndarray  # (N, H, W, 3) RGB, uint8 or uint16 (info.max_value)


def decode_to_frames(path: Path, *, device: str = "cpu") -> DecodedFile:
    """All decoded frames of a single-video or image file, with its codec and media info."""
    bitstream = read_bitstream_file(path)
    if _kind_of(bitstream) == CodecKind.VIDEO_SET:
        raise NncError(f"{path} holds a set of videos ({bitstream.codec}): decode one with `nnc decode --video N` "
                       "and compare the decoded file (`nnc info` shows each video's recorded PSNR)")
    frames = np.concatenate(list(decode_frames(bitstream, device=device)))
    return DecodedFile(bitstream.codec, media_info(bitstream), frames)


def decode_image(path: Path, *, device: str = "cpu") -> np.ndarray:
    """The (H, W, 3) RGB image (uint8; uint16 for a >8-bit source clip) of a one-image .nnc file."""
    bitstream = read_bitstream_file(path)
    if _kind_of(bitstream) != CodecKind.IMAGE:
        raise NncError(f"file holds a {bitstream.codec} video, not an image (use nnc decode)")
    info = media_info(bitstream)
    if info.num_frames != 1:
        raise NncError(f"{path} holds {info.num_frames} frames, not one image")
    return image_frames(bitstream, device=device)[0]


def describe(path: Path) -> dict:
    """``nnc info``: ``{"data": ..., "text": ...}``; multi-video files list every video's bytes."""

    def members(summary: dict):
        try:
            kind = get_codec(summary["codec"], from_file=True).kind
        except InvalidBitstreamError:  # a codec this nnc does not know: describe the container only
            return None
        return describe_set(summary) if kind == CodecKind.VIDEO_SET else None

    return describe_file(Path(path), members)

