"""Measurements a researcher can publish (issue 16): native-plane YUV PSNR checked against
ffmpeg's psnr filter, classical baselines without encoder metadata (NAL units parsed), and
the report's log bpp axis and overlay warnings (HTML parsed; rendered in Chromium if present)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import av
import av.filter
import numpy as np
import pytest
from click.testing import CliRunner

from nnc.cli.main import main
from nnc.eval.baselines import classical_codec, elementary_stream, run_baseline
from nnc.eval.datasets import InputSpec
from nnc.eval.planes import reference_planes
from nnc.media import Video, VideoInfo, read_video, write_video
from nnc.metrics import psnr_planes

from synthetic import REPO, synthetic_frames, synthetic_video

FRAMES, HEIGHT, WIDTH = 4, 48, 64


def _ffmpeg_psnr(reference: Path, distorted: Path) -> dict:
    """Per-frame PSNR-Y/U/V from ffmpeg's psnr filter (via PyAV's filter graph), averaged over frames."""
    ref_frames = list(av.open(str(reference)).decode(video=0))
    dist_frames = list(av.open(str(distorted)).decode(video=0))
    assert len(ref_frames) == len(dist_frames)
    first = ref_frames[0]
    graph = av.filter.Graph()
    inputs = [graph.add_buffer(width=first.width, height=first.height, format=first.format.name,
                               time_base=Fraction(1, 25)) for _ in range(2)]
    psnr, sink = graph.add("psnr"), graph.add("buffersink")
    inputs[0].link_to(psnr, 0, 0)
    inputs[1].link_to(psnr, 0, 1)
    psnr.link_to(sink)
    graph.configure()
    values = {"y": [], "u": [], "v": []}
    for index, (ref, dist) in enumerate(zip(ref_frames, dist_frames)):
        for frame in (ref, dist):
            frame.pts, frame.time_base = index, Fraction(1, 25)
        if dist.format.name != first.format.name:  # e.g. yuvj420p from a decoder: same planes
            dist = dist.reformat(format=first.format.name)
        inputs[0].push(ref)
        inputs[1].push(dist)
        metadata = sink.pull().metadata
        for plane in values:
            values[plane].append(float(metadata[f"lavfi.psnr.psnr.{plane}"]))
    return {f"psnr-{plane}": float(np.mean(v)) for plane, v in values.items()}


def test_plane_psnr_on_known_planes_with_the_right_peak():
    rng = np.random.default_rng(1)
    for depth, dtype in ((8, np.uint8), (10, np.uint16)):
        ref = [[rng.integers(64, 900 if depth == 10 else 230, (8, 8)).astype(dtype),
                np.full((4, 4), 128, dtype), np.full((4, 4), 128, dtype)] for _ in range(2)]
        dist = [[plane.copy() for plane in frame] for frame in ref]
        dist[0][0][0, 0] += 4  # one luma sample off by 4: MSE 16/64
        dist[1][1][:] += 2  # every U sample of frame 1 off by 2: MSE 4
        peak = 2**depth - 1
        result = psnr_planes(ref, dist, depth)
        y0 = 10 * np.log10(peak**2 / (16 / 64))
        u1 = 10 * np.log10(peak**2 / 4)
        assert result["psnr-y"] == pytest.approx((y0 + 100) / 2)  # identical frame 1 capped at 100 dB
        assert result["psnr-u"] == pytest.approx((100 + u1) / 2)
        assert result["psnr-v"] == 100
        assert result["psnr-yuv"] == pytest.approx((6 * result["psnr-y"] + result["psnr-u"] + 100) / 8)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
def test_nnc_decoded_output_matches_ffmpeg_psnr_on_the_native_planes(tmp_path, pix_fmt):
    # The source is a Y4M in its own format; a distorted RGB (as a codec decodes it) is written
    # the way `nnc decode` writes it; ffmpeg's psnr filter compares the two files' planes.
    depth = 8 if pix_fmt == "yuv420p" else 10
    rgb = synthetic_frames(FRAMES, HEIGHT, WIDTH)
    info = VideoInfo(width=WIDTH, height=HEIGHT, num_frames=FRAMES, fps=Fraction(25), pix_fmt=pix_fmt,
                     bit_depth=depth, color_matrix="bt709", color_range="tv")
    frames = rgb if depth == 8 else rgb.astype(np.uint16) * 257
    source = tmp_path / "source.y4m"
    write_video(source, Video(frames=frames, info=info))
    video = read_video(source)
    noise = np.random.default_rng(0).integers(-6, 7, video.frames.shape) * (1 if depth == 8 else 257)
    decoded = np.clip(video.frames.astype(np.int64) + noise, 0, video.max_value).astype(video.frames.dtype)
    written = tmp_path / "decoded.y4m"
    write_video(written, Video(frames=decoded, info=video.info))

    spec = InputSpec(name="source", kind="clip", path=str(source))
    reference = reference_planes(video, spec.source_planes())
    assert reference.origin == "source" and reference.format.pix_fmt == pix_fmt
    ours = reference.measure(decoded, video.info)
    theirs = _ffmpeg_psnr(source, written)
    for plane in ("y", "u", "v"):
        assert ours[f"psnr-{plane}"] == pytest.approx(theirs[f"psnr-{plane}"], abs=1e-4), plane
    assert 20 < ours["psnr-y"] < 60


def test_classical_baseline_psnr_matches_ffmpeg_on_its_decoded_planes(tmp_path):
    source = tmp_path / "source.y4m"
    write_video(source, synthetic_video(FRAMES, HEIGHT, WIDTH))
    spec = InputSpec(name="source", kind="clip", path=str(source))
    video = spec.load()
    reference = reference_planes(video, spec.source_planes())
    measured = run_baseline(video, classical_codec("x264"), 37, tmp_path, reference=reference)
    theirs = _ffmpeg_psnr(source, tmp_path / "x264-medium_crf37.mp4")
    for plane in ("y", "u", "v"):
        assert measured[f"psnr-{plane}"] == pytest.approx(theirs[f"psnr-{plane}"], abs=1e-4), plane
    # The encoder got the source's own planes, not an RGB round trip of them.
    assert measured["settings"]["encoder_input"] == "the source's own planes"


def _nal_units(stream: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    starts, index = [], 0
    while (index := stream.find(b"\x00\x00\x01", index)) != -1:
        starts.append(index + 3)
        index += 3
    return [stream[start: (starts[i + 1] - 3 if i + 1 < len(starts) else len(stream))].rstrip(b"\x00")
            for i, start in enumerate(starts)]


def _sei_payload_types(stream: bytes, hevc: bool) -> list[int]:
    types = []
    for nal in _nal_units(stream):
        nal_type = (nal[0] >> 1) & 0x3F if hevc else nal[0] & 0x1F
        if nal_type not in ((39, 40) if hevc else (6,)):
            continue
        position, payload_type = (2 if hevc else 1), 0
        while nal[position] == 0xFF:
            payload_type += 255
            position += 1
        types.append(payload_type + nal[position])
    return types


def _plain_x264_stream() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
                                    .reformat(format="yuv420p")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def test_the_nal_parser_sees_x264s_settings_sei_when_it_is_there():
    # Without nnc's filter x264 writes a user-data-unregistered SEI (payload type 5) naming its settings.
    stream = _plain_x264_stream()
    assert 5 in _sei_payload_types(stream, hevc=False) and b"options:" in stream


@pytest.mark.parametrize("name", ["x264", "x265", "x264-444", "x265-444"])
def test_x264_and_x265_files_carry_no_settings_sei(tmp_path, name):
    video = synthetic_video(FRAMES, HEIGHT, WIDTH)
    codec = classical_codec(name)
    measured = run_baseline(video, codec, 32, tmp_path)
    mp4 = tmp_path / f"{codec.name}_crf32.mp4"
    stream = elementary_stream(mp4)
    assert 5 not in _sei_payload_types(stream, hevc=codec.family == "x265")
    data = mp4.read_bytes()
    assert b"options:" not in data and b"x264 - core" not in data and b"x265 (build" not in data
    # Payload = the elementary stream; the file adds the container.
    assert measured["payload_bytes"] == len(stream) < measured["bytes"] == len(data)
    assert measured["settings"]["pix_fmt"] == ("yuv444p" if "444" in name else "yuv420p")
    assert read_video(mp4).info.pix_fmt == measured["settings"]["pix_fmt"]


def test_444_baseline_reaches_higher_rgb_quality_than_420(tmp_path):
    video = synthetic_video(FRAMES, HEIGHT, WIDTH)
    plain = run_baseline(video, classical_codec("x265"), 12, tmp_path)
    full = run_baseline(video, classical_codec("x265-444"), 12, tmp_path)
    assert full["psnr-rgb"] > plain["psnr-rgb"] + 1  # 4:2:0 caps RGB PSNR of the red square's edges


class _Page(HTMLParser):
    """Figures with their x scale, and the text of warning paragraphs."""

    def __init__(self):
        super().__init__()
        self.figures, self.warnings, self._in_warning = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs)
        if tag == "p" and "overlay-warning" in (attrs.get("class") or "").split():
            self._in_warning = True
            self.warnings.append("")

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_warning = False

    def handle_data(self, data):
        if self._in_warning:
            self.warnings[-1] += data


@pytest.fixture(scope="module")
def report_with_overlay(tmp_path_factory):
    folder = tmp_path_factory.mktemp("measured_report")
    clip = folder / "clip.y4m"
    write_video(clip, synthetic_video(FRAMES, HEIGHT, WIDTH))
    overlay = REPO / "benchmarks" / "results" / "bunny_cpu_hnerv_0.375M_e60.json"  # 132 frames of bunny
    output = folder / "out"
    result = CliRunner().invoke(main, ["report", "--dataset", str(clip), "--codecs", "x264,x265", "--rates",
                                       "x264=27,37", "--rates", "x265=27,37", "--overlay", str(overlay), "-q",
                                       "-o", str(output)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return output


def test_report_html_has_a_log_bpp_axis_and_the_overlay_warning(report_with_overlay):
    page = _Page()
    page.feed((report_with_overlay / "index.html").read_text())
    scales = {figure["data-metric"]: figure["data-x-scale"] for figure in page.figures}
    assert set(scales) >= {"psnr-rgb", "psnr-y", "psnr-yuv"} and set(scales.values()) == {"log"}
    assert any("measured on 132 frames" in w and "this report on 4" in w for w in page.warnings), page.warnings
    assert any("bunny" in w and "clip" in w for w in page.warnings)
    document = json.loads((report_with_overlay / "results" / "x265-medium.json").read_text())
    meta = document["meta"]
    assert meta["title"] == "clip" and "/" not in meta["title"]
    assert {"x264", "x265", "svtav1", "pyav", "torch"} <= set(meta["libraries"])
    assert isinstance(meta["machine_idle"], bool)
    results = document["results"]
    assert all(p < b for p, b in zip(results["payload_bytes"], results["bytes"]))
    assert all(y is not None for y in results["psnr-y"])


def test_report_renders_in_headless_chromium(report_with_overlay, tmp_path):
    browser = next((b for b in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(b).exists()), None)
    if browser is None:
        pytest.skip("no Chromium at /usr/bin/chromium: the rendered page is not checked on this machine")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (report_with_overlay / "index.html").as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    page = _Page()
    page.feed(dom)
    assert page.warnings and {f["data-x-scale"] for f in page.figures} == {"log"}
    assert shutil.which(browser)
