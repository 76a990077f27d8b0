"""Rate-distortion training (``--lambda``, nnc.codec.rate_distortion): the bits estimate
against the real entropy coder, exact quantization, round trips, rate control, resume."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nnc.bitstream import QuantizedTensor, TensorGroup, inspect_bitstream, read_bitstream_file
from nnc.bitstream.container import encode_group_payload
from nnc.cli.main import main
from nnc.codec.base import float_to_frames
from nnc.codec.files import decode_to_frames, make_options
from nnc.codec.rate_distortion import RateDistortion, StepQuantizer, channel_axis, coded_bits, laplace_bits
from nnc.codec.registry import get_codec
from nnc.codec.video_api import encode_video
from nnc.media import write_video
from nnc.errors import NncError
from nnc.metrics import compare
from nnc.models import nerv as nerv_model

from synthetic import synthetic_video

# Tiny fits on a shared machine: one intra-op thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def payload_bits(path) -> int:
    return 8 * sum(group["payload_bytes"] for group in inspect_bitstream(path.read_bytes())["groups"])


@pytest.mark.parametrize("scale", [1.0, 3.0, 20.0])
def test_laplace_estimate_matches_the_entropy_coder(scale):
    symbols = np.round(np.random.default_rng(0).laplace(0.0, scale, size=20000)).astype(np.int32)
    estimate = float(laplace_bits(torch.from_numpy(symbols.astype(np.float32))))
    tensor = QuantizedTensor("w", symbols, "step", 0, None, np.zeros(1, np.float32), np.ones(1, np.float32))
    coded = 8 * len(encode_group_payload(TensorGroup("g", [tensor]))[0])
    # the coder may pick a cheaper model than the estimate's Laplace, never a much dearer one
    assert 0.97 * coded < estimate < 1.05 * coded
    assert float(coded_bits(torch.from_numpy(symbols.astype(np.float32)))) <= estimate + 1e-3


def test_estimate_falls_as_the_step_grows_and_has_gradients():
    weight = torch.randn(32, 16, 3, 3, requires_grad=True)
    quantizer = StepQuantizer(weight, 8, channel_axis(tuple(weight.shape), 0))
    fine = quantizer.bits(weight)
    fine.backward()
    assert quantizer.log_step.grad is not None and float(quantizer.log_step.grad.sum()) < 0  # larger steps: fewer bits
    with torch.no_grad():
        quantizer.log_step += 2.0  # steps e^2 = 7.4x larger: about log2(7.4) = 2.9 bits less per value
    coarse = float(quantizer.bits(weight).detach())
    fine = float(fine.detach())
    assert fine - 3.1 * weight.numel() < coarse < fine - 2.6 * weight.numel()


@pytest.mark.parametrize("axis", [None, 0])
def test_file_tensor_dequantizes_to_what_training_saw(axis):
    weight = torch.randn(24, 80) * 0.1
    quantizer = StepQuantizer(weight, 6, axis).eval()
    with torch.no_grad():
        quantizer.log_step.add_(torch.linspace(-0.3, 0.4, quantizer.log_step.numel()))
        seen = quantizer(weight)
    tensor = quantizer.quantize(weight, "w")
    assert tensor.scheme == "step" and tensor.axis == axis and tensor.scale.shape == quantizer.log_step.shape
    assert np.array_equal(tensor.dequantize(), seen.numpy())  # bit for bit


def test_thin_tensors_take_one_step():
    assert channel_axis((64, 128, 3, 3), 0) == 0
    assert channel_axis((64,), 0) is None  # a bias: one float per value would cost more than it saves
    assert channel_axis((64, 8), 0) is None


# Per codec: a tiny encode's options, the larger lambda of the pair, and the PSNR that
# lambda 0 (quantization-aware training at the recipe's bits) reaches at least.  NeRV and
# NeRV++ prune 40% and fine-tune, with the rate term in both phases; NeRV++'s 86 tensors
# make a rate-trained step several times a plain one on this clip, so it trains least
# (and on l2, where the rate term weighs more against the distortion than on fusion6).
RATE_TRAINED = {
    # the recipe reaches about 15.5-16 dB here in 20 epochs
    "hnerv": (dict(size=60e3, epochs=20, lr=5e-3), 2e-3, 14.5),
    # measured: the recipe 20.1 dB, 54.9 kB; lambda 0 20.1 dB, 68.1 kB; 2e-3 14.5 dB, 16.7 kB
    "nerv": (dict(size=8e4, epochs=12, finetune_epochs=3, lr=5e-3), 2e-3, 18.0),
    # measured: the recipe 16.0 dB, 86.2 kB; lambda 0 16.3 dB, 101.0 kB; 5e-3 15.1 dB, 48.9 kB
    "nervpp": (dict(size=1.2e5, epochs=6, finetune_epochs=2, lr=5e-3, loss="l2"), 5e-3, 14.5),
}


def encode(video, path, rate_lambda, model="hnerv", **changes):
    values = dict(device="cpu", show_progress=False, checkpoint_interval=0, force=True, rate_lambda=rate_lambda,
                  **RATE_TRAINED[model][0])
    options = make_options(model, **{**values, **changes})
    return encode_video(video, path, model, options)


@pytest.fixture(scope="module")
def clip():
    return synthetic_video(num_frames=4, height=32, width=64)


def encode_capturing(video, path, rate_lambda, model):
    """encode, also returning every learned-step tensor as training last saw it
    (``round(value / step) * step``, pruned weights at zero): name -> float32 array."""
    original, seen = RateDistortion.quantized_parameters, {}

    def capture(rate):
        with torch.no_grad():
            for coded in rate.parameters:
                quantizer = coded.quantizer
                mode = quantizer.training
                seen[coded.name] = quantizer.eval()(coded.value()).cpu().numpy()
                quantizer.train(mode)
        return original(rate)

    with mock.patch.object(RateDistortion, "quantized_parameters", autospec=True, side_effect=capture):
        report = encode(video, path, rate_lambda, model)
    return report, seen


@pytest.fixture(scope="module", params=list(RATE_TRAINED))
def rate_trained(request, clip, tmp_path_factory):
    """model, (report, what training saw) at lambda 0 and at the codec's larger lambda."""
    model, folder = request.param, tmp_path_factory.mktemp(request.param)
    high = RATE_TRAINED[model][1]
    return model, {rate_lambda: encode_capturing(clip, folder / f"{rate_lambda}.nnc", rate_lambda, model)
                   for rate_lambda in (0.0, high)}


def test_larger_lambda_gives_a_smaller_file_and_the_estimate_agrees(clip, rate_trained):
    model, encodes = rate_trained
    (low, _), (high, _) = encodes[0.0], encodes[RATE_TRAINED[model][1]]
    assert high.file_bytes < 0.7 * low.file_bytes
    for report in (low, high):
        coded = payload_bits(report.path)
        assert abs(report.stats["rate_estimated_payload_bits"] - coded) < 0.1 * coded
        tensors = read_bitstream_file(report.path).groups[0].tensors
        assert all(t.scheme == "step" for t in tensors)
        # the decoded frames are those the encoder measured
        decoded = decode_to_frames(report.path, device="cpu").frames
        assert compare(clip.frames, decoded, clip.max_value)["psnr-rgb"] == pytest.approx(report.psnr, abs=1e-6)
    # lambda 0 fits; the rate costs quality
    assert low.psnr > RATE_TRAINED[model][2] and low.psnr > high.psnr
    assert read_bitstream_file(high.path).header["encoder"]["settings"]["rate_lambda"] == RATE_TRAINED[model][1]


def test_the_file_holds_exactly_the_network_training_saw(clip, rate_trained):
    """Every learned-step tensor decodes bit for bit to its value in the last training
    forward pass; for NeRV and NeRV++ (pruned, fine-tuned) the frames of that network
    are the decoded frames, and the pruned weights are coded as zeros (no mask)."""
    model, encodes = rate_trained
    report, seen = encodes[RATE_TRAINED[model][1]]
    bitstream = read_bitstream_file(report.path)
    weights = {t.name: t for t in bitstream.groups[0].tensors}
    assert set(weights) <= set(seen)
    for name, tensor in weights.items():
        assert np.array_equal(tensor.dequantize(), seen[name]), name
    assert inspect_bitstream(report.path.read_bytes())["format_version"] == 4  # the zero offsets are not stored
    if model == "hnerv":
        return
    codec = get_codec(model)
    config = codec.config_class.from_dict(bitstream.header["model"]["config"])
    network = codec.model_class(config)
    assert set(weights) == set(network.state_dict())  # dense: no NAME.mask / NAME.values pairs
    network.load_state_dict({name: torch.from_numpy(value) for name, value in seen.items()})
    times = network.encode_time(torch.arange(4, dtype=torch.float64) / 4)
    with torch.no_grad():
        rendered = torch.cat([network(times[i : i + 1]) for i in range(4)])[..., :32, :64]
    decoded = decode_to_frames(report.path, device="cpu").frames
    assert np.array_equal(float_to_frames(rendered, clip.max_value), decoded)
    prunable = nerv_model.prunable_names(network)
    total = sum(seen[name].size for name in prunable)
    zeros = sum(int((seen[name] == 0).sum()) for name in prunable)
    assert zeros >= round(0.4 * total)  # the pruned 40%, and kept weights the steps round to zero
    assert report.stats["kept_parameters"] == report.stats["model_size"] - round(0.4 * total)


def test_noise_rounding_trains_and_decodes(clip, tmp_path):
    report = encode(clip, tmp_path / "noise.nnc", 1e-4, qat_rounding="noise", epochs=6)
    assert report.psnr > 11.0 and report.path.exists()


@pytest.mark.parametrize("model,options,checkpoint", [
    ("hnerv", dict(epochs=8), "clip.nnc.ckpt"),  # mid-training: 8 epochs of 2 steps
    ("nerv", dict(epochs=2, finetune_epochs=2), "clip.nnc.ckpt.finetune"),  # 2 x 4 steps, then fine-tuning's 3rd
])
def test_interrupted_rate_training_resumes_to_the_same_file(clip, tmp_path, model, options, checkpoint):
    from nnc.codec import training

    reference = encode(clip, tmp_path / "reference.nnc", 1e-3, model, **options)
    output = tmp_path / "clip.nnc"
    original, calls = training.reconstruction_loss, []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 11:
            raise KeyboardInterrupt
        return original(*args)

    options = dict(options, checkpoint_interval=1e-9)
    with mock.patch.object(training, "reconstruction_loss", interrupt), pytest.raises(KeyboardInterrupt):
        encode(clip, output, 1e-3, model, **options)
    assert (tmp_path / checkpoint).exists() and not output.exists()
    encode(clip, output, 1e-3, model, resume=True, **options)
    assert output.read_bytes() == reference.path.read_bytes()


def test_cli_lambda_applies_to_the_rate_trained_codecs_only(tmp_path):
    write_video(tmp_path / "clip.y4m", synthetic_video(num_frames=2, height=32, width=64))
    runner = CliRunner()
    common = ["encode", str(tmp_path / "clip.y4m"), "--size", "60k", "--epochs", "2", "--device", "cpu", "--quiet",
              "--force", "--checkpoint-interval", "0"]
    result = runner.invoke(main, [*common, "-o", str(tmp_path / "a.nnc"), "--lambda", "1e-3", "--qat-rounding", "noise"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["encode", str(tmp_path / "clip.y4m"), "-o", str(tmp_path / "b.nnc"), "--model",
                                  "pfnr", "--lambda", "1e-3"])
    assert result.exit_code != 0 and "--lambda does not apply to --model pfnr" in result.output
    result = runner.invoke(main, [*common, "-o", str(tmp_path / "c.nnc"), "--lambda", "-1"])
    assert result.exit_code != 0 and "--lambda" in result.output and not (tmp_path / "c.nnc").exists()
    help_text = " ".join(runner.invoke(main, ["encode", "--help"]).output.split())
    for flag in ("--lambda FLOAT", "--qat-rounding"):  # the codecs come from the options dataclasses
        assert help_text[help_text.index(flag):][:80].count("hinerv, hnerv, nerv, nervpp:") == 1


@pytest.mark.parametrize("model", ["nerv", "nervpp"])
def test_nerv_family_refuses_what_hnerv_refuses(model):
    for target in (dict(bpp=0.5), dict(bitrate="800k")):
        # a rate target with --lambda adapts lambda (tests/test_rate_control.py), from a start above 0
        assert make_options(model, rate_lambda=1e-3, **target).rate_lambda == 1e-3
        with pytest.raises(NncError, match="starting value") as error:
            make_options(model, rate_lambda=0.0, **target)
        assert "\n" not in str(error.value)
    for bad in (dict(rate_lambda=-1.0), dict(qat_rounding="floor")):
        with pytest.raises(NncError):
            make_options(model, **bad)


def test_nerv_without_lambda_records_what_it_recorded_before():
    # the file of an encode without --lambda must stay byte-identical: its settings too
    assert "rate_lambda" not in make_options("nerv").settings()
    assert "qat_rounding" not in make_options("nervpp", qat_rounding="noise").settings()
    assert make_options("nerv", rate_lambda=0.0).settings()["rate_lambda"] == 0.0


def test_hinerv_rate_training_codes_learned_steps_and_shrinks_the_file(tmp_path):
    clip = synthetic_video(num_frames=2, height=64, width=128)
    reports = {}
    for rate_lambda in (0.0, 0.05):
        options = make_options("hinerv", size=4e4, epochs=16, batch_size=1, lr=1e-2, loss="l2", device="cpu",
                               show_progress=False, checkpoint_interval=0, force=True, rate_lambda=rate_lambda)
        reports[rate_lambda] = encode_video(clip, tmp_path / f"{rate_lambda}.nnc", "hinerv", options)
    low, high = reports[0.0], reports[0.05]
    assert high.file_bytes < 0.85 * low.file_bytes
    for report in (low, high):
        bitstream = read_bitstream_file(report.path)
        assert all(t.scheme == "step" for group in bitstream.groups for t in group.tensors)  # pruned: zeros, no mask
        coded = payload_bits(report.path)
        assert abs(report.stats["rate_estimated_payload_bits"] - coded) < 0.1 * coded
        decoded = decode_to_frames(report.path, device="cpu").frames
        assert compare(clip.frames, decoded, clip.max_value)["psnr-rgb"] == pytest.approx(report.psnr, abs=1e-6)
    assert low.psnr > 12.0
