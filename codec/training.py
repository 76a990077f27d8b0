"""Fitting an implicit neural representation to frames: the one training loop.

Every INR codec (HNeRV, NeRV, NeRV++, PFNR, NIRVANA) trains through :func:`fit`.  The
codec provides its forward pass (``forward(indices, target)``: the reconstruction of
those frames, optionally with a dict of extras for its hooks), the parameters to
optimise and its hooks (:mod:`nnc.codec.training_hooks`); this module owns the
optimiser, the learning-rate schedule (:mod:`nnc.codec.schedule`), the reconstruction
loss, batching, the data order, checkpoints (:mod:`nnc.codec.checkpoint`) and progress
(:mod:`nnc.codec.progress`).

A recipe is a sequence of phases, each one ``fit`` call: HNeRV has one (``train``);
NeRV and NeRV++ ``train`` then ``finetune`` with a :class:`KeepPruned` hook; PFNR's
sessions train with :class:`KeepFrozen`; NIRVANA trains each group of frames
(``shuffle=False``, the whole group per step) quantization-aware, with a
:class:`RateTerm`.  Hook objects may be shared by several runs (a time budget over
every phase and group).
"""

from __future__ import annotations

import ctypes
import math
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NncError
from .base import frames_to_float
from .checkpoint import CheckpointPolicy, load_checkpoint, save_checkpoint
from .progress import ProgressBar
from .schedule import lr_multiplier
from .training_hooks import Step, TrainingHook, TrainingRun

__all__ = ["LOSSES", "TrainSettings", "fit", "lr_multiplier", "psnr_from_mse", "reconstruction_loss", "tune_malloc"]

LOSSES = ("l2", "fusion6")
PROGRESS_EVERY = 10  # steps between updates of the progress text (each costs a few host syncs)


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
    description: str = "encoding"  # the progress bar's title (when the loop makes its own bar)
    phase: str = "train"  # name of this phase of the recipe (train, finetune, qat)
    progress_label: str = ""  # prefix of the progress text (e.g. NIRVANA's "group 3")


class Progress(Protocol):
    def advance(self, count: int = 1, text: str | None = None) -> None: ...


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


class _DeferredInterrupts:
    """Within the block, signals that raise KeyboardInterrupt (Ctrl-C; the CLI's SIGTERM)
    wait until the block ends, then act as they would have.

    The block is an optimiser step and its bookkeeping: interrupted there, the weights
    would be ahead of the recorded position and the checkpoint saved on the way out
    would not resume exactly.  Only Python-level handlers can be deferred; signals are
    only handled in the main thread (elsewhere this does nothing)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> "_DeferredInterrupts":
        self.pending: list[int] = []
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                handler = signal.getsignal(number)
                if callable(handler):
                    self.saved[number] = handler
                    signal.signal(number, self._record)
        return self

    def _record(self, number, frame) -> None:
        self.pending.append(number)

    def __exit__(self, *exc) -> None:
        for number, handler in self.saved.items():
            signal.signal(number, handler)
        for number in self.pending:
            self.saved[number](number, None)  # e.g. raises KeyboardInterrupt now


def _progress_text(settings: TrainSettings, epoch: int, loss: float, mse: float, metrics: dict) -> str:
    text = f"epoch {epoch + 1}/{settings.epochs} loss {loss:.4f} psnr {psnr_from_mse(mse):.2f}"
    text += "".join(f" {name} {float(value):.4f}" for name, value in metrics.items())
    return f"{settings.progress_label} {text}" if settings.progress_label else text


def fit(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | tuple[torch.Tensor, dict]],
    module: torch.nn.Module,
    frames: np.ndarray,
    max_value: int,
    settings: TrainSettings,
    device: torch.device,
    checkpoint: CheckpointPolicy | None = None,
    hooks: Sequence[TrainingHook] = (),
    *,
    param_groups: list[dict] | None = None,
    shuffle: bool = True,
    progress: Progress | None = None,
) -> dict:
    """Optimise ``module`` so that ``forward`` reproduces ``frames``; one phase of a recipe.

    ``frames`` (T, H, W, 3) stay in their integer dtype; each batch is converted to
    float on the device, so memory holds one integer copy of the clip (on the GPU, the
    clip is copied there once: it is small next to the activations).  Every epoch visits
    the frames in batches of ``settings.batch_size``, in a seeded random order
    (``shuffle``) or in order.  The learning rate of every parameter group (default:
    all of ``module``'s parameters at ``settings.lr``; ``param_groups`` gives Adam's
    groups, each with its own base ``lr``) follows warm-up then cosine over the phase.

    The loss is ``reconstruction_loss`` plus every hook's ``loss_term``; hooks also run
    after each step and may end the run early (see :mod:`nnc.codec.training_hooks`).

    With a ``checkpoint`` policy the full training state (module, optimiser, data order,
    position, hooks' state) is saved every ``interval_seconds`` and when interrupted,
    and restored when resuming: a resumed run ends exactly where an uninterrupted one
    would.  ``progress`` receives the steps (default: a bar of its own on stderr).
    """
    if settings.epochs < 1 or settings.batch_size < 1:
        raise NncError("epochs and batch size must be at least 1")
    if device.type == "cpu":
        tune_malloc()
    num_frames = frames.shape[0]
    source = torch.from_numpy(frames)
    if device.type == "cuda":
        source = source.to(device)
    optimizer = torch.optim.Adam(
        param_groups if param_groups is not None else module.parameters(), lr=settings.lr, betas=settings.betas,
    )
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    generator = torch.Generator().manual_seed(settings.seed)
    batches_per_epoch = math.ceil(num_frames / settings.batch_size)
    requested_epochs = settings.epochs
    total_steps = settings.epochs * batches_per_epoch
    first_epoch = first_batch = 0
    epoch_loss = epoch_mse = 0.0
    run = TrainingRun(settings.phase, total_steps)
    saved = load_checkpoint(checkpoint) if checkpoint else None
    if saved is not None:
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["epoch_generator_state"])
        run.step, first_epoch, first_batch = int(saved["step"]), int(saved["epoch"]), int(saved["batch"])
        epoch_loss, epoch_mse = float(saved["epoch_loss"]), float(saved["epoch_mse"])
        run.earlier_seconds = float(saved["trained_seconds"])
        for hook, state in zip(hooks, saved.get("hooks", [])):
            hook.load_state_dict(state)
    # A planning hook (a time budget's plan) may set this run's length: the schedule
    # below is laid over the planned steps.  Restored hook state gives a resumed run
    # the plan it started with.
    for hook in hooks:
        settings = replace(settings, epochs=max(1, int(hook.phase_epochs(settings.phase, settings.epochs))))
    total_steps = run.total_steps = settings.epochs * batches_per_epoch
    epoch_frames = min(first_batch * settings.batch_size, num_frames)  # frames in epoch_loss so far
    own_bar = progress is None
    if own_bar:
        progress = ProgressBar(total_steps, settings.description, enabled=settings.show_progress, initial=run.step)
    position = {}

    def save() -> None:
        save_checkpoint(checkpoint, {
            "module": module.state_dict(), "optimizer": optimizer.state_dict(), "step": run.step,
            "trained_seconds": run.seconds, "hooks": [hook.state_dict() for hook in hooks], **position,
        })

    for hook in hooks:
        hook.start(run)
    stopped = False
    consistent = True  # the weights are those of the recorded position
    last_mse = last_loss = float("nan")
    run.started = last_saved = time.perf_counter()
    try:
        epoch = first_epoch
        while epoch < settings.epochs:
            epoch_generator_state = generator.get_state()
            order = torch.randperm(num_frames, generator=generator) if shuffle else torch.arange(num_frames)
            if epoch != first_epoch or saved is None:
                epoch_loss = epoch_mse = 0.0
                epoch_frames = 0
            start_batch = first_batch if epoch == first_epoch else 0
            for batch in range(start_batch, batches_per_epoch):
                indices = order[batch * settings.batch_size : (batch + 1) * settings.batch_size]
                factor = lr_multiplier(run.step / total_steps, settings.warmup_fraction, settings.warmup_start)
                for group, base_lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base_lr * factor
                target = frames_to_float(source[indices.to(source.device)], max_value).to(device)
                result = forward(indices, target)
                output, extras = result if isinstance(result, tuple) else (result, {})
                step = Step(run, epoch, indices, target, output, extras)
                distortion = reconstruction_loss(output, target, settings.loss)
                loss = distortion
                for hook in hooks:
                    term = hook.loss_term(step)
                    if term is not None:
                        loss = loss + term
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # From the optimiser step until ``position`` records it, the weights are
                # ahead of the position: no checkpoint may be saved in between.
                consistent = False
                with _DeferredInterrupts():
                    optimizer.step()
                    for hook in hooks:
                        hook.after_step(step)
                    if settings.loss == "l2":  # the loss is the MSE already
                        last_mse = distortion.item()
                    else:
                        with torch.no_grad():
                            last_mse = F.mse_loss(output, target).item()
                    last_loss = loss.item()
                    epoch_loss += last_loss * len(indices)
                    epoch_mse += last_mse * len(indices)
                    epoch_frames += len(indices)
                    run.step += 1
                    # where a resumed run must pick up: the next batch of this epoch's order
                    position = {"epoch": epoch, "batch": batch + 1, "epoch_generator_state": epoch_generator_state,
                                "epoch_loss": epoch_loss, "epoch_mse": epoch_mse}
                    if batch + 1 == batches_per_epoch:
                        position.update(epoch=epoch + 1, batch=0, epoch_generator_state=generator.get_state(),
                                        epoch_loss=0.0, epoch_mse=0.0)
                    consistent = True
                text = None
                if run.step % PROGRESS_EVERY == 0 or run.step == total_steps:
                    text = _progress_text(settings, epoch, last_loss, last_mse, step.metrics)
                progress.advance(1, text)
                if checkpoint and time.perf_counter() - last_saved >= checkpoint.interval_seconds:
                    save()
                    last_saved = time.perf_counter()
                for hook in hooks:
                    revised = max(int(hook.revise_epochs(run, settings.epochs, requested_epochs)), epoch + 1)
                    if revised != settings.epochs:
                        settings = replace(settings, epochs=revised)
                        total_steps = run.total_steps = revised * batches_per_epoch
                        if own_bar:
                            progress.set_total(total_steps)
                if any(hook.should_stop(run) for hook in hooks):
                    stopped = run.step < total_steps
                    break
            if stopped:
                break
            epoch += 1
    except KeyboardInterrupt:
        if checkpoint and position and consistent:
            save()  # so that --resume loses nothing
        raise
    finally:
        if own_bar:
            progress.close()
    for hook in hooks:
        hook.finish(run)
    elapsed = run.seconds
    frames_trained = settings.epochs * num_frames * run.step / total_steps
    return {
        "train_loss": epoch_loss / max(epoch_frames, 1),
        "train_psnr": psnr_from_mse(epoch_mse / max(epoch_frames, 1)),  # from the last epoch's batches
        "train_seconds": elapsed,
        "train_frames_per_second": frames_trained / elapsed,
        "resumed_at_step": int(saved["step"]) if saved is not None else None,
        "iterations": run.step,
        "planned_iterations": total_steps,
        "stopped_early": stopped,
        "last_loss": last_loss,
        "last_mse": last_mse,
        "phase": settings.phase,
    }
