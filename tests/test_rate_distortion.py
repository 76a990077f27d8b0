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
from nnc.codec.files import decode_to_frames, make_options
from nnc.codec.rate_distortion import StepQuantizer, channel_axis, coded_bits, laplace_bits
from nnc.codec.video_api import encode_video
from nnc.media import write_video
from nnc.metrics import compare

from synthetic import synthetic_video


def payload_bits(path) -> int:
    return 8 * sum(group["payload_bytes"] for group in inspect_bitstream(path.read_bytes())["groups"])


@pytest.mark.parametrize("scale", [1.0, 3.0, 20.0])
def test_laplace_estimate_matches_the_entropy_coder(scale):
    symbols = np.round(np.random.default_rng(0).laplace(0.0, scale, size=20000)).astype(np.int32)
    estimate = float(laplace_bits(torch.from_numpy(symbols.astype(np.float32))))
    tensor = QuantizedTensor("w", symbols, "step", 0, None, np.zeros(1, np.float32), np.ones(1, np.float32))
    coded = 8 * len(encode_group_payload(TensorGroup("g", [tensor])))
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


def encode(video, path, rate_lambda, **changes):
    values = dict(size=60e3, epochs=20, lr=5e-3, device="cpu", show_progress=False, checkpoint_interval=0,
                  force=True, rate_lambda=rate_lambda)
    options = make_options("hnerv", **{**values, **changes})
    return encode_video(video, path, "hnerv", options)


@pytest.fixture(scope="module")
def clip():
    return synthetic_video(num_frames=4, height=32, width=64)


def test_larger_lambda_gives_a_smaller_file_and_the_estimate_agrees(clip, tmp_path):
    low = encode(clip, tmp_path / "low.nnc", 0.0)
    high = encode(clip, tmp_path / "high.nnc", 2e-3)
    assert high.file_bytes < 0.7 * low.file_bytes
    for report in (low, high):
        coded = payload_bits(report.path)
        assert abs(report.stats["rate_estimated_payload_bits"] - coded) < 0.1 * coded
        tensors = read_bitstream_file(report.path).groups[0].tensors
        assert all(t.scheme == "step" for t in tensors)
        # the decoded frames are those the encoder measured
        decoded = decode_to_frames(report.path, device="cpu").frames
        assert compare(clip.frames, decoded, clip.max_value)["psnr-rgb"] == pytest.approx(report.psnr, abs=1e-6)
    # lambda 0 is quantization-aware training at the recipe's bits: it fits (the recipe
    # reaches about 15.5-16 dB here in 20 epochs); the rate costs quality
    assert low.psnr > 14.5 and low.psnr > high.psnr
    assert read_bitstream_file(high.path).header["encoder"]["settings"]["rate_lambda"] == 2e-3


def test_noise_rounding_trains_and_decodes(clip, tmp_path):
    report = encode(clip, tmp_path / "noise.nnc", 1e-4, qat_rounding="noise", epochs=6)
    assert report.psnr > 11.0 and report.path.exists()


def test_interrupted_rate_training_resumes_to_the_same_file(clip, tmp_path):
    from nnc.codec import training

    reference = encode(clip, tmp_path / "reference.nnc", 1e-3, epochs=8)
    output = tmp_path / "clip.nnc"
    original, calls = training.reconstruction_loss, []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 11:  # mid-training: 8 epochs of 2 steps
            raise KeyboardInterrupt
        return original(*args)

    options = dict(checkpoint_interval=1e-9, epochs=8)
    with mock.patch.object(training, "reconstruction_loss", interrupt), pytest.raises(KeyboardInterrupt):
        encode(clip, output, 1e-3, **options)
    assert (tmp_path / "clip.nnc.ckpt").exists() and not output.exists()
    encode(clip, output, 1e-3, resume=True, **options)
    assert output.read_bytes() == reference.path.read_bytes()


def test_cli_lambda_applies_to_hnerv_only(tmp_path):
    write_video(tmp_path / "clip.y4m", synthetic_video(num_frames=2, height=32, width=64))
    runner = CliRunner()
    common = ["encode", str(tmp_path / "clip.y4m"), "--size", "60k", "--epochs", "2", "--device", "cpu", "--quiet",
              "--force", "--checkpoint-interval", "0"]
    result = runner.invoke(main, [*common, "-o", str(tmp_path / "a.nnc"), "--lambda", "1e-3", "--qat-rounding", "noise"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, [*common, "-o", str(tmp_path / "b.nnc"), "--model", "nerv", "--lambda", "1e-3"])
    assert result.exit_code != 0 and "--lambda does not apply to --model nerv" in result.output
    result = runner.invoke(main, [*common, "-o", str(tmp_path / "c.nnc"), "--lambda", "-1"])
    assert result.exit_code != 0 and "--lambda" in result.output and not (tmp_path / "c.nnc").exists()


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
