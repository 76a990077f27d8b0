"""The PFNR multi-video codec: one network, one session per video, forget-free.

Session ``s`` trains a fresh top-``capacity`` subnetwork (scores re-initialised, free
weights re-initialised from the seed and ``s``) on video ``s`` while every weight an
earlier session used stays frozen at its quantized value; then its new weights are
quantized (8-bit by default) and never touched again.

Bitstream: one tensor group ``session<s>`` per video, in order.  For every masked
layer ``L`` (stem and stages), with U the weights earlier sessions used:

* ``L.reuse0`` .. ``L.reuse3``: session ``s``'s mask over the positions in U, 0/1
  symbols, split into up to four contexts by the rank of the stored weight's
  magnitude (:func:`reuse_contexts`), each in C order;
* ``L.new``: its mask over the positions outside U, 0/1 symbols;
* ``L.values``: the weights at the new positions (those set in ``L.new``), 8-bit
  per-tensor min-max, in C order.

A tensor is omitted when it would be empty (no ``L.reuse*`` in session 0, or an empty context).  Masks are
1-bit minmax tensors entropy coded like everything else, so they are paid for.  Then
``head.weight`` and ``head.bias``: the session's own RGB head.  Decoding video ``s``
reads groups 0..s only, so appending groups can never change it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from ..bitstream import QuantizedTensor, TensorGroup, quantize_lowest_cost_axis, quantize_per_tensor
from ..errors import InvalidBitstreamError, NncError
from ..media import VideoInfo
from ..models import pfnr as pfnr_model
from ..units import plural
from .base import Codec, CodecKind, CodecOptions, CompressedVideo, option, resolve_device
from .planning import Phase, Recipe, SessionPlanner, make_session_planner, raw_bits_per_pixel
from .registry import register_codec
from .training import TrainSettings, fit
from .training_hooks import KeepFrozen

GROUP_PREFIX = "session"
REUSE_SUFFIX = ".reuse"  # + context index: ``L.reuse0`` .. ``L.reuse3``
REUSE_CONTEXTS = 4
REUSE_CONTEXT_MIN_WEIGHTS = 2048  # a layer gets one context per this many used weights (1 to 4)
NEW_SUFFIX = ".new"
VALUES_SUFFIX = ".values"
HEAD_WEIGHT, HEAD_BIAS = "head.weight", "head.bias"

BETAS = (0.5, 0.999)
WARMUP_FRACTION = 0.2
WARMUP_START = 0.1


def group_name(session: int) -> str:
    return f"{GROUP_PREFIX}{session}"


@dataclass
class SetState:
    """What sessions 0..n-1 left, exactly as a decoder rebuilds it from their groups."""

    config: pfnr_model.PFNRConfig
    weights: dict[str, np.ndarray]  # dense float32: dequantized where used, 0 elsewhere
    used: dict[str, np.ndarray]  # bool: used by some session so far
    masks: list[dict[str, np.ndarray]] = field(default_factory=list)  # per session
    heads: list[dict[str, np.ndarray]] = field(default_factory=list)  # per session

    @property
    def sessions(self) -> int:
        return len(self.masks)


def layer_shapes(config: pfnr_model.PFNRConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Masked-weight shapes and head shapes, from a network built on the meta device."""
    with torch.device("meta"):
        skeleton = pfnr_model.PFNR(config, 1)
    layers = {name: tuple(layer.weight.shape) for name, layer in skeleton.masked_layers().items()}
    head = skeleton.heads[0]
    return layers, {HEAD_WEIGHT: tuple(head.weight.shape), HEAD_BIAS: tuple(head.bias.shape)}


def empty_state(config: pfnr_model.PFNRConfig) -> SetState:
    layers, _ = layer_shapes(config)
    return SetState(config, {n: np.zeros(s, np.float32) for n, s in layers.items()},
                    {n: np.zeros(s, bool) for n, s in layers.items()})


def reuse_contexts(stored: np.ndarray) -> np.ndarray:
    """Context 0..REUSE_CONTEXTS-1 of each earlier-used weight: the rank of its stored
    magnitude among the layer's used weights, in equal bins (ties: C order).

    A session's scores start at its weights, so whether it reuses a frozen weight
    depends on that weight's size; coding each bin's bits as its own tensor (own
    adaptive model) turns that into fewer bits.  Both sides know the stored values."""
    # Each context's tensor costs a descriptor (~40 bytes): small layers get fewer.
    count = min(REUSE_CONTEXTS, max(1, stored.size // REUSE_CONTEXT_MIN_WEIGHTS))
    order = np.argsort(np.abs(stored), kind="stable")
    ranks = np.empty(stored.size, np.int64)
    ranks[order] = np.arange(stored.size)
    return ranks * count // max(stored.size, 1)


def _bitmap(name: str, bits: np.ndarray) -> QuantizedTensor:
    return QuantizedTensor(name, bits.astype(np.int32), "minmax", 1, None, np.zeros(1, np.float32),
                           np.ones(1, np.float32))


def _check_bitmap(tensor: QuantizedTensor, length: int) -> np.ndarray:
    if (tensor.shape != (length,) or tensor.scheme != "minmax" or tensor.bits != 1 or tensor.axis is not None
            or float(tensor.offset[0]) != 0.0 or float(tensor.scale[0]) != 1.0):
        raise InvalidBitstreamError(f"PFNR mask {tensor.name} is malformed (expected {length} 0/1 symbols)")
    return np.asarray(tensor.symbols) != 0


def apply_group(state: SetState, group: TensorGroup) -> SetState:
    """The state after one more session, from its group: the decoder's only path (the
    encoder uses it too, so both hold the very same weights and masks)."""
    session = state.sessions
    if group.name != group_name(session):
        raise InvalidBitstreamError(f"PFNR group {session} is named {group.name!r}, expected {group_name(session)!r}")
    by_name: dict[str, QuantizedTensor] = {}
    for tensor in group.tensors:
        if tensor.name in by_name:
            raise InvalidBitstreamError(f"PFNR group {group.name} has tensor {tensor.name!r} twice")
        by_name[tensor.name] = tensor
    layers, heads = layer_shapes(state.config)
    seen = set()

    def take(name: str) -> QuantizedTensor:
        if name not in by_name:
            raise InvalidBitstreamError(f"PFNR group {group.name} lacks tensor {name}")
        seen.add(name)
        return by_name[name]

    weights, used, mask_of = {}, {}, {}
    for name, shape in layers.items():
        before = state.used[name].reshape(-1)
        old_count = int(before.sum())
        mask = np.zeros(before.size, bool)
        if old_count:
            contexts = reuse_contexts(state.weights[name].reshape(-1)[before])
            reuse = np.zeros(old_count, bool)
            for context in range(REUSE_CONTEXTS):
                where = contexts == context
                if where.any():
                    reuse[where] = _check_bitmap(take(f"{name}{REUSE_SUFFIX}{context}"), int(where.sum()))
            mask[before] = reuse
        if old_count < before.size:
            mask[~before] = _check_bitmap(take(name + NEW_SUFFIX), before.size - old_count)
        new = mask & ~before
        dense = state.weights[name].reshape(-1).copy()
        if new.any():
            values = take(name + VALUES_SUFFIX)
            if values.shape != (int(new.sum()),):
                raise InvalidBitstreamError(f"PFNR values {values.name} do not match the mask")
            dense[new] = values.dequantize()
        weights[name], used[name], mask_of[name] = dense.reshape(shape), (before | mask).reshape(shape), mask.reshape(shape)
    head = {}
    for name, shape in heads.items():
        tensor = take(name)
        if tensor.shape != shape:
            raise InvalidBitstreamError(f"PFNR {name} has shape {tensor.shape}, expected {shape}")
        head[name] = tensor.dequantize()
    if set(by_name) != seen:
        raise InvalidBitstreamError(f"PFNR group {group.name} has unexpected tensors {sorted(set(by_name) - seen)[:5]}")
    return SetState(state.config, weights, used, state.masks + [mask_of], state.heads + [head])


def replay(config: pfnr_model.PFNRConfig, groups: list[TensorGroup]) -> SetState:
    state = empty_state(config)
    for group in groups:
        state = apply_group(state, group)
    return state


def session_group(state: SetState, model: pfnr_model.PFNR, bits: int) -> TensorGroup:
    """Quantize session ``state.sessions``'s mask, new weights and head into its group."""
    tensors = []
    for name, layer in model.masked_layers().items():
        mask = pfnr_model.top_fraction_mask(layer.scores, layer.capacity).cpu().numpy().reshape(-1)
        before = state.used[name].reshape(-1)
        weight = layer.weight.detach().cpu().float().numpy().reshape(-1)
        if before.any():
            contexts = reuse_contexts(state.weights[name].reshape(-1)[before])
            for context in range(REUSE_CONTEXTS):
                where = contexts == context
                if where.any():
                    tensors.append(_bitmap(f"{name}{REUSE_SUFFIX}{context}", mask[before][where]))
        if not before.all():
            tensors.append(_bitmap(name + NEW_SUFFIX, mask[~before]))
        new = mask & ~before
        if new.any():
            tensors.append(quantize_per_tensor(weight[new], bits, name=name + VALUES_SUFFIX))
    head = model.heads[0]
    for name, value in ((HEAD_WEIGHT, head.weight), (HEAD_BIAS, head.bias)):
        tensors.append(quantize_lowest_cost_axis(value.detach().cpu().float().numpy(), bits, name=name))
    return TensorGroup(group_name(state.sessions), tensors)


def training_model(state: SetState, capacity: float, seed: int, device: torch.device) -> pfnr_model.PFNR:
    """A one-head network for the next session: frozen weights at their stored values,
    free weights and all scores freshly initialised from (seed, session)."""
    torch.manual_seed(seed * 1000 + state.sessions)
    model = pfnr_model.PFNR(state.config, 1)
    with torch.no_grad():
        for name, layer in model.masked_layers().items():
            used = torch.from_numpy(state.used[name])
            layer.weight[used] = torch.from_numpy(state.weights[name])[used]
            layer.frozen = used
            layer.capacity = capacity
            # Scores start at the weights: the first subnetwork is the largest weights
            # (frozen ones included), which also makes reuse predictable from the stored
            # magnitudes (see reuse_contexts).
            layer.scores.copy_(layer.weight)
    return model.to(device)


def decoding_model(state: SetState, session: int, device: torch.device) -> pfnr_model.PFNR:
    with torch.device("meta"):
        model = pfnr_model.PFNR(state.config, 1)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, layer in model.masked_layers().items():
            layer.weight.copy_(torch.from_numpy(state.weights[name]))
            layer.scores.zero_()
            layer.fixed_mask = torch.from_numpy(state.masks[session][name]).float()
        model.heads[0].weight.copy_(torch.from_numpy(state.heads[session][HEAD_WEIGHT]))
        model.heads[0].bias.copy_(torch.from_numpy(state.heads[session][HEAD_BIAS]))
    model.to(device).eval()
    for layer in model.masked_layers().values():
        layer.fixed_mask = layer.fixed_mask.to(device)
    return model


def frame_times(num_frames: int) -> torch.Tensor:
    return torch.arange(num_frames, dtype=torch.float64) / num_frames


def decode_session(state: SetState, session: int, num_frames: int, height: int, width: int, *,
                   device: str = "cpu", batch_size: int = 4, frames: range | None = None) -> Iterator[torch.Tensor]:
    """Yield batches (N, 3, height, width) in [0, 1] of video ``session``."""
    torch_device = resolve_device(device)
    model = decoding_model(state, session, torch_device)
    frames = range(num_frames) if frames is None else frames
    encoded = model.encode_input(frame_times(num_frames)[frames.start : frames.stop], session)
    with torch.no_grad():
        for start in range(0, len(frames), batch_size):
            # One frame per forward pass: other batch sizes take other code paths, and
            # the decoded pixels must not depend on --batch-size.
            stop = min(start + batch_size, len(frames))
            batch = [model(encoded[i : i + 1].to(torch_device), 0) for i in range(start, stop)]
            yield torch.cat(batch)[..., :height, :width].cpu()


def sessions_recipe(state: SetState, videos: list, options: PFNROptions) -> Recipe:
    """What the sessions after ``state`` learning ``videos`` (in order) will train and add
    to the file, known before training: one phase per session, named as its group, and an
    upper estimate of their bytes before entropy coding.  Each session stores a mask bit
    for every backbone weight (reused ones and free ones), its head and its new weights;
    a session's new weights are at most its capacity of the backbone, and all sessions
    together at most the weights no earlier session used."""
    config = state.config
    batch_size = int(options.batch_size)
    phases = [Phase(group_name(state.sessions + index), int(options.epochs), -(-video.frames.shape[0] // batch_size))
              for index, video in enumerate(videos)]
    backbone, bits = config.backbone_parameter_count(), int(options.weight_bits)
    free = backbone - sum(int(used.sum()) for used in state.used.values())
    new_values = min(free, len(videos) * math.ceil((1.0 - float(options.prune)) * backbone))
    stored_bits = len(videos) * (backbone + config.head_parameter_count() * bits) + new_values * bits
    pixels = raw_bits = 0
    for video in videos:
        count = int(np.prod(video.frames.shape[:3]))
        pixels += count
        raw_bits += count * raw_bits_per_pixel(video.info.pix_fmt, video.info.bit_depth)
    return Recipe(PFNRCodec.name, phases, config.parameter_count(), float(stored_bits), pixels, float(raw_bits))


# --------------------------------------------------------------------------- header


def parse_set_header(model_header: dict) -> tuple[pfnr_model.PFNRConfig, list[VideoInfo]]:
    """The config and the per-video media of a PFNR header (untrusted input)."""
    if not isinstance(model_header, dict):
        raise InvalidBitstreamError("PFNR header has no model section")
    try:
        config = pfnr_model.PFNRConfig.from_dict(model_header.get("config"))
    except (TypeError, ValueError) as error:
        raise InvalidBitstreamError(f"bad PFNR config: {error}") from None
    videos = model_header.get("videos")
    if not isinstance(videos, list) or not 1 <= len(videos) <= config.max_sessions:
        raise InvalidBitstreamError(f"PFNR header must list 1 to {config.max_sessions} videos")
    infos = []
    for index, entry in enumerate(videos):
        try:
            info = VideoInfo.from_dict(entry.get("media") if isinstance(entry, dict) else None)
        except (TypeError, ValueError) as error:
            raise InvalidBitstreamError(f"bad media header of video {index}: {error}") from None
        stride = config.total_stride
        if (config.fc_height, config.fc_width) != (-(-info.height // stride), -(-info.width // stride)):
            raise InvalidBitstreamError(f"PFNR config output size does not match video {index}'s size")
        infos.append(info)
    return config, infos


@dataclass
class PFNROptions(CodecOptions):
    """PFNR trains each session with NeRV's recipe for 150 epochs."""

    size: float = option(1.5e6, "Model size in parameters (the shared backbone).", low=1)
    epochs: int = option(150, "Training epochs of each session.", low=1)
    batch_size: int = option(1, "Frames per training step.", low=1)
    lr: float = option(5e-4, "Peak learning rate.", low=0, low_open=True)
    loss: str = option("fusion6", "Training loss: l2, or fusion6 = 0.7 L1 + 0.3 (1 - SSIM).", choices=("l2", "fusion6"))
    weight_bits: int = option(8, "Quantization bits of the new weights.", low=2, high=16)
    prune: float = option(0.5, "Fraction of each layer a session's mask leaves out (capacity c = 1 - prune).",
                          low=0.05, high=0.95, metavar="FRACTION_LEFT_OUT")
    fso: bool | None = option(None, "Replace one stride-2 stage by the Fourier subneural operator (default: on "
                                    "where the frame size has a stride-2 stage).")
    time_budget: float | None = option(None, "Training time budget of the new sessions (90s, 20m, 2h), wall time "
                                             "from the first training step: they share it in proportion to their "
                                             "planned work, their epochs scaled by one factor (replaces --epochs).",
                                       low=0, low_open=True, metavar="DURATION")
    dry_run: bool = option(False, "Calibrate a few training steps of the first session, print the plan (sessions, "
                                  "epochs, estimated time and size) and exit without writing.")

    def __post_init__(self):
        if self.time_budget is not None:  # "20m" from the command line or the Python API
            from .planning import parse_duration

            self.time_budget = parse_duration(self.time_budget)

    def settings(self) -> dict:
        """The recorded settings: a dry run writes nothing, and the budget is recorded only
        when given, so a set encoded without one keeps the bytes it had before budgets."""
        return {name: value for name, value in super().settings().items()
                if name != "dry_run" and not (name == "time_budget" and value is None)}


@register_codec("pfnr")
class PFNRCodec(Codec):
    """PFNR: several videos in one growing file (``nnc encode a b c --model pfnr``, ``nnc append``)."""

    kind = CodecKind.VIDEO_SET
    Options = PFNROptions
    config_class = pfnr_model.PFNRConfig

    def resolve_settings(self, options: PFNROptions) -> dict:
        if not 0.05 <= float(options.prune) <= 0.95:
            raise NncError("--prune for PFNR is the fraction each session's mask leaves out; use 0.05 to 0.95")
        options.validate()
        settings = {name: value for name, value in options.settings().items() if name != "fso"}
        if options.resume:
            raise NncError("--resume is not supported by --model pfnr (sessions are short; rerun the encode)")
        settings["capacity"] = round(1.0 - float(settings["prune"]), 6)
        return settings

    def new_config(self, height: int, width: int, options: PFNROptions) -> pfnr_model.PFNRConfig:
        try:
            return pfnr_model.solve_config(height, width, float(options.size), fso=options.fso)
        except ValueError as error:
            raise NncError(str(error)) from None

    def fit_session(self, state: SetState, video, options: PFNROptions,
                    planner: SessionPlanner | None = None) -> tuple[TensorGroup, SetState, dict]:
        """Train session ``state.sessions`` on ``video``; its group and the state after it.

        ``planner`` plans this session with the others of the same encode (one budget for
        all of them, :func:`sessions_recipe`); by default this session is planned alone."""
        settings = self.resolve_settings(options)
        config = state.config
        session = state.sessions
        if session >= config.max_sessions:
            raise NncError(f"this PFNR set holds its maximum of {config.max_sessions} videos")
        num_frames, height, width = video.frames.shape[:3]
        stride = config.total_stride
        if (config.fc_height, config.fc_width) != (-(-height // stride), -(-width // stride)):
            raise NncError(f"PFNR sets hold videos of one frame size; this video is {width}x{height}")
        device = resolve_device(options.device)
        model = training_model(state, float(settings["capacity"]), options.seed, device)
        encoded = model.encode_input(frame_times(num_frames), session).to(device)
        frozen = {name: (layer, layer.frozen.to(device), layer.weight.detach()[layer.frozen.to(device)].clone())
                  for name, layer in model.masked_layers().items()}
        for layer, mask, _ in frozen.values():
            layer.frozen = mask

        def reconstruct(indices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return model(encoded[indices.to(encoded.device)], 0)[..., :height, :width]

        if planner is None:
            planner = make_session_planner(options, sessions_recipe(state, [video], options))
        train = TrainSettings(
            epochs=int(settings["epochs"]), batch_size=int(settings["batch_size"]), lr=float(settings["lr"]),
            loss=settings["loss"], betas=BETAS, warmup_fraction=WARMUP_FRACTION, warmup_start=WARMUP_START,
            seed=options.seed + session, show_progress=options.show_progress,
            description=f"pfnr session {session} {width}x{height}x{num_frames}",
            phase=group_name(session),  # the planner's name for this session
        )
        model.train()
        # Without a budget the planner only measures and prints the estimate line: the
        # epochs, and so the bytes, are those of an encode without it.
        stats = fit(reconstruct, model, video.frames, video.max_value, train, device, None,
                    hooks=[KeepFrozen((layer.weight, mask, values) for layer, mask, values in frozen.values()),
                           planner])
        started = time.perf_counter()
        model.eval()
        group = session_group(state, model, int(settings["weight_bits"]))
        new_state = apply_group(state, group)
        kept = {name: int(mask.sum()) for name, mask in new_state.masks[-1].items()}
        reused = {name: int((mask & state.used[name]).sum()) for name, mask in new_state.masks[-1].items()}
        stats.update(
            quantize_seconds=time.perf_counter() - started,
            backbone_parameters=config.backbone_parameter_count(),
            session_parameters=sum(kept.values()),
            reused_parameters=sum(reused.values()),
            new_parameters=sum(kept.values()) - sum(reused.values()),
            used_parameters=sum(int(u.sum()) for u in new_state.used.values()),
            model_size=config.parameter_count(),
        )
        return group, new_state, stats

    def compress(self, video, options: PFNROptions) -> CompressedVideo:
        """A one-video set (session 0); :mod:`nnc.codec.video_set_api` builds longer ones."""
        settings = self.resolve_settings(options)
        config = self.new_config(video.info.height, video.info.width, options)
        group, _, stats = self.fit_session(empty_state(config), video, options)
        header = {"config": config.to_dict(), "videos": [{"media": video.info.to_dict()}]}
        return CompressedVideo(model_header=header, groups=[group], settings=settings, stats=stats)

    def decompress(self, model_header, groups, num_frames, height, width, *, device="cpu", batch_size=4,
                   frames: range | None = None, video_index: int = 0) -> Iterator[torch.Tensor]:
        """Video ``video_index`` of the set (by default the first)."""
        config, infos = parse_set_header(model_header)
        if len(groups) != len(infos):
            raise InvalidBitstreamError(f"PFNR file lists {len(infos)} videos but holds {len(groups)} groups")
        if not 0 <= video_index < len(infos):
            raise NncError(f"video {video_index} does not exist: the file holds {plural(len(infos), 'video')}")
        info = infos[video_index]
        if (info.num_frames, info.height, info.width) != (num_frames, height, width):
            raise InvalidBitstreamError(f"PFNR video {video_index} is {info.width}x{info.height}x{info.num_frames}, "
                                        f"not {width}x{height}x{num_frames}")
        state = replay(config, groups[: video_index + 1])
        yield from decode_session(state, video_index, num_frames, height, width, device=device,
                                  batch_size=batch_size, frames=frames)
