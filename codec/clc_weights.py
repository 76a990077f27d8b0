"""CLC's files: weights (``q<N>.safetensors``) and the dictionary (``dictionary.safetensors``).

Both are safetensors files, plain tensors plus JSON metadata strings: nothing is ever
unpickled.  Weights keep their transforms as float16 (a smaller package) and their
entropy models as float32, CDF tables as computed by ``update()``; loading rebuilds the
model from the config stored beside them.  Files are written atomically through the
bitstream layer's writer.  The networks and the dictionary's retrieval logic are in
:mod:`nnc.models.clc` and :mod:`nnc.models.clc_dictionary`, which know nothing of files.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

from ..bitstream.container import write_file_atomically
from ..errors import NncError
from ..models.clc import CLCConfig, CLCModel
from ..models.clc_dictionary import DICTIONARY_VERSION, CLCDictionary

DICTIONARY_TENSORS = ("crops", "feature_mean", "feature_std", "pca_mean", "pca_components", "entry_features")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stored_dtype(name: str, tensor: torch.Tensor) -> torch.Tensor:
    # Transforms are stored as float16 to keep the shipped package small; the entropy
    # models (factorized prior of z, scale table) stay float32, and the integer CDF
    # tables stay as they are: they were computed by update() and are used verbatim.
    # The gains of a variable-rate model (2 x L x M numbers) stay float32 too.
    if tensor.is_floating_point() and not name.startswith(("entropy_bottleneck.", "gaussian_conditional.",
                                                           "log_gain", "log_inverse_gain")):
        return tensor.to(torch.float16)
    return tensor


def save_weights(model: CLCModel, path: str | os.PathLike, metadata: dict) -> None:
    """Write ``model`` (after ``update()``) with its config and ``metadata`` atomically."""
    from safetensors.torch import save

    tensors = {name: _stored_dtype(name, t.detach().cpu()).contiguous() for name, t in model.state_dict().items()}
    write_file_atomically(path, save(tensors, metadata={"config": json.dumps(model.config.to_dict()),
                                                        "nnc": json.dumps(metadata)}))


def load_weights(path: str | os.PathLike) -> tuple[CLCModel, dict]:
    """A CLC model (in eval mode) and its metadata from a file written by :func:`save_weights`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    model = CLCModel(CLCConfig.from_dict(json.loads(header["config"])))
    model.load_state_dict({name: (t.float() if t.dtype == torch.float16 else t) for name, t in tensors.items()})
    return model.eval(), json.loads(header.get("nnc", "{}"))


def save_dictionary(dictionary: CLCDictionary, path: str | os.PathLike) -> str:
    """Write ``dictionary`` atomically; returns (and records in it) the file's SHA-256."""
    from safetensors.torch import save

    tensors = {name: getattr(dictionary, name).contiguous() for name in DICTIONARY_TENSORS}
    write_file_atomically(path, save(tensors, metadata={"nnc": json.dumps(dictionary.meta)}))
    dictionary.sha256 = file_sha256(path)
    return dictionary.sha256


def load_dictionary(path: str | os.PathLike) -> CLCDictionary:
    """A dictionary written by :func:`save_dictionary`; anything else is a one-line NncError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("nnc", "{}"))
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        dictionary = CLCDictionary(meta=meta, sha256=file_sha256(path), **tensors)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise NncError(f"{path}: not a CLC dictionary ({str(error).splitlines()[0]})") from None
    if meta.get("version") != DICTIONARY_VERSION or dictionary.crops.dtype != torch.uint8 or dictionary.crops.ndim != 4:
        raise NncError(f"{path}: not a CLC dictionary of version {DICTIONARY_VERSION}")
    return dictionary
