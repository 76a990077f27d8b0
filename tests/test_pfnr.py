"""PFNR multi-video sets: forget-free appends, masks, per-video decode, errors, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nnc.bitstream import Bitstream, decode_bitstream, encode_bitstream, encode_group_chunk, read_bitstream_file
from nnc.bitstream import group_chunks as file_group_chunks
from nnc.cli.main import main
from nnc.codec import pfnr as pfnr_codec
from nnc.codec.base import float_to_frames
from nnc.codec.files import decode_file, describe
from nnc.codec.video_set_api import append_to_set, decode_video_set_member, encode_video_set
from nnc.errors import InvalidBitstreamError, NncError
from nnc.metrics import mean_psnr, psnr_per_frame
from nnc.media import Video, VideoInfo, read_video, write_video
from nnc.models import pfnr as pfnr_model

from synthetic import synthetic_frames

HEIGHT, WIDTH = 64, 128
OPTIONS = pfnr_codec.PFNROptions(size=1.2e5, epochs=20, lr=1e-2, loss="l2", batch_size=2, device="cpu",
                                 show_progress=False, checkpoint_interval=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clip(num_frames: int, seed: int, height: int = HEIGHT, width: int = WIDTH) -> Video:
    info = VideoInfo(width=width, height=height, num_frames=num_frames, fps=Fraction(25), pix_fmt="yuv420p",
                     bit_depth=8, color_matrix="bt601", color_range="tv")
    return Video(synthetic_frames(num_frames, height, width, seed=seed), info)


def decoded(bitstream: Bitstream, index: int) -> np.ndarray:
    """Video ``index`` of a set as the decoder produces it (integer RGB)."""
    config, infos = pfnr_codec.parse_set_header(bitstream.header["model"])
    state = pfnr_codec.replay(config, bitstream.groups[: index + 1])
    info = infos[index]
    batches = pfnr_codec.decode_session(state, index, info.num_frames, info.height, info.width)
    return np.concatenate([float_to_frames(b, 255) for b in batches])


def group_chunks(data: bytes) -> list[bytes]:
    """Each TGRP chunk of a file as it lies there, framing included."""
    return [chunk.to_bytes() for chunk in file_group_chunks(data)]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A two-video set, then one and two appends: three files, three different videos plus a fourth."""
    folder = tmp_path_factory.mktemp("pfnr")
    videos = [clip(8, 0), clip(6, 1), clip(5, 2), clip(4, 3)]
    two = folder / "two.nnc"
    report = encode_video_set([("a", videos[0]), ("b", videos[1])], two, OPTIONS)
    three, four = folder / "three.nnc", folder / "four.nnc"
    shutil.copy(two, three)
    append_to_set(three, videos[2], OPTIONS, name="c")
    shutil.copy(three, four)
    append_to_set(four, videos[3], OPTIONS, name="d")
    return {"folder": folder, "videos": videos, "files": [two, three, four], "report": report}


def test_appends_keep_earlier_bytes_and_frames_identical(sets):
    two, three, four = (path.read_bytes() for path in sets["files"])
    chunks = [group_chunks(data) for data in (two, three, four)]
    assert [len(c) for c in chunks] == [2, 3, 4]
    assert chunks[1][:2] == chunks[0] and chunks[2][:3] == chunks[1]  # earlier payload byte-identical
    assert len(two) < len(three) < len(four)
    parsed = [decode_bitstream(data) for data in (two, three, four)]
    for index in range(3):
        frames = [decoded(bs, index) for bs in parsed if len(bs.groups) > index]
        for later in frames[1:]:
            assert np.array_equal(frames[0], later)  # forget-free: bit-exact recall


def test_decode_matches_the_encoders_own_measure_and_fits(sets):
    bitstream = read_bitstream_file(sets["files"][2])
    records = bitstream.header["model"]["videos"]
    assert [r["source"] for r in records] == ["a", "b", "c", "d"]
    assert [r["media"]["num_frames"] for r in records] == [8, 6, 5, 4]
    for index, video in enumerate(sets["videos"]):
        frames = decoded(bitstream, index)
        psnr = mean_psnr(psnr_per_frame(video.frames, frames, 255))
        assert psnr == pytest.approx(records[index]["psnr_rgb"], abs=1e-4)
        # learned: an untrained network's grey output scores about 11 dB on these clips
        assert psnr > 20.0
    # 8-bit weights cost little: the decoded PSNR is near the last epoch's training PSNR
    for record, stats in zip(sets["report"].videos, sets["report"].stats):
        assert record["psnr"] > stats["train_psnr"] - 1.0
    # each video is its own: decoding one session with another's head/mask gives something else
    assert not np.array_equal(decoded(bitstream, 0)[:4], decoded(bitstream, 3)[:4])


def test_masks_round_trip_and_frozen_weights_stay_put(sets):
    bitstream = read_bitstream_file(sets["files"][2])
    config, _ = pfnr_codec.parse_set_header(bitstream.header["model"])
    states = [pfnr_codec.replay(config, bitstream.groups[: n + 1]) for n in range(4)]
    capacity = 1 - pfnr_codec.PFNROptions().prune
    for session, state in enumerate(states):
        for name, mask in state.masks[session].items():
            assert mask.sum() == max(1, round(capacity * mask.size))  # top-c of every layer
            if session:
                before = states[session - 1]
                # frozen weights keep their exact values; the new session's weights fill free slots only
                assert np.array_equal(state.weights[name][before.used[name]], before.weights[name][before.used[name]])
                assert np.array_equal(state.used[name], before.used[name] | mask)
                group = {t.name: t for t in bitstream.groups[session].tensors}
                contexts = [group[f"{name}.reuse{k}"] for k in range(4) if f"{name}.reuse{k}" in group]
                assert sum(t.shape[0] for t in contexts) == int(before.used[name].sum())
                # the reuse bits split by the stored weights' magnitude rank, as the decoder recomputes it
                bins = pfnr_codec.reuse_contexts(before.weights[name][before.used[name]])
                assert np.array_equal(np.concatenate([mask[before.used[name]][bins == k] for k in range(len(contexts))]),
                                      np.concatenate([t.symbols != 0 for t in contexts]))
                assert group[name + ".new"].shape == (mask.size - int(before.used[name].sum()),)
    # masks and values survive the container exactly: re-encode the parsed groups, parse again
    for group in bitstream.groups:
        again = decode_bitstream(encode_bitstream(Bitstream("pfnr", {}, [group]))).groups[0]
        assert [t.name for t in again.tensors] == [t.name for t in group.tensors]
        assert all(a == b for a, b in zip(again.tensors, group.tensors))
        assert encode_group_chunk(again) == encode_group_chunk(group)
    # later sessions really reuse earlier weights (the point of progressive learning)
    last = states[-1]
    reused = sum(int((last.masks[3][n] & states[2].used[n]).sum()) for n in last.masks[3])
    assert reused > 0


def test_per_video_decode_and_frame_ranges(sets, tmp_path):
    bitstream = read_bitstream_file(sets["files"][1])
    for index, count in enumerate([8, 6, 5]):
        info = decode_video_set_member(bitstream, tmp_path / f"v{index}.y4m", video_index=index)
        video = read_video(tmp_path / f"v{index}.y4m")
        assert video.frames.shape == (count, HEIGHT, WIDTH, 3) and info.num_frames == count
    full = decoded(bitstream, 1)
    info = decode_video_set_member(bitstream, tmp_path / "part.mkv", video_index=1, frame_range=(2, 5))
    assert info.num_frames == 3
    # lossless FFV1 of the same frames: the frame range decodes exactly those frames
    whole = decode_video_set_member(bitstream, tmp_path / "whole.mkv", video_index=1)
    assert whole.num_frames == 6
    assert np.array_equal(read_video(tmp_path / "part.mkv").frames, read_video(tmp_path / "whole.mkv").frames[2:5])
    assert full.shape == (6, HEIGHT, WIDTH, 3)


def test_bad_video_index_and_foreign_files(sets, tmp_path):
    path = sets["files"][1]
    with pytest.raises(NncError, match="holds 3 videos"):
        decode_file(path, tmp_path / "x.y4m")
    with pytest.raises(NncError, match="holds 3 videos"):
        decode_file(path, tmp_path / "x.y4m", video_index=3)
    assert not (tmp_path / "x.y4m").exists()
    # a valid single-video file (the checked-in HNeRV golden file): --video and append refuse it
    foreign = tmp_path / "hnerv.nnc"
    shutil.copyfile(os.path.join(os.path.dirname(__file__), "data", "golden_hnerv.nnc"), foreign)
    with pytest.raises(NncError, match="applies to multi-video"):
        decode_file(foreign, tmp_path / "x.y4m", video_index=0)
    with pytest.raises(NncError, match="not a PFNR multi-video set"):
        append_to_set(foreign, clip(2, 0), OPTIONS)
    # `nnc eval` on a whole set names the way to measure one of its videos
    from nnc.eval.compare import evaluate

    write_video(tmp_path / "a.y4m", sets["videos"][0])
    with pytest.raises(NncError, match="decode one with `nnc decode --video N`"):
        evaluate(tmp_path / "a.y4m", path, read=read_video)
    # a header that lists more videos than the file has groups is refused, not half-decoded
    bitstream = read_bitstream_file(path)
    header = dict(bitstream.header)
    header["model"] = dict(header["model"], videos=header["model"]["videos"] + [header["model"]["videos"][0]])
    broken = tmp_path / "broken.nnc"
    broken.write_bytes(encode_bitstream(Bitstream("pfnr", header, bitstream.groups)))
    with pytest.raises(InvalidBitstreamError, match="4 videos but holds 3 groups"):
        decode_file(broken, tmp_path / "x.y4m", video_index=0)
    # a group swapped for another session's is refused (names and mask lengths are checked)
    swapped = Bitstream("pfnr", bitstream.header, [bitstream.groups[1], bitstream.groups[0], bitstream.groups[2]])
    broken.write_bytes(encode_bitstream(swapped))
    with pytest.raises(InvalidBitstreamError):
        decode_file(broken, tmp_path / "x.y4m", video_index=0)
    assert not (tmp_path / "x.y4m").exists()


def test_different_resolution_is_refused_before_training(sets, tmp_path):
    with pytest.raises(NncError, match="one frame size"):
        encode_video_set([("a", clip(4, 0)), ("small", clip(4, 1, 32, 64))], tmp_path / "x.nnc", OPTIONS)
    assert not (tmp_path / "x.nnc").exists()
    target = tmp_path / "set.nnc"
    shutil.copy(sets["files"][0], target)
    before = target.read_bytes()
    with pytest.raises(NncError, match="one frame size"):
        append_to_set(target, clip(4, 1, 32, 64), OPTIONS)
    assert target.read_bytes() == before


def test_fso_block_and_straight_through_masks():
    config = pfnr_model.solve_config(HEIGHT, WIDTH, 1.2e5, fso=True)
    plain = pfnr_model.solve_config(HEIGHT, WIDTH, 1.2e5, fso=False)
    assert config.fso and not plain.fso and plain.fso_stage == -1
    for cfg in (config, plain):
        model = pfnr_model.PFNR(cfg, 1)
        masked = sum(layer.weight.numel() for layer in model.masked_layers().values())
        assert masked == cfg.backbone_parameter_count()
        assert model(model.encode_input(torch.tensor([0.0, 0.5], dtype=torch.float64), 2), 0).shape == (
            2, 3, cfg.padded_height, cfg.padded_width)
    fso = next(layer for layer in pfnr_model.PFNR(config, 1).masked_layers().values()
               if isinstance(layer, pfnr_model.FourierUpsample))
    x = torch.randn(2, fso.weight.shape[0], 4, 8)
    assert fso(x).shape == (2, fso.out_channels, 8, 16)  # inverse rFFT2 at twice the size
    # gradients: straight through to every score; none to frozen weights
    fso.frozen = torch.zeros_like(fso.frozen)
    fso.frozen.view(-1)[::2] = True
    fso(x).square().mean().backward()
    assert torch.count_nonzero(fso.scores.grad) > 0.9 * fso.scores.numel()
    assert torch.all(fso.weight.grad[fso.frozen] == 0) and torch.count_nonzero(fso.weight.grad) > 0
    with pytest.raises(ValueError, match="--fso needs a stride-2"):
        pfnr_model.solve_config(1, 1, 1e5, fso=True)


def test_fso_keeps_every_mode_of_its_stage_and_old_files_keep_three():
    """The paper's FSO multiplies the whole rFFT2 spectrum of its stage's input; files
    written before issue 14 kept 3 modes and say so in their header."""
    config = pfnr_model.solve_config(HEIGHT, WIDTH, 1.2e5, fso=True)
    height, width = config.stage_input_size(config.fso_stage)
    assert config.fso_modes == pfnr_model.ALL_FSO_MODES
    assert config.fso_shape() == (height, width // 2 + 1)
    legacy = replace(config, fso_modes=3)
    assert legacy.fso_shape() == (min(6, height), 3) and legacy.fso_shape() != config.fso_shape()
    assert pfnr_model.PFNRConfig.from_dict(legacy.to_dict()).fso_shape() == legacy.fso_shape()
    without = {k: v for k, v in legacy.to_dict().items() if k != "fso_modes"}
    assert pfnr_model.PFNRConfig.from_dict(without).fso_modes == 3  # never today's default
    with pytest.raises(ValueError):
        pfnr_model.PFNRConfig.from_dict(dict(legacy.to_dict(), fso_modes=pfnr_model.MAX_FSO_MODES + 1))

    # Identity weights over every mode make the block an exact band-limited 2x upsampler:
    # each input sample comes back at the even positions (odd sizes: no Nyquist row or
    # column).  The old 3-column block is a low-pass filter and loses the top frequency.
    channels, rows, columns = 3, 5, 7
    x = torch.randn(2, channels, rows, columns)
    errors = []
    for kept_columns in (columns // 2 + 1, 3):
        block = pfnr_model.FourierUpsample(channels, channels, rows, kept_columns)
        with torch.no_grad():
            block.weight.zero_()
            for channel in range(channels):
                block.weight[channel, channel, ..., 0] = 1.0
        block.fixed_mask = torch.ones_like(block.weight)
        with torch.no_grad():
            y = block(x)
        assert y.shape == (2, channels, 2 * rows, 2 * columns)
        errors.append(float((y[..., ::2, ::2] - x).abs().max()))
    assert errors[0] < 1e-5 and errors[1] > 0.1, errors


def test_cli_end_to_end(tmp_path):
    runner = CliRunner()
    names = []
    for index, video in enumerate([clip(8, 0), clip(6, 1), clip(5, 2)]):
        names.append(tmp_path / f"clip{index}.y4m")
        write_video(names[-1], video)
    fast = ["--params", "120k", "--epochs", "4", "--lr", "5e-3", "--loss", "l2", "--device", "cpu", "--quiet"]
    result = runner.invoke(main, ["encode", *map(str, names[:2]), "--model", "pfnr", "--no-fso", "-o",
                                  str(tmp_path / "set.nnc"), *fast, "--json"])
    assert result.exit_code == 0, result.output
    assert "video 1:" in result.stderr  # the summary; stdout is the JSON
    summary = json.loads(result.stdout)
    assert summary["codec"] == "pfnr" and summary["bytes"] == (tmp_path / "set.nnc").stat().st_size
    assert [v["frames"] for v in summary["videos"]] == [8, 6]
    first = (tmp_path / "set.nnc").read_bytes()
    result = runner.invoke(main, ["append", str(tmp_path / "set.nnc"), str(names[2]), "--epochs", "4", "--lr", "5e-3",
                                  "--loss", "l2", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    data = (tmp_path / "set.nnc").read_bytes()
    assert group_chunks(data)[:2] == group_chunks(first)
    assert read_bitstream_file(tmp_path / "set.nnc").header["model"]["config"]["fso_stage"] == -1
    result = runner.invoke(main, ["decode", str(tmp_path / "set.nnc"), "--video", "2", "-o", str(tmp_path / "c.y4m")])
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "c.y4m").frames.shape == (5, HEIGHT, WIDTH, 3)
    info = describe(tmp_path / "set.nnc")
    assert "video 2: clip2.y4m" in info["text"] and "shared bytes" in info["text"]
    videos = info["data"]["video_set"]["videos"]
    shared = info["data"]["video_set"]["shared_bytes"]
    assert shared + sum(v["group_bytes"] for v in videos) == len(data)  # every byte counted
    assert info["data"]["bpp"] == pytest.approx(len(data) * 8 / (WIDTH * HEIGHT * (8 + 6 + 5)))
    for args in (["decode", tmp_path / "set.nnc", "-o", tmp_path / "x.y4m"],
                 ["decode", tmp_path / "set.nnc", "--video", "9", "-o", tmp_path / "x.y4m"]):
        result = runner.invoke(main, list(map(str, args)))
        assert result.exit_code == 1 and result.output.startswith("nnc: ") and "the file holds 3 videos (0..2)" in result.output
        assert not (tmp_path / "x.y4m").exists()
    # one-line errors from the real entry point
    for args, fragment in [
        (["append", tmp_path / "set.nnc", names[0], "--size", "100k"], "model size is fixed"),
        (["append", names[0], names[1]], "not a valid .nnc file"),
    ]:
        # as the `nnc` console script does; third-party deprecation warnings (torch.jit via
        # compressai) are not nnc's output and are tested elsewhere
        process = subprocess.run([sys.executable, "-c", "import sys; from nnc.cli.main import main; sys.exit(main())",
                                  *map(str, args)], capture_output=True, text=True, timeout=120,
                                 env=dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning"))
        lines = process.stderr.strip().splitlines()
        assert process.returncode != 0 and len(lines) == 1 and lines[0].startswith("nnc: "), process.stderr
        assert fragment in lines[0], lines[0]
    assert (tmp_path / "set.nnc").read_bytes() == data


def test_append_refuses_to_clobber_a_file_changed_meanwhile(sets, tmp_path, monkeypatch):
    target = tmp_path / "set.nnc"
    shutil.copy(sets["files"][0], target)
    original_fit = pfnr_codec.PFNRCodec.fit_session

    def fit_while_someone_else_appends(self, *args, **kwargs):
        result = original_fit(self, *args, **kwargs)
        target.write_bytes(target.read_bytes() + b"x")  # another writer got there first
        return result

    monkeypatch.setattr(pfnr_codec.PFNRCodec, "fit_session", fit_while_someone_else_appends)
    changed = sets["files"][0].read_bytes() + b"x"
    with pytest.raises(NncError, match="changed while"):
        append_to_set(target, clip(3, 5), replace(OPTIONS, epochs=1))
    assert target.read_bytes() == changed


def test_benchmark_crop_and_resize_keeps_content():
    import importlib.util
    from pathlib import Path

    # benchmarks/ holds scripts, not library modules: load the script by its path.
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pfnr_benchmark.py"
    spec = importlib.util.spec_from_file_location("pfnr_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    crop_and_resize = module.crop_and_resize

    frames = np.zeros((2, 90, 160, 3), np.uint8)
    frames[:, :, :80] = 200  # left half bright
    out = crop_and_resize(frames, 80, 144)
    assert out.shape == (2, 80, 144, 3)
    assert out[:, :, :70].min() == 200 and out[:, :, 74:].max() == 0  # the edge stays in the middle
    wide = crop_and_resize(np.full((1, 288, 352, 3), 7, np.uint8), 80, 144)
    assert wide.shape == (1, 80, 144, 3) and np.all(wide == 7)
