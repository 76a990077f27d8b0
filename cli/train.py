"""``nnc train``: train the models that ship with nnc (the CLC image codec and its dictionary)."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from .errors import _raise_keyboard_interrupt, reports_errors


@click.group()
def train():
    """Train shipped models: the CLC image codec (`clc`) and its dictionary (`clc-dictionary`)."""


@train.command(name="clc")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Folder of training photographs.")
@click.option("--lambda", "rate_lambda", type=float, default=None,
              help="One rate point: loss = lambda * 255^2 * MSE + bpp (e.g. 0.0018 .. 0.0483).")
@click.option("--lambdas", "rate_lambdas", default=None,
              help="A variable-rate model: increasing lambdas, comma separated (quality i is the i-th).")
@click.option("--video", "videos", type=click.Path(path_type=Path), multiple=True,
              help="Also train on frames of this clip (repeatable).")
@click.option("--frames-per-video", type=click.IntRange(1), default=8, show_default=True,
              help="Frames sampled evenly from each --video.")
@click.option("--holdout", type=click.IntRange(0), default=0, show_default=True,
              help="Keep the last N photographs (by name) out of training and log their RD points.")
@click.option("--eval-interval", type=click.IntRange(1), default=250, show_default=True,
              help="Steps between evaluations of the held-back photographs.")
@click.option("--eval-crop", type=int, default=256, show_default=True,
              help="Centre crop of the held-back photographs that is evaluated (multiple of 64).")
@click.option("--steps", type=click.IntRange(1), required=True, help="Optimiser steps.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Weights file to write (.safetensors).")
@click.option("--init", type=click.Path(path_type=Path), default=None, help="Start from these weights (fine-tuning).")
@click.option("--no-conditioning", is_flag=True, help="Train the backbone without the dictionary reference (ablation).")
@click.option("--quality", type=click.IntRange(1, 16), default=None, help="Quality index recorded in the weights.")
@click.option("--crop", type=int, default=128, show_default=True, help="Training crop size (multiple of 64).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch (default: torch's choice).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--checkpoint-interval", type=float, default=300.0, show_default=True, help="Seconds between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.ckpt.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def train_clc_command(data, rate_lambda, rate_lambdas, videos, frames_per_video, holdout, eval_interval, eval_crop,
                      steps, output, init, no_conditioning, quality, crop, batch_size, lr, seed, threads, device,
                      checkpoint_interval, resume, quiet):
    """Train the CLC image codec (one rate point, or a variable-rate model) and write its
    weights (entropy tables updated)."""
    import torch

    from ..codec.base import resolve_device
    from ..codec.clc_training import train_clc

    from ..errors import NncError

    lambdas = None
    if rate_lambdas is not None:
        try:
            lambdas = [float(value) for value in rate_lambdas.split(",") if value.strip()]
        except ValueError:
            raise NncError(f"--lambdas {rate_lambdas!r}: expected comma-separated numbers") from None
        if len(lambdas) < 2:
            raise NncError("--lambdas needs at least two values (use --lambda for one rate)")
    if threads:
        torch.set_num_threads(threads)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # a kill saves a checkpoint like Ctrl-C
    meta = train_clc(data, output, rate_lambda=rate_lambda, steps=steps, conditioning=not no_conditioning,
                     init=init, crop=crop, batch_size=batch_size, lr=lr, seed=seed, device=resolve_device(device),
                     quality=quality, checkpoint_interval=checkpoint_interval, resume=resume, show_progress=not quiet,
                     rate_lambdas=lambdas, videos=list(videos), frames_per_video=frames_per_video, holdout=holdout,
                     eval_interval=eval_interval, eval_crop=eval_crop)
    click.echo(f"{output}: {steps} steps, train bpp {meta['final_train_bpp']}, "
               f"train PSNR {meta['final_train_psnr']} dB ({meta['train_seconds_this_run']} s)")


@train.command(name="clc-dictionary")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Folder of photographs (never the test set).")
@click.option("--weights", type=click.Path(path_type=Path), required=True,
              help="CLC weights whose analysis transform gives the retrieval features (ship them beside it).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Dictionary file to write.")
@click.option("--entries", type=click.IntRange(2, 4096), default=32, show_default=True)
@click.option("--crop", type=click.IntRange(64, 1024), default=256, show_default=True, help="Entry crop size (multiple of 64).")
@click.option("--pca-dim", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch.")
@click.option("--quiet", is_flag=True)
@reports_errors
def train_clc_dictionary_command(data, weights, output, entries, crop, pca_dim, seed, threads, quiet):
    """Build CLC's dictionary: pyramid-pooled features, PCA, k-means; entries are real crops."""
    import torch

    from ..codec.clc_training import train_clc_dictionary

    if threads:
        torch.set_num_threads(threads)
    meta = train_clc_dictionary(data, weights, output, entries=entries, crop=crop, pca_dim=pca_dim, seed=seed,
                                show_progress=not quiet)
    click.echo(f"{output}: {meta['entries']} entries of {crop}x{crop} from {meta['candidates']} crops, "
               f"PCA {meta['pca_dim']} dims ({meta['explained_variance']:.0%} of the variance), "
               f"sha256 {meta['sha256'][:16]}")
