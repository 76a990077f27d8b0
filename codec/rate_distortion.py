"""Rate-distortion training shared by the INR codecs (``--lambda``).

Without ``--lambda`` a codec follows its published recipe: train in float, then quantize
at a fixed bit depth.  With it, the tensors the file will hold are trained for what they
will cost:

* **Learned step sizes.**  Every coded tensor gets a :class:`StepQuantizer`: a step per
  output channel (axis 0; for activations such as HNeRV's embeddings, axis 1) or one per
  tensor, whichever the side information allows (a float32 step per channel is paid for
  in the file, so thin tensors take one step).  The forward pass sees
  ``round(value / step) * step`` with straight-through rounding (``ste``) or
  ``value + uniform noise * step`` (``noise``, the additive-noise proxy of learned
  compression); the gradient reaches the values and, LSQ-style, the log-steps.
  Steps start where ``init_bits`` min-max levels would put them (the recipe's bit depth).
* **Bits from an entropy model.**  The symbols of each tensor are priced under a
  discretised Laplace fitted to them (closed-form: mean and mean absolute deviation),
  differentiable, and under the empirical histogram (entropy plus table), the two
  families the container codes them with (its encoder keeps the cheapest of
  Laplace/logistic/Gaussian/histogram models for the final symbols): the rate term's
  value is the cheaper of the two, its gradient the Laplace's (:func:`coded_bits`).  The loss is
  ``distortion + lambda * estimated bits / pixels`` (:class:`~nnc.codec.training_hooks.RateTerm`).
* **The file holds exactly what training saw.**  :meth:`StepQuantizer.quantize` gives
  the ``step`` scheme's symbols ``round(value / step)`` and the float32 steps as scales;
  dequantization (``symbols * step``) is the rounding branch of the forward pass, so
  the decoder reproduces the encoder's quantized network bit for bit.  Steps, entropy
  model parameters and masks are in the file and counted.

Modules use the quantizers as parametrizations (``torch.nn.utils.parametrize``: the
layer's ``weight`` becomes the quantized one, with no change to the model's code);
codecs that render with ``torch.func.functional_call`` call them on their parameter
dicts; activations (embeddings) go through :meth:`RateDistortion.quantize_output`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..bitstream import QuantizedTensor
from ..bitstream.entropy import MAX_ALPHABET_SIZE
from .base import option
from .training_hooks import RateTerm

ROUNDING = ("ste", "noise")
# A step per channel costs a float32 in the file: below this many values per channel
# the side information outweighs what separate steps save, so the tensor takes one.
MIN_VALUES_PER_CHANNEL = 64
MIN_LAPLACE_SCALE = 0.05  # in steps: below it every symbol is the mean's, ~0 bits either way
LOG2 = math.log(2.0)
# Peak learning rate of the log-steps, apart from the network's (:func:`parameter_groups`,
# used by every rate-trained codec).  At NeRV's lr of 5e-4 Adam moves a log-step
# by at most ~0.4 over 800 steps, so the steps stay near their initial 8 bits and the rate
# term barely moves the file.  Measured on park_joy 160x90 (10 frames, NeRV 100k, 60 + 20
# epochs, lambda 3e-3; the recipe: 68.1 kB, 21.30 dB): steps at 5e-4 80.5 kB, 3e-3
# 68.7 kB, 1e-2 42.3 kB, 3e-2 22.2 kB (21.25 dB), 1e-1 20.8 kB but 21.05 dB.  HNeRV on
# the same clip (180k, 80 epochs, lambda 5e-3): steps at the network's 1e-3 gave 5.02 bpp
# at 21.25 dB, at 3e-2 0.76 bpp at 20.77 dB (benchmarks/rate_distortion.py has the curves).
STEP_LR = 3e-2


@dataclass
class RateDistortionOptions:
    """The options of rate-distortion training, shared by the codecs that offer it."""

    rate_lambda: float | None = option(
        None, "Rate-distortion training: the loss is distortion + lambda x estimated bits per pixel, with "
              "learned quantization steps (larger: smaller file; the l2 loss's MSE is on [0, 1] pixels, so "
              "useful values are about 1e-4 to 1e-1). Unset: the published recipe, quantized at fixed bits "
              "after training; with --bpp/--bitrate lambda's start, 0.01 unless given.", flag="--lambda", low=0)
    qat_rounding: str = option("ste", "Rounding in rate-distortion training: ste (straight-through) or noise "
                                      "(uniform noise of one step).", choices=ROUNDING)


def round_straight_through(value: torch.Tensor) -> torch.Tensor:
    """``round(value)`` forward, identity backward."""
    return value + (torch.round(value) - value).detach()


def laplace_bits(levels: torch.Tensor) -> torch.Tensor:
    """Bits of ``levels`` (symbols, rounded or noisy) under a discretised Laplace fitted to
    them: ``-log2(P(k - 1/2 < X < k + 1/2))`` summed.  The tail branch is computed in log
    space, so far-out symbols do not underflow to infinite cost."""
    flat = levels.reshape(-1)
    mean = flat.detach().mean()
    centred = flat - mean
    scale = centred.abs().mean().clamp_min(MIN_LAPLACE_SCALE)
    distance = centred.abs()
    # |k - mean| >= 1/2: P = 1/2 exp(-(d - 1/2)/b) (1 - exp(-1/b))
    tail = math.log(0.5) - (distance - 0.5).clamp_min(0) / scale + torch.log(-torch.expm1(-1.0 / scale))
    # |k - mean| < 1/2: P = 1 - 1/2 (exp(-(1/2 - d)/b) + exp(-(1/2 + d)/b))
    near = distance.clamp_max(0.5)
    centre = torch.log((1.0 - 0.5 * (torch.exp(-(0.5 - near) / scale) + torch.exp(-(0.5 + near) / scale)))
                       .clamp_min(1e-12))
    log_probability = torch.where(distance >= 0.5, tail, centre)
    return -log_probability.sum() / LOG2


MAX_HISTOGRAM_SPAN = MAX_ALPHABET_SIZE  # the coder's largest table; wider symbol ranges are priced by the Laplace alone


def coded_bits(levels: torch.Tensor) -> torch.Tensor:
    """The rate term: the cost the container will pay for ``levels``' symbols, with the
    Laplace estimate's gradient.

    The container keeps the cheapest of its models, which for the peaked, scale-mixed
    distributions of trained weights (a step per channel) is often an empirical
    histogram: its cost is the symbols' empirical entropy plus the table.  The value
    is the smaller of that and the Laplace estimate; the gradient is the Laplace's (a
    histogram's cost has none), as a straight-through estimator of the rate."""
    proxy = laplace_bits(levels)
    with torch.no_grad():
        symbols = torch.round(levels.detach().reshape(-1)).to(torch.int64)
        low, high = int(symbols.min()), int(symbols.max())
        if high - low >= MAX_HISTOGRAM_SPAN:
            return proxy
        counts = torch.bincount(symbols - low, minlength=high - low + 1).double()
        present = counts[counts > 0]
        empirical = float(-(present * torch.log2(present / symbols.numel())).sum())
        table = float((2 * torch.floor(torch.log2(counts + 1)) + 1).sum())  # exp-Golomb counts
        value = min(float(proxy.detach()), empirical + table)
    return proxy + (value - proxy.detach())


def channel_axis(shape: tuple[int, ...], axis: int) -> int | None:
    """``axis`` if a step per channel along it is worth its side information, else None."""
    if len(shape) <= axis or shape[axis] < 2:
        return None
    per_channel = math.prod(shape) // shape[axis]
    return axis if per_channel >= MIN_VALUES_PER_CHANNEL else None


class StepQuantizer(nn.Module):
    """Learned quantization step(s) of one tensor (see the module docstring)."""

    def __init__(self, value: torch.Tensor, init_bits: int, axis: int | None, rounding: str = "ste"):
        super().__init__()
        if rounding not in ROUNDING:
            raise ValueError(f"rounding must be one of {ROUNDING}")
        self.axis, self.rounding = axis, rounding
        value = value.detach().float()
        if axis is None:
            peak = value.abs().max().reshape(1)
        else:
            peak = value.abs().transpose(0, axis).reshape(value.shape[axis], -1).amax(dim=1)
        # A tensor initialised at zero (biases) would get a vanishing step and, once trained,
        # millions of levels: the floor is 2**-(bits + 4), 1/4096 at 8 bits.
        step = (peak / (2 ** (init_bits - 1) - 1)).clamp_min(2.0 ** -(init_bits + 4))
        self.log_step = nn.Parameter(step.log())

    def step(self, ndim: int) -> torch.Tensor:
        """The steps, shaped to broadcast over a tensor of ``ndim`` dimensions."""
        shape = [1] * ndim
        if self.axis is not None:
            shape[self.axis] = -1
        return self.log_step.exp().reshape(shape)

    def levels(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` in steps, rounded (straight-through) or with uniform noise (training only)."""
        scaled = value / self.step(value.ndim)
        if self.rounding == "noise" and self.training:
            return scaled + torch.rand_like(scaled) - 0.5
        return round_straight_through(scaled)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        levels = self.levels(value)
        # Kept for the rate term of the same step: the forward pass and the bits estimate
        # then price the same symbols (the same noise draw), computed once.
        self.last_levels = levels if torch.is_grad_enabled() else None
        return levels * self.step(value.ndim)

    def bits(self, value: torch.Tensor) -> torch.Tensor:
        """Estimated bits of ``value``'s symbols (those of the latest forward pass when
        ``value`` is what it quantized)."""
        cached = getattr(self, "last_levels", None)
        if cached is not None and cached.shape == value.shape:
            self.last_levels = None  # each forward's symbols are priced once
            return coded_bits(cached)
        return coded_bits(self.levels(value))

    @torch.no_grad()
    def quantize(self, value: torch.Tensor, name: str) -> QuantizedTensor:
        """The file's tensor: symbols ``round(value / step)``, the float32 steps as scales."""
        value = value.detach().float()
        step = self.step(value.ndim).detach()
        symbols = torch.round(value / step)
        span = float(symbols.max() - symbols.min()) if symbols.numel() else 0.0
        if span >= MAX_HISTOGRAM_SPAN:
            # More levels than the entropy coder's largest table (a step that training left
            # far too fine, e.g. with lambda 0): coarsen this tensor's steps until it fits.
            # The file then differs from what training saw for this tensor only; the
            # encoder's PSNR is measured on the decoded file, so it says so.
            step = step * (2.0 * span / MAX_HISTOGRAM_SPAN)
            symbols = torch.round(value / step)
        symbols = symbols.cpu().numpy()
        scales = step.reshape(-1).float().cpu().numpy().astype(np.float32)
        return QuantizedTensor(name, symbols.astype(np.int32), "step", 0, self.axis,
                               np.zeros(scales.size, np.float32), scales)


@dataclass
class _CodedTensor:
    name: str  # the state-dict name the decoder expects
    quantizer: StepQuantizer
    value: Callable[[], torch.Tensor]  # the trained value (before quantization), pruned values zeroed


class ActivationQuantizer(nn.Module):
    """Quantizes a module's output (HNeRV's embeddings) through a forward hook; prices the
    latest batch and scales it to the whole clip (``count`` frames)."""

    def __init__(self, sample: torch.Tensor, init_bits: int, axis: int | None, rounding: str):
        super().__init__()
        self.quantizer = StepQuantizer(sample, init_bits, axis, rounding)
        self.enabled = True
        self.last: torch.Tensor | None = None

    def hook(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return output
        self.last = output
        return self.quantizer(output)


class RateDistortion:
    """The coded tensors of one model, their learned steps, and the rate term of the loss.

    ``rate_lambda`` weighs estimated bits per pixel against the distortion (MSE on [0, 1]
    pixels for the l2 loss); ``pixels`` is frames x height x width of the clip."""

    def __init__(self, rate_lambda: float, pixels: int, init_bits: int, rounding: str = "ste"):
        self.rate_lambda, self.pixels, self.init_bits, self.rounding = float(rate_lambda), int(pixels), init_bits, rounding
        self.parameters: list[_CodedTensor] = []
        self.activations: list[tuple[ActivationQuantizer, int]] = []

    # -- registration --------------------------------------------------------------
    def quantize_parameters(self, root: nn.Module) -> None:
        """Parametrize every parameter of ``root`` with a learned-step quantizer (coded
        under its name in ``root``'s state dict)."""
        for name, param in list(root.named_parameters()):
            module_name, _, attribute = name.rpartition(".")
            module = root.get_submodule(module_name) if module_name else root
            quantizer = self._quantizer(param)
            parametrize.register_parametrization(module, attribute, quantizer)
            original = module.parametrizations[attribute].original
            self.parameters.append(_CodedTensor(name, quantizer, self._masked(original, name, None)))

    def quantize_functional(self, params: dict[str, nn.Parameter],
                            masks: Callable[[str], torch.Tensor | None] | None = None) -> nn.ModuleDict:
        """Quantizers for parameters that a codec passes to ``torch.func.functional_call``
        (HiNeRV, NeRV, NeRV++): the returned modules (attach them to the trained module)
        map each name's value to its quantized value; :meth:`apply` does it for a parameter dict.
        ``masks(name)`` gives a pruned tensor's 0/1 mask or None (read at every use: masks
        are set after registration); a pruned tensor is coded dense, its zeros priced like
        any symbol (the entropy model makes them cheap)."""
        quantizers = nn.ModuleDict()
        for index, (name, param) in enumerate(params.items()):
            quantizer = self._quantizer(param)
            quantizers[str(index)] = quantizer
            self.parameters.append(_CodedTensor(name, quantizer, self._masked(param, name, masks)))
        return quantizers

    def apply(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The quantized value of every registered functional tensor in ``values`` (masked)."""
        result = dict(values)
        for coded in self.parameters:
            if coded.name in values:
                result[coded.name] = coded.quantizer(coded.value())
        return result

    def _quantizer(self, param: torch.Tensor) -> StepQuantizer:
        return StepQuantizer(param, self.init_bits, channel_axis(tuple(param.shape), 0), self.rounding).to(param.device)

    @staticmethod
    def _masked(value: torch.Tensor, name: str, masks) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            mask = masks(name) if masks is not None else None
            return value if mask is None else value * mask
        return read

    def quantize_output(self, module: nn.Module, sample: torch.Tensor, count: int, init_bits: int | None = None,
                        axis: int = 1) -> ActivationQuantizer:
        """Quantize ``module``'s output (the activation the file stores, e.g. embeddings).
        The returned module must be attached to the trained model (so the optimiser and
        checkpoints see its steps)."""
        quantizer = ActivationQuantizer(sample, init_bits or self.init_bits, channel_axis(tuple(sample.shape), axis),
                                        self.rounding).to(sample.device)
        module.register_forward_hook(quantizer.hook)
        self.activations.append((quantizer, int(count)))
        return quantizer

    def step_modules(self) -> nn.ModuleList:
        """Every registered quantizer (its learned log-steps), for :func:`parameter_groups`."""
        return nn.ModuleList([coded.quantizer for coded in self.parameters]
                             + [quantizer.quantizer for quantizer, _ in self.activations])

    # -- the rate ------------------------------------------------------------------
    def estimated_bits(self) -> torch.Tensor:
        """Differentiable bits of every coded tensor (activations: the latest batch, scaled)."""
        total = torch.zeros((), device=self.parameters[0].quantizer.log_step.device) if self.parameters else torch.zeros(())
        for coded in self.parameters:
            total = total + coded.quantizer.bits(coded.value())
        for activation, count in self.activations:
            if activation.last is not None:  # a batch of the clip's ``count`` items
                total = total + count / activation.last.shape[0] * activation.quantizer.bits(activation.last)
        return total

    def rate_term(self) -> RateTerm:
        """The training hook: ``lambda * estimated bits / pixels`` added to the loss."""
        return RateTerm(lambda step: self.estimated_bits(), self.rate_lambda, self.pixels)

    def step_values(self) -> int:
        """The learned steps of every coded tensor: each is a float32 of side information."""
        return sum(quantizer.log_step.numel() for quantizer in self.step_modules())

    def coded_tensors(self) -> int:
        """How many tensors the file holds (each has a descriptor and an entropy model)."""
        return len(self.parameters) + len(self.activations)

    # -- the file ------------------------------------------------------------------
    def quantized_parameters(self) -> dict[str, QuantizedTensor]:
        """name -> the file's tensor (step scheme, dense)."""
        return {coded.name: coded.quantizer.quantize(coded.value(), coded.name) for coded in self.parameters}

    @torch.no_grad()
    def trained_values(self) -> dict[str, np.ndarray]:
        """name -> the float32 values the file's tensor quantizes (pruned values at zero): a
        rate target's landing requantizes these with coarser steps."""
        return {coded.name: coded.value().detach().float().cpu().numpy() for coded in self.parameters}


def parameter_groups(module: nn.Module, steps: nn.Module, lr: float,
                     step_lr: float = STEP_LR) -> list[dict]:
    """Adam's parameter groups for training ``module`` (which holds ``steps``): the
    learned steps at ``step_lr`` (never below ``lr``), everything else at ``lr``."""
    step_params = list(steps.parameters())
    ids = {id(param) for param in step_params}
    return [{"params": [param for param in module.parameters() if id(param) not in ids], "lr": lr},
            {"params": step_params, "lr": max(lr, step_lr)}]


def estimated_payload_bits(tensors: Iterable[QuantizedTensor]) -> float:
    """What :func:`coded_bits` says the symbols of ``tensors`` cost (no side information):
    reported beside the file's real payload."""
    total = 0.0
    for tensor in tensors:
        total += float(coded_bits(torch.from_numpy(np.asarray(tensor.symbols, dtype=np.float32))))
    return total
