"""A synthetic sample clip, so that nnc can be tried with nothing else on the machine.

``nnc sample clip.y4m`` writes it (as ``ffmpeg -f lavfi -i testsrc`` would a test
pattern): smooth colour gradients drifting sideways, a square and a disc crossing the
frame at different speeds, and a little texture.  Like real video it is mostly smooth
with moving edges, so a small network fits it in a minute on a CPU; it is made from
numbers alone (no file is read or downloaded).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .clip import Video, VideoInfo

DEFAULT_FRAMES, DEFAULT_WIDTH, DEFAULT_HEIGHT = 24, 128, 64
# A sample is for trying things out: a frame count or size beyond these is a typo.
MAX_FRAMES, MAX_SIDE = 10_000, 4096


def sample_video(num_frames: int = DEFAULT_FRAMES, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                 fps: Fraction = Fraction(25), seed: int = 0) -> Video:
    """The sample clip: 8-bit yuv420p, BT.601 limited range (what a phone or ffmpeg writes)."""
    if not 1 <= num_frames <= MAX_FRAMES:
        raise ValueError(f"a sample clip has 1 to {MAX_FRAMES} frames, not {num_frames}")
    if not (2 <= width <= MAX_SIDE and 2 <= height <= MAX_SIDE) or width % 2 or height % 2:
        raise ValueError(f"a sample clip's sides are even and 2 to {MAX_SIDE} pixels, not {width}x{height}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / width, y / height
    phases = rng.uniform(0, 2 * np.pi, size=3)
    texture = rng.normal(0, 3, size=(height, width))  # fixed grain: detail that does not move
    square = max(4, min(width, height) // 5)
    radius = max(2, min(width, height) // 7)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        drift = 0.15 * t
        picture = np.stack([128 + 70 * np.sin(2 * np.pi * u + phases[c] + drift) * np.cos(np.pi * v + 0.5 * c)
                            for c in range(3)], axis=-1)
        picture += texture[..., None]
        top = int((0.2 + 0.6 * (0.5 + 0.5 * np.sin(0.3 * t))) * (height - square))
        left = int((t * 3) % max(1, width - square))
        picture[top : top + square, left : left + square] = (225, 45, 60)
        centre_x = width - 1 - (t * 2 + width // 3) % width
        centre_y = height / 2 + height / 4 * np.cos(0.2 * t)
        disc = (x - centre_x) ** 2 + (y - centre_y) ** 2 <= radius**2
        picture[disc] = (40, 170, 230)
        frames[t] = np.clip(np.round(picture), 0, 255).astype(np.uint8)
    info = VideoInfo(width=width, height=height, num_frames=num_frames, fps=fps, pix_fmt="yuv420p", bit_depth=8,
                     color_matrix="bt601", color_range="tv")
    return Video(frames=frames, info=info)
