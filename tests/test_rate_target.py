"""Rate targets (--bpp, --bitrate) and presets (--preset) of the video codecs."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from nnc.bitstream import TensorGroup, encode_bitstream, Bitstream, quantize_lowest_cost_axis, read_bitstream_file
from nnc.cli.main import main
from nnc.codec.files import decode_to_frames, make_options
from nnc.codec.rate_target import (FULL_BITS, RateTargetSource, choose_model_size, land_on_target, parse_bitrate,
                                   requantize_tensor)
from nnc.codec.video_api import encode_video
from nnc.errors import NncError
from nnc.media import write_video
from nnc.metrics import mean_psnr, psnr_per_frame

from synthetic import synthetic_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(epochs=4, device="cpu", show_progress=False, checkpoint_interval=0)
PIXELS = 8 * 64 * 128  # synthetic_video()


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.y4m"
    write_video(path, synthetic_video())
    return path


def one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnc: "), result.stderr
    return lines[0]


# -- landing on the target -------------------------------------------------------------


def test_bpp_lands_at_or_just_under_the_target_measured_on_the_file(clip, tmp_path):
    output = tmp_path / "clip.nnc"
    result = cli("encode", clip, "-o", output, "--bpp", "4", "--rate-mode", "search", "--epochs", "4", "--lr", "5e-3",
                 "--device", "cpu", "--quiet", "--checkpoint-interval", "0")
    assert result.exit_code == 0, result.output
    target = 4 * PIXELS
    landed = output.stat().st_size * 8
    assert 0.9 * target <= landed <= target, (landed, target)
    settings = read_bitstream_file(output).header["encoder"]["settings"]
    assert settings["bpp"] == 4 and settings["rate_target"]["target_bits"] == target  # recorded in the header
    assert settings["rate_mode"] == "search" and settings.get("rate_lambda") is None
    assert 4 <= settings["rate_target"]["weight_bits"] <= 16
    decoded = decode_to_frames(output)
    assert decoded.frames.shape == synthetic_video().frames.shape
    assert mean_psnr(psnr_per_frame(synthetic_video().frames, decoded.frames, 255)) > 10


def test_bitrate_is_bits_per_second_of_the_clip(tmp_path):
    video = synthetic_video()  # 8 frames at 25 fps: 0.32 s
    options = make_options("nerv", bitrate="800k", rate_mode="search", finetune_epochs=1, **FAST)
    assert options.bitrate == 800_000
    report = encode_video(video, tmp_path / "clip.nnc", "nerv", options)
    target = 800_000 * 8 / 25
    landed = (tmp_path / "clip.nnc").stat().st_size * 8
    assert report.file_bytes * 8 == landed and 0.9 * target <= landed <= target, (landed, target)
    assert report.header["encoder"]["settings"]["bitrate"] == 800_000


def test_the_search_lands_within_a_percent_without_training():
    rng = np.random.default_rng(0)
    tensors = [quantize_lowest_cost_axis(rng.normal(0, 0.05, shape).astype(np.float32), FULL_BITS, name=f"t{i}")
               for i, shape in enumerate([(64, 32, 3, 3), (64,), (32, 16)])]
    groups = [TensorGroup("weights", tensors)]

    def file_bits(candidate, record):
        return 8 * len(encode_bitstream(Bitstream("hnerv", {"encoder": record}, candidate)))

    at_eight = file_bits([TensorGroup("weights", [requantize_tensor(t, 8) for t in tensors])], {})
    target = 0.8 * at_eight
    landing = land_on_target(RateTargetSource(target, 10_000, groups, "--bpp 1", "hnerv"), file_bits)
    assert 0.99 * target <= landing.file_bits <= target
    assert 4 < landing.precision < 8 and landing.evaluations <= 8
    with pytest.raises(NncError, match="even at 4-bit weights"):
        land_on_target(RateTargetSource(at_eight / 10, 10_000, groups, "--bpp 1", "hnerv"), file_bits)


def test_a_whole_precision_is_the_codecs_own_minmax_quantizer():
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, (16, 40)).astype(np.float32)
    full = quantize_lowest_cost_axis(values, FULL_BITS)
    eight = requantize_tensor(full, 8)
    reference = quantize_lowest_cost_axis(full.dequantize(), 8)
    assert eight.scheme == "minmax" and eight.bits == 8 and eight.axis == full.axis
    if reference.axis == full.axis:
        assert np.mean(eight.symbols == reference.symbols) > 0.99
    fractional = requantize_tensor(full, 6.5)
    assert fractional.bits == 7 and fractional.symbols.max() <= round(2**6.5 - 1)
    error = lambda t: float(np.mean((t.dequantize() - values) ** 2))  # noqa: E731
    assert error(eight) < error(fractional) < error(requantize_tensor(full, 6))


# -- refusals ------------------------------------------------------------------------------


def test_conflicting_targets_are_one_line_errors(clip, tmp_path):
    output = tmp_path / "x.nnc"
    assert "give --bpp or --bitrate, not both" in one_line_error(
        cli("encode", clip, "-o", output, "--bpp", "1", "--bitrate", "800k"))
    search = ("--rate-mode", "search")  # rate-trained targets take a size (tests/test_rate_control.py)
    assert "give --bpp or --params, not both" in one_line_error(cli("encode", clip, "-o", output, "--bpp", "1",
                                                                    "--params", "60k", *search))
    assert "give --bpp or --params, not both" in one_line_error(cli("encode", clip, "-o", output, "--bpp", "1",
                                                                    "--size", "60k", *search))  # the deprecated spelling
    assert "give --bitrate or --hinerv-config" in one_line_error(
        cli("encode", clip, "-o", output, "--model", "hinerv", "--bitrate", "1M", "--hinerv-config", "xxs", *search))
    assert "drop --lambda" in one_line_error(cli("encode", clip, "-o", output, "--bpp", "1", "--lambda", "0.01",
                                                 *search))
    assert "--bitrate 'fast'" in one_line_error(cli("encode", clip, "-o", output, "--bitrate", "fast"))
    assert "--bpp must be greater than 0" in one_line_error(cli("encode", clip, "-o", output, "--bpp", "0"))
    assert parse_bitrate("1.5M") == 1.5e6 and parse_bitrate("800kbps") == 8e5 and parse_bitrate(2000) == 2000
    assert not output.exists()


def test_a_target_below_the_smallest_network_says_what_it_reaches(clip, tmp_path):
    message = one_line_error(cli("encode", clip, "-o", tmp_path / "x.nnc", "--bpp", "0.05", "--rate-mode", "search",
                                 "--epochs", "1", "--quiet"))
    assert "below what the smallest hnerv for this clip reaches: about" in message and "bpp" in message
    reachable = float(message.split("reaches: about ")[1].split(" bpp")[0])
    assert 2 < reachable < 6  # ~50k parameters at 4 bits over 65,536 pixels
    # rate-trained (the default) reaches lower; a target below ~0.2 bits a value is still refused
    message = one_line_error(cli("encode", clip, "-o", tmp_path / "x.nnc", "--bpp", "0.05", "--epochs", "1", "--quiet"))
    assert "below what the smallest hnerv for this clip reaches: about" in message and "rate-trained" in message
    assert 0.05 < float(message.split("reaches: about ")[1].split(" bpp")[0]) < reachable
    assert not (tmp_path / "x.nnc").exists()


@pytest.mark.parametrize("model", ["nirvana", "pfnr", "clc"])
def test_codecs_that_cannot_honour_a_target_say_so(clip, tmp_path, model):
    for flag, value in (("--bpp", "0.1"), ("--bitrate", "800k"), ("--preset", "fast")):
        message = one_line_error(cli("encode", clip, "-o", tmp_path / "x.nnc", "--model", model, flag, value))
        assert f"{flag} does not apply to --model {model}" in message


# -- presets -------------------------------------------------------------------------------


def test_presets_fill_in_what_was_not_given_and_explicit_options_win():
    assert make_options("hnerv").epochs == 300 and make_options("hnerv").preset is None  # default unchanged
    assert make_options("nerv").finetune_epochs == 100
    assert make_options("hnerv", preset="fast").epochs == 50
    fast_nerv = make_options("nervpp", preset="fast")
    assert (fast_nerv.epochs, fast_nerv.finetune_epochs) == (50, 10)
    slow_hinerv = make_options("hinerv", preset="slow")
    assert slow_hinerv.epochs == 600 and slow_hinerv.finetune_epochs is None  # stays 20% of the epochs
    # Explicit values win, also when they equal the codec's default.
    explicit = make_options("nerv", preset="fast", epochs=300, finetune_epochs=100)
    assert (explicit.epochs, explicit.finetune_epochs) == (300, 100)
    assert make_options("hnerv", preset="medium").settings()["preset"] == "medium"  # recorded in the header
    assert not {"bpp", "bitrate", "preset"} & set(make_options("hnerv").settings())  # default header unchanged


def test_a_preset_sets_the_size_target_unless_size_or_rate_is_given():
    frames = SimpleNamespace(shape=(100, 180, 320, 3))  # 5.76M pixels: the sizes are not clamped
    video = SimpleNamespace(frames=frames, info=SimpleNamespace(fps=Fraction(25)))

    def size(**settings):
        return choose_model_size(dict(weight_bits=8, **settings), video, lambda value: None, 8, "hnerv")

    assert size() == size(preset="medium") == 72_000  # 0.1 bpp at 8 bits a parameter: the default
    assert size(preset="fast") == 36_000 and size(preset="slow") == 72_000
    assert size(preset="fast", bpp=0.2) == pytest.approx((0.2 * 5.76e6 - 12_000) / 6.4, rel=1e-3)


def test_a_preset_shows_in_the_plan(clip, tmp_path):
    result = cli("encode", clip, "-o", tmp_path / "x.nnc", "--preset", "fast", "--device", "cpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "epochs train 50 " in result.stdout
    overridden = cli("encode", clip, "-o", tmp_path / "x.nnc", "--preset", "fast", "--epochs", "7", "--device",
                     "cpu", "--dry-run")
    assert overridden.exit_code == 0 and "epochs train 7 " in overridden.stdout
