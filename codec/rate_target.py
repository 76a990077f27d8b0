"""Rate targets: ``--bpp 0.05`` or ``--bitrate 800k`` for the video codecs that size a network.

Two steps, because the size of a file is only known once its trained values are
entropy coded:

1. **Before training** :func:`choose_model_size` picks the parameter count that should
   land near the target at the recipe's bit depth (parameters x bits x the share that
   entropy coding keeps, plus the header and side information).  A target below what
   the smallest network of the clip can reach, even at MIN_PRECISION bits, is refused
   before anything is trained, with that smallest bpp in the message.
2. **After training** the codec hands over its tensors quantized at FULL_BITS
   (:class:`RateTargetSource`) and :func:`land_on_target` searches one precision knob,
   the weights' bits as a real number (``7.4``: 2**7.4 levels over each channel's range),
   for the largest precision whose *real* file (every tensor requantized and entropy coded
   by :mod:`nnc.bitstream`, the header and container included, measured by the caller's
   ``file_bits``) is at or under the target.  Other tensors keep their offset to the
   weights' bits (HNeRV's 6-bit embeddings are 2 bits below its 8-bit weights); pruning
   masks (1-bit tensors) are kept as they are.

Requantized tensors stay min-max tensors on the axis the codec's rule chose at FULL_BITS,
with 2**b levels for a real ``b`` (stored at ceil(b) bits): any decoder of these codecs
already reads them, dequantization being ``symbols x scale + offset`` for every tensor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..bitstream import QuantizedTensor, TensorGroup
from ..errors import NncError
from ..units import SI_SUFFIXES
from .base import option
from .planning import default_model_size, first_solvable_size
from .presets import PRESET_HELP, PRESET_NAMES, size_target_bpp

FULL_BITS = 16  # the codec quantizes at this many bits; the search requantizes from there
MIN_PRECISION = 4.0  # weights' bits: below this the networks fall apart
MAX_PRECISION = 16.0
MIN_TENSOR_BITS = 2.0  # a tensor below the weights (embeddings) never gets fewer bits than this
RESOLUTION = 32  # the search's grid: 1/32 of a bit
# Before training: entropy-coded bits per stored bit at the recipe's bits (entropy coding
# saves 10-25% on well-trained weights; after a few epochs almost nothing, and the search
# then settles below the recipe's bits), and the bytes besides the symbols (header,
# descriptors, entropy-model tables: 1.3 KB on a 15-tensor HNeRV).
CODED_SHARE = 0.8
OVERHEAD_BYTES = 1500
LARGEST_TARGET_SIZE = 1e9  # parameters: only a bound for the search of the smallest network


def parse_bitrate(value) -> float:
    """``800k``, ``1.5M``, ``2000000`` (bits per second of video) -> bits per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    else:
        text = str(value).strip().lower().removesuffix("bps").removesuffix("b/s")
        match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)", text)
        if match is None:
            raise NncError(f"--bitrate {value!r}: expected bits per second like 800k, 1.5M or 200000")
        rate = float(match[1]) * SI_SUFFIXES[match[2]]
    if not math.isfinite(rate) or rate <= 0:
        raise NncError(f"--bitrate {value!r}: must be a positive rate")
    return rate


@dataclass
class RateTargetOptions:
    """``--bpp``, ``--bitrate`` and ``--preset``: shared by HNeRV, NeRV, NeRV++ and HiNeRV."""

    bpp: float | None = option(None, "Target file size in bits per pixel (every byte of the file over every pixel "
                                     "of every frame): sets the model size, then the quantization is searched so "
                                     "that the file lands at or just under it. Not with --params or --bitrate.",
                               low=0, low_open=True)
    bitrate: float | None = option(None, "Target bits per second of video (800k, 1.5M), from the clip's frame "
                                         "rate; as --bpp otherwise.", low=0, low_open=True, metavar="RATE")
    preset: str | None = option(None, PRESET_HELP, choices=PRESET_NAMES)

    def __post_init__(self):
        if self.bitrate is not None:  # "800k" from the command line or the Python API
            self.bitrate = parse_bitrate(self.bitrate)
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()

    def settings(self) -> dict:
        # Recorded only when given: an encode without them writes the header it wrote before.
        return {name: value for name, value in super().settings().items()
                if not (name in ("bpp", "bitrate", "preset") and value is None)}

    def validate(self) -> None:
        super().validate()
        flag = "--bpp" if self.bpp is not None else "--bitrate" if self.bitrate is not None else None
        if flag is None:
            return
        if self.bpp is not None and self.bitrate is not None:
            raise NncError("give --bpp or --bitrate, not both")
        if getattr(self, "segment_frames", None) is not None:  # the landing searches one network's quantization
            raise NncError(f"{flag} does not apply to segmented encodes (--segment-frames) yet: give --params")
        for name, other in (("size", "--params"), ("hinerv_config", "--hinerv-config"), ("rate_lambda", "--lambda")):
            if getattr(self, name, None) is not None:
                raise NncError(f"{flag} chooses the model size and quantization itself; give {flag} or {other}, "
                               "not both")


def target_bits(settings: dict, num_frames: int, height: int, width: int, fps) -> float | None:
    """The file size ``settings`` ask for, in bits (None: no rate target)."""
    if settings.get("bpp") is not None:
        return float(settings["bpp"]) * num_frames * height * width
    if settings.get("bitrate") is not None:
        return float(settings["bitrate"]) * num_frames / float(fps)
    return None


def describe_target(settings: dict, pixels: int | None = None, bits: float | None = None) -> str:
    """``--bpp 0.05``, or ``--bitrate 800000 (0.052 bpp)`` when ``pixels`` and ``bits`` are given."""
    if settings.get("bpp") is not None:
        return f"--bpp {settings['bpp']:g}"
    text = f"--bitrate {float(settings['bitrate']):g}"
    return text if not pixels or bits is None else f"{text} ({bits / pixels:.4g} bpp)"


def smallest_solvable_size(solve: Callable[[float], object], start: float) -> float:
    """The smallest parameter count ``solve`` accepts at or above ``start``."""
    low = max(float(start), 1.0)
    try:
        solve(low)
        return low
    except ValueError:
        pass
    high = first_solvable_size(solve, max(round(low * 1.25, -3), 1000.0), largest=LARGEST_TARGET_SIZE)
    while high - low > 1.0:
        middle = (low + high) / 2
        try:
            solve(middle)
            high = middle
        except ValueError:
            low = middle
    return float(math.ceil(high))


def choose_model_size(settings: dict, video, solve: Callable[[float], object], bits_per_parameter: float,
                      model: str) -> float:
    """The model size (parameters) for ``settings`` when ``--params`` is not given.

    A rate target (``bpp``/``bitrate``): the size whose entropy-coded values at the
    recipe's ``bits_per_parameter`` plus OVERHEAD_BYTES come to the target; the
    smallest network when that is below it, unless even the smallest at MIN_PRECISION
    bits misses the target (refused).  Otherwise the default rule, aiming at the
    preset's size target (0.1 bpp without one)."""
    num_frames, height, width = video.frames.shape[:3]
    weight_bits = int(settings["weight_bits"])
    bits = target_bits(settings, num_frames, height, width, video.info.fps)
    if bits is None:
        wanted_bpp = size_target_bpp(settings.get("preset"))
        extra = {} if wanted_bpp is None else {"target_bpp": wanted_bpp}
        return first_solvable_size(solve, default_model_size(num_frames, height, width, weight_bits, **extra))
    pixels = num_frames * height * width
    wanted = (bits - 8 * OVERHEAD_BYTES) / (bits_per_parameter * CODED_SHARE)
    try:
        size = smallest_solvable_size(solve, max(wanted, 1.0))
    except ValueError as error:
        raise NncError(str(error)) from None
    if size <= max(wanted, 1.0):
        return float(round(wanted))
    # At MIN_PRECISION bits entropy coding saves little (few levels, and weights trained
    # briefly are nearly uniform): no saving is counted, so the estimate errs high.
    floor_bits = size * bits_per_parameter * (MIN_PRECISION / weight_bits) + 8 * OVERHEAD_BYTES
    if bits < floor_bits:
        raise NncError(f"{describe_target(settings, pixels, bits)} is below what the smallest {model} for "
                       f"this clip reaches: about {floor_bits / pixels:.3g} bpp ({size:,.0f} parameters at "
                       f"{MIN_PRECISION:g}-bit weights); raise the target")
    return size


def full_precision_bits(recipe_bits: int, weight_bits: int) -> int:
    """The bits a codec quantizes a tensor at for the search: FULL_BITS for the weights,
    the same offset below (or above) them as in the recipe for the other tensors."""
    return int(min(max(FULL_BITS - (weight_bits - recipe_bits), MIN_TENSOR_BITS), FULL_BITS))


@dataclass
class RateTargetSource:
    """What a codec hands over for a rate target: the target and its tensors at full precision."""

    target_bits: float
    pixels: int
    groups: list[TensorGroup]  # quantized at full_precision_bits (masks: 1 bit, kept)
    description: str = ""  # "--bpp 0.05", for messages
    model: str = ""


@dataclass
class Landing:
    groups: list[TensorGroup]
    precision: float  # the weights' bits the search settled on
    file_bits: int  # the measured file, as ``file_bits`` gave it
    evaluations: int
    record: dict = field(default_factory=dict)  # for the header's encoder settings


def _channel_limits(values: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per channel along ``axis`` (or for the whole tensor): minima and maxima."""
    flat = values.reshape(1, -1) if axis is None else np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    return flat.min(axis=1), flat.max(axis=1)


def requantize_tensor(tensor: QuantizedTensor, precision: float) -> QuantizedTensor:
    """``tensor`` (minmax at its full-precision bits) at ``precision`` weights' bits.

    A real bit depth ``b`` is min-max quantization with 2**b levels over each channel's
    range: offset = min, scale = (max - min) / (2**b - 1), stored as a minmax tensor of
    ceil(b) bits (its symbols stay below 2**b).  At a whole ``b`` this is exactly the
    codecs' own min-max quantizer."""
    if tensor.scheme != "minmax" or tensor.bits <= 1:  # a pruning mask: symbols, not values
        return tensor
    bits = min(max(precision - (FULL_BITS - tensor.bits), MIN_TENSOR_BITS), MAX_PRECISION)
    values = tensor.dequantize().astype(np.float64)
    lows, highs = _channel_limits(values, tensor.axis)
    tiny = np.float32(np.finfo(np.float32).tiny)
    offset = lows.astype(np.float32)
    offset[np.abs(offset) < tiny] = 0.0
    scale = ((highs.astype(np.float32) - offset) / np.float32(2.0**bits - 1.0)).astype(np.float32)
    # A constant channel: scale 1 and symbols 0, the offset alone reconstructs it (as minmax).
    scale = np.where(scale >= tiny, scale, np.float32(1.0)).astype(np.float32)
    shape = [1] * values.ndim
    if tensor.axis is not None:
        shape[tensor.axis] = -1
    stored_bits = int(math.ceil(bits - 1e-9))
    levels = (values - offset.astype(np.float64).reshape(shape)) / scale.astype(np.float64).reshape(shape)
    symbols = np.clip(np.rint(levels), 0, 2**stored_bits - 1).astype(np.int32)
    return QuantizedTensor(tensor.name, symbols, "minmax", stored_bits, tensor.axis, offset, scale)


def requantize(groups: list[TensorGroup], precision: float) -> list[TensorGroup]:
    return [TensorGroup(group.name, [requantize_tensor(t, precision) for t in group.tensors]) for group in groups]


def land_on_target(source: RateTargetSource, file_bits: Callable[[list[TensorGroup], dict], int],
                   budget_bits: float | None = None) -> Landing:
    """The largest precision (on a 1/RESOLUTION-bit grid in [MIN_PRECISION, MAX_PRECISION])
    whose file, as ``file_bits(groups, record)`` measures it, is at most ``budget_bits``
    (default: the target); ``record`` is what goes into the header's encoder settings.

    The file grows with the precision (nearly monotonically: the entropy coder picks
    its model per tensor): an interpolating search finds it in about 5 encodes."""
    budget = source.target_bits if budget_bits is None else budget_bits
    measured: dict[int, tuple[list[TensorGroup], dict, int]] = {}

    def measure(level: int) -> int:
        if level not in measured:
            precision = level / RESOLUTION
            groups = requantize(source.groups, precision)
            record = {"target_bits": int(source.target_bits), "weight_bits": round(precision, 5)}
            measured[level] = (groups, record, int(file_bits(groups, record)))
        return measured[level][2]

    low, high = int(MIN_PRECISION * RESOLUTION), int(MAX_PRECISION * RESOLUTION)
    if measure(low) > budget:
        reached = measure(low)
        raise NncError(f"{source.description}: the trained {source.model} takes {reached / source.pixels:.4g} bpp "
                       f"({math.ceil(reached / 8):,} bytes) even at {MIN_PRECISION:g}-bit weights, above the target "
                       f"of {source.target_bits / source.pixels:.4g} bpp; that is the smallest this clip reaches "
                       f"with {source.model}: raise the target")
    high += 1  # past the grid: treated as too large, never measured (16-bit tensors code slowly)
    # measure(low) fits, measure(high) does not.  The size is close to linear in the
    # precision, so once both ends are measured the next guess interpolates, and the grid
    # point beside an interpolated guess is tried next (it usually closes the bracket);
    # bisection when an end is unmeasured or the same end moved twice in a row.
    pending, last_fit, same_end = None, None, 0
    while high - low > 1:
        interpolated = False
        if pending is not None:
            guess, pending = pending, None
        elif high in measured and same_end < 2:
            spread = max(measured[high][2] - measured[low][2], 1)
            guess = low + int((budget - measured[low][2]) * (high - low) / spread)
            guess, interpolated = min(max(guess, low + 1), high - 1), True
        else:
            guess = (low + high) // 2
        fits = measure(guess) <= budget
        same_end = same_end + 1 if fits == last_fit else 0
        last_fit = fits
        if fits:
            low = guess
        else:
            high = guess
        neighbour = guess + 1 if fits else guess - 1
        if interpolated and low < neighbour < high:
            pending = neighbour
    groups, record, bits = measured[low]
    return Landing(groups, low / RESOLUTION, bits, len(measured), record)

