"""Tiny valid files that describe huge outputs, and headers `nnc info` must survive (issue 17).

Every case edits a committed golden file's header (the container re-encodes it with
valid CRCs), so nothing is trained here.  The bounds are checked after the header is
read and before any frame is decoded or any output file is created.
"""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnc.bitstream import Chunk, join_chunks, read_bitstream_file, split_chunks
from nnc.bitstream.framing import TAG_HEADER
from nnc.cli.main import main
from nnc.codec.files import decode_file, describe
from nnc.codec.header import check_header
from nnc.errors import InvalidBitstreamError, MediaError
from nnc.fileio import human_size
from nnc.media.limits import DEFAULT_MAX_PIXELS

DATA = Path(__file__).parent / "data"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def edited(tmp_path: Path, golden: str, edit, name: str = "edited.nnc") -> Path:
    """``golden`` with its header edited; the JSON is written as a hostile writer would
    (Infinity, huge numbers, lone surrogates escaped as \\udcff), zlib and CRCs valid."""
    data = (DATA / golden).read_bytes()
    bitstream = read_bitstream_file(DATA / golden)
    header = copy.deepcopy(bitstream.header)
    edit(header)
    text = json.dumps({"codec": bitstream.codec, "header": header}).replace("Infinity", "1e400")
    chunks = split_chunks(data)
    assert chunks[0].tag == TAG_HEADER
    path = tmp_path / name
    path.write_bytes(join_chunks([Chunk(TAG_HEADER, zlib.compress(text.encode("ascii")))] + chunks[1:]))
    return path


def set_media(**values):
    def edit(header):
        header["media"].update(values)
    return edit


@pytest.mark.parametrize("golden, size", [("golden_hnerv.nnc", 16384), ("golden_clc_v1.nnc", 8192)])
def test_huge_frames_are_refused_before_decoding(tmp_path, golden, size):
    path = edited(tmp_path, golden, set_media(width=size, height=size))
    result = run("decode", path, "-o", tmp_path / "out.y4m")
    assert result.exit_code == 5, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "--max-pixels" in line and f"{size}x{size}" in line
    assert not (tmp_path / "out.y4m").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["edited.nnc"]


def test_huge_frame_counts_are_refused_by_the_output_size(tmp_path):
    path = edited(tmp_path, "golden_hnerv.nnc", set_media(width=1920, height=1080, num_frames=100_000))
    result = run("decode", path, "-o", tmp_path / "out.y4m")
    assert result.exit_code == 5 and "--max-output-bytes" in result.stderr, result.output
    # The same file within a raised bound passes the check (and then fails on its own
    # inconsistency: the config's grid is not 1080p), and a frame range counts too.
    with pytest.raises(MediaError, match="--max-output-bytes"):
        decode_file(path, tmp_path / "out.y4m", frame_range=(0, 50_000))
    with pytest.raises(InvalidBitstreamError, match="does not match"):
        decode_file(path, tmp_path / "out.y4m", frame_range=(0, 2))
    assert not (tmp_path / "out.y4m").exists()


def test_the_bounds_are_options_with_sane_defaults(tmp_path):
    golden = DATA / "golden_hnerv.nnc"
    with pytest.raises(MediaError, match="--max-pixels 2048"):
        decode_file(golden, tmp_path / "out.y4m", max_pixels=2047)
    with pytest.raises(MediaError, match="--max-output-bytes"):
        decode_file(golden, tmp_path / "out.y4m", max_output_bytes=1000)
    info, _ = decode_file(golden, tmp_path / "out.y4m", max_pixels=2048)
    assert (info.width, info.height, info.num_frames) == (64, 32, 4)
    assert 3840 * 2160 <= DEFAULT_MAX_PIXELS < 7680 * 4320
    result = run("decode", "--help")
    assert "--max-pixels" in result.output and "--max-output-bytes" in result.output


@pytest.mark.parametrize("count, text", [(0, "0 B"), (1000, "1000 B"), (1024, "1.0 KiB"), (12312, "12.0 KiB"),
                                         ((1 << 20) - 1, "1.0 MiB"), (5 << 30, "5.0 GiB"), (64 << 30, "64.0 GiB")])
def test_human_size(count, text):
    assert human_size(count) == text


def test_small_outputs_are_not_about_0_gib(tmp_path):
    """The output-size message speaks in the size's own unit (it said "about 0.0 GiB")."""
    with pytest.raises(MediaError) as caught:  # 4 frames of 64x32 yuv420p Y4M: 4 x 3078 bytes
        decode_file(DATA / "golden_hnerv.nnc", tmp_path / "out.y4m", max_output_bytes=1000)
    message = str(caught.value)
    assert "about 12.0 KiB, above the limit of 1000 B: pass --max-output-bytes 12312" in message, message
    assert "GiB" not in message


def test_pfnr_member_and_clc_image_are_bounded_too(tmp_path):
    def huge_videos(header):
        for video in header["model"]["videos"]:
            video["media"]["num_frames"] = 1_000_000
    path = edited(tmp_path, "golden_pfnr_fso3.nnc", huge_videos)  # 3.5 GB of 64x36 yuv420p
    with pytest.raises(MediaError, match="--max-output-bytes"):
        decode_file(path, tmp_path / "out.yuv", video_index=1, max_output_bytes=1 << 30)
    clc = edited(tmp_path, "golden_clc_v1.nnc", set_media(width=4096, height=4096), name="clc.nnc")
    with pytest.raises(MediaError, match="--max-pixels"):
        decode_file(clc, tmp_path / "out.png", max_pixels=4096 * 4095)


# --------------------------------------------------------------------------- info == decode


HOSTILE_HEADERS = {
    "media as a string": lambda h: h.update(media="1920x1080"),
    "model not a dict": lambda h: h.update(model=[1, 2]),
    "width 1e400": lambda h: h["media"].update(width=float("inf")),
    "huge width": lambda h: h["media"].update(width=10**400),
    "config float 1e39": lambda h: h["model"]["config"].update(reduce=10**39),
    "config missing": lambda h: h["model"].pop("config"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADERS))
def test_info_refuses_what_decode_refuses_in_one_line(tmp_path, name):
    path = edited(tmp_path, "golden_hnerv.nnc", HOSTILE_HEADERS[name])
    bitstream = read_bitstream_file(path)
    with pytest.raises(InvalidBitstreamError):
        check_header(bitstream.codec, bitstream.header)
    for command in (["info", path], ["info", path, "--json"], ["decode", path, "-o", tmp_path / "o.y4m"]):
        result = run(*command)
        assert result.exit_code == 3, (command, result.output)
        assert result.stderr.startswith("nnc: not a valid .nnc file") and result.stderr.count("\n") == 1


ODD_ENCODER_RECORDS = {
    "psnr as a string": {"psnr_rgb": "30 dB", "nnc": "0.1"},
    "huge psnr": {"psnr_rgb": 10**400},
    "infinite psnr": {"psnr_rgb": float("inf")},
    "lone surrogate": {"psnr_rgb": 30.0, "nnc": "\udcff", "settings": {"a\ud800": "\udfff"}},
    "record not a dict": "encoder",
}


@pytest.mark.parametrize("name", sorted(ODD_ENCODER_RECORDS))
def test_info_shows_any_encoder_record_decode_ignores(tmp_path, name):
    path = edited(tmp_path, "golden_hnerv.nnc", lambda h: h.update(encoder=ODD_ENCODER_RECORDS[name]))
    for command in (["info", path], ["info", path, "--json"]):
        result = run(*command)
        assert result.exit_code == 0, result.output
        result.output.encode("utf-8")  # printable: no lone surrogate reached the terminal
    json.loads(run("info", path, "--json").output)
    assert "PSNR-RGB 30.00" in describe(path)["text"] or name != "lone surrogate"


def test_info_of_a_set_with_odd_records(tmp_path):
    def odd(header):
        header["model"]["videos"][0].update(psnr_rgb=10**400, source="\udcff")
        header["model"]["videos"][1].update(psnr_rgb="x")
    path = edited(tmp_path, "golden_pfnr_fso3.nnc", odd)
    result = run("info", path)
    assert result.exit_code == 0 and "video 1" in result.output, result.output
