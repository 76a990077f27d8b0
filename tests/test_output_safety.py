"""No command may destroy a user's file (issue 17): outputs that are inputs, outputs that
are not regular files, interrupted writes, failed writes, unbounded reads.

Everything runs on tiny synthetic data.  The full-disk and read-only cases mount a
small tmpfs where that is allowed (root with CAP_SYS_ADMIN); without it, a full disk is
an encode under RLIMIT_FSIZE (EFBIG instead of ENOSPC, same code path) or a patched
write, and a read-only folder is one without write permission (skipped for root).
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
        assert result.exit_code == 5, (command, result.output)
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


_APPEND_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from nnc.codec import video_set_api
    from nnc.cli.main import main

    when, set_path, clip = sys.argv[1:4]
    real_write = video_set_api.write_file_atomically

    def write_then_signal(path, data):  # SIGTERM just before or just after the set is replaced
        if when == "after":
            real_write(path, data)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises here
        real_write(path, data)

    video_set_api.write_file_atomically = write_then_signal
    main(["append", set_path, clip, "--epochs", "1"], prog_name="nnc")  # with the progress bar
    """
)


def test_a_real_sigterm_after_the_append_wrote_the_set_reports_the_append(tmp_path):
    """The real signal path (interrupt_on_termination, the progress bar, atexit), not a
    raised exception (test_an_interrupted_append_reports_what_is_true covers both
    outcomes that way): the one line says the set holds the new video, and no
    "--resume" advice or tqdm traceback follows."""
    golden = (DATA / "golden_pfnr_fso3.nnc").read_bytes()
    set_file = _write(tmp_path / "set.nnc", golden)
    clip = _clip(tmp_path / "clip.y4m", 36, 64)
    result = subprocess.run([sys.executable, "-c", _APPEND_CHILD, "after", str(set_file), str(clip)],
                            capture_output=True, text=True, cwd=REPO_PARENT, timeout=600)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "Traceback" not in result.stderr and "--resume" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nnc: interrupted after {clip} was appended to {set_file} as video 2"), result.stderr
    appended = set_file.read_bytes()
    assert len(appended) > len(golden) and appended.startswith(golden[:10])
    assert leftovers(tmp_path) == [] and not (tmp_path / "set.nnc.lock").exists()


@pytest.mark.parametrize("signum, name, format_", [(signal.SIGTERM, "out.y4m", "y4m"), (signal.SIGHUP, "frames", "png")],
                         ids=["SIGTERM-y4m", "SIGHUP-png-folder"])
def test_a_terminated_decode_exits_128_plus_signum_and_leaves_nothing(tmp_path, signum, name, format_):
    from nnc.bitstream import Chunk, join_chunks, read_bitstream_file, split_chunks
    import json, zlib

    # A PFNR set renders a frame from its index: a header edit makes a long decode.
    bitstream = read_bitstream_file(DATA / "golden_pfnr_fso3.nnc")
    header = json.loads(json.dumps(bitstream.header))
    header["model"]["videos"][0]["media"]["num_frames"] = 100_000
    chunks = split_chunks((DATA / "golden_pfnr_fso3.nnc").read_bytes())
    text = json.dumps({"codec": "pfnr", "header": header}).encode()
    long = _write(tmp_path / "long.nnc", join_chunks([Chunk(b"HEAD", zlib.compress(text))] + chunks[1:]))
    out = tmp_path / name
    process = subprocess.Popen([sys.executable, "-m", "nnc.cli.main", "decode", str(long), "--video", "0", "-o", str(out),
                                "--format", format_],
                               stderr=subprocess.PIPE, text=True, cwd=REPO_PARENT,
                               # nohup'd test runs hand SIGHUP down ignored; the command must see a terminal's
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}")]:  # the partial output
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert stderr.strip().startswith("nnc: decode interrupted") and "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    assert leftovers(tmp_path) == [] and not out.exists()


# --------------------------------------------------------------------------- inputs that are streams


def _nnc_process(*args, max_file_bytes: int | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``nnc ARGS`` in a fresh process (optionally with a smaller largest .nnc file, so an
    endless stream is refused after 1 MiB instead of 256 MiB); a hang is a test failure."""
    code = ("import sys; import nnc.bitstream.container as container; "
            + (f"container.MAX_FILE_BYTES = {max_file_bytes}; " if max_file_bytes else "")
            + "from nnc.cli.main import main; main(sys.argv[1:], prog_name='nnc')")
    kwargs.setdefault("timeout", 120)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, cwd=REPO_PARENT,
                          **kwargs)


class _Feeder(threading.Thread):
    """Writes ``data`` into a FIFO, then (``endless``) random bytes until the reader goes
    away; counts what the reader was given."""

    def __init__(self, fifo: Path, data: bytes, endless: bool = False):
        super().__init__(daemon=True)
        self.fifo, self.data, self.endless, self.written = fifo, data, endless, 0
        self.start()

    def run(self):
        try:
            with open(self.fifo, "wb", buffering=0) as handle:
                self.written += handle.write(self.data)
                while self.endless:
                    self.written += handle.write(os.urandom(65536))
        except OSError:  # BrokenPipeError: the reader refused the stream and closed it
            pass


def test_info_and_decode_read_a_fifo_from_one_handle(tmp_path):
    """A FIFO delivers its bytes once: a reader that opened it twice (to sniff the magic,
    then to read) lost the first bytes, then waited forever for a second writer."""
    golden = (DATA / "golden_hnerv.nnc").read_bytes()
    fifo = tmp_path / "in.nnc"
    os.mkfifo(fifo)
    feeder = _Feeder(fifo, golden)
    result = _nnc_process("info", fifo, "--json")
    feeder.join(10)
    assert result.returncode == 0, result.stderr.decode()
    import json
    assert json.loads(result.stdout)["file_bytes"] == len(golden) == feeder.written

    feeder = _Feeder(fifo, golden)
    out = tmp_path / "out.y4m"
    result = _nnc_process("decode", fifo, "-o", out)
    feeder.join(10)
    assert result.returncode == 0, result.stderr.decode()
    assert read_video(out).info.num_frames == 4
    assert leftovers(tmp_path) == []


def test_decode_reads_a_pipe_on_stdin(tmp_path):
    """``nnc decode /dev/stdin`` under a pipe: /dev/stdin opened twice would start the
    second read after the 8 bytes the first one consumed."""
    golden = (DATA / "golden_hnerv.nnc").read_bytes()
    out = tmp_path / "out.y4m"
    result = _nnc_process("decode", "/dev/stdin", "-o", out, input=golden)
    assert result.returncode == 0, result.stderr.decode()
    assert read_video(out).info.num_frames == 4


def test_info_and_decode_bound_what_they_read_from_an_endless_stream(tmp_path):
    """A FIFO that starts like an .nnc file and never ends (random bytes after the magic,
    as /dev/urandom would be if it started with it): both commands stop with one line once
    the stream passes the largest .nnc file (1 MiB here), having read no more than that."""
    import fcntl

    bound = 1 << 20
    fifo = tmp_path / "endless.nnc"
    os.mkfifo(fifo)
    for command in (["info", fifo], ["decode", fifo, "-o", tmp_path / "out.y4m"]):
        feeder = _Feeder(fifo, container.MAGIC + b"\x01\x00", endless=True)
        result = _nnc_process(*command, max_file_bytes=bound, timeout=120)
        feeder.join(10)
        assert not feeder.is_alive()  # the reader closed the stream
        stderr = result.stderr.decode()
        assert result.returncode == 3 and stderr.count("\n") == 1, stderr
        assert stderr.startswith("nnc: not a valid .nnc file") and f"more than {bound} bytes" in stderr, stderr
        descriptor = os.open(fifo, os.O_RDWR)  # O_RDWR: opening does not wait for a writer
        pipe_bytes = fcntl.fcntl(descriptor, fcntl.F_GETPIPE_SZ)
        os.close(descriptor)
        # read: at most bound + 1 bytes; in flight: a full pipe and the feeder's last block
        assert feeder.written <= bound + 1 + pipe_bytes + 65536, feeder.written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["endless.nnc"]


def test_info_and_decode_of_dev_urandom_stop_at_once(tmp_path):
    for command in (["info", "/dev/urandom"], ["decode", "/dev/urandom", "-o", tmp_path / "out.y4m"]):
        started = time.monotonic()
        result = _cli(*command)
        assert time.monotonic() - started < 10
        assert result.exit_code == 3 and result.stderr.count("\n") == 1, result.output
        assert "not an .nnc file" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the list, end to end


def test_full_disk_during_encode_is_one_line_and_keeps_the_old_output(tmp_path):
    """``nnc encode`` whose output cannot be written in full.  A small tmpfs needs
    privileges, so the encode runs under RLIMIT_FSIZE (4 KiB per file): the write of the
    ~40 KB .nnc fails part-way (EFBIG, "File too large"), through the same code path as
    ENOSPC (test_full_disk_is_one_line_and_keeps_the_old_output covers ENOSPC itself
    where a tmpfs can be mounted)."""
    import resource

    clip = _clip(tmp_path / "clip.y4m")
    out = tmp_path / "out.nnc"
    out.write_bytes(b"old output")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    result = subprocess.run(
        [sys.executable, "-m", "nnc.cli.main", "encode", clip, "-o", out, "--size", "40k", "--epochs", "1",
         "--force", "--quiet", "--checkpoint-interval", "0"],
        capture_output=True, text=True, cwd=REPO_PARENT, timeout=600, preexec_fn=limit_file_size)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("nnc: warning: ")]
    assert result.returncode == 5, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"nnc: cannot write {out}: File too large"), result.stderr
    assert out.read_bytes() == b"old output"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.y4m", "out.nnc"]


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no process can write into: a tmpfs remounted read-only where mounting is
    allowed (EROFS, as the issue saw it), else a folder without write permission (EACCES;
    root ignores permissions, so then the test is skipped)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    try:
        (folder / "out.png").write_bytes(b"old image")
        if mounted.returncode == 0:
            if subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode != 0:
                pytest.skip("cannot remount the tmpfs read-only")
        else:
            folder.chmod(0o555)
            try:
                (folder / ".probe").write_bytes(b"")
            except PermissionError:
                pass
            else:
                pytest.skip("no tmpfs mount and the folder permissions do not bind this user (root)")
        yield folder
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("name", ["out.png", "new.png", "out.y4m"])
def test_clc_decode_into_a_read_only_folder_is_one_line(read_only_folder, name):
    result = _cli("decode", DATA / "golden_clc_v1.nnc", "-o", read_only_folder / name)
    assert result.exit_code == 5, result.output
    assert result.stderr.startswith("nnc: cannot write ") and str(read_only_folder) in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "internal error" not in result.stderr, result.stderr
    assert (read_only_folder / "out.png").read_bytes() == b"old image"
    assert sorted(p.name for p in read_only_folder.iterdir()) == ["out.png"]


@pytest.mark.parametrize("channels", ["rgb48be", "rgba64be"])
def test_16_bit_rgb_png_is_refused_by_clc_as_the_readme_says(tmp_path, channels):
    """Pillow opens a 16-bit RGB PNG as 8-bit "RGB"; the README promises a refusal
    (`nnc: X: 16-bit images (RGB) are not supported ...`), not a silent conversion."""
    values = np.random.default_rng(0).integers(0, 65536, (64, 64, 4 if channels.startswith("rgba") else 3))
    frame = av.VideoFrame.from_ndarray(values.astype(np.uint16), format=channels.replace("be", "le"))
    png = tmp_path / "deep.png"
    with av.open(str(png), "w", format="image2") as container_out:
        stream = container_out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 64, 64, channels
        for packet in stream.encode(frame.reformat(format=channels)):
            container_out.mux(packet)
        for packet in stream.encode():
            container_out.mux(packet)
    assert png.read_bytes()[24] == 16  # the PNG header's bit depth: really 16-bit
    result = _cli("encode", png, "--model", "clc", "-o", tmp_path / "deep.nnc")
    assert result.exit_code == 5, result.output
    mode = "RGBA" if channels.startswith("rgba") else "RGB"
    assert result.stderr == (f"nnc: {png}: 16-bit images ({mode}) are not supported (the image codec is 8-bit); "
                             "convert to 8-bit RGB\n")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "16-bit images (RGB) are not supported (the image codec is 8-bit); convert to 8-bit RGB" in readme
    assert not (tmp_path / "deep.nnc").exists()
