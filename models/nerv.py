"""NeRV: neural representations for videos (Chen et al., NeurIPS 2021).

The network maps a frame index to the whole frame: the normalised time t = i / T goes
through a positional encoding (sin and cos of b^l * pi * t, l < L), an MLP stem turns
that into a small feature grid (fc_dim x fc_h x fc_w), and conv3x3 -> PixelShuffle ->
activation stages upsample it to the frame.  The bitstream is the network's weights
and nothing else.

This module knows nothing about files or quantization: it defines the network, the
configuration dataclass that travels in the bitstream header, the grid/stride chooser
and the size solver.  :mod:`nnc.models.nervpp` reuses the configuration machinery.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, config_field

# Bounds for configurations read from untrusted headers.
MAX_STAGES = 8
MAX_STRIDE = 8
MAX_WIDTH = 2048
MAX_STEM_DIM = 4096
MAX_PE_LEVELS = 64
MAX_FRAME_SIDE = 16384
MAX_PARAMETERS = 1 << 26  # a .nnc file holds at most 2**26 tensor elements
ACTIVATIONS = ("swish", "gelu")

# NeRV-S on 720x1280 bunny: fc grid 9x16, fc_dim 26, lower width 96 (authors' README).
PAPER_FC_DIM = 26
PAPER_LOWER_WIDTH = 96
# One fc-grid cell covers about 80x80 pixels in the paper's 720p setting (stride 80).
PAPER_CELL = 80
PAPER_GRID_SHORT = 9


@dataclass
class NeRVConfig(ModelConfig):
    """Everything needed to rebuild the network."""

    strides: list[int] = config_field(default_factory=lambda: [5, 2, 2, 2, 2], low=1, high=MAX_STRIDE,
                                      length=(1, MAX_STAGES))
    fc_height: int = config_field(9, low=1, high=MAX_FRAME_SIDE)
    fc_width: int = config_field(16, low=1, high=MAX_FRAME_SIDE)
    # channels of the stem's output grid, solved for a target size
    fc_dim: int = config_field(PAPER_FC_DIM, low=1, high=MAX_WIDTH)
    stem_dim: int = config_field(512, low=1, high=MAX_STEM_DIM)
    # width of the first stage = int(fc_dim * expansion)
    expansion: float = config_field(1.0, low=0.01, high=64.0)
    # later stages: max(width // reduction, lower_width) (no change at stride 1)
    reduction: int = config_field(2, low=1, high=8)
    lower_width: int = config_field(PAPER_LOWER_WIDTH, low=1, high=MAX_WIDTH)
    pe_base: float = config_field(1.25, low=1.0, high=4.0)
    pe_levels: int = config_field(40, low=1, high=MAX_PE_LEVELS)
    activation: str = config_field("swish", choices=ACTIVATIONS)

    @property
    def total_stride(self) -> int:
        return math.prod(self.strides)

    @property
    def padded_height(self) -> int:
        return self.fc_height * self.total_stride

    @property
    def padded_width(self) -> int:
        return self.fc_width * self.total_stride

    @property
    def embed_length(self) -> int:
        return 2 * self.pe_levels

    @property
    def stem_outputs(self) -> int:
        return self.fc_dim * self.fc_height * self.fc_width

    def stage_widths(self) -> list[int]:
        widths, width = [], self.fc_dim
        for i, stride in enumerate(self.strides):
            if i == 0:
                width = max(int(width * self.expansion), 1)
            else:
                width = max(width // (1 if stride == 1 else self.reduction), self.lower_width)
            widths.append(width)
        return widths

    def parameter_count(self) -> int:
        return parameter_count(self)

    def check_consistency(self) -> None:
        if self.padded_height > MAX_FRAME_SIDE or self.padded_width > MAX_FRAME_SIDE:
            raise ValueError("model config output size exceeds the format's bounds")
        if max(self.stage_widths()) > MAX_WIDTH:
            raise ValueError("model config stage width exceeds the format's bounds")
        # Checked last: the count is only meaningful for a config that passed the above.
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError("model config describes more parameters than a .nnc file can hold")


# --------------------------------------------------------------------------- network


def positional_encoding(t: torch.Tensor, base: float, levels: int) -> torch.Tensor:
    """NeRV's frame-index encoding: (B,) t in [0, 1) -> (B, 2L) [sin, cos] per level.

    Computed in float64 on the CPU and rounded to float32, so every device gets the
    same network input (the highest frequency, 1.25^39 * pi ~ 19000 rad, is where
    float32 arithmetic would differ between devices)."""
    t = t.detach().to(device="cpu", dtype=torch.float64).reshape(-1, 1)
    scales = (float(base) ** torch.arange(levels, dtype=torch.float64)) * math.pi
    angles = t * scales
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(t.shape[0], -1).float()


def activation(name: str) -> nn.Module:
    return nn.SiLU() if name == "swish" else nn.GELU()


class NeRVBlock(nn.Module):
    """conv3x3 (C -> C' s^2) -> PixelShuffle(s) -> activation."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: str):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * stride * stride, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(stride) if stride > 1 else nn.Identity()
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class NeRV(nn.Module):
    """Positional encoding (B, 2L) -> frames (B, 3, fc_h * S, fc_w * S) in [0, 1]."""

    def __init__(self, config: NeRVConfig):
        super().__init__()
        self.config = config
        self.stem = self.make_stem(config)
        stages, width = [], config.fc_dim
        for stride, new_width in zip(config.strides, config.stage_widths()):
            stages.append(self.make_stage(config, width, new_width, stride))
            width = new_width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(width, 3, 1)

    # Variants (NeRV++) change the stem and the stages; the rest is shared.
    @staticmethod
    def make_stem(config: NeRVConfig) -> nn.Module:
        return nn.Sequential(
            nn.Linear(config.embed_length, config.stem_dim), activation(config.activation),
            nn.Linear(config.stem_dim, config.stem_outputs), activation(config.activation),
        )

    @staticmethod
    def make_stage(config: NeRVConfig, width: int, new_width: int, stride: int) -> nn.Module:
        return NeRVBlock(width, new_width, stride, config.activation)

    def encode_time(self, t: torch.Tensor) -> torch.Tensor:
        return positional_encoding(t, self.config.pe_base, self.config.pe_levels)

    def forward(self, encoded_time: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = self.stem(encoded_time).view(-1, c.fc_dim, c.fc_height, c.fc_width)
        return (torch.tanh(self.head(self.stages(x))) + 1) * 0.5


def prunable_names(module: nn.Module) -> list[str]:
    """Weights that global magnitude pruning may remove: every Linear/conv weight but
    the RGB head's (NeRV prunes the stem and the stage convolutions)."""
    return [name for name, p in module.named_parameters()
            if name.endswith("weight") and p.ndim >= 2 and not name.startswith("head.")]


# --------------------------------------------------------------------------- sizing


def parameter_count(config: NeRVConfig) -> int:
    """Parameters (weights and biases), computed without building the network."""
    count = config.embed_length * config.stem_dim + config.stem_dim
    count += config.stem_dim * config.stem_outputs + config.stem_outputs
    width = config.fc_dim
    for stride, new_width in zip(config.strides, config.stage_widths()):
        out = new_width * stride * stride
        count += width * out * 9 + out
        width = new_width
    return count + width * 3 + 3


def choose_grid(height: int, width: int, num_stages: int = 5, max_stride: int = 5) -> tuple[list[int], int, int]:
    """Per-stage strides and the fc grid for a frame size.

    NeRV uses strides 5,2,2,2,2 and a 9x16 grid for 720x1280 (5,3,2,2,2 for 1080p): one
    grid cell per ~80 pixels, a short side of 9.  Other sizes get a grid whose short
    side is near min(9, short / 80) (at least 1), with the non-increasing stride list
    (strides of 1 allowed) that wastes the least area on padding, ties broken towards
    balanced strides, mirroring :func:`nnc.models.hnerv.choose_strides`.
    """
    short = min(height, width)
    target = min(float(PAPER_GRID_SHORT), max(1.0, short / PAPER_CELL))
    best = None
    for strides in itertools.combinations_with_replacement(range(max_stride, 0, -1), num_stages):
        total = math.prod(strides)
        grid_h, grid_w = math.ceil(height / total), math.ceil(width / total)
        padding = (grid_h * grid_w * total * total) / (height * width) - 1.0
        grid_penalty = abs(math.log2(max(min(grid_h, grid_w), 1) / target))
        score = (round(padding + 0.1 * grid_penalty, 9), sum(s * s for s in strides))
        if best is None or score < best[0]:
            best = (score, list(strides), grid_h, grid_w)
    return best[1], best[2], best[3]


def lower_width_for(fc_dim: int, paper_lower_width: int = PAPER_LOWER_WIDTH) -> int:
    """The paper's lower width (96) from NeRV-S (fc_dim 26) up; scaled down with fc_dim
    below that, so that small targets get a proportionally thinner network."""
    return min(paper_lower_width, max(1, math.ceil(fc_dim * paper_lower_width / PAPER_FC_DIM)))


def solve_for_size(config, target_size: float, model_name: str, paper_lower_width: int):
    """Set ``config.fc_dim`` (and the lower width tied to it) so that its parameter count
    is as close as possible to ``target_size``; shared by NeRV and NeRV++."""

    def size_for(fc_dim: int) -> int:
        config.fc_dim = fc_dim
        config.lower_width = lower_width_for(fc_dim, paper_lower_width)
        return config.parameter_count()

    smallest = size_for(1)
    if smallest > target_size * 1.05:
        raise ValueError(
            f"target size {target_size:.0f} is below the smallest {model_name} for this video ({smallest} "
            f"parameters at fc_dim 1); raise --params"
        )
    low, high = 1, MAX_WIDTH
    while low < high:  # largest fc_dim whose size does not exceed the target (size grows with fc_dim)
        mid = (low + high + 1) // 2
        if size_for(mid) <= target_size:
            low = mid
        else:
            high = mid - 1
    if low < MAX_WIDTH and abs(size_for(low + 1) - target_size) < abs(size_for(low) - target_size):
        low += 1
    size = size_for(low)
    if abs(size - target_size) > 0.01 * target_size:
        # Small models: one step of fc_dim moves the size by several percent.  Try the
        # neighbouring fc_dims with every lower width up to the paper's, keep the closest.
        best = (abs(size - target_size), low, config.lower_width)
        for fc_dim in range(max(1, low - 1), min(MAX_WIDTH, low + 1) + 1):
            for lower in range(1, paper_lower_width + 1):
                config.fc_dim, config.lower_width = fc_dim, lower
                best = min(best, (abs(config.parameter_count() - target_size), fc_dim, lower))
        config.fc_dim, config.lower_width = best[1], best[2]
    config.validate()
    return config


def solve_config(height: int, width: int, num_frames: int, target_size: float, **overrides) -> NeRVConfig:
    """A NeRV config for this video whose parameter count is closest to ``target_size``.

    ``num_frames`` does not change NeRV's size (no per-frame embeddings); it is taken
    for symmetry with the other models."""
    strides, grid_h, grid_w = choose_grid(height, width)
    base = dict(strides=strides, fc_height=grid_h, fc_width=grid_w)
    base.update(overrides)
    return solve_for_size(NeRVConfig(**base), target_size, "NeRV", PAPER_LOWER_WIDTH)
