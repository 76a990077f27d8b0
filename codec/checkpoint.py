"""Training checkpoints, so that a long encode survives Ctrl-C, a kill or a crash.

A checkpoint holds the model and optimiser state, the position in the schedule, the
data-order RNG and the training hooks' state (e.g. the time a budget has spent), plus a
fingerprint of the input and settings: ``--resume`` refuses a checkpoint made for
another clip or other settings.  Files are written atomically
(temporary file, then rename) and read with ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers (no arbitrary objects are unpickled).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import NncError

CHECKPOINT_VERSION = 1


@dataclass
class CheckpointPolicy:
    path: Path
    interval_seconds: float = 300.0
    resume: bool = False
    fingerprint: str = ""


def checkpoint_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def fingerprint(frames: np.ndarray, settings: dict) -> str:
    """Digest of the clip's pixels and the settings that shape training."""
    digest = hashlib.sha256()
    digest.update(repr(frames.shape).encode() + str(frames.dtype).encode())
    view = np.ascontiguousarray(frames).reshape(-1).view(np.uint8)
    for start in range(0, view.size, 1 << 26):  # chunks keep memory flat for large clips
        digest.update(view[start : start + (1 << 26)].data)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _temp_path(path: Path) -> Path:
    # One fixed name per checkpoint: a save cut short by SIGKILL leaves at most this file,
    # which the next save overwrites and a successful encode removes.
    return path.with_name(path.name + ".tmp")


def save_checkpoint(policy: CheckpointPolicy, state: dict) -> None:
    policy.path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(policy.path)
    try:
        torch.save({"version": CHECKPOINT_VERSION, "fingerprint": policy.fingerprint, **state}, temp)
        os.replace(temp, policy.path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def load_checkpoint(policy: CheckpointPolicy) -> dict | None:
    """The saved state when resuming from a matching checkpoint, else None."""
    if not policy.resume:
        return None
    if not policy.path.exists():
        raise NncError(f"--resume: no checkpoint at {policy.path} (start without --resume)")
    try:
        state = torch.load(policy.path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise NncError(f"--resume: cannot read checkpoint {policy.path}: {error}") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise NncError(f"--resume: {policy.path} is not an nnc checkpoint of this version")
    if state.get("fingerprint") != policy.fingerprint:
        raise NncError(
            f"--resume: checkpoint {policy.path} was made for another input or other settings "
            "(delete it or encode without --resume)"
        )
    return state


def remove_checkpoint_files(path: str | Path) -> None:
    """Remove a checkpoint and any temporary file a killed save left beside it."""
    path = Path(path)
    path.unlink(missing_ok=True)
    _temp_path(path).unlink(missing_ok=True)


def remove_checkpoint(policy: CheckpointPolicy | None) -> None:
    if policy is not None:
        remove_checkpoint_files(policy.path)
