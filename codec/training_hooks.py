"""Extension points of the training loop (:func:`nnc.codec.training.fit`).

A hook is an object with any of these methods; the loop calls them in list order:

* ``start(run)`` once before the first step of a run, ``finish(run)`` after its last;
* ``loss_term(step)`` after the reconstruction loss: a tensor added to the loss (rate
  terms: NIRVANA's estimated bits today, rate-distortion training for every codec later),
  or None;
* ``after_step(step)`` after every optimiser step (parameter constraints: pruning masks
  that keep pruned weights at zero, frozen weights of earlier PFNR sessions);
* ``should_stop(run)`` after every step: True ends the run early, with a model as usable
  as after the last planned step (time budgets, stop conditions);
* ``state_dict()`` / ``load_state_dict(state)``: what the hook must carry through a
  checkpoint (tensors, numbers and plain containers only);
* ``phase_epochs(phase, requested)`` before a run starts and ``revise_epochs(run, epochs,
  requested)`` after every step: the run's planned number of epochs (a time budget's
  plan, :mod:`nnc.codec.planning`); the schedule is laid over the planned length.

Checkpointing and progress are built into the loop (they must know its position);
CLC's own training loop uses the same checkpoint and progress modules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch


@dataclass
class TrainingRun:
    """Where a run of the loop stands (one phase: ``train``, ``finetune``, ``qat``...)."""

    phase: str
    total_steps: int
    step: int = 0  # optimiser steps done, earlier (resumed) runs included
    earlier_seconds: float = 0.0  # training time of earlier runs of this phase (resume)
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        """Training time of this phase so far, resumed runs included."""
        return self.earlier_seconds + time.perf_counter() - self.started


@dataclass
class Step:
    """One optimiser step as the hooks see it."""

    run: TrainingRun
    epoch: int
    indices: torch.Tensor  # frame indices of the batch
    target: torch.Tensor  # (N, 3, H, W) in [0, 1]
    output: torch.Tensor
    extras: dict  # what the forward returned beside the output (e.g. NIRVANA's latents)
    metrics: dict = field(default_factory=dict)  # name -> 0-d tensor or number, shown in the progress text


class TrainingHook:
    """Base class with every extension point a no-op (subclass and override some)."""

    def start(self, run: TrainingRun) -> None:
        pass

    def loss_term(self, step: Step) -> torch.Tensor | None:
        return None

    def after_step(self, step: Step) -> None:
        pass

    def should_stop(self, run: TrainingRun) -> bool:
        return False

    def finish(self, run: TrainingRun) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def phase_epochs(self, phase: str, requested: int) -> int:
        return requested

    def revise_epochs(self, run: TrainingRun, epochs: int, requested: int) -> int:
        return epochs


class RateTerm(TrainingHook):
    """``rate_lambda * bits / pixels`` added to the loss: a rate-distortion objective in
    bits per pixel.  ``bits(step)`` is a differentiable estimate of what the stored
    tensors will cost (e.g. a learned density over NIRVANA's integer latents)."""

    def __init__(self, bits: Callable[[Step], torch.Tensor], rate_lambda: float, pixels: int):
        self.bits, self.rate_lambda, self.pixels = bits, rate_lambda, pixels
        self.last_bits: torch.Tensor | None = None  # the estimate of the latest step

    def loss_term(self, step: Step) -> torch.Tensor:
        bits = self.bits(step)
        self.last_bits = bits.detach()
        step.metrics["bpp"] = self.last_bits / self.pixels
        return self.rate_lambda * bits / self.pixels


class KeepPruned(TrainingHook):
    """Pruned weights stay exactly zero while the others fine-tune: after every step each
    parameter is multiplied by its 0/1 mask.  ``pairs()`` gives (parameter, mask)."""

    def __init__(self, pairs: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]):
        self.pairs = pairs

    @torch.no_grad()
    def after_step(self, step: Step) -> None:
        for param, mask in self.pairs():
            param.mul_(mask)


class KeepFrozen(TrainingHook):
    """Frozen weights keep their values exactly (PFNR: weights earlier sessions use).
    Adam leaves zero-gradient weights alone; restoring them makes it certain.
    ``entries`` are (parameter, boolean mask, values at the mask)."""

    def __init__(self, entries: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
        self.entries = list(entries)

    @torch.no_grad()
    def after_step(self, step: Step) -> None:
        for param, mask, values in self.entries:
            param[mask] = values


class StopWhen(TrainingHook):
    """Ends the run as soon as ``condition(run)`` is true (checked after every step)."""

    def __init__(self, condition: Callable[[TrainingRun], bool]):
        self.condition = condition

    def should_stop(self, run: TrainingRun) -> bool:
        return bool(self.condition(run))


class TimeBudget(TrainingHook):
    """Stops training once ``seconds`` of training time are spent, counted from the first
    step, across every run (phase, group) the same hook is passed to and across resumes
    (the time spent is part of the checkpoint).  At least one step runs per phase."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.spent = 0.0  # seconds of runs that finished

    def used(self, run: TrainingRun) -> float:
        return self.spent + run.seconds

    def should_stop(self, run: TrainingRun) -> bool:
        return self.used(run) >= self.seconds

    def finish(self, run: TrainingRun) -> None:
        self.spent += run.seconds

    def state_dict(self) -> dict:
        return {"spent": self.spent}

    def load_state_dict(self, state: dict) -> None:
        self.spent = float(state.get("spent", 0.0))
