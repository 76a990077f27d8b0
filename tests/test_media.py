"""Media I/O: reading, colour conversion, writing, errors.

Clips are tiny and synthetic (8 frames of 128x64: a gradient and a moving square),
made here with PyAV so the reader is not only tested against its own writer.  The
real clips in ../shared/media are used when present, skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from nnc.errors import MediaError
from nnc.media import (
    OUTPUT_FORMATS, Video, VideoInfo, VideoWriter, describe_colour, output_format_for, probe_video, read_video,
    rgb_to_source, write_video,
)
from nnc.media.colour import frame_planes

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "video"
T, H, W = 8, 64, 128


def synthetic_rgb(depth: int = 8, frames: int = T, height: int = H, width: int = W) -> np.ndarray:
    """Smooth gradients plus a square moving 6 px per frame: chroma edges and motion."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    clip = np.empty((frames, height, width, 3))
    for t in range(frames):
        clip[t, ..., 0] = 0.1 + 0.8 * x / (width - 1)
        clip[t, ..., 1] = 0.1 + 0.8 * y / (height - 1)
        clip[t, ..., 2] = 0.5 + 0.3 * np.sin((x + 4 * t) / 9)
        clip[t, 16:32, 8 + 6 * t: 24 + 6 * t] = (0.85, 0.25, 0.15)
    top = 255 if depth == 8 else 65535
    return np.round(clip * top).astype(np.uint8 if depth == 8 else np.uint16)


def make_source(path: Path, pix_fmt: str, *, muxer: str = "matroska", codec: str = "ffv1", fps=25,
                depth: int = 8, frames: int = T, height: int = H, width: int = W) -> list[list[np.ndarray]]:
    """Write a synthetic clip with plain PyAV (not our writer); returns the YUV planes stored."""
    rgb = synthetic_rgb(depth, frames, height, width)
    options = {"strict": "unofficial"} if muxer == "yuv4mpegpipe" else {}
    codec_options = {"x265-params": "log-level=error"} if codec == "libx265" else {}
    planes = []
    with av.open(str(path), "w", format=muxer, options=options) as container:
        stream = container.add_stream(codec, rate=fps, options=codec_options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for index, frame_rgb in enumerate(rgb):
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24" if depth == 8 else "rgb48le")
            frame = frame.reformat(format=pix_fmt)
            frame.pts = index
            planes.append(frame_planes(frame))
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return planes


def decoded_planes(path: Path, **open_args) -> list[list[np.ndarray]]:
    with av.open(str(path), **open_args) as container:
        return [frame_planes(frame) for frame in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray, peak: int) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def rgb_video(depth: int = 8) -> Video:
    info = VideoInfo(W, H, T, Fraction(25), "rgb24" if depth == 8 else "rgb48le", 16 if depth > 8 else 8, "rgb", "pc")
    return Video(synthetic_rgb(depth), info)


@pytest.fixture
def yuv420_mkv(tmp_path) -> tuple[Path, list]:
    path = tmp_path / "source.mkv"
    return path, make_source(path, "yuv420p")


# --- VideoInfo ---------------------------------------------------------------------------


def test_video_info_dict_round_trip():
    info = VideoInfo(1920, 1080, 300, Fraction(30000, 1001), "yuv420p10le", 10, "bt709", "tv")
    assert VideoInfo.from_dict(info.to_dict()) == info
    assert info.to_dict()["fps"] == [30000, 1001]


GOOD = VideoInfo(64, 32, 8, Fraction(25), "yuv420p", 8, "bt601", "tv").to_dict()


@pytest.mark.parametrize("change", [
    {"width": 0}, {"width": 16385}, {"height": -4}, {"width": True}, {"width": 64.0}, {"height": "32"},
    {"num_frames": 0}, {"num_frames": 10**6 + 1}, {"fps": [0, 1]}, {"fps": [25, 0]}, {"fps": [-25, 1]},
    {"fps": [10**6, 1]}, {"fps": [1, 10**7]}, {"fps": 25}, {"fps": [25]}, {"fps": [25.0, 1]}, {"fps": "25/1"},
    {"pix_fmt": "yuv999p"}, {"pix_fmt": 3}, {"bit_depth": 10}, {"bit_depth": 7},
    {"color_matrix": "smpte240m"}, {"color_matrix": "rgb"}, {"color_range": "full"},
    {"pix_fmt": "rgb24", "color_matrix": "bt601"}, {"pix_fmt": "rgb24", "color_matrix": "rgb", "color_range": "tv"},
    {"extra": 1},
])
def test_video_info_from_dict_rejects_nonsense(change):
    with pytest.raises(ValueError):
        VideoInfo.from_dict({**GOOD, **change})


@pytest.mark.parametrize("bad", [None, [], "x", {k: v for k, v in GOOD.items() if k != "pix_fmt"}])
def test_video_info_from_dict_rejects_non_mappings_and_missing_fields(bad):
    with pytest.raises(ValueError):
        VideoInfo.from_dict(bad)


# --- reading -----------------------------------------------------------------------------


def test_read_ffv1_metadata_and_colour(yuv420_mkv):
    path, _ = yuv420_mkv
    video = read_video(path)
    assert video.frames.shape == (T, H, W, 3) and video.frames.dtype == np.uint8
    assert video.info == VideoInfo(W, H, T, Fraction(25), "yuv420p", 8, "bt601", "tv")
    assert video.max_value == 255
    assert probe_video(path) == video.info
    assert describe_colour(video.info) == "bt601 tv (ffmpeg default)"
    # Default conversion is ffmpeg's: swscale, the stream's tags, bicubic flags.
    with av.open(str(path)) as container:
        expected = np.stack([f.to_ndarray(format="rgb24", interpolation="BICUBIC") for f in container.decode(video=0)])
    np.testing.assert_array_equal(video.frames, expected)
    assert psnr(video.frames, synthetic_rgb(), 255) > 35


def test_colour_overrides_change_and_record_conversion(yuv420_mkv):
    path, _ = yuv420_mkv
    default = read_video(path, max_frames=2)
    bt709 = read_video(path, max_frames=2, color_matrix="bt709", color_range="pc")
    assert (bt709.info.color_matrix, bt709.info.color_range) == ("bt709", "pc")
    assert np.abs(bt709.frames.astype(int) - default.frames).max() > 10
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        expected = frame.to_ndarray(format="rgb24", interpolation="BICUBIC", src_colorspace="ITU709",
                                    src_color_range="JPEG", dst_color_range="JPEG")
    np.testing.assert_array_equal(bt709.frames[0], expected)
    assert describe_colour(bt709.info, overridden=True) == "bt709 pc (override)"


def test_max_frames_and_fps_override(yuv420_mkv):
    path, _ = yuv420_mkv
    video = read_video(path, max_frames=3, fps=Fraction(30000, 1001))
    assert video.frames.shape[0] == video.info.num_frames == 3
    assert video.info.fps == Fraction(30000, 1001)
    assert probe_video(path, max_frames=3).num_frames == 3


@pytest.mark.parametrize("kind", ["mkv", "y4m", "yuv", "png"])
def test_start_frame_reads_only_that_range(tmp_path, kind):
    """``--frames 3:5``: the frames before START are skipped (never kept), the count is
    the range's, and the planes, the probe and a too-late START agree with it."""
    from nnc.media.reader import read_planes

    path = tmp_path / {"mkv": "c.mkv", "y4m": "c.y4m", "yuv": "c.yuv", "png": "frames"}[kind]
    write_video(path, Video(synthetic_rgb(), VideoInfo(W, H, T, Fraction(25), "yuv420p", 8, "bt601", "tv")))
    raw = {"size": (W, H), "pix_fmt": "yuv420p"} if kind == "yuv" else {}
    full = read_video(path, **raw)
    part = read_video(path, start_frame=3, max_frames=2, **raw)
    assert part.frames.shape[0] == part.info.num_frames == 2
    assert np.array_equal(part.frames, full.frames[3:5])
    assert np.array_equal(read_video(path, start_frame=6, **raw).frames, full.frames[6:])
    assert probe_video(path, start_frame=3, max_frames=2, **raw).num_frames == 2
    assert probe_video(path, start_frame=5, **raw).num_frames == T - 5
    if kind != "png":
        info, planes = read_planes(path, start_frame=3, max_frames=2, **raw)
        assert info.num_frames == len(planes) == 2
        assert np.array_equal(planes[0][0], read_planes(path, **raw)[1][3][0])
    expect_media_error(read_video, path, start_frame=T, match=f"has {T} frames: no frame {T} to start from", **raw)
    expect_media_error(read_video, path, start_frame=-1, **raw)


@pytest.mark.parametrize("muxer, codec, suffix", [
    ("mp4", "libx264", ".mp4"), ("mov", "libx264", ".mov"), ("webm", "libvpx-vp9", ".webm"),
    ("h264", "libx264", ".h264"), ("hevc", "libx265", ".265"),
])
def test_read_containers_and_annex_b_streams(tmp_path, muxer, codec, suffix):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV has no {codec}")
    path = tmp_path / f"clip{suffix}"
    make_source(path, "yuv420p", muxer=muxer, codec=codec)
    video = read_video(path)
    assert video.info == VideoInfo(W, H, T, Fraction(25), "yuv420p", 8, "bt601", "tv")
    assert probe_video(path) == video.info
    assert psnr(video.frames, synthetic_rgb(), 255) > 30
    assert read_video(path, fps=29.97, max_frames=2).info.fps == Fraction(2997, 100)


def test_read_y4m_10bit_as_rgb48(tmp_path):
    path = tmp_path / "deep.y4m"
    make_source(path, "yuv420p10le", muxer="yuv4mpegpipe", codec="rawvideo", fps=50, depth=16)
    video = read_video(path)
    assert video.frames.dtype == np.uint16 and video.max_value == 65535
    assert video.info == VideoInfo(W, H, T, Fraction(50), "yuv420p10le", 10, "bt601", "tv")
    assert probe_video(path) == video.info
    # Full 16-bit scale: a 10-bit source spans far more than 0..1023.
    assert video.frames.max() > 50000
    assert psnr(video.frames, synthetic_rgb(16), 65535) > 35


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_read_raw_yuv_with_size_and_pix_fmt(tmp_path, pix_fmt):
    y4m = tmp_path / "clip.y4m"
    planes = make_source(y4m, pix_fmt, muxer="yuv4mpegpipe", codec="rawvideo", depth=8 if pix_fmt == "yuv420p" else 16)
    raw = tmp_path / "clip.yuv"
    raw.write_bytes(b"".join(plane.tobytes() for frame in planes for plane in frame))
    video = read_video(raw, size=(W, H), pix_fmt=pix_fmt)
    depth = 8 if pix_fmt == "yuv420p" else 10
    assert video.info == VideoInfo(W, H, T, Fraction(25), pix_fmt, depth, "bt601", "tv")
    np.testing.assert_array_equal(video.frames, read_video(y4m).frames)
    assert read_video(raw, size=(W, H), pix_fmt=pix_fmt, fps=Fraction(50)).info.fps == 50
    assert probe_video(raw, size=(W, H), pix_fmt=pix_fmt, max_frames=5).num_frames == 5


def test_read_png_folder_natural_order_and_16_bit(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    clip = synthetic_rgb(16, frames=3)
    for index, frame in enumerate(clip):
        # Unpadded names: f10 must not sort before f2.
        name = folder / f"f{index * 5 + 1}.png"
        png = av.VideoFrame.from_ndarray(frame, format="rgb48le").reformat(format="rgb48be")
        context = av.CodecContext.create("png", "w")
        context.width, context.height, context.pix_fmt = W, H, "rgb48be"
        name.write_bytes(b"".join(bytes(p) for p in context.encode(png)))
    (folder / "notes.txt").write_text("not a frame")
    video = read_video(folder)
    assert video.info == VideoInfo(W, H, 3, Fraction(25), "rgb48le", 16, "rgb", "pc")
    np.testing.assert_array_equal(video.frames, clip)
    assert describe_colour(video.info).startswith("rgb")
    assert probe_video(folder, fps=Fraction(10)).fps == 10


# --- writing -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["y4m", "yuv", "mkv"])
def test_lossless_yuv_outputs_store_exact_planes(tmp_path, yuv420_mkv, fmt):
    source, _ = yuv420_mkv
    video = read_video(source)
    out = tmp_path / f"out.{fmt}"
    write_video(out, video)
    read_args = {"size": (W, H), "pix_fmt": "yuv420p"} if fmt == "yuv" else {}
    back = read_video(out, **read_args)
    assert back.info == video.info  # size, frames, fps, pix_fmt, depth, colour
    # Exact in the source pixel-format domain: the file holds precisely the YUV that
    # the recorded matrix/range make from the frames, in the source's yuv420p.
    raw_options = {"video_size": f"{W}x{H}", "pixel_format": "yuv420p"}
    open_args = {"format": "rawvideo", "options": raw_options} if fmt == "yuv" else {}
    stored = decoded_planes(out, **open_args)
    assert len(stored) == T
    for frame_rgb, planes in zip(video.frames, stored):
        expected = frame_planes(rgb_to_source(frame_rgb, video.info, "yuv420p"))
        for plane, want in zip(planes, expected):
            np.testing.assert_array_equal(plane, want)
    # Reading back reproduces the frames up to 4:2:0 chroma and colour rounding.
    assert psnr(back.frames, video.frames, 255) > 38


def test_yuv444_round_trip_is_exact_up_to_rounding(tmp_path):
    source = tmp_path / "source.mkv"
    original = make_source(source, "yuv444p")
    out = tmp_path / "out.y4m"
    write_video(out, read_video(source))
    for planes, want in zip(decoded_planes(out), original):
        for plane, plane_want in zip(planes, want):
            assert np.abs(plane.astype(int) - plane_want).max() <= 1


def test_y4m_10bit_round_trip(tmp_path):
    source = tmp_path / "deep.y4m"
    make_source(source, "yuv420p10le", muxer="yuv4mpegpipe", codec="rawvideo", depth=16)
    video = read_video(source)
    out = tmp_path / "out.y4m"
    write_video(out, video)
    assert out.read_bytes().startswith(b"YUV4MPEG2 W128 H64 F25:1")
    back = read_video(out)
    assert back.info == video.info and back.frames.dtype == np.uint16
    for frame_rgb, planes in zip(video.frames, decoded_planes(out)):
        for plane, want in zip(planes, frame_planes(rgb_to_source(frame_rgb, video.info, "yuv420p10le"))):
            np.testing.assert_array_equal(plane, want)
    assert psnr(back.frames, video.frames, 65535) > 45


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("fmt", ["png", "mkv"])
def test_rgb_sources_round_trip_exactly(tmp_path, fmt, depth):
    video = rgb_video(depth)
    out = tmp_path / ("frames" if fmt == "png" else "out.mkv")
    write_video(out, video, format=fmt)
    if fmt == "png":
        assert sorted(p.name for p in out.iterdir()) == [f"f{i:05d}.png" for i in range(1, T + 1)]
    back = read_video(out)
    assert back.info == video.info
    np.testing.assert_array_equal(back.frames, video.frames)


def test_png_output_of_yuv_source_is_exact_rgb(tmp_path, yuv420_mkv):
    video = read_video(yuv420_mkv[0])
    write_video(tmp_path / "frames", video)
    back = read_video(tmp_path / "frames")
    assert (back.info.width, back.info.height, back.info.num_frames, back.info.pix_fmt) == (W, H, T, "rgb24")
    np.testing.assert_array_equal(back.frames, video.frames)


def test_rgb_source_to_y4m_uses_yuv444(tmp_path):
    video = rgb_video(8)
    write_video(tmp_path / "out.y4m", video)
    back = read_video(tmp_path / "out.y4m")
    assert (back.info.pix_fmt, back.info.color_matrix, back.info.color_range) == ("yuv444p", "bt601", "tv")
    assert np.abs(back.frames.astype(int) - video.frames).max() <= 3


@pytest.mark.parametrize("source_fmt, expected_codec", [("yuv420p", "h264"), ("yuv420p10le", "h264"),
                                                        ("yuv420p12le", "hevc")])
def test_mp4_output(tmp_path, source_fmt, expected_codec):
    source = tmp_path / "source.mkv"
    make_source(source, source_fmt, depth=8 if source_fmt == "yuv420p" else 16, fps=Fraction(30000, 1001))
    video = read_video(source)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, video.info, crf=12) as writer:
        assert "crf 12" in writer.description
        writer.write(video.frames)
    back = read_video(out)
    assert back.info == video.info
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == expected_codec
    assert psnr(back.frames, video.frames, video.max_value) > 35


def test_bt709_full_range_is_tagged_and_read_back(tmp_path, yuv420_mkv):
    video = read_video(yuv420_mkv[0], color_matrix="bt709", color_range="pc")
    for fmt in ("mkv", "mp4"):
        write_video(tmp_path / f"out.{fmt}", video)
        back = read_video(tmp_path / f"out.{fmt}")
        assert (back.info.color_matrix, back.info.color_range) == ("bt709", "pc")
        assert psnr(back.frames, video.frames, 255) > 35


def test_streaming_batches_equal_one_write(tmp_path, yuv420_mkv):
    video = read_video(yuv420_mkv[0])
    write_video(tmp_path / "whole.y4m", video)
    with VideoWriter(tmp_path / "batched.y4m", video.info) as writer:
        for start in range(0, T, 3):
            writer.write(video.frames[start:start + 3])
        writer.write(video.frames[0][None][:0])  # an empty batch is harmless
    assert (tmp_path / "whole.y4m").read_bytes() == (tmp_path / "batched.y4m").read_bytes()


def test_output_format_for(tmp_path):
    assert output_format_for("a.Y4M") == "y4m"
    assert output_format_for("a.mkv") == "mkv"
    assert output_format_for("frames") == "png"
    assert output_format_for("frames/") == "png"
    assert output_format_for(tmp_path) == "png"
    assert output_format_for("a.avi", format="mp4") == "mp4"
    assert set(OUTPUT_FORMATS) == {"y4m", "png", "yuv", "mkv", "mp4"}
    with pytest.raises(MediaError):
        output_format_for("a.avi")
    with pytest.raises(MediaError):
        output_format_for("a.mkv", format="webm")


# --- atomic writes -----------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("target", ["out.y4m", "out.mp4", "frames"])
def test_abort_leaves_nothing(tmp_path, target):
    video = rgb_video()
    writer = VideoWriter(tmp_path / target, video.info)
    writer.write(video.frames[:2])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_failure_does_not_clobber_existing_output(tmp_path):
    video = rgb_video()
    out = tmp_path / "out.y4m"
    out.write_bytes(b"precious")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, video.info) as writer:
            writer.write(video.frames[:2])
            raise RuntimeError("decoder died")
    assert out.read_bytes() == b"precious" and leftovers(tmp_path) == []
    with pytest.raises(ValueError):
        with VideoWriter(out, video.info) as writer:
            writer.write(video.frames.astype(np.uint16))  # wrong dtype for an 8-bit video
    assert out.read_bytes() == b"precious" and leftovers(tmp_path) == []
    with pytest.raises(MediaError):
        VideoWriter(out, video.info).close()  # no frames
    assert out.read_bytes() == b"precious" and leftovers(tmp_path) == []
    write_video(out, video)
    assert out.read_bytes().startswith(b"YUV4MPEG2") and leftovers(tmp_path) == []
    assert (out.stat().st_mode & 0o777) != 0o600  # not the temp file's private mode


def test_png_folder_rewrite_replaces_frames(tmp_path):
    video = rgb_video()
    folder = tmp_path / "frames"
    write_video(folder, video)
    (folder / "keep.txt").write_text("user file")
    shorter = Video(video.frames[:3, ::-1].copy(), VideoInfo(W, H, 3, Fraction(25), "rgb24", 8, "rgb", "pc"))
    write_video(folder, shorter)
    assert sorted(p.name for p in folder.iterdir()) == ["f00001.png", "f00002.png", "f00003.png", "keep.txt"]
    np.testing.assert_array_equal(read_video(folder).frames, shorter.frames)
    assert leftovers(tmp_path) == []


# --- errors ------------------------------------------------------------------------------


def expect_media_error(call, *args, match: str | None = None, **kwargs):
    with pytest.raises(MediaError, match=match) as caught:
        call(*args, **kwargs)
    assert "\n" not in str(caught.value)


def test_read_errors(tmp_path, yuv420_mkv):
    expect_media_error(read_video, tmp_path / "missing.mp4", match="not found")
    (tmp_path / "junk.mp4").write_bytes(os.urandom(4096))
    expect_media_error(read_video, tmp_path / "junk.mp4")
    (tmp_path / "notes.txt").write_text("hello, not a video\n" * 20)
    expect_media_error(read_video, tmp_path / "notes.txt")
    (tmp_path / "empty.mp4").write_bytes(b"")
    expect_media_error(read_video, tmp_path / "empty.mp4")
    # A container whose data is cut short: decoding fails or yields frames, never a traceback.
    source, _ = yuv420_mkv
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(source.read_bytes()[:300])
    try:
        read_video(cut)
    except MediaError:
        pass
    expect_media_error(probe_video, tmp_path / "missing.y4m")
    expect_media_error(read_video, source, color_matrix="xyz")
    expect_media_error(read_video, source, color_range="full")
    expect_media_error(read_video, source, size=(64, 64), match="not the 64x64")
    expect_media_error(read_video, source, pix_fmt="yuv444p")


def test_raw_yuv_errors(tmp_path):
    raw = tmp_path / "clip.yuv"
    raw.write_bytes(bytes(W * H * 3 // 2 * 2))
    expect_media_error(read_video, raw, match="needs --video-size WxH and --pix-fmt")
    expect_media_error(read_video, raw, size=(W, H), match="--pix-fmt")
    expect_media_error(read_video, raw, size=(W, H + 2), pix_fmt="yuv420p", match="whole number")
    expect_media_error(read_video, raw, size=(W, H), pix_fmt="nv12", match="unsupported pixel format")
    expect_media_error(read_video, raw, size=(W, 0), pix_fmt="yuv420p")
    assert read_video(raw, size=(W, H), pix_fmt="yuv420p").info.num_frames == 2
    (tmp_path / "empty.yuv").write_bytes(b"")
    expect_media_error(read_video, tmp_path / "empty.yuv", size=(W, H), pix_fmt="yuv420p", match="no frames")


def test_zero_frame_inputs(tmp_path):
    header_only = tmp_path / "empty.y4m"
    header_only.write_bytes(b"YUV4MPEG2 W128 H64 F25:1 Ip A0:0 C420jpeg\n")
    expect_media_error(read_video, header_only)
    expect_media_error(probe_video, header_only)
    (tmp_path / "no_frames").mkdir()
    expect_media_error(read_video, tmp_path / "no_frames", match="no .png")


def test_png_folder_errors(tmp_path):
    folder = tmp_path / "frames"
    write_video(folder, rgb_video())
    small = Video(synthetic_rgb(frames=1, height=32), VideoInfo(W, 32, 1, Fraction(25), "rgb24", 8, "rgb", "pc"))
    write_video(folder / "f00009.png", small)
    expect_media_error(read_video, folder, match="f00009.png is 128x32")
    (folder / "f00009.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    expect_media_error(read_video, folder, match="f00009.png")
    expect_media_error(read_video, folder, color_matrix="bt709", match="RGB")


def test_gray_range_override_is_refused(tmp_path):
    source = tmp_path / "gray.mkv"
    make_source(source, "gray")
    video = read_video(source)
    assert (video.info.pix_fmt, video.info.color_range) == ("gray", "pc")
    assert np.all(video.frames[..., 0] == video.frames[..., 2])
    expect_media_error(read_video, source, color_range="tv", match="gray")
    write_video(tmp_path / "gray.y4m", video)
    np.testing.assert_array_equal(read_video(tmp_path / "gray.y4m").frames, video.frames)


def unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    # root ignores permissions; sysfs refuses new files even to root.
    try:
        tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    pytest.skip("no unwritable folder available to root here")


def test_write_errors(tmp_path):
    video = rgb_video()
    expect_media_error(VideoWriter, tmp_path / "missing" / "out.y4m", video.info, match="does not exist")
    expect_media_error(VideoWriter, tmp_path / "missing" / "frames", video.info, match="does not exist")
    expect_media_error(VideoWriter, unwritable_folder(tmp_path) / "out.y4m", video.info, match="cannot write")
    expect_media_error(VideoWriter, tmp_path / "out.avi", video.info, match="output format")
    expect_media_error(VideoWriter, tmp_path, video.info, format="mkv", match="is a folder")
    expect_media_error(VideoWriter, tmp_path / "out.mp4", video.info, crf=99, match="crf")
    expect_media_error(VideoWriter, tmp_path / "one.png", video.info, match="one frame")
    odd = VideoInfo(W - 1, H, T, Fraction(25), "yuv420p", 8, "bt601", "tv")
    expect_media_error(VideoWriter, tmp_path / "odd.mp4", odd, match="even")
    deep = VideoInfo(W, H, T, Fraction(25), "yuv444p16le", 16, "bt601", "tv")
    expect_media_error(VideoWriter, tmp_path / "deep.mp4", deep, match="12 bits")
    (tmp_path / "file").write_text("x")
    expect_media_error(VideoWriter, tmp_path / "file", video.info, format="png", match="not a folder")
    assert leftovers(tmp_path) == []


# --- real clips (../shared/media) --------------------------------------------------------


def shared(name: str) -> Path:
    path = SHARED_MEDIA / name
    if not path.is_file():
        pytest.skip(f"shared test media {path} is absent")
    return path


def test_shared_bunny_mp4():
    path = shared("bunny_1280x720_25fps_132f.mp4")
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (1280, 720, 132, 25)
    assert (info.pix_fmt, info.bit_depth, info.color_matrix, info.color_range) == ("yuv420p", 8, "bt601", "tv")
    head = read_video(path, max_frames=3)
    assert head.frames.shape == (3, 720, 1280, 3)


def test_shared_bunny_equals_ffmpeg_cli(tmp_path):
    path = shared("bunny_1280x720_25fps_132f.mp4")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg command is not installed")
    subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-frames:v", "3", str(tmp_path / "f%05d.png")], check=True)
    np.testing.assert_array_equal(read_video(path, max_frames=3).frames, read_video(tmp_path).frames)


def test_shared_park_joy_10bit_and_bus_yuv():
    park = read_video(shared("park_joy_160x90_20f_10bit.y4m"))
    assert park.info == VideoInfo(160, 90, 20, Fraction(50), "yuv420p10le", 10, "bt601", "tv")
    assert park.frames.dtype == np.uint16
    bus = probe_video(shared("bus_352x288_17f_yuv420p.yuv"), size=(352, 288), pix_fmt="yuv420p")
    assert (bus.width, bus.height, bus.num_frames, bus.fps) == (352, 288, 17, 25)


def _png_rgb16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG written byte by byte (Pillow cannot write one)."""
    import struct
    import zlib

    height, width, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[row].astype(">u2").tobytes() for row in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_image_reader_refuses_16_bit_rgb_png(tmp_path):
    """Pillow opens a 16-bit RGB PNG as 8-bit "RGB" (the low byte dropped); the README
    promises a refusal, and coding it silently would measure against another image."""
    from nnc.media.image import read_image

    deep = tmp_path / "deep.png"
    _png_rgb16(deep, np.arange(8 * 8 * 3, dtype=np.uint16).reshape(8, 8, 3) * 257)
    with pytest.raises(MediaError, match="16-bit images .* not supported") as caught:
        read_image(deep)
    assert "\n" not in str(caught.value)


def test_output_size_estimate_and_limits():
    from nnc.media import DEFAULT_MAX_PIXELS, check_output_limits, estimated_output_bytes

    info = VideoInfo(1920, 1080, 100_000, Fraction(25), "yuv420p", 8, "bt709", "tv")
    assert estimated_output_bytes(info, "yuv") == 1920 * 1080 * 3 // 2 * 100_000  # exact for raw YUV
    assert estimated_output_bytes(info, "y4m", num_frames=10) == (1920 * 1080 * 3 // 2 + 6) * 10
    deep = VideoInfo(17, 9, 1, Fraction(25), "yuv420p10le", 10, "bt709", "tv")
    assert estimated_output_bytes(deep, "yuv") == 2 * (17 * 9 + 2 * 9 * 5)  # chroma rounds up, 2 bytes a sample
    with pytest.raises(MediaError, match="--max-output-bytes") as caught:
        check_output_limits(info, "y4m")
    assert "\n" not in str(caught.value)
    check_output_limits(info, "y4m", num_frames=100)  # a frame range that fits
    check_output_limits(info, "y4m", max_output_bytes=10**12)
    huge = VideoInfo(16384, 16384, 1, Fraction(25), "yuv420p", 8, "bt709", "tv")
    assert huge.width * huge.height > DEFAULT_MAX_PIXELS
    with pytest.raises(MediaError, match="--max-pixels 268435456"):
        check_output_limits(huge, "png")
    check_output_limits(huge, "png", max_pixels=16384 * 16384)
