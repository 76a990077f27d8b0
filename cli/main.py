"""The ``nnc`` command: encode, decode, info, eval.

Every user-facing failure is an :class:`~nnc.errors.NncError`, printed as one line
``nnc: <message>`` with a non-zero exit code; tracebacks are for bugs only (and are
shown in full with NNC_DEBUG=1).
"""

from __future__ import annotations

import json
import re
import signal
from fractions import Fraction
from pathlib import Path

import click

from .. import __version__
from ..errors import NncError
from .errors import _raise_keyboard_interrupt, reports_errors
from .report import report as report_command
from .train import train as train_command

SIZE_SUFFIXES = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_sizes(values: tuple[str, ...]) -> tuple[tuple[int, int] | None, float | None]:
    """``--size`` takes a frame size ``WxH`` (raw YUV input) or a model size (1.5M, 375k, 200000)."""
    frame_size = model_size = None
    for value in values:
        text = value.strip().lower()
        if match := re.fullmatch(r"(\d+)x(\d+)", text):
            frame_size = (int(match[1]), int(match[2]))
        elif match := re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)", text):
            model_size = float(match[1]) * SIZE_SUFFIXES[match[2]]
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

    return read_video(
        path, size=frame_size, pix_fmt=pix_fmt, fps=parse_fps(fps), color_matrix=color_matrix,
        color_range=color_range, max_frames=max_frames,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnc")
def main():
    """nnc: neural video codecs. Encode a video into a .nnc file and decode it back."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The .nnc file to write.")
@click.option("--model", default="hnerv", show_default=True, help="Registered codec name: hnerv, nerv, nervpp (NeRV++) or nirvana.")
@click.option("--size", "sizes", multiple=True,
              help="Model size in parameters (1.5M, 375k); or WxH, the frame size of raw .yuv input. Repeatable.")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs (default 300).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Frames per training step (default: HNeRV 2, NeRV/NeRV++ 1).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default: HNeRV 1e-3, NeRV/NeRV++ 5e-4).")
@click.option("--loss", type=click.Choice(["l2", "fusion6"]), help="l2 (HNeRV default), or fusion6 = 0.7 L1 + 0.3 (1 - SSIM) (NeRV/NeRV++ default).")
@click.option("--weight-bits", type=click.IntRange(2, 16), help="Quantization bits of weights (default 8).")
@click.option("--embed-bits", type=click.IntRange(2, 16), help="Quantization bits of embeddings (default 6; HNeRV only).")
@click.option("--quant-axis", type=click.Choice(["cost", "error"]),
              help="Per-tensor or per-channel quantization: 'cost' counts the per-channel parameters' bits "
                   "(default), 'error' is HNeRV's lowest-error rule.")
@click.option("--prune", "prune", type=click.FloatRange(0, 1, max_open=True), metavar="FRACTION_REMOVED",
              help="NeRV/NeRV++: fraction of weights removed by global magnitude pruning before fine-tuning "
                   "(default 0.4 as in NeRV; 0 disables). Masks are stored in the file and counted. HNeRV ignores it.")
@click.option("--finetune-epochs", type=click.IntRange(min=0),
              help="NeRV/NeRV++: fine-tuning epochs after pruning, masks fixed (default 10% of --epochs).")
@click.option("--lambda", "rate_lambda", type=click.FloatRange(min=0),
              help="NIRVANA: weight of the estimated bits in the training loss (the rate-distortion knob).")
@click.option("--workers", type=click.IntRange(min=1),
              help="NIRVANA: processes fitting independent chains of frame groups in parallel.")
@click.option("--quality", type=click.IntRange(min=1),
              help="Image codecs (CLC): quality index of the shipped rate points, 1 (smallest) to 6.")
@click.option("--fso/--no-fso", "fso", default=None,
              help="PFNR: replace one stride-2 stage by the Fourier subneural operator (default: on where the "
                   "frame size has a stride-2 stage).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted encode from OUT.nnc.ckpt.")
@click.option("--checkpoint-interval", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Seconds between training checkpoints (OUT.nnc.ckpt, removed on success); 0 disables.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@media_options
@reports_errors
def encode(inputs, output, model, sizes, epochs, batch_size, lr, loss, weight_bits, embed_bits, quant_axis, prune,
           finetune_epochs, rate_lambda, workers, quality, fso, seed, device, resume,
           checkpoint_interval, quiet,
           pix_fmt, fps, color_matrix, color_range, max_frames):
    """Fit a neural representation to INPUTS and write it as a .nnc file.

    Video codecs take one video; ``--model pfnr`` takes several (one session each);
    image codecs (``--model clc``) take one image.
    """
    from ..codec.api import check_output_path, encode_video
    from ..codec.base import EncodeOptions
    from ..codec.registry import get_codec
    from ..media import describe_colour

    codec_class = get_codec(model)  # fail on a typo, or an output that cannot be written, before reading
    kind = getattr(codec_class, "kind", "video")  # "video", "video-set" (PFNR) or "image" (CLC)
    check_output_path(output)
    if kind != "video-set" and len(inputs) != 1:
        raise NncError(f"--model {model} encodes one input; got {len(inputs)} (several videos need --model pfnr)")
    # `kill` (SIGTERM) gets the same treatment as Ctrl-C: save a checkpoint, then exit.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    frame_size, model_size = parse_sizes(sizes)
    options = EncodeOptions(
        size=model_size, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, seed=seed, device=device,
        weight_bits=weight_bits, embed_bits=embed_bits, quant_axis=quant_axis, prune=prune,
        finetune_epochs=finetune_epochs, show_progress=not quiet,
        checkpoint_interval=checkpoint_interval, resume=resume,
        rate_lambda=rate_lambda, workers=workers, quality=quality, fso=fso,
    )
    if kind == "image":
        from .image import encode_image_command

        encode_image_command(inputs[0], output, model, options, quiet=quiet)
        return
    if kind == "video-set":
        from .video_set import encode_video_set_command

        encode_video_set_command(
            inputs, output, model, options, quiet=quiet,
            read=lambda path: read_input(path, frame_size, pix_fmt, fps, color_matrix, color_range, max_frames),
        )
        return
    input = inputs[0]
    video = read_input(input, frame_size, pix_fmt, fps, color_matrix, color_range, max_frames)
    info = video.info
    if not quiet:
        click.echo(
            f"{input}: {info.width}x{info.height}, {info.num_frames} frames @ {float(info.fps):.3f} fps, "
            f"{info.pix_fmt}, colour {describe_colour(info, overridden=bool(color_matrix or color_range))}",
            err=True,
        )
    report = encode_video(video, output, model, options)
    click.echo(
        f"wrote {report.path}: {report.file_bytes} bytes, {report.bpp:.4f} bpp, "
        f"PSNR {report.psnr:.2f} dB (RGB, after quantization), "
        f"{report.stats.get('model_size', 0) / 1e6:.3f}M parameters, {report.encode_seconds:.1f} s"
    )


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
              help="Multi-video (PFNR) files: which video to decode, counted from 0.")
@reports_errors
def decode(input, output, format_, crf, device, batch_size, frame_range, video_index):
    """Decode a .nnc file into a video (or, for image codecs, an image)."""
    from ..codec.api import decode_file

    info, seconds = decode_file(input, output, format=format_, crf=crf, device=device, batch_size=batch_size,
                                frame_range=parse_frame_range(frame_range), video_index=video_index)
    click.echo(
        f"wrote {output}: {info.width}x{info.height}, {info.num_frames} frames, {info.pix_fmt}, "
        f"{seconds:.1f} s ({info.num_frames / max(seconds, 1e-9):.1f} frames/s)"
    )


@main.command()
@click.argument("set_path", metavar="SET", type=click.Path(path_type=Path))
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--size", "sizes", multiple=True, help="WxH, the frame size of raw .yuv input.")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs of the new session (default 150).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Frames per training step (default 1).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default 5e-4).")
@click.option("--loss", type=click.Choice(["l2", "fusion6"]), help="Training loss (default fusion6).")
@click.option("--weight-bits", type=click.IntRange(2, 16), help="Quantization bits of the new weights (default 8).")
@click.option("--prune", "prune", type=click.FloatRange(0.05, 0.95), metavar="FRACTION_LEFT_OUT",
              help="Fraction of each layer the new session's mask leaves out (default 0.5).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@media_options
@reports_errors
def append(set_path, input, sizes, epochs, batch_size, lr, loss, weight_bits, prune, seed, device, quiet,
           pix_fmt, fps, color_matrix, color_range, max_frames):
    """Learn INPUT into the multi-video (PFNR) file SET as one more video.

    Earlier videos keep decoding to identical frames; their bytes are copied unchanged
    and SET is replaced atomically."""
    from ..codec.base import EncodeOptions
    from .video_set import append_video_command

    frame_size, model_size = parse_sizes(sizes)
    if model_size is not None:
        raise NncError("append: the set's model size is fixed by its first encode; --size here is WxH of raw input")
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    options = EncodeOptions(epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, weight_bits=weight_bits,
                            prune=prune, seed=seed, device=device, show_progress=not quiet, checkpoint_interval=0)
    append_video_command(
        set_path, input, options, quiet=quiet,
        read=lambda path: read_input(path, frame_size, pix_fmt, fps, color_matrix, color_range, max_frames),
    )


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def info(input, as_json):
    """Show a .nnc file's header, chunks and where its bytes go."""
    from .info import describe_file

    description = describe_file(input)
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
        f"(Y {r['psnr-y']:.2f} U {r['psnr-u']:.2f} V {r['psnr-v']:.2f})\n"
        f"  MS-SSIM-RGB {ms}   bpp {r['bpp']:.5f} ({r['bytes']} bytes)"
    )


main.add_command(report_command)
main.add_command(train_command)

if __name__ == "__main__":
    main()
