"""The contract every codec in nnc fulfils, and the options every codec shares.

A codec (a :class:`Codec` subclass, registered by name with
:func:`~nnc.codec.registry.register_codec`) turns a :class:`~nnc.media.Video` into named
groups of quantized integer tensors plus a JSON-serialisable model header
(``compress``), and turns those back into frames (``decompress``).  It never sees
files: :mod:`nnc.codec.files` wraps the result in the container of :mod:`nnc.bitstream`
and writes or reads it.

Each codec declares its options as a dataclass (``Codec.Options``, a subclass of
:class:`CodecOptions`): the fields, their defaults and their help texts are written
there once; ``nnc encode`` builds its command-line options from them.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import platform
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from ..errors import NncError

if TYPE_CHECKING:
    from ..bitstream import TensorGroup


class CodecKind(str, enum.Enum):
    """What a codec codes; :mod:`nnc.codec.files` is the one place that acts on it."""

    VIDEO = "video"  # one video per file
    VIDEO_SET = "video-set"  # several videos in one growing file (PFNR)
    IMAGE = "image"  # one still image (a clip is coded frame by frame)


def option(default: Any, help: str, *, flag: str | None = None, choices: tuple | None = None,
           low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           metavar: str | None = None) -> Any:
    """A codec option: its default and help text, written once.

    ``flag`` is the command-line name when it is not the field's (``--lambda`` for
    ``rate_lambda``); ``choices``, ``low`` and ``high`` (inclusive unless ``low_open`` or
    ``high_open``) are checked by :meth:`CodecOptions.validate` whoever builds the options.
    """
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "low": low,
                                            "high": high, "low_open": low_open, "high_open": high_open,
                                            "metavar": metavar})


# Fields whose command-line flag is not their name, for every codec: the model size is
# ``--params`` (``--size`` was both it and the raw frame size, now ``--video-size``).
FLAG_NAMES = {"size": "--params"}


def flag_of(item: dataclasses.Field) -> str:
    """The command-line spelling of an option field: ``--batch-size`` for ``batch_size``."""
    return item.metadata.get("flag") or FLAG_NAMES.get(item.name) or "--" + item.name.replace("_", "-")


def describe_range(meta) -> str:
    """``between 2 and 16``, ``at least 1``, ``greater than 0``, ``in [0, 1)``."""
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        if meta.get("low_open") or meta.get("high_open"):
            return f"in {'(' if meta.get('low_open') else '['}{low}, {high}{')' if meta.get('high_open') else ']'}"
        return f"between {low} and {high}"
    if low is not None:
        return f"greater than {low}" if meta.get("low_open") else f"at least {low}"
    return f"below {high}" if meta.get("high_open") else f"at most {high}"


@dataclass
class CodecOptions:
    """Options every codec has.  A codec's ``Options`` subclass adds its own fields."""

    seed: int = option(0, "Random seed of initialisation and data order.", low=0, high=2**63 - 1)
    device: str = option("auto", "Device to train on.", choices=("auto", "cpu", "cuda"))
    show_progress: bool = option(True, "Progress bar on stderr.")
    checkpoint_path: str | None = option(None, "Where training state is saved (default OUT.nnc.ckpt); None: no checkpoints.")
    checkpoint_interval: float = option(300.0, "Seconds between training checkpoints (OUT.nnc.ckpt, removed on "
                                               "success); 0 disables.", low=0)
    resume: bool = option(False, "Continue an interrupted encode from OUT.nnc.ckpt.")

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {item.name: item for item in dataclasses.fields(cls)}

    @classmethod
    def field_types(cls) -> dict[str, type]:
        """Each field's value type (``int`` for ``int | None``)."""
        hints = typing.get_type_hints(cls)
        types = {}
        for name in cls.fields():
            hint = hints[name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            types[name] = args[0] if args else hint
        return types

    @classmethod
    def codec_fields(cls) -> list[str]:
        """The fields this codec adds to the shared ones, in declaration order."""
        shared = CodecOptions.fields()
        return [name for name in cls.fields() if name not in shared]

    def validate(self) -> None:
        """Check every value against its field's choices and range: a one-line error naming the flag."""
        for name, item in self.fields().items():
            value = getattr(self, name)
            meta = item.metadata
            if value is None:
                continue
            if meta.get("choices") and value not in meta["choices"]:
                raise NncError(f"{flag_of(item)} must be one of {', '.join(map(str, meta['choices']))}")
            low, high = meta.get("low"), meta.get("high")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(float(value)):
                    raise NncError(f"{flag_of(item)} must be a finite number")
                too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
                too_high = high is not None and (value >= high if meta.get("high_open") else value > high)
                if too_low or too_high:
                    raise NncError(f"{flag_of(item)} must be {describe_range(meta)}")

    def settings(self) -> dict:
        """The codec's own option values: recorded in the file's encoder record."""
        return {name: getattr(self, name) for name in self.codec_fields()}

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
class VideoCodecOptions(CodecOptions):
    """Options every single-video codec has: planning the training (:mod:`nnc.codec.planning`)."""

    time_budget: float | None = option(None, "Training time budget (90s, 20m, 2h; seconds if no unit), counted from "
                                             "the first training step: the epochs of every phase are planned to "
                                             "fit it (replaces --epochs), then the model is quantized and written.",
                                       low=0, low_open=True, metavar="DURATION")
    dry_run: bool = option(False, "Calibrate a few training steps, print the plan (model, parameters, epochs, "
                                  "estimated time and bpp) and exit without writing.")
    force: bool = option(False, "Encode even when the file would be larger than the raw video.")
    segment_frames: int | None = option(None, "Code the video as independent segments of N frames (the last may be "
                                              "shorter), each its own network, each decodable alone; with "
                                              "--time-budget each segment gets budget x min(jobs, segments) / "
                                              "segments.", low=1, metavar="N")
    jobs: int = option(1, "With --segment-frames: segments fitted at once (local processes with cpu_count / jobs "
                          "threads each, or Ray tasks).", low=1)
    backend: str = option("local", "With --segment-frames: fit segments in local processes or as tasks on a Ray "
                                   "cluster.", choices=("local", "ray"))
    address: str | None = option(None, "With --backend ray: the cluster (auto: the running one, HOST:PORT; default "
                                       "or local: a new local Ray instance).")

    # Not recorded in the file nor in the checkpoint's fingerprint: they do not change the
    # result (a segmented file's segment table says how it was cut).
    UNRECORDED = ("dry_run", "force", "segment_frames", "jobs", "backend", "address")

    def __post_init__(self):
        if self.time_budget is not None:  # "20m" from the command line or the Python API
            from .planning import parse_duration

            self.time_budget = parse_duration(self.time_budget)

    def validate(self) -> None:
        super().validate()
        if self.segment_frames is None:
            for flag, given in (("--jobs", self.jobs != 1), ("--backend", self.backend != "local"),
                                ("--address", self.address is not None)):
                if given:
                    raise NncError(f"{flag} applies to segmented encodes: add --segment-frames N")
        if self.address is not None and self.backend != "ray":
            raise NncError("--address is a Ray cluster's: add --backend ray")
        if self.backend == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise NncError("--backend ray needs Ray: pip install 'nnc-toolkit[ray]'")

    def settings(self) -> dict:
        return {k: v for k, v in super().settings().items() if k not in self.UNRECORDED}


@dataclass
class CompressedVideo:
    """What ``compress`` returns: the payload plus what was measured on the way."""

    model_header: dict
    groups: list[TensorGroup]
    settings: dict  # the resolved encode settings (for reports and the file header)
    stats: dict = field(default_factory=dict)  # train loss/PSNR, timings, parameter counts
    # --bpp/--bitrate: the tensors at full precision, requantized to land on the target by
    # the file writer (:mod:`nnc.codec.rate_target`); None: ``groups`` are written as they are.
    rate_target: Any = None


class Codec:
    """Base class of the registered codecs (see :func:`~nnc.codec.registry.register_codec`).

    A subclass sets ``kind``, its ``Options`` dataclass and, for reports, ``rate_option``
    (the option a rate sweep varies), and implements ``compress`` and ``decompress``.
    """

    name: str = ""  # set by register_codec
    kind: CodecKind = CodecKind.VIDEO
    Options: type[CodecOptions] = CodecOptions
    rate_option: str = "size"
    # The config dataclass in the file's ``model.config`` (None: the codec has none);
    # :meth:`parse_config` is how decode and ``nnc info`` read it.
    config_class: type | None = None

    @classmethod
    def parse_config(cls, model_header: object):
        """The checked config of an untrusted model header: InvalidBitstreamError (one line)
        on anything wrong, never another exception."""
        from ..errors import InvalidBitstreamError

        if not isinstance(model_header, dict):
            raise InvalidBitstreamError("header has no model section")
        if cls.config_class is None:
            return None
        try:
            return cls.config_class.from_dict(model_header.get("config"))
        except (TypeError, ValueError, AttributeError, OverflowError) as error:
            raise InvalidBitstreamError(f"bad {cls.name} config: {error}") from None

    @classmethod
    def make_options(cls, **values) -> CodecOptions:
        """This codec's options from ``values`` (None: the default), checked; a value for an
        option the codec does not have is an error."""
        known = cls.Options.fields()
        unknown = [name for name, value in values.items() if value is not None and name not in known]
        if unknown:
            names = ", ".join("--" + name.replace("_", "-") for name in unknown)
            raise NncError(f"{names} does not apply to --model {cls.name}")
        if values.get("preset") is not None and "preset" in known:  # fills in what was not given
            from .presets import apply_preset

            values = apply_preset(cls.name, known, values)
        options = cls.Options(**{k: v for k, v in values.items() if v is not None})
        options.validate()
        return options

    def check_options(self, options: CodecOptions) -> None:
        """Refuse bad options before any input is read or any training starts."""
        options.validate()

    def compress(self, video, options: CodecOptions) -> CompressedVideo:
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


def machine_description() -> dict:
    """Where an encode or a benchmark ran (recorded in results next to timings)."""
    description = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                   "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(0)
    return description


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
