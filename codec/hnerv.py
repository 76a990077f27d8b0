"""The HNeRV video codec: fit HNeRV to a clip, quantize, and hand tensors to the bitstream.

Encoding: solve a config for the target size, train encoder + decoder end to end, run
the encoder once more to get every frame's embedding, then quantize decoder weights
(8-bit) and embeddings (6-bit) with HNeRV's lowest-error axis rule.  The encoder is
thrown away.  Decoding: rebuild the decoder from the header, load the dequantized
weights, run it on the dequantized embeddings in batches, crop the padding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..bitstream import QuantizedTensor, TensorGroup, quantize_best_axis, quantize_lowest_cost_axis
from ..errors import InvalidBitstreamError, NncError
from ..models.hnerv import (
    HNeRV,
    HNeRVConfig,
    HNeRVDecoder,
    decoder_parameter_count,
    embedding_element_count,
    solve_config,
)
from .base import Codec, CompressedVideo, VideoCodecOptions, frames_to_float, option, resolve_device
from .registry import register_codec
from .rate_control import rate_control
from .rate_distortion import RateDistortion, parameter_groups, RateDistortionOptions, estimated_payload_bits
from .planning import DEFAULT_SIZE_HELP, Phase, make_planner, video_recipe
from .rate_target import (FULL_BITS, RateTargetOptions, RateTargetSource, choose_model_size, describe_target,
                          full_precision_bits, planned_file_bits, target_bits)
from .training import TrainSettings, fit

WEIGHTS_GROUP = "weights"
EMBEDDINGS_GROUP = "embeddings"
EMBEDDINGS_TENSOR = "embeddings"

AXIS_RULES = {"cost": quantize_lowest_cost_axis, "error": quantize_best_axis}


def pad_to(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Replicate-pad (N, 3, h, w) to (N, 3, height, width); padding is never scored."""
    pad_h, pad_w = height - frames.shape[-2], width - frames.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return frames
    return F.pad(frames, (0, pad_w, 0, pad_h), mode="replicate")


def quantize_state(state: dict[str, torch.Tensor], bits: int, rule: str) -> list[QuantizedTensor]:
    quantize = AXIS_RULES[rule]
    return [quantize(t.detach().cpu().float().numpy(), bits, name=name) for name, t in state.items()]


@dataclass
class HNeRVOptions(RateTargetOptions, RateDistortionOptions, VideoCodecOptions):
    """HNeRV's published bunny recipe (README of the authors' code); ``--lambda`` trains
    for rate and distortion instead (:mod:`nnc.codec.rate_distortion`)."""

    size: float | None = option(None, f"Model size in parameters (decoder + all embeddings; {DEFAULT_SIZE_HELP}).",
                                low=1)
    epochs: int = option(300, "Training epochs.", low=1)
    batch_size: int = option(2, "Frames per training step.", low=1)
    lr: float = option(1e-3, "Peak learning rate.", low=0, low_open=True)
    loss: str = option("l2", "Training loss: l2, or fusion6 = 0.7 L1 + 0.3 (1 - SSIM).", choices=("l2", "fusion6"))
    weight_bits: int = option(8, "Quantization bits of weights.", low=2, high=16)
    embed_bits: int = option(6, "Quantization bits of embeddings.", low=2, high=16)
    quant_axis: str = option("cost", "Per-tensor or per-channel quantization: 'cost' counts the per-channel "
                                     "parameters' bits, 'error' is HNeRV's lowest-error rule.", choices=tuple(AXIS_RULES))


@register_codec("hnerv")
class HNeRVCodec(Codec):
    Options = HNeRVOptions
    config_class = HNeRVConfig

    def compress(self, video, options: HNeRVOptions) -> CompressedVideo:
        options.validate()
        settings = options.settings()
        device = resolve_device(options.device)
        info = video.info
        num_frames, height, width = video.frames.shape[:3]
        if settings["size"] is None:  # recorded resolved, so the header says what was used
            settings["size"] = choose_model_size(
                settings, video, lambda size: solve_config(height, width, num_frames, size),
                int(settings["weight_bits"]), self.name)
        try:
            config = solve_config(height, width, num_frames, float(settings["size"]))
        except ValueError as error:
            raise NncError(str(error)) from None
        torch.manual_seed(options.seed)
        model = HNeRV(config).to(device)
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        padded_h, padded_w = config.padded_height, config.padded_width

        def reconstruct(indices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            output, _ = model(pad_to(target, padded_h, padded_w))
            return output[..., :height, :width]

        train = TrainSettings(
            epochs=int(settings["epochs"]), batch_size=int(settings["batch_size"]), lr=float(settings["lr"]),
            loss=settings["loss"], seed=options.seed, show_progress=options.show_progress,
            description=f"hnerv {width}x{height}x{num_frames}",
        )
        decoder_values, embedding_values = decoder_parameter_count(config), embedding_element_count(config, num_frames)
        wanted_bits = target_bits(settings, num_frames, height, width, info.fps)
        planner = make_planner(options, video_recipe(
            self.name, video, [Phase("train", train.epochs, -(-num_frames // train.batch_size))],
            decoder_values + embedding_values,
            planned_file_bits(decoder_values * int(settings["weight_bits"])
                              + embedding_values * int(settings["embed_bits"]), wanted_bits),
            size_is_target=wanted_bits is not None))
        hooks = [planner]
        rate = embedding_quantizer = control = None
        if settings.get("rate_lambda") is not None:
            # Rate-distortion training: decoder weights and embeddings are trained through
            # their learned-step quantizers, and the loss pays for their estimated bits.
            rate = RateDistortion(float(settings["rate_lambda"]), num_frames * height * width,
                                  int(settings["weight_bits"]), settings["qat_rounding"])
            rate.quantize_parameters(model.decoder)
            with torch.no_grad():
                sample = model.encoder(pad_to(frames_to_float(video.frames[: train.batch_size], video.max_value)
                                              .to(device), padded_h, padded_w))
            embedding_quantizer = rate.quantize_output(model.encoder, sample, num_frames,
                                                       init_bits=int(settings["embed_bits"]))
            model.embedding_quantizer = embedding_quantizer  # its steps are trained and checkpointed
            term = rate.rate_term()
            hooks.append(term)
            # --bpp/--bitrate: lambda adapts towards the target (after the term: it reads its bits)
            control = rate_control(term, wanted_bits, rate.step_values(), rate.coded_tensors())
            if control is not None:
                hooks.append(control)
        model.train()
        policy = options.checkpoint_policy(video.frames, dict(settings, codec=self.name, config=config.to_dict()))
        groups = None
        if rate is not None:
            # the learned steps at their own learning rate (rate_distortion.STEP_LR: at the
            # network's lr they stay near their initial bits and lambda barely acts)
            groups = parameter_groups(model, rate.step_modules(), train.lr)
        stats = fit(reconstruct, model, video.frames, video.max_value, train, device, policy, hooks=hooks,
                    param_groups=groups)
        stats["plan"] = planner.plan()

        started = time.perf_counter()
        model.eval()
        if embedding_quantizer is not None:
            embedding_quantizer.enabled = False  # the raw embeddings: quantized below, exactly once
        embeddings = []
        with torch.no_grad():
            for start in range(0, num_frames, 8):
                batch = frames_to_float(video.frames[start : start + 8], video.max_value).to(device)
                embeddings.append(model.encoder(pad_to(batch, padded_h, padded_w)).cpu())
        embedding = torch.cat(embeddings)
        if rate is not None:
            weights = list(rate.quantized_parameters().values())
            embedded = [embedding_quantizer.quantizer.cpu().quantize(embedding, EMBEDDINGS_TENSOR)]
            stats["rate_estimated_payload_bits"] = estimated_payload_bits(weights + embedded)
        else:
            decoder_state = {k: v.contiguous() for k, v in model.decoder.state_dict().items()}
            weights = quantize_state(decoder_state, int(settings["weight_bits"]), settings["quant_axis"])
            embedded = [AXIS_RULES[settings["quant_axis"]](embedding.numpy(), int(settings["embed_bits"]),
                                                           name=EMBEDDINGS_TENSOR)]
        groups = [TensorGroup(WEIGHTS_GROUP, weights), TensorGroup(EMBEDDINGS_GROUP, embedded)]
        rate_target = None
        if control is not None:
            # the trained tensors with their float values: their steps are coarsened when the
            # file is written, should it still be above the target
            rate_target = RateTargetSource(wanted_bits, num_frames * height * width, groups, describe_target(settings),
                                           self.name, {**rate.trained_values(), EMBEDDINGS_TENSOR: embedding.numpy()})
            settings["rate_control"], stats["rate_control"] = control.record(), control.stats()
        elif wanted_bits is not None:
            # --bpp/--bitrate: full-precision tensors, requantized onto the target when the file is written
            rule = settings["quant_axis"]
            embed_bits = full_precision_bits(int(settings["embed_bits"]), int(settings["weight_bits"]))
            rate_target = RateTargetSource(wanted_bits, num_frames * height * width, [
                TensorGroup(WEIGHTS_GROUP, quantize_state(decoder_state, FULL_BITS, rule)),
                TensorGroup(EMBEDDINGS_GROUP, [AXIS_RULES[rule](embedding.numpy(), embed_bits,
                                                                name=EMBEDDINGS_TENSOR)])],
                describe_target(settings), self.name)
        stats.update(
            quantize_seconds=time.perf_counter() - started,
            decoder_parameters=decoder_parameter_count(config),
            embedding_elements=embedding_element_count(config, num_frames),
        )
        stats["model_size"] = stats["decoder_parameters"] + stats["embedding_elements"]
        return CompressedVideo(model_header={"config": config.to_dict()}, groups=groups, settings=settings, stats=stats,
                               rate_target=rate_target)

    def decompress(self, model_header, groups, num_frames, height, width, *, device="cpu", batch_size=4,
                   frames: range | None = None) -> Iterator[torch.Tensor]:
        decoder, embedding = load_decoder(model_header, groups, num_frames, height, width)
        device = resolve_device(device)
        # channels_last: oneDNN's convolutions and PixelShuffle run 1.3-1.4x faster on it
        # on the CPU (benchmarks/decode_speed.py measures both layouts); values agree to
        # float32 rounding (the golden test's tolerance).
        decoder.to(device, memory_format=torch.channels_last).eval()
        frames = range(num_frames) if frames is None else frames
        with torch.inference_mode():
            for start in range(frames.start, frames.stop, batch_size):
                stop = min(start + batch_size, frames.stop)
                output = decoder(embedding[start:stop].to(device).contiguous(memory_format=torch.channels_last))
                yield output[..., :height, :width].contiguous().cpu()


def load_decoder(model_header, groups, num_frames: int, height: int, width: int) -> tuple[HNeRVDecoder, torch.Tensor]:
    """The file's decoder (dequantized weights, on the CPU, default memory layout) and its
    dequantized embeddings (num_frames, C, h, w), after checking both against the config."""
    try:
        config = HNeRVConfig.from_dict(model_header.get("config"))
    except (TypeError, ValueError) as error:
        raise InvalidBitstreamError(f"bad HNeRV config: {error}") from None
    # The embedding grid must be exactly the one that covers the frame: this ties the
    # decoder's output size (and so its compute) to the bounded media size.
    stride = config.total_stride
    if (config.embed_height, config.embed_width) != (-(-height // stride), -(-width // stride)):
        raise InvalidBitstreamError("HNeRV config output size does not match the video size")
    by_name = {group.name: group for group in groups}
    if set(by_name) != {WEIGHTS_GROUP, EMBEDDINGS_GROUP}:
        raise InvalidBitstreamError(f"HNeRV file has tensor groups {sorted(by_name)}")
    # Check shapes against the config before building anything big from them.
    expected_params = decoder_parameter_count(config)
    declared = sum(int(np.prod(t.symbols.shape)) for t in by_name[WEIGHTS_GROUP].tensors)
    if declared != expected_params:
        raise InvalidBitstreamError("HNeRV weights do not match the config")
    embed = {t.name: t for t in by_name[EMBEDDINGS_GROUP].tensors}
    if list(embed) != [EMBEDDINGS_TENSOR] or tuple(embed[EMBEDDINGS_TENSOR].symbols.shape) != (
        num_frames, *config.embedding_shape,
    ):
        raise InvalidBitstreamError("HNeRV embeddings do not match the config and frame count")

    decoder = HNeRVDecoder(config)
    state = decoder.state_dict()
    weights = {t.name: t for t in by_name[WEIGHTS_GROUP].tensors}
    if set(weights) != set(state):
        raise InvalidBitstreamError("HNeRV weight names do not match the decoder")
    for name, reference in state.items():
        values = weights[name].dequantize()
        if tuple(values.shape) != tuple(reference.shape):
            raise InvalidBitstreamError(f"HNeRV weight {name} has shape {values.shape}")
        state[name] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    decoder.load_state_dict(state)
    embedding = torch.from_numpy(np.ascontiguousarray(embed[EMBEDDINGS_TENSOR].dequantize(), dtype=np.float32))
    return decoder, embedding
