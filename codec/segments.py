"""Long videos as independent segments of one .nnc file (``--segment-frames N``).

A segmented file is a single-video file whose header holds, instead of one ``model``
section, a segment table (FORMAT.md section 3.1): segment i codes frames [start, start +
frames) as a video of its own, with the codec's own model header and tensor groups, the
groups renamed ``s{i}/NAME``.  The codec compresses and decompresses each segment as it
would a whole clip and never sees the table, so every single-video codec's files can be
segmented.  This module is the table (building it, checking an untrusted one) and the
decoding; :mod:`nnc.codec.segment_fitting` fits the segments, in parallel where asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from ..bitstream import SEGMENTS_VERSION, Bitstream, TensorGroup
from ..bitstream.container import MAX_GROUPS
from ..errors import InvalidBitstreamError
from ..media import VideoInfo
from ..units import plural
from .base import Codec, CodecKind, CompressedVideo

SEGMENTS_KEY = "segments"  # the header's key of the table
ENTRY_KEYS = ("start", "frames", "model", "groups")


def group_prefix(index: int) -> str:
    """What segment ``index``'s group names start with in the file."""
    return f"s{index}/"


@dataclass(frozen=True)
class Segment:
    """One checked entry of a segment table."""

    index: int
    start: int  # first frame, counted in the whole video
    frames: int
    model: dict  # the codec's model header for this segment
    groups: tuple[str, ...]  # the segment's group names in the file (with its prefix)

    @property
    def stop(self) -> int:
        return self.start + self.frames

    def local_frames(self, wanted: range) -> range:
        """The frames of ``wanted`` this segment holds, counted from its first frame."""
        return range(max(wanted.start, self.start) - self.start, max(min(wanted.stop, self.stop) - self.start, 0))


def spans(num_frames: int, segment_frames: int) -> list[range]:
    """Segment i holds frames [i * N, min((i + 1) * N, num_frames))."""
    return [range(start, min(start + segment_frames, num_frames)) for start in range(0, num_frames, segment_frames)]


def is_segmented(header: object) -> bool:
    return isinstance(header, dict) and SEGMENTS_KEY in header


def segmented_bitstream(model: str, info: VideoInfo, fitted: list[tuple[range, CompressedVideo]]) -> Bitstream:
    """The file of the fitted segments (``fitted``: each segment's frames and the codec's
    result, in order): their groups renamed and concatenated, the table in the header."""
    table, groups = [], []
    for index, (span, compressed) in enumerate(fitted):
        own = [TensorGroup(group_prefix(index) + group.name, group.tensors, group.raw_bytes)
               for group in compressed.groups]
        table.append({"start": span.start, "frames": len(span), "model": compressed.model_header,
                      "groups": [group.name for group in own]})
        groups += own
    return Bitstream(model, {"media": info.to_dict(), SEGMENTS_KEY: table}, groups, SEGMENTS_VERSION)


def _is_count(value: object, most: int) -> bool:
    # bool is an int subclass; "start": true is nonsense, not 1
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most


def parse_segments(table: object, num_frames: int, codec: type[Codec]) -> list[Segment]:
    """The checked segment table of an untrusted header: every frame in exactly one
    segment, in order; group names the segment's own and not repeated; each model header
    a valid config of ``codec``.  InvalidBitstreamError (one line) on anything else."""
    if codec.kind != CodecKind.VIDEO:
        raise InvalidBitstreamError(f"a segment table in a {codec.name} file: segments are for single-video codecs")
    if not isinstance(table, list) or not table:
        raise InvalidBitstreamError("the segment table is not a non-empty list")
    # Every segment holds a frame and a group: this bounds the table before it is walked.
    if len(table) > min(num_frames, MAX_GROUPS):
        raise InvalidBitstreamError(f"the segment table has {len(table)} segments for {plural(num_frames, 'frame')}")
    segments, start, seen = [], 0, set()
    for index, entry in enumerate(table):
        what = f"segment {index}"
        if not isinstance(entry, dict) or sorted(entry) != sorted(ENTRY_KEYS):
            raise InvalidBitstreamError(f"{what} is not an object of {', '.join(ENTRY_KEYS)}")
        first, count = entry["start"], entry["frames"]
        if not _is_count(first, num_frames) or not _is_count(count, num_frames) or count == 0:
            raise InvalidBitstreamError(f"{what} has a bad start or frame count")
        if first != start:
            raise InvalidBitstreamError(f"{what} starts at frame {first}, not {start}: segments must hold every "
                                        "frame once, in order")
        if count > num_frames - start:
            raise InvalidBitstreamError(f"{what} ends past the video's {plural(num_frames, 'frame')}")
        names = entry["groups"]
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_GROUPS:
            raise InvalidBitstreamError(f"{what} has no list of group names")
        for name in names:
            if not isinstance(name, str) or not name.startswith(group_prefix(index)) or name == group_prefix(index):
                raise InvalidBitstreamError(f"{what} names group {name!r:.60}, not one of its own "
                                            f"({group_prefix(index)}NAME)")
            if name in seen:
                raise InvalidBitstreamError(f"group {name!r:.60} is named twice in the segment table")
            seen.add(name)
        try:
            codec.parse_config(entry["model"])
        except InvalidBitstreamError as error:
            raise InvalidBitstreamError(f"{what}: {error.reason}") from None
        segments.append(Segment(index, first, count, entry["model"], tuple(names)))
        start += count
    if start != num_frames:
        raise InvalidBitstreamError(f"the segments hold {plural(start, 'frame')}, the video {num_frames}")
    return segments


def needed_segments(segments: list[Segment], wanted: range) -> list[Segment]:
    """The segments holding a frame of ``wanted``: the only ones decoded."""
    return [segment for segment in segments if len(segment.local_frames(wanted))]


def check_group_names(segments: list[Segment], names: list[str], needed: list[Segment] | None = None
                      ) -> dict[str, int]:
    """Each group's position among ``names`` (a file's groups: all of them, or at least
    the ``needed`` segments'), after checking them against the table: no name twice, none
    outside the table, none of the needed segments' missing."""
    listed = {name for segment in segments for name in segment.groups}
    positions: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in positions:
            raise InvalidBitstreamError(f"the file holds group {name!r:.60} twice")
        if name not in listed:
            raise InvalidBitstreamError(f"the file's group {name!r:.60} belongs to no segment")
        positions[name] = position
    for segment in segments if needed is None else needed:
        for name in segment.groups:
            if name not in positions:
                raise InvalidBitstreamError(f"segment {segment.index}'s group {name!r:.60} is not in the file")
    return positions


def decode_segments(codec: Codec, segments: list[Segment], groups: list[TensorGroup], height: int, width: int,
                    wanted: range, *, device: str = "cpu", batch_size: int = 4) -> Iterator[torch.Tensor]:
    """The frames ``wanted`` as ``codec.decompress`` yields them, segment after segment;
    the networks of segments that hold none of them are never built nor run."""
    needed = needed_segments(segments, wanted)
    positions = check_group_names(segments, [group.name for group in groups], needed)
    for segment in needed:
        prefix = len(group_prefix(segment.index))
        own = [TensorGroup(name[prefix:], groups[positions[name]].tensors, groups[positions[name]].raw_bytes)
               for name in segment.groups]
        local = segment.local_frames(wanted)
        produced = 0
        for batch in codec.decompress(segment.model, own, segment.frames, height, width, device=device,
                                      batch_size=batch_size, frames=local):
            produced += batch.shape[0]
            yield batch
        if produced != len(local):
            raise InvalidBitstreamError(f"segment {segment.index} decoded {produced} frames, expected {len(local)}")
