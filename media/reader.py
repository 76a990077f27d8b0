"""Reading videos (containers, Annex-B streams, Y4M, raw .yuv, PNG folders) into RGB frames.

Everything is decoded with PyAV.  The frame count is the number of frames the decoder
actually produced: container metadata (nb_frames, duration) is only a hint for
preallocation, because it is wrong often enough (edit lists, truncated files).

``start_frame`` and ``max_frames`` select frames START..START+N: the frames before START
are decoded (or, in a PNG folder, not even opened) and dropped, never converted or kept.
The path ``-`` is a Y4M stream on stdin, buffered in a temporary file (bounded by
:mod:`nnc.media.limits`' frame size and output size) and read as a ``.y4m``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import MediaError
from ..fileio import human_size
from ..units import plural
from .clip import (
    COLOR_MATRICES, COLOR_RANGES, MAX_FRAMES, PIX_FMT_BIT_DEPTH, Video, VideoInfo, is_gray_pix_fmt, is_rgb_pix_fmt,
)
from .colour import canonical_pix_fmt, source_colour, source_to_rgb
from .limits import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_PIXELS

RAW_YUV_SUFFIXES = (".yuv",)
STDIN = "-"  # the input path that means a Y4M stream on stdin
ANNEX_B_FORMATS = {".h264": "h264", ".264": "h264", ".h265": "hevc", ".265": "hevc", ".hevc": "hevc"}
DEFAULT_FPS = Fraction(25)
_Y4M_COLOUR_SPACES = {
    "420jpeg": "yuv420p", "420paldv": "yuv420p", "420mpeg2": "yuv420p", "420": "yuv420p",
    "422": "yuv422p", "444": "yuv444p", "mono": "gray",
    "420p10": "yuv420p10le", "422p10": "yuv422p10le", "444p10": "yuv444p10le", "mono10": "gray10le",
    "420p12": "yuv420p12le", "422p12": "yuv422p12le", "444p12": "yuv444p12le", "mono12": "gray12le",
    "420p16": "yuv420p16le", "422p16": "yuv422p16le", "444p16": "yuv444p16le", "mono16": "gray16le",
}


@dataclasses.dataclass(frozen=True)
class _Request:
    size: tuple[int, int] | None
    pix_fmt: str | None
    fps: Fraction | None
    color_matrix: str | None
    color_range: str | None
    max_frames: int | None
    start_frame: int = 0


def _check_request(size, pix_fmt, fps, color_matrix, color_range, max_frames, start_frame=0) -> _Request:
    if size is not None:
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size)):
            raise MediaError(f"frame size must be two positive integers WxH, not {size!r}")
        size = (int(size[0]), int(size[1]))
    if pix_fmt is not None and pix_fmt not in PIX_FMT_BIT_DEPTH:
        raise MediaError(f"unsupported pixel format {pix_fmt!r} (supported: {', '.join(PIX_FMT_BIT_DEPTH)})")
    if fps is not None:
        given = fps
        try:
            # Through str, a float 29.97 becomes 2997/100 rather than its binary expansion.
            fps = Fraction(str(fps)) if isinstance(fps, float) else Fraction(fps)
        except (TypeError, ValueError, ZeroDivisionError):
            raise MediaError(f"frame rate must be a positive number, not {given!r}") from None
        fps = _sane_fps(fps) if fps > 0 else None
        if fps is None:
            raise MediaError(f"frame rate must be a positive number below 1000000, not {given!r}")
    if color_matrix is not None and color_matrix not in COLOR_MATRICES[:-1]:
        raise MediaError(f"unknown colour matrix {color_matrix!r} (choose bt601, bt709 or bt2020)")
    if color_range is not None and color_range not in COLOR_RANGES:
        raise MediaError(f"unknown colour range {color_range!r} (choose tv or pc)")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise MediaError(f"frame limit must be a positive integer, not {max_frames!r}")
    if not isinstance(start_frame, int) or isinstance(start_frame, bool) or start_frame < 0:
        raise MediaError(f"first frame must be an integer >= 0, not {start_frame!r}")
    return _Request(size, pix_fmt, fps, color_matrix, color_range, max_frames, start_frame)


def _ffmpeg_reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _natural_key(path: Path):
    # f2.png before f10.png; zero-padded names sort the same as plain sorting would.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _sane_fps(rate) -> Fraction | None:
    if not rate or rate <= 0:
        return None
    rate = Fraction(rate)
    # Averages computed from durations come out as 2997003/100000 and the like; the
    # bitstream header stores terms below 10**6, and every real rate has den <= 1001.
    if rate.denominator > 1001:
        rate = rate.limit_denominator(1001)
    return rate if 0 < rate.numerator < 10**6 else None


def raw_frame_bytes(width: int, height: int, pix_fmt: str) -> int:
    """Bytes of one frame of a headerless raw file (also one Y4M frame payload)."""
    sample_bytes = 1 if PIX_FMT_BIT_DEPTH[pix_fmt] == 8 else 2
    if is_rgb_pix_fmt(pix_fmt):
        return width * height * 3 * sample_bytes
    if is_gray_pix_fmt(pix_fmt):
        return width * height * sample_bytes
    fmt = av.VideoFormat(pix_fmt, width, height)
    return (width * height + 2 * fmt.chroma_width() * fmt.chroma_height()) * sample_bytes


class _Source:
    """Where frames come from, plus what is known about them before decoding."""

    path: Path  # as messages name it
    exact_count: int | None = None  # known without decoding (raw .yuv, Y4M, PNG folders)
    count_hint: int | None = None  # container metadata, only to size the first allocation
    fps: Fraction = DEFAULT_FPS
    is_raw = False
    always_rgb = False  # PNG folders are rgb24/rgb48 whatever their individual PNG types

    skipped = 0  # frames dropped before start_frame

    def frames(self, start: int = 0) -> Iterator[av.VideoFrame]:
        """The frames from index ``start`` on (the ones before are counted in ``skipped``)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ContainerSource(_Source):
    def __init__(self, path: Path, request: _Request, *, name: str | None = None):
        self.path = Path(name) if name is not None else path  # stdin's buffer file is named "stdin"
        self.file = path
        suffix = path.suffix.lower()
        options: dict[str, str] = {}
        format_name = None
        if suffix in RAW_YUV_SUFFIXES:
            self._check_raw(request)
            width, height = request.size
            format_name = "rawvideo"
            options = {"video_size": f"{width}x{height}", "pixel_format": request.pix_fmt,
                       "framerate": str(request.fps or DEFAULT_FPS)}
            self.is_raw = True
        elif suffix in ANNEX_B_FORMATS:
            format_name = ANNEX_B_FORMATS[suffix]
            if request.fps is not None:
                options["framerate"] = str(request.fps)
        elif suffix == ".y4m":
            format_name = "yuv4mpegpipe"
            self.exact_count = self._y4m_frame_count()
        try:
            # Broken files carry broken metadata strings too: replace, never raise on them.
            self.container = av.open(str(path), format=format_name, options=options, metadata_errors="replace")
        except EOFError:  # FFmpeg's probe ran out of data: a container with no frames, or cut short
            raise MediaError(f"cannot read {self.path}: no frames (the file is empty or truncated)") from None
        except av.FFmpegError as error:
            raise MediaError(
                f"cannot read {self.path}: not a video FFmpeg recognises ({_ffmpeg_reason(error)})") from None
        except OSError as error:
            raise MediaError(f"cannot read {self.path}: {error.strerror or error}") from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError(f"{self.path} has no video stream")
        self.stream = self.container.streams.video[0]
        # Frame threads decode in parallel; the output is identical to single-threaded.
        self.stream.thread_type = "AUTO"
        hint = self.stream.frames
        if not hint and self.stream.duration and self.stream.time_base and self.stream.average_rate:
            hint = int(self.stream.duration * self.stream.time_base * self.stream.average_rate) + 1
        # Corrupt headers claim billions of frames; no frame takes less than a byte of file.
        self.count_hint = min(hint, path.stat().st_size, MAX_FRAMES) if hint and hint > 0 else None
        rate = _sane_fps(self.stream.average_rate)
        guessed = _sane_fps(self.stream.guessed_rate)
        if guessed and (rate is None or abs(rate - guessed) <= guessed / 1000):
            rate = guessed  # the clean nominal rate (25, 30000/1001) when the average agrees
        self.fps = request.fps or rate or DEFAULT_FPS

    def _check_raw(self, request: _Request) -> None:
        if request.size is None or request.pix_fmt is None:
            raise MediaError(f"raw input {self.path.name} needs --video-size WxH and --pix-fmt "
                             "(e.g. yuv420p, yuv420p10le)")
        width, height = request.size
        frame_bytes = raw_frame_bytes(width, height, request.pix_fmt)
        file_bytes = self.file.stat().st_size
        if file_bytes == 0:
            raise MediaError(f"{self.path} is empty: no frames")
        if file_bytes % frame_bytes:
            raise MediaError(
                f"{self.path} is {file_bytes} bytes, not a whole number of {width}x{height} {request.pix_fmt} "
                f"frames ({frame_bytes} bytes each): check --video-size and --pix-fmt"
            )
        self.exact_count = file_bytes // frame_bytes

    def _y4m_frame_count(self) -> int | None:
        """Frame count from the header and file size, when every frame header is a bare 'FRAME'."""
        try:
            with open(self.file, "rb") as file:
                header = file.readline(1024)
        except OSError:
            return None  # av.open reports the problem
        if not header.startswith(b"YUV4MPEG2 ") or not header.endswith(b"\n"):
            return None
        fields = {token[:1]: token[1:] for token in header.decode("ascii", "replace").split()[1:]}
        try:
            width, height = int(fields["W"]), int(fields["H"])
            pix_fmt = _Y4M_COLOUR_SPACES[fields.get("C", "420jpeg")]
        except (KeyError, ValueError):
            return None
        if width <= 0 or height <= 0:
            return None
        frame_bytes = raw_frame_bytes(width, height, pix_fmt) + len(b"FRAME\n")
        payload = self.file.stat().st_size - len(header)
        return payload // frame_bytes if payload % frame_bytes == 0 else None

    def frames(self, start: int = 0) -> Iterator[av.VideoFrame]:
        try:
            for frame in self.container.decode(self.stream):
                if self.skipped < start:  # decoded (the stream needs it), never converted or kept
                    self.skipped += 1
                    continue
                yield frame
        except (av.FFmpegError, EOFError) as error:
            raise MediaError(f"cannot decode {self.path}: {_ffmpeg_reason(error)}") from None

    def close(self) -> None:
        self.container.close()


class _PngFolderSource(_Source):
    always_rgb = True

    def __init__(self, path: Path, request: _Request):
        self.path = path
        if path.is_dir():
            # Dot files are editor and OS litter (._f00001.png), never frames.
            frames = (p for p in path.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
            self.files = sorted((p for p in frames if p.is_file()), key=_natural_key)
            if not self.files:
                raise MediaError(f"{path} holds no .png frames")
        else:
            self.files = [path]
        self.exact_count = len(self.files)
        self.fps = request.fps or DEFAULT_FPS

    def frames(self, start: int = 0) -> Iterator[av.VideoFrame]:
        self.skipped = min(start, len(self.files))  # files before start are not even opened
        for file in self.files[start:]:
            try:
                with av.open(str(file), metadata_errors="replace") as container:
                    frame = next(container.decode(video=0), None)
            except (av.FFmpegError, EOFError, OSError) as error:
                raise MediaError(f"cannot read frame {file}: {_ffmpeg_reason(error)}") from None
            if frame is None:
                raise MediaError(f"cannot read frame {file}: no image in it")
            yield frame


def _open_source(path, request: _Request) -> _Source:
    path = Path(path)
    if os.fspath(path) == STDIN:
        raise MediaError("stdin (-) is read through read_video, probe_video or read_planes")
    if not path.exists():
        raise MediaError(f"input not found: {path}")
    if path.is_dir() or path.suffix.lower() == ".png":
        return _PngFolderSource(path, request)
    return _ContainerSource(path, request)


def _first_frame_info(source: _Source, first: av.VideoFrame, request: _Request) -> VideoInfo:
    """VideoInfo from the first decoded frame (num_frames provisional)."""
    pix_fmt, full_range_by_format = canonical_pix_fmt(first.format.name)
    if source.always_rgb and not is_rgb_pix_fmt(pix_fmt):
        pix_fmt, full_range_by_format = ("rgb24" if PIX_FMT_BIT_DEPTH[pix_fmt] == 8 else "rgb48le"), False
    if request.size is not None and not source.is_raw and request.size != (first.width, first.height):
        raise MediaError(
            f"{source.path} is {first.width}x{first.height}, not the {request.size[0]}x{request.size[1]} given"
        )
    if request.pix_fmt is not None and not source.is_raw and request.pix_fmt != pix_fmt:
        raise MediaError(f"{source.path} is {pix_fmt}, not the {request.pix_fmt} given")
    matrix, value_range = source_colour(
        first, pix_fmt, full_range_by_format, request.color_matrix, request.color_range, source=str(source.path)
    )
    try:
        return VideoInfo(
            width=first.width, height=first.height, num_frames=1, fps=source.fps, pix_fmt=pix_fmt,
            bit_depth=PIX_FMT_BIT_DEPTH[pix_fmt], color_matrix=matrix, color_range=value_range,
        )
    except ValueError as error:
        raise MediaError(f"{source.path}: {error}") from None


def _check_frame(source: _Source, frame: av.VideoFrame, info: VideoInfo, index: int) -> None:
    """``index`` counts the frames read (0: the first one kept); messages name the frame in the file."""
    position = source.skipped + index
    if (frame.width, frame.height) != (info.width, info.height):
        where = source.files[position].name if isinstance(source, _PngFolderSource) else f"frame {position + 1}"
        raise MediaError(
            f"{source.path}: {where} is {frame.width}x{frame.height}, the first frame is {info.width}x{info.height}"
        )
    if isinstance(source, _PngFolderSource) and index:
        depth = PIX_FMT_BIT_DEPTH[canonical_pix_fmt(frame.format.name)[0]]
        if (depth > 8) != (info.bit_depth > 8):
            raise MediaError(f"{source.path}: {source.files[position].name} is {depth}-bit, the first frame is not")


def _limited(frames: Iterator[av.VideoFrame], max_frames: int | None) -> Iterator[av.VideoFrame]:
    for index, frame in enumerate(frames):
        if max_frames is not None and index >= max_frames:
            return
        yield frame


def _finish(source: _Source, info: VideoInfo, num_frames: int) -> VideoInfo:
    try:
        return dataclasses.replace(info, num_frames=num_frames)
    except ValueError as error:
        raise MediaError(f"{source.path}: {error}") from None


@contextmanager
def _opened(path, request: _Request):
    """The open source, its (limited) frame iterator, its first frame and the clip's info;
    the source is closed on leaving."""
    with _stdin_buffered(path) as buffered:
        source = _open_source(path, request) if buffered is None else _ContainerSource(buffered, request, name="stdin")
        try:
            frames = _limited(source.frames(request.start_frame), request.max_frames)
            first = next(frames, None)
            if first is None and request.start_frame:
                raise MediaError(f"{source.path} has {plural(source.skipped, 'frame')}: no frame {request.start_frame} "
                                 f"to start from (frames are counted from 0)")
            if first is None:
                raise MediaError(f"{source.path} has no frames")
            yield source, frames, first, _first_frame_info(source, first, request)
        finally:
            source.close()


@contextmanager
def _stdin_buffered(path):
    """For ``-``: stdin's Y4M stream copied into a temporary ``.y4m`` file (removed on
    leaving), refused past DEFAULT_MAX_PIXELS a frame or DEFAULT_MAX_OUTPUT_BYTES in all;
    for any other path: None."""
    if os.fspath(path) != STDIN:
        yield None
        return
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None or (hasattr(stream, "isatty") and stream.isatty()):
        raise MediaError("input - is stdin, which is a terminal: pipe a Y4M stream into it "
                         "(ffmpeg -i clip.mp4 -f yuv4mpegpipe - | nnc encode - -o clip.nnc)")
    header = stream.readline(1024)
    if not header:
        raise MediaError("stdin is empty: expected a Y4M stream (YUV4MPEG2 header)")
    if not header.startswith(b"YUV4MPEG2 ") or not header.endswith(b"\n"):
        raise MediaError("stdin is not a Y4M stream (no YUV4MPEG2 header): only Y4M is read from stdin "
                         "(ffmpeg ... -f yuv4mpegpipe -)")
    fields = {token[:1]: token[1:] for token in header.decode("ascii", "replace").split()[1:]}
    try:
        width, height = int(fields["W"]), int(fields["H"])
    except (KeyError, ValueError):
        raise MediaError("stdin: the Y4M header has no valid frame size (W, H)") from None
    if width * height > DEFAULT_MAX_PIXELS:
        raise MediaError(f"stdin: {width}x{height} frames ({width * height} pixels) are above the limit of "
                         f"{DEFAULT_MAX_PIXELS} pixels")
    handle = tempfile.NamedTemporaryFile(prefix="nnc-stdin-", suffix=".y4m", delete=False)
    try:
        with handle:
            try:
                handle.write(header)
                total = len(header)
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
                    if total > DEFAULT_MAX_OUTPUT_BYTES:
                        raise MediaError(f"stdin holds more than {human_size(DEFAULT_MAX_OUTPUT_BYTES)}, the most "
                                         "nnc reads from a stream; save it to a file")
                    handle.write(chunk)
            except OSError as error:
                raise MediaError(f"cannot buffer stdin in {Path(handle.name).parent}: {error.strerror or error} "
                                 "(set TMPDIR to a folder with room)") from None
        yield Path(handle.name)
    finally:
        try:
            os.unlink(handle.name)
        except OSError:
            pass


def read_video(path, *, size: tuple[int, int] | None = None, pix_fmt: str | None = None, fps: Fraction | None = None,
               color_matrix: str | None = None, color_range: str | None = None,
               max_frames: int | None = None, start_frame: int = 0) -> Video:
    """Decode a whole video into RGB frames, converted as ``ffmpeg -i path f%05d.png`` would
    (``start_frame``, ``max_frames``: only frames START..START+N; ``path`` ``-``: a Y4M
    stream on stdin)."""
    request = _check_request(size, pix_fmt, fps, color_matrix, color_range, max_frames, start_frame)
    with _opened(path, request) as (source, frames, first, info):
        capacity = max(1, (source.exact_count or source.count_hint or 64) - source.skipped)
        if request.max_frames is not None:
            capacity = min(capacity, request.max_frames)
        dtype = np.uint8 if info.bit_depth == 8 else np.uint16
        try:
            # np.empty only reserves address space: an over-estimated hint costs no memory.
            buffer = np.empty((capacity, info.height, info.width, 3), dtype)
            reformatter = VideoReformatter()
            count = 0
            for frame in chain([first], frames):
                _check_frame(source, frame, info, count)
                if count == len(buffer):
                    # In-place realloc: never two full copies of the video alive at once.
                    buffer.resize((count + max(count // 2, 16), *buffer.shape[1:]), refcheck=False)
                buffer[count] = source_to_rgb(frame, info, reformatter)
                count += 1
        except MemoryError:
            raise MediaError(
                f"{source.path}: not enough memory for its frames at {info.width}x{info.height}; "
                "read fewer with --frames"
            ) from None
    if count < len(buffer):
        buffer.resize((count, *buffer.shape[1:]), refcheck=False)
    return Video(frames=buffer, info=_finish(source, info, count))


def probe_video(path, *, size: tuple[int, int] | None = None, pix_fmt: str | None = None,
                fps: Fraction | None = None, color_matrix: str | None = None, color_range: str | None = None,
                max_frames: int | None = None, start_frame: int = 0) -> VideoInfo:
    """What read_video would return as ``.info``, without keeping any frames.

    Raw .yuv, Y4M and PNG folders decode one frame (the count follows from sizes);
    other containers are decoded to count their frames, but not converted to RGB.
    """
    request = _check_request(size, pix_fmt, fps, color_matrix, color_range, max_frames, start_frame)
    with _opened(path, request) as (source, frames, first, info):
        if source.exact_count is not None:
            count = source.exact_count - source.skipped
            if request.max_frames is not None:
                count = min(count, request.max_frames)
        else:
            count = 1
            for frame in frames:
                _check_frame(source, frame, info, count)
                count += 1
    return _finish(source, info, count)


def read_planes(path, *, size: tuple[int, int] | None = None, pix_fmt: str | None = None,
                fps: Fraction | None = None, color_matrix: str | None = None, color_range: str | None = None,
                max_frames: int | None = None, start_frame: int = 0) -> tuple[VideoInfo, list[list[np.ndarray]]]:
    """The decoded frames' own planes, no colour conversion: per frame [Y, U, V] (or [Y] for gray).

    This is what video-coding PSNR (HM, VTM, ffmpeg's psnr filter) is measured on:
    limited range as stored, chroma at its stored resolution, uint8 or uint16 samples.
    ``info`` is what :func:`read_video` would return for the same arguments.
    """
    from .colour import frame_planes

    request = _check_request(size, pix_fmt, fps, color_matrix, color_range, max_frames, start_frame)
    planes = []
    with _opened(path, request) as (source, frames, first, info):
        if is_rgb_pix_fmt(info.pix_fmt):
            raise MediaError(f"{source.path} is RGB ({info.pix_fmt}): it has no YUV planes")
        for frame in chain([first], frames):
            _check_frame(source, frame, info, len(planes))
            if frame.format.name.replace("yuvj", "yuv") != info.pix_fmt:  # nv12, p010...: the planar layout
                frame = frame.reformat(format=info.pix_fmt)
            planes.append(frame_planes(frame)[: 1 if is_gray_pix_fmt(info.pix_fmt) else 3])
    return _finish(source, info, len(planes)), planes
