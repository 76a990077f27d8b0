"""HNeRV: hybrid neural representation for videos (Chen et al., CVPR 2023).

A ConvNeXt encoder (used only while encoding, never transmitted) maps each frame to a
tiny embedding (16 x h x w); a NeRV-style decoder of conv -> PixelShuffle -> GELU stages
with growing kernels and shrinking widths turns the embedding back into the frame.
The bitstream is the decoder's weights plus the embeddings of every frame.

This module knows nothing about files or quantization: it defines the networks, the
configuration dataclass that travels in the bitstream header, and the size solver.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, config_field

# Bounds for configurations read from untrusted headers: generous for real use, small
# enough that a crafted header cannot ask for an absurd network.
MAX_STAGES = 8
MAX_STRIDE = 8
MAX_WIDTH = 2048
MAX_EMBED_CHANNELS = 256
MAX_KERNEL = 9
MAX_FRAME_SIDE = 16384


@dataclass
class HNeRVConfig(ModelConfig):
    """Everything needed to rebuild the decoder (and the encoder used to fit it)."""

    strides: list[int] = config_field(default_factory=lambda: [5, 4, 4, 2, 2], low=1, high=MAX_STRIDE,
                                      length=(1, MAX_STAGES))
    # width of the first decoder stage, solved for a target size
    fc_dim: int = config_field(96, low=1, high=MAX_WIDTH)
    embed_channels: int = config_field(16, low=1, high=MAX_EMBED_CHANNELS)
    embed_height: int = config_field(2, low=1, high=MAX_FRAME_SIDE)
    embed_width: int = config_field(4, low=1, high=MAX_FRAME_SIDE)
    encoder_width: int = config_field(64, low=1, high=MAX_WIDTH)
    # k_i = min(kernel_first + 2 i, kernel_max), HNeRV's "ks 0_1_5"
    kernel_first: int = config_field(1, low=1, high=MAX_KERNEL)
    kernel_max: int = config_field(5, low=1, high=MAX_KERNEL)
    # width of stage i+1 = max(round(width_i / reduce), lower_width)
    reduce: float = config_field(1.2, low=0.5, high=4.0)
    lower_width: int = config_field(12, low=1, high=MAX_WIDTH)
    encoder_blocks: int = config_field(1, low=0, high=8)

    @property
    def total_stride(self) -> int:
        return math.prod(self.strides)

    @property
    def padded_height(self) -> int:
        return self.embed_height * self.total_stride

    @property
    def padded_width(self) -> int:
        return self.embed_width * self.total_stride

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        return (self.embed_channels, self.embed_height, self.embed_width)

    def stage_widths(self) -> list[int]:
        widths, width = [], self.fc_dim
        for _ in self.strides:
            width = int(max(round(width / self.reduce), self.lower_width))
            widths.append(width)
        return widths

    def stage_kernels(self) -> list[int]:
        return [min(self.kernel_first + 2 * i, self.kernel_max) for i in range(len(self.strides))]

    def check_consistency(self) -> None:
        if self.kernel_first % 2 == 0 or self.kernel_max % 2 == 0:
            raise ValueError("model config kernels must be odd")
        if self.padded_height > MAX_FRAME_SIDE or self.padded_width > MAX_FRAME_SIDE:
            raise ValueError("model config output size exceeds the format's bounds")


# --------------------------------------------------------------------------- encoder


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (ConvNeXt's channels_first LN)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LN -> 4x MLP with GELU -> layer scale, residual (Liu et al. 2022)."""

    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtEncoder(nn.Module):
    """HNeRV's encoder: per stage a strided patchify conv then ConvNeXt blocks.

    Widths are ``encoder_width`` except the last stage, which outputs the embedding
    channels, so a frame of ``(H, W)`` becomes ``(embed_channels, H / S, W / S)``.
    """

    def __init__(self, config: HNeRVConfig):
        super().__init__()
        dims = [config.encoder_width] * len(config.strides)
        dims[-1] = config.embed_channels
        self.downsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        in_dim = 3
        for i, (stride, dim) in enumerate(zip(config.strides, dims)):
            if i == 0:
                layer = nn.Sequential(nn.Conv2d(in_dim, dim, stride, stride), LayerNorm2d(dim))
            else:
                layer = nn.Sequential(LayerNorm2d(in_dim), nn.Conv2d(in_dim, dim, stride, stride))
            self.downsample.append(layer)
            self.stages.append(nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(config.encoder_blocks)]))
            in_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample, self.stages):
            x = stage(down(x))
        return x


# --------------------------------------------------------------------------- decoder


class UpsampleBlock(nn.Module):
    """conv(k) -> PixelShuffle(s) -> GELU, the NeRV/HNeRV decoder stage."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * stride * stride, kernel, 1, kernel // 2)
        self.shuffle = nn.PixelShuffle(stride) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.shuffle(self.conv(x)))


class HNeRVDecoder(nn.Module):
    """The transmitted network: embedding (B, C, h, w) -> frame (B, 3, h*S, w*S) in [0, 1]."""

    def __init__(self, config: HNeRVConfig):
        super().__init__()
        self.config = config
        self.stem = nn.Conv2d(config.embed_channels, config.fc_dim, 1)
        stages, width = [], config.fc_dim
        for stride, new_width, kernel in zip(config.strides, config.stage_widths(), config.stage_kernels()):
            stages.append(UpsampleBlock(width, new_width, kernel, stride))
            width = new_width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(width, 3, 3, 1, 1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        x = self.stages(F.gelu(self.stem(embedding)))
        return torch.tanh(self.head(x)) * 0.5 + 0.5


class HNeRV(nn.Module):
    """Encoder + decoder, as trained. Only ``decoder`` and the embeddings are transmitted."""

    def __init__(self, config: HNeRVConfig):
        super().__init__()
        self.config = config
        self.encoder = ConvNeXtEncoder(config)
        self.decoder = HNeRVDecoder(config)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(frames)
        return self.decoder(embedding), embedding


# --------------------------------------------------------------------------- sizing


def decoder_parameter_count(config: HNeRVConfig) -> int:
    """Parameters of the decoder (weights and biases), computed without building it."""
    count = config.embed_channels * config.fc_dim + config.fc_dim
    width = config.fc_dim
    for stride, new_width, kernel in zip(config.strides, config.stage_widths(), config.stage_kernels()):
        out = new_width * stride * stride
        count += width * out * kernel * kernel + out
        width = new_width
    count += width * 3 * 9 + 3
    return count


def embedding_element_count(config: HNeRVConfig, num_frames: int) -> int:
    return num_frames * config.embed_channels * config.embed_height * config.embed_width


def model_size(config: HNeRVConfig, num_frames: int) -> int:
    """HNeRV's "model size": decoder parameters plus every frame's embedding elements."""
    return decoder_parameter_count(config) + embedding_element_count(config, num_frames)


def choose_strides(height: int, width: int, num_stages: int = 5, max_stride: int = 5) -> tuple[list[int], int, int]:
    """Pick per-stage strides and the embedding grid for a frame size.

    HNeRV's protocol uses strides 5,4,4,2,2 for 640x1280, i.e. a 2x4 embedding grid.
    For other sizes we search non-increasing stride lists for the one that wastes the
    least area on padding while keeping the short side of the embedding grid near 2,
    breaking ties towards balanced strides (smallest sum of squares), which is what
    the paper's hand-picked lists do.
    """
    short = min(height, width)
    best = None
    for strides in itertools.combinations_with_replacement(range(max_stride, 0, -1), num_stages):
        total = math.prod(strides)
        embed_h, embed_w = math.ceil(height / total), math.ceil(width / total)
        padding = (embed_h * embed_w * total * total) / (height * width) - 1.0
        grid_penalty = abs(math.log2(max(min(embed_h, embed_w), 1) / min(2.0, short)))
        score = (round(padding + 0.1 * grid_penalty, 9), sum(s * s for s in strides))
        if best is None or score < best[0]:
            best = (score, list(strides), embed_h, embed_w)
    return best[1], best[2], best[3]


def solve_config(height: int, width: int, num_frames: int, target_size: float, **overrides) -> HNeRVConfig:
    """An HNeRV config for this video whose model size is as close as possible to target."""
    strides, embed_h, embed_w = choose_strides(height, width)
    base = dict(strides=strides, embed_height=embed_h, embed_width=embed_w)
    base.update(overrides)
    config = HNeRVConfig(**base)
    embeddings = embedding_element_count(config, num_frames)
    if embeddings >= target_size:
        raise ValueError(
            f"target size {target_size:.0f} is smaller than the embeddings alone ({embeddings}); "
            "raise --params or shorten the clip"
        )

    def size_for(fc_dim: int) -> int:
        config.fc_dim = fc_dim
        return model_size(config, num_frames)

    smallest = size_for(1)
    if smallest > target_size * 1.05:
        raise ValueError(
            f"target size {target_size:.0f} is below the smallest HNeRV for this video ({smallest} parameters "
            f"at fc_dim 1); raise --params"
        )
    low, high = 1, MAX_WIDTH
    while low < high:  # largest fc_dim whose size does not exceed the target
        mid = (low + high + 1) // 2
        if size_for(mid) <= target_size:
            low = mid
        else:
            high = mid - 1
    # take the neighbour above if it lands closer to the target
    if low < MAX_WIDTH and abs(size_for(low + 1) - target_size) < abs(size_for(low) - target_size):
        low += 1
    config.fc_dim = low
    config.validate()
    return config
