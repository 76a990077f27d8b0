"""What a .nnc file holds and where its bytes go (``nnc info``), from the bitstream's inspection."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..bitstream import inspect_bitstream
from ..bitstream.container import read_bitstream_bytes
from .header import check_header, encoder_record, parse_media
from .registry import codec_names
from .segments import check_group_names
from ..units import plural


MemberDescriber = Callable[[dict], "tuple[dict, list[str]] | None"]


def _frames(count) -> str:
    """``1 frame``, ``8 frames`` (a header value: printed as it is when not a count)."""
    return plural(count, "frame") if isinstance(count, int) and not isinstance(count, bool) else f"{count} frames"


def _describe_segments(segments, groups: list[dict]) -> tuple[list[dict], list[str]]:
    """A segmented file's segments: frames, groups, bytes and model, as data and lines."""
    check_group_names(segments, [group["name"] for group in groups])
    group_bytes = {group["name"]: group["bytes"] for group in groups}
    data, lines = [], [f"  segments: {len(segments)}, each its own network, decodable alone "
                       f"({', '.join(str(segment.frames) for segment in segments)} frames)"]
    for segment in segments:
        size = sum(group_bytes[name] for name in segment.groups)
        data.append({"start": segment.start, "frames": segment.frames, "groups": list(segment.groups), "bytes": size})
        config = segment.model.get("config")
        model = ", ".join(f"{k}={v}" for k, v in config.items()) if isinstance(config, dict) else "no config"
        lines.append(f"    segment {segment.index}: frames {segment.start}-{segment.stop - 1}, {size} bytes "
                     f"(groups {', '.join(segment.groups)}), model {model}")
    return data, lines


def describe_file(path: Path, describe_members: MemberDescriber | None = None) -> dict:
    """``{"data": summary, "text": lines}``.  ``describe_members(summary)`` gives the per-video
    part of a multi-video file (a dict and its lines), None for other files."""
    summary = inspect_bitstream(read_bitstream_bytes(path))
    # The header is checked as decode checks it (one shared function); a codec this nnc
    # does not know gets its media checked and its container described.
    segment_lines = []
    if summary["codec"] in codec_names():
        checked = check_header(summary["codec"], summary["header"], summary["format_version"])
        if checked.segments is not None:
            summary["segments"], segment_lines = _describe_segments(checked.segments, summary["groups"])
    elif summary["header"].get("media") is not None:
        parse_media(summary["header"].get("media"))
    media = summary["header"].get("media") or {}
    encoder = encoder_record(summary["header"])
    pixels = 0
    try:
        pixels = int(media["width"]) * int(media["height"]) * int(media["num_frames"])
    except (KeyError, TypeError, ValueError):
        pass
    bpp = summary["file_bytes"] * 8 / pixels if pixels else None
    summary["bpp"] = bpp
    set_lines = []
    members = describe_members(summary) if describe_members is not None else None
    if members is not None:  # a multi-video set: per-video and shared bytes
        summary["video_set"], set_lines = members
        bpp = summary["bpp"] = summary["video_set"]["bpp"]

    lines = [
        f"{path}: nnc format v{summary['format_version']}, codec {summary['codec']}, {summary['file_bytes']} bytes"
        + (f", {bpp:.5f} bpp" if bpp is not None else ""),
    ]
    if media:
        fps = media.get("fps")
        fps_text = f"{fps[0]}/{fps[1]}" if isinstance(fps, list) and len(fps) == 2 else str(fps)
        lines.append(
            f"  media: {media.get('width')}x{media.get('height')}, {_frames(media.get('num_frames'))} @ {fps_text} fps, "
            f"{media.get('pix_fmt')} {media.get('bit_depth')}-bit, colour {media.get('color_matrix')} "
            f"{media.get('color_range')}"
        )
    lines.extend(set_lines)
    lines.extend(segment_lines)
    model = summary["header"].get("model") or {}
    if "config" in model:
        lines.append("  model: " + ", ".join(f"{k}={v}" for k, v in model["config"].items()))
    if encoder.get("psnr_rgb") is not None:
        lines.append(f"  encoder: nnc {encoder.get('nnc')}, PSNR-RGB {encoder['psnr_rgb']:.2f} dB, "
                     f"settings {encoder.get('settings')}")
    lines.append("  bytes:")
    lines.append(f"    {'header':<12} {summary['header_bytes']:>10}  (media, model config, encoder record)")
    side_total = 0
    for group in summary["groups"]:
        lines.append(
            f"    {group['name']:<12} {group['payload_bytes']:>10} payload  "
            f"({group['num_symbols']} symbols, {8 * group['payload_bytes'] / max(group['num_symbols'], 1):.3f} bits each)"
        )
        side_total += group["side_info_bytes"]
    lines.append(f"    {'side info':<12} {side_total:>10}  (tensor descriptors, quantization parameters, entropy-model tables)")
    lines.append(f"    {'container':<12} {summary['container_bytes']:>10}  (magic, version, end chunk)")
    lines.append(f"    {'total':<12} {summary['file_bytes']:>10}")
    lines.append("  tensors:")
    for group in summary["groups"]:
        for tensor in group["tensors"]:
            shape = "x".join(str(d) for d in tensor["shape"])
            axis = "tensor" if tensor["axis"] is None else f"axis {tensor['axis']}"
            lines.append(
                f"    {group['name']}/{tensor['name']:<28} {shape:<16} {tensor['scheme']} {tensor['bits']}-bit per {axis:<7} "
                f"{tensor['entropy_model']:<10} {tensor['payload_bits'] / 8:>9.0f} B + {tensor['side_info_bytes']} B side"
            )
    # Strings from the file may hold lone surrogates, which no terminal encoding takes.
    text = "\n".join(lines).encode("utf-8", "backslashreplace").decode("utf-8")
    return {"data": summary, "text": text}
