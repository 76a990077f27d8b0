"""CLC's variable-rate model (gain units): every quality round-trips exactly, fractional
qualities sit between the trained ones, headers that name another quality range or
other weights are refused, files of an earlier weights generation (a subfolder) keep
decoding, and ``nnc train clc --lambdas`` resumes to exactly the state of an
uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from nnc.bitstream import Bitstream, decode_bitstream, encode_bitstream, read_bitstream_file
from nnc.cli.main import main
from nnc.codec import clc as clc_codec
from nnc.codec import clc_training
from nnc.codec.clc import CLCOptions
from nnc.codec.clc_weights import file_sha256, load_weights, save_dictionary, save_weights
from nnc.codec.files import decode_image
from nnc.codec.image_api import encode_image
from nnc.codec.video_api import decode_frames
from nnc.errors import InvalidBitstreamError, NncError
from nnc.media import write_video
from nnc.models.clc import CLCConfig, CLCModel
from nnc.models.clc_dictionary import build_dictionary

from synthetic import synthetic_frames, synthetic_video
from test_clc import TINY, make_bundle, photos, tiny_model

LAMBDAS = [0.002, 0.01, 0.05]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_variable_rate_model(seed: int) -> CLCModel:
    return tiny_model(seed, rate_lambdas=LAMBDAS)


def make_variable_rate_bundle(directory, seed: int = 0):
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(tiny_variable_rate_model(seed), directory / "clc.safetensors", {"lambdas": LAMBDAS})
    model, _ = load_weights(directory / "clc.safetensors")
    save_dictionary(build_dictionary(model, photos(4), entries=4, crop=64, pca_dim=4, seed=0,
                                     weights_sha256=file_sha256(directory / "clc.safetensors")),
                    directory / "dictionary.safetensors")
    return directory


@pytest.fixture(scope="module")
def variable_bundle(tmp_path_factory):
    return make_variable_rate_bundle(tmp_path_factory.mktemp("clc-vr") / "weights")


@pytest.fixture
def use_variable_bundle(variable_bundle, monkeypatch):
    monkeypatch.setenv(clc_codec.WEIGHTS_ENV, str(variable_bundle))
    return variable_bundle


def test_gains_interpolate_between_the_trained_rate_points():
    model = tiny_variable_rate_model(0)
    gain_1, _ = model.gains(1.0)
    gain_2, _ = model.gains(2.0)
    gain_15, inverse_15 = model.gains(1.5)
    assert torch.allclose(gain_15, (gain_1 * gain_2).sqrt(), rtol=1e-5)  # log-linear
    assert gain_2.mean() > gain_1.mean()  # a larger lambda: a finer quantiser
    for bad in (0.5, 3.01, float("nan")):
        with pytest.raises(ValueError, match="within"):
            model.gains(bad)
    with pytest.raises(ValueError, match="needs a quality"):
        model(torch.rand(1, 3, 64, 64), model.reference_latents(torch.rand(1, 3, 3, 64, 64)))


def test_every_quality_round_trips_and_rate_rises_with_quality(use_variable_bundle, tmp_path):
    image = synthetic_frames(1, 70, 90, seed=3)[0]  # padded to 128x128 and cropped back
    bundle = clc_codec.CLCBundle(use_variable_bundle)
    assert bundle.variable_rate and bundle.qualities == [1, 2, 3]
    sizes = []
    for quality in (1, 1.5, 2, 2.75, 3):
        path = tmp_path / f"q{quality}.nnc"
        report = encode_image(image, path, "clc", CLCOptions(quality=quality, show_progress=False))
        model_header = read_bitstream_file(path).header["model"]
        assert model_header["quality"] == quality and model_header["config"]["rate_lambdas"] == LAMBDAS
        assert model_header["weights"] == file_sha256(use_variable_bundle / "clc.safetensors")[:16]
        decoded = decode_image(path)
        # The decoder recovers the encoder's latent exactly and hence its reconstruction.
        coded = clc_codec.encode_image_tensor(bundle, float(quality),
                                              torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        [entry] = model_header["frames"]
        stream = read_bitstream_file(path).groups[0].raw_bytes[0].data
        x_hat, y_hat = clc_codec.decode_image_tensor(bundle, model_header, entry, stream, 70, 90)
        assert torch.equal(y_hat, coded.y_hat)
        assert np.array_equal(decoded, x_hat.clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy())
        assert report.file_bytes == path.stat().st_size
        sizes.append(report.file_bytes)
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_default_quality_is_the_rate_point_nearest_the_default_lambda(use_variable_bundle, tmp_path):
    encode_image(synthetic_frames(1, 64, 64)[0], tmp_path / "a.nnc", "clc", CLCOptions(show_progress=False))
    expected = 1 + int(np.argmin([abs(np.log(value / clc_codec.DEFAULT_LAMBDA)) for value in LAMBDAS]))
    assert read_bitstream_file(tmp_path / "a.nnc").header["model"]["quality"] == expected


def test_unavailable_and_tampered_qualities_are_refused(use_variable_bundle, tmp_path):
    with pytest.raises(NncError, match="quality 3.5 is not available: these weights code any quality from 1 to 3"):
        encode_image(synthetic_frames(1, 64, 64)[0], tmp_path / "x.nnc", "clc", CLCOptions(quality=3.5))
    assert not (tmp_path / "x.nnc").exists()
    Image.fromarray(synthetic_frames(1, 64, 64)[0]).save(tmp_path / "x.png")
    result = CliRunner().invoke(main, ["encode", str(tmp_path / "x.png"), "--model", "clc", "--quality", "0.5",
                                       "-o", str(tmp_path / "x.nnc")])
    assert result.exit_code != 0 and "quality" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.nnc").exists()
    encode_image(synthetic_frames(1, 64, 64)[0], tmp_path / "a.nnc", "clc", CLCOptions(quality=2, show_progress=False))
    original = read_bitstream_file(tmp_path / "a.nnc")
    for bad in (0.5, 3.5, "2", True, None, [2], 10**400, -(10**400)):  # (inf and nan cannot be written: JSON)
        header = json.loads(json.dumps(original.header))
        header["model"]["quality"] = bad
        data = encode_bitstream(Bitstream(codec="clc", header=header, groups=original.groups))
        with pytest.raises(InvalidBitstreamError, match="quality"):
            list(decode_frames(decode_bitstream(data)))
    # Another quality than the encoder's: a valid header, but the latents decode to another image.
    header = json.loads(json.dumps(original.header))
    header["model"]["quality"] = 2.5
    (tmp_path / "b.nnc").write_bytes(encode_bitstream(Bitstream(codec="clc", header=header, groups=original.groups)))
    assert not np.array_equal(decode_image(tmp_path / "b.nnc"), decode_image(tmp_path / "a.nnc"))


def test_wrong_weights_or_dictionary_is_a_one_line_error(use_variable_bundle, tmp_path, monkeypatch):
    image = synthetic_frames(1, 64, 64)[0]
    encode_image(image, tmp_path / "a.nnc", "clc", CLCOptions(quality=2, show_progress=False))
    other = make_variable_rate_bundle(tmp_path / "other", seed=5)
    monkeypatch.setenv(clc_codec.WEIGHTS_ENV, str(other))
    with pytest.raises(InvalidBitstreamError, match="other CLC weights"):
        decode_image(tmp_path / "a.nnc")
    shutil.copy(use_variable_bundle / "clc.safetensors", other / "clc.safetensors")
    with pytest.raises(InvalidBitstreamError, match="another CLC dictionary"):
        decode_image(tmp_path / "a.nnc")
    result = CliRunner().invoke(main, ["decode", str(tmp_path / "a.nnc"), "-o", str(tmp_path / "a.png")])
    assert result.exit_code != 0 and result.output.startswith("nnc: ") and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "a.png").exists()


def test_files_of_an_earlier_weights_generation_still_decode(variable_bundle, tmp_path, monkeypatch):
    """A folder that moved its single-rate points into ``v1/`` and ships a variable-rate
    model decodes both kinds of file, each with the weights its header names."""
    old = make_bundle(tmp_path / "old")
    monkeypatch.setenv(clc_codec.WEIGHTS_ENV, str(old))
    image = synthetic_frames(1, 64, 96, seed=4)[0]
    encode_image(image, tmp_path / "old.nnc", "clc", CLCOptions(quality=2, show_progress=False))
    before = decode_image(tmp_path / "old.nnc")

    current = tmp_path / "current"
    shutil.copytree(variable_bundle, current)
    shutil.copytree(old, current / "v1")
    monkeypatch.setenv(clc_codec.WEIGHTS_ENV, str(current))
    assert np.array_equal(decode_image(tmp_path / "old.nnc"), before)
    encode_image(image, tmp_path / "new.nnc", "clc", CLCOptions(quality=2, show_progress=False))
    assert read_bitstream_file(tmp_path / "new.nnc").header["model"]["config"]["rate_lambdas"] == LAMBDAS
    decode_image(tmp_path / "new.nnc")
    shutil.rmtree(current / "v1")
    with pytest.raises(InvalidBitstreamError, match="other CLC weights"):
        decode_image(tmp_path / "old.nnc")


def _training_data(tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for index in range(4):
        Image.fromarray(synthetic_frames(1, 128, 128, seed=index)[0]).save(data / f"p{index}.png")
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video(6, 64, 96))
    return data, clip


def test_variable_rate_training_logs_holdout_and_resumes_to_the_same_state(tmp_path, monkeypatch):
    data, clip = _training_data(tmp_path)
    kwargs = dict(rate_lambdas=LAMBDAS, steps=4, crop=64, batch_size=2, lr=1e-3, videos=[clip], frames_per_video=3,
                  holdout=1, eval_interval=2, eval_crop=64, show_progress=False, checkpoint_interval=1e9,
                  config=CLCConfig(**TINY))
    whole = clc_training.train_clc(data, tmp_path / "whole.safetensors", **kwargs)
    assert whole["train_images"] == 3 + 3 and whole["video_frames"] == 3 and whole["held_back"] == ["p3.png"]
    log = [json.loads(line) for line in (tmp_path / "whole.safetensors.log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[0]["video_frames"] == 3
    assert [entry["step"] for entry in log[1:]] == [2, 4]
    assert [point["quality"] for point in log[-1]["holdout"]] == [1, 2, 3]

    # A SIGINT during step 3 (index 2) finishes that step, checkpoints and stops.
    real_lr = clc_training.warmup_cosine_lr

    def interrupt_at_step_2(step, *args):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_lr(step, *args)

    monkeypatch.setattr(clc_training, "warmup_cosine_lr", interrupt_at_step_2)
    with pytest.raises(NncError, match="interrupted after step 3"):
        clc_training.train_clc(data, tmp_path / "split.safetensors", **kwargs)
    assert (tmp_path / "split.safetensors.ckpt").exists() and not (tmp_path / "split.safetensors").exists()
    monkeypatch.setattr(clc_training, "warmup_cosine_lr", real_lr)
    clc_training.train_clc(data, tmp_path / "split.safetensors", resume=True, **kwargs)

    first, _ = load_weights(tmp_path / "whole.safetensors")
    second, _ = load_weights(tmp_path / "split.safetensors")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    split_log = [json.loads(line) for line in (tmp_path / "split.safetensors.log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in split_log] == [0, 2, 4]
    assert split_log[2]["holdout"] == log[2]["holdout"]


def test_train_command_takes_lambdas_and_videos(tmp_path):
    data, clip = _training_data(tmp_path)
    runner = CliRunner()
    weights = tmp_path / "vr.safetensors"
    base = ["train", "clc", "--data", str(data), "--steps", "2", "--crop", "64", "--batch-size", "2", "--quiet"]
    result = runner.invoke(main, base + ["--lambdas", "0.002,0.01,0.05", "--video", str(clip), "--frames-per-video",
                                         "2", "--holdout", "1", "--eval-interval", "1", "--eval-crop", "64", "-o", str(weights)])
    assert result.exit_code == 0, result.output
    model, meta = load_weights(weights)
    assert model.config.rate_lambdas == LAMBDAS and meta["lambdas"] == LAMBDAS and meta["video_frames"] == 2
    for extra, message in ((["--lambdas", "0.01,0.002"], "increase"), (["--lambdas", "0.01"], "at least two"),
                           (["--lambdas", "a,b"], "comma-separated"), ([], "either --lambda"),
                           (["--lambda", "0.01", "--lambdas", "0.01,0.02"], "either --lambda"),
                           (["--lambda", "0.01", "--holdout", "4", "--eval-crop", "64"], "leaves no training"),
                           (["--lambda", "0.01", "--holdout", "1"], "smaller than the 256-pixel evaluation crop"),
                           (["--lambda", "0.01", "--holdout", "1", "--eval-crop", "0"], "--eval-crop"),
                           (["--lambdas", "0.01,20"], "--lambdas"), (["--lambdas", ",".join(str(0.001 * (i + 1)) for i in range(17))], "--lambdas")):
        result = runner.invoke(main, base + extra + ["-o", str(tmp_path / "x.safetensors")])
        assert result.exit_code != 0 and message in result.output, (extra, result.output)
        assert len(result.output.strip().splitlines()) == 1


def test_video_frames_are_spread_over_the_clip(tmp_path):
    _, clip = _training_data(tmp_path)  # 6 frames
    frames, names = clc_training.sample_video_frames([clip], 3, 64)
    assert [name.split("#")[1] for name in names] == ["0", "2", "5"]  # first, middle, last
    assert frames[0].shape == (3, 64, 96) and frames[0].dtype == torch.uint8
    _, names = clc_training.sample_video_frames([clip], 8, 64)  # more than the clip has: all of them
    assert [name.split("#")[1] for name in names] == ["0", "1", "2", "3", "4", "5"]
    with pytest.raises(NncError, match="smaller than the 128-pixel crops"):
        clc_training.sample_video_frames([clip], 2, 128)


def test_resume_ignores_a_log_line_cut_short_by_a_kill():
    assert clc_training._log_step('{"step": 250, "seconds": 1.0}') == 250
    assert clc_training._log_step('{"step": 500, "secon') == float("inf")
