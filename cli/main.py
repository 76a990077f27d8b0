"""The ``nnc`` command: encode, decode, append, info, eval, report, train.

Every user-facing failure is an :class:`~nnc.errors.NncError`, printed as one line
``nnc: <message>`` with a non-zero exit code (the table is in :mod:`nnc.errors`);
tracebacks are for bugs only (and are shown in full with NNC_DEBUG=1).
"""

from __future__ import annotations

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import click

from .. import __version__
from ..errors import NncError
from ..units import FRAMES_HELP, parse_count, parse_frame_range, parse_frame_size, plural
from ..codec.registry import DEFAULT_CODEC, codec_names
from ..media.limits import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_PIXELS
from .codec_options import CodecOptionsCommand, all_codecs, build_options, codec_options, given_values
from .errors import interrupt_on_termination, reports_errors
from .report import report as report_command
from .train import train as train_command


def parse_video_size(value: str | None) -> tuple[int, int] | None:
    """``--video-size WxH`` (width first, as ffmpeg's -video_size) -> (width, height)."""
    return None if value is None else parse_frame_size(value, "--video-size", "1920x1080")


def parse_params(value: str | None) -> float | None:
    """``--params 1.5M`` (375k, 200000) -> the model size in parameters."""
    if value is None:
        return None
    count = parse_count(value)
    if count is None:
        raise NncError(f"--params {value!r}: expected a parameter count like 1.5M, 375k or 200000")
    if count < 1:
        raise NncError(f"--params {value}: the model size must be at least 1 parameter")
    return count


def parse_legacy_sizes(values: tuple[str, ...]) -> tuple[tuple[int, int] | None, float | None]:
    """The deprecated ``--size`` (hidden, kept for old scripts): ``WxH`` is ``--video-size``,
    anything else (1.5M, 375k, 200000) ``--params``; repeatable, the last of each wins."""
    frame_size = model_size = None
    for value in values:
        text = value.strip().lower()
        if match := re.fullmatch(r"(\d+)x(\d+)", text):
            frame_size = (int(match[1]), int(match[2]))
        elif (model_size := parse_count(text)) is not None:
            if model_size < 1:
                raise NncError(f"--size {value}: the model size must be at least 1 parameter (--params)")
        else:
            raise NncError(f"--size {value!r}: expected a frame size WxH (--video-size) or a parameter count like "
                           "1.5M (--params)")
    return frame_size, model_size


def frame_and_model_size(inputs, video_size: str | None, legacy: tuple[str, ...],
                         params: str | None = None) -> tuple[tuple[int, int] | None, float | None]:
    """The raw-input frame size and the model size from ``--video-size``, ``--params`` and
    the deprecated ``--size``; one-line refusals for mixing them and for a frame size
    that no input uses."""
    from ..media.reader import RAW_YUV_SUFFIXES

    if legacy:
        given = [name for name, value in (("--params", params), ("--video-size", video_size)) if value is not None]
        if given:
            raise NncError(f"--size is the old spelling of --params and --video-size: give {' and '.join(given)} "
                           "without --size")
        return parse_legacy_sizes(legacy)
    frame_size = parse_video_size(video_size)
    if frame_size is not None and not any(Path(p).suffix.lower() in RAW_YUV_SUFFIXES for p in inputs):
        raise NncError(f"--video-size applies to raw .yuv input only; {inputs[0]} says its own frame size")
    return frame_size, parse_params(params)


def parse_fps(value: str | None) -> Fraction | None:
    if value is None:
        return None
    try:
        fps = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise NncError(f"--fps {value!r}: expected a number like 25 or 30000/1001") from None
    if fps <= 0:
        raise NncError("--fps must be positive")
    return fps


FRAMES_METAVAR = "N|START:STOP"
PIX_FMT_HELP = ("Pixel format of raw .yuv input: yuv420p, yuv422p, yuv444p, gray, rgb24, their 10-, 12- and "
                "16-bit forms (yuv420p10le, ...) or rgb48le; for other inputs, the format they must have.")


def media_options(function=None, *, frames_help: str = FRAMES_HELP, frames_metavar: str = FRAMES_METAVAR):
    """Options describing how to read a raw or ambiguous input (and which frames)."""
    if function is None:
        return lambda decorated: media_options(decorated, frames_help=frames_help, frames_metavar=frames_metavar)
    options = [
        click.option("--video-size", metavar="WxH",
                     help="Frame size of raw .yuv input, width first (as ffmpeg's -video_size), e.g. 1920x1080."),
        click.option("--pix-fmt", help=PIX_FMT_HELP),
        click.option("--fps", help="Frame rate of raw .yuv input, e.g. 25 or 30000/1001 (default 25)."),
        click.option("--color-matrix", type=click.Choice(["bt601", "bt709", "bt2020"]),
                     help="Override the YUV<->RGB matrix (default: the stream's tag, else bt601 as ffmpeg)."),
        click.option("--color-range", type=click.Choice(["tv", "pc"]),
                     help="Override the YUV range (default: the stream's tag, else tv as ffmpeg)."),
        click.option("--frames", "frame_range", metavar=frames_metavar, help=frames_help),
        # Deprecated: WxH meant --video-size, a count --params.  Hidden, kept for old scripts.
        click.option("--size", "sizes", multiple=True, hidden=True),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def read_input(path, frame_size, pix_fmt, fps, color_matrix, color_range, frame_range):
    from ..media import read_video

    return read_video(path, **media_settings(frame_size, pix_fmt, fps, color_matrix, color_range, frame_range))


def media_settings(frame_size, pix_fmt, fps, color_matrix, color_range, frame_range) -> dict:
    """:func:`nnc.media.read_video`'s options from the media options (``frame_range``: the
    parsed ``--frames``, (start, stop) or None)."""
    start, stop = frame_range or (0, None)
    return dict(size=frame_size, pix_fmt=pix_fmt, fps=parse_fps(fps), color_matrix=color_matrix,
                color_range=color_range, start_frame=start, max_frames=None if stop is None else stop - start)


def _refuse_json_with_stdout(as_json: bool, output) -> None:
    if as_json and os.fspath(output) == "-":
        raise NncError("--json prints to stdout, which -o - writes the output to: write the output to a file, "
                       "or drop --json")


def _refuse_stdin_twice(inputs) -> None:
    if sum(os.fspath(p) == "-" for p in inputs) > 1:
        raise NncError("stdin (-) can be read only once: give it as one input")


def _echo_json(data: dict) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnc")
def main():
    """nnc: neural video and image codecs. Encode a video (or an image, or a set of videos)
    into a .nnc file and decode it back."""


def _appendable_codecs():
    from ..codec.files import appendable_codecs

    return appendable_codecs()


@main.command(cls=CodecOptionsCommand, codec_params=lambda: codec_options(all_codecs()))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The .nnc file to write (- for stdout).")
@click.option("--model", default=DEFAULT_CODEC, show_default=True,
              help=f"Registered codec: {', '.join(codec_names())}.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as one JSON object on stdout (the summary line goes to stderr).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@media_options
@reports_errors
def encode(inputs, output, model, as_json, quiet, video_size, sizes, pix_fmt, fps, color_matrix, color_range,
           frame_range, **values):
    """Fit a neural representation to INPUTS and write it as a .nnc file.

    Video codecs take one video; multi-video codecs take several (one session each);
    image codecs take one image. - reads a Y4M stream from stdin
    (ffmpeg -i clip.mp4 -f yuv4mpegpipe - | nnc encode - -o clip.nnc).
    """
    from ..codec.files import encode_file
    from ..codec.registry import get_codec
    from ..fileio import is_stream_output

    codec = get_codec(model)  # fail on a typo before anything is read
    frame_size, model_size = frame_and_model_size(inputs, video_size, sizes, values.pop("size", None))
    frames = parse_frame_range(frame_range)
    _refuse_json_with_stdout(as_json, output)
    _refuse_stdin_twice(inputs)
    options = build_options(codec, given_values(all_codecs(), dict(values, size=model_size)),
                            show_progress=not quiet)
    # `kill` (SIGTERM) gets the same treatment as Ctrl-C: save a checkpoint, then exit.
    interrupt_on_termination()
    report = encode_file(list(inputs), output, model, options,
                         media=media_settings(frame_size, pix_fmt, fps, color_matrix, color_range, frames),
                         log=_progress_line(quiet))
    # stdout carries the file when it is the output, and only the JSON with --json
    click.echo(report.summary(), err=as_json or is_stream_output(output))
    if as_json:
        _echo_json(encode_result(report, model))


def encode_result(report, model: str) -> dict:
    """``nnc encode --json``: what the summary line says, as data."""
    from ..codec.planning import PlanReport
    from ..codec.video_set_api import SetReport

    if isinstance(report, PlanReport):
        return {"dry_run": True, "codec": model, **report.plan}
    if isinstance(report, SetReport):
        return {"output": str(report.path), "codec": model, "appended": report.appended, "bytes": report.file_bytes,
                "videos": report.videos, "seconds": round(report.encode_seconds, 3)}
    media = report.header.get("media", {})
    fps = media.get("fps")
    result = {
        "output": str(report.path), "codec": model, "bytes": report.file_bytes, "bpp": report.bpp,
        "psnr_rgb": report.psnr, "frames": media.get("num_frames"), "width": media.get("width"),
        "height": media.get("height"), "fps": str(Fraction(*fps)) if isinstance(fps, list) else fps,
        "pix_fmt": media.get("pix_fmt"), "parameters": report.stats.get("model_size"),
        "seconds": round(report.encode_seconds, 3), "settings": report.settings,
    }
    if report.settings.get("quality") is not None:
        result["quality"] = report.settings["quality"]
    return result


def _progress_line(quiet: bool):
    return (lambda text: None) if quiet else (lambda text: click.echo(text, err=True))


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output: .y4m, .yuv, .mkv (FFV1, lossless), .mp4 (x264), .png (an image codec's image), a "
                   "folder of PNG frames, or - (stdout).")
@click.option("--format", "format_", type=click.Choice(["y4m", "png", "yuv", "mkv", "mp4"]),
              help="Output format when the extension does not say.")
@click.option("--crf", type=click.IntRange(0, 51), help="x264 CRF for .mp4 output (default 18).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True,
              help="Device to run the decoder on.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Frames decoded at once.")
@click.option("--frames", "frame_range", metavar=FRAMES_METAVAR, help=FRAMES_HELP)
@click.option("--video", "video_index", type=click.IntRange(min=0),
              help="Multi-video files: which video to decode, counted from 0.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse files whose frames have more pixels (a tiny file may describe a huge frame).")
@click.option("--max-output-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_OUTPUT_BYTES,
              show_default=True, help="Refuse decodes estimated to write more bytes than this.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as one JSON object on stdout (the summary line goes to stderr).")
@reports_errors
def decode(input, output, format_, crf, device, batch_size, frame_range, video_index, max_pixels, max_output_bytes,
           as_json):
    """Decode a .nnc file into a video (or, for image codecs, an image).

    OUTPUT may be - (stdout, Y4M unless --format says otherwise), a FIFO or a device."""
    from ..codec.files import decode_file
    from ..fileio import is_stream_output

    frames = parse_frame_range(frame_range)
    _refuse_json_with_stdout(as_json, output)
    try:
        info, seconds = decode_file(input, output, format=format_, crf=crf, device=device, batch_size=batch_size,
                                    frame_range=frames, video_index=video_index,
                                    max_pixels=max_pixels, max_output_bytes=max_output_bytes)
    except KeyboardInterrupt as interrupt:  # the writer has removed its partial output
        interrupt.nnc_message = f"decode interrupted; {output} was not written"
        raise
    rate = info.num_frames / max(seconds, 1e-9)
    click.echo(  # stdout carries the video when it is the output, and only the JSON with --json
        f"wrote {output}: {info.width}x{info.height}, {plural(info.num_frames, 'frame')}, {info.pix_fmt}, "
        f"{seconds:.1f} s ({rate:.1f} frames/s)", err=as_json or is_stream_output(output),
    )
    if as_json:
        _echo_json({"output": str(output), "frames": info.num_frames, "width": info.width, "height": info.height,
                    "pix_fmt": info.pix_fmt, "bit_depth": info.bit_depth, "fps": str(info.fps),
                    "seconds": round(seconds, 3), "frames_per_second": round(rate, 3)})


# Options a set takes from its first encode (and the checkpoints append does not write).
APPEND_FIXED = ("size", "fso", "resume", "checkpoint_interval")


@main.command(cls=CodecOptionsCommand, codec_params=lambda: codec_options(_appendable_codecs(), APPEND_FIXED))
@click.argument("set_path", metavar="SET", type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@media_options
@reports_errors
def append(set_path, input, quiet, video_size, sizes, pix_fmt, fps, color_matrix, color_range, frame_range, **values):
    """Learn INPUT into the multi-video file SET as one more video.

    Earlier videos keep decoding to identical frames; their bytes are copied unchanged
    and SET is replaced atomically. INPUT - reads a Y4M stream from stdin."""
    from ..codec.files import append_file, codec_of_set

    frame_size, model_size = frame_and_model_size([input], video_size, sizes)
    if model_size is not None:
        raise NncError("append: the set's model size is fixed by its first encode (--params does not apply)")
    frames = parse_frame_range(frame_range)
    codec = codec_of_set(set_path)  # a wrong or unwritable SET fails before the input is read
    options = build_options(codec, given_values(_appendable_codecs(), values), show_progress=not quiet,
                            checkpoint_interval=0)
    interrupt_on_termination()
    report = append_file(set_path, input, options,
                         media=media_settings(frame_size, pix_fmt, fps, color_matrix, color_range, frames),
                         log=_progress_line(quiet))
    click.echo(report.summary())


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def info(input, as_json):
    """Show a .nnc file's header, chunks and where its bytes go."""
    from ..codec.files import describe

    description = describe(input)
    if as_json:
        click.echo(json.dumps(description["data"], indent=2))
    else:
        click.echo(description["text"])


@main.command()
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--frames", "num_frames", type=int, default=24, show_default=True, help="Frames of the clip.")
@click.option("--video-size", default="128x64", show_default=True, metavar="WxH", help="Frame size, width first.")
@click.option("--fps", default="25", show_default=True, help="Frame rate (25, 30000/1001).")
@click.option("--format", "format_", default=None, help="Container or raw format (default: from the extension).")
@reports_errors
def sample(output, num_frames, video_size, fps, format_):
    """Write a synthetic sample clip to OUTPUT (.y4m, .mkv, .mp4, .yuv...) to try nnc with.

    Drifting colour gradients, a square and a disc crossing the frame, some texture:
    made from numbers alone, nothing is read or downloaded."""
    from ..media import write_video
    from ..media.sample import sample_video

    width, height = parse_frame_size(video_size, "--video-size", "128x64")
    try:
        video = sample_video(num_frames, width, height, parse_fps(fps) or Fraction(25))
    except ValueError as error:
        raise NncError(str(error)) from None
    write_video(output, video, format=format_)
    click.echo(f"wrote {output}: {width}x{height}, {plural(num_frames, 'frame')}, {video.info.fps} fps, yuv420p",
               err=True)


@main.command(name="eval")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("distorted", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the CompressAI-style results JSON.")
@media_options(frames_help="Compare the first N frames (also written :N).", frames_metavar="N")
@reports_errors
def eval_command(reference, distorted, as_json, video_size, sizes, pix_fmt, fps, color_matrix, color_range,
                 frame_range):
    """Compare DISTORTED (a video or a .nnc file) with REFERENCE: PSNR, PSNR-YUV, MS-SSIM, bpp."""
    from ..eval.compare import evaluate

    frame_size, _ = frame_and_model_size([reference, distorted], video_size, sizes)  # (old --size 60k: ignored)
    frames = parse_frame_range(frame_range)
    if frames is not None and frames[0] > 0:
        raise NncError(f"eval --frames {frame_range}: eval measures the first N frames (N or :N); cut the range "
                       "into a file first")
    if "-" in (os.fspath(reference), os.fspath(distorted)):
        raise NncError("eval reads each input more than once: save the stream to a file instead of -")
    result = evaluate(
        reference, distorted,
        read=lambda path: read_input(path, frame_size, pix_fmt, fps, color_matrix, color_range, frames),
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    r = result["results"]
    ms = "n/a (frames too small)" if r["ms-ssim-rgb"] is None else f"{r['ms-ssim-rgb']:.4f}"
    click.echo(
        f"{distorted} vs {reference}: {plural(result['meta']['frames'], 'frame')} {result['meta']['resolution']}\n"
        f"  PSNR-RGB {r['psnr-rgb']:.3f} dB   PSNR-YUV(6:1:1) {r['psnr-yuv']:.3f} dB "
        + (f"(Y {r['psnr-y']:.2f} U {r['psnr-u']:.2f} V {r['psnr-v']:.2f}"
           if r["psnr-u"] is not None else f"(Y {r['psnr-y']:.2f}, gray") + f", on {result['meta']['yuv_planes']})\n"
        f"  MS-SSIM-RGB {ms}   bpp {r['bpp']:.5f} ({r['bytes']} bytes)"
    )


main.add_command(report_command)
main.add_command(train_command)

if __name__ == "__main__":
    main()
