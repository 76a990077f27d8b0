"""CLC: conditional latent coding of an image with a reference synthesized from a dictionary.

Backbone (Minnen & Singh 2020, "channel-wise autoregressive entropy models"): a GDN
analysis/synthesis pair at 1/16 resolution, a hyperprior (z at 1/64) giving per-element
means and scales, and the latent split into channel slices, each coded with a mean,
scale and latent-residual prediction (LRP) computed from the hyperprior and the slices
already decoded.

CLC (Wu, Chen, Liu, He 2025) adds a reference: the latents of k dictionary entries
chosen by the encoder (their indices travel in the file).  Conditional Latent Matching
correlates every latent position of the image with every position of each reference
latent and aligns the references to the image by that correlation (a softmax-weighted
sum of reference features, i.e. correlation-based warping); Conditional Latent
Synthesis fuses the k aligned references, weighted by how well each matched, into one
conditioning latent that enters every slice's mean, scale and LRP networks.

The matching query is computed from the hyperprior output only, which the decoder has
before any slice: the decoder therefore repeats the matching exactly.

Variable rate (``rate_lambdas`` non-empty): one model serves every rate point through
gain units (Cui et al. 2021, "Asymmetric gained deep image compression with continuous
rate adaptation"): a learned per-channel gain multiplies the latent before
quantization and a learned inverse gain undoes it before synthesis, one pair per
training lambda.  A larger gain is a finer quantization step (more bits, less error).
Training draws one lambda per image, so every step trains the shared transforms for
every rate.  A quality ``q`` in [1, L] selects the pair (q = 1: the smallest lambda);
a fractional ``q`` interpolates the two neighbouring pairs exponentially (linearly in
log-gain), which gives a continuous rate between the trained points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN, conv3x3
from compressai.models.base import CompressionModel, get_scale_table
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste

from .config import ModelConfig, config_field

# The latent is at 1/16 and the hyper latent at 1/64 of the image: images are padded
# to a multiple of this.
PAD_MULTIPLE = 64


@dataclass
class CLCConfig(ModelConfig):
    channels: int = config_field(64, low=8, high=512)  # N: width of the transforms and hyper latent
    latent_channels: int = config_field(128, low=8, high=512)  # M: channels of y
    slices: int = config_field(4, low=1, high=16)  # channel slices of y, coded one after another
    ref_channels: int = config_field(64, low=4, high=512)  # channels of the synthesized conditioning latent
    key_channels: int = config_field(32, low=4, high=256)  # channels of the matching keys/queries
    num_refs: int = config_field(3, low=1, high=8)  # k: dictionary entries used per image
    # False: the same backbone without the reference (ablation)
    conditioning: bool = config_field(True)
    # Strides of the analysis stages (the synthesis mirrors them): the entropy model and
    # the padding assume the latent at 1/16, so four stages of 2 is the only choice.
    strides: list[int] = config_field(default_factory=lambda: [2, 2, 2, 2], low=2, high=2, length=(4, 4))
    # The lambdas of a variable-rate model, increasing (one gain pair each); empty: a
    # single-rate model (the weights files of format version 2).
    rate_lambdas: list[float] = config_field(default_factory=list, low=1e-5, high=10.0, length=(0, 16))

    def check_consistency(self) -> None:
        if self.latent_channels % self.slices:
            raise ValueError("model config latent_channels must be a multiple of slices")
        if len(self.rate_lambdas) == 1:
            raise ValueError("model config rate_lambdas must be empty (one rate) or hold at least two lambdas")
        if any(b <= a for a, b in zip(self.rate_lambdas, self.rate_lambdas[1:])):
            raise ValueError("model config rate_lambdas must increase")

    def to_dict(self) -> dict:
        # A single-rate config is written as it was before variable rate existed, so
        # files coded with single-rate weights stay readable by nnc versions before it.
        data = super().to_dict()
        if not data["rate_lambdas"]:
            del data["rate_lambdas"]
        return data

    @property
    def variable_rate(self) -> bool:
        return bool(self.rate_lambdas)


def _slice_net(in_channels: int, out_channels: int) -> nn.Sequential:
    # A 1x1 mixing layer first keeps the parameter count (and shipped size) small; the
    # two 3x3 layers still see each position's neighbourhood.
    return nn.Sequential(
        nn.Conv2d(in_channels, 96, 1), nn.LeakyReLU(inplace=True),
        conv3x3(96, 64), nn.LeakyReLU(inplace=True),
        conv3x3(64, out_channels),
    )


class ConditionalLatentMatching(nn.Module):
    """Correlate the image's hyperprior features with each reference latent and align.

    Returns, per reference, the aligned reference features (B, C, h, w) and a matching
    confidence map (B, 1, h, w): the log-sum-exp of the correlations, high where the
    reference holds positions that resemble this one.
    """

    def __init__(self, config: CLCConfig):
        super().__init__()
        m, c, d = config.latent_channels, config.ref_channels, config.key_channels
        self.query = nn.Sequential(conv3x3(2 * m, c), nn.LeakyReLU(inplace=True), nn.Conv2d(c, d, 1))
        self.key = nn.Sequential(conv3x3(m, c), nn.LeakyReLU(inplace=True), nn.Conv2d(c, d, 1))
        self.value = nn.Sequential(conv3x3(m, c), nn.LeakyReLU(inplace=True), conv3x3(c, c))
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, hyper: torch.Tensor, references: list[torch.Tensor]):
        query = self.query(hyper).flatten(2).transpose(1, 2)  # (B, hw, d)
        aligned, confidence = [], []
        for reference in references:
            key = self.key(reference).flatten(2)  # (B, d, hw_ref)
            value = self.value(reference).flatten(2).transpose(1, 2)  # (B, hw_ref, C)
            scores = torch.bmm(query, key) * self.scale  # (B, hw, hw_ref)
            weights = scores.softmax(dim=-1)
            out = torch.bmm(weights, value).transpose(1, 2).reshape(hyper.shape[0], -1, *hyper.shape[2:])
            aligned.append(out)
            confidence.append(scores.logsumexp(dim=-1).reshape(hyper.shape[0], 1, *hyper.shape[2:]))
        return aligned, confidence


class ConditionalLatentSynthesis(nn.Module):
    """Fuse the k aligned references into one conditioning latent.

    Each reference is weighted per position by a softmax over the k matching
    confidences, then the weighted sum, the individual references and the hyperprior
    features pass through a small conv net.
    """

    def __init__(self, config: CLCConfig):
        super().__init__()
        m, c, k = config.latent_channels, config.ref_channels, config.num_refs
        self.fuse = nn.Sequential(
            nn.Conv2d((k + 1) * c + k + 2 * m, 96, 1), nn.LeakyReLU(inplace=True),
            conv3x3(96, 96), nn.LeakyReLU(inplace=True),
            conv3x3(96, c),
        )

    def forward(self, hyper, aligned, confidence):
        conf = torch.cat(confidence, dim=1)  # (B, k, h, w)
        weights = conf.softmax(dim=1)
        weighted = sum(weights[:, i : i + 1] * aligned[i] for i in range(len(aligned)))
        return self.fuse(torch.cat([weighted, *aligned, conf - conf.mean(dim=1, keepdim=True), hyper], dim=1))


class CLCModel(CompressionModel):
    def __init__(self, config: CLCConfig):
        super().__init__()
        self.config = config
        n, m, s = config.channels, config.latent_channels, config.slices
        self.slice_size = m // s
        s1, s2, s3, s4 = config.strides
        self.g_a = nn.Sequential(
            conv(3, n, stride=s1), GDN(n), conv(n, n, stride=s2), GDN(n), conv(n, n, stride=s3), GDN(n),
            conv(n, m, stride=s4),
        )
        self.g_s = nn.Sequential(
            deconv(m, n, stride=s4), GDN(n, inverse=True), deconv(n, n, stride=s3), GDN(n, inverse=True),
            deconv(n, n, stride=s2), GDN(n, inverse=True), deconv(n, 3, stride=s1),
        )
        self.h_a = nn.Sequential(
            conv3x3(m, n), nn.LeakyReLU(inplace=True), conv(n, n), nn.LeakyReLU(inplace=True), conv(n, n),
        )
        # One hyper synthesis gives both the means and the scales (ELIC's layout).
        self.h_s = nn.Sequential(
            deconv(n, n), nn.LeakyReLU(inplace=True), deconv(n, 3 * n // 2), nn.LeakyReLU(inplace=True),
            conv3x3(3 * n // 2, 2 * m),
        )
        ref = config.ref_channels if config.conditioning else 0
        if config.conditioning:
            self.matching = ConditionalLatentMatching(config)
            self.synthesis = ConditionalLatentSynthesis(config)
        # Mean and scale of slice i come from one net (2 * slice_size outputs).
        self.mean_scale = nn.ModuleList(
            _slice_net(2 * m + ref + i * self.slice_size, 2 * self.slice_size) for i in range(s)
        )
        self.lrp = nn.ModuleList(
            _slice_net(m + ref + (i + 1) * self.slice_size, self.slice_size) for i in range(s)
        )
        self.entropy_bottleneck = EntropyBottleneck(n)
        self.gaussian_conditional = GaussianConditional(None)
        if config.variable_rate:
            # Start from the step size that the MSE rate-distortion optimum scales with
            # (step ~ lambda^-1/2, so gain ~ lambda^1/2), centred on the middle lambda:
            # the rates are apart from the first step and training refines each channel.
            lambdas = torch.tensor(config.rate_lambdas, dtype=torch.float32)
            log_gain = 0.5 * (lambdas.log() - lambdas.log().mean())
            self.log_gain = nn.Parameter(log_gain[:, None].repeat(1, m).clone())
            self.log_inverse_gain = nn.Parameter(-log_gain[:, None].repeat(1, m).clone())

    # -- rate control ---------------------------------------------------------------------

    def gains(self, quality) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Gain and inverse gain, (B, M, 1, 1), for qualities in [1, L] (a float, or a
        tensor with one per image); (None, None) for a single-rate model."""
        if not self.config.variable_rate:
            return None, None
        levels = len(self.config.rate_lambdas)
        q = torch.as_tensor(quality, dtype=torch.float32, device=self.log_gain.device).reshape(-1)
        if not bool(((q >= 1) & (q <= levels)).all()):
            raise ValueError(f"quality must be within [1, {levels}]")
        position = q - 1
        low = position.floor().long().clamp(max=levels - 1)
        high = (low + 1).clamp(max=levels - 1)
        t = (position - low.float())[:, None]
        log_gain = (1 - t) * self.log_gain[low] + t * self.log_gain[high]
        log_inverse = (1 - t) * self.log_inverse_gain[low] + t * self.log_inverse_gain[high]
        return log_gain.exp()[:, :, None, None], log_inverse.exp()[:, :, None, None]

    # -- pieces shared by training, compress and decompress ------------------------------

    def analysis_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of g_a's stages (1/2, 1/4, 1/8 and y at 1/16): retrieval features."""
        features = []
        for index, layer in enumerate(self.g_a):
            x = layer(x)
            if isinstance(layer, GDN) or index == len(self.g_a) - 1:
                features.append(x)
        return features

    def reference_latents(self, references: torch.Tensor | None) -> list[torch.Tensor] | None:
        """(B, k, 3, H, W) reference images in [0, 1] -> k latents (B, M, H/16, W/16)."""
        if not self.config.conditioning:
            return None
        if references is None:
            raise ValueError("this CLC model is conditioned: it needs reference images")
        b, k = references.shape[:2]
        latents = self.g_a(references.flatten(0, 1))
        return list(latents.reshape(b, k, *latents.shape[1:]).unbind(1))

    def _hyper(self, z_hat: torch.Tensor, y_shape) -> torch.Tensor:
        params = self.h_s(z_hat)
        return params[:, :, : y_shape[2], : y_shape[3]]

    def _condition(self, hyper: torch.Tensor, ref_latents, gain=None) -> torch.Tensor | None:
        if not self.config.conditioning:
            return None
        if gain is not None:  # the references' latents in the same (gained) units as y
            ref_latents = [latent * gain for latent in ref_latents]
        aligned, confidence = self.matching(hyper, ref_latents)
        return self.synthesis(hyper, aligned, confidence)

    def _slice_params(self, index, hyper, cond, decoded):
        m = self.config.latent_channels
        means_h = hyper[:, :m]
        inputs = [hyper] + ([cond] if cond is not None else []) + decoded[:index]
        mean, scale = self.mean_scale[index](torch.cat(inputs, dim=1)).chunk(2, dim=1)
        return mean, scale, means_h

    def _lrp(self, index, means_h, cond, decoded_with_current):
        inputs = [means_h] + ([cond] if cond is not None else []) + decoded_with_current[: index + 1]
        return 0.5 * torch.tanh(self.lrp[index](torch.cat(inputs, dim=1)))

    # -- training -------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, ref_latents=None, quality=None) -> dict:
        """Training pass; ``quality``: one per image (a variable-rate model needs it)."""
        gain, inverse_gain = self._gains_for(quality)
        y = self._analyse(x, gain)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        hyper = self._hyper(z_hat, y.shape)
        cond = self._condition(hyper, ref_latents, gain)
        decoded, likelihoods = [], []
        for index, y_slice in enumerate(y.split(self.slice_size, dim=1)):
            mean, scale, means_h = self._slice_params(index, hyper, cond, decoded)
            _, slice_likelihoods = self.gaussian_conditional(y_slice, scale, mean)
            likelihoods.append(slice_likelihoods)
            y_hat_slice = quantize_ste(y_slice - mean) + mean
            decoded.append(y_hat_slice)
            decoded[index] = y_hat_slice + self._lrp(index, means_h, cond, decoded)
        y_hat = torch.cat(decoded, dim=1)
        x_hat = self._synthesize(y_hat, inverse_gain)
        return {"x_hat": x_hat, "likelihoods": {"y": torch.cat(likelihoods, dim=1), "z": z_likelihoods}}

    def _gains_for(self, quality):
        if not self.config.variable_rate:
            if quality is not None:
                raise ValueError("this CLC model has a single rate: it takes no quality")
            return None, None
        if quality is None:
            raise ValueError("this variable-rate CLC model needs a quality")
        return self.gains(quality)

    def update(self, scale_table=None, force=False, update_quantiles: bool = False):
        return super().update(scale_table if scale_table is not None else get_scale_table(), force,
                              update_quantiles)

    # -- coding ---------------------------------------------------------------------------

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref_latents=None, quality=None) -> dict:
        """One image (1, 3, H, W), H and W multiples of 64 -> rANS strings and y_hat
        (in gained units; ``synthesize`` maps it to the image)."""
        gain, _ = self._gains_for(quality)
        y = self._analyse(x, gain)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        hyper = self._hyper(z_hat, y.shape)
        cond = self._condition(hyper, ref_latents, gain)
        decoded, y_strings = [], []
        for index, y_slice in enumerate(y.split(self.slice_size, dim=1)):
            mean, scale, means_h = self._slice_params(index, hyper, cond, decoded)
            indexes = self.gaussian_conditional.build_indexes(scale)
            y_strings.append(self.gaussian_conditional.compress(y_slice, indexes, mean)[0])
            y_hat_slice = self.gaussian_conditional.quantize(y_slice, "dequantize", mean)
            decoded.append(y_hat_slice)
            decoded[index] = y_hat_slice + self._lrp(index, means_h, cond, decoded)
        return {"z_string": z_strings[0], "y_strings": y_strings, "z_shape": tuple(z.shape[-2:]),
                "y_hat": torch.cat(decoded, dim=1)}

    @torch.no_grad()
    def decompress(self, z_string: bytes, y_strings: list[bytes], z_shape, ref_latents=None, quality=None) -> dict:
        gain, _ = self._gains_for(quality)
        z_hat = self.entropy_bottleneck.decompress([z_string], z_shape)
        y_shape = (1, self.config.latent_channels, z_shape[0] * 4, z_shape[1] * 4)
        hyper = self._hyper(z_hat, y_shape)
        cond = self._condition(hyper, ref_latents, gain)
        decoded = []
        for index in range(self.config.slices):
            mean, scale, means_h = self._slice_params(index, hyper, cond, decoded)
            indexes = self.gaussian_conditional.build_indexes(scale)
            y_hat_slice = self.gaussian_conditional.decompress([y_strings[index]], indexes, means=mean)
            decoded.append(y_hat_slice)
            decoded[index] = y_hat_slice + self._lrp(index, means_h, cond, decoded)
        y_hat = torch.cat(decoded, dim=1)
        return {"x_hat": self.synthesize(y_hat, quality).clamp_(0, 1), "y_hat": y_hat}

    def synthesize(self, y_hat: torch.Tensor, quality=None) -> torch.Tensor:
        """Decoded latent (gained units) -> image (unclamped)."""
        return self._synthesize(y_hat, self._gains_for(quality)[1])

    def _analyse(self, x: torch.Tensor, gain) -> torch.Tensor:
        """Image -> latent y in gained units (``gain`` None: a single-rate model)."""
        y = self.g_a(x)
        return y * gain if gain is not None else y

    def _synthesize(self, y_hat: torch.Tensor, inverse_gain) -> torch.Tensor:
        return self.g_s(y_hat * inverse_gain if inverse_gain is not None else y_hat)

