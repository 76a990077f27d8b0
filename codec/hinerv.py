"""The HiNeRV video codec: fit HiNeRV to a clip, prune, train quantization-aware, quantize.

Recipe (the authors' bunny config, hmkx/HiNeRV; see ``/work/shared/reference/MODELS.md``),
three phases of the shared loop (:func:`nnc.codec.training.fit`):

1. ``train``: Adam lr 2e-3, warm-up over the first 10% of the steps (30 of 300 epochs)
   from 0.01 x lr (the authors' minimum lr 2e-5), then cosine; gradients clipped to
   norm 1.0; loss 0.7 L1 + 0.3 (1 - SSIM) (``fusion6``: the authors use MS-SSIM with a
   5x5 window, which the shared loop does not have; see "Deviations" below);
2. ``finetune``: global magnitude pruning of ``prune`` (0.15) of the decoder weights
   (stem, local-grid linears, blocks; not the head, not biases, never the grids, as the
   authors), then ``finetune_epochs`` (default 20% of ``epochs``: the authors' 60 of
   300) with the masks held fixed;
3. ``qat``: ``qat_epochs`` (default 10%: the authors' 30 of 300) at 0.1 x lr where each
   forward replaces a random 90% of every tensor's values (weights and grids) by their
   ``weight_bits`` min-max quantized values (quantization noise, straight-through), so
   the network learns to live with the rounding the file applies.

Training unit: whole frames (the network renders any box of the frame exactly, see
:mod:`nnc.models.hinerv`), or patches (``patch_size``; the authors train on 80x80
patches): an epoch visits every patch of every frame once, a step takes the patches of
``batch_size`` frames' worth, at random.  Only the real frame area is scored: where the
padded frame lies outside the video, the output is replaced by the target (no error,
no gradient).  Default: whole frames on CPU (measured 3.5x faster per pixel than 80x80
patches there), 80x80 on CUDA.

Bitstream: group ``weights`` (decoder; a pruned weight as ``NAME.mask`` + ``NAME.values``,
exactly as NeRV's, see :mod:`nnc.codec.nerv`) and group ``grids`` (the base grid and
every local grid level, dense), both at ``weight_bits`` with the ``quant_axis`` rule.
The header carries the config; the video's real size is in the media header and the
decoder crops the padded frame to it.  Decoding renders each frame from its index
alone, one frame per forward pass (pixels independent of the batch size), so
``--frames a:b`` computes only those frames.

Deviations from the authors' recipe, forced by the shared loop as it is: the cosine
ends at 0 rather than 2e-5, SSIM replaces MS-SSIM in the loss, and each later phase
warms up again over its first 10%.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call

from ..bitstream import TensorGroup
from ..errors import InvalidBitstreamError, NncError
from ..models.hinerv import PRESETS, HiNeRV, HiNeRVConfig, parameter_counts, preset_config, solve_config
from .base import Codec, CompressedVideo, VideoCodecOptions, option, resolve_device
from .checkpoint import remove_checkpoint
from .nerv import AXIS_RULES, MaskedModel, dequantize_weights, magnitude_masks, quantize_weights
from .registry import register_codec
from .planning import DEFAULT_SIZE_HELP, Phase, make_planner, pruned_bits_per_parameter, video_recipe
from .rate_target import (FULL_BITS, RateTargetOptions, RateTargetSource, choose_model_size, describe_target,
                          planned_file_bits, target_bits)
from .rate_control import rate_control
from .rate_distortion import RateDistortion, RateDistortionOptions, estimated_payload_bits, parameter_groups
from .training import TrainSettings, fit
from .training_hooks import KeepPruned, Step, TrainingHook, TrainingRun

WEIGHTS_GROUP = "weights"
GRIDS_GROUP = "grids"
WARMUP_FRACTION = 0.1  # 30 of 300 epochs
WARMUP_START = 0.01  # from the authors' minimum lr, 2e-5 = 0.01 x 2e-3
GRAD_CLIP_NORM = 1.0
QAT_LR_SCALE = 0.1
QAT_NOISE = 0.9  # fraction of values quantized in each QAT forward
CUDA_PATCH_SIZE = 80  # the authors' training patches


@dataclass
class HiNeRVOptions(RateDistortionOptions, RateTargetOptions, VideoCodecOptions):
    """HiNeRV's published bunny recipe (authors' config, hmkx/HiNeRV); ``--lambda`` trains
    every phase for rate and distortion instead (:mod:`nnc.codec.rate_distortion`: learned
    steps replace the QAT phase's min-max noise, and the file codes the learned steps)."""

    size: float | None = option(None, "Model size in parameters (decoder + all grids; " + DEFAULT_SIZE_HELP + ", or the "
                                      "size of --hinerv-config).", low=1)
    hinerv_config: str | None = option(None, "One of the authors' bunny configs instead of --params.",
                                       choices=tuple(PRESETS))
    epochs: int = option(300, "Training epochs.", low=1)
    batch_size: int = option(1, "Frames per training step (with patches: the patches of that many frames).", low=1)
    lr: float = option(2e-3, "Peak learning rate.", low=0, low_open=True)
    loss: str = option("fusion6", "Training loss: l2, or fusion6 = 0.7 L1 + 0.3 (1 - SSIM).", choices=("l2", "fusion6"))
    weight_bits: int = option(8, "Quantization bits of weights and grids.", low=2, high=16)
    quant_axis: str = option("cost", "Per-tensor or per-channel quantization: 'cost' counts the per-channel "
                                     "parameters' bits, 'error' is HNeRV's lowest-error rule.", choices=tuple(AXIS_RULES))
    prune: float = option(0.15, "Fraction of decoder weights removed by global magnitude pruning before "
                                "fine-tuning (0 disables); the masks are stored in the file and counted.",
                          low=0, high=1, high_open=True, metavar="FRACTION_REMOVED")
    finetune_epochs: int | None = option(None, "Fine-tuning epochs after pruning, masks fixed (default: 20% of "
                                               "--epochs, at least 1).", low=0)
    qat_epochs: int | None = option(None, "Quantization-aware epochs at 0.1 x lr with quantization noise "
                                          "(default: 10% of --epochs, at least 1; 0 disables).", low=0)
    patch_size: int | None = option(None, "Training patch side in pixels, the largest multiple of the network's "
                                          "stride up to it that tiles the frame; 0: whole frames (default: whole "
                                          "frames on CPU, 80 on CUDA).", low=0)


def resolve_config(settings: dict, height: int, width: int, num_frames: int, video=None) -> HiNeRVConfig:
    if settings["hinerv_config"] is not None and settings["size"] is not None:
        raise NncError("give --params or --hinerv-config, not both")
    try:
        if settings["hinerv_config"] is not None:
            return preset_config(settings["hinerv_config"], height, width, num_frames)
        size = settings["size"]
        if size is None:  # video: the clip, whose frame rate a --bitrate target needs
            pruned_bits = pruned_bits_per_parameter(int(settings["weight_bits"]), float(settings["prune"]))
            size = choose_model_size(settings, video, lambda value: solve_config(height, width, num_frames, value),
                                     pruned_bits, "hinerv")
        return solve_config(height, width, num_frames, float(size))
    except ValueError as error:
        raise NncError(str(error)) from None


def patch_shape(config: HiNeRVConfig, requested: int) -> tuple[int, int]:
    """Patch height and width tiling the padded frame: per side, the largest multiple of the
    total stride up to ``requested`` (at least one stride) that divides it."""
    stride = config.total_stride
    want = max(1, round(requested / stride))

    def side(full: int) -> int:
        cells = full // stride
        return stride * max(d for d in range(1, min(want, cells) + 1) if cells % d == 0)

    return side(config.padded_height), side(config.padded_width)


def prunable_names(model: HiNeRV) -> list[str]:
    """Decoder weight matrices and kernels (not biases, not the head, never a grid)."""
    return [name for name, p in model.decoder_parameters().items()
            if name.endswith(".weight") and not name.startswith("head.") and p.dim() > 1]


def fake_quantize(value: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-tensor min-max quantization at ``bits`` (what the file's per-tensor rule does)."""
    low, high = value.min(), value.max()
    scale = ((high - low) / (2**bits - 1)).clamp(min=1e-12)
    return ((value - low) / scale).round() * scale + low


class ClipGradNorm(TrainingHook):
    """Scale the gradients to a global norm of at most ``max_norm`` before each optimiser step
    (the authors clip at 1.0).

    The loop has no extension point between backward and the optimiser step, so each
    parameter reports its accumulated gradient (a post-accumulate-grad hook) and the last
    one to arrive clips them all.  Every parameter of HiNeRV receives a gradient at every
    step; ``after_step`` checks that the clip ran.
    """

    def __init__(self, params, max_norm: float):
        self.params = [p for p in params if p.requires_grad]
        self.max_norm = max_norm
        self.handles: list = []
        self.pending = 0
        self.clipped_steps = 0

    def start(self, run: TrainingRun) -> None:
        self.handles = [p.register_post_accumulate_grad_hook(self._arrived) for p in self.params]

    def loss_term(self, step: Step) -> None:
        self.pending = len(self.params)
        return None

    def _arrived(self, param: torch.Tensor) -> None:
        self.pending -= 1
        if self.pending == 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
            self.clipped_steps += 1

    def after_step(self, step: Step) -> None:
        if self.pending != 0:
            raise RuntimeError(f"gradient clipping did not run ({self.pending} parameters got no gradient)")

    def finish(self, run: TrainingRun) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class TrainingData:
    """The clip as the loop's training items: whole frames, or patches of the padded frames."""

    def __init__(self, frames: np.ndarray, config: HiNeRVConfig, patch: tuple[int, int] | None, device):
        self.config, self.patch = config, patch
        num_frames, self.height, self.width = frames.shape[:3]
        if patch is None:
            self.items, self.per_frame = frames, 1
            return
        padded_h, padded_w = config.padded_height, config.padded_width
        ph, pw = patch
        rows, cols = padded_h // ph, padded_w // pw
        padded = np.pad(frames, ((0, 0), (0, padded_h - self.height), (0, padded_w - self.width), (0, 0)), mode="edge")
        self.items = np.ascontiguousarray(
            padded.reshape(num_frames, rows, ph, cols, pw, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, ph, pw, 3))
        self.boxes = [(r * ph, c * pw, ph, pw) for r in range(rows) for c in range(cols)]
        self.per_frame = len(self.boxes)
        y = torch.arange(padded_h, device=device).view(rows, 1, ph, 1) < self.height
        x = torch.arange(padded_w, device=device).view(1, cols, 1, pw) < self.width
        self.real = (y & x).reshape(-1, 1, ph, pw)  # (patches, 1, ph, pw): inside the video
        self.has_padding = bool((~self.real).any())

    def render(self, model: nn.Module, indices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The model's output for training items ``indices``, compared only where the video is."""
        if self.patch is None:
            return model(indices)[..., :self.height, :self.width]
        device = target.device
        indices = indices.to(device)
        frames, boxes = indices // self.per_frame, indices % self.per_frame
        output = torch.zeros_like(target)
        for box in torch.unique(boxes).tolist():  # one call per patch position
            where = (boxes == box).nonzero().squeeze(1)
            output = output.index_put((where,), model(frames[where], self.boxes[box]))
        if self.has_padding:
            output = torch.where(self.real[boxes], output, target)
        return output


@register_codec("hinerv")
class HiNeRVCodec(Codec):
    Options = HiNeRVOptions
    config_class = HiNeRVConfig

    def resolve_settings(self, options: HiNeRVOptions, device: torch.device) -> dict:
        options.validate()
        settings = options.settings()
        epochs = int(settings["epochs"])
        if settings["finetune_epochs"] is None:
            settings["finetune_epochs"] = max(1, round(0.2 * epochs)) if settings["prune"] > 0 else 0
        if settings["qat_epochs"] is None:
            settings["qat_epochs"] = max(1, round(0.1 * epochs))
        if settings["patch_size"] is None:
            settings["patch_size"] = CUDA_PATCH_SIZE if device.type == "cuda" else 0
        return settings

    def check_options(self, options: HiNeRVOptions) -> None:
        options.validate()
        if options.size is not None and options.hinerv_config is not None:
            raise NncError("give --params or --hinerv-config, not both")

    def compress(self, video, options: HiNeRVOptions) -> CompressedVideo:
        device = resolve_device(options.device)
        settings = self.resolve_settings(options, device)
        num_frames, height, width = video.frames.shape[:3]
        config = resolve_config(settings, height, width, num_frames, video)
        patch = patch_shape(config, int(settings["patch_size"])) if settings["patch_size"] else None
        if patch == (config.padded_height, config.padded_width):
            patch = None  # one patch is the whole frame
        data = TrainingData(video.frames, config, patch, device)
        torch.manual_seed(options.seed)
        model = HiNeRV(config).to(device)
        bits = int(settings["weight_bits"])

        masked: MaskedModel | None = None
        quantize_noise = False

        def network_with_noise(frames: torch.Tensor, box=None) -> torch.Tensor:
            # Quantization noise: QAT_NOISE of each tensor's values at their quantized
            # value (straight-through), pruned weights kept at zero.
            masks = dict(zip(masked.names, (m for _, m in masked.pairs()))) if masked is not None else {}
            params = {}
            for name, param in model.named_parameters():
                quantized = fake_quantize(param.detach(), bits)
                if name in masks:
                    quantized = quantized * masks[name]
                chosen = torch.rand_like(param) < QAT_NOISE
                params[name] = param + torch.where(chosen, quantized - param.detach(), torch.zeros_like(param))
            return functional_call(model, params, (frames,), {"box": box})

        rate = rate_steps = control = None
        rate_hooks: list[TrainingHook] = []  # every phase's: the rate term, and with a rate target its control
        current_masks: dict[str, torch.Tensor] = {}
        wanted_bits = target_bits(settings, num_frames, height, width, video.info.fps)
        if settings.get("rate_lambda") is not None:
            rate = RateDistortion(float(settings["rate_lambda"]), num_frames * height * width, bits,
                                  settings["qat_rounding"])
            rate_steps = rate.quantize_functional(dict(model.named_parameters()), masks=current_masks.get)
            term = rate.rate_term()
            # lambda adapts across the phases
            control = rate_control(term, wanted_bits, rate.step_values(), rate.coded_tensors())
            rate_hooks = [term] if control is None else [term, control]

        def network_with_rate(frames: torch.Tensor, box=None) -> torch.Tensor:
            # every tensor at its learned-step quantized value, pruned weights at zero
            return functional_call(model, rate.apply(dict(model.named_parameters())), (frames,), {"box": box})

        def forward(indices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if rate is not None:
                return data.render(network_with_rate, indices, target)
            return data.render(network_with_noise if quantize_noise else model, indices, target)

        def train_settings(epochs: int, phase: str, lr_scale: float = 1.0) -> TrainSettings:
            return TrainSettings(
                epochs=epochs, batch_size=int(settings["batch_size"]) * data.per_frame,
                lr=float(settings["lr"]) * lr_scale, loss=settings["loss"], warmup_fraction=WARMUP_FRACTION,
                warmup_start=WARMUP_START, seed=options.seed, show_progress=options.show_progress,
                description=f"hinerv {phase} {width}x{height}x{num_frames}", phase=phase,
            )

        prune = float(settings["prune"])
        phases = [("train", int(settings["epochs"])), ("finetune", int(settings["finetune_epochs"]) if prune > 0 else 0),
                  ("qat", int(settings["qat_epochs"]))]
        fingerprint_settings = dict(settings, codec=self.name, config=config.to_dict())
        policies = {}
        for phase, epochs in phases:
            phase_options = options if phase == "train" or options.checkpoint_path is None else replace(
                options, checkpoint_path=f"{options.checkpoint_path}.{phase}")
            policies[phase] = phase_options.checkpoint_policy(video.frames, dict(fingerprint_settings, phase=phase))
        # On --resume, a phase whose successor has a checkpoint had finished: skip it.
        resumed_from = 0
        if options.resume:
            for index, (phase, epochs) in enumerate(phases):
                if epochs > 0 and policies[phase] is not None and policies[phase].path.exists():
                    resumed_from = index
        for index, (phase, _) in enumerate(phases):
            if policies[phase] is not None and index > resumed_from:
                policies[phase].resume = False  # a phase that starts afresh never loads a stale file

        counts = parameter_counts(config)
        steps_per_epoch = -(-len(data.items) // (int(settings["batch_size"]) * data.per_frame))
        planner = make_planner(options, video_recipe(
            self.name, video, [Phase(phase, epochs, steps_per_epoch) for phase, epochs in phases],
            counts["decoder"] + counts["grids"],
            planned_file_bits(counts["decoder"] * pruned_bits_per_parameter(bits, prune) + counts["grids"] * bits,
                              wanted_bits), size_is_target=wanted_bits is not None))

        model.train()
        stats: dict = {}
        for index, (phase, epochs) in enumerate(phases):
            if phase == "finetune" and prune > 0:
                masks = magnitude_masks(model, prunable_names(model), prune)
                masked = MaskedModel(model, masks).to(device)
                masked.apply_masks()
                current_masks.update(zip(masked.names, (mask for _, mask in masked.pairs())))
            if epochs == 0 or index < resumed_from:
                continue
            quantize_noise = phase == "qat"
            module = masked if masked is not None else model
            hooks: list[TrainingHook] = [ClipGradNorm(model.parameters(), GRAD_CLIP_NORM)]
            if rate is not None:  # the steps are trained (and checkpointed) with the network
                module = nn.ModuleDict({"network": module, "steps": rate_steps})
                hooks.extend(rate_hooks)
            if masked is not None:
                hooks.append(KeepPruned(masked.pairs))
            hooks.append(planner)
            settings_of_phase = train_settings(epochs, phase, QAT_LR_SCALE if phase == "qat" else 1.0)
            # the learned steps at their own learning rate, as every rate-trained codec
            groups = parameter_groups(module, rate_steps, settings_of_phase.lr) if rate is not None else None
            phase_stats = fit(forward, module, data.items, video.max_value, settings_of_phase, device,
                              policies[phase], hooks=hooks, param_groups=groups)
            stats.update(phase_stats if phase == "train" else {f"{phase}_{k}": v for k, v in phase_stats.items()})
        for phase, _ in phases[1:]:
            remove_checkpoint(policies[phase])

        started = time.perf_counter()
        model.eval()
        masks = ({name: mask.bool() for name, (_, mask) in zip(masked.names, masked.pairs())}
                 if masked is not None else {})
        weights = {k: v.detach().contiguous() for k, v in model.decoder_parameters().items()}
        grids = {k: v.detach().contiguous() for k, v in model.grid_parameters().items()}
        if rate is not None:  # dense step-quantized tensors, pruned values coded as zeros
            coded = rate.quantized_parameters()
            groups = [TensorGroup(WEIGHTS_GROUP, [coded[name] for name in weights]),
                      TensorGroup(GRIDS_GROUP, [coded[name] for name in grids])]
            stats["rate_estimated_payload_bits"] = estimated_payload_bits(coded.values())
        else:
            groups = [
                TensorGroup(WEIGHTS_GROUP, quantize_weights(weights, masks, bits, settings["quant_axis"])),
                TensorGroup(GRIDS_GROUP, quantize_weights(grids, {}, bits, settings["quant_axis"])),
            ]
        counts = parameter_counts(config)
        pruned = sum(int((~m).sum()) for m in masks.values())
        stats.update(
            quantize_seconds=time.perf_counter() - started, decoder_parameters=counts["decoder"],
            grid_parameters=counts["grids"], model_size=counts["decoder"] + counts["grids"],
            pruned_fraction=pruned / counts["decoder"], training_patch=list(patch) if patch else None,
        )
        rate_target = None
        if control is not None:
            # the trained tensors with their float values: their steps are coarsened when the
            # file is written, should it still be above the target
            rate_target = RateTargetSource(wanted_bits, num_frames * height * width, groups, describe_target(settings),
                                           self.name, rate.trained_values())
            settings["rate_control"], stats["rate_control"] = control.record(), control.stats()
        elif wanted_bits is not None:
            # --bpp/--bitrate: full-precision tensors, requantized onto the target when the file is written
            rate_target = RateTargetSource(wanted_bits, num_frames * height * width, [
                TensorGroup(WEIGHTS_GROUP, quantize_weights(weights, masks, FULL_BITS, settings["quant_axis"])),
                TensorGroup(GRIDS_GROUP, quantize_weights(grids, {}, FULL_BITS, settings["quant_axis"]))],
                describe_target(settings), self.name)
        return CompressedVideo(model_header={"config": config.to_dict()}, groups=groups, settings=settings, stats=stats,
                               rate_target=rate_target)

    def decompress(self, model_header, groups, num_frames, height, width, *, device="cpu", batch_size=4,
                   frames: range | None = None) -> Iterator[torch.Tensor]:
        try:
            config = HiNeRVConfig.from_dict(model_header.get("config"))
        except (TypeError, ValueError, AttributeError) as error:
            raise InvalidBitstreamError(f"bad HiNeRV config: {error}") from None
        # The grids must cover exactly this video: this ties the decoder's compute and
        # memory to the bounded media header.
        stride = config.total_stride
        if (config.base_height, config.base_width) != (-(-height // stride), -(-width // stride)):
            raise InvalidBitstreamError("HiNeRV config output size does not match the video size")
        if config.frames != num_frames:
            raise InvalidBitstreamError("HiNeRV config frame count does not match the video")
        if [group.name for group in groups] != [WEIGHTS_GROUP, GRIDS_GROUP]:
            raise InvalidBitstreamError(f"HiNeRV file has tensor groups {[g.name for g in groups]}")
        with torch.device("meta"):  # names and shapes, nothing allocated
            skeleton = HiNeRV(config)
        weight_shapes = {name: tuple(p.shape) for name, p in skeleton.decoder_parameters().items()}
        grid_shapes = {name: tuple(p.shape) for name, p in skeleton.grid_parameters().items()}
        state = dequantize_weights(groups[0].tensors, weight_shapes, set(prunable_names(skeleton)), "HiNeRV")
        state.update(dequantize_weights(groups[1].tensors, grid_shapes, set(), "HiNeRV"))

        device = resolve_device(device)
        model = skeleton
        model.load_state_dict(state, assign=True)  # every parameter replaced: nothing left on meta
        model.to(device).eval()
        frames = range(num_frames) if frames is None else frames
        with torch.no_grad():
            for start in range(frames.start, frames.stop, batch_size):
                stop = min(start + batch_size, frames.stop)
                # One frame per forward pass: the pixels must not depend on --batch-size.
                outputs = [model(torch.tensor([i], device=device)) for i in range(start, stop)]
                yield torch.cat(outputs)[..., :height, :width].cpu()
