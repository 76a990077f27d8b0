"""NIRVANA: network shape and sizing, QAT + rate term, residual groups in the bitstream,
frame-range decoding, parallel chains, CLI, and bad headers."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nnc.bitstream import decode_bitstream, encode_bitstream, read_bitstream_file
from nnc.cli.main import main
from nnc.codec import nirvana as nirvana_codec
from nnc.codec.nirvana import NIRVANAOptions
from nnc.codec.video_api import decode_frames, encode_video
from nnc.errors import InvalidBitstreamError, NncError
from nnc.metrics import mean_psnr, psnr_per_frame
from nnc.media import read_video, write_video
from nnc.models import nirvana

from synthetic import synthetic_video

SIZE = 6000  # parameters of one group's network
EPOCHS = 100  # steps per warm-started group (the first group of a chain: 2x)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def options(**changes) -> NIRVANAOptions:
    fields = dict(size=SIZE, epochs=EPOCHS, lr=5e-3, rate_lambda=1e-3, device="cpu", show_progress=False,
                  checkpoint_interval=0)
    fields.update(changes)
    return NIRVANAOptions(**fields)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """8 frames of 64x128 in groups of 4: one intra group and one residual group."""
    video = synthetic_video(num_frames=8, height=64, width=128)
    path = tmp_path_factory.mktemp("nirvana") / "clip.nnc"
    compressed = {}
    original = nirvana_codec.NIRVANACodec.compress

    def keep(self, video, options):  # the encoder's in-memory result, next to the file
        compressed["value"] = original(self, video, options)
        return compressed["value"]

    with mock.patch.object(nirvana_codec.NIRVANACodec, "compress", keep):
        report = encode_video(video, path, "nirvana", options())
    return video, path, report, compressed["value"]


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize("height,width", [(64, 128), (17, 33), (1, 1), (90, 160)])
def test_any_resolution_is_covered_and_counted(height, width):
    config = nirvana.solve_config(height, width, 8, 2e4)
    assert abs(config.parameter_count() - 2e4) < 0.2 * 2e4
    net = nirvana.NIRVANAGroupNet(config)
    assert sum(p.numel() for p in net.parameters()) == config.parameter_count()
    rows, cols = config.grid(height, width)
    assert (rows - 1) * config.patch_size < height <= rows * config.patch_size
    assert (config.rows, config.cols) == (rows, cols)
    with torch.no_grad():
        frames = net(nirvana.patch_centres(rows, cols), rows, cols)
    assert frames.shape == (config.group_size, 3, rows * config.patch_size, cols * config.patch_size)
    assert 0 <= frames.min() and frames.max() <= 1
    # the temporal code separates the frames of a group
    assert not torch.equal(frames[0], frames[1])


def test_config_from_untrusted_dict_is_bounded():
    good = nirvana.scaled_config(16).to_dict()
    assert nirvana.NIRVANAConfig.from_dict(good) == nirvana.scaled_config(16)
    for change in [dict(group_size=10**9), dict(group_size=0), dict(patch_size=12, strides=[8]),
                   dict(siren_width=True), dict(strides=[]), dict(strides="22"), dict(w0=float("nan")),
                   dict(siren_width=1024, siren_layers=8, feature_channels=1024), dict(bogus=1)]:
        with pytest.raises(ValueError):
            nirvana.NIRVANAConfig.from_dict({**good, **change})
    with pytest.raises(ValueError, match="smallest"):
        nirvana.solve_config(64, 128, 8, 10)


# --------------------------------------------------------------------------- codec


def test_bitstream_round_trip_is_exact(encoded):
    video, path, report, compressed = encoded
    data = path.read_bytes()
    parsed = decode_bitstream(data)
    assert [g.name for g in parsed.groups] == ["group0", "group1"]
    for memory, stored in zip(compressed.groups, parsed.groups):
        assert [t.name for t in memory.tensors] == [t.name for t in stored.tensors]
        for a, b in zip(memory.tensors, stored.tensors):
            assert a == b, a.name
            assert (b.scheme, b.axis, float(b.offset[0])) == ("step", None, 0.0)
    assert encode_bitstream(parsed) == data
    assert data[8:10] == b"\x04\x00"  # format version 4: the zero offsets are not stored
    # every tensor the decoder needs is in every group: biases, upsampler, head
    names = {t.name for t in parsed.groups[1].tensors}
    assert {"siren.0.linear.bias", "to_features.bias", "stages.0.weight", "head.weight", "head.bias"} <= names
    assert parsed.header["model"]["chains"] == [0]
    assert report.bpp == pytest.approx(len(data) * 8 / (8 * 64 * 128))


def test_decode_equals_the_encoders_quantized_reconstruction(encoded):
    video, path, report, compressed = encoded
    decoded = np.concatenate(list(decode_frames(read_bitstream_file(path))))
    assert decoded.shape == video.frames.shape
    assert hashlib.sha256(decoded.tobytes()).hexdigest() == compressed.stats["quantized_frames_sha256"]
    psnr = mean_psnr(psnr_per_frame(video.frames, decoded, 255))
    assert psnr == pytest.approx(compressed.stats["quantized_psnr"], abs=1e-9)
    assert psnr == pytest.approx(report.psnr, abs=1e-9)
    assert psnr > 20.0  # a flat grey guess scores ~12 dB on this clip
    for batch_size in (1, 3):
        again = np.concatenate(list(decode_frames(read_bitstream_file(path), batch_size=batch_size)))
        assert np.array_equal(decoded, again)


def test_the_residual_group_is_cheaper_than_the_first(encoded):
    _, path, _, _ = encoded
    data = path.read_bytes()
    from nnc.bitstream import inspect_bitstream

    sizes = {g["name"]: g["bytes"] for g in inspect_bitstream(data)["groups"]}
    assert sizes["group1"] < 0.8 * sizes["group0"], sizes


def test_frame_range_decodes_only_the_groups_it_needs(encoded):
    video, path, _, _ = encoded
    bitstream = read_bitstream_file(path)
    full = np.concatenate(list(decode_frames(bitstream)))
    calls = []
    original = nirvana_codec.render

    def counting(*args):
        calls.append(1)
        return original(*args)

    with mock.patch.object(nirvana_codec, "render", counting):
        part = np.concatenate(list(decode_frames(bitstream, frames=range(5, 7))))
    assert np.array_equal(part, full[5:7]) and len(calls) == 1  # group 1 only (its residual chain read)
    across = np.concatenate(list(decode_frames(bitstream, frames=range(2, 7), batch_size=2)))
    assert np.array_equal(across, full[2:7])


def test_larger_lambda_gives_a_smaller_file(encoded):
    video = encoded[0]
    codec = nirvana_codec.NIRVANACodec()
    heavy = codec.compress(video, options(rate_lambda=0.1, epochs=40))
    light = codec.compress(video, options(rate_lambda=0.0, epochs=40))
    heavy_bytes, light_bytes = len(encode_bitstream_of(video, heavy)), len(encode_bitstream_of(video, light))
    assert heavy_bytes < 0.7 * light_bytes, (heavy_bytes, light_bytes)
    # no rate term: the fit is better than with a heavy one
    assert light.stats["quantized_psnr"] > heavy.stats["quantized_psnr"]
    # the estimate the rate term trains on tracks the real file size
    assert 0.5 < heavy.stats["estimated_bpp"] / (heavy_bytes * 8 / (8 * 64 * 128)) < 2.0


def encode_bitstream_of(video, compressed) -> bytes:
    from nnc.bitstream import Bitstream

    return encode_bitstream(Bitstream("nirvana", {"media": video.info.to_dict(), "model": compressed.model_header},
                                      compressed.groups))


def test_two_workers_fit_two_chains(tmp_path):
    video = synthetic_video(num_frames=8, height=32, width=64)
    report = encode_video(video, tmp_path / "two.nnc", "nirvana", options(workers=2, epochs=10))
    bitstream = read_bitstream_file(tmp_path / "two.nnc")
    assert bitstream.header["model"]["chains"] == [0, 1]
    assert bitstream.header["encoder"]["settings"]["workers"] == 2
    full = np.concatenate(list(decode_frames(bitstream)))
    assert full.shape == video.frames.shape
    assert mean_psnr(psnr_per_frame(video.frames, full, 255)) == pytest.approx(report.psnr, abs=1e-9)
    # the second chain decodes without the first group's tensors mattering
    bitstream.groups[0].tensors[0].symbols[...] += 1000
    assert np.array_equal(np.concatenate(list(decode_frames(bitstream, frames=range(4, 8)))), full[4:8])


def test_two_workers_share_a_time_budget_and_decode(tmp_path):
    video = synthetic_video(num_frames=16, height=32, width=64)  # 4 groups: two chains of 2
    requested = 10**5  # steps per group: far beyond a 5 s budget
    report = encode_video(video, tmp_path / "two.nnc", "nirvana",
                          options(workers=2, epochs=requested, time_budget="5s"))
    stats = report.stats
    assert stats["chains"] == [0, 2] and report.settings["time_budget"] == 5
    intra = [stats["group_iterations"][0], stats["group_iterations"][2]]
    residual = [stats["group_iterations"][1], stats["group_iterations"][3]]
    assert max(intra) < requested
    # Planned, not merely cut off by the hard stop (which would leave the residual groups
    # one step each): every chain's residual group got its planned share, about half its
    # intra group's steps (INTRA_FACTOR), scaled into the budget.
    assert min(residual) >= 5, stats["group_iterations"]
    for first, second in zip(intra, residual):
        assert 1.2 <= first / second <= 3.5, stats["group_iterations"]
    # the budget counts from each chain's first step; the spawned workers' start-up
    # (importing torch) comes on top.  Slack for a loaded 2-core machine.
    assert stats["train_seconds"] < 5 + 30
    frames = np.concatenate(list(decode_frames(read_bitstream_file(tmp_path / "two.nnc"))))
    assert frames.shape == video.frames.shape
    assert mean_psnr(psnr_per_frame(video.frames, frames, 255)) == pytest.approx(report.psnr, abs=1e-9)


def test_a_dry_run_with_two_workers_plans_both_chains_and_writes_nothing(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video(num_frames=8, height=32, width=64))
    result = CliRunner().invoke(main, ["encode", str(clip), "-o", str(tmp_path / "x.nnc"), "--model", "nirvana",
                                       "--size", "6k", "--epochs", "50", "--workers", "2", "--device", "cpu",
                                       "--dry-run"])
    assert result.exit_code == 0, result.output
    # one estimate line per chain, printed by the parent, then the combined plan
    assert "nnc: chain 1/2 (groups 0-0): estimate: nirvana" in result.stderr, result.stderr
    assert "nnc: chain 2/2 (groups 1-1): estimate: nirvana" in result.stderr, result.stderr
    assert "dry run (nothing written): model nirvana" in result.stdout
    assert "epochs intra 100 (200 steps)" in result.stdout, result.stdout  # 100 intra steps in each chain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.y4m"]


def test_bad_settings_are_refused():
    video = synthetic_video(num_frames=2, height=32, width=32)
    codec = nirvana_codec.NIRVANACodec()
    for bad in (options(loss="fusion6"), options(resume=True, checkpoint_path="x"), options(size=5)):
        with pytest.raises(NncError):
            codec.compress(video, bad)


def test_bad_headers_and_tensors_are_rejected(encoded):
    _, path, _, _ = encoded

    def rejects(change, match):
        bitstream = read_bitstream_file(path)
        change(bitstream)
        with pytest.raises(InvalidBitstreamError, match=match):
            list(decode_frames(bitstream))

    def set_config(**fields):
        return lambda b: b.header["model"]["config"].update(fields)

    rejects(set_config(group_size=10**9), "bad NIRVANA config")
    rejects(set_config(siren_width=17), "malformed")
    rejects(set_config(group_size=2), "tensor groups")
    rejects(set_config(patch_size=256, strides=[8, 8, 4]), "grid does not match")
    rejects(set_config(rows=10**4, cols=10**4), "bad NIRVANA config")  # the config alone bounds the work
    rejects(lambda b: b.header["media"].update(width=4096, height=4096), "grid does not match")
    rejects(lambda b: b.header["model"].update(chains=[1]), "chain")
    rejects(lambda b: b.header["model"].update(chains=[0, 0]), "chain")
    rejects(lambda b: b.header["model"].update(chains="0"), "chain")
    rejects(lambda b: b.groups.pop(), "tensor groups")
    rejects(lambda b: b.groups[1].tensors.pop(), "do not match")

    def overflow(b):
        b.groups[0].tensors[0].symbols[...] = 2**31 - 2
        b.groups[1].tensors[0].symbols[...] = 2**31 - 2

    rejects(overflow, "overflow")


# --------------------------------------------------------------------------- CLI


def test_cli_encode_decode_frames_info_and_bad_files(tmp_path):
    write_video(tmp_path / "clip.y4m", synthetic_video(num_frames=6, height=32, width=48))
    runner = CliRunner()
    result = runner.invoke(main, ["encode", str(tmp_path / "clip.y4m"), "-o", str(tmp_path / "clip.nnc"),
                                  "--model", "nirvana", "--size", "6k", "--epochs", "5", "--lambda", "0.01",
                                  "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output and "bpp" in result.output
    header = read_bitstream_file(tmp_path / "clip.nnc").header
    assert header["encoder"]["settings"]["rate_lambda"] == 0.01
    result = runner.invoke(main, ["decode", str(tmp_path / "clip.nnc"), "-o", str(tmp_path / "all.y4m")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["decode", str(tmp_path / "clip.nnc"), "-o", str(tmp_path / "part.y4m"),
                                  "--frames", "3:5"])
    assert result.exit_code == 0, result.output
    full, part = read_video(tmp_path / "all.y4m"), read_video(tmp_path / "part.y4m")
    assert full.frames.shape == (6, 32, 48, 3) and np.array_equal(part.frames, full.frames[3:5])
    result = runner.invoke(main, ["info", str(tmp_path / "clip.nnc")])
    assert result.exit_code == 0, result.output
    for word in ("nirvana", "group0", "group1", "siren_width", "bpp"):
        assert word in result.output

    # an absurd header (CRC recomputed, so the codec's own checks answer) and a
    # truncated file: one line, "nnc: ...", non-zero exit, no output written
    bitstream = read_bitstream_file(tmp_path / "clip.nnc")
    bitstream.header["model"]["config"]["group_size"] = 10**9
    (tmp_path / "absurd.nnc").write_bytes(encode_bitstream(bitstream))
    (tmp_path / "short.nnc").write_bytes((tmp_path / "clip.nnc").read_bytes()[:-40])
    for name in ("absurd.nnc", "short.nnc"):
        # the console script's entry point, in a real process (stderr and exit code as a user sees them)
        process = subprocess.run([sys.executable, "-c", "from nnc.cli.main import main; main()", "decode",
                                  str(tmp_path / name), "-o", str(tmp_path / f"{name}.y4m")],
                                 capture_output=True, text=True, timeout=120)
        lines = process.stderr.strip().splitlines()
        assert process.returncode != 0 and len(lines) == 1 and lines[0].startswith("nnc: "), process.stderr
        assert "not a valid .nnc file" in lines[0] and not (tmp_path / f"{name}.y4m").exists()
    bad = runner.invoke(main, ["encode", str(tmp_path / "clip.y4m"), "-o", str(tmp_path / "bad.nnc"),
                               "--model", "nirvana", "--loss", "fusion6"])
    assert bad.exit_code != 0 and not (tmp_path / "bad.nnc").exists()


# --------------------------------------------------------------------------- independent patches, adaptive steps


def test_a_patch_renders_alone_as_in_the_full_frame():
    """With independent patches a patch's pixels depend only on its own coordinate:
    rendering it alone gives exactly that patch of the whole frame."""
    torch.manual_seed(0)
    config = nirvana.NIRVANAConfig(rows=3, cols=4, patch_size=8, siren_width=16, feature_channels=4,
                                   upsampler_channels=4, independent_patches=True)
    net = nirvana.NIRVANAGroupNet(config).eval()
    coordinates = nirvana.patch_centres(3, 4)
    with torch.no_grad():
        frame = net(coordinates, 3, 4)
        alone = net.forward_patches(coordinates[[1 * 4 + 2]])[0]  # row 1, col 2
        pair = net.forward_patches(coordinates[[0, 1 * 4 + 2]])[1]
    torch.testing.assert_close(alone, frame[:, :, 8:16, 16:24], rtol=0, atol=1e-6)
    torch.testing.assert_close(pair, alone, rtol=0, atol=1e-6)
    # the old (assembled) upsampler sees its neighbours: the same weights give other pixels
    old = nirvana.NIRVANAGroupNet(nirvana.NIRVANAConfig(**dict(config.to_dict(), independent_patches=False))).eval()
    old.load_state_dict(net.state_dict())
    with torch.no_grad():
        assembled = old(coordinates, 3, 4)
    assert (assembled[:, :, 8:16, 16:24] - alone).abs().max() > 1e-3


def test_old_headers_without_the_field_keep_the_assembled_upsampler():
    data = nirvana.NIRVANAConfig(rows=2, cols=2).to_dict()
    del data["independent_patches"]
    assert nirvana.NIRVANAConfig.from_dict(data).independent_patches is False
    assert nirvana.solve_config(64, 64, 8, 6000).independent_patches is True
    assert nirvana.solve_config(64, 64, 8, 6000, independent_patches=False).independent_patches is False


def test_a_region_decodes_from_its_patches_alone(encoded):
    video, path, report, _ = encoded
    stream = read_bitstream_file(path)
    header = stream.header
    full = torch.cat(list(nirvana_codec.NIRVANACodec().decompress(
        header["model"], stream.groups, 8, 64, 128)))
    region = (18, 20, 40, 70)  # top, left, bottom, right: patch rows 1-2, columns 1-4 of 4 x 8
    rendered = []
    original = nirvana.NIRVANAGroupNet.forward_patches

    def counting(self, coordinates):
        rendered.append(coordinates.shape[0])
        return original(self, coordinates)

    with mock.patch.object(nirvana.NIRVANAGroupNet, "forward_patches", counting):
        parts = list(nirvana_codec.decode_region(header["model"], stream.groups, 8, 64, 128, region,
                                                 frames=range(2, 7)))
    assert rendered == [2 * 4, 2 * 4]  # two groups, each only the region's 8 of 32 patches
    crop = torch.cat(parts)
    assert crop.shape == (5, 3, 22, 50)
    torch.testing.assert_close(crop, full[2:7, :, 18:40, 20:70], rtol=0, atol=1e-6)
    with pytest.raises(NncError, match="not inside"):
        next(nirvana_codec.decode_region(header["model"], stream.groups, 8, 64, 128, (0, 0, 65, 10)))


def test_adaptive_steps_stop_a_group_at_the_first_groups_psnr():
    """A static clip: the warm-started group starts at the first group's quality and
    stops after the minimum steps; without adaptive steps it trains all of them."""
    frames = np.repeat(synthetic_video(num_frames=1, height=32, width=32).frames, 8, axis=0)
    job = dict(first_group=0, frames=frames, max_value=255,
               config=nirvana.solve_config(32, 32, 8, SIZE).to_dict(), epochs=40, lr=5e-3, rate_lambda=1e-3,
               seed=0, device="cpu")
    adaptive = nirvana_codec.fit_chain(nirvana_codec.ChainJob(**job, adaptive_steps=True))
    fixed = nirvana_codec.fit_chain(nirvana_codec.ChainJob(**job, adaptive_steps=False))
    assert [r["iterations"] for r in fixed] == [80, 40]
    assert adaptive[0]["iterations"] == 80
    assert adaptive[1]["iterations"] == math.ceil(nirvana_codec.MIN_ADAPTIVE_FRACTION * 40)
    assert adaptive[1]["train_psnr"] > adaptive[0]["train_psnr"] - 0.5
