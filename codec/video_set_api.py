"""File-level PFNR sets: encode several videos, append one, decode one member.

A set file is an ordinary .nnc container: a HEAD chunk (the PFNR config and one record
per video: media info, settings, PSNR) and one TGRP chunk per session, in order.
Appending rewrites the HEAD chunk (one more video record) and adds one TGRP chunk; the
earlier TGRP chunks are copied byte for byte from the old file (never re-encoded), and
the new file replaces the old one atomically.  The sessions of one encode or append are
planned together (:class:`~nnc.codec.planning.SessionPlanner`: the estimate line, one
``--time-budget`` for all of them, ``--dry-run``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..bitstream import (Bitstream, Chunk, assemble, decode_bitstream, encode_group_chunk, group_chunks,
                         read_bitstream_file)
from ..bitstream.container import read_bitstream_bytes, write_file_atomically
from ..errors import InvalidBitstreamError, MediaError, NncError
from ..metrics import mean_psnr, psnr_per_frame
from ..media import Video, VideoInfo, VideoWriter
from .base import float_to_frames
from .header import finite_number, safe_text
from .pfnr import (PFNRCodec, PFNROptions, SetState, apply_group, decode_session, empty_state, parse_set_header, replay,
                   sessions_recipe)
from .planning import PlanOnly, PlanReport, format_duration, make_session_planner
from .video_api import check_output_path, resolve_frame_range
from ..units import plural

CODEC = PFNRCodec.name


@dataclass
class SetReport:
    path: Path
    file_bytes: int
    videos: list[dict]  # the new sessions: name, frames, size, psnr, group bytes, bpp
    encode_seconds: float
    settings: dict
    stats: list[dict] = field(default_factory=list)
    appended: bool = False  # by `nnc append` (else a new set)
    plan: dict | None = None  # the sessions' plan as they ran (planning.SessionPlanner.plan)

    def summary(self) -> str:
        lines = [f"  video {v['video']}: {v['name']}, {plural(v['frames'], 'frame')}, PSNR {v['psnr']:.2f} dB (RGB, after "
                 f"quantization), its session {v['group_bytes']} bytes ({v['group_bpp']:.4f} bpp)" for v in self.videos]
        if self.plan is not None and self.plan["time_budget"] is not None:
            epochs = " + ".join(str(session["epochs"]) for session in self.plan["sessions"])
            lines.append(f"  time budget {format_duration(self.plan['time_budget'])}: epochs {epochs}, "
                         f"{format_duration(self.plan['budget_used_seconds'])} of it used by the sessions")
        verb = "appended to" if self.appended else "wrote"
        lines.append(f"{verb} {self.path}: {self.file_bytes} bytes in all, {self.encode_seconds:.1f} s")
        return "\n".join(lines)


@dataclass
class SetPlanReport(PlanReport):
    """What a dry run of a set encode or an append returns: the plan of its sessions,
    each with its ``source``; nothing was written."""

    set_path: Path | None = None  # append: the set the session would join
    set_bytes: int | None = None  # append: that set's size now

    def summary(self) -> str:
        plan = self.plan
        sessions = ", ".join(f"{Path(s['source']).name} {s['epochs']} epochs ({plural(s['steps'], 'step')})"
                             for s in plan["sessions"])
        where = ("" if self.set_path is None
                 else f" to append to {self.set_path} ({self.set_bytes:,} bytes, left unchanged)")
        budget = "" if plan["time_budget"] is None else f"time budget {format_duration(plan['time_budget'])}, "
        return (f"dry run (nothing written): model {plan['model']}, {plural(plan['parameters'], 'parameter')}, "
                f"{plural(len(plan['sessions']), 'session')}{where}: {sessions}; {budget}estimated training time "
                f"{format_duration(plan['estimated_seconds'])}; the new sessions at most about "
                f"{plan['estimated_bpp']:.3f} bpp ({plan['estimated_bytes']:,} bytes before entropy coding); raw "
                f"{'videos' if len(plan['sessions']) > 1 else 'video'} {plan['raw_bytes']:,} bytes")


# --------------------------------------------------------------------------- sets


def read_set(bitstream: Bitstream, source: str | os.PathLike = "file") -> tuple[dict, list[VideoInfo]]:
    """The model header and per-video media of a PFNR set; a clear error for other files."""
    if bitstream.codec != CODEC:
        raise NncError(f"{source} is a {bitstream.codec} file, not a PFNR multi-video set (made by --model pfnr)")
    model_header = bitstream.header.get("model")
    config, infos = parse_set_header(model_header)
    if len(bitstream.groups) != len(infos):
        raise InvalidBitstreamError(f"PFNR file lists {len(infos)} videos but holds {len(bitstream.groups)} groups")
    return model_header, infos


def _check_frame_size(video: Video, name: str, reference: VideoInfo, reference_name: str) -> None:
    if (video.info.width, video.info.height) != (reference.width, reference.height):
        raise NncError(
            f"{name} is {video.info.width}x{video.info.height}, but {reference_name} is "
            f"{reference.width}x{reference.height}: a PFNR set holds videos of one frame size (resize them first)"
        )


def _measure(state: SetState, session: int, video: Video, device: str) -> float:
    values, position = [], 0
    max_value = video.max_value
    for batch in decode_session(state, session, video.info.num_frames, video.info.height, video.info.width,
                                device=device):
        frames = float_to_frames(batch, max_value)
        values.append(psnr_per_frame(video.frames[position : position + len(frames)], frames, max_value))
        position += len(frames)
    return mean_psnr(np.concatenate(values))


def _with_sources(plan: dict, videos: list[tuple[str, Video]]) -> dict:
    sessions = [dict(session, source=name) for session, (name, _) in zip(plan["sessions"], videos)]
    return dict(plan, sessions=sessions)


def _add_sessions(model_header: dict, chunks: list[Chunk], state: SetState, videos: list[tuple[str, Video]],
                  output: Path, options: PFNROptions, started: float,
                  original: bytes | None = None) -> SetReport | SetPlanReport:
    """Train one session per video after ``state``, verify each by decoding its own bytes,
    and write header + ``chunks`` + the new chunks atomically.  One planner plans all the
    sessions (one ``--time-budget`` for all of them); a dry run returns its plan instead."""
    codec = PFNRCodec()
    settings = codec.resolve_settings(options)
    planner = make_session_planner(options, sessions_recipe(state, [video for _, video in videos], options))
    records, all_stats, new_chunks = [], [], []
    for name, video in videos:
        try:
            group, _, stats = codec.fit_session(state, video, options, planner)
        except PlanOnly as plan:  # a dry run: the first session calibrated, nothing written
            return SetPlanReport(_with_sources(plan.plan, videos), settings, set_path=None if original is None else output,
                                 set_bytes=None if original is None else len(original))
        stats["plan"] = planner.plan()["sessions"][len(all_stats)]  # what this session was given and used
        chunk = encode_group_chunk(group)
        # What the decoder will see: the group parsed back from its own bytes.
        [parsed] = decode_bitstream(assemble(CODEC, {}, [chunk])).groups
        state = apply_group(state, parsed)
        session = state.sessions - 1
        psnr = _measure(state, session, video, options.device)
        pixels = video.info.width * video.info.height * video.info.num_frames
        record = {"media": video.info.to_dict(), "source": Path(name).name, "psnr_rgb": round(psnr, 4),
                  "nnc": __version__, "settings": dict(settings, seed=options.seed, fso=state.config.fso),
                  "session_parameters": stats["session_parameters"], "new_parameters": stats["new_parameters"]}
        model_header["videos"].append(record)
        new_chunks.append(chunk)
        records.append({"name": name, "video": session, "frames": video.info.num_frames, "width": video.info.width,
                        "height": video.info.height, "psnr": psnr, "group_bytes": chunk.size,
                        "group_bpp": chunk.size * 8 / pixels})
        all_stats.append(stats)
    data = assemble(CODEC, {"model": model_header}, chunks + new_chunks)
    decode_bitstream(data)  # the container's own checks (limits, framing) on the final bytes
    if original is not None and _read_or_none(output) != original:
        raise NncError(f"{output} changed while the new video was being learned; nothing was written")
    file_bytes = write_file_atomically(output, data)
    # the budget time the sessions used: training and the work between sessions
    plan = dict(_with_sources(planner.plan(), videos), budget_used_seconds=planner.spent)
    return SetReport(Path(output), file_bytes, records, time.perf_counter() - started, settings, all_stats,
                     appended=original is not None, plan=plan)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def encode_video_set(videos: list[tuple[str, Video]], output: str | os.PathLike,
                     options: PFNROptions | None = None) -> SetReport | SetPlanReport:
    """Learn ``videos`` (name, video) in order, one session each, into a new set file
    (``options.dry_run``: only the plan, nothing written)."""
    options = options or PFNROptions()
    if not videos:
        raise NncError("a PFNR set needs at least one video")
    check_output_path(output)
    first_name, first = videos[0]
    for name, video in videos[1:]:
        _check_frame_size(video, name, first.info, first_name)
    codec = PFNRCodec()
    codec.resolve_settings(options)  # bad settings fail before any training
    config = codec.new_config(first.info.height, first.info.width, options)
    if len(videos) > config.max_sessions:
        raise NncError(f"a PFNR set holds at most {config.max_sessions} videos; got {len(videos)}")
    started = time.perf_counter()
    return _add_sessions({"config": config.to_dict(), "videos": []}, [], empty_state(config), videos, Path(output),
                         options, started)


def open_set(path: Path) -> tuple[Bitstream, dict, list[VideoInfo]]:
    """Read the set at ``path`` for appending: it must exist, be a PFNR set and be writable."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"input not found: {path}")
    bitstream = read_bitstream_file(path)
    model_header, infos = read_set(bitstream, path)
    check_output_path(path)
    return bitstream, model_header, infos


def append_to_set(path: str | os.PathLike, video: Video, options: PFNROptions | None = None,
                  name: str | None = None) -> SetReport | SetPlanReport:
    """Learn one more video into the set at ``path``: earlier TGRP chunks stay byte-identical
    (``options.dry_run``: only the plan, the set untouched)."""
    options = options or PFNROptions()
    path = Path(path)
    bitstream, model_header, infos = open_set(path)
    _check_frame_size(video, name or "the new video", infos[0], f"video 0 of {path}")
    config, _ = parse_set_header(model_header)
    if len(infos) >= config.max_sessions:
        raise NncError(f"{path} already holds its maximum of {config.max_sessions} videos")
    started = time.perf_counter()
    data = read_bitstream_bytes(path)  # bounded, like every read of a .nnc file
    # The chunks copied are the chunks parsed: one read of the file serves both.
    bitstream = decode_bitstream(data)
    model_header, infos = read_set(bitstream, path)
    state = replay(config, bitstream.groups)
    chunks = group_chunks(data)
    model_header = dict(model_header, videos=list(model_header["videos"]))
    return _add_sessions(model_header, chunks, state, [(name or str(path), video)], path, options, started,
                         original=data)


def decode_video_set_member(bitstream: Bitstream, output: str | os.PathLike, *, video_index: int | None,
                            frame_range: tuple[int, int | None] | None = None, format: str | None = None,
                            crf: int | None = None, device: str = "cpu", batch_size: int = 4) -> VideoInfo:
    """Decode one video of a set into ``output`` (written atomically); returns what was written."""
    model_header, infos = read_set(bitstream)
    if video_index is None:
        if len(infos) != 1:
            raise NncError(f"the file holds {plural(len(infos), 'video')} (0..{len(infos) - 1}): choose one with --video N")
        video_index = 0
    if not 0 <= video_index < len(infos):
        raise NncError(f"--video {video_index}: the file holds {plural(len(infos), 'video')} (0..{len(infos) - 1})")
    config, _ = parse_set_header(model_header)
    info = infos[video_index]
    frames = resolve_frame_range(frame_range, info.num_frames)
    if frame_range is not None:
        info = replace(info, num_frames=len(frames))
    state = replay(config, bitstream.groups[: video_index + 1])
    with VideoWriter(output, info, format=format, crf=crf) as writer:
        for batch in decode_session(state, video_index, infos[video_index].num_frames, info.height, info.width,
                                    device=device, batch_size=batch_size, frames=frames):
            writer.write(float_to_frames(batch, info.max_value))
    return info


def decode_session_frames(bitstream: Bitstream, video_index: int, *, device: str = "cpu", batch_size: int = 4):
    """Yield every frame of video ``video_index`` of a set, (N, H, W, 3) integer RGB batches."""
    model_header, infos = read_set(bitstream)
    if not 0 <= video_index < len(infos):
        raise NncError(f"--video {video_index}: the file holds {plural(len(infos), 'video')} (0..{len(infos) - 1})")
    config, _ = parse_set_header(model_header)
    info = infos[video_index]
    state = replay(config, bitstream.groups[: video_index + 1])
    for batch in decode_session(state, video_index, info.num_frames, info.height, info.width, device=device,
                                batch_size=batch_size, frames=range(info.num_frames)):
        yield float_to_frames(batch, info.max_value)


def describe_set(summary: dict) -> tuple[dict, list[str]]:
    """Per-video and shared bytes of a set, from :func:`nnc.bitstream.inspect_bitstream`'s summary."""
    model = summary["header"].get("model") or {}
    config, infos = parse_set_header(model)
    records = model.get("videos") or []
    groups = summary["groups"]
    if len(groups) != len(infos):
        raise InvalidBitstreamError(f"PFNR file lists {len(infos)} videos but holds {len(groups)} groups")
    shared = summary["header_bytes"] + summary["container_bytes"]
    total_pixels = sum(i.width * i.height * i.num_frames for i in infos)
    videos, lines = [], []
    lines.append(f"  PFNR set: {plural(len(infos), 'video')}, {summary['file_bytes'] * 8 / total_pixels:.5f} "
                 f"bpp over all of them; backbone {config.backbone_parameter_count()} weights, "
                 f"FSO {'stage ' + str(config.fso_stage) if config.fso else 'off'}")
    lines.append(f"  shared bytes: {shared} (header with every video's record {summary['header_bytes']}, "
                 f"container {summary['container_bytes']})")
    for index, (info, group) in enumerate(zip(infos, groups)):
        record = records[index] if isinstance(records[index], dict) else {}
        pixels = info.width * info.height * info.num_frames
        mask_bits = sum(t["payload_bits"] for t in group["tensors"] if t["name"].rsplit(".", 1)[-1].startswith(("reuse", "new")))
        value_bits = sum(t["payload_bits"] for t in group["tensors"] if t["name"].endswith(".values"))
        head_bits = sum(t["payload_bits"] for t in group["tensors"] if t["name"].startswith("head."))
        upto = shared + sum(g["bytes"] for g in groups[: index + 1])
        psnr = finite_number(record.get("psnr_rgb"))
        entry = {
            "video": index, "source": record.get("source"), "frames": info.num_frames,
            "width": info.width, "height": info.height, "group_bytes": group["bytes"],
            "group_bpp": group["bytes"] * 8 / pixels, "bytes_to_decode": upto,
            "mask_bytes": mask_bits / 8, "new_weight_bytes": value_bits / 8, "head_bytes": head_bits / 8,
            "side_info_bytes": group["side_info_bytes"], "psnr_rgb": psnr,
        }
        videos.append(entry)
        lines.append(
            f"  video {index}: {safe_text(record.get('source') or '?')} {info.width}x{info.height}, {plural(info.num_frames, 'frame')}, "
            f"group {group['bytes']} bytes ({entry['group_bpp']:.5f} bpp: masks {mask_bits / 8:.0f}, "
            f"new weights {value_bits / 8:.0f}, head {head_bits / 8:.0f}, side info {group['side_info_bytes']})"
            + (f", PSNR-RGB {psnr:.2f} dB" if psnr is not None else "")
        )
    return {"videos": videos, "shared_bytes": shared, "total_pixels": total_pixels,
            "bpp": summary["file_bytes"] * 8 / total_pixels}, lines
