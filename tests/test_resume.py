"""Interrupted encodes: a killed encode resumes from its checkpoint and ends where an
uninterrupted one does; no partial .nnc is ever left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from nnc.bitstream import read_bitstream_file
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
    else:  # SIGKILL can only leave a checkpoint save cut short, which --resume cleans up
        assert leftovers <= {"resumed.nnc.ckpt.tmp"}

    resumed = nnc("encode", clip, "-o", output, "--resume", "--checkpoint-interval", "0.2", *ARGS)
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert not checkpoint.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    a = read_bitstream_file(tmp_path / "reference.nnc").header["encoder"]["psnr_rgb"]
    b = read_bitstream_file(output).header["encoder"]["psnr_rgb"]
    assert b == pytest.approx(a, abs=0.05)


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
