"""NIRVANA: neural implicit representations of videos with adaptive networks and
autoregressive patch-wise modelling (Maiya et al., CVPR 2023).

The video is cut into groups of G consecutive frames and every group gets its own
small network.  The network maps the centre coordinate of each P x P patch of the
frame through SIREN layers (sin(w0 * (W x + b)), w0 = 30) to a small feature map per
patch; the patches' feature maps are laid side by side into one map of the frame, a
fixed sinusoidal code of the frame's position in the group is added (one copy per
frame), and grouped conv3x3 -> PixelShuffle stages (one convolution group per frame)
upsample it to G RGB frames.

Independent patches (``independent_patches``, the paper's design and the default of new
files): the upsampler runs on each patch's own feature map (a batch of patches, each
convolution zero-padded at the patch's border), so a patch's pixels depend only on its
own coordinate and the group's weights: any region decodes from its patches alone, and
patches decode in parallel.  Files written before this field existed ran the upsampler
over the assembled map of the frame (neighbouring patches seeing each other, no block
edges); their header lacks the field, which reads as ``False``, and they decode as before.

Any resolution: the frame is padded to whole patches (the network renders the padded
frame) and cropped on decode.

The last convolution outputs 3 s^2 channels per frame that PixelShuffle turns into
the RGB frames, so no convolution runs at full resolution (cheap enough for CPUs).

This module knows nothing about files or quantization: it defines the network, its
configuration dataclass (written into the bitstream header, so ``validate`` bounds
every field) and the size solver.  ``--params`` counts the parameters of ONE group's
network (every group's network has the same shape; how many bits each costs is set by
the rate term, not by the size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, config_field

# Bounds for configurations read from untrusted headers.
MAX_GROUP_SIZE = 64
MAX_PATCH_SIZE = 256
MAX_WIDTH = 1024
MAX_SIREN_LAYERS = 8
MAX_STAGES = 6
MAX_STRIDE = 8
MAX_PARAMETERS = 1 << 24  # one group's network
# Largest feature map (elements) one group's forward pass may hold, so a crafted
# header cannot make the decoder allocate without bound.
MAX_ACTIVATION_ELEMENTS = 1 << 29
MAX_GRID = 16384

# SIREN's published frequency factor, used by NIRVANA's code.
W0 = 30.0


@dataclass
class NIRVANAConfig(ModelConfig):
    """One group's network (all groups share it)."""

    group_size: int = config_field(4, low=1, high=MAX_GROUP_SIZE)  # G frames rendered by one network
    # P: side of the square patch one SIREN coordinate renders
    patch_size: int = config_field(16, low=1, high=MAX_PATCH_SIZE)
    siren_width: int = config_field(64, low=1, high=MAX_WIDTH)
    # sine layers (the first takes the 2-D coordinate)
    siren_layers: int = config_field(3, low=1, high=MAX_SIREN_LAYERS)
    # channels of the patch feature map the SIREN outputs
    feature_channels: int = config_field(16, low=1, high=MAX_WIDTH)
    # channels per frame inside the upsampler
    upsampler_channels: int = config_field(8, low=1, high=MAX_WIDTH)
    # PixelShuffle factors
    strides: list[int] = config_field(default_factory=lambda: [2, 2], low=1, high=MAX_STRIDE, length=(1, MAX_STAGES))
    w0: float = config_field(W0, low=1.0, high=100.0)
    # The patch grid covering the frame.  Stored (not derived from the media header) so
    # that the config alone bounds the decoder's work: the decoder checks that it is
    # exactly the grid of the video's size.
    rows: int = config_field(1, low=1, high=MAX_GRID)
    cols: int = config_field(1, low=1, high=MAX_GRID)
    # True: the upsampler runs per patch (each patch decodes alone); False: over the
    # assembled frame (files written before the field existed).
    independent_patches: bool = config_field(False)

    @property
    def total_stride(self) -> int:
        return math.prod(self.strides)

    @property
    def feature_size(self) -> int:
        """Side of the feature map per patch (P / total stride)."""
        return self.patch_size // self.total_stride

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patches per column and per row covering a height x width frame."""
        return -(-height // self.patch_size), -(-width // self.patch_size)

    def parameter_count(self) -> int:
        return parameter_count(self)

    def activation_elements(self) -> int:
        """Elements of the largest feature map of one forward pass over the grid."""
        rows, cols = self.rows, self.cols
        side = self.feature_size
        largest = self.group_size * self.feature_channels * (rows * side) * (cols * side)
        for stride in self.strides[:-1]:
            side *= stride
            # a stage's convolution output holds as many elements as its shuffled output
            largest = max(largest, self.group_size * self.upsampler_channels * (rows * side) * (cols * side))
        return max(largest, self.group_size * 3 * (rows * self.patch_size) * (cols * self.patch_size))

    def check_consistency(self) -> None:
        if self.patch_size % self.total_stride:
            raise ValueError(f"model config patch_size {self.patch_size} is not a multiple of the strides' product")
        if self.feature_channels * self.feature_size**2 > 1 << 16:
            raise ValueError("model config feature map per patch exceeds the format's bounds")
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError("model config describes more parameters than a group network may have")
        if self.activation_elements() > MAX_ACTIVATION_ELEMENTS:
            raise ValueError("model config renders frames too large for one forward pass")


# --------------------------------------------------------------------------- network


def patch_centres(rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, 2) patch-centre coordinates (y, x) in (-1, 1), row-major."""
    ys = (torch.arange(rows, dtype=torch.float64) + 0.5) / rows * 2 - 1
    xs = (torch.arange(cols, dtype=torch.float64) + 0.5) / cols * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2).float()


def temporal_code(group_size: int, channels: int) -> torch.Tensor:
    """(G, channels) fixed sinusoidal code of each frame's position in its group:
    sin and cos of 2^k * pi * (j + 0.5) / G for frame j; computed in float64 so every
    machine adds the same numbers."""
    position = (torch.arange(group_size, dtype=torch.float64) + 0.5) / group_size
    levels = torch.arange(channels, dtype=torch.float64) // 2
    angles = position[:, None] * math.pi * torch.pow(2.0, levels)[None, :]
    phase = (torch.arange(channels) % 2 == 1)[None, :]
    return torch.where(phase, torch.cos(angles), torch.sin(angles)).float()


class SineLayer(nn.Module):
    """SIREN layer sin(w0 (W x + b)) with SIREN's initialisation."""

    def __init__(self, in_features: int, out_features: int, w0: float, first: bool):
        super().__init__()
        self.w0 = float(w0)
        self.linear = nn.Linear(in_features, out_features)
        bound = 1.0 / in_features if first else math.sqrt(6.0 / in_features) / self.w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * self.linear(x))


class NIRVANAGroupNet(nn.Module):
    """Patch-centre coordinates -> G frames (G, 3, rows * P, cols * P) in [0, 1]."""

    def __init__(self, config: NIRVANAConfig):
        super().__init__()
        self.config = config
        c = config
        layers = [SineLayer(2, c.siren_width, c.w0, first=True)]
        layers += [SineLayer(c.siren_width, c.siren_width, c.w0, first=False) for _ in range(c.siren_layers - 1)]
        self.siren = nn.Sequential(*layers)
        self.to_features = nn.Linear(c.siren_width, c.feature_channels * c.feature_size**2)
        groups, channels = c.group_size, c.feature_channels
        stages = []
        for stride in c.strides[:-1]:
            # groups=G: every frame has its own filters (NIRVANA's grouped upsampler)
            stages.append(nn.Conv2d(groups * channels, groups * c.upsampler_channels * stride * stride, 3, 1, 1,
                                    groups=groups))
            channels = c.upsampler_channels
        self.stages = nn.ModuleList(stages)
        self.shuffles = nn.ModuleList(nn.PixelShuffle(s) if s > 1 else nn.Identity() for s in c.strides[:-1])
        # The last convolution outputs the RGB of G frames, PixelShuffled to full size:
        # no convolution runs at full resolution (the CPU cost is in the last stages).
        last = c.strides[-1]
        self.head = nn.Conv2d(groups * channels, groups * 3 * last * last, 3, 1, 1, groups=groups)
        self.head_shuffle = nn.PixelShuffle(last) if last > 1 else nn.Identity()
        self.register_buffer("time_code", temporal_code(c.group_size, c.feature_channels), persistent=False)

    def forward_patches(self, coordinates: torch.Tensor) -> torch.Tensor:
        """(N, 2) patch centres -> (N, G, 3, P, P): each patch rendered on its own (the
        upsampler's convolutions zero-padded at the patch border), so a patch's pixels
        do not depend on which other patches are rendered with it."""
        c = self.config
        side = c.feature_size
        count = coordinates.shape[0]
        patches = self.to_features(self.siren(coordinates)).view(count, 1, c.feature_channels, side, side)
        x = patches + self.time_code.view(1, c.group_size, c.feature_channels, 1, 1)  # (N, G, C, f, f)
        x = x.reshape(count, c.group_size * c.feature_channels, side, side)
        for conv, shuffle in zip(self.stages, self.shuffles):
            x = F.gelu(shuffle(conv(x)))
        x = self.head_shuffle(self.head(x))
        return (torch.tanh(x.view(count, c.group_size, 3, c.patch_size, c.patch_size)) + 1) * 0.5

    def forward(self, coordinates: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        c = self.config
        if c.independent_patches:
            patches = self.forward_patches(coordinates).view(rows, cols, c.group_size, 3, c.patch_size, c.patch_size)
            return patches.permute(2, 3, 0, 4, 1, 5).reshape(c.group_size, 3, rows * c.patch_size,
                                                              cols * c.patch_size)
        side = c.feature_size
        patches = self.to_features(self.siren(coordinates))  # (rows * cols, C * f * f)
        features = patches.view(rows, cols, c.feature_channels, side, side).permute(2, 0, 3, 1, 4)
        features = features.reshape(1, c.feature_channels, rows * side, cols * side)
        x = features + self.time_code.view(c.group_size, c.feature_channels, 1, 1)  # (G, C, h, w)
        x = x.reshape(1, c.group_size * c.feature_channels, rows * side, cols * side)
        for conv, shuffle in zip(self.stages, self.shuffles):
            x = F.gelu(shuffle(conv(x)))
        x = self.head_shuffle(self.head(x))
        return (torch.tanh(x.view(c.group_size, 3, x.shape[-2], x.shape[-1])) + 1) * 0.5


# --------------------------------------------------------------------------- sizing


def parameter_count(config: NIRVANAConfig) -> int:
    """Parameters of one group's network (weights and biases), without building it."""
    c = config
    count = 2 * c.siren_width + c.siren_width
    count += (c.siren_layers - 1) * (c.siren_width * c.siren_width + c.siren_width)
    outputs = c.feature_channels * c.feature_size**2
    count += c.siren_width * outputs + outputs
    channels = c.feature_channels
    for stride in c.strides[:-1]:
        out = c.group_size * c.upsampler_channels * stride * stride
        count += out * channels * 9 + out
        channels = c.upsampler_channels
    out = c.group_size * 3 * c.strides[-1] ** 2
    count += out * channels * 9 + out
    return count


def scaled_config(width: int, **overrides) -> NIRVANAConfig:
    """The default shape at SIREN width ``width``: feature channels width / 4,
    upsampler channels width / 8 (at least 4 each)."""
    fields = dict(siren_width=width, feature_channels=max(4, width // 4), upsampler_channels=max(4, width // 8))
    fields.update(overrides)
    return NIRVANAConfig(**fields)


def solve_config(height: int, width: int, num_frames: int, size: float, **overrides) -> NIRVANAConfig:
    """The config whose one-group network is closest to ``size`` parameters (SIREN width
    searched in steps of 4); ValueError when no width fits the bounds."""
    if not math.isfinite(size) or size <= 0:
        raise ValueError(f"model size must be a positive number of parameters, got {size!r}")
    best = None
    for siren_width in range(8, MAX_WIDTH + 1, 4):
        config = scaled_config(siren_width, **overrides)
        error = abs(config.parameter_count() - size)
        if best is None or error < best[0]:
            best = (error, config)
        if config.parameter_count() > size:
            break
    rows, cols = best[1].grid(height, width)
    config = replace(best[1], rows=rows, cols=cols, independent_patches=overrides.get("independent_patches", True))
    smallest = scaled_config(8, **overrides).parameter_count()
    if size < 0.5 * smallest:
        raise ValueError(f"--params {size:g} is below NIRVANA's smallest group network ({smallest} parameters)")
    try:
        config.validate()
    except ValueError:
        raise ValueError(f"a {width}x{height} frame group is too large for NIRVANA at this size") from None
    return config
