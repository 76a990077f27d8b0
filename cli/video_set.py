"""``nnc encode A B C --model pfnr`` and ``nnc append SET.nnc D``: multi-video (PFNR) sets."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from ..errors import NncError


def _describe_input(path: Path, video) -> str:
    info = video.info
    return f"{path}: {info.width}x{info.height}, {info.num_frames} frames @ {float(info.fps):.3f} fps, {info.pix_fmt}"


def _print_report(report, verb: str) -> None:
    for video in report.videos:
        click.echo(
            f"  video {video['video']}: {video['name']}, {video['frames']} frames, PSNR {video['psnr']:.2f} dB "
            f"(RGB, after quantization), its session {video['group_bytes']} bytes ({video['group_bpp']:.4f} bpp)"
        )
    click.echo(f"{verb} {report.path}: {report.file_bytes} bytes in all, {report.encode_seconds:.1f} s")


def encode_video_set_command(inputs, output, model: str, options, *, quiet: bool, read: Callable) -> None:
    """Read every input first (a bad one fails before any training), then learn them in order."""
    from ..codec.video_set_api import encode_video_set

    videos = []
    for path in inputs:
        video = read(path)
        if not quiet:
            click.echo(_describe_input(path, video), err=True)
        videos.append((str(path), video))
    if model != "pfnr":
        raise NncError(f"--model {model} is not a multi-video codec")
    report = encode_video_set(videos, output, options)
    _print_report(report, "wrote")


def append_video_command(set_path: Path, input: Path, options, *, quiet: bool, read: Callable) -> None:
    from ..codec.video_set_api import append_to_set, open_set

    open_set(set_path)  # a wrong or unwritable SET fails before the input is read
    video = read(input)
    if not quiet:
        click.echo(_describe_input(input, video), err=True)
    report = append_to_set(set_path, video, options, name=str(input))
    _print_report(report, "appended to")
