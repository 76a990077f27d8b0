"""Synthetic clips made in the tests, and the optional shared media (importable by tests)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from nnc.media import Video, VideoInfo

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDIA = REPO.parent / "shared" / "media"


def synthetic_frames(num_frames: int = 8, height: int = 64, width: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus a moving square: structured like video, cheap to fit."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    for t in range(num_frames):
        for c in range(3):
            frames[t, :, :, c] = np.clip(
                127 + 80 * np.sin(x / width * 2 * np.pi + phases[c] + 0.2 * t) * np.cos(y / height * np.pi), 0, 255
            )
        top, left = (4 + 3 * t) % (height - 16), (8 + 6 * t) % (width - 16)
        frames[t, top : top + 16, left : left + 16] = (230, 40, 60)
    return frames


def synthetic_video(num_frames: int = 8, height: int = 64, width: int = 128, pix_fmt: str = "yuv420p") -> Video:
    info = VideoInfo(
        width=width, height=height, num_frames=num_frames, fps=Fraction(25), pix_fmt=pix_fmt, bit_depth=8,
        color_matrix="bt601", color_range="tv",
    )
    return Video(frames=synthetic_frames(num_frames, height, width), info=info)


def shared_media(relative: str) -> Path:
    path = SHARED_MEDIA / relative
    if not path.exists():
        pytest.skip(f"shared media {relative} not present (expected at {path})")
    return path
