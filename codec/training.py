"""Fitting an implicit neural representation to a clip: the shared training loop.

Codecs provide a ``reconstruct(indices, targets)`` closure (their forward pass) and the
parameters to optimise; this module owns the optimiser, the learning-rate schedule,
the loss, batching, seeding and the progress bar.
"""

from __future__ import annotations

import ctypes
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import NncError
from .base import frames_to_float
from .checkpoint import CheckpointPolicy, load_checkpoint, save_checkpoint

LOSSES = ("l2", "fusion6")


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    loss: str = "l2"
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_fraction: float = 0.1  # HNeRV: 10% linear warm-up ...
    warmup_start: float = 0.1  # ... from 0.1 * lr, then cosine to 0, per iteration
    seed: int = 0
    show_progress: bool = True
    description: str = "encoding"


def lr_multiplier(progress: float, warmup_fraction: float, warmup_start: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1) of the whole run."""
    if progress < warmup_fraction:
        return warmup_start + (1.0 - warmup_start) * progress / warmup_fraction
    remaining = (progress - warmup_fraction) / max(1e-12, 1.0 - warmup_fraction)
    return 0.5 * (math.cos(math.pi * remaining) + 1.0)


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l2":
        return F.mse_loss(output, target)
    if kind == "fusion6":  # NeRV's "Fusion6": 0.7 L1 + 0.3 (1 - SSIM)
        from pytorch_msssim import ssim

        window = min(11, min(output.shape[-2:]) // 2 * 2 - 1)
        if window < 3:
            return F.l1_loss(output, target)
        similarity = ssim(output, target, data_range=1.0, size_average=True, win_size=window)
        return 0.7 * F.l1_loss(output, target) + 0.3 * (1.0 - similarity)
    raise NncError(f"unknown loss {kind!r} (use {' or '.join(LOSSES)})")


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def tune_malloc() -> None:
    """Keep glibc from returning and re-faulting freed memory between iterations.

    CPU training allocates and frees the same large activation buffers every step;
    with glibc's defaults each free trims the heap or unmaps the block, and the next
    step page-faults it back in.  Raising the thresholds made training 1.25-1.9x faster
    on our 2-core test machine.  Same effect as the MALLOC_*_ environment variables,
    applied at run time.  A no-op where glibc is not the allocator.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    # mallopt caps M_MMAP_THRESHOLD at 32 MiB, below our activation sizes; serving every
    # block from the heap (no mmap) has the effect of the 4 GiB threshold we measured.
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    mallopt(M_TOP_PAD, 1 << 30)


def fit(
    reconstruct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    module: torch.nn.Module,
    frames: np.ndarray,
    max_value: int,
    settings: TrainSettings,
    device: torch.device,
    checkpoint: CheckpointPolicy | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict:
    """Optimise ``module`` so that ``reconstruct`` reproduces ``frames``.

    ``frames`` (T, H, W, 3) stay in their integer dtype; each batch is converted to
    float on the device, so memory holds one integer copy of the clip (on the GPU, the
    clip is copied there once: it is small next to the activations).

    With a ``checkpoint`` policy the full training state is saved every
    ``interval_seconds`` (and when interrupted), and restored when resuming: the data
    order, schedule and optimiser continue exactly where they stopped, so a resumed
    encode ends where an uninterrupted one would.

    ``after_step``, when given, runs after every optimiser step (e.g. to re-apply
    pruning masks, so pruned weights stay exactly zero while the rest fine-tune).
    """
    if settings.epochs < 1 or settings.batch_size < 1:
        raise NncError("epochs and batch size must be at least 1")
    if device.type == "cpu":
        tune_malloc()
    num_frames = frames.shape[0]
    source = torch.from_numpy(frames)
    if device.type == "cuda":
        source = source.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, betas=settings.betas)
    generator = torch.Generator().manual_seed(settings.seed)
    batches_per_epoch = math.ceil(num_frames / settings.batch_size)
    total_steps = settings.epochs * batches_per_epoch
    step = first_epoch = first_batch = 0
    epoch_loss = epoch_mse = 0.0
    trained_seconds = 0.0  # training time of earlier runs when resuming
    saved = load_checkpoint(checkpoint) if checkpoint else None
    if saved is not None:
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["epoch_generator_state"])
        step, first_epoch, first_batch = int(saved["step"]), int(saved["epoch"]), int(saved["batch"])
        epoch_loss, epoch_mse = float(saved["epoch_loss"]), float(saved["epoch_mse"])
        trained_seconds = float(saved["trained_seconds"])
    bar = tqdm(
        total=total_steps, initial=step, desc=settings.description, unit="it", file=sys.stderr,
        disable=not settings.show_progress, dynamic_ncols=True, leave=True,
    )
    started = last_saved = time.perf_counter()
    position = {}

    def save() -> None:
        save_checkpoint(checkpoint, {
            "module": module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "trained_seconds": trained_seconds + time.perf_counter() - started, **position,
        })

    try:
        for epoch in range(first_epoch, settings.epochs):
            epoch_generator_state = generator.get_state()
            order = torch.randperm(num_frames, generator=generator)
            if epoch != first_epoch or saved is None:
                epoch_loss = epoch_mse = 0.0
            start_batch = first_batch if epoch == first_epoch else 0
            for batch in range(start_batch, batches_per_epoch):
                indices = order[batch * settings.batch_size : (batch + 1) * settings.batch_size]
                for group in optimizer.param_groups:
                    group["lr"] = settings.lr * lr_multiplier(
                        step / total_steps, settings.warmup_fraction, settings.warmup_start
                    )
                target = frames_to_float(source[indices.to(source.device)], max_value).to(device)
                output = reconstruct(indices, target)
                loss = reconstruction_loss(output, target, settings.loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step()
                with torch.no_grad():
                    mse = F.mse_loss(output, target).item()
                epoch_loss += loss.item() * len(indices)
                epoch_mse += mse * len(indices)
                step += 1
                # where a resumed run must pick up: the next batch of this epoch's order
                position = {"epoch": epoch, "batch": batch + 1, "epoch_generator_state": epoch_generator_state,
                            "epoch_loss": epoch_loss, "epoch_mse": epoch_mse}
                if batch + 1 == batches_per_epoch:
                    position.update(epoch=epoch + 1, batch=0, epoch_generator_state=generator.get_state(),
                                    epoch_loss=0.0, epoch_mse=0.0)
                bar.update(1)
                if step % 10 == 0 or step == total_steps:
                    bar.set_postfix_str(
                        f"epoch {epoch + 1}/{settings.epochs} loss {loss.item():.4f} psnr {psnr_from_mse(mse):.2f}"
                    )
                if checkpoint and time.perf_counter() - last_saved >= checkpoint.interval_seconds:
                    save()
                    last_saved = time.perf_counter()
    except KeyboardInterrupt:
        if checkpoint and position:
            save()  # so that --resume loses nothing
        raise
    finally:
        bar.close()
    elapsed = trained_seconds + time.perf_counter() - started
    return {
        "train_loss": epoch_loss / num_frames,
        "train_psnr": psnr_from_mse(epoch_mse / num_frames),  # from the last epoch's batches
        "train_seconds": elapsed,
        "train_frames_per_second": settings.epochs * num_frames / elapsed,
        "resumed_at_step": int(saved["step"]) if saved is not None else None,
        "iterations": total_steps,
    }
