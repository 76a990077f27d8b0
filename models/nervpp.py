"""NeRV++: an enhanced implicit neural video representation (Ghorbel & Hamidouche, ICIP 2024).

NeRV's frame-index input and upsampling, with three changes (authors' released code):

* a gated MLP stem: fc to 2 x stem_dim, x * GELU(z), fc to the grid (no activation after);
* each stage is a NeRV++ block: a 1x1 projection (C -> C') whose output is kept as the
  skip, a gated separable-conv residual block (1x1 to 2 x hidden, GELU gate, depthwise
  5x5 on part of the channels, 1x1 back, residual), the NeRV upsampling block (conv3x3 ->
  PixelShuffle -> swish), a separable-conv residual block (depthwise 3x3 -> 1x1 -> GELU
  -> 1x1, residual), plus the bilinearly upsampled skip;
* a 1x1 head on the last stage, output (tanh(x) + 1) / 2.

Sizes: the authors' XS/S/M/L models differ only in the stem output grid's channels
(fc_dim 8/26/58/112 on a 9x16 grid, lower width 80).  This module knows nothing about files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import config_field
from .nerv import MAX_WIDTH, NeRV, NeRVBlock, NeRVConfig, choose_grid, solve_for_size

PAPER_LOWER_WIDTH = 80
GATE_EXPANSION = 8 / 3  # hidden width of the gated block: int(8/3 * C) (authors' code)
PRESETS = {"XS": 8, "S": 26, "M": 58, "L": 112}  # fc_dim of the 9x16x fc_dim stem output


@dataclass
class NeRVPPConfig(NeRVConfig):
    lower_width: int = config_field(PAPER_LOWER_WIDTH, low=1, high=MAX_WIDTH)

    def gate_hidden(self, channels: int) -> int:
        return int(GATE_EXPANSION * channels)

    def parameter_count(self) -> int:
        return parameter_count(self)


class GatedSeparableBlock(nn.Module):
    """Gated CNN block: fc1 (C -> 2h) split into gate g (h), identity part (h - C) and
    conv part (C, depthwise 5x5); fc2(GELU(g) * [i, conv(c)]) + x."""

    def __init__(self, channels: int, hidden: int, kernel: int = 5):
        super().__init__()
        self.split = (hidden, hidden - channels, channels)
        self.fc1 = nn.Conv2d(channels, 2 * hidden, 1)
        self.conv = nn.Conv2d(channels, channels, kernel, 1, kernel // 2, groups=channels)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, identity, conv = torch.split(self.fc1(x), self.split, dim=1)
        mixed = torch.cat((identity, self.conv(conv)), dim=1)
        return x + self.fc2(F.gelu(gate) * mixed)


class SeparableResidualBlock(nn.Module):
    """depthwise 3x3 -> 1x1 -> GELU -> 1x1, plus the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.depthwise(x))))


class NeRVPPBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, hidden: int, act: str):
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        self.pre = GatedSeparableBlock(out_channels, hidden)
        self.up = NeRVBlock(out_channels, out_channels, stride, act)
        self.post = SeparableResidualBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.proj(x)
        x = self.post(self.up(self.pre(skip)))
        if self.stride > 1:
            skip = F.interpolate(skip, scale_factor=self.stride, mode="bilinear", align_corners=False)
        return x + skip


class GatedStem(nn.Module):
    """fc (2L -> 2 stem_dim), x * GELU_tanh(z), fc (stem_dim -> fc_dim fc_h fc_w)."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, 2 * hidden)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(x * F.gelu(z, approximate="tanh"))


class NeRVPP(NeRV):
    """Positional encoding (B, 2L) -> frames (B, 3, fc_h * S, fc_w * S) in [0, 1].

    NeRV's layout with NeRV++'s gated stem and its residual/separable stages.
    """

    @staticmethod
    def make_stem(config: NeRVPPConfig) -> nn.Module:
        return GatedStem(config.embed_length, config.stem_dim, config.stem_outputs)

    @staticmethod
    def make_stage(config: NeRVPPConfig, width: int, new_width: int, stride: int) -> nn.Module:
        return NeRVPPBlock(width, new_width, stride, config.gate_hidden(new_width), config.activation)


def parameter_count(config: NeRVPPConfig) -> int:
    """Parameters (weights and biases), computed without building the network."""
    stem = config.stem_dim
    count = config.embed_length * 2 * stem + 2 * stem + stem * config.stem_outputs + config.stem_outputs
    width = config.fc_dim
    for stride, n in zip(config.strides, config.stage_widths()):
        hidden = config.gate_hidden(n)
        count += width * n + n  # projection
        count += n * 2 * hidden + 2 * hidden + n * 25 + n + hidden * n + n  # gated block
        count += n * n * stride * stride * 9 + n * stride * stride  # upsampling
        count += n * 9 + n + 2 * (n * n + n)  # separable residual block
        width = n
    return count + width * 3 + 3


def preset_config(name: str, height: int = 720, width: int = 1280) -> NeRVPPConfig:
    """The authors' XS/S/M/L models (by stem output channels) on this frame size's grid."""
    try:
        fc_dim = PRESETS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown NeRV++ preset {name!r}; use one of {', '.join(PRESETS)}") from None
    strides, grid_h, grid_w = choose_grid(height, width)
    config = NeRVPPConfig(strides=strides, fc_height=grid_h, fc_width=grid_w, fc_dim=fc_dim)
    config.validate()
    return config


def solve_config(height: int, width: int, num_frames: int, target_size: float, **overrides) -> NeRVPPConfig:
    """A NeRV++ config for this video whose parameter count is closest to ``target_size``
    (fc_dim is the knob; below the S preset the lower width shrinks with it)."""
    strides, grid_h, grid_w = choose_grid(height, width)
    base = dict(strides=strides, fc_height=grid_h, fc_width=grid_w)
    base.update(overrides)
    return solve_for_size(NeRVPPConfig(**base), target_size, "NeRV++", PAPER_LOWER_WIDTH)
