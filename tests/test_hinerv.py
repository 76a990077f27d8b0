"""HiNeRV codec (--model hinerv): encode -> file -> decode equality, frame ranges, patch
training, the recipe's pieces, CLI, hostile headers and the golden file.

The network itself is tested in tests/test_hinerv_model.py.  Regenerate the golden file
(only when the format changes) with ``python tests/test_hinerv.py --make-golden``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from nnc.bitstream import Bitstream, encode_bitstream, read_bitstream_file
from nnc.codec.hinerv import (
    GRIDS_GROUP,
    WEIGHTS_GROUP,
    ClipGradNorm,
    HiNeRVCodec,
    HiNeRVOptions,
    TrainingData,
    fake_quantize,
    patch_shape,
)
from nnc.codec.nerv import MASK_SUFFIX, VALUES_SUFFIX
from nnc.codec.video_api import decode_frames, encode_video
from nnc.errors import InvalidBitstreamError, NncError
from nnc.models.hinerv import HiNeRV, HiNeRVConfig, solve_config

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import synthetic_video  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES, HEIGHT, WIDTH = 4, 64, 128
GOLDEN = Path(__file__).parent / "data" / "golden_hinerv.nnc"
GOLDEN_FRAMES = GOLDEN.with_name("golden_hinerv_frames.npz")
GOLDEN_FILE_SHA256 = "587c61d6ccf57c342ed8768c81c352993cf162a470fd2f128c6906878295d0ed"
GOLDEN_SYMBOLS_SHA256 = "6130d6dec55c88417ce9c725371e3c5a07b54bdf614489d7dc515948c4dd67bc"
MAX_ROUNDING_FLIPS = 0.01  # as tests/test_golden.py: float summation order differs between CPUs


def fast_options(**values) -> HiNeRVOptions:
    settings = dict(size=4e4, epochs=12, batch_size=1, lr=1e-2, loss="l2", device="cpu", show_progress=False)
    settings.update(values)
    return HiNeRVOptions(**settings)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    video = synthetic_video(num_frames=FRAMES, height=HEIGHT, width=WIDTH)
    path = tmp_path_factory.mktemp("hinerv") / "clip.nnc"
    captured = []  # what the codec handed to the bitstream layer, in memory
    original = HiNeRVCodec.compress

    def capture(self, *args, **kwargs):
        captured.append(original(self, *args, **kwargs))
        return captured[-1]

    with mock.patch.object(HiNeRVCodec, "compress", capture):
        report = encode_video(video, path, "hinerv", fast_options())
    [compressed] = captured
    return video, path, report, compressed


def encoder_reconstruction(compressed) -> np.ndarray:
    """Frames from the encoder's in-memory quantized tensors, rebuilt here with the network
    alone (no file, no entropy decoding, no codec decompress): masks and kept values
    scattered back by hand."""
    config = HiNeRVConfig.from_dict(compressed.model_header["config"])
    tensors = {t.name: t for group in compressed.groups for t in group.tensors}
    state = {}
    for name, tensor in tensors.items():
        if name.endswith(VALUES_SUFFIX):
            continue
        if name.endswith(MASK_SUFFIX):
            base = name[: -len(MASK_SUFFIX)]
            dense = np.zeros(tensor.symbols.shape, np.float32)
            dense[tensor.symbols != 0] = tensors[base + VALUES_SUFFIX].dequantize()
            state[base] = torch.from_numpy(dense)
        else:
            state[name] = torch.from_numpy(np.asarray(tensor.dequantize(), np.float32))
    model = HiNeRV(config)
    model.load_state_dict(state)
    with torch.no_grad():
        output = torch.cat([model.eval()(torch.tensor([i])) for i in range(config.frames)])
    return output[..., :HEIGHT, :WIDTH].clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def flat_psnr(frames: np.ndarray) -> float:
    """PSNR of the clip's mean colour as a flat video: what learning nothing scores."""
    error = frames.astype(np.float64) - frames.reshape(-1, 3).mean(0)
    return float(10 * np.log10(255.0**2 / np.mean(error**2)))


def test_file_decodes_to_the_encoders_quantized_reconstruction(encoded):
    video, path, report, compressed = encoded
    assert path.stat().st_size == report.file_bytes
    assert report.bpp == pytest.approx(report.file_bytes * 8 / (FRAMES * HEIGHT * WIDTH))
    decoded = np.concatenate(list(decode_frames(read_bitstream_file(path))))
    assert decoded.shape == video.frames.shape and decoded.dtype == np.uint8
    assert np.array_equal(decoded, encoder_reconstruction(compressed))
    error = video.frames.astype(np.float64) - decoded
    psnr = float(np.mean(10 * np.log10(255.0**2 / np.mean(error**2, axis=(1, 2, 3)))))
    assert report.psnr == pytest.approx(psnr, abs=1e-6)
    # 12 epochs of 4 steps learn the clip: measured 18.52 dB, where its flat mean colour
    # scores 15.65 dB (HiNeRV starts slowly: warm-up from 0.01 x lr)
    assert report.psnr > flat_psnr(video.frames) + 2.0


def test_file_holds_pruned_weights_and_dense_grids(encoded):
    _, path, report, compressed = encoded
    bitstream = read_bitstream_file(path)
    assert [g.name for g in bitstream.groups] == [WEIGHTS_GROUP, GRIDS_GROUP]
    weights = {t.name for t in bitstream.groups[0].tensors}
    grids = {t.name for t in bitstream.groups[1].tensors}
    assert "stem.weight" + MASK_SUFFIX in weights and "head.weight" in weights
    assert all(name.startswith("base.levels.") or ".encoding.levels." in name for name in grids)
    config = HiNeRVConfig.from_dict(bitstream.header["model"]["config"])
    assert grids == set(HiNeRV(config).grid_parameters())
    # 15% of the prunable weights are gone and the masks say so
    masks = [t for t in bitstream.groups[0].tensors if t.name.endswith(MASK_SUFFIX)]
    removed = sum(int((t.symbols == 0).sum()) for t in masks)
    assert removed / sum(t.symbols.size for t in masks) == pytest.approx(0.15, abs=0.002)
    assert report.stats["model_size"] == report.stats["decoder_parameters"] + report.stats["grid_parameters"]
    assert bitstream.header["encoder"]["settings"]["qat_epochs"] >= 1


def test_a_frame_range_is_the_slice_of_the_full_decode(encoded):
    _, path, _, _ = encoded
    bitstream = read_bitstream_file(path)
    full = np.concatenate(list(decode_frames(bitstream)))
    for frames in (range(1, 3), range(3, 4), range(0, 4)):
        part = np.concatenate(list(decode_frames(bitstream, frames=frames, batch_size=3)))
        assert np.array_equal(part, full[frames.start:frames.stop])


def hostile(bitstream: Bitstream, **config_changes) -> Bitstream:
    model = {"config": {**bitstream.header["model"]["config"], **config_changes}}
    return Bitstream(bitstream.codec, {**bitstream.header, "model": model}, bitstream.groups)


def test_hostile_headers_are_invalid_bitstreams(encoded):
    _, path, _, _ = encoded
    bitstream = read_bitstream_file(path)
    config = bitstream.header["model"]["config"]
    for changes in ({"channels": config["channels"] + 1}, {"frames": 5}, {"base_width": 9},
                    {"channels": 10**6}, {"strides": [2] * 40}, {"local_grid_levels": "x"}, {"surprise": 1}):
        with pytest.raises(InvalidBitstreamError):
            list(decode_frames(hostile(bitstream, **changes)))
    swapped = Bitstream(bitstream.codec, bitstream.header, bitstream.groups[::-1])
    with pytest.raises(InvalidBitstreamError, match="groups"):
        list(decode_frames(swapped))


def test_patches_render_what_whole_frames_render():
    # Training on patches scores exactly the pixels whole frames score: same values, and
    # the padding outside the video replaced by the target.
    torch.manual_seed(0)
    frames = synthetic_video(num_frames=2, height=56, width=112).frames
    config = solve_config(56, 112, 2, 2e4)
    model = HiNeRV(config).eval()
    patch = patch_shape(config, 64)
    assert patch == (60, 60) and (config.padded_height, config.padded_width) == (60, 120)
    data = TrainingData(frames, config, patch, torch.device("cpu"))
    assert data.per_frame == 2 and data.items.shape == (4, 60, 60, 3)
    indices = torch.tensor([3, 0, 2, 1])  # any order, as the loop's shuffled batches
    target = torch.from_numpy(data.items[indices.numpy()]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        patches = data.render(model, indices, target)[torch.argsort(indices)]
        whole = model(torch.arange(2))
    target = target[torch.argsort(indices)]

    def tile(x):
        return x.view(2, 1, 2, 3, 60, 60).permute(0, 3, 1, 4, 2, 5).reshape(2, 3, 60, 120)

    tiled, padded_target = tile(patches), tile(target)
    assert torch.allclose(tiled[..., :56, :112], whole[..., :56, :112], atol=1e-6)
    assert not torch.allclose(tiled[..., :56, :112], padded_target[..., :56, :112], atol=0.05)
    assert torch.equal(tiled[..., 56:, :], padded_target[..., 56:, :])
    assert torch.equal(tiled[..., 112:], padded_target[..., 112:])


def test_patch_sizes_tile_the_padded_frame():
    config = solve_config(320, 640, 4, 3.75e5)
    assert config.total_stride == 40 and patch_shape(config, 80) == (80, 80)  # the authors' patch
    assert patch_shape(config, 100) == (80, 80)  # 320 / 40 = 8 cells: 2 divides, 2.5 does not
    assert patch_shape(config, 1) == (40, 40)


def test_gradient_clipping_bounds_the_global_norm():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    hook = ClipGradNorm(model.parameters(), 1.0)
    hook.start(None)
    hook.loss_term(None)
    (1000 * model(torch.ones(3, 4)).sum()).backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert hook.clipped_steps == 1 and norm == pytest.approx(1.0, rel=1e-5)
    hook.after_step(None)
    hook.finish(None)


def test_fake_quantization_has_the_files_levels():
    values = torch.linspace(-1.0, 3.0, 1000)
    quantized = fake_quantize(values, 4)
    assert torch.unique(quantized).numel() == 16
    assert (quantized - values).abs().max() <= 4.0 / 15 / 2 + 1e-6


def test_size_and_preset_are_exclusive_and_sizes_are_checked():
    with pytest.raises(NncError, match="not both"):
        HiNeRVCodec().check_options(HiNeRVOptions(size=1e5, hinerv_config="xxs"))
    with pytest.raises(NncError, match="hinerv-config"):
        HiNeRVCodec.make_options(hinerv_config="huge")
    video = synthetic_video(num_frames=2, height=32, width=64)
    with pytest.raises(NncError, match="raise --params"):
        HiNeRVCodec().compress(video, fast_options(size=10))


def test_cli_encode_and_decode(tmp_path):
    from click.testing import CliRunner

    from nnc.cli.main import main
    from nnc.media import read_video, write_video

    # a tiny clip: the smallest HiNeRV is larger than its raw frames, hence --force
    write_video(tmp_path / "clip.y4m", synthetic_video(num_frames=2, height=32, width=64))
    result = CliRunner().invoke(main, [str(a) for a in (
        "encode", tmp_path / "clip.y4m", "-o", tmp_path / "clip.nnc", "--model", "hinerv", "--size", "20k",
        "--epochs", "2", "--finetune-epochs", "1", "--qat-epochs", "1", "--patch-size", "32", "--device", "cpu",
        "--force", "--quiet")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bitstream = read_bitstream_file(tmp_path / "clip.nnc")
    assert bitstream.codec == "hinerv" and bitstream.header["encoder"]["settings"]["patch_size"] == 32
    result = CliRunner().invoke(main, ["decode", str(tmp_path / "clip.nnc"), "-o", str(tmp_path / "out.y4m")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_video(tmp_path / "out.y4m").frames.shape, (2, 32, 64, 3))
    # a hostile header through the real command: one line, no traceback, no output file
    import subprocess

    bad = hostile(bitstream, channels=10**6)
    (tmp_path / "bad.nnc").write_bytes(encode_bitstream(bad))
    process = subprocess.run([sys.executable, "-m", "nnc.cli.main", "decode", str(tmp_path / "bad.nnc"), "-o",
                              str(tmp_path / "bad.y4m")], capture_output=True, text=True, timeout=120)
    lines = process.stderr.strip().splitlines()
    assert process.returncode != 0 and len(lines) == 1 and lines[0].startswith("nnc: not a valid"), process.stderr
    assert not (tmp_path / "bad.y4m").exists()


# --------------------------------------------------------------------------- golden file


def symbols_digest(bitstream) -> str:
    digest = hashlib.sha256()
    for group in bitstream.groups:
        for tensor in group.tensors:
            digest.update(tensor.name.encode())
            digest.update(np.ascontiguousarray(tensor.symbols, dtype=np.int64).tobytes())
            digest.update(tensor.dequantize().astype(np.float32).tobytes())
    return digest.hexdigest()


def test_golden_file_decodes_to_the_same_symbols_and_frames():
    data = GOLDEN.read_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_FILE_SHA256
    bitstream = read_bitstream_file(GOLDEN)
    assert bitstream.codec == "hinerv" and encode_bitstream(bitstream) == data
    assert symbols_digest(bitstream) == GOLDEN_SYMBOLS_SHA256
    with np.load(GOLDEN_FRAMES) as stored:
        reference = stored["frames"]
    assert reference.shape == (3, 32, 64, 3) and reference.dtype == np.uint8
    decoded = np.concatenate(list(decode_frames(bitstream)))
    assert decoded.shape == reference.shape and decoded.dtype == reference.dtype
    difference = np.abs(decoded.astype(np.int32) - reference.astype(np.int32))
    assert difference.max() <= 1, f"a value moved by {difference.max()} code values"
    assert np.count_nonzero(difference) <= MAX_ROUNDING_FLIPS * difference.size


def make_golden() -> None:
    torch.set_num_threads(1)
    video = synthetic_video(num_frames=3, height=32, width=64)
    options = fast_options(size=1.5e4, epochs=4, finetune_epochs=1, qat_epochs=1, force=True)
    encode_video(video, GOLDEN, "hinerv", options)
    bitstream = read_bitstream_file(GOLDEN)
    np.savez_compressed(GOLDEN_FRAMES, frames=np.concatenate(list(decode_frames(bitstream))))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes) and {GOLDEN_FRAMES}")
    print(f'GOLDEN_FILE_SHA256 = "{hashlib.sha256(GOLDEN.read_bytes()).hexdigest()}"')
    print(f'GOLDEN_SYMBOLS_SHA256 = "{symbols_digest(bitstream)}"')


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-golden"]:
        make_golden()
