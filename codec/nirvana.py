"""The NIRVANA video codec: per-group patch networks fitted autoregressively with
quantization-aware training and a learned rate term; and their decoding.

Encoding.  The frames are cut into groups of G (``models/nirvana.py`` has the network).
The groups are split into ``--workers`` contiguous chains; each chain is fitted in its
own process, group after group: the chain's first group starts from a fresh network,
every later group g starts from group g-1's quantized weights.  ``--time-budget`` and
``--dry-run`` plan each chain in its worker (:class:`~nnc.codec.planning.SchedulePlanner`
over the chain's groups, the whole budget from the chain's first step, since the chains
run side by side); the workers' planner lines reach the parent through the progress queue.  Every tensor (SIREN
weights and biases, upsampler convolutions and biases: everything the decoder needs)
is trained as ``step * round(latent)`` with straight-through rounding and a learned
per-tensor ``step`` (LSQ-style).  The loss is

    MSE(frames of the group) + lambda * estimated bits / pixels of the group,

so ``--lambda`` weighs bits per pixel against MSE on [0, 1] pixels (the authors' code
uses lambda 0.001 on their own bits estimate; here 0.001 bpp-units is likewise the
default).  The bits are estimated by one learned factorized density per tensor
(CompressAI's EntropyBottleneck, uniform-noise proxy) on what is actually stored: the
integer latents of a chain's first group, the differences from the previous group's
integer latents for the others.  Static content keeps the same integers, so it costs
almost nothing.

Bitstream.  One tensor group per frame group, ``group{g}``, holding for every
state-dict tensor of the network its integer symbols (latents, or latent differences)
with the ``step`` scheme: scale = the learned step (float32, in the file), offset 0.
The header holds the config and ``chains``, the first group of every chain.  To decode
group g the decoder sums the symbols from its chain's first group up to g: decoding a
frame range needs the groups from the start of the chain of its first frame up to its
last frame, and renders only the groups holding frames of the range.

Adaptive compute (the paper's adaptive networks: each group's network gets as much
fitting as its content needs).  A chain's first group trains its full 2 x ``--epochs``
steps and sets the chain's quality target, its final quantized training PSNR; every later
group (warm-started from its predecessor) stops as soon as its quantized training PSNR
reaches that target (after at least ``MIN_ADAPTIVE_FRACTION`` of its steps), else at
``--epochs`` steps: static groups take a few steps and change few weights, busy ones
train to the limit.  Off by default (``--adaptive-steps`` turns it on): in the one measurement so far it
cost 1.4 dB for 15% fewer bytes.

Independent patches.  New files set the config's ``independent_patches``: every patch
renders from its own coordinate alone (``models/nirvana.py``), so
:func:`decode_region` renders only the patches covering a region of the frame.

Determinism.  A group is always rendered whole (one forward pass for its G frames), so
``--batch-size`` only regroups the output and decoded pixels never depend on it; the
encoder renders its quantized reconstruction with exactly the decoder's operations, so
``decode`` reproduces it bit for bit (``stats['quantized_frames_sha256']``).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import queue as queue_module
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call

from ..bitstream import QuantizedTensor, TensorGroup
from ..errors import InvalidBitstreamError, NncError
from ..metrics import mean_psnr, psnr_per_frame
from ..models.nirvana import NIRVANAConfig, NIRVANAGroupNet, parameter_count, patch_centres, scaled_config, solve_config
from .base import Codec, CompressedVideo, VideoCodecOptions, float_to_frames, option, resolve_device
from .progress import ProgressBar
from .registry import register_codec
from .planning import (Phase, PlanOnly, Recipe, SchedulePlanner, format_duration, log_line, make_planner,
                       parse_duration, video_recipe)
from .training import Progress, TrainSettings, fit, psnr_from_mse, tune_malloc
from .training_hooks import RateTerm, TrainingHook
from ..units import plural

GROUP_PREFIX = "group"
# ``epochs`` counts optimiser steps per group (each step renders all G frames of the
# group); a chain's first group starts from random weights and gets INTRA_FACTOR times
# as many (NIRVANA trains its first group longer than the warm-started ones).
INTRA_FACTOR = 2
SIREN_LR_FACTOR = 0.1
STEP_LR_FACTOR = 1.0  # learning rate of the log-steps relative to the weights'
RATE_LR = 1e-2  # the densities' parameters (CompressAI's EntropyBottleneck)
INIT_BITS = 8  # a fresh tensor's first step spans its range in 2**8 levels
WARMUP_FRACTION, WARMUP_START = 0.1, 0.1
# Adaptive compute: a warm-started group may stop once it reaches the chain's target
# PSNR, but not before this fraction of its steps (the warm-up and a few steps after it).
MIN_ADAPTIVE_FRACTION = 0.2
MAX_LATENT = 2**31 - 1


def group_name(index: int) -> str:
    return f"{GROUP_PREFIX}{index}"


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


class QuantizedWeights(nn.Module):
    """A network's tensors as ``step * round(value / step)``, values and log-steps learned."""

    def __init__(self, values: dict[str, torch.Tensor], log_steps: torch.Tensor):
        super().__init__()
        self.names = list(values)
        self.values = nn.ParameterList(nn.Parameter(values[name].detach().clone()) for name in self.names)
        self.log_steps = nn.Parameter(log_steps.detach().clone())

    def steps(self) -> torch.Tensor:
        return self.log_steps.exp()

    def latents(self) -> list[torch.Tensor]:
        steps = self.steps()
        return [value / steps[i] for i, value in enumerate(self.values)]

    def weights(self, latents: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        steps = self.steps()
        return {name: ste_round(latent) * steps[i] for i, (name, latent) in enumerate(zip(self.names, latents))}

    @torch.no_grad()
    def integers(self) -> dict[str, torch.Tensor]:
        return {name: torch.round(latent).to(torch.int64) for name, latent in zip(self.names, self.latents())}


def dequantized_state(integers: dict[str, torch.Tensor], steps: torch.Tensor) -> dict[str, torch.Tensor]:
    """float32 weights exactly as the decoder computes them: symbols * step (+ offset 0)."""
    return {name: integer.to(torch.float32) * steps[i] for i, (name, integer) in enumerate(integers.items())}


class RateModel(nn.Module):
    """A learned factorized density over all of a group's stored integers (CompressAI's
    EntropyBottleneck); ``bits`` is their estimated cost (uniform-noise proxy in
    training mode).  One density for all tensors: one call per step instead of one per
    tensor, which on a CPU was most of the step's time."""

    def __init__(self, init_scale: float):
        from compressai.entropy_models import EntropyBottleneck

        super().__init__()
        self.bottleneck = EntropyBottleneck(1, init_scale=init_scale)

    def bits(self, symbols: list[torch.Tensor]) -> torch.Tensor:
        values = torch.cat([s.reshape(-1) for s in symbols]).reshape(1, 1, -1)
        _, likelihoods = self.bottleneck(values)
        return (-torch.log2(likelihoods)).sum()

    def density_parameters(self) -> list[nn.Parameter]:
        # ``quantiles`` only serve CompressAI's own coder (auxiliary loss); not used here.
        return [p for name, p in self.named_parameters() if not name.endswith("quantiles")]


@dataclass
class ChainJob:
    """What one worker fits: consecutive groups, the first coded on its own."""

    first_group: int
    frames: np.ndarray  # (n, H, W, 3) integer frames of the chain's groups
    max_value: int
    config: dict
    epochs: int
    lr: float
    rate_lambda: float
    seed: int
    device: str
    adaptive_steps: bool = False
    # --time-budget / --dry-run with several workers: each chain plans its own groups
    # into the budget (seconds, from its own first step), calibrating its own pace
    recipe: Recipe | None = None
    time_budget: float | None = None
    dry_run: bool = False
    label: str = ""  # "chain 2/3 (groups 5-9)", prefixed to the chain's planner lines


class ReachesTarget(TrainingHook):
    """Adaptive compute: stops a group's run once the MSE of its quantized reconstruction
    (this step's output) is at most ``target_mse``, after ``min_steps`` steps."""

    def __init__(self, target_mse: float, min_steps: int):
        self.target_mse, self.min_steps = target_mse, min_steps
        self.last_mse = float("inf")

    @torch.no_grad()
    def after_step(self, step) -> None:
        self.last_mse = float(torch.mean((step.output.detach() - step.target) ** 2))

    def should_stop(self, run) -> bool:
        return run.step >= self.min_steps and self.last_mse <= self.target_mse


def initial_log_steps(state: dict[str, torch.Tensor]) -> torch.Tensor:
    steps = []
    for value in state.values():
        span = float(value.detach().abs().max())
        steps.append(math.log(span / 2 ** (INIT_BITS - 1) if span > 0 else 1e-3))
    return torch.tensor(steps, dtype=torch.float32)


def render(net: NIRVANAGroupNet, state: dict[str, torch.Tensor], coordinates: torch.Tensor, rows: int, cols: int
           ) -> torch.Tensor:
    return functional_call(net, state, (coordinates, rows, cols))


def fit_chain(job: ChainJob, progress: Progress | None = None, hooks: Sequence[TrainingHook] = ()) -> list[dict]:
    """Fit the chain's groups one after the other; per group: its symbols, steps, stats.

    Each group is one quantization-aware run of the training loop with a rate term;
    ``hooks`` (e.g. a time budget) are shared by every group's run."""
    torch.manual_seed(job.seed + job.first_group)
    device = torch.device(job.device)
    if device.type == "cpu":
        tune_malloc()
    config = NIRVANAConfig.from_dict(job.config)
    num_frames, height, width = job.frames.shape[:3]
    rows, cols = config.rows, config.cols
    coordinates = patch_centres(rows, cols).to(device)
    net = NIRVANAGroupNet(config).to(device)
    fresh = {name: value.detach().clone() for name, value in net.state_dict().items()}
    previous_integers: dict[str, torch.Tensor] | None = None
    previous_steps: torch.Tensor | None = None
    previous_log_steps: torch.Tensor | None = None
    residual_rate: RateModel | None = None
    target_mse: float | None = None  # the chain's first group's final quantized MSE
    results = []
    for start in range(0, num_frames, config.group_size):
        group_started = time.perf_counter()
        frames = job.frames[start : start + config.group_size]
        count = frames.shape[0]
        intra = previous_integers is None
        if intra:
            weights = QuantizedWeights(fresh, initial_log_steps(fresh)).to(device)
            rate = RateModel(init_scale=2.0 ** INIT_BITS).to(device)
            reference = None
        else:
            weights = QuantizedWeights(dequantized_state(previous_integers, previous_steps), previous_log_steps).to(device)
            if residual_rate is None:
                residual_rate = RateModel(init_scale=4.0).to(device)
            rate = residual_rate
            reference = [previous_integers[name].to(torch.float32) for name in weights.names]
        # SIREN's sine layers have weights ~sqrt(6 / width) / w0: they take a tenth of
        # the learning rate (SIREN's 1e-4 next to the convolutions' 1e-3).
        lr = job.lr
        siren = [v for name, v in zip(weights.names, weights.values) if name.startswith("siren.")]
        others = [v for name, v in zip(weights.names, weights.values) if not name.startswith("siren.")]
        param_groups = [
            {"params": siren, "lr": lr * SIREN_LR_FACTOR},
            {"params": others, "lr": lr},
            {"params": [weights.log_steps], "lr": lr * STEP_LR_FACTOR},
            {"params": rate.density_parameters(), "lr": RATE_LR},
        ]
        pixels = count * height * width
        steps_total = job.epochs * (INTRA_FACTOR if intra else 1)

        def forward(indices: torch.Tensor, target: torch.Tensor, weights=weights):
            # quantization-aware: the network runs on the rounded weights; the group is
            # always rendered whole (``indices`` are all of its frames, in order)
            latents = weights.latents()
            output = render(net, weights.weights(latents), coordinates, rows, cols)[:count, :, :height, :width]
            return output, {"latents": latents}

        def stored_bits(step, rate=rate, reference=reference) -> torch.Tensor:
            latents = step.extras["latents"]
            return rate.bits(latents if reference is None else [l - r for l, r in zip(latents, reference)])

        rate_term = RateTerm(stored_bits, job.rate_lambda, pixels)
        group_hooks = [rate_term, *hooks]
        if job.adaptive_steps and not intra and target_mse is not None:
            group_hooks.append(ReachesTarget(target_mse, max(1, math.ceil(MIN_ADAPTIVE_FRACTION * steps_total))))
        settings = TrainSettings(
            epochs=steps_total, batch_size=count, lr=lr, loss="l2", warmup_fraction=WARMUP_FRACTION,
            warmup_start=WARMUP_START, show_progress=progress is not None, phase="qat", progress_label=f"group {job.first_group + start // config.group_size}",
        )
        net.train()
        rate.train()
        trained = fit(forward, weights, frames, job.max_value, settings, device, None, group_hooks,
                      param_groups=param_groups, shuffle=False, progress=progress)
        if progress is not None and trained["iterations"] < steps_total:  # stopped early: the bar skips the rest
            progress.advance(steps_total - trained["iterations"])
        steps = weights.steps().detach().to(torch.float32)
        latents = [latent.detach() for latent in weights.latents()]
        if not (torch.isfinite(steps).all() and (steps >= torch.finfo(torch.float32).tiny).all()
                and all(torch.isfinite(latent).all() for latent in latents)):
            raise NncError("NIRVANA training diverged (non-finite weights or steps); try a smaller --lr")
        integers = weights.integers()
        symbols = integers if intra else {name: integers[name] - previous_integers[name] for name in integers}
        for name in integers:
            if max(int(integers[name].abs().max()), int(symbols[name].abs().max())) > MAX_LATENT:
                raise NncError(f"NIRVANA weight {name} diverged (integer latent beyond int32); try a smaller --lr")
        with torch.no_grad():
            net.eval()
            reconstruction = render(net, dequantized_state(integers, steps), coordinates, rows, cols)
            decoded = float_to_frames(reconstruction[:count, :, :height, :width].cpu(), job.max_value)
        if intra:
            target_mse = float(trained["last_mse"])
        results.append({
            "symbols": {name: value.cpu().numpy().astype(np.int32) for name, value in symbols.items()},
            "steps": steps.cpu().numpy(),
            "intra": intra,
            "decoded": decoded,
            "train_psnr": psnr_from_mse(trained["last_mse"]),
            "estimated_bits": float(rate_term.last_bits.item()),
            "iterations": trained["iterations"],
            "seconds": time.perf_counter() - group_started,
        })
        previous_integers, previous_steps = integers, steps
        previous_log_steps = weights.log_steps.detach().clone()
    return results


_worker_queue = None


def _worker_init(progress_queue, threads: int) -> None:
    global _worker_queue
    _worker_queue = progress_queue
    if threads > 0:
        torch.set_num_threads(threads)


class QueueProgress:
    """A worker's progress, sent to the parent's bar in batches (one queue item per few
    steps), and its log lines (the planner's estimate and re-plan lines), printed by the parent."""

    def __init__(self, progress_queue, batch: int = 5):
        self.queue, self.batch = progress_queue, batch
        self.pending, self.text = 0, None

    def advance(self, count: int = 1, text: str | None = None) -> None:
        self.pending += count
        self.text = text if text is not None else self.text
        if self.pending >= self.batch:
            self.queue.put(("progress", self.pending, self.text))
            self.pending, self.text = 0, None

    def log(self, line: str) -> None:
        self.queue.put(("log", line))


def _fit_chain_in_worker(job: ChainJob) -> list[dict] | dict:
    """A chain's groups, or with ``job.dry_run`` ``{"plan": ...}`` once its pace is calibrated."""
    progress = QueueProgress(_worker_queue)
    hooks: list[TrainingHook] = []
    if job.recipe is not None:
        def log(line: str) -> None:
            progress.log(f"nnc: {job.label}: {line.removeprefix('nnc: ')}")

        hooks.append(SchedulePlanner(job.recipe, job.time_budget, dry_run=job.dry_run, log=log))
    try:
        return fit_chain(job, progress, hooks=hooks)
    except PlanOnly as plan:  # returned, not raised: the plan travels back as plain data
        return {"plan": plan.plan}


def chains_plan(plans: list[dict], recipe: Recipe, budget: float | None) -> dict:
    """One dry-run plan for chains fitted side by side: the steps of all, the time of the
    slowest (they run in parallel), the epochs of the chain planned for the most steps."""
    slowest = max(plans, key=lambda plan: plan["estimated_seconds"])
    longest = max(plans, key=lambda plan: plan["steps"])
    steps = sum(plan["steps"] for plan in plans)
    epochs = " + ".join(f"{name} {count}" for name, count in longest["epochs"].items() if count > 0)
    text = (f"nnc: estimate: {recipe.model}, {plural(recipe.parameters, 'parameter')}, {plural(steps, 'step')} in "
            f"{len(plans)} parallel chains (epochs per group: {epochs}, the longest chain) at "
            f"{slowest['seconds_per_step']:.3g} s/step: about {format_duration(slowest['estimated_seconds'])}")
    if budget is not None:
        text += f" (each chain planned to fit the {format_duration(budget)} time budget)"
    return dict(longest, parameters=recipe.parameters, steps=steps, seconds_per_step=slowest["seconds_per_step"],
                estimated_seconds=slowest["estimated_seconds"], time_budget=budget, estimated_bpp=None,
                estimated_bytes=None, raw_bytes=math.ceil(recipe.raw_bits / 8), chains=len(plans), text=text)


def chain_phases(settings: dict, groups: int) -> list[Phase]:
    """A chain's recipe: its first group's intra steps, then one run per later group."""
    return [Phase("intra", int(settings["intra_epochs"]), 1),
            Phase("residual", int(settings["epochs"]), 1, runs=groups - 1)]


def split_chains(num_groups: int, workers: int) -> list[int]:
    """First group of each of ``workers`` contiguous, near-equal chains."""
    workers = max(1, min(workers, num_groups))
    return [int(part[0]) for part in np.array_split(np.arange(num_groups), workers)]


def check_chains(chains, num_groups: int) -> list[int]:
    if (not isinstance(chains, list) or not 1 <= len(chains) <= num_groups or chains[0] != 0
            or any(not isinstance(c, int) or isinstance(c, bool) for c in chains)
            or any(b <= a for a, b in zip(chains, chains[1:])) or chains[-1] >= num_groups):
        raise InvalidBitstreamError("NIRVANA chain starts are malformed")
    return chains


@dataclass
class NIRVANAOptions(VideoCodecOptions):
    size: float = option(float(scaled_config(64).parameter_count()), "Parameters of ONE group's network.", low=1)
    epochs: int = option(150, "Training steps per group (a chain's first group gets 2x).", low=1)
    lr: float = option(1e-3, "Peak learning rate.", low=0, low_open=True)
    rate_lambda: float = option(1e-3, "Weight of the estimated bits per pixel in the training loss (the "
                                      "rate-distortion knob; larger gives smaller files).", flag="--lambda", low=0)
    workers: int = option(1, "Processes fitting independent chains of frame groups in parallel.", low=1)
    loss: str = option("l2", "Training loss: NIRVANA trains on l2 (MSE) plus its rate term.", choices=("l2",))
    adaptive_steps: bool | None = option(None, "NIRVANA's adaptive compute: a group after a chain's first stops "
                                               "training once it reaches the first group's PSNR (default off: it cost PSNR in "
                                               "the one measurement so far).")
    independent_patches: bool | None = option(None, "NIRVANA: the upsampler runs per patch, so each patch decodes "
                                                    "alone (default on; off: over the assembled frame, as files "
                                                    "written before it).")


@register_codec("nirvana")
class NIRVANACodec(Codec):
    Options = NIRVANAOptions
    rate_option = "rate_lambda"
    config_class = NIRVANAConfig

    def resolve_settings(self, options: NIRVANAOptions) -> dict:
        if options.loss != "l2":
            raise NncError("NIRVANA trains on l2 (MSE) plus its rate term; --loss fusion6 is not supported")
        options.validate()
        settings = options.settings()
        if options.resume:
            raise NncError("NIRVANA encodes cannot be resumed (--resume); run the encode again")
        settings["intra_epochs"] = int(settings["epochs"]) * INTRA_FACTOR
        # Adaptive steps cost 1.4 dB for 15% fewer bytes in the only measurement so far (30
        # steps a group, benchmarks/results/nirvana_patches_*.json): off until a full RD curve says otherwise.
        for name, default in (("adaptive_steps", False), ("independent_patches", True)):
            settings[name] = default if settings.get(name) is None else bool(settings[name])
        return settings

    def compress(self, video, options: NIRVANAOptions) -> CompressedVideo:
        settings = self.resolve_settings(options)
        device = resolve_device(options.device)
        num_frames, height, width = video.frames.shape[:3]
        try:
            config = solve_config(height, width, num_frames, float(settings["size"]),
                                  independent_patches=settings["independent_patches"])
        except ValueError as error:
            raise NncError(str(error)) from None
        group_size = config.group_size
        num_groups = -(-num_frames // group_size)
        chains = split_chains(num_groups, int(settings["workers"]))
        settings["workers"] = len(chains)
        bounds = chains + [num_groups]
        jobs = [
            ChainJob(first_group=first, frames=np.ascontiguousarray(video.frames[first * group_size : end * group_size]),
                     max_value=video.max_value, config=config.to_dict(), epochs=int(settings["epochs"]),
                     lr=float(settings["lr"]), rate_lambda=float(settings["rate_lambda"]), seed=options.seed,
                     device=device.type, adaptive_steps=settings["adaptive_steps"])
            for first, end in zip(bounds[:-1], bounds[1:])
        ]
        total_steps = sum(int(settings["epochs"]) * (INTRA_FACTOR - 1 + -(-len(j.frames) // group_size)) for j in jobs)
        started = time.perf_counter()
        with ProgressBar(total_steps, f"nirvana {width}x{height}x{num_frames} ({plural(num_groups, 'group')})",
                         enabled=options.show_progress) as progress:
            # Rate-trained: the size is chosen by --lambda, so no size estimate (None).
            recipe = video_recipe(self.name, video, chain_phases(settings, num_groups),
                                  parameter_count(config) * num_groups, None)
            if len(jobs) == 1:
                results = [fit_chain(jobs[0], progress, hooks=[make_planner(options, recipe)])]
            else:
                # Each chain plans its own groups (and prints its own estimate line): the
                # chains run side by side, so every one of them gets the whole budget.
                budget = None if options.time_budget is None else parse_duration(options.time_budget)
                for index, (job, first, end) in enumerate(zip(jobs, bounds[:-1], bounds[1:])):
                    job.recipe = video_recipe(self.name, video, chain_phases(settings, end - first),
                                              parameter_count(config) * (end - first), None)
                    job.time_budget, job.dry_run = budget, bool(options.dry_run)
                    job.label = f"chain {index + 1}/{len(jobs)} (groups {first}-{end - 1})"
                results = self._fit_parallel(jobs, progress, log_line if options.show_progress else None)
                plans = [result["plan"] for result in results if isinstance(result, dict)]
                if options.dry_run:  # every chain calibrates before it can end (the planner's rule)
                    if len(plans) != len(jobs):
                        raise NncError("--dry-run: a NIRVANA chain ended without a plan")
                    raise PlanOnly(chains_plan(plans, recipe, budget))
        train_seconds = time.perf_counter() - started

        groups, decoded, estimated_bits = [], [], 0.0
        for chain in results:
            for result in chain:
                index = len(groups)
                tensors = [
                    QuantizedTensor(name, symbols, "step", 0, None, np.zeros(1, np.float32),
                                    np.array([result["steps"][i]], dtype=np.float32))
                    for i, (name, symbols) in enumerate(result["symbols"].items())
                ]
                groups.append(TensorGroup(group_name(index), tensors))
                decoded.append(result["decoded"])
                estimated_bits += result["estimated_bits"]
        decoded_frames = np.concatenate(decoded)
        quantized_psnr = mean_psnr(psnr_per_frame(video.frames, decoded_frames, video.max_value))
        parameters = config.parameter_count()
        stats = {
            "train_seconds": train_seconds,
            "train_frames_per_second": sum(r["iterations"] for chain in results for r in chain) * group_size
            / train_seconds,
            "iterations": sum(r["iterations"] for chain in results for r in chain),
            "planned_iterations": total_steps,
            "group_iterations": [r["iterations"] for chain in results for r in chain],
            "train_psnr": mean_psnr(np.array([r["train_psnr"] for chain in results for r in chain])),
            "quantized_psnr": quantized_psnr,
            "quantized_frames_sha256": hashlib.sha256(decoded_frames.tobytes()).hexdigest(),
            "estimated_bpp": estimated_bits / (num_frames * height * width),
            "group_parameters": parameters,
            "decoder_parameters": parameters * num_groups,
            "model_size": parameters * num_groups,
            "groups": num_groups,
            "chains": chains,
        }
        return CompressedVideo(model_header={"config": config.to_dict(), "chains": chains}, groups=groups,
                               settings=settings, stats=stats)

    @staticmethod
    def _fit_parallel(jobs: list[ChainJob], progress: ProgressBar, log=None) -> list[list[dict] | dict]:
        # Spawned processes (no fork: torch's threads do not survive it); each gets an
        # equal share of the intra-op threads so the workers do not oversubscribe cores.
        threads = max(1, torch.get_num_threads() // len(jobs))
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager:
            progress_queue = manager.Queue()
            with ProcessPoolExecutor(len(jobs), mp_context=context, initializer=_worker_init,
                                     initargs=(progress_queue, threads)) as pool:
                futures = [pool.submit(_fit_chain_in_worker, job) for job in jobs]
                pending = set(futures)

                def drain() -> None:
                    try:
                        while True:
                            item = progress_queue.get_nowait()
                            if item[0] != "log":
                                progress.advance(item[1], item[2])
                            elif log is not None:
                                log(item[1])
                    except queue_module.Empty:
                        pass

                try:
                    while pending:
                        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                        drain()  # first: a failed worker's last lines still print
                        for future in done:
                            future.result()  # re-raise a worker's error now
                    drain()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
                return [future.result() for future in futures]

    def decompress(self, model_header, groups, num_frames, height, width, *, device="cpu", batch_size=4,
                   frames: range | None = None) -> Iterator[torch.Tensor]:
        config, chains = checked_stream(model_header, groups, num_frames, height, width)
        device = resolve_device(device)
        net = NIRVANAGroupNet(config).to(device).eval()
        rows, cols = config.rows, config.cols
        coordinates = patch_centres(rows, cols).to(device)
        wanted = range(num_frames) if frames is None else frames
        if len(wanted) == 0:
            return
        with torch.no_grad():
            for index, state in group_states(config, groups, chains, wanted, device):
                output = render(net, state, coordinates, rows, cols)[:, :, :height, :width].cpu()
                offset = index * config.group_size
                lo, hi = max(wanted.start, offset), min(wanted.stop, offset + config.group_size, num_frames)
                for begin in range(lo, hi, batch_size):
                    yield output[begin - offset : min(begin + batch_size, hi) - offset]


def checked_stream(model_header, groups, num_frames: int, height: int, width: int) -> tuple[NIRVANAConfig, list[int]]:
    """The config and chain starts of a NIRVANA stream, every tensor's name, shape and
    scheme checked against the config before anything is computed."""
    try:
        config = NIRVANAConfig.from_dict(model_header.get("config"))
    except (TypeError, ValueError) as error:
        raise InvalidBitstreamError(f"bad NIRVANA config: {error}") from None
    if (config.rows, config.cols) != config.grid(height, width):
        raise InvalidBitstreamError("NIRVANA config patch grid does not match the video size")
    num_groups = -(-num_frames // config.group_size)
    if [group.name for group in groups] != [group_name(i) for i in range(num_groups)]:
        raise InvalidBitstreamError(f"NIRVANA file has {len(groups)} tensor groups; "
                                    f"{num_frames} frames in groups of {config.group_size} need {num_groups}")
    chains = check_chains(model_header.get("chains"), num_groups)
    with torch.device("meta"):
        skeleton = NIRVANAGroupNet(config)
    reference = {name: tuple(value.shape) for name, value in skeleton.state_dict().items()}
    for group in groups:
        names = [tensor.name for tensor in group.tensors]
        if names != list(reference):
            raise InvalidBitstreamError(f"NIRVANA {group.name} tensors do not match the config")
        for tensor in group.tensors:
            if tensor.shape != reference[tensor.name] or tensor.scheme != "step" or tensor.axis is not None:
                raise InvalidBitstreamError(f"NIRVANA {group.name} tensor {tensor.name} is malformed")
            if float(tensor.offset[0]) != 0.0:
                raise InvalidBitstreamError(f"NIRVANA {group.name} tensor {tensor.name} has an offset")
    return config, chains


def group_states(config: NIRVANAConfig, groups, chains: list[int], wanted: range, device
                 ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(group index, dequantized weights) of every group holding a frame of ``wanted``,
    summing the integer differences from the start of the first one's chain."""
    first, last = wanted.start // config.group_size, (wanted.stop - 1) // config.group_size
    chain_start = max(c for c in chains if c <= first)
    integers: dict[str, torch.Tensor] = {}
    for index in range(chain_start, last + 1):
        group = groups[index]
        if index in chains:
            integers = {t.name: torch.from_numpy(np.asarray(t.symbols, dtype=np.int64)) for t in group.tensors}
        else:
            integers = {t.name: integers[t.name] + torch.from_numpy(np.asarray(t.symbols, dtype=np.int64))
                        for t in group.tensors}
        if any(int(v.abs().max()) > MAX_LATENT for v in integers.values()):
            raise InvalidBitstreamError(f"NIRVANA {group.name} latents overflow int32")
        if index < first:
            continue
        steps = torch.tensor([float(t.scale[0]) for t in group.tensors], dtype=torch.float32)
        yield index, {name: value.to(device) for name, value in dequantized_state(integers, steps).items()}


def decode_region(model_header, groups, num_frames: int, height: int, width: int, region: tuple[int, int, int, int],
                  *, frames: range | None = None, device="cpu") -> Iterator[torch.Tensor]:
    """Frames of one region ``(top, left, bottom, right)`` (pixels, bottom/right
    exclusive), one (n, 3, bottom - top, right - left) float tensor per group, rendering
    only the patches that cover the region (NIRVANA's patch-parallel decoding).  Needs a
    file whose patches are independent (``independent_patches`` in its config)."""
    config, chains = checked_stream(model_header, groups, num_frames, height, width)
    if not config.independent_patches:
        raise NncError("this NIRVANA file was written before patches were independent; decode whole frames")
    top, left, bottom, right = (int(v) for v in region)
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise NncError(f"region {region} is not inside the {width}x{height} frame")
    wanted = range(num_frames) if frames is None else frames
    if len(wanted) == 0:
        return
    size = config.patch_size
    row_range, col_range = range(top // size, -(-bottom // size)), range(left // size, -(-right // size))
    device = resolve_device(device)
    net = NIRVANAGroupNet(config).to(device).eval()
    centres = patch_centres(config.rows, config.cols).view(config.rows, config.cols, 2)
    coordinates = centres[row_range.start : row_range.stop, col_range.start : col_range.stop].reshape(-1, 2).to(device)
    with torch.no_grad():
        for index, state in group_states(config, groups, chains, wanted, device):
            net.load_state_dict(state)
            patches = net.forward_patches(coordinates)  # (N, G, 3, P, P), the region's patches only
            g, p = config.group_size, size
            block = patches.view(len(row_range), len(col_range), g, 3, p, p).permute(2, 3, 0, 4, 1, 5)
            block = block.reshape(g, 3, len(row_range) * p, len(col_range) * p)
            y0, x0 = row_range.start * p, col_range.start * p
            offset = index * g
            lo, hi = max(wanted.start, offset), min(wanted.stop, offset + g, num_frames)
            yield block[lo - offset : hi - offset, :, top - y0 : bottom - y0, left - x0 : right - x0].cpu()
