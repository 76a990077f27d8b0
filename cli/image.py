"""``nnc encode IMAGE --model clc``: the image branch of the encode command."""

from __future__ import annotations

import click


def encode_image_command(input_path, output, model, options, *, quiet: bool = False) -> None:
    from ..codec.image_api import encode_image
    from ..codec.registry import get_codec
    from ..media.image import read_image

    codec = get_codec(model)()
    if hasattr(codec, "check_options"):
        codec.check_options(options)
    image = read_image(input_path)
    if not quiet:
        click.echo(f"{input_path}: {image.shape[1]}x{image.shape[0]} RGB image", err=True)
    report = encode_image(image, output, model, options)
    quality = report.settings.get("quality")
    click.echo(
        f"wrote {report.path}: {report.file_bytes} bytes, {report.bpp:.4f} bpp, "
        f"PSNR {report.psnr:.2f} dB (RGB, after decoding), quality {quality}, {report.encode_seconds:.1f} s"
    )
