"""The contract every video codec in nnc fulfils.

A codec turns a :class:`~nnc.media.Video` into named groups of quantized integer
tensors plus a JSON-serialisable model header (``compress``), and turns those back
into frames (``decompress``).  It never sees files: :mod:`nnc.codec.api` wraps the
result in the container of :mod:`nnc.bitstream` and writes or reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from ..errors import NncError

if TYPE_CHECKING:
    from ..bitstream import TensorGroup


@dataclass
class EncodeOptions:
    """Settings of one encode.  Fields a codec does not use are ignored by it."""

    size: float | None = None  # target model size in parameters (decoder + embeddings)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    loss: str | None = None  # "l2" or "fusion6" (0.7 L1 + 0.3 (1 - SSIM))
    seed: int = 0
    device: str = "auto"
    weight_bits: int | None = None
    embed_bits: int | None = None
    quant_axis: str | None = None  # "cost" (side info counted) or "error" (HNeRV's rule)
    prune: float | None = None  # fraction of weights removed by magnitude pruning (NeRV: 0.4; 0 disables)
    finetune_epochs: int | None = None  # epochs of fine-tuning with the pruning masks fixed
    show_progress: bool = True
    checkpoint_path: str | None = None  # where training state is saved; None: no checkpoints
    checkpoint_interval: float = 300.0  # seconds between checkpoints
    resume: bool = False  # continue from checkpoint_path
    rate_lambda: float | None = None  # rate-distortion trade-off of codecs trained with a rate term (NIRVANA)
    workers: int | None = None  # processes fitting independent parts in parallel (NIRVANA group chains)
    quality: int | None = None  # quality index of codecs with shipped rate points (CLC: 1..6)
    fso: bool | None = None  # PFNR: Fourier subneural operator stage on/off (None: on where the frame size allows)

    def checkpoint_policy(self, frames, settings: dict):
        """The checkpoint policy for a training run on ``frames`` with ``settings``."""
        from .checkpoint import CheckpointPolicy, fingerprint

        if self.checkpoint_path is None:
            if self.resume:
                raise NncError("--resume needs checkpoints (do not disable them)")
            return None
        return CheckpointPolicy(Path(self.checkpoint_path), self.checkpoint_interval, self.resume,
                                fingerprint(frames, dict(settings, seed=self.seed)))


@dataclass
class CompressedVideo:
    """What ``compress`` returns: the payload plus what was measured on the way."""

    model_header: dict
    groups: list[TensorGroup]
    settings: dict  # the resolved encode settings (for reports and the file header)
    stats: dict = field(default_factory=dict)  # train loss/PSNR, timings, parameter counts


class VideoCodec:
    """Base class of the registered video codecs (see :func:`register_codec`)."""

    name: str = ""

    def compress(self, video, options: EncodeOptions) -> CompressedVideo:
        raise NotImplementedError

    def decompress(
        self, model_header: dict, groups: list[TensorGroup], num_frames: int, height: int, width: int,
        *, device: str = "cpu", batch_size: int = 4, frames: range | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield batches of decoded frames, float RGB (N, 3, height, width) in [0, 1].

        ``frames`` (a step-1 range inside 0..num_frames) asks for those frames only; a
        codec decodes them without computing the others where its structure allows.
        """
        raise NotImplementedError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NncError("--device cuda requested but no CUDA device is available (use --device cpu)")
    if name not in ("cpu", "cuda"):
        raise NncError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)


def frames_to_float(frames: np.ndarray | torch.Tensor, max_value: int) -> torch.Tensor:
    """(N, H, W, 3) integer frames -> (N, 3, H, W) float32 in [0, 1]."""
    tensor = torch.as_tensor(frames)
    if tensor.dtype == torch.uint16:
        tensor = tensor.to(torch.int32)
    return tensor.permute(0, 3, 1, 2).to(torch.float32).div_(max_value)


def float_to_frames(frames: torch.Tensor, max_value: int) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8/uint16, rounded to nearest.

    NaN (from weights that dequantize to inf, which a corrupted but well-formed file
    can hold) becomes 0, so every machine writes the same pixels for it.
    """
    scaled = frames.detach().float().nan_to_num(0.0, 1.0, 0.0).clamp(0, 1).mul(max_value).round_().to(torch.int32)
    array = scaled.permute(0, 2, 3, 1).cpu().numpy()
    return array.astype(np.uint8 if max_value == 255 else np.uint16)
