"""The ``nnc`` command: encode, decode, info, eval.

Every user-facing failure is an :class:`~nnc.errors.NncError`, printed as one line
``nnc: <message>`` with a non-zero exit code; tracebacks are for bugs only (and are
shown in full with NNC_DEBUG=1).
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import click

from .. import __version__
from ..errors import NncError
from ..units import parse_count
from ..codec.registry import DEFAULT_CODEC, codec_names
from ..media.limits import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_PIXELS
from .codec_options import CodecOptionsCommand, all_codecs, build_options, codec_options, given_values
from .errors import interrupt_on_termination, reports_errors
from .report import report as report_command
from .train import train as train_command

def parse_sizes(values: tuple[str, ...]) -> tuple[tuple[int, int] | None, float | None]:
    """``--size`` takes a frame size ``WxH`` (raw YUV input) or a model size (1.5M, 375k, 200000)."""
    frame_size = model_size = None
    for value in values:
        text = value.strip().lower()
        if match := re.fullmatch(r"(\d+)x(\d+)", text):
            frame_size = (int(match[1]), int(match[2]))
        elif (model_size := parse_count(text)) is not None:
            if model_size < 1:
                raise NncError(f"--size {value}: model size must be positive")
        else:
            raise NncError(f"--size {value!r}: expected WxH (frame size) or a parameter count like 1.5M")
    return frame_size, model_size


def parse_frame_range(value: str | None) -> tuple[int, int | None] | None:
    """``--frames 10:20`` -> (10, 20); ``10:`` -> (10, None); ``:20`` -> (0, 20); ``7`` -> (7, 8)."""
    if value is None:
        return None
    text = value.strip()
    if match := re.fullmatch(r"(\d*):(\d*)", text):
        start = int(match[1]) if match[1] else 0
        stop = int(match[2]) if match[2] else None
    elif text.isdigit():
        start, stop = int(text), int(text) + 1
    else:
        raise NncError(f"--frames {value!r}: expected START:STOP, e.g. 10:20")
    if stop is not None and stop <= start:
        raise NncError(f"--frames {value!r}: STOP must be greater than START")
    return start, stop


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


def media_options(function):
    """Options describing how to read a raw or ambiguous input."""
    options = [
        click.option("--pix-fmt", help="Pixel format of raw .yuv input: yuv420p or yuv420p10le."),
        click.option("--fps", help="Frame rate of raw .yuv input (default 25)."),
        click.option("--color-matrix", type=click.Choice(["bt601", "bt709", "bt2020"]),
                     help="Override the YUV<->RGB matrix (default: the stream's tag, else bt601 as ffmpeg)."),
        click.option("--color-range", type=click.Choice(["tv", "pc"]),
                     help="Override the YUV range (default: the stream's tag, else tv as ffmpeg)."),
        click.option("--frames", "max_frames", type=click.IntRange(min=1), help="Use only the first N frames."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def read_input(path, frame_size, pix_fmt, fps, color_matrix, color_range, max_frames):
    from ..media import read_video

    return read_video(path, **media_settings(frame_size, pix_fmt, fps, color_matrix, color_range, max_frames))


def media_settings(frame_size, pix_fmt, fps, color_matrix, color_range, max_frames) -> dict:
    """:func:`nnc.media.read_video`'s options from the media options."""
    return dict(size=frame_size, pix_fmt=pix_fmt, fps=parse_fps(fps), color_matrix=color_matrix,
                color_range=color_range, max_frames=max_frames)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnc")
def main():
    """nnc: neural video codecs. Encode a video into a .nnc file and decode it back."""


def _appendable_codecs():
    from ..codec.files import appendable_codecs

    return appendable_codecs()


@main.command(cls=CodecOptionsCommand, codec_params=lambda: codec_options(all_codecs()))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The .nnc file to write.")
@click.option("--model", default=DEFAULT_CODEC, show_default=True,
              help=f"Registered codec: {', '.join(codec_names())}.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@media_options
@reports_errors
def encode(inputs, output, model, sizes, quiet, pix_fmt, fps, color_matrix, color_range, max_frames, **values):
    """Fit a neural representation to INPUTS and write it as a .nnc file.

    Video codecs take one video; multi-video codecs take several (one session each);
    image codecs take one image.
    """
    from ..codec.files import encode_file
    from ..codec.registry import get_codec

    codec = get_codec(model)  # fail on a typo before anything is read
    frame_size, model_size = parse_sizes(sizes)
    options = build_options(codec, given_values(all_codecs(), dict(values, size=model_size)),
                            show_progress=not quiet)
    # `kill` (SIGTERM) gets the same treatment as Ctrl-C: save a checkpoint, then exit.
    interrupt_on_termination()
    report = encode_file(list(inputs), output, model, options,
                         media=media_settings(frame_size, pix_fmt, fps, color_matrix, color_range, max_frames),
                         log=_progress_line(quiet))
    click.echo(report.summary())


def _progress_line(quiet: bool):
    return (lambda text: None) if quiet else (lambda text: click.echo(text, err=True))


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output: .y4m, .yuv, .mkv (FFV1, lossless), .mp4 (x264) or a folder of PNG frames.")
@click.option("--format", "format_", type=click.Choice(["y4m", "png", "yuv", "mkv", "mp4"]),
              help="Output format when the extension does not say.")
@click.option("--crf", type=click.IntRange(0, 51), help="x264 CRF for .mp4 output (default 18).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--frames", "frame_range", metavar="START:STOP",
              help="Decode only frames START (inclusive) to STOP (exclusive), counted from 0.")
@click.option("--video", "video_index", type=click.IntRange(min=0),
              help="Multi-video files: which video to decode, counted from 0.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse files whose frames have more pixels (a tiny file may describe a huge frame).")
@click.option("--max-output-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_OUTPUT_BYTES,
              show_default=True, help="Refuse decodes estimated to write more bytes than this.")
@reports_errors
def decode(input, output, format_, crf, device, batch_size, frame_range, video_index, max_pixels, max_output_bytes):
    """Decode a .nnc file into a video (or, for image codecs, an image).

    OUTPUT may be - (stdout, Y4M unless --format says otherwise), a FIFO or a device."""
    from ..codec.files import decode_file
    from ..fileio import is_stream_output

    try:
        info, seconds = decode_file(input, output, format=format_, crf=crf, device=device, batch_size=batch_size,
                                    frame_range=parse_frame_range(frame_range), video_index=video_index,
                                    max_pixels=max_pixels, max_output_bytes=max_output_bytes)
    except KeyboardInterrupt as interrupt:  # the writer has removed its partial output
        interrupt.nnc_message = f"decode interrupted; {output} was not written"
        raise
    click.echo(  # stdout carries the video when it is the output
        f"wrote {output}: {info.width}x{info.height}, {info.num_frames} frames, {info.pix_fmt}, "
        f"{seconds:.1f} s ({info.num_frames / max(seconds, 1e-9):.1f} frames/s)", err=is_stream_output(output),
    )


# Options a set takes from its first encode (and the checkpoints append does not write).
APPEND_FIXED = ("size", "fso", "resume", "checkpoint_interval")


@main.command(cls=CodecOptionsCommand, codec_params=lambda: codec_options(_appendable_codecs(), APPEND_FIXED))
@click.argument("set_path", metavar="SET", type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--size", "sizes", multiple=True, help="WxH, the frame size of raw .yuv input.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@media_options
@reports_errors
def append(set_path, input, sizes, quiet, pix_fmt, fps, color_matrix, color_range, max_frames, **values):
    """Learn INPUT into the multi-video file SET as one more video.

    Earlier videos keep decoding to identical frames; their bytes are copied unchanged
    and SET is replaced atomically."""
    from ..codec.files import append_file, codec_of_set

    frame_size, model_size = parse_sizes(sizes)
    if model_size is not None:
        raise NncError("append: the set's model size is fixed by its first encode; --size here is WxH of raw input")
    codec = codec_of_set(set_path)  # a wrong or unwritable SET fails before the input is read
    options = build_options(codec, given_values(_appendable_codecs(), values), show_progress=not quiet,
                            checkpoint_interval=0)
    interrupt_on_termination()
    report = append_file(set_path, input, options,
                         media=media_settings(frame_size, pix_fmt, fps, color_matrix, color_range, max_frames),
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


@main.command(name="eval")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("distorted", type=click.Path(path_type=Path))
@click.option("--size", "sizes", multiple=True, help="WxH of raw .yuv inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the CompressAI-style results JSON.")
@media_options
@reports_errors
def eval_command(reference, distorted, sizes, as_json, pix_fmt, fps, color_matrix, color_range, max_frames):
    """Compare DISTORTED (a video or a .nnc file) with REFERENCE: PSNR, PSNR-YUV, MS-SSIM, bpp."""
    from ..eval.compare import evaluate

    frame_size, _ = parse_sizes(sizes)
    result = evaluate(
        reference, distorted,
        read=lambda path: read_input(path, frame_size, pix_fmt, fps, color_matrix, color_range, max_frames),
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    r = result["results"]
    ms = "n/a (frames too small)" if r["ms-ssim-rgb"] is None else f"{r['ms-ssim-rgb']:.4f}"
    click.echo(
        f"{distorted} vs {reference}: {result['meta']['frames']} frames {result['meta']['resolution']}\n"
        f"  PSNR-RGB {r['psnr-rgb']:.3f} dB   PSNR-YUV(6:1:1) {r['psnr-yuv']:.3f} dB "
        + (f"(Y {r['psnr-y']:.2f} U {r['psnr-u']:.2f} V {r['psnr-v']:.2f}"
           if r["psnr-u"] is not None else f"(Y {r['psnr-y']:.2f}, gray") + f", on {result['meta']['yuv_planes']})\n"
        f"  MS-SSIM-RGB {ms}   bpp {r['bpp']:.5f} ({r['bytes']} bytes)"
    )


main.add_command(report_command)
main.add_command(train_command)

if __name__ == "__main__":
    main()
