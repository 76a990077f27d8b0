"""NeRV and NeRV++: shapes, sizing, config bounds, pruning masks in the bitstream, CLI."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nnc.bitstream import Bitstream, TensorGroup, decode_bitstream, encode_bitstream, read_bitstream_file
from nnc.cli.main import main
from nnc.codec.base import float_to_frames
from nnc.codec.nerv import NeRVOptions
from nnc.codec.video_api import decode_frames, encode_video
from nnc.codec.nerv import MASK_SUFFIX, VALUES_SUFFIX, NeRVCodec, NeRVPPCodec
from nnc.errors import InvalidBitstreamError
from nnc.metrics import mean_psnr, psnr_per_frame
from nnc.media import write_video
from nnc.models import nerv, nervpp

from synthetic import synthetic_video

MODELS = {
    "nerv": (nerv, nerv.NeRV, nerv.NeRVConfig, NeRVCodec),
    "nervpp": (nervpp, nervpp.NeRVPP, nervpp.NeRVPPConfig, NeRVPPCodec),
}
# NeRV++'s gated stem alone is ~83k parameters (80 -> 1024 -> ...), NeRV's ~42k.
TINY_SIZE = {"nerv": 8e4, "nervpp": 1.2e5}
PRUNE = 0.4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_nerv_s_paper_configuration():
    # NeRV-S on 720x1280 bunny: strides 5,2,2,2,2, a 9x16x26 grid, widths 26 then 96: 3.2M.
    config = nerv.solve_config(720, 1280, 132, 3.2e6)
    assert (config.strides, config.fc_height, config.fc_width) == ([5, 2, 2, 2, 2], 9, 16)
    assert (config.fc_dim, config.lower_width, config.stage_widths()) == (26, 96, [26, 96, 96, 96, 96])
    assert config.parameter_count() == 3201905
    assert nerv.choose_grid(1080, 1920) == ([5, 3, 2, 2, 2], 9, 16)  # NeRV's UVG setting
    assert nerv.positional_encoding(torch.tensor([0.5]), 1.25, 40).shape == (1, 80)


def test_nervpp_presets_differ_by_stem_output():
    sizes = []
    for name, fc_dim in nervpp.PRESETS.items():
        config = nervpp.preset_config(name)
        assert (config.fc_dim, config.lower_width, config.fc_height, config.fc_width) == (fc_dim, 80, 9, 16)
        with torch.device("meta"):
            model = nervpp.NeRVPP(config)
        assert sum(p.numel() for p in model.parameters()) == config.parameter_count()
        sizes.append(config.parameter_count())
    assert sizes == sorted(sizes)
    with pytest.raises(ValueError):
        nervpp.preset_config("XXL")


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("height,width", [(64, 128), (90, 160), (17, 33), (1, 1), (288, 352)])
def test_any_resolution_is_covered_by_the_padded_output(model_name, height, width):
    module, model_class, _, _ = MODELS[model_name]
    config = module.solve_config(height, width, 8, 2e5)
    assert config.padded_height >= height and config.padded_width >= width
    # the grid is the smallest that covers the frame at this total stride
    assert (config.fc_height - 1) * config.total_stride < height
    model = model_class(config)
    assert sum(p.numel() for p in model.parameters()) == config.parameter_count()
    with torch.no_grad():
        output = model(model.encode_time(torch.tensor([0.0, 0.5])))
    assert output.shape == (2, 3, config.padded_height, config.padded_width)
    assert 0 <= output.min() and output.max() <= 1


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("height,width,target", [(64, 128, 2e5), (64, 128, 1e6), (720, 1280, 1.5e6), (1080, 1920, 1e7)])
def test_size_solver_hits_the_target(model_name, height, width, target):
    module = MODELS[model_name][0]
    config = module.solve_config(height, width, 8, target)
    assert abs(config.parameter_count() - target) / target < 0.03
    with pytest.raises(ValueError, match="raise --params"):
        module.solve_config(height, width, 8, 2e4)


@pytest.mark.parametrize("model_name", MODELS)
def test_config_from_untrusted_dict_is_bounded(model_name):
    module, _, config_class, _ = MODELS[model_name]
    good = module.solve_config(64, 128, 8, 2e5).to_dict()
    assert config_class.from_dict(good) == config_class(**good)
    for field, value in [("fc_dim", 10**9), ("strides", [2] * 50), ("strides", [0]), ("activation", "relu"),
                         ("pe_levels", 0), ("pe_levels", 10**6), ("expansion", "x"), ("fc_dim", True),
                         ("stem_dim", 10**7), ("fc_height", 10**6), ("pe_base", float("nan"))]:
        with pytest.raises(ValueError):
            config_class.from_dict(dict(good, **{field: value}))
    # each field within bounds, but together more parameters than a file can hold
    with pytest.raises(ValueError, match="parameters"):
        config_class.from_dict(dict(good, fc_height=64, fc_width=64, fc_dim=2048, stem_dim=4096))
    with pytest.raises(ValueError):
        config_class.from_dict(dict(good, surprise=1))
    with pytest.raises(ValueError):
        config_class.from_dict([1, 2])


# --------------------------------------------------------------------------- encodes


def encode_capturing(tmp_path_factory, model_name: str, prune: float):
    """encode_video, also returning what the codec handed to the bitstream (in memory)."""
    codec_class = MODELS[model_name][3]
    captured = {}
    original = codec_class.compress

    def capture(self, video, options):
        captured["compressed"] = original(self, video, options)
        return captured["compressed"]

    video = synthetic_video()
    path = tmp_path_factory.mktemp(model_name) / f"clip_{prune}.nnc"
    options = NeRVOptions(size=TINY_SIZE[model_name], epochs=25, lr=5e-3, prune=prune, finetune_epochs=4,
                            device="cpu", show_progress=False)
    with mock.patch.object(codec_class, "compress", capture):
        report = encode_video(video, path, model_name, options)
    return video, path, report, captured["compressed"]


@pytest.fixture(scope="module", params=list(MODELS))
def encoded(request, tmp_path_factory):
    pruned = encode_capturing(tmp_path_factory, request.param, PRUNE)
    dense = encode_capturing(tmp_path_factory, request.param, 0.0)
    return request.param, pruned, dense


def encoder_reconstruction(model_name: str, compressed) -> np.ndarray:
    """Frames from the encoder's in-memory quantized tensors, rebuilt here independently
    of the codec's decoder: dense tensors dequantized, pruned ones scattered by mask."""
    module, model_class, config_class, _ = MODELS[model_name]
    config = config_class.from_dict(compressed.model_header["config"])
    model = model_class(config)
    tensors = {t.name: t for t in compressed.groups[0].tensors}
    state = model.state_dict()
    for name, reference in state.items():
        if name in tensors:
            state[name] = torch.from_numpy(tensors[name].dequantize())
        else:
            dense = torch.zeros_like(reference)
            dense[torch.from_numpy(tensors[name + MASK_SUFFIX].symbols.astype(bool))] = torch.from_numpy(
                tensors[name + VALUES_SUFFIX].dequantize())
            state[name] = dense
    model.load_state_dict(state)
    encoded_time = model.encode_time(torch.arange(8, dtype=torch.float64) / 8)
    with torch.no_grad():
        output = torch.cat([model(encoded_time[i : i + 1]) for i in range(8)])
    return float_to_frames(output[..., :64, :128], 255)


def test_decode_equals_the_encoders_quantized_reconstruction(encoded):
    model_name, (video, path, report, compressed), _ = encoded
    decoded = np.concatenate(list(decode_frames(read_bitstream_file(path))))
    assert decoded.shape == video.frames.shape and decoded.dtype == np.uint8
    assert np.array_equal(decoded, encoder_reconstruction(model_name, compressed))
    psnr = mean_psnr(psnr_per_frame(video.frames, decoded, 255))
    assert psnr == pytest.approx(report.psnr, abs=1e-9)
    header = read_bitstream_file(path).header
    assert header["encoder"]["psnr_rgb"] == pytest.approx(psnr, abs=1e-4)
    assert header["encoder"]["settings"]["prune"] == PRUNE
    assert report.psnr > 20.0  # mean grey is ~13 dB: the short fit learned the clip
    # decoding is repeatable in other batch sizes, and the file re-serialises to itself
    again = np.concatenate(list(decode_frames(read_bitstream_file(path), batch_size=3)))
    assert np.array_equal(decoded, again)
    part = np.concatenate(list(decode_frames(read_bitstream_file(path), batch_size=2, frames=range(3, 6))))
    assert np.array_equal(part, decoded[3:6])
    assert encode_bitstream(decode_bitstream(path.read_bytes())) == path.read_bytes()


def test_pruning_masks_round_trip(encoded):
    model_name, (_, path, report, compressed), _ = encoded
    parsed = {t.name: t for t in read_bitstream_file(path).groups[0].tensors}
    memory = {t.name: t for t in compressed.groups[0].tensors}
    assert parsed.keys() == memory.keys()
    for name, tensor in memory.items():
        assert parsed[name] == tensor, name
    masks = {name[: -len(MASK_SUFFIX)]: t for name, t in parsed.items() if name.endswith(MASK_SUFFIX)}
    assert masks, "no pruned tensors in the file"
    model = MODELS[model_name][1](MODELS[model_name][2].from_dict(compressed.model_header["config"]))
    prunable = nerv.prunable_names(model)
    assert set(masks) == set(prunable)  # at 40% global sparsity every prunable tensor loses some
    total = sum(model.state_dict()[n].numel() for n in prunable)
    removed = sum(int((t.symbols == 0).sum()) for t in masks.values())
    assert removed == round(PRUNE * total)
    assert report.stats["kept_parameters"] == report.stats["model_size"] - removed
    for name, mask in masks.items():
        shape = tuple(model.state_dict()[name].shape)
        assert (mask.scheme, mask.bits, mask.axis, mask.shape) == ("minmax", 1, None, shape)
        assert parsed[name + VALUES_SUFFIX].shape == (int(mask.symbols.sum()),)
    assert "head.weight" in parsed  # the head is never pruned


def test_pruned_file_is_smaller_at_similar_psnr(encoded):
    model_name, (_, pruned_path, pruned, _), (_, dense_path, dense, dense_compressed) = encoded
    assert not any(t.name.endswith(MASK_SUFFIX) for t in dense_compressed.groups[0].tensors)
    assert pruned.stats["model_size"] == dense.stats["model_size"]
    print(f"{model_name}: {dense.stats['model_size']} parameters; unpruned {dense.file_bytes} B "
          f"{dense.psnr:.2f} dB; pruned {PRUNE:.0%} {pruned.file_bytes} B {pruned.psnr:.2f} dB")
    assert pruned.file_bytes < 0.85 * dense.file_bytes
    assert abs(pruned.psnr - dense.psnr) < 1.0


def test_mismatched_tensors_are_rejected(encoded):
    model_name, (_, path, _, _), _ = encoded

    def rejects(bitstream, match=None):
        with pytest.raises(InvalidBitstreamError, match=match):
            list(decode_frames(bitstream))

    bitstream = read_bitstream_file(path)
    bitstream.header["model"]["config"]["fc_dim"] += 1
    rejects(bitstream)
    bitstream = read_bitstream_file(path)
    bitstream.header["media"]["width"] = 1024  # the grid would not cover it
    rejects(bitstream, "size")
    tensors = read_bitstream_file(path).groups[0].tensors
    values = next(i for i, t in enumerate(tensors) if t.name.endswith(VALUES_SUFFIX))
    mask = values - 1 if tensors[values - 1].name.endswith(MASK_SUFFIX) else next(
        i for i, t in enumerate(tensors) if t.name == tensors[values].name[: -len(VALUES_SUFFIX)] + MASK_SUFFIX)
    # a missing kept-values tensor, a mask that keeps one weight more than it has
    # values, a mask that is not 1-bit 0/1, an extra tensor
    without = [t for i, t in enumerate(tensors) if i != values]
    rejects(Bitstream(read_bitstream_file(path).codec, read_bitstream_file(path).header,
                      [TensorGroup("weights", without)]), "lacks")
    bitstream = read_bitstream_file(path)
    symbols = bitstream.groups[0].tensors[mask].symbols
    symbols.reshape(-1)[np.flatnonzero(symbols.reshape(-1) == 0)[0]] = 1
    rejects(bitstream, "do not match the mask")
    bitstream = read_bitstream_file(path)
    bitstream.groups[0].tensors[mask].scale[:] = 2.0
    rejects(bitstream, "malformed")
    bitstream = read_bitstream_file(path)
    extra = bitstream.groups[0].tensors[0]
    bitstream.groups[0].tensors.append(type(extra)("surprise", extra.symbols, extra.scheme, extra.bits, extra.axis,
                                                   extra.offset, extra.scale))
    rejects(bitstream, "unexpected")


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("model_name", MODELS)
def test_cli_encode_decode_info(model_name, tmp_path):
    write_video(tmp_path / "clip.y4m", synthetic_video(num_frames=4, height=32, width=64))
    runner = CliRunner()
    result = runner.invoke(main, ["encode", str(tmp_path / "clip.y4m"), "-o", str(tmp_path / "clip.nnc"),
                                  "--model", model_name, "--size", "150k", "--epochs", "3", "--lr", "5e-3",
                                  "--prune", "0.5", "--finetune-epochs", "1", "--device", "cpu", "--quiet", "--force"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output
    header = read_bitstream_file(tmp_path / "clip.nnc").header
    assert header["encoder"]["settings"]["prune"] == 0.5 and header["encoder"]["settings"]["finetune_epochs"] == 1
    result = runner.invoke(main, ["decode", str(tmp_path / "clip.nnc"), "-o", str(tmp_path / "out.y4m")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.y4m").stat().st_size > 4 * 32 * 64
    result = runner.invoke(main, ["info", str(tmp_path / "clip.nnc")])
    assert result.exit_code == 0, result.output
    for word in (model_name, "weights", ".mask", ".values", "fc_dim", "bpp"):
        assert word in result.output
    bad = runner.invoke(main, ["encode", str(tmp_path / "clip.y4m"), "-o", str(tmp_path / "bad.nnc"),
                               "--model", model_name, "--prune", "1.5"])
    assert bad.exit_code != 0 and not (tmp_path / "bad.nnc").exists()


def test_interrupted_finetune_resumes_to_the_same_file(tmp_path):
    from nnc.codec import training

    video = synthetic_video(num_frames=4, height=32, width=64)
    options = NeRVOptions(size=1e5, epochs=3, lr=5e-3, prune=0.4, finetune_epochs=2, device="cpu",
                            show_progress=False, checkpoint_interval=1e-9, force=True)
    reference = encode_video(video, tmp_path / "reference.nnc", "nerv", options)
    output = tmp_path / "clip.nnc"
    original_loss, calls = training.reconstruction_loss, []

    def interrupt_in_finetune(*args):
        calls.append(1)
        if len(calls) == 3 * 4 + 3:  # the 4th step of fine-tuning
            raise KeyboardInterrupt
        return original_loss(*args)

    with mock.patch.object(training, "reconstruction_loss", interrupt_in_finetune), pytest.raises(KeyboardInterrupt):
        encode_video(video, output, "nerv", options)
    assert (tmp_path / "clip.nnc.ckpt.finetune").exists() and not output.exists()
    fits = []
    def counting_fit(*args, **kwargs):
        fits.append(args[4].epochs)
        return training.fit(*args, **kwargs)

    with mock.patch("nnc.codec.nerv.fit", side_effect=counting_fit):
        resumed = encode_video(video, output, "nerv", NeRVOptions(**{**options.__dict__, "resume": True}))
    assert fits == [2]  # only the fine-tuning ran again
    assert not (tmp_path / "clip.nnc.ckpt.finetune").exists() and not (tmp_path / "clip.nnc.ckpt").exists()
    assert output.read_bytes() == (tmp_path / "reference.nnc").read_bytes()
    assert resumed.psnr == reference.psnr
