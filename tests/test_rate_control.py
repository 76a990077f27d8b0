"""Rate targets for rate-trained codecs (``--bpp``/``--bitrate``, by default or with ``--lambda``): lambda
adapted in training (nnc.codec.rate_control), the landing on a multiplier of the learned
steps (nnc.codec.rate_target.land_on_steps), the options, and round trips."""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nnc.bitstream import Bitstream, TensorGroup, encode_bitstream, read_bitstream_file
from nnc.cli.main import main
from nnc.codec.checkpoint import state_from_bytes
from nnc.codec.files import decode_to_frames, make_options
from nnc.codec.rate_control import RateControl, update_interval
from nnc.codec.rate_distortion import RateDistortion, StepQuantizer, channel_axis
from nnc.codec.rate_target import (DEFAULT_TARGET_LAMBDA, MAX_STEP_LEVEL, OVERHEAD_BYTES, RATE_TRAINED_BITS_PER_VALUE,
                                   RateTargetSource, choose_model_size, coarsen_tensor, land_on_target, step_multiplier)
from nnc.codec.training_hooks import RateTerm, TrainingRun
from nnc.codec.video_api import encode_video
from nnc.errors import NncError
from nnc.media import write_video
from nnc.metrics import compare

from synthetic import synthetic_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = dict(device="cpu", show_progress=False, checkpoint_interval=0, force=True)


@pytest.fixture(scope="module")
def clip():
    return synthetic_video(num_frames=4, height=32, width=64)


def file_bpp(report) -> float:
    return report.path.stat().st_size * 8 / (report.header["media"]["num_frames"] * report.header["media"]["width"]
                                              * report.header["media"]["height"])


def check_round_trip(report, video):
    """Every tensor in the step scheme, and the decoded frames are those the encoder measured."""
    bitstream = read_bitstream_file(report.path)
    assert all(t.scheme == "step" for group in bitstream.groups for t in group.tensors)
    decoded = decode_to_frames(report.path, device="cpu").frames
    assert compare(video.frames, decoded, video.max_value)["psnr-rgb"] == pytest.approx(report.psnr, abs=1e-6)
    return bitstream


# -- HNeRV end to end --------------------------------------------------------------------


def test_hnerv_lambda_with_bpp_lands_under_the_target(clip, tmp_path):
    # the size follows from the target (RATE_TRAINED_BITS_PER_VALUE): here the smallest
    # network of the clip; 80 steps from lambda 1e-4
    options = make_options("hnerv", bpp=20, rate_lambda=1e-4, epochs=40, lr=5e-3, **QUIET)
    report = encode_video(clip, tmp_path / "clip.nnc", "hnerv", options)
    landed = file_bpp(report)
    assert 0.8 * 20 <= landed <= 20 and report.bpp == pytest.approx(landed)
    check_round_trip(report, clip)
    control, target = report.stats["rate_control"], report.stats["rate_target"]
    assert control["lambda_start"] == 1e-4 and control["lambda_final"] != 1e-4 and control["updates"] >= 10
    assert control["estimated_bpp"] > 0 and target["file_bpp"] == pytest.approx(landed)
    assert target["step_multiplier"] >= 1.0 and target["file_bits"] == report.file_bytes * 8
    settings = read_bitstream_file(report.path).header["encoder"]["settings"]
    assert settings["bpp"] == 20 and settings["rate_lambda"] == 1e-4  # the starting lambda
    assert settings["rate_control"]["lambda_final"] == pytest.approx(control["lambda_final"], rel=1e-3)
    assert len(settings["rate_control"]["lambda_trajectory"]) == 8
    assert settings["rate_target"]["step_multiplier"] == target["step_multiplier"]


def test_a_file_that_fits_after_training_holds_exactly_the_trained_symbols(clip, tmp_path):
    original, trained = RateDistortion.quantized_parameters, {}

    def capture(rate):
        tensors = original(rate)
        trained.update(tensors)
        return tensors

    # a generous target at a given size: training ends far under it, lambda falls
    options = make_options("hnerv", bpp=400, size=6e4, rate_lambda=1e-3, epochs=6, lr=5e-3, **QUIET)
    with mock.patch.object(RateDistortion, "quantized_parameters", autospec=True, side_effect=capture):
        report = encode_video(clip, tmp_path / "clip.nnc", "hnerv", options)
    assert report.stats["rate_target"]["step_multiplier"] == 1.0 and report.stats["rate_target"]["evaluations"] == 1
    assert report.stats["rate_control"]["lambda_final"] < 1e-3
    weights = read_bitstream_file(report.path).groups[0].tensors
    assert weights and all(tensor == trained[tensor.name] for tensor in weights)


def test_interrupted_encode_resumes_with_the_adapted_lambda(clip, tmp_path):
    from nnc.codec import training

    values = dict(QUIET, bpp=20, rate_lambda=1e-4, epochs=8, lr=5e-3)
    reference = encode_video(clip, tmp_path / "reference.nnc", "hnerv", make_options("hnerv", **values))
    assert reference.stats["rate_control"]["updates"] == 3  # 16 steps: lambda moved before the interruption
    original, calls = training.reconstruction_loss, []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return original(*args)

    output = tmp_path / "clip.nnc"
    options = make_options("hnerv", **dict(values, checkpoint_interval=1e-9))
    with mock.patch.object(training, "reconstruction_loss", interrupt), pytest.raises(KeyboardInterrupt):
        encode_video(clip, output, "hnerv", options)
    saved = state_from_bytes((tmp_path / "clip.nnc.ckpt").read_bytes())["hooks"]
    assert any(state.get("rate_lambda", 1e-4) != 1e-4 for state in saved)  # the adapted lambda is in it
    encode_video(clip, output, "hnerv", make_options("hnerv", **dict(values, checkpoint_interval=1e-9, resume=True)))
    assert output.read_bytes() == reference.path.read_bytes()


# -- the other rate-trained codecs ---------------------------------------------------------


def test_nerv_round_trip_with_lambda_and_bitrate(clip, tmp_path):
    bitrate = 30 * 4 * 32 * 64 * 25 / 4  # 30 bpp at 25 fps
    options = make_options("nerv", bitrate=bitrate, size=8e4, rate_lambda=1e-4, epochs=12, finetune_epochs=3,
                           lr=5e-3, **QUIET)
    report = encode_video(clip, tmp_path / "nerv.nnc", "nerv", options)
    assert 0.8 * 30 <= file_bpp(report) <= 30
    check_round_trip(report, clip)
    assert report.stats["rate_control"]["updates"] >= 5  # across both phases
    assert read_bitstream_file(report.path).header["encoder"]["settings"]["bitrate"] == bitrate


def test_hinerv_round_trip_with_lambda_and_bpp(tmp_path):
    video = synthetic_video(num_frames=2, height=64, width=128)
    options = make_options("hinerv", bpp=14, size=4e4, rate_lambda=1e-4, epochs=10, batch_size=1, lr=1e-2,
                           loss="l2", **QUIET)
    report = encode_video(video, tmp_path / "hinerv.nnc", "hinerv", options)
    assert 0.8 * 14 <= file_bpp(report) <= 14
    check_round_trip(report, video)
    assert report.stats["rate_control"]["lambda_final"] > 0


# -- the controller alone ----------------------------------------------------------------------


def control_for(rate_lambda: float, aim_bits: float = 10_000.0, side_bits: float = 1_000.0):
    term = RateTerm(lambda step: None, rate_lambda, pixels=1_000)
    return term, RateControl(term, aim_bits / 0.97, side_bits)


def run_steps(control: RateControl, term: RateTerm, bits_of, steps: int, lag: float = 0.0) -> list[float]:
    """Train ``steps`` steps against a synthetic file size ``bits_of(lambda)``, which the
    bits approach by 1/``lag`` of the way a step (0: at once); the lambdas after each update."""
    run, current, lambdas = TrainingRun("train", steps), None, []
    for index in range(1, steps + 1):
        wanted = bits_of(term.rate_lambda)
        current = wanted if current is None or lag == 0 else current + (wanted - current) / lag
        term.last_bits = torch.tensor(current - control.side_bits)
        before = len(control.trajectory)
        control.after_step(SimpleNamespace(run=run))
        run.step = index  # as the loop: counted after the hooks' after_step
        if len(control.trajectory) > before:
            lambdas.append(term.rate_lambda)
    control.finish(run)
    return lambdas


def test_lambda_rises_above_the_aim_and_falls_below_it():
    for bits, direction in ((20_000.0, 1), (5_000.0, -1)):
        term, control = control_for(1e-3)
        lambdas = run_steps(control, term, lambda rate_lambda: bits, 10)  # constant bits: no trend
        assert len(lambdas) == 2 and all(math.copysign(1, value - 1e-3) == direction for value in lambdas)
        assert direction * (lambdas[1] - lambdas[0]) > 0


@pytest.mark.parametrize("lag", [20, 50, 100])
@pytest.mark.parametrize("start", [1e-4, 1e-2])
def test_lambda_converges_without_oscillating(lag, start):
    """File bits falling as lambda**-0.3 (what rate-trained HNeRV measured), reached with a
    lag of ``lag`` steps, lambda starting 10x off: the bits end within 2% of the aim,
    crossing it at most once, and lambda never turns back by more than 10%."""
    term, control = control_for(start)
    bits_of = lambda rate_lambda: 10_000.0 * (rate_lambda / 1e-3) ** -0.3  # noqa: E731 - the aim at 1e-3
    lambdas = np.log(run_steps(control, term, bits_of, 2_000, lag))
    assert len(lambdas) == 50 and control.stats()["updates"] == 50
    assert bits_of(term.rate_lambda) == pytest.approx(control.aim_bits, rel=0.02)
    direction = np.sign(lambdas[-1] - lambdas[0])
    assert direction == (1 if start < 1e-3 else -1)
    turned_back = max(direction * (lambdas[i] - lambdas[j]) for i in range(50) for j in range(i, 50))
    assert turned_back < math.log(1.1)
    errors = [math.log(point[2] / control.aim_bits) for point in control.trajectory]
    assert sum(1 for a, b in zip(errors, errors[1:]) if a * b < 0) <= 1
    assert control.stats()["lambda_final"] == term.rate_lambda


def test_state_dict_round_trip_continues_the_same_lambdas():
    bits_of = lambda rate_lambda: 30_000.0 * (rate_lambda / 1e-3) ** -0.3  # noqa: E731
    term, control = control_for(1e-3)
    run_steps(control, term, bits_of, 100, lag=5)
    state = control.state_dict()
    assert state["rate_lambda"] == term.rate_lambda != 1e-3
    resumed_term, resumed = control_for(1e-3)
    resumed.load_state_dict(state)
    assert resumed_term.rate_lambda == term.rate_lambda and resumed.trajectory == control.trajectory
    assert run_steps(resumed, resumed_term, bits_of, 100, lag=5) == run_steps(control, term, bits_of, 100, lag=5)
    assert resumed.trajectory == control.trajectory and resumed.steps_done == 200
    assert update_interval(100) == 5 and update_interval(10_000) == 200


# -- the landing on a step multiplier ---------------------------------------------------------


def trained_tensors(seed: int = 0):
    """Step-scheme tensors as a rate-trained codec writes them (learned steps moved off their
    start, a pruned quarter of a weight at zero), and their float values."""
    rng = np.random.default_rng(seed)
    tensors, values = [], {}
    for index, shape in enumerate([(32, 16, 3, 3), (32,), (24, 80)]):
        value = torch.from_numpy(rng.normal(0, 0.05, shape).astype(np.float32))
        if index == 0:
            value[: 8] = 0.0
        quantizer = StepQuantizer(value, 8, channel_axis(shape, 0)).eval()
        with torch.no_grad():
            quantizer.log_step.add_(torch.linspace(-0.5, 1.5, quantizer.log_step.numel()))
        name = f"t{index}"
        tensors.append(quantizer.quantize(value, name))
        values[name] = value.numpy()
    return [TensorGroup("weights", tensors)], values


def file_bits_of(groups, record):
    return 8 * len(encode_bitstream(Bitstream("hnerv", {"encoder": record}, groups)))


def test_multiplier_one_gives_exactly_the_trained_symbols():
    groups, values = trained_tensors()
    for tensor in groups[0].tensors:
        assert coarsen_tensor(tensor, values[tensor.name], 1.0) == tensor  # symbols and steps, bit for bit
        coarser = coarsen_tensor(tensor, values[tensor.name], step_multiplier(32))
        assert np.array_equal(coarser.scale, (tensor.scale * np.float32(2.0)).astype(np.float32))
        assert coarser.scheme == "step" and np.abs(coarser.symbols).max() < np.abs(tensor.symbols).max()
    pruned = coarsen_tensor(groups[0].tensors[0], values["t0"], step_multiplier(MAX_STEP_LEVEL))
    assert not pruned.symbols[:8].any()  # pruned weights stay zero


def test_a_tight_target_coarsens_the_steps_and_the_file_fits():
    groups, values = trained_tensors()
    trained = file_bits_of(groups, {"target_bits": 0, "step_multiplier": 1.0})
    loose = land_on_target(RateTargetSource(2 * trained, 10_000, groups, "--bpp 1", "hnerv", values), file_bits_of)
    assert loose.step_multiplier == 1.0 and loose.groups is groups and loose.evaluations == 1
    assert loose.precision is None and loose.record["step_multiplier"] == 1.0

    target = 0.7 * trained
    landing = land_on_target(RateTargetSource(target, 10_000, groups, "--bpp 1", "hnerv", values), file_bits_of)
    assert landing.step_multiplier > 1 and landing.file_bits <= target and landing.evaluations <= 10
    assert landing.file_bits == file_bits_of(landing.groups, landing.record)
    # the next finer multiplier would not fit: the smallest multiplier that does
    finer = round(math.log2(landing.step_multiplier) * 32) - 1
    finer_groups = [TensorGroup("weights", [coarsen_tensor(t, values[t.name], step_multiplier(finer))
                                            for t in groups[0].tensors])]
    assert file_bits_of(finer_groups, dict(landing.record, step_multiplier=round(step_multiplier(finer), 6))) > target
    for tensor in landing.groups[0].tensors:  # still what today's decoder reads: symbols x step
        assert tensor.scheme == "step" and np.all(tensor.offset == 0)
    with pytest.raises(NncError, match="even with its steps 16x coarser"):
        land_on_target(RateTargetSource(trained / 50, 10_000, groups, "--bpp 1", "hnerv", values), file_bits_of)


# -- options and sizing ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["hnerv", "hinerv", "nerv", "nervpp"])
def test_a_target_with_lambda_is_accepted_and_may_come_with_a_size(model):
    for target in (dict(bpp=0.05), dict(bitrate="800k")):
        options = make_options(model, rate_lambda=1e-2, **target)
        assert options.settings()["rate_lambda"] == 1e-2
        assert make_options(model, rate_lambda=1e-2, size=2e5, **target).size == 2e5
    with pytest.raises(NncError, match="give --bpp or --bitrate, not both"):
        make_options(model, rate_lambda=1e-2, bpp=0.05, bitrate="800k")
    with pytest.raises(NncError, match="--bpp with --lambda adapts lambda from its starting value"):
        make_options(model, rate_lambda=0.0, bpp=0.05)
    with pytest.raises(NncError, match="give --bpp or --params, not both"):  # the search sizes the network
        make_options(model, bpp=0.05, size=2e5, rate_mode="search")


@pytest.mark.parametrize("model", ["hnerv", "hinerv", "nerv", "nervpp"])
def test_a_target_trains_for_rate_by_default_and_the_search_is_a_mode(model):
    for target in (dict(bpp=0.05), dict(bitrate="800k")):
        trained = make_options(model, **target)
        assert trained.rate_lambda is None  # the options keep what was given; the settings resolve it
        # lambda's start, recorded in the header
        assert trained.settings()["rate_lambda"] == DEFAULT_TARGET_LAMBDA == 0.01
        assert "rate_mode" not in trained.settings()
        assert make_options(model, size=2e5, **target).size == 2e5  # lambda sets the rate: a size may be given
        searched = make_options(model, rate_mode="search", **target)
        assert searched.rate_lambda is None and searched.settings()["rate_mode"] == "search"
        with pytest.raises(NncError, match="--rate-mode search trains without a rate term: drop --lambda"):
            make_options(model, rate_mode="search", rate_lambda=1e-3, **target)
    assert make_options(model).rate_lambda is None  # no target: the published recipe, as before
    with pytest.raises(NncError, match="--rate-mode says how --bpp or --bitrate land: give one of them"):
        make_options(model, rate_mode="train")


@pytest.mark.parametrize("model", ["nirvana", "pfnr"])
def test_codecs_without_a_rate_target_still_refuse_bpp(tmp_path, model):
    write_video(tmp_path / "clip.y4m", synthetic_video(num_frames=2, height=32, width=64))
    result = CliRunner().invoke(main, ["encode", str(tmp_path / "clip.y4m"), "-o", str(tmp_path / "x.nnc"), "--model",
                                       model, "--bpp", "0.1", "--lambda", "1e-3"])
    assert result.exit_code != 0 and f"--bpp does not apply to --model {model}" in result.output


def test_rate_trained_sizes_count_entropy_coded_bits_a_value():
    frames = SimpleNamespace(shape=(100, 180, 320, 3))  # 5.76M pixels: the sizes are not clamped
    video = SimpleNamespace(frames=frames, info=SimpleNamespace(fps=Fraction(25)))

    def size(model, **settings):
        return choose_model_size(dict(weight_bits=8, **settings), video, lambda value: None, 8, model)

    coded = 0.2 * 5.76e6 - 8 * OVERHEAD_BYTES
    assert size("hnerv", bpp=0.2, rate_lambda=1e-3) == pytest.approx(coded / 3.8, rel=1e-3)
    assert size("hinerv", bpp=0.2, rate_lambda=1e-3) == pytest.approx(coded / RATE_TRAINED_BITS_PER_VALUE["hinerv"],
                                                                      rel=1e-3)
    assert size("hnerv", bpp=0.2) == pytest.approx(coded / 6.4, rel=1e-3)  # min-max: as before
    with pytest.raises(NncError, match="at about 0.2 bits each, rate-trained[)]; raise the target"):
        choose_model_size(dict(weight_bits=8, bpp=1e-4, rate_lambda=1e-3), video,
                          lambda value: (_ for _ in ()).throw(ValueError("too small")) if value < 5e4 else None,
                          8, "hnerv")
