"""Rate targets: ``--bpp 0.05`` or ``--bitrate 800k`` for the video codecs that size a network.

By default a target trains for rate and distortion ("Rate-trained codecs" below).  With
``--rate-mode search`` the published recipe trains without a rate term and lands in two
steps, because the size of a file is only known once its trained values are entropy coded:

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

**Rate-trained codecs** (``--bpp``, unless ``--rate-mode search``; ``--lambda`` is lambda's
start, DEFAULT_TARGET_LAMBDA when not given): the model is sized at
RATE_TRAINED_BITS_PER_VALUE entropy-coded bits a value, training adapts lambda towards
the target (:mod:`nnc.codec.rate_control`), and the codec hands over its trained
``step``-scheme tensors with the float values they quantize.  The landing's knob is
then a common multiplier ``s = 2**(k / STEP_RESOLUTION)`` (``k`` = 0..MAX_STEP_LEVEL) on
every learned step, the symbols ``round(value / (s x step))`` requantized from the float
values; ``k = 0`` is the trained file itself, and the smallest ``s`` whose file fits is
written.  The tensors stay ``step`` tensors (``symbols x scale``): today's decoders read
them.
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
# Rate-trained files (--bpp/--bitrate, unless --rate-mode search) are sized at entropy-coded bits per coded value,
# side information included, as measured on the bunny CPU tier's rate-trained files
# (README, 375k values): HNeRV 3.8 (0.0530 bpp at lambda 0.004), HiNeRV 3.3 (0.0464 bpp at
# lambda 0.01).  NeRV and NeRV++ have no such measurement: they take HNeRV's figure.
RATE_TRAINED_BITS_PER_VALUE = {"hnerv": 3.8, "hinerv": 3.3}
DEFAULT_RATE_TRAINED_BITS = 3.8
# The fewest bits a value of a rate-trained network is assumed to reach before training
# (the refusal of unreachable targets): well under the 0.45 measured for HNeRV 180k on
# park_joy 160x90 at lambda 5e-3 (README), so only hopeless targets are refused early;
# a network that still misses the target after training is refused by the landing.
RATE_TRAINED_FLOOR_BITS = 0.2
# The landing's knob for rate-trained files: every learned step times 2**(k / 32),
# k = 0..128 (the trained steps up to 16x coarser: 4 bits fewer per value).
STEP_RESOLUTION = 32
MAX_STEP_LEVEL = 128
# --bpp/--bitrate train for rate unless --rate-mode search; lambda starts here (the rate
# control adapts it: on three real clips it ended between 4.4e-4 and 6.2e-3 from 0.01).
RATE_MODES = ("train", "search")
DEFAULT_TARGET_LAMBDA = 0.01


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
                                     "of every frame): sets the model size and trains for rate and distortion, "
                                     "lambda (--lambda: its start, default 0.01) adapted so that the file lands "
                                     "just under it; --params may be given. --rate-mode search: the published "
                                     "recipe, then the quantization searched onto it. Not with --bitrate.",
                               low=0, low_open=True)
    bitrate: float | None = option(None, "Target bits per second of video (800k, 1.5M), from the clip's frame "
                                         "rate; as --bpp otherwise.", low=0, low_open=True, metavar="RATE")
    rate_mode: str | None = option(None, "How --bpp/--bitrate land: train (default: rate-distortion training, "
                                         "lambda adapted towards the target) or search (the published recipe "
                                         "without a rate term, then the weights' bit depth searched onto the "
                                         "target).", choices=RATE_MODES)
    preset: str | None = option(None, PRESET_HELP, choices=PRESET_NAMES)

    def __post_init__(self):
        if self.bitrate is not None:  # "800k" from the command line or the Python API
            self.bitrate = parse_bitrate(self.bitrate)
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()

    def trains_for_rate(self) -> bool:
        """A target that trains for rate: given with --lambda, or by default (not --rate-mode search)."""
        has_target = self.bpp is not None or self.bitrate is not None
        return has_target and hasattr(self, "rate_lambda") and self.rate_mode != "search"

    def settings(self) -> dict:
        # Recorded only when given: an encode without them writes the header it wrote before.
        settings = {name: value for name, value in super().settings().items()
                    if not (name in ("bpp", "bitrate", "preset", "rate_mode") and value is None)}
        if self.trains_for_rate() and settings.get("rate_lambda") is None:
            # A target trains for rate by default (lambda's start resolved here, so the
            # options keep what the user gave): HNeRV at equal epochs and 7-9% fewer bits gave
            # 0.4-3.8 dB more than the search on three real clips (README, "Rate targets").
            settings["rate_lambda"] = DEFAULT_TARGET_LAMBDA
        return settings

    def validate(self) -> None:
        super().validate()
        flag = "--bpp" if self.bpp is not None else "--bitrate" if self.bitrate is not None else None
        if flag is None:
            if self.rate_mode is not None:
                raise NncError("--rate-mode says how --bpp or --bitrate land: give one of them")
            return
        if self.bpp is not None and self.bitrate is not None:
            raise NncError("give --bpp or --bitrate, not both")
        if self.rate_mode == "search" and getattr(self, "rate_lambda", None) is not None:
            raise NncError(f"{flag} with --rate-mode search trains without a rate term: drop --lambda "
                           "(or --rate-mode train)")
        if getattr(self, "segment_frames", None) is not None:  # the landing searches one network's quantization
            # the landing (the search, or the step multiplier) works on one network's tensors
            raise NncError(f"{flag} does not apply to segmented encodes (--segment-frames) yet: give --params")
        rate_lambda = getattr(self, "rate_lambda", None)
        if self.trains_for_rate():
            # Rate-trained: lambda sets the rate, so a given size is fine; lambda is adapted
            # by multiplying it, which cannot leave zero.
            if rate_lambda is not None and rate_lambda <= 0:
                raise NncError(f"{flag} with --lambda adapts lambda from its starting value: give one above 0")
            return
        for name, other in (("size", "--params"), ("hinerv_config", "--hinerv-config"), ("rate_lambda", "--lambda")):
            if getattr(self, name, None) is not None:
                raise NncError(f"{flag} with --rate-mode search chooses the model size and quantization itself; "
                               f"give {flag} or {other}, not both")


def target_bits(settings: dict, num_frames: int, height: int, width: int, fps) -> float | None:
    """The file size ``settings`` ask for, in bits (None: no rate target)."""
    if settings.get("bpp") is not None:
        return float(settings["bpp"]) * num_frames * height * width
    if settings.get("bitrate") is not None:
        return float(settings["bitrate"]) * num_frames / float(fps)
    return None


def planned_file_bits(recipe_bits: float, wanted_bits: float | None) -> float:
    """The size a plan shows (and the raw-size check weighs) before training: a target's
    bits (the file lands at or under them), else the upper estimate, the recipe's values x
    their bits (a rate-trained network starts there and lambda only lowers it)."""
    return recipe_bits if wanted_bits is None else wanted_bits


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
    bits misses the target (refused).  Rate-trained (``rate_lambda`` set): the same at
    RATE_TRAINED_BITS_PER_VALUE[model] bits a value, already entropy coded (the
    recipe's ``bits_per_parameter`` do not apply), the floor at RATE_TRAINED_FLOOR_BITS.
    Otherwise the default rule, aiming at the preset's size target (0.1 bpp without one)."""
    num_frames, height, width = video.frames.shape[:3]
    weight_bits = int(settings["weight_bits"])
    bits = target_bits(settings, num_frames, height, width, video.info.fps)
    if bits is None:
        wanted_bpp = size_target_bpp(settings.get("preset"))
        extra = {} if wanted_bpp is None else {"target_bpp": wanted_bpp}
        return first_solvable_size(solve, default_model_size(num_frames, height, width, weight_bits, **extra))
    pixels = num_frames * height * width
    rate_trained = settings.get("rate_lambda") is not None
    if rate_trained:
        coded_bits_per_value = RATE_TRAINED_BITS_PER_VALUE.get(model, DEFAULT_RATE_TRAINED_BITS)
    else:
        coded_bits_per_value = bits_per_parameter * CODED_SHARE
    wanted = (bits - 8 * OVERHEAD_BYTES) / coded_bits_per_value
    try:
        size = smallest_solvable_size(solve, max(wanted, 1.0))
    except ValueError as error:
        raise NncError(str(error)) from None
    if size <= max(wanted, 1.0):
        return float(round(wanted))
    if rate_trained:
        floor_bits = size * RATE_TRAINED_FLOOR_BITS + 8 * OVERHEAD_BYTES
        reached = f"{size:,.0f} parameters at about {RATE_TRAINED_FLOOR_BITS:g} bits each, rate-trained"
    else:
        # At MIN_PRECISION bits entropy coding saves little (few levels, and weights trained
        # briefly are nearly uniform): no saving is counted, so the estimate errs high.
        floor_bits = size * bits_per_parameter * (MIN_PRECISION / weight_bits) + 8 * OVERHEAD_BYTES
        reached = f"{size:,.0f} parameters at {MIN_PRECISION:g}-bit weights"
    if bits < floor_bits:
        raise NncError(f"{describe_target(settings, pixels, bits)} is below what the smallest {model} for "
                       f"this clip reaches: about {floor_bits / pixels:.3g} bpp ({reached}); raise the target")
    return size


def full_precision_bits(recipe_bits: int, weight_bits: int) -> int:
    """The bits a codec quantizes a tensor at for the search: FULL_BITS for the weights,
    the same offset below (or above) them as in the recipe for the other tensors."""
    return int(min(max(FULL_BITS - (weight_bits - recipe_bits), MIN_TENSOR_BITS), FULL_BITS))


@dataclass
class RateTargetSource:
    """What a codec hands over for a rate target: the target and its tensors, either at
    full precision (min-max) or, rate-trained, as trained (``step`` scheme) together
    with the float values they quantize."""

    target_bits: float
    pixels: int
    # min-max: quantized at full_precision_bits (masks: 1 bit, kept); rate-trained: the
    # trained file's tensors (step scheme, pruned weights as zero symbols)
    groups: list[TensorGroup]
    description: str = ""  # "--bpp 0.05", for messages
    model: str = ""
    # rate-trained only: tensor name -> the float32 values its symbols quantize (pruned
    # weights at zero; names are unique across a codec's groups)
    trained_values: dict[str, np.ndarray] | None = None


@dataclass
class Landing:
    groups: list[TensorGroup]
    precision: float | None  # the weights' bits the search settled on (None: a rate-trained landing)
    file_bits: int  # the measured file, as ``file_bits`` gave it
    evaluations: int
    record: dict = field(default_factory=dict)  # for the header's encoder settings
    step_multiplier: float = 1.0  # rate-trained: the factor on every learned step


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


def step_multiplier(level: int) -> float:
    """The factor on every learned step at ``level`` of the rate-trained knob."""
    return 2.0 ** (level / STEP_RESOLUTION)


def coarsen_tensor(tensor: QuantizedTensor, values: np.ndarray, multiplier: float) -> QuantizedTensor:
    """The step-scheme ``tensor`` with every step times ``multiplier``, requantized from
    ``values`` (the floats it quantizes): ``round(values / (multiplier x step))``.  Zeros
    (pruned weights) stay zero symbols; at ``multiplier`` 1 these are the trained symbols
    (float32 division and round-half-even, as the trainer's torch quantizer)."""
    scale = (np.asarray(tensor.scale, np.float32) * np.float32(multiplier)).astype(np.float32)
    shape = [1] * values.ndim
    if tensor.axis is not None:
        shape[tensor.axis] = -1
    symbols = np.rint(np.asarray(values, np.float32) / scale.reshape(shape)).astype(np.int32)
    return QuantizedTensor(tensor.name, symbols, "step", tensor.bits, tensor.axis, tensor.offset, scale)


def coarsen(groups: list[TensorGroup], trained_values: dict[str, np.ndarray], multiplier: float) -> list[TensorGroup]:
    return [TensorGroup(group.name, [coarsen_tensor(t, trained_values[t.name], multiplier) for t in group.tensors])
            for group in groups]


class _Grid:
    """The knob's grid levels, each candidate file built and measured once."""

    def __init__(self, candidate: Callable[[int], tuple[list[TensorGroup], dict]],
                 file_bits: Callable[[list[TensorGroup], dict], int]):
        self.candidate, self.file_bits = candidate, file_bits
        self.measured: dict[int, tuple[list[TensorGroup], dict, int]] = {}

    def bits(self, level: int) -> int:
        if level not in self.measured:
            groups, record = self.candidate(level)
            self.measured[level] = (groups, record, int(self.file_bits(groups, record)))
        return self.measured[level][2]

    def landing(self, level: int, precision: float | None, multiplier: float = 1.0) -> Landing:
        groups, record, bits = self.measured[level]
        return Landing(groups, precision, bits, len(self.measured), record, multiplier)


def _largest_fitting(grid: _Grid, low: int, high: int, budget: float) -> int:
    """The largest level in [low, high) whose file fits ``budget``, the file growing with
    the level: ``low`` fits, ``high`` does not (measured, or past the grid: unmeasured).

    The size is close to linear in the level, so once both ends are measured the next
    guess interpolates, and the grid point beside an interpolated guess is tried next (it
    usually closes the bracket); bisection when an end is unmeasured or the same end moved
    twice in a row."""
    measured = grid.measured
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
        fits = grid.bits(guess) <= budget
        same_end = same_end + 1 if fits == last_fit else 0
        last_fit = fits
        if fits:
            low = guess
        else:
            high = guess
        neighbour = guess + 1 if fits else guess - 1
        if interpolated and low < neighbour < high:
            pending = neighbour
    return low


def land_on_target(source: RateTargetSource, file_bits: Callable[[list[TensorGroup], dict], int],
                   budget_bits: float | None = None) -> Landing:
    """The file, as ``file_bits(groups, record)`` measures it, that is at most
    ``budget_bits`` (default: the target); ``record`` is what goes into the header's
    encoder settings.  Min-max sources: the largest precision on a 1/RESOLUTION-bit grid
    in [MIN_PRECISION, MAX_PRECISION].  Rate-trained sources (``trained_values``): the
    smallest step multiplier (:func:`land_on_steps`).

    The file grows with the precision (nearly monotonically: the entropy coder picks
    its model per tensor): an interpolating search finds it in about 5 encodes."""
    budget = source.target_bits if budget_bits is None else budget_bits
    if source.trained_values is not None:
        return land_on_steps(source, file_bits, budget)

    def candidate(level: int) -> tuple[list[TensorGroup], dict]:
        precision = level / RESOLUTION
        return requantize(source.groups, precision), {"target_bits": int(source.target_bits),
                                                      "weight_bits": round(precision, 5)}

    grid = _Grid(candidate, file_bits)
    low, high = int(MIN_PRECISION * RESOLUTION), int(MAX_PRECISION * RESOLUTION)
    if grid.bits(low) > budget:
        reached = grid.bits(low)
        raise NncError(f"{source.description}: the trained {source.model} takes {reached / source.pixels:.4g} bpp "
                       f"({math.ceil(reached / 8):,} bytes) even at {MIN_PRECISION:g}-bit weights, above the target "
                       f"of {source.target_bits / source.pixels:.4g} bpp; that is the smallest this clip reaches "
                       f"with {source.model}: raise the target")
    # past the grid: treated as too large, never measured (16-bit tensors code slowly)
    low = _largest_fitting(grid, low, high + 1, budget)
    return grid.landing(low, low / RESOLUTION)


def land_on_steps(source: RateTargetSource, file_bits: Callable[[list[TensorGroup], dict], int],
                  budget: float) -> Landing:
    """A rate-trained source's landing: the smallest multiplier ``2**(k / STEP_RESOLUTION)``
    (k = 0..MAX_STEP_LEVEL) on every learned step whose file fits ``budget``.  k = 0, the
    trained file exactly, is measured first: when training landed, nothing changes.

    The search runs on level = MAX_STEP_LEVEL - k, along which the file grows, with
    the min-max search's bracketing (:func:`_largest_fitting`)."""

    def candidate(level: int) -> tuple[list[TensorGroup], dict]:
        k = MAX_STEP_LEVEL - level
        groups = source.groups if k == 0 else coarsen(source.groups, source.trained_values, step_multiplier(k))
        return groups, {"target_bits": int(source.target_bits), "step_multiplier": round(step_multiplier(k), 6)}

    grid = _Grid(candidate, file_bits)
    trained = MAX_STEP_LEVEL
    if grid.bits(trained) <= budget:
        return grid.landing(trained, None)
    if grid.bits(0) > budget:
        reached, coarsest = grid.bits(0), step_multiplier(MAX_STEP_LEVEL)
        raise NncError(f"{source.description}: the rate-trained {source.model} takes "
                       f"{reached / source.pixels:.4g} bpp ({math.ceil(reached / 8):,} bytes) even with its steps "
                       f"{coarsest:g}x coarser, above the target of {source.target_bits / source.pixels:.4g} bpp: "
                       f"raise the target or the starting --lambda")
    level = _largest_fitting(grid, 0, trained, budget)
    return grid.landing(level, None, step_multiplier(MAX_STEP_LEVEL - level))
