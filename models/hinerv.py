"""HiNeRV: hierarchical encoding-based neural representation (Kwan et al., NeurIPS 2023).

The network maps (frame index, patch position) to the pixels of that patch:

1. **Base grid** (hierarchical encoding, level 0): a learned multi-resolution feature
   grid at the first stage's resolution (``base_height x base_width``, the frame size
   divided by the total stride), ``base_grid_levels`` levels, level j with
   ``base_grid_frames / 2^j`` temporal positions and ``base_grid_channels * 2^j``
   channels (authors: 2 levels, level scale 2 in time and 0.5 in channels). It is
   interpolated linearly in time to the frame (``align_corners=False``, border clamp)
   and the levels are concatenated, then a 3x3 conv stem widens them to ``channels``.
2. **Stages** (4 in the authors' configs, strides 5,2,2,2 at 1280x720): LayerNorm
   (no affine) -> bilinear upsampling by the stage stride (no PixelShuffle) -> add
   the stage's **local grid** encoding -> ``depth`` ConvNeXt-style blocks (depthwise
   kxk conv, LayerNorm without affine, Linear(C, e*C) -> GELU -> Linear(e*C, C'),
   residual when C == C'; no biases, as the authors' defaults). Widths: stage 1 keeps
   ``channels``, every later stage's first block divides by ``reduce`` (2.0).
3. **Local grids** (temporal-local, the authors' ``temp_local_grid``): per stage i,
   ``local_grid_levels`` 1-D grids over time, level j with ``frames / 2^j`` positions
   and ``s_i * s_i * C_ij`` values each, ``C_ij = max(int(local_grid_channels *
   0.5^i), 1) * 2^j``; interpolated linearly at the frame's time, the levels are
   concatenated per sub-pixel position and a Linear(sum_j C_ij -> stage input width)
   gives one ``s_i x s_i`` tile of features per frame, added to every output pixel at
   (y mod s_i, x mod s_i): the encoding tells each upsampled pixel where it sits
   inside its source pixel, at the frame's time.
4. **Head**: Linear(C -> 3) -> sigmoid.

**Frames and patches are the same computation.** A call renders a box (``top, left,
height, width`` in the padded output frame, all multiples of the total stride; the
whole frame is the box ``(0, 0, padded_height, padded_width)``). Going backwards from
the box, each level's region is the box at that resolution grown by a margin: the
head is 1x1 (margin 0), a stage's blocks need ``depth * (k - 1) / 2`` extra pixels,
bilinear upsampling by s needs ``ceil(m / s) + 1`` source pixels for m output pixels
of margin, the stem conv ``stem_kernel // 2``. Regions are clipped to the frame at
every level, so the network never sees a position outside the frame: where a region
ends at the frame edge, convolutions zero-pad exactly as they do on the whole frame;
where it ends inside the frame, the margin absorbs the pixels that zero padding
spoils; upsampling and the grids are indexed by global pixel coordinates (bilinear
source indices clamped to the frame, as ``F.interpolate`` does). Patch and whole-frame
outputs therefore agree up to float rounding at most (different tensor shapes may take
different kernels): ``tests/test_hinerv_model.py`` checks tiled renders against the
whole frame (tolerance 1e-6); the measured max abs difference on CPU was exactly 0,
also for the 375k-parameter 320x640 model tiled in 80x80 patches. (The authors
use fixed per-stage paddings from an approximate formula plus masks; this plan is
exact by construction.) Frame sizes that are not multiples of the total stride are
handled like HNeRV here: the network renders the padded frame
``base_height * S x base_width * S`` and the codec crops bottom/right.

**Sizes.** :func:`parameter_counts` counts without building. "Decoder weights" are
stem, local-grid linears, blocks and head; "grids" are the base grid levels plus all
local grid levels (they grow with the frame count and frame area, like HNeRV's
embeddings). The model size is their sum (the authors' "All" count). The authors'
bunny ladder at 1280x720, 132 frames, strides 5,2,2,2 (base 18x32, base grid 40
temporal positions), counted by this module:

=======  ========  ===========  =========  =======  =============  ===========
preset   channels  grid C b/l   decoder    grids    total          paper
=======  ========  ===========  =========  =======  =============  ===========
xxs      136       2 / 4        628,595    138,096  766,691        0.75M (+2%)
xs       196       4 / 8        1,311,058  274,608  1,585,666      1.5M (+6%)
s        280       8 / 16       2,700,603  549,216  3,249,819      3M (+8%)
=======  ========  ===========  =========  =======  =============  ===========

The paper states its bunny sizes as round nominal figures (0.75M / 1.5M / 3M, as
recalled from the paper: its page text could not be re-read in this session). The
counts above follow the authors' code's definitions (their ``get_num_parameters``
"All": decoder state plus base encoding; LayerNorms without affine and bias-free
blocks contribute nothing) and a built :class:`HiNeRV` has exactly these parameters
(tested). The gap grows with the width because the authors pick round channel counts
(136/196/280) rather than solving for the size, and 70% of the "s" model sits in the
three 280-wide first-stage blocks (3 x 629,720). :func:`solve_config` picks a width
for any target: it walks the same ladder (grid channels grow with width^2 as the
presets do: 2/4/8 base and 4/8/16 local channels at widths 136/196/280) and returns
the width whose total is closest to the target.

Stride choice (:func:`choose_strides`): four stages ``[s0, s1, 2, 2]``; the authors
use 5,2,2,2 at 1280x720 and 5,3,2,2 at 1920x1080, i.e. a base cell of
``max(40, short_side / 18)`` pixels (an 18-cell short side at 720p and above, 40-pixel
cells below so the base grid stays proportional to the frame area). The chooser
takes the list with the least padding, then the total stride closest to that cell,
then the larger first stride (the authors' shape): 320x640 gets 5,2,2,2 (base 8x16),
1280x640 5,2,2,2 (16x32), 128x256 4,2,2,2 (4x8).

This module knows nothing about files, quantization or training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, config_field

# Bounds for configurations read from untrusted headers.
MAX_STAGES = 6
MAX_STRIDE = 8
MAX_WIDTH = 2048
MAX_DEPTH = 8
MAX_KERNEL = 9
MAX_EXPANSION = 8.0
MAX_FRAMES = 1 << 16
MAX_FRAME_SIDE = 16384
MAX_GRID_CHANNELS = 256
MAX_GRID_LEVELS = 4
MAX_PARAMETERS = 1 << 26  # a .nnc file holds at most 2**26 tensor elements

GRID_INIT_SCALE = 1e-3  # grids start uniform in [-1e-3, 1e-3] (authors' default)
LAYER_NORM_EPS = 1e-6

# The authors' bunny configs (1280x720, 132 frames): channels, base and local grid
# channels; everything else is shared (depths 3,3,3,1, expansions 4,4,4,1, kernels 3).
PRESETS = {
    "xxs": dict(channels=136, base_grid_channels=2, local_grid_channels=4),
    "xs": dict(channels=196, base_grid_channels=4, local_grid_channels=8),
    "s": dict(channels=280, base_grid_channels=8, local_grid_channels=16),
}
BUNNY_FRAMES = 132
BUNNY_BASE_GRID_FRAMES = 40  # the base grid's temporal size for bunny: ~0.3 per frame
LADDER_WIDTH = 280  # the "s" preset: grid channels scale with (width / 280)^2
LADDER_BASE_CHANNELS = 8
LADDER_LOCAL_CHANNELS = 16


@dataclass
class HiNeRVConfig(ModelConfig):
    """Everything needed to rebuild the network (defaults: the authors' bunny-s at 720p)."""

    # number of frames the grids index (time is t / frames)
    frames: int = config_field(BUNNY_FRAMES, low=1, high=MAX_FRAMES)
    # first-stage grid: padded frame size / total stride
    base_height: int = config_field(18, low=1, high=MAX_FRAME_SIDE)
    base_width: int = config_field(32, low=1, high=MAX_FRAME_SIDE)
    strides: list[int] = config_field(default_factory=lambda: [5, 2, 2, 2], low=1, high=MAX_STRIDE,
                                      length=(1, MAX_STAGES))
    channels: int = config_field(280, low=1, high=MAX_WIDTH)
    # width of stage i > 0 = max(int(previous // reduce), min_channels)
    reduce: float = config_field(2.0, low=1.0, high=4.0)
    min_channels: int = config_field(1, low=1, high=MAX_WIDTH)
    depths: list[int] = config_field(default_factory=lambda: [3, 3, 3, 1], low=1, high=MAX_DEPTH,
                                     length=(1, MAX_STAGES))
    # Below 1 / MAX_WIDTH no stage could have a hidden unit (check_consistency says so).
    expansions: list[float] = config_field(default_factory=lambda: [4.0, 4.0, 4.0, 1.0], low=1 / MAX_WIDTH,
                                           high=MAX_EXPANSION, length=(1, MAX_STAGES))
    kernels: list[int] = config_field(default_factory=lambda: [3, 3, 3, 3], low=1, high=MAX_KERNEL,
                                      length=(1, MAX_STAGES))
    stem_kernel: int = config_field(3, low=1, high=MAX_KERNEL)
    base_grid_frames: int = config_field(BUNNY_BASE_GRID_FRAMES, low=1, high=MAX_FRAMES)
    base_grid_channels: int = config_field(8, low=1, high=MAX_GRID_CHANNELS)
    base_grid_levels: int = config_field(2, low=1, high=MAX_GRID_LEVELS)
    local_grid_channels: int = config_field(16, low=1, high=MAX_GRID_CHANNELS)
    local_grid_levels: int = config_field(3, low=1, high=MAX_GRID_LEVELS)

    @property
    def total_stride(self) -> int:
        return math.prod(self.strides)

    @property
    def padded_height(self) -> int:
        return self.base_height * self.total_stride

    @property
    def padded_width(self) -> int:
        return self.base_width * self.total_stride

    def stage_widths(self) -> list[tuple[int, int]]:
        """(input, output) channels of every stage (the authors' channel rule)."""
        widths, out = [], max(self.channels, self.min_channels)
        for i in range(len(self.strides)):
            inp = self.channels if i == 0 else out
            if i > 0:
                out = max(int(out // self.reduce), self.min_channels)
            widths.append((inp, out))
        return widths

    def base_grid_levels_shape(self) -> list[tuple[int, int]]:
        """(temporal positions, channels) of each base grid level."""
        return [
            (max(self.base_grid_frames >> j, 1), self.base_grid_channels << j) for j in range(self.base_grid_levels)
        ]

    def local_grid_levels_shape(self, stage: int) -> list[tuple[int, int]]:
        """(temporal positions, channels per sub-pixel position) of each level of a stage's local grid."""
        channels = max(int(self.local_grid_channels * 0.5**stage), 1)
        return [(max(self.frames >> j, 1), channels << j) for j in range(self.local_grid_levels)]

    def check_consistency(self) -> None:
        if not len(self.strides) == len(self.depths) == len(self.expansions) == len(self.kernels):
            raise ValueError("model config strides, depths, expansions and kernels differ in length")
        if any(kernel % 2 == 0 for kernel in self.kernels + [self.stem_kernel]):
            raise ValueError("model config kernels must be odd")
        if self.padded_height > MAX_FRAME_SIDE or self.padded_width > MAX_FRAME_SIDE:
            raise ValueError("model config output size exceeds the format's bounds")
        for (_, out), expansion in zip(self.stage_widths(), self.expansions):
            if int(out * expansion) < 1:
                raise ValueError("model config expansion leaves a block without hidden units")
        if sum(parameter_counts(self).values()) > MAX_PARAMETERS:
            raise ValueError("model config asks for more parameters than a file can hold")


# --------------------------------------------------------------------------- sizing


def parameter_counts(config: HiNeRVConfig) -> dict[str, int]:
    """``{"decoder": weights and biases, "grids": base + local grid values}``, without building."""
    base_channels = sum(c for _, c in config.base_grid_levels_shape())
    grids = sum(t * c for t, c in config.base_grid_levels_shape()) * config.base_height * config.base_width
    decoder = base_channels * config.channels * config.stem_kernel**2 + config.channels
    for i, ((c_in, c_out), stride) in enumerate(zip(config.stage_widths(), config.strides)):
        levels = config.local_grid_levels_shape(i)
        grids += sum(t * c for t, c in levels) * stride * stride
        decoder += sum(c for _, c in levels) * c_in + c_in  # the local grid's linear
        hidden = int(c_out * config.expansions[i])
        for j in range(config.depths[i]):
            width = c_in if j == 0 else c_out
            decoder += width * config.kernels[i] ** 2 + width * hidden + hidden * c_out
    decoder += config.stage_widths()[-1][1] * 3 + 3
    return {"decoder": decoder, "grids": grids}


def model_size(config: HiNeRVConfig) -> int:
    """Decoder weights plus every grid value: what the bitstream has to carry."""
    return sum(parameter_counts(config).values())


def choose_strides(height: int, width: int) -> tuple[list[int], int, int]:
    """Strides ``[s0, s1, 2, 2]`` and the base grid size for a frame size (see module doc)."""
    short = min(height, width)
    target_cell = max(40.0, short / 18.0)
    best = None
    for s1 in (1, 2, 3):
        for s0 in range(s1, 7):
            strides = [s0, s1, 2, 2]
            total = math.prod(strides)
            base_h, base_w = math.ceil(height / total), math.ceil(width / total)
            padding = base_h * base_w * total * total / (height * width) - 1.0
            score = (round(padding + 0.25 * abs(math.log2(total / target_cell)), 9), -s0)
            if best is None or score < best[0]:
                best = (score, strides, base_h, base_w)
    return best[1], best[2], best[3]


def base_grid_frames_for(num_frames: int) -> int:
    """The base grid's temporal size: the authors' bunny ratio (40 positions for 132 frames)."""
    return max(1, round(num_frames * BUNNY_BASE_GRID_FRAMES / BUNNY_FRAMES))


def preset_config(name: str, height: int, width: int, num_frames: int) -> HiNeRVConfig:
    """One of the authors' bunny presets (``xxs``, ``xs``, ``s``) for a video of this size."""
    if name not in PRESETS:
        raise ValueError(f"unknown HiNeRV preset {name!r}; choose from {sorted(PRESETS)}")
    strides, base_h, base_w = choose_strides(height, width)
    config = HiNeRVConfig(
        frames=num_frames, base_height=base_h, base_width=base_w, strides=strides,
        base_grid_frames=base_grid_frames_for(num_frames), **PRESETS[name],
    )
    config.validate()
    return config


def _ladder_grid_channels(channels: int) -> tuple[int, int]:
    """Base and local grid channels for a width, following the presets (grow with width^2)."""
    ratio = (channels / LADDER_WIDTH) ** 2
    return max(1, round(LADDER_BASE_CHANNELS * ratio)), max(1, round(LADDER_LOCAL_CHANNELS * ratio))


def solve_config(height: int, width: int, num_frames: int, target_size: float, **overrides) -> HiNeRVConfig:
    """A config for this video whose model size (decoder + grids) is closest to ``target_size``.

    The width is searched; grid channels follow the preset ladder unless given in
    ``overrides`` (any other config field may be overridden too).
    """
    strides, base_h, base_w = choose_strides(height, width)
    base = dict(frames=num_frames, base_height=base_h, base_width=base_w, strides=strides,
                base_grid_frames=base_grid_frames_for(num_frames))
    base.update(overrides)
    fixed_grids = {k: base[k] for k in ("base_grid_channels", "local_grid_channels") if k in base}

    def config_for(channels: int) -> HiNeRVConfig:
        grid_base, grid_local = _ladder_grid_channels(channels)
        fields = dict(base, channels=channels, base_grid_channels=grid_base, local_grid_channels=grid_local)
        fields.update(fixed_grids)
        return HiNeRVConfig(**fields)

    smallest = model_size(config_for(1))
    if smallest > target_size * 1.05:
        raise ValueError(
            f"target size {target_size:.0f} is below the smallest HiNeRV for this video ({smallest} parameters "
            "at width 1); raise --params or shorten the clip"
        )
    # the size grows with the width (grid channels only step up), so bisect then compare neighbours
    low, high = 1, MAX_WIDTH
    while low < high:
        mid = (low + high + 1) // 2
        if model_size(config_for(mid)) <= target_size:
            low = mid
        else:
            high = mid - 1
    candidates = [c for c in (low, low + 1) if c <= MAX_WIDTH]
    best = min(candidates, key=lambda c: abs(model_size(config_for(c)) - target_size))
    config = config_for(best)
    config.validate()
    return config


# --------------------------------------------------------------------------- rendering plan


@dataclass(frozen=True)
class Region:
    """Rows [top, top + height) and columns [left, left + width) of one level's full grid."""

    top: int
    left: int
    height: int
    width: int


def _clipped(start: int, length: int, margin: int, full: int) -> tuple[int, int]:
    low, high = max(0, start - margin), min(full, start + length + margin)
    return low, high - low


def render_plan(config: HiNeRVConfig, box: tuple[int, int, int, int]) -> list[tuple[Region, Region]]:
    """(work, out) regions for an output box at every level: [stem, stage 1, ..., stage n].

    A level computes its ``work`` region (the stem's input grid; a stage's upsampled
    features) and keeps its ``out`` region after its convolutions: the box at that
    resolution plus the margin the later layers consume, grown for ``work`` by what
    this level's own kernels spoil at the edges (see the module docstring). All regions
    are clipped to the frame. The last ``out`` is the box itself.
    """
    top, left, height, width = box
    total = config.total_stride
    if any(v % total for v in box) or height <= 0 or width <= 0:
        raise ValueError(f"box {box} must be positive multiples of the total stride {total}")
    if top + height > config.padded_height or left + width > config.padded_width:
        raise ValueError(f"box {box} exceeds the padded frame {config.padded_height}x{config.padded_width}")
    levels = len(config.strides)
    scales = [total]  # output pixels per pixel of each level: level 0 is the stem/base grid
    for stride in config.strides:
        scales.append(scales[-1] // stride)
    spoiled = [config.stem_kernel // 2] + [d * (k // 2) for d, k in zip(config.depths, config.kernels)]
    margins = [0] * (levels + 1)  # kept after each level's convolutions
    for i in reversed(range(levels)):
        need = margins[i + 1] + spoiled[i + 1]  # upsampled pixels stage i must produce around the box
        margins[i] = need if config.strides[i] == 1 else -(-need // config.strides[i]) + 1
    plan = []
    for scale, margin, spoil in zip(scales, margins, spoiled):
        full_h, full_w = config.padded_height // scale, config.padded_width // scale
        regions = []
        for grow in (margin + spoil, margin):
            rows = _clipped(top // scale, height // scale, grow, full_h)
            cols = _clipped(left // scale, width // scale, grow, full_w)
            regions.append(Region(rows[0], cols[0], rows[1], cols[1]))
        plan.append((regions[0], regions[1]))
    return plan


def _crop(x: torch.Tensor, work: Region, out: Region) -> torch.Tensor:
    """The ``out`` part of channels-last features computed on ``work``."""
    if work == out:
        return x
    top, left = out.top - work.top, out.left - work.left
    return x[:, top:top + out.height, left:left + out.width]


def patch_boxes(config: HiNeRVConfig, patch_height: int, patch_width: int) -> list[tuple[int, int, int, int]]:
    """Boxes tiling the padded frame row by row (the last row/column may be smaller)."""
    total = config.total_stride
    if patch_height % total or patch_width % total or patch_height <= 0 or patch_width <= 0:
        raise ValueError(f"patch {patch_height}x{patch_width} must be a positive multiple of the total stride {total}")
    return [
        (top, left, min(patch_height, config.padded_height - top), min(patch_width, config.padded_width - left))
        for top in range(0, config.padded_height, patch_height)
        for left in range(0, config.padded_width, patch_width)
    ]


# --------------------------------------------------------------------------- layers


def _temporal_lerp(grid: torch.Tensor, frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linear interpolation of ``grid`` (T_grid, ...) at each frame's time (align_corners=False, clamped)."""
    length = grid.shape[0]
    position = ((frames.double() + 0.5) * (length / num_frames) - 0.5).clamp(0, length - 1)
    first = position.floor().long()
    second = (first + 1).clamp(max=length - 1)
    weight = (position - first.double()).to(grid.dtype).view(-1, *([1] * (grid.dim() - 1)))
    return grid.index_select(0, first) * (1 - weight) + grid.index_select(0, second) * weight


def _upsample_axis(x: torch.Tensor, dim: int, source: tuple[int, int], target: tuple[int, int], stride: int,
                   full_source: int) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling along one axis, indexed by global coordinates.

    ``x`` holds source rows [source[0], source[0] + source[1]) of a level ``full_source``
    long; returns target rows [target[0], target[0] + target[1]) of the level ``stride``
    times longer. Source indices are clamped to the level, as ``F.interpolate`` does.
    """
    out = torch.arange(target[0], target[0] + target[1], device=x.device, dtype=torch.float64)
    position = ((out + 0.5) / stride - 0.5).clamp(min=0)
    first = position.floor().long().clamp(max=full_source - 1)
    second = (first + 1).clamp(max=full_source - 1)
    weight = (position - first.double()).clamp(max=1).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = -1
    low = x.index_select(dim, first - source[0])
    high = x.index_select(dim, second - source[0])
    return low + (high - low) * weight.view(shape)


class ConvNeXtBlock(nn.Module):
    """Depthwise kxk conv -> LayerNorm (no affine) -> Linear -> GELU -> Linear, residual if widths match.

    Works on channels-last tensors (B, H, W, C); no biases, as the authors' HiNeRV blocks.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kernel: int):
        super().__init__()
        self.residual = in_channels == out_channels
        self.dwconv = nn.Conv2d(in_channels, in_channels, kernel, padding=kernel // 2, groups=in_channels, bias=False)
        self.norm = nn.LayerNorm(in_channels, eps=LAYER_NORM_EPS, elementwise_affine=False)
        self.fc1 = nn.Linear(in_channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        return x + y if self.residual else y


class BaseGrid(nn.Module):
    """The base of the hierarchical encoding: multi-level temporal x spatial grids at the first stage's size."""

    def __init__(self, config: HiNeRVConfig):
        super().__init__()
        self.frames = config.frames
        self.levels = nn.ParameterList(
            nn.Parameter(torch.empty(t, config.base_height, config.base_width, c).uniform_(-GRID_INIT_SCALE,
                                                                                          GRID_INIT_SCALE))
            for t, c in config.base_grid_levels_shape()
        )

    def forward(self, frames: torch.Tensor, region: Region) -> torch.Tensor:
        """(B,) frame indices -> (B, h, w, sum of level channels) for the region."""
        out = []
        for grid in self.levels:
            cropped = grid[:, region.top:region.top + region.height, region.left:region.left + region.width]
            out.append(_temporal_lerp(cropped, frames, self.frames))
        return torch.cat(out, dim=-1)


class LocalGrid(nn.Module):
    """A stage's temporal-local encoding: per frame, one stride x stride tile of features."""

    def __init__(self, config: HiNeRVConfig, stage: int, channels: int):
        super().__init__()
        self.frames = config.frames
        self.stride = config.strides[stage]
        levels = config.local_grid_levels_shape(stage)
        self.levels = nn.ParameterList(
            nn.Parameter(torch.empty(t, self.stride * self.stride, c).uniform_(-GRID_INIT_SCALE, GRID_INIT_SCALE))
            for t, c in levels
        )
        self.linear = nn.Linear(sum(c for _, c in levels), channels)
        nn.init.zeros_(self.linear.bias)

    def forward(self, frames: torch.Tensor, region: Region) -> torch.Tensor:
        """(B,) frame indices -> (B, h, w, channels): the tile repeated over the region (global phase)."""
        features = torch.cat([_temporal_lerp(grid, frames, self.frames) for grid in self.levels], dim=-1)
        tile = self.linear(features).view(frames.shape[0], self.stride, self.stride, -1)
        device = tile.device
        rows = torch.arange(region.top, region.top + region.height, device=device) % self.stride
        cols = torch.arange(region.left, region.left + region.width, device=device) % self.stride
        return tile.index_select(1, rows).index_select(2, cols)


class Stage(nn.Module):
    """LayerNorm -> bilinear upsampling -> + local grid -> ConvNeXt blocks."""

    def __init__(self, config: HiNeRVConfig, index: int):
        super().__init__()
        c_in, c_out = config.stage_widths()[index]
        self.stride = config.strides[index]
        self.norm = nn.LayerNorm(c_in, eps=LAYER_NORM_EPS, elementwise_affine=False)
        self.encoding = LocalGrid(config, index, c_in)
        hidden = int(c_out * config.expansions[index])
        kernel = config.kernels[index]
        self.blocks = nn.Sequential(
            *[ConvNeXtBlock(c_in if j == 0 else c_out, c_out, hidden, kernel) for j in range(config.depths[index])]
        )

    def forward(self, x: torch.Tensor, frames: torch.Tensor, source: Region, work: Region, out: Region,
                full_source: tuple[int, int]) -> torch.Tensor:
        """Features on ``source`` of the previous level -> features on ``out`` of this level."""
        x = self.norm(x)
        if self.stride > 1:
            x = _upsample_axis(x, 1, (source.top, source.height), (work.top, work.height), self.stride,
                               full_source[0])
            x = _upsample_axis(x, 2, (source.left, source.width), (work.left, work.width), self.stride,
                               full_source[1])
        else:  # stride 1: the work region lies inside the source region
            x = _crop(x, source, work)
        return _crop(self.blocks(x + self.encoding(frames, work)), work, out)


# --------------------------------------------------------------------------- network


class HiNeRV(nn.Module):
    """(frame indices, box) -> RGB pixels of that box in [0, 1]. Everything here is transmitted."""

    def __init__(self, config: HiNeRVConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.base = BaseGrid(config)
        base_channels = sum(c for _, c in config.base_grid_levels_shape())
        self.stem = nn.Conv2d(base_channels, config.channels, config.stem_kernel, padding=config.stem_kernel // 2)
        nn.init.zeros_(self.stem.bias)
        self.stages = nn.ModuleList(Stage(config, i) for i in range(len(config.strides)))
        self.head = nn.Linear(config.stage_widths()[-1][1], 3)
        nn.init.zeros_(self.head.bias)

    def forward(self, frames: torch.Tensor, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """Render ``box`` (top, left, height, width of the padded frame; None: all of it) of frames (B,).

        Returns (B, 3, height, width). Crop ``[:, :, :H, :W]`` of a whole padded frame for the video.
        """
        config = self.config
        if box is None:
            box = (0, 0, config.padded_height, config.padded_width)
        frames = torch.as_tensor(frames, dtype=torch.long, device=self.head.weight.device).reshape(-1)
        if frames.numel() and (int(frames.min()) < 0 or int(frames.max()) >= config.frames):
            raise ValueError(f"frame index outside [0, {config.frames})")
        plan = render_plan(config, box)
        (grid_region, stem_out), stages = plan[0], plan[1:]
        x = self.base(frames, grid_region)
        x = _crop(self.stem(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1), grid_region, stem_out)
        source, full = stem_out, (config.base_height, config.base_width)
        for stage, (work, out) in zip(self.stages, stages):
            x = stage(x, frames, source, work, out, full)
            source, full = out, (full[0] * stage.stride, full[1] * stage.stride)
        return torch.sigmoid(self.head(x)).permute(0, 3, 1, 2)

    def decoder_parameters(self) -> dict[str, nn.Parameter]:
        """Network weights (stem, local-grid linears, blocks, head): HNeRV's "decoder" part."""
        return {name: p for name, p in self.named_parameters() if not _is_grid(name)}

    def grid_parameters(self) -> dict[str, nn.Parameter]:
        """Per-video feature grids (base levels, local levels): HNeRV's "embeddings" part."""
        return {name: p for name, p in self.named_parameters() if _is_grid(name)}


def _is_grid(name: str) -> bool:
    return name.startswith("base.levels.") or ".encoding.levels." in name
