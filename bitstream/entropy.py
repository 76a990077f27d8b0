"""Entropy coding of integer symbol tensors with CompressAI's rANS.

Each tensor gets one entropy model over the closed symbol range [low, low + size - 1]
of its own symbols:

* ``constant``  -- a single symbol value; nothing is entropy coded.
* ``uniform``   -- every symbol of the range equally likely; no table to transmit.
* ``histogram`` -- an empirical frequency table, transmitted at a reduced precision
  (2**P total) and coded with exponential-Golomb codes.
* ``laplace`` / ``logistic`` / ``gaussian`` -- a discretised continuous distribution
  described by two float32 parameters (mean, scale).

The encoder tries all of them and keeps the one with the fewest bits in total
(payload under the model + the model's own description).

The decoder rebuilds the integer frequency tables of the parametric models from their
float32 parameters, so that construction must give the same integers on every machine:
it uses only IEEE-754 binary64 ``+ - * /``, ``floor``, comparisons and ``ldexp`` (all
exactly rounded, whatever SIMD path numpy takes), never ``np.exp``/``erf``, and converts
probabilities to integers with a fixed integer procedure.  FORMAT.md spells it out.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import os
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from nnc.errors import InvalidBitstreamError

PRECISION_BITS = 16
TOTAL_FREQUENCY = 1 << PRECISION_BITS

# A table may hold every value of a 16-bit min-max quantizer.  (One slot beyond the
# range, the escape slot CompressAI always appends, is given zero width.)
MAX_ALPHABET_SIZE = 1 << 16

# CompressAI passes symbols as int32 and adds the table offset in int32 arithmetic.
MIN_SYMBOL = -(1 << 31)
MAX_SYMBOL = (1 << 31) - 1

MODEL_KINDS = ("constant", "uniform", "histogram", "laplace", "logistic", "gaussian")
PARAMETRIC_KINDS = ("laplace", "logistic", "gaussian")
_KIND_CODES = {kind: code for code, kind in enumerate(MODEL_KINDS)}

# Bounds on the parametric models' float32 parameters.  They keep every intermediate
# value of the table construction finite and far from the subnormal range.
MIN_MODEL_SCALE = 2.0**-8
MAX_MODEL_SCALE = 2.0**24
MAX_MODEL_ABS_MEAN = 2.0**32

# Histogram tables are coded with exp-Golomb codes of order k; a code word may not
# carry more than this many significant bits (a frequency is at most 2**16, a zigzag
# delta of two frequencies at most 2**17 + 1).
MAX_TABLE_CODE_BITS = 18
MAX_TABLE_GOLOMB_ORDER = 15
TABLE_CODING_DIRECT = 0  # the frequencies themselves
TABLE_CODING_DELTA = 1  # zigzag differences from the previous frequency (first: from 0)

# Two symbols coded after the real ones under the table {65535, 1}: they cost ~3e-5 bits
# but give CompressAI's encoder, which sizes its output buffer to one 32-bit word per
# coded symbol and writes two flush words beyond that, the room it needs when there
# are fewer than two real symbols.  The decoder checks that both decode to 0.
PAD_SYMBOL_COUNT = 2
_PAD_CDF = [0, TOTAL_FREQUENCY - 1, TOTAL_FREQUENCY, TOTAL_FREQUENCY]

# Symbols cross the Python/C++ boundary as lists; batching bounds that list memory.
_RANS_BATCH = 1 << 18


# --------------------------------------------------------------------------------------
# Byte-level reading and writing shared with the container.


class ByteWriter:
    """Little-endian fields and LEB128 varints appended to a bytearray."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def __len__(self) -> int:
        return len(self.buffer)

    def u8(self, value: int) -> None:
        self.buffer.append(value)

    def u32(self, value: int) -> None:
        self.buffer += struct.pack("<I", value)

    def uvarint(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"uvarint cannot hold negative value {value}")
        while value >= 0x80:
            self.buffer.append((value & 0x7F) | 0x80)
            value >>= 7
        self.buffer.append(value)

    def svarint(self, value: int) -> None:
        self.uvarint(2 * value if value >= 0 else -2 * value - 1)

    def raw(self, data: bytes) -> None:
        self.buffer += data

    def text(self, value: str) -> None:
        encoded = value.encode("utf-8")
        self.uvarint(len(encoded))
        self.buffer += encoded

    def f32_array(self, values: np.ndarray) -> None:
        self.buffer += np.asarray(values, dtype="<f4").tobytes()


class ByteReader:
    """Bounds-checked reader over one chunk; every failure is an InvalidBitstreamError
    naming ``context`` (e.g. "group 'weights'") and the field being read."""

    def __init__(self, data: bytes, context: str) -> None:
        self.data = data
        self.pos = 0
        self.context = context

    def fail(self, reason: str) -> InvalidBitstreamError:
        return InvalidBitstreamError(f"{self.context}: {reason}")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining():
            raise self.fail(f"truncated {what} ({count} bytes needed, {self.remaining()} left)")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def uvarint(self, what: str, maximum: int) -> int:
        value = 0
        for index in range(10):
            byte = self.u8(what)
            value |= (byte & 0x7F) << (7 * index)
            if value > maximum:
                raise self.fail(f"{what} exceeds the limit of {maximum}")
            if byte < 0x80:
                if byte == 0 and index > 0:
                    raise self.fail(f"{what} is a non-minimal varint")
                return value
        raise self.fail(f"{what} is an overlong varint")

    def svarint(self, what: str, minimum: int, maximum: int) -> int:
        zigzag = self.uvarint(what, 1 << 34)  # 5 bytes at most; the range is checked below
        value = zigzag >> 1 if zigzag % 2 == 0 else -(zigzag >> 1) - 1
        if not minimum <= value <= maximum:
            raise self.fail(f"{what} {value} is outside [{minimum}, {maximum}]")
        return value

    def text(self, what: str, max_bytes: int) -> str:
        length = self.uvarint(f"{what} length", max_bytes)
        try:
            return self.take(length, what).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def f32_array(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def expect_end(self, what: str) -> None:
        if self.remaining():
            raise self.fail(f"{self.remaining()} extra bytes after {what}")


# --------------------------------------------------------------------------------------
# Deterministic transcendental functions for table construction.

_LN2_HI = 6.93147180369123816490e-01  # low 32 bits of the mantissa are zero: k*_LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_INV_SQRT2 = 7.07106781186547524401e-01
# Taylor coefficients 1/j!, j = 0..12: truncation error < 2e-16 on |r| <= ln(2)/2.
_EXP_TAYLOR = tuple(1.0 / math.factorial(j) for j in range(13))
# Numerical Recipes' erfcc (Chebyshev fit, fractional error < 1.2e-7 for z >= 0).
_ERFC_COEFFS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)
EXP_MIN_ARGUMENT = -600.0  # exp(-600) ~ 2.6e-261: results stay normal, never subnormal
EXP_MAX_ARGUMENT = 1.0


def deterministic_exp(x: np.ndarray) -> np.ndarray:
    """exp(x) for x clamped to [-600, 1] using only exactly rounded IEEE operations."""
    x = np.minimum(np.maximum(np.asarray(x, dtype=np.float64), EXP_MIN_ARGUMENT), EXP_MAX_ARGUMENT)
    k = np.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    poly = np.full_like(r, _EXP_TAYLOR[12])
    for coeff in reversed(_EXP_TAYLOR[:12]):
        poly = poly * r + coeff
    return np.ldexp(poly, k.astype(np.int32))


def deterministic_erfc(z: np.ndarray) -> np.ndarray:
    """erfc(z) for z >= 0 (relative error < 1.2e-7), built on deterministic_exp."""
    z = np.asarray(z, dtype=np.float64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC_COEFFS[9])
    for coeff in reversed(_ERFC_COEFFS[:9]):
        poly = poly * t + coeff
    return t * deterministic_exp(poly - z * z)


def _lower_tail(kind: str, t: np.ndarray) -> np.ndarray:
    """P(T <= t) of the standardised distribution, for t <= 0 (no cancellation there)."""
    if kind == "laplace":
        return 0.5 * deterministic_exp(t)
    if kind == "logistic":
        e = deterministic_exp(t)
        return e / (1.0 + e)
    if kind == "gaussian":
        return 0.5 * deterministic_erfc((0.0 - t) * _INV_SQRT2)
    raise ValueError(f"not a parametric model: {kind}")


def _tails(kind: str, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(T <= e) (valid where e <= 0) and P(T >= e) (valid where e >= 0) at each edge.

    Each tail is evaluated on its own side of the mean, so that small probabilities far
    in either tail keep their relative precision."""
    return _lower_tail(kind, np.minimum(edges, 0.0)), _lower_tail(kind, np.minimum(0.0 - edges, 0.0))


def _interval_masses(a, b, low_a, low_b, high_a, high_b) -> np.ndarray:
    """Probability of each interval [a, b] (a < b) from the tails at its ends."""
    below = low_b - low_a
    above = high_a - high_b
    across = (1.0 - low_a) - high_b
    return np.maximum(np.where(b <= 0.0, below, np.where(a >= 0.0, above, across)), 0.0)


def _standardised_edges(positions: np.ndarray, low: int, mean: float, scale: float) -> np.ndarray:
    """(symbol - 0.5 - mean) / scale for the symbols low + positions."""
    return ((positions + (float(low) - 0.5)) - float(mean)) / float(scale)


def frequencies_from_masses(masses: np.ndarray, total: float) -> np.ndarray:
    """Integer frequencies summing to 2**16, each >= 1, roughly proportional to masses.

    Deterministic: floor of the scaled probability plus one, then the remaining units go
    one each to the largest fractional parts (ties to the lower index)."""
    size = len(masses)
    if not total > 0.0:
        masses = np.ones(size, dtype=np.float64)
        total = float(size)
    budget = TOTAL_FREQUENCY - size
    scaled = masses / total * float(budget)
    floors = np.floor(scaled)
    freqs = floors.astype(np.int64) + 1
    fractions = scaled - floors
    remainder = TOTAL_FREQUENCY - int(freqs.sum())
    if remainder >= size:
        freqs += remainder // size
        remainder %= size
    if remainder > 0:
        order = np.argsort(0.0 - fractions, kind="stable")
        freqs[order[:remainder]] += 1
    while remainder < 0:
        # Only reachable through rounding when the masses sum to slightly above total.
        candidates = np.flatnonzero(freqs > 1)
        order = candidates[np.argsort(fractions[candidates], kind="stable")]
        take = order[: -remainder]
        freqs[take] -= 1
        remainder += len(take)
    return freqs


def parametric_frequencies(kind: str, low: int, size: int, mean: float, scale: float) -> np.ndarray:
    """The integer table of a discretised Laplace/logistic/Gaussian over [low, low+size-1]."""
    edges = _standardised_edges(np.arange(size + 1, dtype=np.float64), low, mean, scale)
    low_tail, high_tail = _tails(kind, edges)
    masses = _interval_masses(edges[:-1], edges[1:], low_tail[:-1], low_tail[1:], high_tail[:-1], high_tail[1:])
    total = _interval_masses(edges[:1], edges[-1:], low_tail[:1], low_tail[-1:], high_tail[:1], high_tail[-1:])
    return frequencies_from_masses(masses, float(total[0]))


def uniform_frequencies(size: int) -> np.ndarray:
    freqs = np.full(size, TOTAL_FREQUENCY // size, dtype=np.int64)
    freqs[: TOTAL_FREQUENCY - int(freqs.sum())] += 1
    return freqs


# --------------------------------------------------------------------------------------
# Entropy models.


@dataclass(eq=False)
class EntropyModel:
    """How one tensor's symbols are coded.  ``mean``/``scale`` are float32 values
    (parametric kinds); ``table`` holds the histogram at ``precision`` bits."""

    kind: str
    low: int
    size: int = 1
    mean: float = 0.0
    scale: float = 0.0
    precision: int = 0
    table: np.ndarray | None = None

    @property
    def high(self) -> int:
        return self.low + self.size - 1

    @property
    def is_coded(self) -> bool:
        return self.kind != "constant"

    @cached_property
    def frequencies(self) -> np.ndarray:
        """int64 frequencies of the symbols low..high, summing to 2**16."""
        if self.kind == "constant":
            return np.array([TOTAL_FREQUENCY], dtype=np.int64)
        if self.kind == "uniform":
            return uniform_frequencies(self.size)
        if self.kind == "histogram":
            return np.asarray(self.table, dtype=np.int64) << (PRECISION_BITS - self.precision)
        return parametric_frequencies(self.kind, self.low, self.size, self.mean, self.scale)

    def cdf(self) -> list[int]:
        """CompressAI CDF: cumulative frequencies plus a zero-width escape slot, so that
        the decoder's symbol search can never land on the escape (bypass) symbol."""
        cumulative = np.concatenate(([0], np.cumsum(self.frequencies), [TOTAL_FREQUENCY]))
        return cumulative.tolist()

    def ideal_bits(self, symbols: np.ndarray) -> float:
        """Shannon cost of ``symbols`` under the integer table (what rANS achieves)."""
        if self.kind == "constant":
            return 0.0
        counts = np.bincount(np.asarray(symbols, dtype=np.int64).ravel() - self.low, minlength=self.size)
        return _payload_bits(self.frequencies, counts)

    def describe(self) -> dict:
        info: dict = {"kind": self.kind, "low": self.low, "high": self.high}
        if self.kind in PARAMETRIC_KINDS:
            info.update(mean=self.mean, scale=self.scale)
        elif self.kind == "histogram":
            info["precision"] = self.precision
        return info


def _payload_bits(freqs: np.ndarray, counts: np.ndarray) -> float:
    present = counts > 0
    return float(np.dot(counts[present], PRECISION_BITS - np.log2(freqs[present])))


def _bit_length(values: np.ndarray) -> np.ndarray:
    """Exact bit length of positive integers (< 2**53) via frexp."""
    return np.frexp(values.astype(np.float64))[1].astype(np.int64)


def _table_values(table: np.ndarray, coding: int) -> np.ndarray:
    if coding == TABLE_CODING_DIRECT:
        return table
    deltas = np.diff(table, prepend=0)
    return np.where(deltas >= 0, 2 * deltas, -2 * deltas - 1)


def _cheapest_table_coding(table: np.ndarray) -> tuple[int, int, int]:
    """(bits, coding, k) of the cheapest exp-Golomb coding of a histogram table."""
    best = None
    orders = np.arange(MAX_TABLE_GOLOMB_ORDER + 1, dtype=np.int64)
    for coding in (TABLE_CODING_DIRECT, TABLE_CODING_DELTA):
        values = _table_values(table, coding)
        lengths = _bit_length(values[None, :] + (np.int64(1) << orders[:, None]))
        bits = (2 * lengths - orders[:, None] - 1).sum(axis=1)
        k = int(np.argmin(bits))
        if best is None or int(bits[k]) < best[0]:
            best = (int(bits[k]), coding, k)
    return best


def _encode_table(table: np.ndarray, coding: int, k: int) -> bytes:
    words = _table_values(table, coding) + (np.int64(1) << k)
    widths = 2 * _bit_length(words) - k - 1
    ends = np.cumsum(widths)
    position = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - widths, widths)
    shifts = np.repeat(widths, widths) - 1 - position
    bits = (np.repeat(words, widths) >> shifts) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes()


def _decode_table(reader: ByteReader, data: bytes, size: int, coding: int, k: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    total_bits = len(bits)
    window = MAX_TABLE_CODE_BITS
    padded = np.concatenate((bits, np.zeros(window, dtype=np.uint8))).astype(np.int64)
    # windows[i]: the `window` bits starting at bit i, as an integer
    windows = np.zeros(total_bits, dtype=np.int64)
    for j in range(window):
        windows = (windows << 1) | padded[j : j + total_bits]
    # next_one[i]: index of the first 1 bit at or after i (total_bits if none)
    positions = np.where(bits == 1, np.arange(total_bits), total_bits)
    next_one = np.minimum.accumulate(positions[::-1])[::-1]
    values = []
    pos = 0
    for _ in range(size):
        first_one = next_one.item(pos) if pos < total_bits else total_bits
        length = first_one - pos + 1 + k  # significant bits of the code word
        if first_one >= total_bits or length > MAX_TABLE_CODE_BITS or first_one + length > total_bits:
            raise reader.fail("histogram table code is malformed")
        values.append((windows.item(first_one) >> (window - length)) - (1 << k))
        pos = first_one + length
    if total_bits - pos >= 8 or bits[pos:].any():
        raise reader.fail("histogram table has unused bytes or non-zero padding bits")
    table = np.array(values, dtype=np.int64)
    if coding == TABLE_CODING_DELTA:
        table = np.cumsum(np.where(table % 2 == 0, table >> 1, -(table >> 1) - 1))
    return table


def write_model(writer: ByteWriter, model: EntropyModel) -> None:
    writer.u8(_KIND_CODES[model.kind])
    writer.svarint(model.low)
    if model.kind == "constant":
        return
    writer.uvarint(model.size)
    if model.kind in PARAMETRIC_KINDS:
        writer.f32_array(np.array([model.mean, model.scale], dtype=np.float32))
    elif model.kind == "histogram":
        _, coding, k = _cheapest_table_coding(model.table)
        data = _encode_table(model.table, coding, k)
        writer.u8(model.precision)
        writer.u8((coding << 4) | k)
        writer.uvarint(len(data))
        writer.raw(data)


def read_model(reader: ByteReader, what: str, min_symbol: int, max_symbol: int) -> EntropyModel:
    """Parse and validate a model descriptor; symbols must lie in [min_symbol, max_symbol]."""
    code = reader.u8(f"{what} entropy model")
    if code >= len(MODEL_KINDS):
        raise reader.fail(f"{what} has unknown entropy model {code}")
    kind = MODEL_KINDS[code]
    low = reader.svarint(f"{what} lowest symbol", min_symbol, max_symbol)
    if kind == "constant":
        return EntropyModel("constant", low)
    size = reader.uvarint(f"{what} symbol range", MAX_ALPHABET_SIZE)
    if size < 2:
        raise reader.fail(f"{what}: a coded symbol range needs at least 2 symbols, got {size}")
    if low + size - 1 > max_symbol:
        raise reader.fail(f"{what}: symbol range [{low}, {low + size - 1}] exceeds {max_symbol}")
    if kind == "uniform":
        return EntropyModel("uniform", low, size)
    if kind in PARAMETRIC_KINDS:
        mean, scale = (float(v) for v in reader.f32_array(2, f"{what} model parameters"))
        if not (math.isfinite(mean) and abs(mean) <= MAX_MODEL_ABS_MEAN):
            raise reader.fail(f"{what}: model mean {mean} out of bounds")
        if not (math.isfinite(scale) and MIN_MODEL_SCALE <= scale <= MAX_MODEL_SCALE):
            raise reader.fail(f"{what}: model scale {scale} out of bounds")
        return EntropyModel(kind, low, size, mean=mean, scale=scale)
    precision = reader.u8(f"{what} table precision")
    coding_byte = reader.u8(f"{what} table coding")
    coding, k = coding_byte >> 4, coding_byte & 0x0F
    if not 1 <= precision <= PRECISION_BITS or coding not in (TABLE_CODING_DIRECT, TABLE_CODING_DELTA):
        raise reader.fail(f"{what}: bad histogram precision {precision} or coding {coding_byte:#x}")
    max_bytes = (size * (2 * MAX_TABLE_CODE_BITS) + 7) // 8
    data = reader.take(reader.uvarint(f"{what} table length", max_bytes), f"{what} table")
    table = _decode_table(reader, data, size, coding, k)
    if table.min() < 0 or int(table.sum()) != 1 << precision or np.count_nonzero(table) < 2:
        raise reader.fail(f"{what}: histogram table must be >= 0, sum to 2**{precision}, have 2+ symbols")
    return EntropyModel("histogram", low, size, precision=precision, table=table)


# --------------------------------------------------------------------------------------
# Choosing the cheapest model.


@dataclass
class ModelChoice:
    model: EntropyModel
    payload_bits: float  # ideal cost of the symbols under the model's integer table
    side_bits: int  # the model's own description (kind-specific part)


def _quantize_counts(counts: np.ndarray, precision: int) -> np.ndarray:
    """Counts scaled to sum 2**precision, every present symbol >= 1, absent ones 0."""
    present = counts > 0
    budget = (1 << precision) - int(present.sum())
    scaled = counts / float(counts.sum()) * budget
    floors = np.floor(scaled)
    table = np.where(present, floors.astype(np.int64) + 1, 0)
    remainder = (1 << precision) - int(table.sum())
    order = np.argsort(np.where(present, floors - scaled, 1.0), kind="stable")
    table[order[:remainder]] += 1
    return table


def _histogram_candidates(counts: np.ndarray, low: int) -> list[ModelChoice]:
    present = int(np.count_nonzero(counts))
    choices = []
    for precision in range(max(1, (present - 1).bit_length()), PRECISION_BITS + 1):
        table = _quantize_counts(counts, precision)
        payload = _payload_bits(table << (PRECISION_BITS - precision), counts)
        table_bits, _, _ = _cheapest_table_coding(table)
        table_bytes = (table_bits + 7) // 8
        side = 8 * (2 + uvarint_size(table_bytes) + table_bytes)
        choices.append(
            ModelChoice(EntropyModel("histogram", low, len(counts), precision=precision, table=table), payload, side)
        )
    return choices


def uvarint_size(value: int) -> int:
    """Bytes taken by ``ByteWriter.uvarint(value)``."""
    return max(1, (value.bit_length() + 6) // 7)


def _clamp_params(mean: float, scale: float) -> tuple[float, float]:
    """Round to float32 (what the decoder sees) inside the accepted bounds."""
    mean = float(np.float32(min(max(mean, -MAX_MODEL_ABS_MEAN), MAX_MODEL_ABS_MEAN)))
    scale = float(np.float32(min(max(scale, MIN_MODEL_SCALE), MAX_MODEL_SCALE)))
    return mean, scale


def _fit_parametric(kind: str, counts: np.ndarray, low: int, max_evaluations: int) -> ModelChoice:
    values = low + np.arange(len(counts), dtype=np.float64)
    weights = counts / float(counts.sum())
    mean = float(np.dot(weights, values))
    variance = float(np.dot(weights, (values - mean) ** 2))
    if kind == "laplace":
        median = float(values[min(int(np.searchsorted(np.cumsum(weights), 0.5)), len(values) - 1)])
        start = (median, float(np.dot(weights, np.abs(values - median))))
    elif kind == "logistic":
        start = (mean, math.sqrt(3.0 * variance) / math.pi)
    else:
        start = (mean, math.sqrt(variance))

    # The search scores parameters by an approximation of the integer table evaluated
    # only at the symbols that occur (f ~ 1 + p * (65536 - size), which is how
    # frequencies_from_masses builds it), so a step costs O(distinct symbols) rather
    # than O(range); only the winner gets its exact table.
    size = len(counts)
    present = np.flatnonzero(counts)
    present_counts = counts[present]
    # every edge needed: both ends of each occurring symbol, and of the whole range
    edge_positions = np.unique(np.concatenate(([0, size], present, present + 1)))
    starts, ends = np.searchsorted(edge_positions, present), np.searchsorted(edge_positions, present + 1)
    first, last = np.searchsorted(edge_positions, [0, size])
    edge_positions = edge_positions.astype(np.float64)
    budget = float(TOTAL_FREQUENCY - size)
    cache: dict[tuple[float, float], float] = {}

    def cost(params: tuple[float, float]) -> float:
        if params not in cache:
            edges = _standardised_edges(edge_positions, low, *params)
            lo, hi = _tails(kind, edges)
            total = float(_interval_masses(edges[first], edges[last], lo[first], lo[last], hi[first], hi[last]))
            masses = _interval_masses(edges[starts], edges[ends], lo[starts], lo[ends], hi[starts], hi[ends])
            probabilities = masses / total if total > 0.0 else np.full(len(present), 1.0 / size)
            approx_freqs = 1.0 + probabilities * budget
            cache[params] = float(np.dot(present_counts, PRECISION_BITS - np.log2(approx_freqs)))
        return cache[params]

    # Pattern search on (mean, log scale): the moment estimates ignore discretisation
    # and outliers, and a handful of table evaluations recover most of the difference.
    best = _clamp_params(*start)
    best_cost = cost(best)
    mean_step, log_step = max(0.5 * best[1], 0.25), 0.5
    while len(cache) < max_evaluations and log_step >= 1.0 / 64:
        mean, scale = best
        for candidate in (
            (mean, scale * 2.0**log_step),
            (mean, scale * 2.0**-log_step),
            (mean + mean_step, scale),
            (mean - mean_step, scale),
        ):
            candidate = _clamp_params(*candidate)
            if cost(candidate) < best_cost:
                best, best_cost = candidate, cost(candidate)
                break
        else:
            mean_step, log_step = mean_step / 2, log_step / 2
    model = EntropyModel(kind, low, size, mean=best[0], scale=best[1])
    return ModelChoice(model, _payload_bits(model.frequencies, counts), 64)


def choose_model(symbols: np.ndarray) -> ModelChoice:
    """The model with the fewest payload + description bits for these symbols."""
    flat = np.asarray(symbols).ravel()
    if flat.size == 0:
        raise ValueError("cannot choose an entropy model for an empty tensor")
    low, high = int(flat.min()), int(flat.max())
    if low == high:
        return ModelChoice(EntropyModel("constant", low), 0.0, 0)
    size = high - low + 1
    if size > MAX_ALPHABET_SIZE:
        raise ValueError(
            f"symbol range [{low}, {high}] spans {size} values; at most {MAX_ALPHABET_SIZE} can be "
            "entropy coded (use fewer bits or a coarser quantization step)"
        )
    counts = np.bincount(flat.astype(np.int64) - low, minlength=size)
    uniform = EntropyModel("uniform", low, size)
    best = ModelChoice(uniform, _payload_bits(uniform.frequencies, counts), 0)
    # No model codes the symbols below their empirical entropy, so a family whose side
    # information alone already makes it dearer than the best so far is skipped.
    present = counts[counts > 0]
    entropy_bits = float(np.dot(present, np.log2(flat.size / present)))

    def consider(choice: ModelChoice) -> None:
        nonlocal best
        if choice.payload_bits + choice.side_bits < best.payload_bits + best.side_bits:
            best = choice

    evaluations = 24 if flat.size < 4096 else 64
    for kind in PARAMETRIC_KINDS:
        if entropy_bits + 64 < best.payload_bits + best.side_bits:
            consider(_fit_parametric(kind, counts, low, evaluations))
    # A histogram table costs at least 3 bytes of fields and a bit per symbol of the range.
    if entropy_bits + 24 + size < best.payload_bits + best.side_bits:
        for choice in _histogram_candidates(counts, low):
            consider(choice)
    return best


# --------------------------------------------------------------------------------------
# rANS streams.

_rans_module = None


def _load_rans_module():
    """CompressAI's rANS extension.

    ``import compressai`` runs the package __init__, which imports torch and every model
    (~6 s); the rANS extension itself is a standalone pybind11 module, so load it
    directly when it can be found, and fall back to the ordinary import otherwise."""
    module = sys.modules.get("compressai.ans")
    if module is not None:
        return module
    try:
        spec = importlib.util.find_spec("compressai")
        for location in (spec.submodule_search_locations or []) if spec else []:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(location, "ans" + suffix)
                if os.path.isfile(path):
                    loader = importlib.machinery.ExtensionFileLoader("compressai.ans", path)
                    ext_spec = importlib.util.spec_from_file_location("compressai.ans", path, loader=loader)
                    module = importlib.util.module_from_spec(ext_spec)
                    loader.exec_module(module)
                    sys.modules["compressai.ans"] = module
                    return module
    except (ImportError, OSError):
        pass
    from compressai import ans

    return ans


def _rans():
    global _rans_module
    if _rans_module is None:
        _rans_module = _load_rans_module()
    return _rans_module


def encode_symbols(parts: Sequence[tuple[np.ndarray, EntropyModel]]) -> bytes:
    """One rANS stream for the symbols of every non-constant part, in order."""
    coded = [(np.asarray(symbols).ravel(), model) for symbols, model in parts if model.is_coded]
    if not coded:
        return b""
    encoder = _rans().BufferedRansEncoder()
    for symbols, model in coded:
        indices = symbols.astype(np.int64) - model.low
        if indices.size and (indices.min() < 0 or indices.max() >= model.size):
            raise ValueError(f"symbols outside the model range [{model.low}, {model.high}]")
        if not np.all(model.frequencies[indices] > 0):
            raise ValueError("a symbol has zero frequency in its model")
        cdf = [model.cdf()]
        sizes, offsets = [model.size + 2], [model.low]
        for start in range(0, symbols.size, _RANS_BATCH):
            batch = symbols[start : start + _RANS_BATCH].tolist()
            encoder.encode_with_indexes(batch, [0] * len(batch), cdf, sizes, offsets)
    encoder.encode_with_indexes([0] * PAD_SYMBOL_COUNT, [0] * PAD_SYMBOL_COUNT, [_PAD_CDF], [4], [0])
    return encoder.flush()


def max_stream_bytes(coded_symbols: int) -> int:
    """Upper bound of a valid stream's length, and of what the decoder may read: the
    two flush words plus at most one 32-bit word per symbol (pads included)."""
    return 8 + 4 * (coded_symbols + PAD_SYMBOL_COUNT)


def decode_symbols(stream: bytes, parts: Sequence[tuple[int, EntropyModel]], context: str) -> list[np.ndarray]:
    """Inverse of encode_symbols given each part's symbol count and model."""
    coded_total = sum(count for count, model in parts if model.is_coded)
    if coded_total == 0:
        if stream:
            raise InvalidBitstreamError(f"{context}: rANS stream present but nothing to decode")
        return [np.full(count, model.low, dtype=np.int32) for count, model in parts]
    limit = max_stream_bytes(coded_total)
    if len(stream) < 8 or len(stream) % 4 or len(stream) > limit:
        raise InvalidBitstreamError(f"{context}: rANS stream length {len(stream)} is impossible")
    # CompressAI's decoder does not bound-check its input: it reads up to one word per
    # symbol, so give it zeros up to that limit rather than let it run off the buffer.
    decoder = _rans().RansDecoder()
    padded = bytes(stream).ljust(limit, b"\0")
    decoder.set_stream(padded)  # the decoder keeps its own copy
    del padded
    results = []
    for count, model in parts:
        if not model.is_coded:
            results.append(np.full(count, model.low, dtype=np.int32))
            continue
        cdf = [model.cdf()]
        sizes, offsets = [model.size + 2], [model.low]
        out = np.empty(count, dtype=np.int32)
        for start in range(0, count, _RANS_BATCH):
            n = min(_RANS_BATCH, count - start)
            out[start : start + n] = decoder.decode_stream([0] * n, cdf, sizes, offsets)
        results.append(out)
    if decoder.decode_stream([0] * PAD_SYMBOL_COUNT, [_PAD_CDF], [4], [0]) != [0] * PAD_SYMBOL_COUNT:
        raise InvalidBitstreamError(f"{context}: rANS stream does not end with the expected padding symbols")
    return results
