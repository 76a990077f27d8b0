"""The `nnc` command end to end, and its one-line errors on bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nnc.bitstream import Bitstream, encode_bitstream, read_bitstream_file
from nnc.cli.main import main
from nnc.media import read_video, write_video

from synthetic import shared_media, synthetic_video

ENCODE_FAST = ["--params", "60k", "--epochs", "30", "--lr", "5e-3", "--device", "cpu", "--quiet"]


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    write_video(directory / "clip.y4m", synthetic_video())
    result = run("encode", directory / "clip.y4m", "-o", directory / "clip.nnc", *ENCODE_FAST)
    assert result.exit_code == 0, result.output
    (directory / "encode_stdout.txt").write_text(result.stdout)
    return directory


def test_encode_prints_a_summary(workdir):
    """The summary's bytes are the file's, its bpp comes from them, and its PSNR is that
    of what `nnc decode` writes, measured here independently of nnc's metrics."""
    from PIL import Image

    nnc = workdir / "clip.nnc"
    summary = (workdir / "encode_stdout.txt").read_text()
    match = re.search(r"wrote (.+?): (\d+) bytes, (\d+\.\d+) bpp, PSNR (\d+\.\d+) dB \(RGB, after quantization\)",
                      summary)
    assert match, summary
    assert Path(match[1]) == nnc
    assert int(match[2]) == nnc.stat().st_size
    assert float(match[3]) == pytest.approx(nnc.stat().st_size * 8 / (8 * 64 * 128), abs=5e-5)  # printed to 4 places
    folder = workdir / "summary_png"
    assert run("decode", nnc, "-o", folder).exit_code == 0
    decoded = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])
    source = read_video(workdir / "clip.y4m").frames  # the RGB the encoder read
    assert decoded.shape == source.shape == (8, 64, 128, 3)
    mse = np.mean((source.astype(np.float64) - decoded) ** 2, axis=(1, 2, 3))
    psnr = float(np.mean(10 * np.log10(255.0**2 / mse)))
    assert float(match[4]) == pytest.approx(psnr, abs=0.005 + 1e-9)  # printed to 2 places
    assert psnr > 20.0  # 30 epochs learn this smooth clip (a flat grey frame scores ~13 dB)
    assert read_bitstream_file(nnc).header["media"]["pix_fmt"] == "yuv420p"


@pytest.mark.parametrize("suffix", [".y4m", ".mkv", ".yuv", ".mp4", "_png"])
def test_decode_writes_every_output_format(workdir, suffix):
    output = workdir / f"decoded{suffix}"
    result = run("decode", workdir / "clip.nnc", "-o", output)
    assert result.exit_code == 0, result.output
    kwargs = {"size": (128, 64), "pix_fmt": "yuv420p"} if suffix == ".yuv" else {}
    video = read_video(output, **kwargs)
    assert video.frames.shape == (8, 64, 128, 3)
    assert video.info.fps == 25
    if suffix in (".y4m", ".mkv", ".yuv"):
        assert video.info.pix_fmt == "yuv420p"


def test_decode_is_repeatable(workdir):
    for name in ("a.mkv", "b.mkv"):
        assert run("decode", workdir / "clip.nnc", "-o", workdir / name).exit_code == 0
    a, b = (read_video(workdir / n).frames for n in ("a.mkv", "b.mkv"))
    assert np.array_equal(a, b)


def test_info_breaks_down_the_bytes(workdir):
    result = run("info", workdir / "clip.nnc")
    assert result.exit_code == 0, result.output
    for word in ("hnerv", "weights", "embeddings", "side info", "bpp", "64"):
        assert word in result.output
    as_json = run("info", workdir / "clip.nnc", "--json")
    assert '"groups"' in as_json.output


def test_eval_against_nnc_and_decoded_video(workdir):
    result = run("eval", workdir / "clip.y4m", workdir / "clip.nnc", "--json")
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.output)
    header_psnr = read_bitstream_file(workdir / "clip.nnc").header["encoder"]["psnr_rgb"]
    # The reference is re-read through the y4m's YUV, so it differs slightly from the
    # RGB the encoder saw; the decoded frames are the same.
    assert data["results"]["psnr-rgb"] > 20
    assert data["results"]["bpp"] == pytest.approx((workdir / "clip.nnc").stat().st_size * 8 / (128 * 64 * 8))
    assert abs(data["results"]["psnr-rgb"] - header_psnr) < 3
    text = run("eval", workdir / "clip.y4m", workdir / "clip.y4m")
    assert text.exit_code == 0 and "PSNR-RGB 100.000" in text.output


def test_decode_a_frame_range_matches_the_full_decode(workdir):
    full = read_video(workdir / "a.mkv") if (workdir / "a.mkv").exists() else None
    if full is None:
        assert run("decode", workdir / "clip.nnc", "-o", workdir / "a.mkv").exit_code == 0
        full = read_video(workdir / "a.mkv")
    # N is the first N frames, as in encode (it was frame N alone).
    for text, expected in [("2:5", slice(2, 5)), ("6:", slice(6, 8)), (":3", slice(0, 3)), ("7", slice(0, 7)),
                           ("5:100", slice(5, 8)), ("1", slice(0, 1))]:
        output = workdir / f"range_{text.replace(':', '_')}.mkv"
        result = run("decode", workdir / "clip.nnc", "-o", output, "--frames", text)
        assert result.exit_code == 0, result.output
        part = read_video(output)
        assert part.info.num_frames == expected.stop - expected.start
        assert np.array_equal(part.frames, full.frames[expected]), text


def test_bad_frame_ranges_and_video_index_give_one_line_errors(workdir, tmp_path):
    for text, fragment in [("8:", "has 8 frames"), ("5:3", "greater than START"),
                           ("a:b", "N (the first N frames) or START:STOP"), ("0", "at least 1 frame"),
                           ("-2", "START:STOP")]:
        assert_one_line_error(cli_process("decode", workdir / "clip.nnc", "-o", tmp_path / "x.y4m", "--frames", text),
                              fragment)
    assert_one_line_error(cli_process("decode", workdir / "clip.nnc", "-o", tmp_path / "x.y4m", "--video", "1"),
                          "--video applies to multi-video")
    assert not (tmp_path / "x.y4m").exists()


def test_encode_refuses_several_inputs_for_a_single_video_model(workdir, tmp_path):
    clip = workdir / "clip.y4m"
    assert_one_line_error(cli_process("encode", clip, clip, "-o", tmp_path / "two.nnc"), "encodes one input")


def cli_process(*args, cwd=None):
    """Run the real console entry point, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nnc.cli.main", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnc: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_nnc_files_give_one_line_errors(workdir, tmp_path):
    data = (workdir / "clip.nnc").read_bytes()
    cases = {
        "truncated.nnc": data[: len(data) // 2],
        "flipped.nnc": data[:200] + bytes([data[200] ^ 0x10]) + data[201:],
        "foreign.nnc": b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
        "empty.nnc": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        output = tmp_path / f"{name}.y4m"
        result = cli_process("decode", path, "-o", output)
        assert_one_line_error(result, "not a valid .nnc file")
        assert not output.exists(), name
        assert_one_line_error(cli_process("info", path), "not a valid .nnc file")
    assert_one_line_error(cli_process("decode", tmp_path / "missing.nnc", "-o", tmp_path / "x.y4m"))


def test_absurd_header_values_are_rejected_before_allocating(workdir, tmp_path):
    bitstream = read_bitstream_file(workdir / "clip.nnc")
    for field, value in [("num_frames", 10**9), ("width", 10**7), ("pix_fmt", "bogus"), ("fps", [0, 1])]:
        bad = Bitstream(bitstream.codec, {**bitstream.header, "media": {**bitstream.header["media"], field: value}},
                        bitstream.groups)
        path = tmp_path / f"{field}.nnc"
        path.write_bytes(encode_bitstream(bad))
        assert_one_line_error(cli_process("decode", path, "-o", tmp_path / "out.y4m"), "not a valid .nnc file")
    config = bitstream.header["model"]["config"]
    bad = Bitstream(bitstream.codec, {**bitstream.header, "model": {"config": {**config, "fc_dim": 10**6}}},
                    bitstream.groups)
    (tmp_path / "model.nnc").write_bytes(encode_bitstream(bad))
    assert_one_line_error(cli_process("decode", tmp_path / "model.nnc", "-o", tmp_path / "o.y4m"), "not a valid")


def test_bad_inputs_to_encode_give_one_line_errors(tmp_path):
    output = tmp_path / "out.nnc"
    assert_one_line_error(cli_process("encode", tmp_path / "missing.mp4", "-o", output))
    (tmp_path / "notes.mp4").write_text("this is not a video\n")
    assert_one_line_error(cli_process("encode", tmp_path / "notes.mp4", "-o", output))
    (tmp_path / "raw.yuv").write_bytes(bytes(128 * 64 * 3 // 2 * 2))
    assert_one_line_error(cli_process("encode", tmp_path / "raw.yuv", "-o", output),  # no --video-size/--pix-fmt
                          "needs --video-size WxH and --pix-fmt")
    assert_one_line_error(cli_process("encode", tmp_path / "raw.yuv", "-o", output, "--video-size", "128x64",
                                      "--pix-fmt", "nv12"))
    assert_one_line_error(cli_process("encode", tmp_path / "raw.yuv", "-o", output, "--params", "1.5Q"),
                          "--params '1.5Q': expected a parameter count")
    assert_one_line_error(cli_process("encode", tmp_path / "raw.yuv", "-o", output, "--size", "1.5Q"),  # deprecated
                          "(--video-size)", "(--params)")
    assert_one_line_error(cli_process("encode", tmp_path / "raw.yuv", "-o", output, "--model", "nope"), "unknown model")
    assert not output.exists()


@pytest.mark.parametrize("sizes", [["--video-size", "128x64", "--params", "60k"],
                                   ["--size", "128x64", "--size", "60k"]])  # the deprecated, hidden spelling
def test_encode_raw_yuv_with_video_size_and_pix_fmt(tmp_path, sizes):
    write_video(tmp_path / "clip.yuv", synthetic_video(num_frames=4))
    result = run("encode", tmp_path / "clip.yuv", "-o", tmp_path / "clip.nnc", *sizes,
                 "--pix-fmt", "yuv420p", "--fps", "30000/1001", "--epochs", "2", "--device", "cpu", "--force",
                 "--quiet")
    assert result.exit_code == 0, result.output
    header = read_bitstream_file(tmp_path / "clip.nnc").header
    media = header["media"]
    assert (media["width"], media["height"], media["num_frames"], media["fps"]) == (128, 64, 4, [30000, 1001])
    assert header["encoder"]["settings"]["size"] == 60000


def test_park_joy_short_encode_reaches_a_psnr_bound(tmp_path):
    clip = shared_media("video/park_joy_160x90_10f.y4m")
    output = tmp_path / "park_joy.nnc"
    result = run("encode", clip, "-o", output, "--params", "60k", "--epochs", "60", "--lr", "5e-3", "--device", "cpu",
                 "--quiet")
    assert result.exit_code == 0, result.output
    header = read_bitstream_file(output).header
    # park joy is dense texture; 60 epochs of a 60k model reach ~20 dB (flat grey: ~12 dB).
    assert header["encoder"]["psnr_rgb"] > 18.0
    assert header["media"]["width"] == 160 and header["media"]["height"] == 90


def test_encode_options_come_from_the_codecs_options_dataclasses(tmp_path):
    """Help texts and defaults are written once, in each codec's Options; a flag the chosen
    codec does not have is refused in one line before anything is read."""
    from nnc.codec.hnerv import HNeRVOptions
    from nnc.codec.nirvana import NIRVANAOptions
    from nnc.codec.registry import available_codecs

    text = run("encode", "--help").output
    assert f"Registered codec: {', '.join(available_codecs())}." in " ".join(text.split())
    flat = " ".join(text.split())
    assert f"(default {HNeRVOptions().embed_bits})" in flat and "--lambda" in flat and "--fso / --no-fso" in flat
    assert f"nirvana: Training steps per group (a chain's first group gets 2x) (default {NIRVANAOptions().epochs})" in flat
    missing = tmp_path / "missing.y4m"  # never read: the option check comes first
    for args, fragment in [(["--fso"], "--fso does not apply to --model hnerv"),
                           (["--model", "nirvana", "--embed-bits", "4"], "--embed-bits does not apply to --model nirvana"),
                           (["--model", "clc", "--params", "60k"], "--params does not apply to --model clc"),
                           (["--model", "clc", "--size", "60k"], "--params does not apply to --model clc"),
                           (["--model", "nerv", "--prune", "1.5"], "--prune must be in [0, 1)")]:
        result = run("encode", missing, "-o", tmp_path / "x.nnc", *args)
        assert result.exit_code == 1 and f"nnc: {fragment}" in result.output, result.output
    assert not (tmp_path / "x.nnc").exists()


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--seed", str(2**70)], "--seed must be between 0 and"),
    (["--seed", "-1"], "--seed must be between 0 and"),
    (["--checkpoint-interval", "nan"], "--checkpoint-interval must be a finite number"),
    (["--model", "clc", "--resume"], "--resume does not apply to --model clc"),
])
def test_bad_option_values_are_one_line_errors_before_anything_is_read(tmp_path, args, message):
    result = run("encode", tmp_path / "missing.y4m", "-o", tmp_path / "x.nnc", *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


# --- issue 13: CLI consistency with ffmpeg habits ----------------------------------------


def test_params_and_video_size_replace_size_with_one_line_refusals(workdir, tmp_path):
    """--params (model size) and --video-size (raw frame size) are two options; the old
    --size, which was both, is hidden but still works, and mixing it with them is refused."""
    text = " ".join(run("encode", "--help").output.split())
    assert "--params N Model size in parameters: 1.5M, 375k, 200000." in text
    assert "--video-size WxH Frame size of raw .yuv input, width first" in text
    assert "--size" not in text.replace("--video-size", "")  # hidden (and no advice names it)
    for command in ("append", "eval"):
        help_text = run(command, "--help").output
        assert "--video-size" in help_text and "--size" not in help_text.replace("--video-size", "")
    clip, out = workdir / "clip.y4m", tmp_path / "x.nnc"
    raw = tmp_path / "raw.yuv"
    raw.write_bytes(bytes(128 * 64 * 3 // 2))
    for args, fragment in [
        ([clip, "--params", "60k", "--size", "60k"], "--size is the old spelling of --params and --video-size"),
        ([raw, "--video-size", "128x64", "--size", "60k"], "give --video-size without --size"),
        ([clip, "--video-size", "128x64"], "--video-size applies to raw .yuv input only"),
        ([raw, "--video-size", "128by64"], "--video-size '128by64': expected WIDTHxHEIGHT"),
        ([raw, "--params", "0"], "the model size must be at least 1 parameter"),
        ([clip, "--params", "lots"], "--params 'lots': expected a parameter count like 1.5M"),
    ]:
        result = run("encode", *args, "-o", out)
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("nnc: ") and fragment in result.stderr, (
            result.stderr)
    result = run("append", tmp_path / "set.nnc", clip, "--size", "60k")
    assert result.exit_code == 1 and "--params does not apply" in result.stderr, result.stderr
    assert not out.exists()


def test_frames_has_one_parser_and_one_help_text_in_encode_and_decode():
    from nnc.errors import NncError
    from nnc.units import parse_frame_range

    assert [parse_frame_range(v) for v in ("7", "10:20", "10:", ":20", 7, (2, 5), (3, None), None)] == [
        (0, 7), (10, 20), (10, None), (0, 20), (0, 7), (2, 5), (3, None), None]
    for bad in ("0", "5:5", "5:3", "x", "-1", "1:2:3", (4, 2)):
        with pytest.raises(NncError, match="--frames"):
            parse_frame_range(bad)

    def frames_help(command):
        text = " ".join(run(command, "--help").output.split())
        return text[text.index("--frames N|START:STOP"):].split(" -", 1)[0]

    assert "N: the first N frames; START:STOP: frames START (inclusive) to STOP (exclusive)" in frames_help("encode")
    assert frames_help("encode") == frames_help("decode")


def test_encode_frames_range_reads_only_those_frames_and_json_is_all_of_stdout(workdir, tmp_path, monkeypatch):
    """`--frames 2:6` encodes source frames 2..5 (the reader skips 0 and 1); `--json` puts
    one object on stdout with what the summary says, the summary going to stderr."""
    import json

    from nnc.codec import files

    seen = []
    real_encode = files.encode_video
    monkeypatch.setattr(files, "encode_video", lambda video, *a, **k: seen.append(video) or real_encode(video, *a, **k))
    output = tmp_path / "range.nnc"
    result = run("encode", workdir / "clip.y4m", "-o", output, "--frames", "2:6", "--params", "60k", "--epochs", "1",
                 "--device", "cpu", "--force", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    source = read_video(workdir / "clip.y4m").frames
    assert np.array_equal(seen[0].frames, source[2:6])
    data = json.loads(result.stdout)  # nothing else on stdout
    header = read_bitstream_file(output).header
    assert data["output"] == str(output) and data["codec"] == "hnerv"
    assert data["bytes"] == output.stat().st_size and data["bpp"] == pytest.approx(data["bytes"] * 8 / (128 * 64 * 4))
    assert (data["frames"], data["width"], data["height"], data["fps"], data["pix_fmt"]) == (4, 128, 64, "25", "yuv420p")
    assert data["psnr_rgb"] == pytest.approx(header["encoder"]["psnr_rgb"], abs=1e-4) and data["seconds"] > 0
    assert data["parameters"] > 50_000 and data["settings"]["size"] == 60000
    assert result.stderr.startswith(f"wrote {output}: {data['bytes']} bytes") or f"wrote {output}" in result.stderr
    # N means the first N frames in encode as in decode
    seen.clear()
    result = run("encode", workdir / "clip.y4m", "-o", tmp_path / "first.nnc", "--frames", "3", "--params", "60k",
                 "--epochs", "1", "--device", "cpu", "--force", "--quiet", "--dry-run")
    assert result.exit_code == 0, result.output
    assert np.array_equal(seen[0].frames, source[:3])


def test_decode_json_and_its_refusal_with_stdout_output(workdir, tmp_path):
    import json

    output = tmp_path / "part.y4m"
    result = run("decode", workdir / "clip.nnc", "-o", output, "--frames", "1:4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("output", "frames", "width", "height", "pix_fmt", "bit_depth", "fps")} == {
        "output": str(output), "frames": 3, "width": 128, "height": 64, "pix_fmt": "yuv420p", "bit_depth": 8,
        "fps": "25"}
    assert data["seconds"] >= 0 and data["frames_per_second"] > 0
    assert read_video(output).info.num_frames == 3
    assert f"wrote {output}: 128x64, 3 frames, yuv420p" in result.stderr
    for command in (["decode", workdir / "clip.nnc"], ["encode", workdir / "clip.y4m"]):
        refused = cli_process(*command, "-o", "-", "--json")
        assert_one_line_error(refused, "--json prints to stdout, which -o - writes the output to")
        assert refused.returncode == 1 and refused.stdout == ""


def test_exit_codes_do_not_collide_with_clicks_usage_error(workdir, tmp_path):
    from nnc.errors import MediaError

    assert MediaError.exit_code == 5
    missing = cli_process("encode", tmp_path / "missing.y4m", "-o", tmp_path / "x.nnc")
    assert_one_line_error(missing, "input not found")
    assert missing.returncode == 5
    assert cli_process("encode", workdir / "clip.y4m", "--no-such-option").returncode == 2  # click's usage error
    (tmp_path / "bad.nnc").write_bytes(b"not nnc at all")
    assert cli_process("info", tmp_path / "bad.nnc").returncode == 3
    assert cli_process("encode", workdir / "clip.y4m", "-o", tmp_path / "x.nnc", "--lr", "nan").returncode == 1
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for row in ("| 2 |", "| 3 |", "| 4 |", "| 5 |", "| 70 |", "| 128+N |"):
        assert row in readme, row


def test_top_level_help_names_video_and_image_codecs():
    assert "neural video and image codecs" in " ".join(run("--help").output.split())


def test_stdin_y4m_encode_and_one_frame_counts(workdir, tmp_path, monkeypatch):
    """`nnc encode -` reads a Y4M stream from stdin; a one-frame clip is "1 frame" in every
    summary (decode, info, eval)."""
    import json

    from nnc.codec import files
    from nnc.units import plural

    assert (plural(1, "frame"), plural(2, "frame"), plural(1024, "frame"), plural(0, "video")) == (
        "1 frame", "2 frames", "1,024 frames", "0 videos")
    seen = []
    real_encode = files.encode_video
    monkeypatch.setattr(files, "encode_video", lambda video, *a, **k: seen.append(video) or real_encode(video, *a, **k))
    output = tmp_path / "one.nnc"
    result = CliRunner().invoke(main, ["encode", "-", "-o", str(output), "--frames", "3:4", "--params", "60k",
                                       "--epochs", "1", "--device", "cpu", "--force", "--json"],  # not --quiet: the input line
                                input=(workdir / "clip.y4m").read_bytes(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert np.array_equal(seen[0].frames, read_video(workdir / "clip.y4m").frames[3:4])
    assert json.loads(result.stdout)["frames"] == 1 and "stdin: 128x64, 1 frame @ 25.000 fps" in result.stderr
    decoded = run("decode", output, "-o", tmp_path / "one.y4m")
    assert decoded.exit_code == 0 and ": 128x64, 1 frame, yuv420p" in decoded.output, decoded.output
    assert "  media: 128x64, 1 frame @ 25/1 fps" in run("info", output).output
    assert "clip.y4m: 1 frame 128x64" in run("eval", workdir / "clip.y4m", workdir / "clip.y4m", "--frames", "1").output
    # Streams that are not Y4M, and an empty stdin, are one-line media errors.
    for data, fragment in [(b"RIFF....WAVEfmt ", "stdin is not a Y4M stream"), (b"", "stdin is empty")]:
        refused = subprocess.run([sys.executable, "-m", "nnc.cli.main", "encode", "-", "-o", str(tmp_path / "s.nnc")],
                                 input=data, capture_output=True, timeout=120)
        assert refused.returncode == 5 and refused.stderr.decode().count("\n") == 1, refused.stderr
        assert refused.stderr.decode().startswith(f"nnc: {fragment}"), refused.stderr
    assert not (tmp_path / "s.nnc").exists()


def test_sample_writes_a_clip_that_encodes_without_any_other_file(tmp_path):
    """The quickstart's first step: a synthetic clip made from numbers alone."""
    from nnc.media.sample import sample_video
    from nnc.metrics import mean_psnr, psnr_per_frame

    clip = tmp_path / "clip.y4m"
    result = run("sample", str(clip), "--frames", "6", "--video-size", "96x48")
    assert result.exit_code == 0, result.output
    video = read_video(clip)
    assert video.frames.shape == (6, 48, 96, 3) and video.info.pix_fmt == "yuv420p"
    assert (video.info.color_matrix, video.info.color_range) == ("bt601", "tv")
    expected = sample_video(6, 96, 48).frames  # the Y4M holds it through 4:2:0, nothing more
    assert mean_psnr(psnr_per_frame(expected, video.frames, 255)) > 30
    assert not np.array_equal(video.frames[0], video.frames[-1])  # it moves
    encoded = tmp_path / "clip.nnc"
    result = run("encode", str(clip), "-o", str(encoded), "--params", "60k", "--epochs", "2", "--force", "--quiet")
    assert result.exit_code == 0, result.output
    assert read_bitstream_file(encoded).header["media"]["num_frames"] == 6


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "1 to 10000 frames"),
    (["--video-size", "127x64"], "sides are even"),
    (["--video-size", "big"], "--video-size"),
    (["--fps", "fast"], "fps"),
])
def test_sample_refuses_bad_values_in_one_line(tmp_path, args, message):
    result = run("sample", str(tmp_path / "clip.y4m"), *args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "clip.y4m").exists()
