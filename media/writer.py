"""Writing RGB frames as Y4M, PNG frames, raw YUV, lossless MKV (FFV1) or MP4.

Output keeps the source's size, frame count, frame rate, pixel format and bit depth
wherever the format can hold them, and converts RGB back to YUV with the matrix and
range recorded in the VideoInfo, so reading the output reproduces the frames up to
colour rounding.  Files are written under a temporary name next to the target and
renamed into place only when complete: a failed or interrupted write (Ctrl-C, SIGTERM,
SIGHUP included) never leaves a half-written file, and never clobbers an existing one.
A symlink to a file is followed (its target is replaced, the link stays); ``-``
(stdout), FIFOs and character devices are written straight into, with no temporary
file (MP4 then is fragmented, since a stream cannot be rewound to write its index).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import MediaError
from ..fileio import STDOUT, SignalGuard, open_stream, output_target, remove_quietly
from .clip import PIX_FMT_BIT_DEPTH, Video, VideoInfo, is_gray_pix_fmt, is_rgb_pix_fmt
from .colour import AV_RANGE_OF, TAG_OF_MATRIX, rgb_to_source

OUTPUT_FORMATS = ("y4m", "png", "yuv", "mkv", "mp4")
DEFAULT_CRF = 18
PNG_FRAME_NAME = "f{:05d}.png"  # as ffmpeg's f%05d.png, numbered from 1
_PNG_FRAME_PATTERN = re.compile(r"f(\d{5,})\.png")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Temporary files are created 0600; the committed output gets the usual permissions.
_UMASK = _current_umask()


def output_format_for(path, format: str | None = None) -> str:
    """The output format: ``format`` if given, else from the extension; folders and bare
    names are PNG frames, except ``-`` (stdout) and FIFOs/devices without an extension,
    which get Y4M (a stream holds one file, and Y4M is what players read from a pipe)."""
    if format is not None:
        name = str(format).lower().lstrip(".")
        if name not in OUTPUT_FORMATS:
            raise MediaError(f"unknown output format {format!r} (choose from {', '.join(OUTPUT_FORMATS)})")
        return name
    text = os.fspath(path)
    target = Path(text)
    if text == STDOUT or (not target.suffix and output_target(text).stream):
        return "y4m"
    if target.is_dir() or text.endswith(("/", os.sep)) or not target.suffix:
        return "png"
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in OUTPUT_FORMATS:
        raise MediaError(
            f"cannot tell the output format from {target.suffix!r}: use .y4m, .png, .yuv, .mkv or .mp4, "
            "a folder (PNG frames), or --format"
        )
    return suffix


@dataclass(frozen=True)
class _Plan:
    """How one VideoInfo is stored in one output format."""

    format: str
    codec: str
    pix_fmt: str
    color_matrix: str  # used for RGB->YUV; the source's own unless the source is RGB
    color_range: str
    codec_options: dict = field(default_factory=dict)
    description: str = ""


def _yuv444_for_rgb(info: VideoInfo) -> str:
    return "yuv444p" if info.bit_depth == 8 else "yuv444p16le"


def _plan(info: VideoInfo, fmt: str, crf: int | None) -> _Plan:
    source_is_rgb = is_rgb_pix_fmt(info.pix_fmt)
    # RGB sources written as YUV use ffmpeg's default RGB->YUV conversion (BT.601,
    # limited range), which is also what an untagged file is read back with.
    matrix, value_range = ("bt601", "tv") if source_is_rgb else (info.color_matrix, info.color_range)
    if fmt == "png":
        pix_fmt = "rgb24" if info.bit_depth == 8 else "rgb48be"
        return _Plan(fmt, "png", pix_fmt, matrix, value_range, description=f"PNG frames, {pix_fmt}")
    if fmt in ("y4m", "yuv"):
        pix_fmt = _yuv444_for_rgb(info) if source_is_rgb else info.pix_fmt
        name = "Y4M" if fmt == "y4m" else "raw YUV"
        converted = f" (from RGB with {matrix} {value_range})" if source_is_rgb else ""
        return _Plan(fmt, "rawvideo", pix_fmt, matrix, value_range, description=f"{name} {pix_fmt}{converted}")
    if fmt == "mkv":
        # FFV1 stores RGB natively; 8-bit RGB only as packed bgr0.
        pix_fmt = {"rgb24": "bgr0", "rgb48le": "gbrp16le"}.get(info.pix_fmt, info.pix_fmt)
        return _Plan(fmt, "ffv1", pix_fmt, matrix, value_range, codec_options={"level": "3", "slicecrc": "1"},
                     description=f"MKV FFV1 lossless {pix_fmt}")
    if fmt == "mp4":
        crf = DEFAULT_CRF if crf is None else crf
        if not isinstance(crf, (int, np.integer)) or isinstance(crf, bool) or not 0 <= crf <= 51:
            raise MediaError(f"crf must be an integer 0..51, not {crf!r}")
        if source_is_rgb:
            # MP4 is the viewable output: 4:2:0 YUV plays everywhere.
            pix_fmt = "yuv420p" if info.bit_depth == 8 else "yuv420p10le"
        elif is_gray_pix_fmt(info.pix_fmt):
            # FFmpeg's H.264/HEVC decoders return 4:0:0 streams as 4:2:0 anyway, and
            # players handle 4:2:0 with neutral chroma far better than 4:0:0.
            pix_fmt = {"gray": "yuv420p", "gray10le": "yuv420p10le"}.get(info.pix_fmt, "yuv420p12le")
            if info.pix_fmt == "gray16le":
                pix_fmt = info.pix_fmt  # refused below, with the other 16-bit formats
        else:
            pix_fmt = info.pix_fmt
        depth = PIX_FMT_BIT_DEPTH[pix_fmt]
        if depth > 12:
            raise MediaError(
                f"MP4 output holds at most 12 bits; the source is {info.pix_fmt}: write .mkv (lossless FFV1) instead"
            )
        # The bundled libx264 does 8 and 10 bit; libx265 adds 12 bit.
        codec = "libx264" if depth <= 10 else "libx265"
        options = {"crf": str(int(crf)), "preset": "medium"}
        if codec == "libx265":
            options["x265-params"] = "log-level=error"
        subsampled_w = "420" in pix_fmt or "422" in pix_fmt
        subsampled_h = "420" in pix_fmt
        if (subsampled_w and info.width % 2) or (subsampled_h and info.height % 2):
            raise MediaError(
                f"MP4 ({codec} {pix_fmt}) needs even frame dimensions, the video is {info.width}x{info.height}: "
                "write .mkv or .y4m instead"
            )
        converted = f", from RGB with {matrix} {value_range}" if source_is_rgb else f", {matrix} {value_range}"
        return _Plan(fmt, codec, pix_fmt, matrix, value_range, codec_options=options,
                     description=f"MP4 {codec} {pix_fmt} crf {int(crf)}{converted}")
    raise MediaError(f"unknown output format {fmt!r}")


_MUXER = {"y4m": "yuv4mpegpipe", "yuv": "rawvideo", "mkv": "matroska", "mp4": "mp4"}


class _ContainerBackend:
    """y4m, yuv, mkv and mp4: one PyAV output container at a temporary path."""

    def __init__(self, destination: str, plan: _Plan, info: VideoInfo, streaming: bool = False):
        # y4m above 8 bits is an extension that FFmpeg only writes when told unofficial is fine.
        options = {"strict": "unofficial"} if plan.format == "y4m" else {}
        if plan.format == "mp4" and streaming:
            # A pipe cannot be rewound to write the index at the end: fragmented MP4.
            options["movflags"] = "frag_keyframe+empty_moov"
        self.container = av.open(destination, "w", format=_MUXER[plan.format], options=options)
        try:
            self.stream = self.container.add_stream(plan.codec, rate=info.fps, options=plan.codec_options)
            self.stream.width, self.stream.height, self.stream.pix_fmt = info.width, info.height, plan.pix_fmt
            context = self.stream.codec_context
            if not av.VideoFormat(plan.pix_fmt).is_rgb:
                # Tags make players (and our reader) convert back with the same matrix/range.
                gray = is_gray_pix_fmt(plan.pix_fmt)
                context.color_range = AV_RANGE_OF["pc" if gray else plan.color_range]
                if not gray:
                    context.colorspace = TAG_OF_MATRIX[plan.color_matrix]
        except Exception:
            self.container.close()
            raise

    def write(self, frame: av.VideoFrame) -> None:
        self.container.mux(self.stream.encode(frame))

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # the output is being thrown away; its flush errors do not matter
            pass


class _PngBackend:
    """One PNG file per frame (f00001.png, ...), or a single file for a one-frame .png target."""

    def __init__(self, temp_path: Path, plan: _Plan, info: VideoInfo, single_file: bool, stream=None):
        self.temp_path = temp_path
        self.single_file = single_file
        self.stream = stream  # a binary file object for stream outputs (one frame only)
        self.context = av.CodecContext.create("png", "w")
        self.context.width, self.context.height, self.context.pix_fmt = info.width, info.height, plan.pix_fmt
        self.count = 0

    def write(self, frame: av.VideoFrame) -> None:
        if self.single_file and self.count:
            raise MediaError("a .png output holds one frame; name a folder for more")
        self.count += 1
        data = b"".join(bytes(packet) for packet in self.context.encode(frame))
        if self.stream is not None:
            self.stream.write(data)
            return
        target = self.temp_path if self.single_file else self.temp_path / PNG_FRAME_NAME.format(self.count)
        target.write_bytes(data)

    def finish(self) -> None:
        if self.stream is not None:
            self.stream.close()

    def abort(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except OSError:  # the reader went away; the output is being abandoned anyway
                pass


class VideoWriter:
    """Streaming writer: ``write`` batches of RGB frames, then ``close`` to commit.

    As a context manager it commits on normal exit and aborts (removing the
    temporary output, leaving any existing target untouched) on an exception.
    """

    def __init__(self, path, info: VideoInfo, *, format: str | None = None, crf: int | None = None):
        self.path = Path(path)
        self.info = info
        self.format = output_format_for(path, format)
        self.plan = _plan(info, self.format, crf)
        self.frames_written = 0
        self._reformatter = VideoReformatter()
        self._closed = False
        # Where the bytes really go: a stream is written into, a symlink followed.
        self._target = output_target(path)
        self._stream = self._target.stream
        self._png_single_file = self.format == "png" and (self.path.suffix.lower() == ".png" or self._stream)
        if self._png_single_file and info.num_frames != 1:
            what = "a stream" if self._stream else "a .png output"
            raise MediaError(f"{self.path}: {what} holds one frame (PNG); name a folder for {info.num_frames} frames")
        self._is_folder = self.format == "png" and not self._png_single_file
        self._final = Path(self._target.path)
        self._temp = None
        self._stream_handle = None
        # From here until commit or abort a partial output exists: SIGTERM and SIGHUP
        # must unwind through abort() like Ctrl-C does, not kill the process outright.
        self._signals = SignalGuard()
        self._signals.start()
        try:
            if self._stream:
                destination = "pipe:1" if self._target.is_stdout else self._target.path
                if self._target.is_stdout:
                    sys.stdout.flush()
            else:
                self._temp = self._make_temp()
                destination = str(self._temp)
            if self.format == "png":
                if self._stream:
                    self._stream_handle = open_stream(self._target)
                self._backend = _PngBackend(self._temp, self.plan, info, self._png_single_file, self._stream_handle)
            else:
                self._backend = _ContainerBackend(destination, self.plan, info, streaming=self._stream)
        except (av.FFmpegError, OSError) as error:
            self._remove_temp()
            self._signals.stop()
            raise MediaError(f"cannot write {self.path}: {_reason(error)}") from None
        except BaseException:
            self._remove_temp()
            self._signals.stop()
            raise

    @property
    def description(self) -> str:
        """What is being written, for logs: e.g. 'MP4 libx264 yuv420p crf 18, bt601 tv'."""
        return self.plan.description

    def _make_temp(self) -> Path:
        parent = self._final.parent
        if parent.exists() and not parent.is_dir():
            raise MediaError(f"cannot write {self.path}: {parent} is not a folder")
        if not parent.is_dir():
            raise MediaError(f"output folder {parent} does not exist")
        if self._is_folder:
            if self._final.exists() and not self._final.is_dir():
                raise MediaError(f"{self.path} exists and is not a folder (PNG frames need a folder)")
        elif self._final.is_dir():
            raise MediaError(f"{self.path} is a folder; name a file for {self.format} output")
        try:
            if self._is_folder:
                return Path(tempfile.mkdtemp(dir=parent, prefix=f".{self._final.name}.", suffix=".partial"))
            handle, name = tempfile.mkstemp(dir=parent, prefix=f".{self._final.name}.", suffix=".partial")
            os.close(handle)
            return Path(name)
        except OSError as error:
            raise MediaError(f"cannot write to {parent}: {error.strerror or error}") from None

    def _remove_temp(self) -> None:
        if self._temp is None:
            return
        if self._is_folder:
            shutil.rmtree(self._temp, ignore_errors=True)
        else:
            remove_quietly(self._temp)  # never raises: cleanup must not mask the real error

    def write(self, frames: np.ndarray) -> None:
        """Append (N, H, W, 3) RGB frames (or one (H, W, 3) frame) in the Video dtype convention."""
        if self._closed:
            raise ValueError("write on a closed VideoWriter")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        expected_dtype = np.uint8 if self.info.bit_depth == 8 else np.uint16
        if frames.dtype != expected_dtype:
            raise ValueError(f"frames are {frames.dtype}, expected {np.dtype(expected_dtype)} for {self.info.pix_fmt}")
        if frames.ndim != 4 or frames.shape[1:] != (self.info.height, self.info.width, 3):
            expected = f"(N, {self.info.height}, {self.info.width}, 3)"
            raise ValueError(f"frames have shape {frames.shape}, expected {expected}")
        try:
            for rgb in frames:
                frame = rgb_to_source(rgb, self.info, self.plan.pix_fmt, color_matrix=self.plan.color_matrix,
                                      color_range=self.plan.color_range, reformatter=self._reformatter)
                frame.pts = self.frames_written
                self._backend.write(frame)
                self.frames_written += 1
        except MediaError:
            self.abort()
            raise
        except (av.FFmpegError, OSError) as error:
            self.abort()
            raise MediaError(f"cannot write {self.path}: {_reason(error)}") from None

    def close(self) -> None:
        """Finish the output and move it into place."""
        if self._closed:
            return
        if self.frames_written == 0:
            self.abort()
            raise MediaError(f"no frames to write to {self.path}")
        try:
            self._backend.finish()
            self._commit()
        except (av.FFmpegError, OSError) as error:
            self.abort()
            raise MediaError(f"cannot write {self.path}: {_reason(error)}") from None
        except BaseException:
            self.abort()  # a signal during the final flush: the output is incomplete
            raise
        self._closed = True
        self._signals.stop()

    def _commit(self) -> None:
        if self._stream:
            return  # written straight into the stream
        if not self._is_folder:
            os.chmod(self._temp, 0o666 & ~_UMASK)
            os.replace(self._temp, self._final)
            return
        if not self._final.exists():
            os.chmod(self._temp, 0o777 & ~_UMASK)
            os.rename(self._temp, self._final)
            return
        # An existing folder: replace our frames in it, leave anything else alone,
        # and drop frames of an earlier, longer video that would follow ours.
        for frame_file in sorted(self._temp.iterdir()):
            os.replace(frame_file, self._final / frame_file.name)
        os.rmdir(self._temp)
        for old in self._final.iterdir():
            match = _PNG_FRAME_PATTERN.fullmatch(old.name)
            if match and int(match.group(1)) > self.frames_written:
                old.unlink()

    def abort(self) -> None:
        """Discard everything written; an existing target is left as it was."""
        if self._closed:
            return
        self._closed = True
        try:
            self._backend.abort()
            self._remove_temp()
        finally:
            self._signals.stop()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self):
        # A writer dropped without close() must not leave its temporary output behind.
        if not getattr(self, "_closed", True) and hasattr(self, "_backend"):
            self.abort()


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def write_video(path, video: Video, *, format: str | None = None, crf: int | None = None) -> None:
    with VideoWriter(path, video.info, format=format, crf=crf) as writer:
        writer.write(video.frames)
