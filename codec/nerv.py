"""The NeRV and NeRV++ video codecs: fit, prune, fine-tune, quantize; and decode.

Encoding follows NeRV's recipe: Adam (betas 0.5, 0.999), lr 5e-4, batch 1, Fusion6 loss
(0.7 L1 + 0.3 (1 - SSIM)), 20% linear warm-up from 0.1 lr then cosine to 0; then global
magnitude pruning (the smallest ``prune`` fraction of all Linear/conv weights but the
head's) and fine-tuning with the masks held fixed, the authors' schedule: 100 epochs,
no warm-up, cosine from the peak lr (haochen-rye/NeRV README: ``-e 100 --warmup 0.
--prune_ratio 0.4``); then 8-bit quantization.

Bitstream: one group ``weights``.  An unpruned tensor is stored under its state-dict
name, quantized with the shared axis rule.  A pruned weight is stored as two tensors:
``NAME.mask`` (its shape, 0/1 symbols: minmax, 1 bit, offset 0, scale 1, entropy coded
like everything else, so the mask is paid for) and ``NAME.values`` (the kept weights
in C order, 1-D, per-tensor min-max), so pruning really shrinks the file.  The decoder
rebuilds the dense weight: zeros where the mask is 0, the dequantized values elsewhere.

Rate-distortion training (``--lambda``, :mod:`nnc.codec.rate_distortion`, as HiNeRV):
every weight and bias gets learned quantization steps and every forward pass of both
phases renders with the step-quantized network (``torch.func.functional_call``), the
loss paying ``lambda x`` the estimated bits.  The steps train at their own learning
rate (``rate_distortion.STEP_LR``): at the recipe's 5e-4 they hardly move.  Pruning and
fine-tuning run as in the recipe: the masks come from the float weights after the first
phase, pruned weights stay at zero, and the rate term prices them as the zero symbols
they become.  The file then holds every tensor dense in the ``step`` scheme (pruned
weights as zeros, no ``.mask``/``.values`` pair: the dense symbols are a function of
mask and kept symbols, so they cost no more entropy than the pair, and a weight keeps
its per-channel steps, which a 1-D ``.values`` tensor cannot carry), so the decoder,
unchanged, reproduces the trained quantized network bit for bit.

Both models share this implementation; only the model module differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call

from ..bitstream import QuantizedTensor, TensorGroup, quantize_best_axis, quantize_lowest_cost_axis, quantize_per_tensor
from ..errors import InvalidBitstreamError, NncError
from ..models import nerv as nerv_model
from ..models import nervpp as nervpp_model
from .base import Codec, CompressedVideo, VideoCodecOptions, option, resolve_device
from .checkpoint import remove_checkpoint
from .registry import register_codec
from .planning import DEFAULT_SIZE_HELP, Phase, make_planner, pruned_bits_per_parameter, video_recipe
from .rate_control import rate_control
from .rate_distortion import RateDistortion, RateDistortionOptions, estimated_payload_bits, parameter_groups
from .rate_target import (FULL_BITS, RateTargetOptions, RateTargetSource, choose_model_size, describe_target,
                          planned_file_bits, target_bits)
from .training import TrainSettings, fit
from .training_hooks import KeepPruned, TrainingHook

WEIGHTS_GROUP = "weights"
MASK_SUFFIX = ".mask"
VALUES_SUFFIX = ".values"

AXIS_RULES = {"cost": quantize_lowest_cost_axis, "error": quantize_best_axis}
BETAS = (0.5, 0.999)
WARMUP_FRACTION = 0.2
WARMUP_START = 0.1  # NeRV's code warms up linearly from 0.1 lr
# The authors' pruning fine-tune (their README's command: -e 100 --warmup 0.): a fixed
# 100 epochs whatever the training length, straight into the cosine.
FINETUNE_EPOCHS = 100
FINETUNE_WARMUP_FRACTION = 0.0


class MaskedModel(nn.Module):
    """The model plus its pruning masks as buffers, so a fine-tuning checkpoint holds both."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self.names = list(masks)
        for index, name in enumerate(self.names):
            self.register_buffer(f"mask_{index}", masks[name].to(torch.float32))

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        params = dict(self.model.named_parameters())
        return [(params[name], getattr(self, f"mask_{index}")) for index, name in enumerate(self.names)]

    @torch.no_grad()
    def apply_masks(self) -> None:
        for param, mask in self.pairs():
            param.mul_(mask)


def magnitude_masks(model: nn.Module, names: list[str], fraction: float) -> dict[str, torch.Tensor]:
    """Global unstructured L1 pruning (torch's ``global_unstructured``): remove exactly
    round(fraction * N) of the N weights in ``names``, smallest magnitude first
    (ties: the earlier in state-dict order)."""
    params = dict(model.named_parameters())
    flat = torch.cat([params[name].detach().abs().reshape(-1).cpu() for name in names])
    remove = int(round(fraction * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if remove > 0:
        keep[torch.sort(flat, stable=True).indices[:remove]] = False
    masks, start = {}, 0
    for name in names:
        count = params[name].numel()
        masks[name] = keep[start : start + count].reshape(params[name].shape).to(params[name].device)
        start += count
    return masks


def quantize_weights(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], bits: int, rule: str
                     ) -> list[QuantizedTensor]:
    tensors = []
    for name, value in state.items():
        array = value.detach().cpu().float().numpy()
        mask = masks.get(name)
        kept = int(mask.sum()) if mask is not None else array.size
        if mask is None or kept in (0, array.size):  # nothing (or everything) kept: dense is as cheap
            tensors.append(AXIS_RULES[rule](array * (kept > 0), bits, name=name))
            continue
        keep = mask.cpu().numpy().astype(bool)
        tensors.append(QuantizedTensor(name + MASK_SUFFIX, keep.astype(np.int32), "minmax", 1, None,
                                       np.zeros(1, np.float32), np.ones(1, np.float32)))
        tensors.append(quantize_per_tensor(array[keep], bits, name=name + VALUES_SUFFIX))
    return tensors


def dequantize_weights(tensors: list[QuantizedTensor], reference: dict[str, tuple[int, ...]], prunable: set[str],
                       codec: str) -> dict[str, torch.Tensor]:
    """Dense float32 weights from the group's tensors, every name and shape checked
    against ``reference`` (the state-dict shapes the config implies) first."""
    by_name = {}
    for tensor in tensors:
        if tensor.name in by_name:
            raise InvalidBitstreamError(f"{codec} file has tensor {tensor.name!r} twice")
        by_name[tensor.name] = tensor
    expected = set()
    for name, shape in reference.items():
        if name in by_name:
            expected.add(name)
            if by_name[name].shape != shape:
                raise InvalidBitstreamError(f"{codec} weight {name} has shape {by_name[name].shape}, expected {shape}")
            continue
        mask, values = by_name.get(name + MASK_SUFFIX), by_name.get(name + VALUES_SUFFIX)
        if name not in prunable or mask is None or values is None:
            raise InvalidBitstreamError(f"{codec} file lacks weight {name}")
        expected.update((mask.name, values.name))
        if (mask.shape != shape or mask.scheme != "minmax" or mask.bits != 1 or mask.axis is not None
                or float(mask.offset[0]) != 0.0 or float(mask.scale[0]) != 1.0):
            raise InvalidBitstreamError(f"{codec} pruning mask {mask.name} is malformed")
        if values.shape != (int(np.count_nonzero(mask.symbols)),):
            raise InvalidBitstreamError(f"{codec} kept values {values.name} do not match the mask")
    if set(by_name) != expected:
        raise InvalidBitstreamError(f"{codec} file has unexpected tensors {sorted(set(by_name) - expected)[:5]}")

    state = {}
    for name, shape in reference.items():
        if name in by_name:
            dense = by_name[name].dequantize()
        else:
            dense = np.zeros(shape, dtype=np.float32)
            dense[np.asarray(by_name[name + MASK_SUFFIX].symbols) != 0] = by_name[name + VALUES_SUFFIX].dequantize()
        state[name] = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
    return state


@dataclass
class NeRVOptions(RateDistortionOptions, RateTargetOptions, VideoCodecOptions):
    """NeRV's published recipe (authors' README and paper); NeRV++ trains the same way.
    ``--lambda`` trains both phases for rate and distortion instead
    (:mod:`nnc.codec.rate_distortion`)."""

    size: float | None = option(None, f"Model size in parameters (all weights, before pruning; {DEFAULT_SIZE_HELP}).",
                                low=1)
    epochs: int = option(300, "Training epochs.", low=1)
    batch_size: int = option(1, "Frames per training step.", low=1)
    lr: float = option(5e-4, "Peak learning rate.", low=0, low_open=True)
    loss: str = option("fusion6", "Training loss: l2, or fusion6 = 0.7 L1 + 0.3 (1 - SSIM).", choices=("l2", "fusion6"))
    weight_bits: int = option(8, "Quantization bits of weights.", low=2, high=16)
    quant_axis: str = option("cost", "Per-tensor or per-channel quantization: 'cost' counts the per-channel "
                                     "parameters' bits, 'error' is HNeRV's lowest-error rule.", choices=tuple(AXIS_RULES))
    prune: float = option(0.4, "Fraction of weights removed by global magnitude pruning before fine-tuning "
                               "(0 disables); the masks are stored in the file and counted.",
                          low=0, high=1, high_open=True, metavar="FRACTION_REMOVED")
    finetune_epochs: int = option(FINETUNE_EPOCHS, "Fine-tuning epochs after pruning, masks fixed, no warm-up "
                                                   "(the authors' 100).", low=0)

    def settings(self) -> dict:
        # Recorded only with --lambda: an encode without it writes the header (and the
        # checkpoint fingerprint) it wrote before rate-distortion training existed.
        settings = super().settings()
        if settings.get("rate_lambda") is None:
            settings.pop("rate_lambda", None)
            settings.pop("qat_rounding", None)
        return settings


class _NeRVFamilyCodec(Codec):
    """Shared by ``nerv`` and ``nervpp``; subclasses name the model module."""

    Options = NeRVOptions

    model_module = nerv_model
    config_class = nerv_model.NeRVConfig
    model_class = nerv_model.NeRV
    label = "NeRV"

    def resolve_settings(self, options: NeRVOptions) -> dict:
        options.validate()
        settings = options.settings()
        if settings["finetune_epochs"] is None:  # options built by older callers
            settings["finetune_epochs"] = FINETUNE_EPOCHS
        if settings["prune"] == 0:
            settings["finetune_epochs"] = 0
        return settings

    def compress(self, video, options: NeRVOptions) -> CompressedVideo:
        settings = self.resolve_settings(options)
        device = resolve_device(options.device)
        num_frames, height, width = video.frames.shape[:3]
        if settings["size"] is None:  # recorded resolved, so the header says what was used
            pruned_bits = pruned_bits_per_parameter(int(settings["weight_bits"]), float(settings["prune"]))
            settings["size"] = choose_model_size(
                settings, video, lambda size: self.model_module.solve_config(height, width, num_frames, size),
                pruned_bits, self.name)
        try:
            config = self.model_module.solve_config(height, width, num_frames, float(settings["size"]))
        except ValueError as error:
            raise NncError(str(error)) from None
        torch.manual_seed(options.seed)
        model = self.model_class(config).to(device)
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        times = model.encode_time(torch.arange(num_frames, dtype=torch.float64) / num_frames).to(device)

        rate = rate_steps = control = None
        rate_hooks: list[TrainingHook] = []  # both phases': the rate term, and with a rate target its control
        current_masks: dict[str, torch.Tensor] = {}  # name -> 0/1 float mask, once pruned
        wanted_bits = target_bits(settings, num_frames, height, width, video.info.fps)
        if settings.get("rate_lambda") is not None:
            # Rate-distortion training: every tensor through its learned-step quantizer
            # (pruned weights at zero), the loss paying for the estimated bits.
            rate = RateDistortion(float(settings["rate_lambda"]), num_frames * height * width,
                                  int(settings["weight_bits"]), settings["qat_rounding"])
            rate_steps = rate.quantize_functional(dict(model.named_parameters()), masks=current_masks.get)
            term = rate.rate_term()
            # lambda adapts across both phases
            control = rate_control(term, wanted_bits, rate.step_values(), rate.coded_tensors())
            rate_hooks = [term] if control is None else [term, control]

        def reconstruct(indices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            encoded = times[indices.to(times.device)]
            if rate is not None:
                return functional_call(model, rate.apply(dict(model.named_parameters())), (encoded,))[
                    ..., :height, :width]
            return model(encoded)[..., :height, :width]

        def with_rate(module: nn.Module, hooks: list[TrainingHook]) -> tuple[nn.Module, list[TrainingHook], dict]:
            """With --lambda, the steps train (at their own lr) and are checkpointed with the
            network, and the rate term (with a rate target, also its control) joins the hooks;
            the last item: ``fit``'s keywords."""
            if rate is None:
                return module, hooks, {}
            module = nn.ModuleDict({"network": module, "steps": rate_steps})
            groups = parameter_groups(module, rate_steps, float(settings["lr"]))
            return module, [*rate_hooks, *hooks], {"param_groups": groups}

        def train_settings(epochs: int, phase: str) -> TrainSettings:
            warmup = FINETUNE_WARMUP_FRACTION if phase == "finetune" else WARMUP_FRACTION
            return TrainSettings(
                epochs=epochs, batch_size=int(settings["batch_size"]), lr=float(settings["lr"]), loss=settings["loss"],
                betas=BETAS, warmup_fraction=warmup, warmup_start=WARMUP_START, seed=options.seed,
                show_progress=options.show_progress, description=f"{self.name} {phase} {width}x{height}x{num_frames}",
                phase=phase,
            )

        fingerprint_settings = dict(settings, codec=self.name, config=config.to_dict())
        prune = float(settings["prune"])
        finetune_epochs = int(settings["finetune_epochs"]) if prune > 0 else 0
        # Fine-tuning checkpoints go to their own file; finding one on --resume means
        # the first phase had finished.
        finetune_policy = None
        if finetune_epochs > 0:
            finetune_options = options if options.checkpoint_path is None else replace(
                options, checkpoint_path=str(options.checkpoint_path) + ".finetune")
            finetune_policy = finetune_options.checkpoint_policy(video.frames,
                                                                 dict(fingerprint_settings, phase="finetune"))
        resume_finetune = finetune_policy is not None and options.resume and finetune_policy.path.exists()
        if finetune_policy is not None and not resume_finetune:
            finetune_policy.resume = False

        values = sum(p.numel() for p in model.parameters())
        steps_per_epoch = -(-num_frames // int(settings["batch_size"]))
        planner = make_planner(options, video_recipe(
            self.name, video, [Phase("train", int(settings["epochs"]), steps_per_epoch),
                               Phase("finetune", finetune_epochs, steps_per_epoch)],
            values, planned_file_bits(values * pruned_bits_per_parameter(int(settings["weight_bits"]), prune),
                                      wanted_bits), size_is_target=wanted_bits is not None))

        model.train()
        stats = {}
        if not resume_finetune:
            policy = options.checkpoint_policy(video.frames, fingerprint_settings)
            module, hooks, extra = with_rate(model, [planner])
            stats = fit(reconstruct, module, video.frames, video.max_value,
                        train_settings(int(settings["epochs"]), "train"), device, policy, hooks=hooks, **extra)

        masks: dict[str, torch.Tensor] = {}
        if prune > 0:
            prunable = nerv_model.prunable_names(model)
            masks = magnitude_masks(model, prunable, prune)
            masked = MaskedModel(model, masks).to(device)
            masked.apply_masks()
            # the masks' own buffers: a resumed fine-tuning loads its masks into them
            current_masks.update(zip(masked.names, (mask for _, mask in masked.pairs())))
            if finetune_epochs > 0:
                module, hooks, extra = with_rate(masked, [KeepPruned(masked.pairs), planner])
                finetune_stats = fit(reconstruct, module, video.frames, video.max_value,
                                     train_settings(finetune_epochs, "finetune"), device, finetune_policy,
                                     hooks=hooks, **extra)
                masks = {name: mask.bool() for name, (_, mask) in zip(masked.names, masked.pairs())}
                stats.update({f"finetune_{k}": v for k, v in finetune_stats.items()})
                if resume_finetune:
                    stats.update(train_seconds=finetune_stats["train_seconds"])
            remove_checkpoint(finetune_policy)

        started = time.perf_counter()
        model.eval()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if rate is not None:  # dense step-quantized tensors, pruned weights coded as zeros
            coded = rate.quantized_parameters()
            tensors = [coded[name] for name in state]
            stats["rate_estimated_payload_bits"] = estimated_payload_bits(tensors)
        else:
            tensors = quantize_weights(state, masks, int(settings["weight_bits"]), settings["quant_axis"])
        total = sum(v.numel() for v in state.values())
        kept = total - sum(int((~m).sum()) for m in masks.values())
        stats.update(
            quantize_seconds=time.perf_counter() - started, decoder_parameters=total, model_size=total,
            kept_parameters=kept, pruned_fraction=(total - kept) / total,
        )
        rate_target = None
        if control is not None:
            # the trained tensors with their float values: their steps are coarsened when the
            # file is written, should it still be above the target
            rate_target = RateTargetSource(wanted_bits, num_frames * height * width,
                                           [TensorGroup(WEIGHTS_GROUP, tensors)], describe_target(settings), self.name,
                                           rate.trained_values())
            settings["rate_control"], stats["rate_control"] = control.record(), control.stats()
        elif wanted_bits is not None:
            # --bpp/--bitrate: full-precision tensors, requantized onto the target when the file is written
            rate_target = RateTargetSource(
                wanted_bits, num_frames * height * width,
                [TensorGroup(WEIGHTS_GROUP, quantize_weights(state, masks, FULL_BITS, settings["quant_axis"]))],
                describe_target(settings), self.name)
        return CompressedVideo(model_header={"config": config.to_dict()}, groups=[TensorGroup(WEIGHTS_GROUP, tensors)],
                               settings=settings, stats=stats, rate_target=rate_target)

    def decompress(self, model_header, groups, num_frames, height, width, *, device="cpu", batch_size=4,
                   frames: range | None = None) -> Iterator[torch.Tensor]:
        try:
            config = self.config_class.from_dict(model_header.get("config"))
        except (TypeError, ValueError) as error:
            raise InvalidBitstreamError(f"bad {self.label} config: {error}") from None
        # The fc grid must be exactly the one that covers the frame: this ties the
        # network's output size (and so its compute) to the bounded media size.
        stride = config.total_stride
        if (config.fc_height, config.fc_width) != (-(-height // stride), -(-width // stride)):
            raise InvalidBitstreamError(f"{self.label} config output size does not match the video size")
        if [group.name for group in groups] != [WEIGHTS_GROUP]:
            raise InvalidBitstreamError(f"{self.label} file has tensor groups {[g.name for g in groups]}")
        # Names and shapes from a network built on the meta device (no memory), so every
        # tensor is checked against the config before anything real is allocated.
        with torch.device("meta"):
            skeleton = self.model_class(config)
        reference = {name: tuple(value.shape) for name, value in skeleton.state_dict().items()}
        prunable = set(nerv_model.prunable_names(skeleton))
        state = dequantize_weights(groups[0].tensors, reference, prunable, self.label)

        device = resolve_device(device)
        model = self.model_class(config)
        model.load_state_dict(state)
        model.to(device).eval()
        encoded_time = model.encode_time(torch.arange(num_frames, dtype=torch.float64) / num_frames)
        frames = range(num_frames) if frames is None else frames
        with torch.no_grad():
            for start in range(frames.start, frames.stop, batch_size):
                # One frame per forward pass: matrix products take other code paths for
                # other batch sizes, and the decoded pixels must not depend on --batch-size.
                stop = min(start + batch_size, frames.stop)
                outputs = [model(encoded_time[i : i + 1].to(device)) for i in range(start, stop)]
                yield torch.cat(outputs)[..., :height, :width].cpu()


@register_codec("nerv")
class NeRVCodec(_NeRVFamilyCodec):
    model_module = nerv_model
    config_class = nerv_model.NeRVConfig
    model_class = nerv_model.NeRV
    label = "NeRV"


@register_codec("nervpp")
class NeRVPPCodec(_NeRVFamilyCodec):
    model_module = nervpp_model
    config_class = nervpp_model.NeRVPPConfig
    model_class = nervpp_model.NeRVPP
    label = "NeRV++"
