"""No command may destroy a user's file (issue 17): outputs that are inputs, outputs that
are not regular files, interrupted writes, failed writes, unbounded reads.

Everything runs on tiny synthetic data.  The full-disk and read-only cases mount a
small tmpfs (root only); where mounting is not allowed they simulate the error and say
so in the skip/test name.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from nnc import fileio
from nnc.bitstream import container
from nnc.errors import InvalidBitstreamError, MediaError
from nnc.fileio import read_at_most, refuse_overwriting_inputs, terminating_signals_raise, write_atomically
from nnc.media import VideoInfo, VideoWriter, read_video, write_video
from nnc.media.image import read_image, write_image

REPO_PARENT = Path(__file__).resolve().parents[2]  # the folder holding the nnc package
INFO = VideoInfo(32, 16, 3, Fraction(25), "yuv420p", 8, "bt601", "tv")
FRAMES = np.stack([np.full((16, 32, 3), 40 * (i + 1), np.uint8) for i in range(3)])


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders a writer may have left."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- input == output


def test_output_that_is_an_input_is_refused(tmp_path):
    source = tmp_path / "clip.y4m"
    source.write_bytes(b"precious")
    with pytest.raises(MediaError, match="is the input") as caught:
        refuse_overwriting_inputs(source, [source])
    assert "\n" not in str(caught.value)
    # another spelling of the same path
    with pytest.raises(MediaError, match="is the input"):
        refuse_overwriting_inputs(tmp_path / "." / "clip.y4m", [source])


def test_output_through_a_symlink_or_hard_link_is_refused(tmp_path):
    source = tmp_path / "clip.y4m"
    source.write_bytes(b"precious")
    link = tmp_path / "link.nnc"
    link.symlink_to(source)
    hard = tmp_path / "hard.nnc"
    os.link(source, hard)
    with pytest.raises(MediaError, match="is the input"):
        refuse_overwriting_inputs(link, [source])
    with pytest.raises(MediaError, match="is the input"):
        refuse_overwriting_inputs(hard, [source])
    with pytest.raises(MediaError, match="is the input"):  # the input named through the link
        refuse_overwriting_inputs(source, [tmp_path / "other.y4m", link])
    assert source.read_bytes() == b"precious"


def test_other_outputs_are_allowed(tmp_path):
    source = tmp_path / "clip.y4m"
    source.write_bytes(b"precious")
    other = tmp_path / "other.nnc"
    other.write_bytes(b"old")
    refuse_overwriting_inputs(other, [source])  # a different existing file
    refuse_overwriting_inputs(tmp_path / "new.nnc", [source])  # not there yet
    refuse_overwriting_inputs("-", [source])  # stdout
    refuse_overwriting_inputs("/dev/null", [source])  # a device is written into, not replaced
    refuse_overwriting_inputs(other, [tmp_path / "missing.y4m"])  # a missing input is the reader's error


# --------------------------------------------------------------------------- non-regular outputs


def _drain_fifo(path: Path, into: list) -> threading.Thread:
    def read():
        with open(path, "rb") as handle:
            into.append(handle.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_atomic_writer_writes_into_a_fifo(tmp_path):
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    received: list = []
    reader = _drain_fifo(fifo, received)
    assert write_atomically(fifo, b"abc" * 1000) == 3000
    reader.join(10)
    assert received == [b"abc" * 1000]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO, not replaced by a file
    assert leftovers(tmp_path) == []


def test_atomic_writer_writes_into_a_character_device():
    before = os.stat("/dev/null")
    container.write_file_atomically("/dev/null", b"x" * 100)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_atomic_writer_follows_a_symlink(tmp_path):
    target = tmp_path / "real.nnc"
    target.write_bytes(b"old")
    link = tmp_path / "link.nnc"
    link.symlink_to(target)
    write_atomically(link, b"new bytes")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new bytes"
    assert leftovers(tmp_path) == []


def test_atomic_writer_dash_is_stdout(capfd):
    write_atomically("-", b"to stdout\n")
    assert capfd.readouterr().out == "to stdout\n"
    assert not Path("-").exists()


def test_video_writer_streams_y4m_into_a_fifo(tmp_path):
    fifo = tmp_path / "stream.y4m"
    os.mkfifo(fifo)
    received: list = []
    reader = _drain_fifo(fifo, received)
    write_video(fifo, _video())
    reader.join(10)
    assert received and received[0].startswith(b"YUV4MPEG2 W32 H16")
    assert received[0].count(b"FRAME\n") == 3
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path) == []


def test_video_writer_streams_mp4_into_a_fifo_as_fragmented_mp4(tmp_path):
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    received: list = []
    reader = _drain_fifo(fifo, received)
    write_video(fifo, _video(), format="mp4")
    reader.join(30)
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(received[0])
    with av.open(str(copy)) as check:  # a playable file, all frames there
        assert sum(1 for _ in check.decode(video=0)) == 3


def test_video_writer_into_dev_null_and_stdout(capfd):
    write_video("/dev/null", _video(), format="y4m")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    write_video("-", _video())  # no extension: a stream gets Y4M
    out = capfd.readouterr().out
    assert out.startswith("YUV4MPEG2 W32 H16") and out.count("FRAME\n") == 3


def test_video_writer_follows_a_symlink(tmp_path):
    target = tmp_path / "real.y4m"
    target.write_bytes(b"old")
    link = tmp_path / "link.y4m"
    link.symlink_to(target)
    write_video(link, _video())
    assert link.is_symlink()
    decoded = read_video(target)
    assert decoded.info.num_frames == 3 and decoded.info.width == 32
    assert leftovers(tmp_path) == []


def test_png_frames_into_a_stream_need_one_frame(tmp_path):
    with pytest.raises(MediaError, match="one frame"):
        VideoWriter("-", INFO, format="png")


def test_image_writer_into_fifo_symlink_and_stdout(tmp_path, capfdbinary):
    image = np.zeros((8, 8, 3), np.uint8)
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    received: list = []
    reader = _drain_fifo(fifo, received)
    write_image(image, fifo)
    reader.join(10)
    assert received[0].startswith(b"\x89PNG")
    target = tmp_path / "real.png"
    target.write_bytes(b"old")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    write_image(image, link)
    assert link.is_symlink() and read_image(target).shape == (8, 8, 3)
    write_image(image, "-")
    assert capfdbinary.readouterr().out.startswith(b"\x89PNG\r\n")
    assert leftovers(tmp_path) == []


def _video():
    from nnc.media import Video

    return Video(FRAMES.copy(), INFO)


# --------------------------------------------------------------------------- signals

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from fractions import Fraction
    import numpy as np
    from nnc.media import VideoInfo, VideoWriter

    kind, target = sys.argv[1], sys.argv[2]
    if kind == "atomic":
        from nnc.fileio import write_atomically
        real_fsync = os.fsync
        def slow_fsync(fd):  # hold the temporary file open until the signal comes
            print("ready", flush=True)
            time.sleep(30)
        os.fsync = slow_fsync
        write_atomically(target, b"x" * 100000)
    else:
        info = VideoInfo(32, 16, 10000, Fraction(25), "yuv420p", 8, "bt601", "tv")
        frame = np.zeros((1, 16, 32, 3), np.uint8)
        with VideoWriter(target, info, format=kind) as writer:
            for index in range(10000):
                writer.write(frame)
                if index == 2:
                    print("ready", flush=True)
                time.sleep(0.005)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("kind,name", [("y4m", "out.y4m"), ("png", "frames"), ("atomic", "out.nnc")])
def test_a_signal_mid_write_leaves_nothing_behind(tmp_path, signum, kind, name):
    target = tmp_path / name
    if kind == "atomic":
        target.write_bytes(b"old output")
    env = dict(os.environ, PYTHONPATH=f"{REPO_PARENT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, kind, str(target)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        line = child.stdout.readline()
        assert line == b"ready\n", child.stderr.read().decode()
        assert leftovers(tmp_path), "the partial output should exist mid-write"
        child.send_signal(signum)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    stderr = child.stderr.read().decode()
    assert child.returncode != 0
    assert "Terminated" in stderr or "terminated by" in stderr  # it went through the cleanup path
    assert leftovers(tmp_path) == []
    if kind == "atomic":
        assert target.read_bytes() == b"old output"
    else:
        assert not target.exists()


def test_signal_handlers_are_restored_and_ignored_signals_stay_ignored():
    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with terminating_signals_raise():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # nohup keeps working
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
            with pytest.raises(fileio.Terminated) as caught:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            assert caught.value.signum == signal.SIGTERM
            assert isinstance(caught.value, KeyboardInterrupt)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous_hup)
        signal.signal(signal.SIGTERM, previous_term)


# --------------------------------------------------------------------------- write errors


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only); yields its path, unmounts afterwards."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); "
                    "test_full_disk_simulated covers ENOSPC by patching the write")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _remount_read_only(mount_point: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only ({done.stderr.decode().strip()})")


def _one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and text
    return text


def test_full_disk_is_one_line_and_keeps_the_old_output(small_tmpfs):
    old = small_tmpfs / "out.nnc"
    old.write_bytes(b"old output")
    with pytest.raises(MediaError) as caught:
        write_atomically(old, os.urandom(2 << 20))
    assert "No space left" in _one_line(caught.value)
    assert old.read_bytes() == b"old output"
    assert leftovers(small_tmpfs) == []
    # the streaming video writer: 200 frames of 64x64 yuv420p y4m are 1.2 MB
    video_out = small_tmpfs / "out.y4m"
    video_out.write_bytes(b"old video")
    info = VideoInfo(64, 64, 200, Fraction(25), "yuv420p", 8, "bt601", "tv")
    noise = np.random.default_rng(0).integers(0, 256, (200, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(MediaError) as caught:
        with VideoWriter(video_out, info) as writer:
            writer.write(noise)
    assert "cannot write" in _one_line(caught.value)
    assert video_out.read_bytes() == b"old video"
    assert leftovers(small_tmpfs) == []


def test_full_disk_simulated(tmp_path, monkeypatch):
    """ENOSPC without a small file system: the write itself fails."""
    old = tmp_path / "out.nnc"
    old.write_bytes(b"old output")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    with pytest.raises(MediaError, match="No space left"):
        write_atomically(old, b"new")
    assert old.read_bytes() == b"old output"
    assert leftovers(tmp_path) == []


def test_read_only_folder_is_one_line_and_keeps_the_old_output(small_tmpfs):
    (small_tmpfs / "out.nnc").write_bytes(b"old output")
    (small_tmpfs / "out.png").write_bytes(b"old image")
    _remount_read_only(small_tmpfs)
    with pytest.raises(MediaError) as caught:
        write_atomically(small_tmpfs / "out.nnc", b"new")
    assert "Read-only file system" in _one_line(caught.value)
    with pytest.raises(MediaError) as caught:
        write_image(np.zeros((8, 8, 3), np.uint8), small_tmpfs / "out.png")
    assert "Read-only file system" in _one_line(caught.value)
    with pytest.raises(MediaError) as caught:
        write_video(small_tmpfs / "out.y4m", _video())
    assert "Read-only file system" in _one_line(caught.value)
    with pytest.raises(MediaError) as caught:
        write_video(small_tmpfs / "frames", _video())
    assert "Read-only file system" in _one_line(caught.value)
    assert (small_tmpfs / "out.nnc").read_bytes() == b"old output"
    assert (small_tmpfs / "out.png").read_bytes() == b"old image"


# --------------------------------------------------------------------------- bounded reads


def test_reading_dev_urandom_stops_at_once():
    start = time.monotonic()
    with pytest.raises(InvalidBitstreamError, match="not an .nnc file"):
        container.read_bitstream_file("/dev/urandom")
    assert time.monotonic() - start < 1


def test_bounded_read_of_an_endless_device():
    start = time.monotonic()
    with pytest.raises(MediaError, match="more than 4194304 bytes"):
        read_at_most("/dev/zero", 4 << 20)
    assert time.monotonic() - start < 5


def test_endless_fifo_with_a_valid_start_is_cut_at_the_file_size_limit(tmp_path, monkeypatch):
    """A FIFO that starts like an .nnc file and never ends: refused once it passes the
    format's largest file (made small here), with memory bounded by that limit."""
    monkeypatch.setattr(container, "MAX_FILE_BYTES", 1 << 20)
    fifo = tmp_path / "endless.nnc"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed():
        try:
            with open(fifo, "wb") as handle:
                handle.write(container.MAGIC)
                while not stop.is_set():
                    handle.write(b"\0" * 65536)
        except (BrokenPipeError, OSError):
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        with pytest.raises(InvalidBitstreamError, match="more than 1048576 bytes"):
            container.read_bitstream_file(fifo)
    finally:
        stop.set()
        feeder.join(5)


def test_large_regular_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.nnc"
    with open(big, "wb") as handle:
        handle.truncate(10 << 20)  # sparse: its size says enough
    with pytest.raises(MediaError, match="10485760 bytes"):
        read_at_most(big, 1 << 20)


def test_nnc_files_still_read(tmp_path):
    from nnc.bitstream import Bitstream

    path = tmp_path / "x.nnc"
    container.write_bitstream_file(path, Bitstream("test", {"a": 1}, []))
    assert container.read_bitstream_file(path).header == {"a": 1}
    assert container.read_bitstream_bytes(path) == path.read_bytes()
    with pytest.raises(InvalidBitstreamError, match="folder"):
        container.read_bitstream_file(tmp_path)


# --------------------------------------------------------------------------- the commands (issue 17, part 2)


DATA = Path(__file__).parent / "data"


def _cli(*args):
    from click.testing import CliRunner

    from nnc.cli.main import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _clip(path: Path, height: int = 16, width: int = 32) -> Path:
    info = VideoInfo(width, height, 3, Fraction(25), "yuv420p", 8, "bt601", "tv")
    from nnc.media import Video

    frames = np.stack([np.full((height, width, 3), 40 * (i + 1), np.uint8) for i in range(3)])
    write_video(path, Video(frames=frames, info=info))
    return path


def test_encode_decode_and_append_refuse_their_input_as_output(tmp_path):
    clip = _clip(tmp_path / "clip.y4m")
    original = clip.read_bytes()
    image = tmp_path / "photo.png"
    write_image(np.zeros((64, 64, 3), np.uint8), image)
    photo = image.read_bytes()
    nnc_file = tmp_path / "golden.nnc"
    nnc_file.write_bytes((DATA / "golden_hnerv.nnc").read_bytes())
    set_file = tmp_path / "set.nnc"
    set_file.write_bytes((DATA / "golden_pfnr_fso3.nnc").read_bytes())
    link = tmp_path / "link.y4m"
    link.symlink_to(clip)
    for command in (["encode", clip, "-o", clip, "--epochs", "1"],
                    ["encode", clip, "-o", link, "--epochs", "1"],
                    ["encode", image, "--model", "clc", "-o", image],
                    ["encode", clip, clip, "--model", "pfnr", "-o", clip],
                    ["decode", nnc_file, "-o", nnc_file, "--format", "y4m"],
                    ["append", set_file, set_file]):
        result = _cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "is the input" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert clip.read_bytes() == original and image.read_bytes() == photo
    assert nnc_file.read_bytes() == (DATA / "golden_hnerv.nnc").read_bytes()
    assert set_file.read_bytes() == (DATA / "golden_pfnr_fso3.nnc").read_bytes()


def test_decode_to_stdout_keeps_the_summary_off_stdout(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nnc.cli.main", "decode", str(DATA / "golden_hnerv.nnc"), "-o", "-"],
                            capture_output=True, timeout=300, cwd=REPO_PARENT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"YUV4MPEG2 W64 H32 ") and b"wrote" not in result.stdout
    assert b"wrote -:" in result.stderr
    frames = read_video(_write(tmp_path / "piped.y4m", result.stdout))
    assert frames.info.num_frames == 4


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_second_append_to_the_same_set_is_refused_at_once(tmp_path):
    from nnc.codec.files import append_file, lock_path_for, make_options
    from nnc.fileio import exclusive_lock

    set_file = tmp_path / "set.nnc"
    set_file.write_bytes((DATA / "golden_pfnr_fso3.nnc").read_bytes())
    clip = _clip(tmp_path / "clip.y4m", 36, 64)
    options = make_options("pfnr", epochs=1, show_progress=False)
    started = time.monotonic()
    with exclusive_lock(lock_path_for(set_file), "held by the test"):
        with pytest.raises(MediaError, match="being appended to by another nnc") as caught:
            append_file(set_file, clip, options)
    assert time.monotonic() - started < 30 and "\n" not in str(caught.value)
    assert set_file.read_bytes() == (DATA / "golden_pfnr_fso3.nnc").read_bytes()
    assert not lock_path_for(set_file).exists()  # released and removed


def test_exclusive_lock_is_exclusive_across_processes_and_released(tmp_path):
    from nnc.fileio import exclusive_lock

    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from nnc.fileio import exclusive_lock
        with exclusive_lock({str(lock)!r}, "busy"):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO_PARENT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MediaError, match="busy"):
            with exclusive_lock(lock, "busy"):
                pass
    finally:
        holder.kill()  # a killed holder's lock is released by the kernel
        holder.wait()
    with exclusive_lock(lock, "busy"):
        assert lock.exists()
    assert not lock.exists()


@pytest.mark.parametrize("written", [False, True])
def test_an_interrupted_append_reports_what_is_true(tmp_path, monkeypatch, written):
    from nnc.bitstream import split_chunks
    from nnc.codec import files

    golden = (DATA / "golden_pfnr_fso3.nnc").read_bytes()
    set_file = tmp_path / "set.nnc"
    # the set before the append: video 0 only (drop video 1's record and group)
    from nnc.bitstream import read_bitstream_file
    from nnc.bitstream.chunks import assemble
    bitstream = read_bitstream_file(DATA / "golden_pfnr_fso3.nnc")
    model = dict(bitstream.header["model"], videos=bitstream.header["model"]["videos"][:1])
    groups = [c for c in split_chunks(golden) if c.tag == b"TGRP"][:1]
    set_file.write_bytes(assemble("pfnr", dict(bitstream.header, model=model), groups))
    clip = _clip(tmp_path / "clip.y4m", 36, 64)

    def fake_append(path, video, options, name=None):
        if written:
            Path(path).write_bytes(golden)
        raise fileio.Terminated(signal.SIGTERM)

    monkeypatch.setattr(files, "append_to_set", fake_append)
    result = _cli("append", set_file, clip, "--epochs", "1", "--quiet")
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    if written:
        assert "was appended to" in result.stderr and "--resume" not in result.stderr
    else:
        assert "nothing was appended" in result.stderr
    assert result.stderr.count("\n") == 1 and not files.lock_path_for(set_file).exists()


def test_a_terminated_decode_exits_128_plus_signum_and_leaves_nothing(tmp_path):
    from nnc.bitstream import Chunk, join_chunks, read_bitstream_file, split_chunks
    import json, zlib

    # A PFNR set renders a frame from its index: a header edit makes a long decode.
    bitstream = read_bitstream_file(DATA / "golden_pfnr_fso3.nnc")
    header = json.loads(json.dumps(bitstream.header))
    header["model"]["videos"][0]["media"]["num_frames"] = 100_000
    chunks = split_chunks((DATA / "golden_pfnr_fso3.nnc").read_bytes())
    text = json.dumps({"codec": "pfnr", "header": header}).encode()
    long = _write(tmp_path / "long.nnc", join_chunks([Chunk(b"HEAD", zlib.compress(text))] + chunks[1:]))
    out = tmp_path / "out.y4m"
    process = subprocess.Popen([sys.executable, "-m", "nnc.cli.main", "decode", str(long), "--video", "0", "-o", str(out)],
                               stderr=subprocess.PIPE, text=True, cwd=REPO_PARENT)
    deadline = time.monotonic() + 240
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".out.y4m")]:  # the partial output
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().startswith("nnc: decode interrupted") and "Traceback" not in stderr
    assert leftovers(tmp_path) == [] and not out.exists()
