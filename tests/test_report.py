"""`nnc report` end to end on tiny synthetic inputs: results, tables, plots, HTML, cache, failures, Ray."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nnc.cli.main import main
from nnc.errors import MediaError, NncError
from nnc.eval.baselines import classical_codec, run_baseline
from nnc.eval.datasets import resolve_inputs
from nnc.eval.plots import read_overlay
from nnc.media import read_video, write_video

from synthetic import REPO, shared_media, synthetic_frames, synthetic_video

REFERENCE = REPO.parent / "shared" / "reference"
FRAMES, HEIGHT, WIDTH = 8, 64, 128
HNERV = ["--epochs", "2", "--device", "cpu"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report_input") / "clip.y4m"
    write_video(path, synthetic_video(FRAMES, HEIGHT, WIDTH))
    return path


@pytest.fixture(scope="module")
def report(clip, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("report") / "out"
    result = run("report", "--dataset", clip, "--codecs", "x264,x265,hnerv", "--rates", "x264=22,32,42",
                 "--rates", "x265=22,32,42", "--rates", "hnerv=60k,90k", *HNERV, "--jobs", "2", "-q", "-o", output)
    assert result.exit_code == 0, result.output
    return output


def _cache_state(output: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (output / "cache").glob("*.json")}


def test_results_are_compressai_json_with_meta_and_file_size_bpp(report):
    for codec in ("x264-medium", "x265-medium", "hnerv"):
        document = json.loads((report / "results" / f"{codec}.json").read_text())
        assert document["name"] == codec
        results = document["results"]
        for key in ("bpp", "psnr-rgb", "psnr-yuv", "ms-ssim-rgb", "encoding_time", "decoding_time"):
            assert len(results[key]) == (2 if codec == "hnerv" else 3), key
        assert results["bpp"] == sorted(results["bpp"])
        assert results["ms-ssim-rgb"] == [None] * len(results["bpp"])  # 64 px frames: too small for 5 scales
        meta = document["meta"]
        assert meta["nnc"] and meta["machine"] and "BT.601" in meta["colour_conversion"]
        assert meta["resolution"] == [f"{WIDTH}x{HEIGHT}"] and meta["frames"] == [FRAMES]
    rows = list(csv.DictReader(open(report / "summary.csv")))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    for row in rows:  # bpp is the whole file over every pixel
        assert float(row["bpp"]) == pytest.approx(int(row["bytes"]) * 8 / (FRAMES * HEIGHT * WIDTH), rel=1e-5)
    x264 = sorted((float(r["bpp"]), float(r["psnr-rgb"])) for r in rows if r["codec"] == "x264-medium")
    assert x264[-1][1] > 38 and x264[0][1] < x264[-1][1]  # CRF 22 is good, and quality grows with rate


def test_nnc_job_measures_what_the_encoder_verified(report):
    document = json.loads((report / "results" / "clip" / "hnerv.json").read_text())
    # The job decodes the written file itself; its PSNR equals the encoder's own check of its bytes.
    for psnr, settings in zip(document["results"]["psnr-rgb"], document["meta"]["settings"]):
        assert psnr == pytest.approx(settings["encoder_psnr"], abs=1e-3)
        assert settings["epochs"] == 2


def test_bd_table_against_the_anchor(report, clip):
    rows = list(csv.DictReader(open(report / "bd.csv")))
    assert {r["anchor"] for r in rows} == {"x265-medium"}
    x264 = next(r for r in rows if r["codec"] == "x264-medium")
    value = float(x264["bd-rate psnr-rgb (%)"])
    # Recompute from the per-input results with the library function: the table is that value.
    from nnc.eval.bdrate import bd_rate

    a = json.loads((report / "results" / "clip" / "x265-medium.json").read_text())["results"]
    t = json.loads((report / "results" / "clip" / "x264-medium.json").read_text())["results"]
    assert value == pytest.approx(bd_rate(a["bpp"], a["psnr-rgb"], t["bpp"], t["psnr-rgb"]), rel=1e-4)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)


def test_html_is_self_contained_and_links_only_existing_files(report):
    text = (report / "index.html").read_text()
    parser = _Links()
    parser.feed(text)
    assert any(t.startswith("data:image/png;base64,") for t in parser.targets)  # plots inlined
    local = [t for t in parser.targets if not t.startswith("data:")]
    assert local, "the page links its results and vector plots"
    for target in local:
        assert not re.match(r"^[a-z]+://", target) and not target.startswith("/"), target
        assert (report / target).is_file(), target
    for name in ("rd_psnr-rgb_clip.png", "rd_psnr-rgb_clip.svg"):
        assert (report / "plots" / name).stat().st_size > 1000
    assert "x265-medium" in text and "BD-rate" in text


def test_second_run_reuses_the_cache_and_an_extension_runs_only_new_jobs(report, clip):
    before = _cache_state(report)
    assert len(before) == 8
    result = run("report", "--dataset", clip, "--codecs", "x264,x265,hnerv", "--rates", "x264=22,32,42",
                 "--rates", "x265=22,32,42", "--rates", "hnerv=60k,90k", *HNERV, "-q", "-o", report)
    assert result.exit_code == 0, result.output
    assert "8 jobs (8 cached, 0 run, 0 failed)" in result.output
    assert _cache_state(report) == before  # nothing rewritten
    result = run("report", "--dataset", clip, "--codecs", "x264,x265,hnerv", "--rates", "x264=22,32,42,47",
                 "--rates", "x265=22,32,42", "--rates", "hnerv=60k,90k", *HNERV, "-q", "-o", report)
    assert "9 jobs (8 cached, 1 run, 0 failed)" in result.output
    after = _cache_state(report)
    assert len(after) == 9 and all(after[name] == mtime for name, mtime in before.items())
    assert len(json.loads((report / "results" / "x264-medium.json").read_text())["results"]["bpp"]) == 4


def test_a_failing_job_is_reported_and_the_report_is_built_from_the_rest(clip, tmp_path):
    output = tmp_path / "out"
    result = run("report", "--dataset", clip, "--codecs", "x264,hnerv", "--rates", "x264=27,37",
                 "--rates", "hnerv=1k", "--anchor", "x264", *HNERV, "-q", "-o", output)
    assert result.exit_code == 1
    assert "1 of 3 jobs failed" in result.output
    assert "Traceback" not in result.output
    assert (output / "results" / "x264-medium.json").is_file() and not (output / "results" / "hnerv.json").exists()
    assert "failed: clip hnerv size 1k: target size 1000 is smaller" in (output / "index.html").read_text()
    rows = list(csv.DictReader(open(output / "summary.csv")))
    assert [r["status"] for r in rows if r["codec"] == "hnerv"] == ["failed"]
    assert len(list((output / "cache").glob("*.json"))) == 2  # failures are not cached: a re-run retries them


def test_image_folder_with_jpeg_and_webp(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(2):
        Image.fromarray(synthetic_frames(1, 48, 64, seed=seed)[0]).save(folder / f"img{seed}.png")
    output = tmp_path / "out"
    result = run("report", "--dataset", folder, "--codecs", "jpeg,webp", "--rates", "jpeg=30,60,90",
                 "--rates", "webp=30,60,90", "--anchor", "jpeg", "-q", "-o", output)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(output / "bd.csv")))
    assert [r["input"] for r in rows] == ["img0", "img1", "overall (mean over inputs)"]
    overall = rows[-1]["bd-rate psnr-rgb (%)"]
    assert float(overall) == pytest.approx(np.mean([float(r["bd-rate psnr-rgb (%)"]) for r in rows[:2]]), rel=1e-4)
    assert (output / "results" / "img0" / "webp.json").is_file() and (output / "results" / "webp.json").is_file()
    assert (output / "plots" / "rd_psnr-rgb_average.svg").is_file()
    assert (output / "plots" / "rd_psnr-rgb_img0.svg").is_file()
    # Re-built from the cache without per-input plots: only the average is drawn.
    result = run("report", "--dataset", folder, "--codecs", "jpeg,webp", "--rates", "jpeg=30,60,90",
                 "--rates", "webp=30,60,90", "--anchor", "jpeg", "--no-per-input-plots", "-q", "-o", output)
    assert "12 jobs (12 cached, 0 run" in result.output
    assert sorted(p.name for p in (output / "plots").iterdir()) == [
        f"rd_{metric}_average.{suffix}" for metric in ("psnr-rgb", "psnr-y", "psnr-yuv") for suffix in ("png", "svg")]


def test_image_codec_through_the_image_api(tmp_path):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(synthetic_frames(1, 64, 64)[0]).save(image)
    output = tmp_path / "out"
    result = run("report", "--dataset", image, "--codecs", "clc,jpeg", "--rates", "clc=quality:2", "--anchor", "jpeg",
                 "-q", "-o", output)
    # The CLC weights ship with nnc (models/weights/clc): a CLC job that fails is a
    # failure of this test, never a skip.
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(output / "summary.csv")))
    clc = next(r for r in rows if r["codec"] == "clc")
    assert clc["error"] == "", clc["error"]
    assert int(clc["bytes"]) * 8 / (64 * 64) == pytest.approx(float(clc["bpp"]), rel=1e-5)
    document = json.loads((output / "results" / "clc.json").read_text())
    # The job decodes the file with decode_image: the same PSNR the encoder measured on its own bytes.
    assert document["results"]["psnr-rgb"][0] == pytest.approx(document["meta"]["settings"]["encoder_psnr"], abs=1e-3)


def test_baseline_decodes_what_it_encoded_and_counts_the_whole_file(tmp_path):
    video = synthetic_video(FRAMES, HEIGHT, WIDTH)
    measured = run_baseline(video, classical_codec("x265"), 27, tmp_path)
    mp4 = tmp_path / "x265-medium_crf27.mp4"
    assert measured["bytes"] == mp4.stat().st_size
    decoded = read_video(mp4)
    from nnc.metrics import compare

    assert compare(video.frames, decoded.frames, 255)["psnr-rgb"] == pytest.approx(measured["psnr-rgb"], abs=1e-9)
    assert measured["settings"]["rgb_to_yuv"] == "bt601 tv" and measured["psnr-rgb"] > 30


def _write_uvg(folder: Path, name: str, frames: int, width: int = WIDTH, height: int = HEIGHT) -> tuple[Path, bytes]:
    rng = np.random.default_rng(len(name))
    frame_bytes = width * height * 3 // 2
    data = rng.integers(16, 236, size=frames * frame_bytes, dtype=np.uint8).tobytes()
    path = folder / f"{name}_{width}x{height}_120fps_420_8bit_YUV.yuv"
    path.write_bytes(data)
    return path, data


def test_uvg_loader_on_official_names(tmp_path):
    beauty, _ = _write_uvg(tmp_path, "Beauty", 600)
    shake, _ = _write_uvg(tmp_path, "ShakeNDry", 300)
    (tmp_path / "notes.txt").write_text("not a sequence")
    specs = resolve_inputs("uvg", tmp_path, frames=3, crop=(32, 64))
    assert [s.name for s in specs] == ["Beauty", "ShakeNDry"]
    video = specs[0].load()
    assert video.frames.shape == (3, 32, 64, 3) and video.info.color_matrix == "bt601"
    full = read_video(beauty, size=(WIDTH, HEIGHT), pix_fmt="yuv420p", max_frames=3)
    assert np.array_equal(video.frames, full.frames[:, 16:48, 32:96])
    # Only the frames read are hashed: bytes after them do not change the key, bytes in them do.
    first_hash = specs[1].content_hash()
    data = bytearray(shake.read_bytes())
    data[-1] ^= 0xFF
    shake.write_bytes(bytes(data))
    assert specs[1].content_hash() == first_hash
    data[10] ^= 0xFF
    shake.write_bytes(bytes(data))
    assert specs[1].content_hash() != first_hash
    # The same through the command: both sequences, the papers' frame limit and crop, a dataset average.
    output = tmp_path / "out"
    result = run("report", "--dataset", "uvg", "--root", tmp_path, "--frames", "2", "--crop", "64x32",  # WxH
                 "--codecs", "x264", "--rates", "x264=30,40", "--anchor", "x264", "-q", "-o", output)
    assert result.exit_code == 0, result.output
    document = json.loads((output / "results" / "x264-medium.json").read_text())
    assert set(document["meta"]["inputs"]) == {"Beauty", "ShakeNDry"} and document["meta"]["resolution"] == ["64x32"]
    assert (output / "results" / "ShakeNDry" / "x264-medium.json").is_file()


def test_crop_is_width_first_like_video_size():
    """--crop WxH, as --video-size and ffmpeg (it was HxW); stored as (height, width)."""
    from nnc.eval.datasets import parse_crop

    assert parse_crop("1920x960") == (960, 1920) and parse_crop(" 64 X 32 ") == (32, 64) and parse_crop(None) is None
    for bad in ("1920", "0x10", "axb"):
        with pytest.raises(NncError, match="expected WIDTHxHEIGHT"):
            parse_crop(bad)


def test_uvg_loader_refuses_truncated_files_and_empty_folders(tmp_path):
    with pytest.raises(MediaError, match="no UVG files"):
        resolve_inputs("uvg", tmp_path)
    _write_uvg(tmp_path, "Jockey", 599)
    with pytest.raises(MediaError, match="official file is 600 frames"):
        resolve_inputs("uvg", tmp_path)
    with pytest.raises(NncError, match="needs --root"):
        resolve_inputs("uvg", None)


@pytest.mark.parametrize("args, message", [
    (["--codecs", "x264,nosuchcodec"], "unknown codec 'nosuchcodec'"),
    (["--codecs", "x264", "--rates", "x264=abc"], "not an integer crf"),
    (["--codecs", "x264", "--rates", "x264=60"], "must be in 0..51"),
    (["--codecs", "x264", "--rates", "x265=30"], "not among --codecs"),
    (["--codecs", "x264-fastest"], "unknown preset"),
    (["--codecs", "x264", "--crop", "64by128"], "expected WIDTHxHEIGHT"),
    (["--codecs", "x264", "--crop", "128x128"], "larger than"),
    (["--codecs", "x264", "--crop", "64x128"], "--crop 64x128 is larger than its 128x64 frames"),  # WxH, as ffmpeg
])
def test_bad_arguments_are_one_line_errors(clip, tmp_path, args, message):
    result = run("report", "--dataset", clip, *args, "-q", "-o", tmp_path / "out")
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("nnc: ") and message in lines[-1], result.output
    assert "Traceback" not in result.output


def test_missing_dataset_and_bad_output_are_one_line_errors(clip, tmp_path):
    result = run("report", "--dataset", tmp_path / "nothing", "--codecs", "x264", "-o", tmp_path / "out")
    assert result.exit_code == 5 and "no such file or folder" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("report", "--dataset", clip, "--codecs", "x264", "-o", blocker)
    assert result.exit_code == 5 and "is not a folder" in result.output


def test_overlays_read_compressai_json_and_the_uvg_csvs():
    bunny = REPO / "benchmarks" / "results" / "bunny_cpu_hnerv_0.375M_e60.json"
    curves = read_overlay(bunny)
    assert len(curves) == 1 and curves[0].bpp == [pytest.approx(0.1066, abs=1e-4)]
    if not REFERENCE.exists():
        pytest.skip(f"shared reference results not present (expected at {REFERENCE})")
    per_video = read_overlay(REFERENCE / "uvg-results" / "hnerv_uvg_per_video.csv")
    assert len(per_video) == 7 and {c.video for c in per_video} >= {"beauty", "shakendry"}
    beauty = next(c for c in per_video if c.video == "beauty")
    assert beauty.bpp == [0.0121, 0.0297, 0.0575] and beauty.metrics["psnr-rgb"] == [33.68, 34.12, 34.33]
    average = read_overlay(REFERENCE / "uvg-results" / "hnerv_uvg_results.csv")
    assert len(average) == 1 and average[0].video is None and average[0].metrics["psnr-rgb"][0] == 32.77
    nerv = read_overlay(REFERENCE / "uvg-results" / "nerv_uvg_psnr_bpp.csv")
    uvg = next(c for c in nerv if c.name.endswith("(UVG)"))
    assert len(uvg.bpp) == 9 and uvg.metrics["psnr-rgb"][0] == 31.28 and len(nerv) >= 2
    kodak = read_overlay(REFERENCE / "kodak-results" / "jpeg.json")
    assert kodak[0].bpp == sorted(kodak[0].bpp) and "ms-ssim-rgb" in kodak[0].metrics


def test_overlay_on_a_report_plot(clip, tmp_path):
    bunny = REPO / "benchmarks" / "results" / "bunny_cpu_hnerv_0.375M_e60.json"
    output = tmp_path / "out"
    result = run("report", "--dataset", clip, "--codecs", "x264", "--rates", "x264=30,40",
                 "--overlay", bunny, "-q", "-o", output)
    assert result.exit_code == 0, result.output
    assert "nnc-hnerv-cpu (overlay)" in (output / "plots" / "rd_psnr-rgb_clip.svg").read_text()
    # The default anchor (x265 medium) is not in this report: no BD rows, and the page says why.
    assert "The anchor x265-medium is not among the codecs" in (output / "index.html").read_text()
    assert len(list(csv.DictReader(open(output / "bd.csv")))) == 0


def test_bunny_cpu_tier_input(tmp_path):
    shared_media("video/bunny_1280x720_25fps_132f.mp4")
    output = tmp_path / "out"
    result = run("report", "--dataset", "bunny-cpu", "--frames", "3", "--codecs", "x264", "--rates", "x264=30,40",
                 "--anchor", "x264", "-q", "-o", output)
    assert result.exit_code == 0, result.output
    document = json.loads((output / "results" / "x264-medium.json").read_text())
    assert document["meta"]["resolution"] == ["640x320"] and document["meta"]["frames"] == [3]
    assert all(0.5 < value <= 1 for value in document["results"]["ms-ssim-rgb"])  # 320 px: MS-SSIM is measured
    assert (output / "plots" / "rd_ms-ssim-rgb_bunny_cpu.svg").is_file()


def test_ray_backend_with_a_local_instance(clip, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        output = tmp_path / "out"
        result = run("report", "--dataset", clip, "--codecs", "x264", "--rates", "x264=27,37", "--anchor", "x264",
                     "--backend", "ray", "-q", "-o", output)
        assert result.exit_code == 0, result.output
        assert "2 jobs (0 cached, 2 run, 0 failed)" in result.output
        rows = list(csv.DictReader(open(output / "summary.csv")))
        assert [r["status"] for r in rows] == ["ok", "ok"]
    finally:
        ray.shutdown()


def test_bitstreams_named_alike_form_one_curve_with_a_bd_rate(clip, tmp_path):
    files = []
    for size in ("60k", "90k"):
        path = tmp_path / f"hnerv_{size}.nnc"
        result = run("encode", clip, "-o", path, "--params", size, *HNERV, "--quiet")
        assert result.exit_code == 0, result.output
        files.append(path)
    output = tmp_path / "report"
    result = run("report", "--dataset", clip, "--codecs", "x265", "--rates", "x265=22,32,42",
                 "--bitstream", f"rate-curve={files[1]}", "--bitstream", f"rate-curve={files[0]}",
                 "--bitstream", files[0], "-q", "-o", output)
    assert result.exit_code == 0, result.output
    curve = json.loads((output / "results" / "clip" / "rate-curve.json").read_text())["results"]
    pixels = FRAMES * HEIGHT * WIDTH
    assert curve["bpp"] == pytest.approx(sorted(p.stat().st_size * 8 / pixels for p in files))
    single = json.loads((output / "results" / "clip" / "hnerv_60k.json").read_text())["results"]
    assert single["bpp"] == pytest.approx([files[0].stat().st_size * 8 / pixels])
    rows = {r["codec"]: r for r in csv.DictReader(open(output / "bd.csv"))}
    from nnc.eval.bdrate import bd_psnr, bd_rate

    anchor = json.loads((output / "results" / "clip" / "x265-medium.json").read_text())["results"]
    for column, function in (("bd-rate psnr-rgb (%)", bd_rate), ("bd-psnr psnr-rgb (dB)", bd_psnr)):
        try:  # the table holds the library's value over the curves' overlap, empty where there is none
            expected = function(anchor["bpp"], anchor["psnr-rgb"], curve["bpp"], curve["psnr-rgb"])
        except NncError:
            expected = None
        value = rows["rate-curve"][column]
        assert (value == "") if expected is None else float(value) == pytest.approx(expected, rel=1e-4)
    assert rows["hnerv_60k"]["bd-rate psnr-rgb (%)"] == ""  # one point: no curve to integrate


@pytest.mark.parametrize("specs, message", [
    (["curve={missing}"], "no such file"),
    (["curve={a}", "curve={a}"], "already has a file named"),
])
def test_bad_bitstream_curves_are_one_line_errors(clip, tmp_path, specs, message):
    a = tmp_path / "a.nnc"
    a.write_bytes(b"")
    args = []
    for spec in specs:
        args += ["--bitstream", spec.format(missing=tmp_path / "missing.nnc", a=a)]
    result = run("report", "--dataset", clip, "--codecs", "x265", *args, "-q", "-o", tmp_path / "out")
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
