"""Training checkpoints, so that a long encode survives Ctrl-C, a kill or a crash.

A checkpoint holds the model and optimiser state, the position in the schedule, the
data-order RNG and the training hooks' state (e.g. the time a budget has spent), plus a
fingerprint of the input and settings: ``--resume`` refuses a checkpoint made for
another clip or other settings.

The file is our own format, never a pickle: a safetensors file whose tensors are every
tensor of the state, and whose metadata holds the rest of the state as JSON (numbers,
strings, lists, dicts with their key types, tuples), each tensor replaced by a
reference to its name.  Reading it rebuilds exactly the state that was saved and runs
no code from the file.  A damaged or foreign file is a one-line error that suggests
deleting it.  Files are written atomically under a per-process temporary name.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..errors import NncError
from ..fileio import remove_quietly, write_atomically

CHECKPOINT_VERSION = 2  # 1 was a torch pickle; 2: safetensors + JSON
_METADATA_KEY = "nnc_checkpoint"


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


def _to_json(value, tensors: dict):
    """``value`` as JSON-able data, its tensors moved into ``tensors`` (name -> tensor)."""
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        # cloned: safetensors refuses tensors that share storage (tied weights)
        tensors[name] = value.detach().to("cpu").contiguous().clone()
        return {"tensor": name}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {"dict": {key: _to_json(item, tensors) for key, item in value.items()}}
        return {"pairs": [[_to_json(key, tensors), _to_json(item, tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple": [_to_json(item, tensors) for item in value]}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}  # exact, and nan/inf survive strict JSON
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def _from_json(value, tensors: dict):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError("malformed state")
    [(kind, content)] = value.items()
    if kind == "tensor":
        return tensors[content]
    if kind == "float":
        return float(content)
    if kind == "dict":
        return {key: _from_json(item, tensors) for key, item in content.items()}
    if kind == "pairs":
        return {_from_json(key, tensors): _from_json(item, tensors) for key, item in content}
    if kind in ("list", "tuple"):
        items = [_from_json(item, tensors) for item in content]
        return items if kind == "list" else tuple(items)
    raise ValueError(f"unknown entry {kind!r}")


def checkpoint_bytes(state: dict) -> bytes:
    """The checkpoint file holding ``state`` (tensors, numbers, strings, containers)."""
    tensors: dict = {}
    structure = json.dumps(_to_json(state, tensors), allow_nan=False)
    return save_tensors(tensors, metadata={_METADATA_KEY: structure})


def state_from_bytes(data: bytes) -> dict:
    """The state in a checkpoint file's bytes; ValueError (or another exception) if damaged."""
    if len(data) < 8:
        raise ValueError("too short")
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > len(data) - 8:
        raise ValueError("truncated")
    header = json.loads(data[8 : 8 + header_length])
    structure = (header.get("__metadata__") or {}).get(_METADATA_KEY)
    if not isinstance(structure, str):
        raise ValueError("no nnc state")
    state = _from_json(json.loads(structure), load_tensors(data))
    if not isinstance(state, dict):
        raise ValueError("no nnc state")
    return state


def save_checkpoint(policy: CheckpointPolicy, state: dict) -> None:
    policy.path.parent.mkdir(parents=True, exist_ok=True)
    data = checkpoint_bytes({"version": CHECKPOINT_VERSION, "fingerprint": policy.fingerprint, **state})
    write_atomically(policy.path, data)  # under a per-process temporary name, then renamed


def load_checkpoint(policy: CheckpointPolicy) -> dict | None:
    """The saved state when resuming from a matching checkpoint, else None."""
    if not policy.resume:
        return None
    if not policy.path.exists():
        raise NncError(f"--resume: no checkpoint at {policy.path} (start without --resume)")
    advice = "delete it and encode again without --resume"
    try:
        data = policy.path.read_bytes()
    except OSError as error:
        raise NncError(f"--resume: cannot read checkpoint {policy.path}: {error.strerror or error}") from None
    try:
        state = state_from_bytes(data)
    except Exception:  # truncated, damaged, foreign, or a pickle from an older nnc: never unpickled
        raise NncError(f"--resume: {policy.path} is not a readable nnc checkpoint (damaged, or from another "
                       f"version): {advice}") from None
    if state.get("version") != CHECKPOINT_VERSION:
        raise NncError(f"--resume: {policy.path} is not an nnc checkpoint of this version: {advice}")
    if state.get("fingerprint") != policy.fingerprint:
        raise NncError(
            f"--resume: checkpoint {policy.path} was made for another input or other settings "
            "(delete it or encode without --resume)"
        )
    return state


def remove_checkpoint_files(path: str | Path) -> None:
    """Remove a checkpoint and any temporary file a killed save left beside it."""
    path = Path(path)
    remove_quietly(path)
    remove_quietly(path.with_name(path.name + ".tmp"))  # older nnc's fixed temporary name
    for temp in path.parent.glob(f".{path.name}.*.tmp"):  # fileio.temporary_name's
        remove_quietly(temp)


def remove_checkpoint(policy: CheckpointPolicy | None) -> None:
    if policy is not None:
        remove_checkpoint_files(policy.path)
