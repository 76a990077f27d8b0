"""HNeRV model and codec: sizing, encode -> file -> decode equality, determinism."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

from nnc.bitstream import decode_bitstream, encode_bitstream, read_bitstream_file
from nnc.codec.hnerv import HNeRVCodec, HNeRVOptions
from nnc.codec.video_api import decode_frames, encode_video
from nnc.codec.training import lr_multiplier
from nnc.errors import InvalidBitstreamError
from nnc.models.hnerv import HNeRV, HNeRVConfig, HNeRVDecoder, choose_strides, decoder_parameter_count, model_size, solve_config

from synthetic import synthetic_video


def test_paper_strides_and_size_solver_match_hnerv():
    # HNeRV's bunny protocol: 640x1280 -> strides 5,4,4,2,2 and a 16x2x4 embedding;
    # 1.5M parameters (decoder + 132 embeddings) -> fc_dim 68 in the authors' code.
    assert choose_strides(640, 1280) == ([5, 4, 4, 2, 2], 2, 4)
    config = solve_config(640, 1280, 132, 1.5e6)
    assert config.fc_dim == 68
    assert abs(model_size(config, 132) - 1.5e6) / 1.5e6 < 0.01
    assert config.stage_kernels() == [1, 3, 5, 5, 5]
    decoder = HNeRV(config).decoder
    assert sum(p.numel() for p in decoder.parameters()) == decoder_parameter_count(config)


@pytest.mark.parametrize("height,width", [(64, 128), (90, 160), (17, 33), (1, 1), (288, 352)])
def test_any_resolution_is_covered_by_the_padded_output(height, width):
    config = solve_config(height, width, 4, 3e5)
    assert config.padded_height >= height and config.padded_width >= width
    model = HNeRV(config)
    output, embedding = model(torch.rand(1, 3, config.padded_height, config.padded_width))
    assert output.shape[-2:] == (config.padded_height, config.padded_width)
    assert embedding.shape[1:] == config.embedding_shape
    assert 0 <= output.min() and output.max() <= 1


def test_config_from_untrusted_dict_is_bounded():
    good = solve_config(64, 128, 8, 5e4).to_dict()
    assert HNeRVConfig.from_dict(good) == HNeRVConfig(**good)
    for field, value in [("fc_dim", 10**9), ("strides", [2] * 50), ("kernel_max", 4), ("reduce", "x"), ("fc_dim", True)]:
        with pytest.raises(ValueError):
            HNeRVConfig.from_dict(dict(good, **{field: value}))
    with pytest.raises(ValueError):
        HNeRVConfig.from_dict(dict(good, surprise=1))


def test_schedule_warms_up_from_a_tenth_then_cosine_to_zero():
    assert lr_multiplier(0.0, 0.1, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(0.1, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_multiplier(0.55, 0.1, 0.1) == pytest.approx(0.5)
    assert lr_multiplier(0.999999, 0.1, 0.1) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    video = synthetic_video()
    path = tmp_path_factory.mktemp("hnerv") / "clip.nnc"
    options = HNeRVOptions(size=6e4, epochs=40, batch_size=2, lr=5e-3, device="cpu", show_progress=False)
    captured = []  # what the codec handed to the bitstream layer, in memory
    original = HNeRVCodec.compress

    def capture(self, *args, **kwargs):
        captured.append(original(self, *args, **kwargs))
        return captured[-1]

    with mock.patch.object(HNeRVCodec, "compress", capture):
        report = encode_video(video, path, "hnerv", options)
    [compressed] = captured
    return video, path, report, compressed


def encoder_reconstruction(compressed) -> np.ndarray:
    """Frames from the encoder's in-memory quantized tensors, rebuilt here with the
    network alone: no file, no entropy decoding, no codec decompress."""
    config = HNeRVConfig.from_dict(compressed.model_header["config"])
    groups = {group.name: {t.name: t for t in group.tensors} for group in compressed.groups}
    decoder = HNeRVDecoder(config)
    decoder.load_state_dict({name: torch.from_numpy(tensor.dequantize()) for name, tensor in groups["weights"].items()})
    embeddings = torch.from_numpy(groups["embeddings"]["embeddings"].dequantize())
    with torch.no_grad():
        output = torch.cat([decoder.eval()(embeddings[i : i + 1]) for i in range(embeddings.shape[0])])
    return output[..., :64, :128].clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_encode_reports_the_psnr_the_decoder_produces(encoded):
    video, path, report, compressed = encoded
    assert path.stat().st_size == report.file_bytes
    assert report.bpp == pytest.approx(report.file_bytes * 8 / (64 * 128 * 8))
    decoded = np.concatenate(list(decode_frames(read_bitstream_file(path))))
    assert decoded.shape == video.frames.shape and decoded.dtype == np.uint8
    # The file decodes to what the encoder quantized (network run on its tensors here,
    # outside the codec, one frame at a time), and the report's PSNR is that of these
    # frames.  The decoder runs frames in batches: on CPUs with AVX-512, oneDNN picks
    # other kernels per batch size, and a value on a rounding boundary may land one
    # level apart (measured: 1 level on 5 pixels per million; AVX2 machines: none).
    difference = np.abs(decoded.astype(int) - encoder_reconstruction(compressed).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    error = video.frames.astype(np.float64) - decoded
    psnr = float(np.mean(10 * np.log10(255.0**2 / np.mean(error**2, axis=(1, 2, 3)))))
    assert report.psnr == pytest.approx(psnr, abs=1e-6)
    # A short fit on a smooth synthetic clip must actually learn it (mean grey is ~13 dB),
    # and 8-bit weights / 6-bit embeddings must cost it little against the fit's own PSNR
    # (the last epoch's mean in training mode, so the decode may even be a bit above it).
    assert report.psnr > 20.0
    train_psnr = compressed.stats["train_psnr"]
    assert train_psnr - 1.0 < report.psnr < train_psnr + 0.5, (train_psnr, report.psnr)


def test_decoding_twice_gives_identical_frames(encoded):
    _, path, _, _ = encoded
    first = np.concatenate(list(decode_frames(read_bitstream_file(path))))
    second = np.concatenate(list(decode_frames(read_bitstream_file(path), batch_size=3)))
    assert np.array_equal(first, second)


def test_bitstream_reserialises_to_identical_bytes(encoded):
    _, path, _, _ = encoded
    data = path.read_bytes()
    assert encode_bitstream(decode_bitstream(data)) == data


def test_header_records_media_and_model(encoded):
    video, path, report, _ = encoded
    header = read_bitstream_file(path).header
    assert header["media"]["width"] == 128 and header["media"]["num_frames"] == 8
    assert header["media"]["color_matrix"] == "bt601"
    assert HNeRVConfig.from_dict(header["model"]["config"]).padded_width >= 128
    assert header["encoder"]["psnr_rgb"] == pytest.approx(report.psnr, abs=1e-3)


def test_mismatched_tensors_are_rejected(encoded):
    _, path, _, _ = encoded
    bitstream = read_bitstream_file(path)
    bitstream.header["model"]["config"]["fc_dim"] += 1
    with pytest.raises(InvalidBitstreamError):
        list(decode_frames(bitstream))
    bitstream = read_bitstream_file(path)
    bitstream.header["media"]["num_frames"] = 9
    with pytest.raises(InvalidBitstreamError):
        list(decode_frames(bitstream))
    bitstream = read_bitstream_file(path)
    bitstream.header["media"]["width"] = 1024  # output grid would not cover it
    with pytest.raises(InvalidBitstreamError, match="size"):
        list(decode_frames(bitstream))


def test_unreachable_target_size_is_a_clear_error():
    with pytest.raises(ValueError, match="raise --params"):
        solve_config(64, 128, 8, 1e4)


def test_losses():
    from nnc.codec.training import reconstruction_loss

    target = torch.rand(2, 3, 32, 64)
    noisy = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    for kind in ("l2", "fusion6"):
        assert reconstruction_loss(target, target, kind).item() == pytest.approx(0.0, abs=1e-6)
        assert reconstruction_loss(noisy, target, kind).item() > 0.005  # noise variance ~0.009
    # fusion6 = 0.7 L1 + 0.3 (1 - SSIM): between 0.7 * L1 and 0.7 * L1 + 0.3
    l1 = torch.nn.functional.l1_loss(noisy, target).item()
    assert 0.7 * l1 < reconstruction_loss(noisy, target, "fusion6").item() < 0.7 * l1 + 0.3
