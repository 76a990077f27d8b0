"""``nnc report``: rate-distortion evaluation of nnc models against classical codecs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ..units import plural
from .errors import reports_errors


@click.command()
@click.option("--dataset", required=True,
              help="uvg (official raw files under --root), bunny-cpu, or a clip, an image, or a folder of them.")
@click.option("--root", type=click.Path(path_type=Path), help="Folder of the dataset (UVG's .yuv files).")
@click.option("--codecs", required=True,
              help="Comma-separated: nnc models (hnerv, nerv, nervpp, ...), x264[-PRESET], x265[-PRESET], "
                   "svtav1[-pN], jpeg, webp. x264/x265 mean preset medium, svtav1 preset 8.")
@click.option("--rates", multiple=True, metavar="CODEC=[KIND:]V1,V2",
              help="Rate points per codec (repeatable): x265=22,27,32,37 (CRF), jpeg=30,60,90 (quality), "
                   "hnerv=100k,375k (model size), nirvana=lambda:0.001,0.0003, clc=quality:1,3,6. "
                   "Defaults: CRF 22,27,32,37 (x264/x265), 27,35,43,51 (SVT-AV1); quality 20,40,60,80,95 "
                   "(jpeg/webp); sizes 100k,375k (nnc models).")
@click.option("--frames", type=click.IntRange(min=1), help="Use the first N frames of each video.")
@click.option("--crop", metavar="WxH",
              help="Centre crop, width first as --video-size and ffmpeg (HNeRV's UVG protocol: 1920x960).")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs of nnc models (default: the model's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Device of the nnc models' jobs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--anchor", default="x265-medium", show_default=True, help="The codec BD-rates are measured against.")
@click.option("--jobs", "jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Jobs run at once (local process pool).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads per job (default: cores / --jobs).")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", help="Ray cluster address (default: start a local Ray instance).")
@click.option("--overlay", "overlays", multiple=True, type=click.Path(path_type=Path),
              help="Published curves to draw dashed: CompressAI results JSON or uvg-results CSV (repeatable).")
@click.option("--bitstream", "bitstreams", multiple=True, metavar="[CURVE=]PATH",
              help="An existing .nnc file of the (single) input, decoded and measured as one point (repeatable); "
                   "files given the same CURVE name form one curve (BD-rates need 2 points or more).")
@click.option("--bpp-axis", type=click.Choice(["log", "linear"]), default="log", show_default=True,
              help="Scale of the plots' bpp axis.")
@click.option("--per-input-plots/--no-per-input-plots", default=True, show_default=True,
              help="Plots for every input besides the dataset average (the average is always drawn).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Report folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def report(dataset, root, codecs, rates, frames, crop, epochs, device, seed, anchor, jobs, threads, backend, address,
           overlays, bitstreams, bpp_axis, per_input_plots, output, quiet):
    """Run every (input, codec, rate point); write results JSON, summary.csv, BD tables, RD plots, index.html.

    Finished jobs are cached in OUTPUT/cache: re-running the same command (or an extended
    one) only runs the missing jobs. A failed job is reported and the report is built
    from the others.
    """
    from ..eval.datasets import parse_crop
    from ..eval.report import ReportSettings, run_report

    settings = ReportSettings(
        dataset=dataset, root=root, output=output, codecs=[c.strip() for c in codecs.split(",") if c.strip()],
        rates=list(rates), frames=frames, crop=parse_crop(crop), epochs=epochs, device=device, seed=seed,
        anchor=anchor, jobs=jobs, threads=threads, backend=backend, address=address, overlays=list(overlays),
        bitstreams=list(bitstreams), bpp_axis=bpp_axis, per_input_plots=per_input_plots,
        progress=not quiet, command="nnc " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    try:
        outcome = run_report(settings)
    except KeyboardInterrupt:
        click.echo(f"nnc: interrupted; finished jobs are cached in {output / 'cache'}: the same command runs only "
                   "the missing ones", err=True)
        sys.exit(130)
    for line in outcome.skipped:
        click.echo(f"nnc: skipped {line}", err=True)
    click.echo(f"wrote {outcome.output / 'index.html'}: {plural(outcome.jobs_total, 'job')} "
               f"({outcome.jobs_cached} cached, "
               f"{outcome.jobs_run} run, {len(outcome.failed)} failed)")
    if outcome.failed:
        click.echo(f"nnc: {len(outcome.failed)} of {plural(outcome.jobs_total, 'job')} failed (listed above and in "
                   "index.html); the report was built from the rest", err=True)
        sys.exit(1)
