"""The CLC image codec (``--model clc``): shipped weights, a dictionary, no training per file.

Each image (each frame, when a clip is given: all-intra coding) is padded to a
multiple of 64 by edge replication, coded by the CLC model of the chosen quality, and
cropped back at decode.  The file holds, per image, one raw byte string (format version
2; earlier files: an 8-bit tensor, still read) with the
CompressAI rANS strings (z, then one per latent slice) and, in the header, the
string lengths and the k dictionary entries the encoder picked; the header also names
the quality, the first 16 hex digits of the weights' and the dictionary's SHA-256,
and the model config.  A decoder with other weights or another dictionary refuses the
file instead of producing garbage.

Determinism: every network that feeds the entropy coder runs on the CPU with one
thread, so encoder and decoder compute the same means and scales bit for bit (thread
count changes the order of float sums).  The same file therefore decodes to the same
pixels, on the same machine, every time and in any process.

Weights: ``models/weights/clc``, or the folder in the environment variable
``NNC_CLC_WEIGHTS``: one variable-rate model ``clc.safetensors`` (gain units: any
quality in [1, L], fractional ones between the trained rate points; the header stores
the quality as a number) or single-rate points ``q<N>.safetensors`` (integer quality),
plus ``dictionary.safetensors``.  Earlier generations of shipped weights live in
subfolders (``v1/``: the four single-rate points of nnc before the variable-rate
model); a file is decoded with whichever generation its header's weights hash names.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..bitstream import RawBytes, TensorGroup
from ..errors import InvalidBitstreamError, NncError
from ..models.clc import PAD_MULTIPLE, CLCConfig
from .clc_weights import file_sha256, load_dictionary, load_weights
from .base import Codec, CodecKind, CodecOptions, CompressedVideo, frames_to_float, option
from .registry import register_codec

SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights" / "clc"
WEIGHTS_ENV = "NNC_CLC_WEIGHTS"
VARIABLE_RATE_FILE = "clc.safetensors"
DEFAULT_QUALITY = 3  # folders of single-rate points (q<N>.safetensors)
# A variable-rate model's default is its quality whose lambda is nearest this one (the
# trade-off the single-rate default q3 had).
DEFAULT_LAMBDA = 0.013
QUALITY_DECIMALS = 3  # an encoder's quality is rounded to this before use and storage
QUALITY_FILE = re.compile(r"q(\d+)\.safetensors")
HASH_DIGITS = 16  # 64 bits of SHA-256 identify weights and dictionary in the header
MAX_PIXELS = 1 << 26
# A file may not ask for much more latent decoding than its bytes justify (a header
# edit that enlarges the image would otherwise buy minutes of decoding for free).
SYMBOLS_PER_BYTE = 4096
FREE_SYMBOLS = 1 << 20


def quality_files(directory: Path) -> dict[int, Path]:
    """The rate points of a weights folder: quality index -> ``q<N>.safetensors``."""
    return {int(m[1]): p for p in Path(directory).glob("q*.safetensors") if (m := QUALITY_FILE.fullmatch(p.name))}


def weights_dir() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV) or SHIPPED_WEIGHTS)


@contextlib.contextmanager
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _is_number(value) -> bool:
    """An int or a finite float (JSON integers can have hundreds of digits: no float())."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _show_quality(quality) -> str:
    if type(quality) is float and quality.is_integer() and abs(quality) < 1e15:
        return str(int(quality))
    text = str(quality)
    return text if len(text) <= 24 else text[:21] + "..."


class CLCBundle:
    """The weights of one folder and its dictionary: either one variable-rate model
    (``clc.safetensors``, any quality in [1, L]) or single-rate points (``q<N>.safetensors``).

    Subfolders hold earlier generations of shipped weights, kept so that files coded
    with them still decode (:func:`bundle_for_header` picks one by the header's hash).
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise NncError(f"CLC weights folder {self.directory} does not exist (set {WEIGHTS_ENV} or reinstall nnc)")
        variable = self.directory / VARIABLE_RATE_FILE
        self.variable_rate_path = variable if variable.is_file() else None
        self.files = {} if self.variable_rate_path else quality_files(self.directory)
        if not self.files and not self.variable_rate_path:
            raise NncError(f"no CLC weights ({VARIABLE_RATE_FILE} or q<N>.safetensors) in {self.directory}")
        self.dictionary_path = self.directory / "dictionary.safetensors"

    @property
    def variable_rate(self) -> bool:
        return self.variable_rate_path is not None

    @property
    def levels(self) -> int:
        """A variable-rate model's number of trained rate points (its qualities 1..levels)."""
        model, _, _ = self._variable_model()
        return len(model.config.rate_lambdas)

    @property
    def qualities(self) -> list[int]:
        """The trained rate points (a variable-rate model also codes any quality between them)."""
        return list(range(1, self.levels + 1)) if self.variable_rate else sorted(self.files)

    def describe_qualities(self) -> str:
        if self.variable_rate:
            return f"any quality from 1 to {self.levels}"
        return "available: " + ", ".join(map(str, self.qualities))

    def resolve_quality(self, quality: float | None) -> float | int:
        """The quality an encoder uses: ``quality`` (rounded to QUALITY_DECIMALS for a
        variable-rate model) or the default; an unavailable one is refused (one line)."""
        if self.variable_rate:
            if quality is None:
                model, _, _ = self._variable_model()
                lambdas = model.config.rate_lambdas
                return float(1 + min(range(len(lambdas)),
                                     key=lambda i: abs(math.log(lambdas[i] / DEFAULT_LAMBDA))))
            if not _is_number(quality) or not 1 <= quality <= self.levels:
                raise NncError(f"CLC quality {_show_quality(quality)} is not available: these weights code "
                               f"{self.describe_qualities()}")
            return round(float(quality), QUALITY_DECIMALS)
        if quality is None:
            return DEFAULT_QUALITY if DEFAULT_QUALITY in self.files else self.qualities[len(self.qualities) // 2]
        if not _is_number(quality) or quality not in self.files:
            raise NncError(f"CLC quality {_show_quality(quality)} is not available; {self.describe_qualities()}")
        return int(quality)

    def _variable_model(self):
        path = self.variable_rate_path
        return _load_model(str(path), path.stat().st_mtime_ns)

    def model(self, quality: float | int):
        """(model, metadata, sha256) of the weights that code ``quality``."""
        if self.variable_rate:
            return self._variable_model()
        if quality not in self.files:
            raise NncError(f"CLC quality {_show_quality(quality)} is not available; {self.describe_qualities()}")
        return _load_model(str(self.files[quality]), self.files[quality].stat().st_mtime_ns)

    def reference_latents(self, model_sha: str, references: list[int], quality):
        """The latents of dictionary entries ``references`` under the model of ``quality``
        (cached; one cache entry serves every quality of a variable-rate model, whose
        gain is applied afterwards)."""
        return _reference_latents(model_sha, self.dictionary().sha256, tuple(references), str(self.directory),
                                  None if self.variable_rate else quality)

    def model_quality(self, quality):
        """What the model's compress/decompress take: the quality (variable rate) or None."""
        return float(quality) if self.variable_rate else None

    def dictionary(self):
        if not self.dictionary_path.exists():
            raise NncError(f"no CLC dictionary ({self.dictionary_path.name}) in {self.directory}")
        return _load_dictionary(str(self.dictionary_path), self.dictionary_path.stat().st_mtime_ns)

    def feature_model(self):
        """The model whose analysis transform made the dictionary's retrieval features."""
        wanted = self.dictionary().meta.get("feature_weights_sha256")
        for path in ([self.variable_rate_path] if self.variable_rate else [self.files[q] for q in self.qualities]):
            model, _, sha = _load_model(str(path), path.stat().st_mtime_ns)
            if sha == wanted:
                return model
        raise NncError(f"the CLC dictionary in {self.directory} was built with weights that are not there")

    def weights_hash_for(self, model_header: dict) -> str | None:
        """The hash prefix of this folder's weights for a header's model, None if it has none."""
        try:
            config = model_header.get("config")
            variable = isinstance(config, dict) and bool(config.get("rate_lambdas"))
            if variable != self.variable_rate:
                return None
            quality = model_header.get("quality")
            if not variable and not (isinstance(quality, int) and quality in self.files):
                return None
            return self.model(quality)[2][:HASH_DIGITS]
        except NncError:
            return None


def bundle_for_header(model_header) -> CLCBundle:
    """The weights folder (or an earlier generation in one of its subfolders) holding the
    weights a file names; the main folder when none does (its checks then say why)."""
    main = CLCBundle(weights_dir())
    if not isinstance(model_header, dict) or main.weights_hash_for(model_header) == model_header.get("weights"):
        return main
    for folder in sorted(p for p in main.directory.iterdir() if p.is_dir()):
        try:
            older = CLCBundle(folder)
        except NncError:
            continue
        if older.weights_hash_for(model_header) == model_header.get("weights"):
            return older
    return main


def quality_lambda(lambdas: list[float], quality: float) -> float:
    """The lambda a variable-rate quality stands for: log-linear between the trained ones
    (as the model interpolates its log-gains)."""
    position = quality - 1
    low = min(int(math.floor(position)), len(lambdas) - 1)
    high = min(low + 1, len(lambdas) - 1)
    t = position - low
    return math.exp((1 - t) * math.log(lambdas[low]) + t * math.log(lambdas[high]))


@functools.lru_cache(maxsize=8)
def _load_model(path: str, mtime: int):
    try:
        model, meta = load_weights(path)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise NncError(f"{path}: not a CLC weights file ({str(error).splitlines()[0]})") from None
    return model, meta, file_sha256(path)


@functools.lru_cache(maxsize=2)
def _load_dictionary(path: str, mtime: int):
    return load_dictionary(path)


@functools.lru_cache(maxsize=16)
def _reference_latents(model_sha: str, dictionary_sha: str, indices: tuple[int, ...], bundle_dir: str, quality):
    """The k references' latents (before any gain: the model applies the quality's gain)."""
    bundle = CLCBundle(Path(bundle_dir))
    model, _, _ = bundle.model(quality)
    with torch.no_grad(), single_thread():
        return model.reference_latents(bundle.dictionary().reference_images(list(indices)))


def pad_image(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % PAD_MULTIPLE, -w % PAD_MULTIPLE
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


class CodedImage:
    """One image's coded form: header entry (references, string lengths) and the rANS strings."""

    def __init__(self, references: list[int], strings: list[bytes], y_hat: torch.Tensor):
        self.references = references
        self.strings = strings
        self.y_hat = y_hat

    def header(self) -> dict:
        return {"references": self.references, "lengths": [len(s) for s in self.strings]}

    def raw_bytes(self, index: int) -> RawBytes:
        """The strings as the file stores them: one raw byte string (already entropy coded)."""
        return RawBytes(f"streams{index}", b"".join(self.strings))


def frame_streams(group: TensorGroup, index: int) -> bytes:
    """The rANS strings of frame ``index``: a raw byte string, or in files written before
    format version 2, the same bytes dressed as a 1-D 8-bit minmax tensor."""
    name = f"streams{index}"
    if not group.tensors and len(group.raw_bytes) == 1 and group.raw_bytes[0].name == name:
        return group.raw_bytes[0].data
    if not group.raw_bytes and len(group.tensors) == 1 and group.tensors[0].name == name:
        tensor = group.tensors[0]
        symbols = np.asarray(tensor.symbols)
        if symbols.ndim != 1 or tensor.scheme != "minmax" or tensor.bits != 8:
            raise InvalidBitstreamError(f"CLC frame {index}: streams must be one row of bytes")
        return symbols.astype(np.uint8).tobytes()
    raise InvalidBitstreamError(f"CLC frame {index} must hold one byte string {name}")


def encode_image_tensor(bundle: CLCBundle, quality, image: torch.Tensor) -> CodedImage:
    """(1, 3, H, W) float image in [0, 1] -> its coded form (rANS strings, references, y_hat);
    ``quality`` as :meth:`CLCBundle.resolve_quality` gives it."""
    model, _, sha = bundle.model(quality)
    x = pad_image(image.float().cpu())
    references: list[int] = []
    ref_latents = None
    if model.config.conditioning:
        dictionary = bundle.dictionary()
        with torch.no_grad():  # retrieval is the encoder's choice: no need for one thread here
            references = dictionary.retrieve(bundle.feature_model(), x, model.config.num_refs)
        ref_latents = bundle.reference_latents(sha, references, quality)
    with single_thread():
        out = model.compress(x, ref_latents, bundle.model_quality(quality))
    return CodedImage(references, [out["z_string"], *out["y_strings"]], out["y_hat"])


def _check_header(bundle: CLCBundle, model_header: dict):
    if not isinstance(model_header, dict):
        raise InvalidBitstreamError("CLC header is not an object")
    quality = model_header.get("quality")
    if bundle.variable_rate:
        if not _is_number(quality):
            raise InvalidBitstreamError("CLC header has no numeric quality")
    elif not isinstance(quality, int) or isinstance(quality, bool):
        raise InvalidBitstreamError("CLC header has no integer quality")
    try:
        model, _, sha = bundle.model(quality)
    except NncError as error:
        raise InvalidBitstreamError(f"file needs {error}") from None
    if bundle.variable_rate and not 1 <= quality <= len(model.config.rate_lambdas):
        raise InvalidBitstreamError(f"CLC quality {quality} is outside 1..{len(model.config.rate_lambdas)}")
    if model_header.get("weights") != sha[:HASH_DIGITS]:
        raise InvalidBitstreamError(
            f"file was encoded with other CLC weights for quality {quality} ({str(model_header.get('weights'))[:20]}, "
            f"these are {sha[:HASH_DIGITS]}): decode it with the nnc that wrote it")
    try:
        config = CLCConfig.from_dict(model_header.get("config"))
    except (TypeError, ValueError) as error:
        raise InvalidBitstreamError(f"bad CLC config: {error}") from None
    if config != model.config:
        raise InvalidBitstreamError("CLC config in the header differs from the weights it names")
    if config.conditioning:
        dictionary = bundle.dictionary()
        if model_header.get("dictionary") != dictionary.sha256[:HASH_DIGITS]:
            raise InvalidBitstreamError(
                f"file was encoded with another CLC dictionary ({str(model_header.get('dictionary'))[:20]}, "
                f"this one is {dictionary.sha256[:HASH_DIGITS]})")
    return model, sha


def decode_image_tensor(bundle: CLCBundle, model_header: dict, entry: dict, streams: bytes,
                        height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One coded image (``streams``: its rANS strings) -> ((1, 3, height, width) float in [0, 1], y_hat)."""
    model, sha = _check_header(bundle, model_header)
    config = model.config
    if not isinstance(entry, dict):
        raise InvalidBitstreamError("CLC frame entry is not an object")
    lengths, references = entry.get("lengths"), entry.get("references")
    if (not isinstance(lengths, list) or len(lengths) != config.slices + 1
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths)):
        raise InvalidBitstreamError(f"CLC string lengths must be {config.slices + 1} non-negative integers")
    if sum(lengths) != len(streams):
        raise InvalidBitstreamError(f"CLC string lengths add up to {sum(lengths)}, the stream has {len(streams)} bytes")
    ref_latents = None
    if config.conditioning:
        size = bundle.dictionary().size
        if (not isinstance(references, list) or len(references) != config.num_refs
                or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size for i in references)):
            raise InvalidBitstreamError(f"CLC references must be {config.num_refs} entry indices in 0..{size - 1}")
        ref_latents = bundle.reference_latents(sha, references, model_header["quality"])
    elif references not in ([], None):
        raise InvalidBitstreamError("CLC references given for an unconditioned model")
    padded_h, padded_w = height + (-height % PAD_MULTIPLE), width + (-width % PAD_MULTIPLE)
    z_shape = (padded_h // PAD_MULTIPLE, padded_w // PAD_MULTIPLE)
    symbols = (config.latent_channels * 16 + config.channels) * z_shape[0] * z_shape[1]
    if symbols > SYMBOLS_PER_BYTE * len(streams) + FREE_SYMBOLS:
        raise InvalidBitstreamError(f"{width}x{height} needs {symbols} latent symbols, far more than "
                                    f"{len(streams)} bytes can code")
    data = bytes(streams)
    strings, position = [], 0
    for index, length in enumerate(lengths):
        # Zero padding: the rANS decoder reads ahead without bounds checks, so a damaged
        # string must run into zeros, never past its buffer.
        count = (config.channels if index == 0 else config.latent_channels // config.slices * 16) * z_shape[0] * z_shape[1]
        strings.append(data[position : position + length] + bytes(8 * count + 64))
        position += length
    with single_thread():
        out = model.decompress(strings[0], strings[1:], z_shape, ref_latents,
                               bundle.model_quality(model_header["quality"]))
    return out["x_hat"][..., :height, :width], out["y_hat"]


def _shipped_quality_help() -> str:
    """The --quality help for the shipped weights (read from the safetensors header only)."""
    variable = SHIPPED_WEIGHTS / VARIABLE_RATE_FILE
    if variable.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(variable), framework="pt") as handle:
                levels = len(json.loads(handle.metadata()["config"]).get("rate_lambdas") or [])
            return (f"Quality, 1 (smallest file) to {levels}; fractions such as 2.5 lie between the trained rate "
                    f"points (default: the rate point of lambda {DEFAULT_LAMBDA}).")
        except (OSError, KeyError, ValueError, TypeError):
            pass
    shipped = sorted(quality_files(SHIPPED_WEIGHTS)) or [DEFAULT_QUALITY]
    return f"Quality index of the shipped rate points, {shipped[0]} (smallest file) to {shipped[-1]} (default {DEFAULT_QUALITY})."


@dataclass
class CLCOptions(CodecOptions):
    quality: float | None = option(None, _shipped_quality_help(), low=1)


@register_codec("clc")
class CLCCodec(Codec):
    """CLC image codec; a clip is coded frame by frame (all-intra)."""

    kind = CodecKind.IMAGE
    Options = CLCOptions
    rate_option = "quality"
    config_class = CLCConfig

    def check_options(self, options: CLCOptions) -> None:
        """Refuse an unavailable quality (and --resume) before any image is read."""
        options.validate()
        if options.resume:
            raise NncError("--resume does not apply to --model clc (nothing is trained per image)")
        bundle = CLCBundle(weights_dir())
        bundle.model(bundle.resolve_quality(options.quality))

    def compress(self, video, options: CLCOptions) -> CompressedVideo:
        bundle = CLCBundle(weights_dir())
        quality = bundle.resolve_quality(options.quality)
        model, meta, sha = bundle.model(quality)
        n, h, w = video.frames.shape[:3]
        if h * w > MAX_PIXELS:
            raise NncError(f"{w}x{h} is larger than the {MAX_PIXELS} pixels CLC codes")
        max_value = video.max_value
        entries, groups = [], []
        for index in range(n):
            coded = encode_image_tensor(bundle, quality, frames_to_float(video.frames[index : index + 1], max_value))
            entries.append(coded.header())
            groups.append(TensorGroup(f"frame{index}", raw_bytes=[coded.raw_bytes(index)]))
        header = {"config": model.config.to_dict(), "quality": quality, "weights": sha[:HASH_DIGITS],
                  "dictionary": bundle.dictionary().sha256[:HASH_DIGITS] if model.config.conditioning else None,
                  "frames": entries}
        settings = {"quality": quality, "lambda": meta.get("lambda") if not bundle.variable_rate
                    else round(quality_lambda(model.config.rate_lambdas, quality), 6)}
        return CompressedVideo(model_header=header, groups=groups, settings=settings,
                               stats={"stream_bytes": sum(sum(e["lengths"]) for e in entries)})

    def decompress(self, model_header, groups, num_frames, height, width, *, device="cpu", batch_size=4,
                   frames: range | None = None) -> Iterator[torch.Tensor]:
        bundle = bundle_for_header(model_header)
        if not isinstance(model_header, dict) or not isinstance(model_header.get("frames"), list):
            raise InvalidBitstreamError("CLC header has no frame list")
        entries = model_header["frames"]
        if len(entries) != num_frames or len(groups) != num_frames:
            raise InvalidBitstreamError(f"CLC file has {len(entries)} frame entries and {len(groups)} groups "
                                        f"for {num_frames} frames")
        if height * width > MAX_PIXELS:
            raise InvalidBitstreamError(f"{width}x{height} is larger than {MAX_PIXELS} pixels")
        for index in frames if frames is not None else range(num_frames):
            image, _ = decode_image_tensor(bundle, model_header, entries[index], frame_streams(groups[index], index),
                                           height, width)
            yield image
