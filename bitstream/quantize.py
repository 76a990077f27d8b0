"""Scalar quantization of float tensors into integer symbols plus float32 parameters.

Two schemes:

* ``minmax``: symbols in [0, 2**bits - 1]; per tensor or per channel,
  ``offset = min`` and ``scale = (max - min) / (2**bits - 1)``.  That is 2**bits levels
  spanning [min, max] exactly (NeRV's reference code divides by 2**bits + 1 and so
  wastes two levels).
* ``step``: signed symbols ``round(x / step)``, ``offset = 0``, ``scale = step``
  (``bits`` is 0: the range is whatever the data needs).

Dequantization is ``symbols * scale + offset`` in float32 with the stored float32
parameters, i.e. two exactly rounded IEEE operations, so the encoder's reconstruction
(used e.g. for quantization-aware evaluation) and the decoder's agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMES = ("minmax", "step")
MIN_BITS = 1
MAX_BITS = 16

# Scales and offsets are kept out of the float32 subnormal range, where hardware with
# flush-to-zero modes could dequantize differently.
_FLOAT32_TINY = np.float32(np.finfo(np.float32).tiny)


@dataclass(eq=False)
class QuantizedTensor:
    """Integer symbols of one named tensor and how to turn them back into floats.

    ``offset`` and ``scale`` have shape (1,) when ``axis`` is None, else
    (symbols.shape[axis],): parameter i applies to index i along ``axis``."""

    name: str
    symbols: np.ndarray
    scheme: str
    bits: int
    axis: int | None
    offset: np.ndarray
    scale: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.symbols))

    def _broadcast(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=np.float32).reshape(-1)
        if self.axis is None:
            return params[0]
        shape = [1] * len(self.shape)
        shape[self.axis] = -1
        return params.reshape(shape)

    def dequantize(self) -> np.ndarray:
        """float32 reconstruction: symbols * scale + offset along ``axis``."""
        values = np.asarray(self.symbols).astype(np.float32)
        return np.asarray(values * self._broadcast(self.scale) + self._broadcast(self.offset), dtype=np.float32)

    def __eq__(self, other: object) -> bool:
        """Same name, scheme, bits, axis, symbol values and bit-identical parameters
        (symbol dtypes may differ: the decoder returns int32)."""
        if not isinstance(other, QuantizedTensor):
            return NotImplemented

        def same_params(a: np.ndarray, b: np.ndarray) -> bool:
            a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
            return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))

        return (
            self.name == other.name
            and self.scheme == other.scheme
            and self.bits == other.bits
            and self.axis == other.axis
            and self.shape == other.shape
            and np.array_equal(self.symbols, other.symbols)
            and same_params(self.offset, other.offset)
            and same_params(self.scale, other.scale)
        )

    __hash__ = None  # mutable arrays inside


def _as_finite_float64(x: np.ndarray) -> np.ndarray:
    values = np.asarray(x, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot quantize an empty tensor")
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot quantize a tensor containing NaN or infinity")
    return values


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or int(bits) != bits or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return int(bits)


def _minmax_params(lows: np.ndarray, highs: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 offset and scale per channel from float64 minima and maxima."""
    offset = lows.astype(np.float32)
    offset[np.abs(offset) < _FLOAT32_TINY] = 0.0
    scale = (highs.astype(np.float32) - offset) / np.float32(2**bits - 1)
    if not np.all(np.isfinite(scale)):
        raise ValueError("tensor range overflows float32")
    # A constant channel (or one whose range is below float32 resolution) gets scale 1
    # and symbols 0: the offset alone reconstructs it.
    scale = np.where(scale >= _FLOAT32_TINY, scale, np.float32(1.0)).astype(np.float32)
    return offset, scale


def _minmax_symbols(values: np.ndarray, offset: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    levels = (values - offset.astype(np.float64)) / scale.astype(np.float64)
    return np.clip(np.rint(levels), 0, 2**bits - 1).astype(np.int32)


def quantize_per_tensor(x: np.ndarray, bits: int, name: str = "") -> QuantizedTensor:
    """Min-max quantization with one offset/scale for the whole tensor."""
    bits = _check_bits(bits)
    values = _as_finite_float64(x)
    offset, scale = _minmax_params(np.array([values.min()]), np.array([values.max()]), bits)
    symbols = _minmax_symbols(values, offset[0], scale[0], bits)
    return QuantizedTensor(name, symbols, "minmax", bits, None, offset, scale)


def quantize_per_channel(x: np.ndarray, bits: int, axis: int, name: str = "") -> QuantizedTensor:
    """Min-max quantization with one offset/scale per index along ``axis``."""
    bits = _check_bits(bits)
    values = _as_finite_float64(x)
    if not -values.ndim <= axis < values.ndim:
        raise ValueError(f"axis {axis} is out of range for a {values.ndim}-d tensor")
    axis = axis % values.ndim
    channels = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    offset, scale = _minmax_params(channels.min(axis=1), channels.max(axis=1), bits)
    shape = [1] * values.ndim
    shape[axis] = -1
    symbols = _minmax_symbols(values, offset.reshape(shape), scale.reshape(shape), bits)
    return QuantizedTensor(name, symbols, "minmax", bits, axis, offset, scale)


def quantize_step(x: np.ndarray, step: float, name: str = "") -> QuantizedTensor:
    """Uniform quantization with a fixed step: symbols = round(x / step), offset 0."""
    values = _as_finite_float64(x)
    scale = np.float32(step)
    if not (np.isfinite(scale) and scale >= _FLOAT32_TINY):
        raise ValueError(f"step must be a positive, normal float32 value, got {step!r}")
    levels = np.rint(values / np.float64(scale))
    if np.abs(levels).max() > 2**31 - 1:
        raise ValueError(f"step {step!r} is too small for this tensor: symbols overflow int32")
    return QuantizedTensor(
        name,
        levels.astype(np.int32),
        "step",
        0,
        None,
        np.zeros(1, dtype=np.float32),
        np.array([scale], dtype=np.float32),
    )


def quantize_best_axis(x: np.ndarray, bits: int, name: str = "") -> QuantizedTensor:
    """HNeRV's rule: min-max per tensor, or per channel along any axis of size > 1,
    whichever reconstructs ``x`` with the lowest mean squared error (ties: the
    earlier candidate, per tensor first)."""
    values = _as_finite_float64(x)
    best = quantize_per_tensor(values, bits, name)
    best_mse = float(np.mean((best.dequantize() - values) ** 2))
    for axis in range(values.ndim):
        if values.shape[axis] > 1:
            candidate = quantize_per_channel(values, bits, axis, name)
            mse = float(np.mean((candidate.dequantize() - values) ** 2))
            if mse < best_mse:
                best, best_mse = candidate, mse
    return best


# Bits of side information per offset/scale pair (two float32 values).
_SIDE_BITS_PER_CHANNEL = 64


def quantize_lowest_cost_axis(x: np.ndarray, bits: int, name: str = "") -> QuantizedTensor:
    """Like :func:`quantize_best_axis`, but the offsets and scales are paid for.

    HNeRV's rule ignores that per-channel quantization transmits two float32 values
    per channel, which for biases and thin layers costs more than the symbols
    themselves.  Here each candidate is charged its side bits plus its distortion
    converted to bits at the high-rate slope of a uniform quantizer (halving the
    error amplitude costs one bit per element, so rate = N/2 * log2(MSE) + const),
    and the cheapest wins.  The MSE is floored at the error of 8 extra bits, below
    which precision buys nothing, so a lossless per-element "quantization" never wins
    on a zero error.
    """
    values = _as_finite_float64(x)
    count = values.size
    span = float(values.max() - values.min())
    floor = max((span / 2 ** (_check_bits(bits) + 8)) ** 2 / 12, np.finfo(np.float32).tiny)

    def cost(candidate: QuantizedTensor) -> float:
        mse = float(np.mean((candidate.dequantize() - values) ** 2))
        return count / 2 * np.log2(max(mse, floor)) + _SIDE_BITS_PER_CHANNEL * candidate.offset.size

    best = quantize_per_tensor(values, bits, name)
    best_cost = cost(best)
    for axis in range(values.ndim):
        if values.shape[axis] > 1:
            candidate = quantize_per_channel(values, bits, axis, name)
            candidate_cost = cost(candidate)
            if candidate_cost < best_cost:
                best, best_cost = candidate, candidate_cost
    return best
