"""Interrupted encodes: a killed encode resumes from its checkpoint and writes the very
bytes an uninterrupted one writes (same machine, same settings); no partial .nnc is ever
left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from nnc.media import write_video

from synthetic import synthetic_video

ARGS = ["--size", "60k", "--epochs", "12", "--lr", "5e-3", "--device", "cpu", "--quiet"]


def nnc(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "nnc.cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_killed_encode_resumes_to_the_same_result(tmp_path, how):
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video())
    reference = nnc("encode", clip, "-o", tmp_path / "reference.nnc", "--checkpoint-interval", "0", *ARGS)
    assert reference.wait(timeout=300) == 0, reference.communicate()

    output = tmp_path / "resumed.nnc"
    checkpoint = tmp_path / "resumed.nnc.ckpt"
    output.write_bytes(b"an older file that must survive the interrupted encode")
    first = nnc("encode", clip, "-o", output, "--checkpoint-interval", "0.2", *ARGS)
    wait_for(checkpoint, first)
    time.sleep(0.5)
    first.send_signal(how)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode != 0
    if how == signal.SIGINT:
        assert stderr.strip().splitlines()[-1].startswith("nnc: interrupted")
    assert output.read_bytes() == b"an older file that must survive the interrupted encode"
    leftovers = {p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")}
    if how == signal.SIGINT:  # a clean exit removes every temporary file
        assert not leftovers
    else:  # SIGKILL can only leave a checkpoint save cut short (fileio's per-process
        # temporary name, or older nnc's fixed one), which --resume cleans up
        assert all(re.fullmatch(r"\.resumed\.nnc\.ckpt\.[0-9a-f]{12}\.tmp|resumed\.nnc\.ckpt\.tmp", name)
                   for name in leftovers), leftovers

    resumed = nnc("encode", clip, "-o", output, "--resume", "--checkpoint-interval", "0.2", *ARGS)
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert not checkpoint.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # The checkpoint holds the model, the optimiser, the schedule position and the data
    # order: the resumed encode is the uninterrupted one, byte for byte.
    assert output.read_bytes() == (tmp_path / "reference.nnc").read_bytes()


def test_resume_refuses_another_input_or_missing_checkpoint(tmp_path):
    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video())
    missing = nnc("encode", clip, "-o", tmp_path / "x.nnc", "--resume", *ARGS)
    _, stderr = missing.communicate(timeout=120)
    assert missing.returncode != 0 and "no checkpoint" in stderr

    first = nnc("encode", clip, "-o", tmp_path / "x.nnc", "--checkpoint-interval", "0.2", *ARGS)
    wait_for(tmp_path / "x.nnc.ckpt", first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    other = tmp_path / "other.y4m"
    write_video(other, synthetic_video(num_frames=6))
    mismatch = nnc("encode", other, "-o", tmp_path / "x.nnc", "--resume", *ARGS)
    _, stderr = mismatch.communicate(timeout=120)
    assert mismatch.returncode != 0 and "another input" in stderr
    assert len(stderr.strip().splitlines()) == 1


def _encode_in_process(*args):
    from click.testing import CliRunner

    from nnc.cli.main import main

    return CliRunner().invoke(main, ["encode", *map(str, args)], catch_exceptions=False)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, "truncated", "torch pickle"])
def test_a_bad_checkpoint_is_one_line_suggesting_to_delete_it(tmp_path, content):
    import torch

    from nnc.codec.checkpoint import checkpoint_bytes

    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video())
    checkpoint = tmp_path / "x.nnc.ckpt"
    if content == "truncated":
        content = checkpoint_bytes({"version": 2, "fingerprint": "f", "module": {"w": torch.ones(1000)}})[:-100]
    if content == "torch pickle":  # what nnc wrote before: never unpickled now
        torch.save({"version": 1}, checkpoint)
    else:
        checkpoint.write_bytes(content)
    result = _encode_in_process(clip, "-o", tmp_path / "x.nnc", "--resume", *ARGS)
    assert result.exit_code == 1, result.output
    assert "delete it" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "x.nnc").exists()


def test_checkpoints_are_safetensors_plus_json_and_round_trip_exactly():
    import torch

    from nnc.codec.checkpoint import checkpoint_bytes, state_from_bytes

    module = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(module.parameters())
    module(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(5)
    state = {"module": module.state_dict(), "optimizer": optimizer.state_dict(), "rng": generator.get_state(),
             "loss": float("nan"), "hooks": [{"spent": 1.25}], "mask": torch.tensor([True, False])}
    data = checkpoint_bytes(state)
    header_length = int.from_bytes(data[:8], "little")
    assert b'"__metadata__"' in data[8 : 8 + header_length]  # safetensors, not a pickle
    restored = state_from_bytes(data)
    assert list(restored["optimizer"]["state"]) == [0, 1]  # int keys kept
    assert restored["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(restored["rng"], generator.get_state()) and restored["mask"].dtype == torch.bool
    assert restored["hooks"] == [{"spent": 1.25}] and restored["loss"] != restored["loss"]
    again = torch.optim.Adam(module.parameters())
    again.load_state_dict(restored["optimizer"])
    assert checkpoint_bytes(restored) == data


def test_a_second_encode_to_the_same_output_with_checkpoints_is_refused(tmp_path):
    from nnc.errors import MediaError
    from nnc.fileio import exclusive_lock

    clip = tmp_path / "clip.y4m"
    write_video(clip, synthetic_video())
    with exclusive_lock(tmp_path / "x.nnc.ckpt.lock", "held by the first encode"):
        result = _encode_in_process(clip, "-o", tmp_path / "x.nnc", *ARGS)
    assert result.exit_code == 5 and "another nnc encode to" in result.stderr, result.output
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.y4m"]
