"""PFNR: progressive Fourier neural representation (Kang et al., ICLR 2024).

One NeRV-style network holds several videos learned one after another (sessions).
Its input is the positional encoding of the frame index concatenated with one of the
session index.  Every stem and stage weight has a learned score; session ``s`` uses a
binary mask keeping the top ``capacity`` fraction of each layer's scores (a "winning
subnetwork", trained with straight-through gradients to the scores).  Weights that an
earlier session used are frozen (their gradients are zeroed), so earlier videos keep
decoding exactly as before.  Each video has its own RGB head.

The Fourier subneural operator (FSO) replaces one stride-2 upsampling stage: rFFT2 of
the features, every mode of that spectrum multiplied by learned complex weights
(masked like every other weight), inverse rFFT2 at twice the size.  Keeping all the
stage's modes is the paper's choice (the authors' code sets ``n_modes`` to the
stage's input size, e.g. 45x80 at 720p); files written before issue 14 kept only the
3 lowest (``fso_modes=3`` in their header), which made the stage a low-pass filter,
and still decode with that.

This module knows nothing about files or quantization: it defines the network, its
configuration (written into the bitstream header) and the size solver.  Masked layers
compute ``weight * mask``; the mask is either the current top-``capacity`` selection of
the scores (training) or a fixed tensor (decoding a session).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import check_int, config_field
from .nerv import MAX_PARAMETERS, MAX_STAGES, MAX_STEM_DIM, PAPER_LOWER_WIDTH, NeRVConfig, activation, choose_grid, positional_encoding, solve_for_size

MAX_SESSIONS = 256
MAX_SESSION_LEVELS = 16
MAX_FSO_MODES = 64
ALL_FSO_MODES = 0  # ``fso_modes`` value meaning the stage's whole rFFT2 spectrum
LEGACY_FSO_MODES = 3  # the mode count of PFNR files written before issue 14
# The session index s enters as PE(s / max_sessions) with base 2: distinct sessions get
# clearly distinct inputs (the frame encoding's base 1.25 is made for t in [0, 1)).
SESSION_PE_BASE = 2.0


@dataclass
class PFNRConfig(NeRVConfig):
    """NeRV's configuration plus the session input and the FSO stage."""

    stem_dim: int = config_field(512, low=1, high=MAX_STEM_DIM)
    session_levels: int = config_field(8, low=1, high=MAX_SESSION_LEVELS)
    # session indices are encoded as s / max_sessions; appends stop there
    max_sessions: int = config_field(64, low=1, high=MAX_SESSIONS)
    # index of the stage replaced by the FSO block (-1: none); below len(strides)
    fso_stage: int = config_field(-1, low=-1, high=MAX_STAGES - 1)
    # Kept frequencies: 0 (ALL_FSO_MODES, the paper) every mode of the stage's input;
    # k > 0 (older files) up to 2k rows (both signs) and k columns.
    fso_modes: int = config_field(ALL_FSO_MODES, low=ALL_FSO_MODES, high=MAX_FSO_MODES)

    @property
    def embed_length(self) -> int:
        return 2 * self.pe_levels + 2 * self.session_levels

    @property
    def fso(self) -> bool:
        return self.fso_stage >= 0

    def stage_input_size(self, index: int) -> tuple[int, int]:
        scale = math.prod(self.strides[:index])
        return self.fc_height * scale, self.fc_width * scale

    def fso_shape(self) -> tuple[int, int]:
        """(rows, columns) of the kept rFFT2 modes of the FSO stage's input."""
        height, width = self.stage_input_size(self.fso_stage)
        if self.fso_modes == ALL_FSO_MODES:
            return height, width // 2 + 1
        return min(2 * self.fso_modes, height), min(self.fso_modes, width // 2 + 1)

    def backbone_parameter_count(self) -> int:
        """Masked weights (stem and stages); the layers have no biases."""
        count = self.embed_length * self.stem_dim + self.stem_dim * self.stem_outputs
        width = self.fc_dim
        for index, (stride, new_width) in enumerate(zip(self.strides, self.stage_widths())):
            if index == self.fso_stage:
                rows, columns = self.fso_shape()
                count += width * new_width * rows * columns * 2
            else:
                count += width * new_width * stride * stride * 9
            width = new_width
        return count

    def head_parameter_count(self) -> int:
        return self.stage_widths()[-1] * 3 + 3

    def parameter_count(self) -> int:
        """Backbone plus one head: the model one video decodes with."""
        return self.backbone_parameter_count() + self.head_parameter_count()

    @classmethod
    def from_dict(cls, data: dict):
        # Every header nnc wrote names fso_modes.  Should one lack it, read it with the
        # first files' mode count, not today's default: a missing field must not change
        # what an existing file decodes to.
        if isinstance(data, dict) and "fso_modes" not in data:
            data = dict(data, fso_modes=LEGACY_FSO_MODES)
        return super().from_dict(data)

    def check_consistency(self) -> None:
        # Every field already passed its own bounds (ModelConfig.validate).
        check_int("fso_stage", self.fso_stage, -1, len(self.strides) - 1)
        super().check_consistency()  # NeRV's rules, and the parameter bound through parameter_count
        if self.fso and self.strides[self.fso_stage] != 2:
            raise ValueError(f"model config fso_stage={self.fso_stage} is not a stride-2 stage")
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError("model config describes more parameters than a .nnc file can hold")


# --------------------------------------------------------------------------- masks


def top_fraction_mask(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask of the round(fraction * N) largest |scores| (at least one; ties: the
    earlier index), as WSN selects a layer's winning subnetwork."""
    flat = scores.detach().abs().reshape(-1)
    keep = max(1, int(round(fraction * flat.numel())))
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    mask[torch.sort(flat, descending=True, stable=True).indices[:keep]] = True
    return mask.reshape(scores.shape)


class _StraightThroughMask(torch.autograd.Function):
    """Forward: the binary top-fraction mask; backward: the gradient passes to the scores."""

    @staticmethod
    def forward(ctx, scores, fraction):
        return top_fraction_mask(scores, fraction).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class MaskedWeight(nn.Module):
    """A bias-free weight with per-element scores and a frozen set.

    ``frozen`` marks the weights earlier sessions use: a gradient hook zeroes their
    gradients (and the codec restores their exact values after every step).  With
    ``fixed_mask`` set the layer uses it instead of the scores (decoding one session).
    """

    def __init__(self, shape: tuple[int, ...], fan_in: int):
        super().__init__()
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.scores = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.register_buffer("frozen", torch.zeros(shape, dtype=torch.bool), persistent=False)
        self.capacity = 0.5
        self.fixed_mask: torch.Tensor | None = None
        self.weight.register_hook(lambda grad: grad.masked_fill(self.frozen, 0.0))

    def effective_weight(self) -> torch.Tensor:
        if self.fixed_mask is not None:
            return self.weight * self.fixed_mask
        return self.weight * _StraightThroughMask.apply(self.scores, self.capacity)


class MaskedLinear(MaskedWeight):
    def __init__(self, in_features: int, out_features: int):
        super().__init__((out_features, in_features), in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight())


class MaskedConvUpsample(MaskedWeight):
    """NeRV's stage: conv3x3 (C -> C' s^2) -> PixelShuffle(s), bias-free and masked."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__((out_channels * stride * stride, in_channels, 3, 3), in_channels * 9)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.effective_weight(), padding=1)
        return F.pixel_shuffle(x, self.stride) if self.stride > 1 else x


class FourierUpsample(MaskedWeight):
    """The FSO block: rFFT2, masked complex weights on the kept modes, inverse rFFT2 at 2x.

    The weight is real with a trailing (real, imaginary) axis, shape (C_in, C_out,
    rows, columns, 2), so that it is masked and quantized like every other weight.
    Kept rows are the ceil(rows/2) lowest non-negative and floor(rows/2) lowest
    negative vertical frequencies; they land on the same frequencies of the doubled
    output spectrum.
    """

    def __init__(self, in_channels: int, out_channels: int, rows: int, columns: int):
        super().__init__((in_channels, out_channels, rows, columns, 2), in_channels)
        self.rows, self.columns = rows, columns
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")
        low, high = (self.rows + 1) // 2, self.rows // 2
        rows = torch.cat([spectrum[:, :, :low, : self.columns], spectrum[:, :, height - high :, : self.columns]], dim=2)
        weight = torch.view_as_complex(self.effective_weight().contiguous())
        mixed = torch.einsum("bixy,ioxy->boxy", rows, weight)
        out = torch.zeros(batch, self.out_channels, 2 * height, width + 1, dtype=mixed.dtype, device=x.device)
        out[:, :, :low, : self.columns] = mixed[:, :, :low]
        if high:
            out[:, :, 2 * height - high :, : self.columns] = mixed[:, :, low:]
        # x2 keeps the features' scale: "ortho" spreads the energy over 4x the pixels.
        return torch.fft.irfft2(out, s=(2 * height, 2 * width), norm="ortho") * 2.0


# --------------------------------------------------------------------------- network


class PFNR(nn.Module):
    """(frame index encoding ++ session encoding) -> frames of session ``s``'s head."""

    def __init__(self, config: PFNRConfig, num_heads: int):
        super().__init__()
        self.config = config
        self.stem = nn.Sequential(
            MaskedLinear(config.embed_length, config.stem_dim), activation(config.activation),
            MaskedLinear(config.stem_dim, config.stem_outputs), activation(config.activation),
        )
        stages, width = [], config.fc_dim
        for index, (stride, new_width) in enumerate(zip(config.strides, config.stage_widths())):
            if index == config.fso_stage:
                block = FourierUpsample(width, new_width, *config.fso_shape())
            else:
                block = MaskedConvUpsample(width, new_width, stride)
            stages.append(nn.Sequential(block, activation(config.activation)))
            width = new_width
        self.stages = nn.Sequential(*stages)
        self.heads = nn.ModuleList(nn.Conv2d(width, 3, 1) for _ in range(num_heads))

    def masked_layers(self) -> dict[str, MaskedWeight]:
        """The masked layers by the name of their weight, in a fixed order."""
        return {f"{name}.weight": module for name, module in self.named_modules() if isinstance(module, MaskedWeight)}

    def encode_input(self, t: torch.Tensor, session: int) -> torch.Tensor:
        """(B,) frame times in [0, 1) and a session index -> (B, embed_length)."""
        frame = positional_encoding(t, self.config.pe_base, self.config.pe_levels)
        where = torch.full((frame.shape[0],), session / self.config.max_sessions, dtype=torch.float64)
        return torch.cat([frame, positional_encoding(where, SESSION_PE_BASE, self.config.session_levels)], dim=1)

    def forward(self, encoded: torch.Tensor, head: int) -> torch.Tensor:
        c = self.config
        x = self.stem(encoded).view(-1, c.fc_dim, c.fc_height, c.fc_width)
        return (torch.tanh(self.heads[head](self.stages(x))) + 1) * 0.5


# --------------------------------------------------------------------------- sizing


def fso_stage_for(strides: list[int]) -> int:
    """The stage the FSO replaces: the first stride-2 stage after the first (its input
    already has some spatial extent), else the first stride-2 stage; -1 if none."""
    for index in list(range(1, len(strides))) + [0]:
        if strides[index] == 2:
            return index
    return -1


def solve_config(height: int, width: int, target_size: float, *, fso: bool | None = True, **overrides) -> PFNRConfig:
    """A config for this frame size whose backbone-plus-one-head size is closest to
    ``target_size``.  ``fso`` True demands an FSO stage (ValueError if the frame size
    has no stride-2 stage), None uses one where possible, False none."""
    strides, grid_h, grid_w = choose_grid(height, width)
    stage = fso_stage_for(strides) if fso is not False else -1
    if fso is True and stage < 0:
        raise ValueError(f"--fso needs a stride-2 upsampling stage; a {width}x{height} frame has strides {strides} "
                         "(use --no-fso)")
    base = dict(strides=strides, fc_height=grid_h, fc_width=grid_w, fso_stage=stage)
    base.update(overrides)
    return solve_for_size(PFNRConfig(**base), target_size, "PFNR", PAPER_LOWER_WIDTH)
