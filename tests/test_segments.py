"""Segmented encodes (``--segment-frames``): the file, partial decoding, parallel fitting, resume, hostile tables.

One tiny HNeRV file (7 frames of 32x64 in segments of 3, 3 and 1 frames, 2 epochs)
serves most tests.  Every fit trains with one torch thread (``one_torch_thread``; the
pools' workers get one each from ``available_cpus`` set to 2 with two jobs): HNeRV's
convolutions sum in an order that depends on the threads, so only equal threads can
give equal bytes, and equal threads must.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nnc
from nnc.bitstream import (Bitstream, TensorGroup, assemble, decode_bitstream, decode_selected, encode_bitstream,
                           group_chunks, inspect_bitstream, join_chunks, split_chunks)
from nnc.bitstream.chunks import Chunk
from nnc.bitstream.container import encode_header_payload
from nnc.cli.main import main
from nnc.codec import segment_fitting
from nnc.codec.hnerv import HNeRVCodec
from nnc.codec.video_api import decode_frames
from nnc.errors import NncError
from nnc.media import read_video, write_video
from nnc.metrics import mean_psnr, psnr_per_frame
from synthetic import synthetic_frames, synthetic_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES = synthetic_frames(7, 32, 64)
OPTIONS = dict(segment_frames=3, epochs=2, size=40000, force=True, device="cpu", show_progress=False)


def encode(path: Path, **extra):
    return nnc.encode(FRAMES, path, "hnerv", **dict(OPTIONS, **extra))


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, one_torch_thread):
    path = tmp_path_factory.mktemp("segments") / "clip.nnc"
    report = encode(path)
    return path, report


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, exit_code: int, *fragments: str) -> str:
    assert result.exit_code == exit_code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nnc: "), result.output
    assert "Traceback" not in result.output and "internal error" not in lines[0], result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_round_trip_is_the_segments_decoded_alone_in_order(segmented):
    path, report = segmented
    data = path.read_bytes()
    assert inspect_bitstream(data)["format_version"] == 3
    bitstream = decode_bitstream(data)
    table = bitstream.header["segments"]
    assert [(entry["start"], entry["frames"]) for entry in table] == [(0, 3), (3, 3), (6, 1)]
    assert [g.name for g in bitstream.groups] == [f"s{i}/{name}" for i in range(3) for name in ("weights", "embeddings")]
    decoded = nnc.decode(path)
    assert decoded.shape == FRAMES.shape
    # What the encoder verified and recorded is what decode produces.
    assert report.psnr == mean_psnr(psnr_per_frame(FRAMES, decoded, 255))
    assert bitstream.header["encoder"]["psnr_rgb"] == round(report.psnr, 4)
    assert report.bpp == pytest.approx(len(data) * 8 / (7 * 32 * 64)) and report.stats["model_size"] > 3 * 38000
    # Each segment is a video of its own: its model section and groups, prefix removed.
    media = bitstream.header["media"]
    for index, entry in enumerate(table):
        groups = [TensorGroup(g.name.removeprefix(f"s{index}/"), g.tensors) for g in bitstream.groups
                  if g.name in entry["groups"]]
        alone = Bitstream("hnerv", {"media": dict(media, num_frames=entry["frames"]), "model": entry["model"]}, groups)
        frames = np.concatenate(list(decode_frames(decode_bitstream(encode_bitstream(alone)))))
        assert np.array_equal(frames, decoded[entry["start"] : entry["start"] + entry["frames"]])


def test_info_shows_the_segments(segmented):
    path, _ = segmented
    result = run("info", path)
    assert result.exit_code == 0, result.output
    assert "segments: 3, each its own network, decodable alone (3, 3, 1 frames)" in result.output
    assert "segment 2: frames 6-6" in result.output and "s1/embeddings" in result.output
    described = nnc.info(path)["segments"]
    assert [s["frames"] for s in described] == [3, 3, 1]
    assert sum(s["bytes"] for s in described) == sum(g["bytes"] for g in nnc.info(path)["groups"])


@pytest.mark.parametrize("frames, segments", [("3:5", [1]), ("6:", [2]), ("2:4", [0, 1])])
def test_frames_decodes_and_runs_only_the_segments_holding_them(segmented, tmp_path, monkeypatch, frames, segments):
    from nnc.bitstream import container

    path, _ = segmented
    runs, parsed = [], []
    decompress, decode_group = HNeRVCodec.decompress, container._decode_group

    def counting_decompress(self, model_header, groups, num_frames, *args, frames=None, **kwargs):
        runs.append((num_frames, frames))
        yield from decompress(self, model_header, groups, num_frames, *args, frames=frames, **kwargs)

    def counting_decode_group(payload, index, *args):
        group = decode_group(payload, index, *args)
        parsed.append(group.name)
        return group

    monkeypatch.setattr(HNeRVCodec, "decompress", counting_decompress)
    monkeypatch.setattr(container, "_decode_group", counting_decode_group)
    output = tmp_path / "part_png"  # lossless RGB
    assert run("decode", path, "--frames", frames, "-o", output).exit_code == 0
    assert sorted({name.split("/")[0] for name in parsed}) == [f"s{i}" for i in segments]
    assert len(runs) == len(segments)
    monkeypatch.undo()
    start, stop = (int(x) if x else None for x in frames.split(":"))
    assert np.array_equal(read_video(output).frames, nnc.decode(path)[start:stop])
    assert np.array_equal(nnc.decode(path, frames=frames), nnc.decode(path)[start:stop])


def test_two_jobs_give_the_bytes_of_one(segmented, tmp_path, monkeypatch):
    path, _ = segmented
    monkeypatch.setattr(segment_fitting, "available_cpus", lambda: 2)  # one thread per worker
    parallel = tmp_path / "jobs2.nnc"
    encode(parallel, jobs=2)
    assert parallel.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs2.nnc"]  # checkpoints and fitted segments removed


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (the [ray] extra)")
def test_ray_tasks_on_a_local_instance_give_the_same_bytes(segmented, tmp_path, monkeypatch):
    import ray

    path, _ = segmented
    monkeypatch.setattr(segment_fitting, "available_cpus", lambda: 2)
    output = tmp_path / "ray.nnc"
    encode(output, jobs=2, backend="ray", address="local")
    assert not ray.is_initialized()  # the instance it started is shut down
    assert output.read_bytes() == path.read_bytes()


def test_resume_keeps_fitted_segments(segmented, tmp_path, monkeypatch):
    path, _ = segmented
    output = tmp_path / "clip.nnc"
    fitted = []
    fit_segment = segment_fitting.fit_segment

    class Interrupted(Exception):
        pass

    def interrupted_on_the_third(task):
        if len(fitted) == 2:
            raise Interrupted
        fitted.append(task.index)
        return fit_segment(task)

    monkeypatch.setattr(segment_fitting, "fit_segment", interrupted_on_the_third)
    with pytest.raises(Interrupted):
        encode(output)
    assert fitted == [2, 0]  # the short last segment first
    kept = sorted(p.name for p in tmp_path.glob("clip.nnc.ckpt.seg*.nnc"))
    assert kept == ["clip.nnc.ckpt.seg0.nnc", "clip.nnc.ckpt.seg2.nnc"] and not output.exists()

    with pytest.raises(NncError, match="fitted for another input or other settings"):
        encode(output, resume=True, epochs=3)
    fitted.clear()
    encode(output, resume=True)
    assert fitted == [1]  # the others were taken as they were
    assert output.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.nnc"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.y4m"
    write_video(path, synthetic_video(7, 32, 64))
    return path


@pytest.mark.parametrize("args, fragment", [
    (["--segment-frames", "0"], "--segment-frames must be at least 1"),
    (["--segment-frames", "3", "--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs", "2"], "--jobs applies to segmented encodes: add --segment-frames N"),
    (["--backend", "ray"], "--backend applies to segmented encodes"),
    (["--segment-frames", "3", "--address", "auto"], "--address is a Ray cluster's: add --backend ray"),
    (["--segment-frames", "3", "--bpp", "2"], "--bpp does not apply to segmented encodes"),
    (["--segment-frames", "3", "--model", "clc"], "--segment-frames does not apply to --model clc"),
    (["--segment-frames", "3", "--model", "pfnr"], "--segment-frames does not apply to --model pfnr"),
])
def test_bad_segment_options_are_one_line_errors(clip, tmp_path, args, fragment):
    result = run("encode", clip, "-o", tmp_path / "out.nnc", *args)
    one_line_error(result, 1, fragment)
    assert not (tmp_path / "out.nnc").exists()


def test_ray_backend_without_ray_is_one_line(clip, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    result = run("encode", clip, "-o", tmp_path / "out.nnc", "--segment-frames", "3", "--backend", "ray")
    one_line_error(result, 1, "--backend ray needs Ray: pip install 'nnc-toolkit[ray]'")


def test_too_many_segments_are_refused_before_training(tmp_path):
    frames = np.zeros((1100, 8, 8, 3), np.uint8)
    with pytest.raises(NncError, match="1100 segments; a file holds at most 1024 tensor groups: use "
                                                  "--segment-frames 2 or more"):
        nnc.encode(frames, tmp_path / "x.nnc", "nirvana", segment_frames=1, show_progress=False)


def rewrite_header(source: Path, target: Path, edit, version: int | None = None) -> Path:
    """``source`` with its header edited by ``edit`` (through the chunk API: groups kept byte for byte)."""
    data = source.read_bytes()
    head = decode_selected(data, ())
    header = copy.deepcopy(head.header)
    edit(header)
    if version is None:
        target.write_bytes(assemble(head.codec, header, group_chunks(data)))
    else:
        chunks = split_chunks(data)
        chunks[0] = Chunk(chunks[0].tag, encode_header_payload(head.codec, header))
        target.write_bytes(join_chunks(chunks, version))
    return target


def table(index: int | None = None):
    """An edit of the segment table (or of one entry) by a function."""
    def wrap(change):
        def edit(header):
            change(header["segments"] if index is None else header["segments"][index])
        return edit
    return wrap


HOSTILE_TABLES = {
    "not a list": (lambda h: h.update(segments={"0": h["segments"][0]}), "segment table is not a non-empty list"),
    "empty": (lambda h: h.update(segments=[]), "segment table is not a non-empty list"),
    "overlap": (table(1)(lambda s: s.update(start=2)), "segment 1 starts at frame 2, not 3"),
    "gap": (table(1)(lambda s: s.update(frames=2)), "segment 2 starts at frame 6, not 5"),
    "past the end": (table(2)(lambda s: s.update(frames=2)), "segment 2 ends past the video's 7 frames"),
    "short of the media": (lambda h: h["media"].update(num_frames=8), "the segments hold 7 frames, the video 8"),
    "absurd count": (table(0)(lambda s: s.update(frames=10**30)), "segment 0 has a bad start or frame count"),
    "bool start": (table(0)(lambda s: s.update(start=False)), "segment 0 has a bad start or frame count"),
    "absurd table": (lambda h: h.update(segments=[h["segments"][0]] * 2000),
                     "the segment table has 2000 segments for 7 frames"),
    "missing key": (table(0)(lambda s: s.pop("groups")), "segment 0 is not an object of start, frames, model, groups"),
    "group absent": (table(0)(lambda s: s["groups"].append("s0/extra")), "segment 0's group 's0/extra' is not in "
                                                                         "the file"),
    "group unlisted": (table(0)(lambda s: s["groups"].pop()), "the file's group 's0/embeddings' belongs to no segment"),
    "group twice": (table(0)(lambda s: s["groups"].append("s0/weights")), "group 's0/weights' is named twice"),
    "another segment's group": (table(1)(lambda s: s["groups"].__setitem__(0, "s0/weights")),
                                "segment 1 names group 's0/weights', not one of its own"),
    "groups not a list": (table(0)(lambda s: s.update(groups="s0/weights")), "segment 0 has no list of group names"),
    "bad model": (table(2)(lambda s: s.update(model={"config": {"fc_dim": -1}})), "segment 2: bad hnerv config"),
    "model besides": (lambda h: h.update(model=h["segments"][0]["model"]), "a model section besides its segment"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TABLES))
def test_hostile_segment_tables_are_one_line_errors(segmented, tmp_path, case):
    edit, fragment = HOSTILE_TABLES[case]
    bad = rewrite_header(segmented[0], tmp_path / "bad.nnc", edit)
    for command in (["info", bad], ["decode", bad, "-o", tmp_path / "out.y4m"],
                    ["decode", bad, "--frames", "6:", "-o", tmp_path / "out.y4m"]):
        one_line_error(run(*command), 3, "not a valid .nnc file", fragment)
    assert not (tmp_path / "out.y4m").exists()


def test_a_segment_table_needs_format_version_3(segmented, tmp_path):
    bad = rewrite_header(segmented[0], tmp_path / "v1.nnc", lambda header: None, version=1)
    for command in (["info", bad], ["decode", bad, "-o", tmp_path / "out.y4m"]):
        one_line_error(run(*command), 3, "a segment table in a format version 1 file")


def test_an_older_reader_refuses_a_segmented_file_as_newer(segmented, monkeypatch):
    from nnc.bitstream import framing

    monkeypatch.setattr(framing, "FORMAT_VERSION", 2)  # what nnc read before segments
    one_line_error(run("info", segmented[0]), 3, "format version 3 is newer than version 2 that this nnc reads")


def test_unsegmented_encodes_record_none_of_the_new_options():
    """So their files (and checkpoints) are byte for byte those of before; the golden
    files (test_golden.py) check the rest."""
    settings = HNeRVCodec.make_options(jobs=1, backend="local").settings()
    assert not {"segment_frames", "jobs", "backend", "address"} & set(settings)


@pytest.mark.parametrize("model, extra", [("nerv", dict(size=45000, finetune_epochs=0)), ("nirvana", {})])
def test_other_codecs_segment_the_same_way(tmp_path, model, extra):
    """The segments are the codec's business: NeRV (a network of the frame index) and
    NIRVANA (groups of frames as weight residuals) as HNeRV.  (HiNeRV passes too, in 12 s.)"""
    path = tmp_path / f"{model}.nnc"
    report = nnc.encode(FRAMES, path, model, **dict(OPTIONS, epochs=1, size=None) | extra)
    decoded = nnc.decode(path)
    assert report.psnr == mean_psnr(psnr_per_frame(FRAMES, decoded, 255))
    assert [s["frames"] for s in nnc.info(path)["segments"]] == [3, 3, 1]
    assert np.array_equal(nnc.decode(path, frames="3:5"), decoded[3:5])


def test_a_dry_run_plans_the_first_segment_with_its_share_of_the_budget(tmp_path):
    plan = nnc.encode(FRAMES, tmp_path / "x.nnc", "hnerv", **dict(OPTIONS, dry_run=True, time_budget="60s", jobs=2))
    assert (plan.plan["segments"], plan.plan["segment_frames"]) == (3, 3)
    assert plan.plan["time_budget"] == 60 * 2 / 3  # budget x min(jobs, segments) / segments
    assert plan.summary().startswith("dry run (nothing written): 3 segments, each about as costly as the first")
    assert not any(tmp_path.iterdir())
