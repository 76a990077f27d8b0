"""Fuzzing the whole decode path: container, entropy decoder, codec, frame output.

``.venv/bin/python tools/fuzz_decoder.py --cases N --seed S [--out benchmarks/results/fuzz_decoder.json]``

A tool, not part of the installed package: it imports nnc like any user of it, and
cuts files into chunks only through :mod:`nnc.bitstream.chunks`.

For every registered codec (CLC and the PFNR sets included: one-video sets and a
two-video set) it encodes tiny synthetic clips (a tiny model, one epoch of each phase)
into valid ``.nnc`` bytes, then feeds mutated copies of them to exactly what
``nnc decode`` and ``nnc info`` run (:func:`decode_all`), on the CPU, under an output
bound of 128 KiB (``--max-output-bytes``; see KNOWN_LIMITS for why).

Mutations range from blind (truncation, bit flips, byte runs) to structural, with the
chunk CRC recomputed so that the inner parsers and the codec's own checks are reached:
inflated varints (tensor counts, dimensions, stream lengths), wrong versions, chunks
dropped, duplicated, reordered or spliced from another seed, header JSON edits (absurd
media sizes and frame counts, model config values, wrong types; any field of any
codec's header found by walking it: CLC's frame records, PFNR's per-video records),
tensor metadata edits re-encoded through the container (shapes that disagree with the
config, bits, quantization axis, offsets and scales, renamed or missing tensors, raw
byte strings cut short or replaced, consistent re-sizings that must decode), and
entropy-model parameters re-encoded validly (kind, mean, scale, symbol range, table).

An input passes when it decodes, or is refused with an :class:`~nnc.errors.NncError`
(in practice InvalidBitstreamError), within ``--time-limit`` seconds of CPU time (1 s;
CPU time, so that a loaded machine does not turn into failures) and without
allocating more than ``--memory-mib`` (1024 MiB) of address space beyond the warmed-up
decoder.  Inputs run in worker processes (one torch thread each) under
``RLIMIT_AS``: an allocation sized by an unchecked field fails there as
MemoryError/RuntimeError, which is reported as a failure like any other foreign
exception; a worker that hangs past ``--kill-after`` seconds or dies is a failure too.

Case ``i`` of seed ``S`` is generated from ``random.Random(f"{S}:{i}")`` alone, so a
failure is reproduced with ``--only i`` (``--save DIR`` writes the failing inputs).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import struct
import sys
import time
import traceback
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from nnc.bitstream import Chunk, join_chunks, split_chunks
from nnc.bitstream.chunks import PREFIX_BYTES, group_fields
from nnc.bitstream.container import write_file_atomically
from nnc.bitstream.entropy import ByteWriter
from nnc.bitstream.framing import MAGIC, TAG_GROUP, read_version
from nnc.errors import NncError

MIB = 1 << 20
DEFAULT_TIME_LIMIT = 1.0
DEFAULT_MEMORY_MIB = 1024
DEFAULT_KILL_AFTER = 30.0
# The output bound every fuzzed decode runs under (nnc decode --max-output-bytes): 128 KiB
# of Y4M, ~55 frames of the 48x32 seed clip, 20x the largest seed's output.  A decoder's
# legitimate work follows the frames it is asked for (see KNOWN_LIMITS); under this
# bound it stays well inside the time limit, and header edits that ask for more frames
# test the bound's check instead.
FUZZ_MAX_OUTPUT_BYTES = 128 << 10
CHUNK_LENGTH_OFFSET = 4  # a chunk's u32 length follows its 4-byte tag (FORMAT.md 2.1)


# What the checks cannot hold by construction, recorded with every campaign.
KNOWN_LIMITS = (
    "Decode time grows with the coded symbols a group declares; the format caps them at 128 per byte of the "
    "group's rANS stream plus 65536 (FORMAT.md section 4), so a crafted file's decode time follows its size "
    "(about 0.2 s per 10 KB of stream at worst on a 2-core CPU). "
    "NeRV, NeRV++ and PFNR render one frame per frame index, and nothing in the file but the header's "
    "num_frames (at most 10**6) says how many: a header edit alone makes the decode that much longer, as a "
    "real video of that many frames would (a 35 KB NeRV file asking for 65,535 frames of 48x32 decodes for "
    "about a minute; NeRV++ renders about 130 such frames per CPU second). nnc decode bounds this by the "
    "output it would write (--max-output-bytes, 64 GiB by default); the campaign decodes under "
    "--max-output-bytes 131072 (FUZZ_MAX_OUTPUT_BYTES), so such files are refused by that same check "
    "and every decode that passes it is short. "
    "NIRVANA networks render from coordinates, so the file's size does not bound the frame size: its config "
    "names the patch grid (checked against the media size, at most 2**29 feature elements per pass), and "
    "a consistent edit of both makes the decode as long as a real video of that size would."
)

# --------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class SeedClip:
    frames: int
    height: int
    width: int
    pix_fmt: str


SEED_CLIPS = (SeedClip(2, 32, 48, "yuv420p"), SeedClip(3, 20, 36, "gray10le"))


def _synthetic_video(clip: SeedClip, seed: int):
    from nnc.media import PIX_FMT_BIT_DEPTH, Video, VideoInfo

    depth = PIX_FMT_BIT_DEPTH[clip.pix_fmt]
    info = VideoInfo(width=clip.width, height=clip.height, num_frames=clip.frames, fps=Fraction(25), pix_fmt=clip.pix_fmt,
                     bit_depth=depth, color_matrix="bt601", color_range="pc" if clip.pix_fmt.startswith("gray") else "tv")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : clip.height, 0 : clip.width].astype(np.float64)
    frames = np.empty((clip.frames, clip.height, clip.width, 3), np.float64)
    for t in range(clip.frames):
        for c in range(3):
            frames[t, ..., c] = 0.5 + 0.4 * np.sin(x / clip.width * 6.3 + rng.uniform(0, 6.3) + t) * np.cos(y / clip.height * 3.1)
    if clip.pix_fmt.startswith("gray"):
        frames[...] = frames.mean(axis=-1, keepdims=True)
    frames = np.round(frames * info.max_value).astype(np.uint8 if depth == 8 else np.uint16)
    return Video(frames=frames, info=info)


# Model sizes tried in turn for a codec without a known smallest size: the first that
# the codec accepts for the clip is used (a refused size costs no training).
SIZE_LADDER = (2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5)


def _seed_sizes(codec: str, video) -> list[float]:
    if codec == "hnerv":  # its smallest model exactly
        from nnc.models.hnerv import HNeRVConfig, choose_strides, model_size

        num_frames, height, width = video.frames.shape[:3]
        strides, embed_h, embed_w = choose_strides(height, width)
        smallest = HNeRVConfig(strides=strides, embed_height=embed_h, embed_width=embed_w, fc_dim=1)
        return [float(model_size(smallest, num_frames))]
    return list(SIZE_LADDER)


def _compress_smallest(codec_class, name: str, video):
    """Compress with the codec's smallest accepted model, one epoch, quietly, on the CPU
    (options a codec does not have, such as a model size for CLC, are left out)."""
    known = codec_class.Options.fields()
    # force: seed files are tiny on purpose, larger than their raw clip
    # One epoch of every phase: NeRV's default pruning fine-tune alone (100 epochs) made
    # its seed cost minutes.  Pruning stays on, so the masks are in the seed files.
    quick = dict(epochs=1, finetune_epochs=1, qat_epochs=1, batch_size=1, show_progress=False, device="cpu",
                 checkpoint_interval=0, force=True)
    quick = {key: value for key, value in quick.items() if key in known}
    sizes = _seed_sizes(name, video) if "size" in known else [None]
    error = None
    for size in sizes:
        options = codec_class.make_options(**quick, size=size)
        try:
            return codec_class().compress(video, options)
        except NncError as refused:  # below the codec's smallest model for this clip: go up
            error = refused
    raise error


def build_seeds(seed: int = 0, *, codecs: list[str] | None = None,
                clips: tuple[SeedClip, ...] = SEED_CLIPS) -> tuple[list[dict], list[str]]:
    """Valid .nnc files (bytes) of every registered codec (or of ``codecs``), one per clip;
    also the codecs that could not make one."""
    import torch

    from nnc.bitstream import Bitstream, encode_bitstream
    from nnc.codec.base import CodecKind
    from nnc.codec.registry import available_codecs, get_codec

    seeds, errors = [], []
    for name in available_codecs() if codecs is None else codecs:
        for index, clip in enumerate(clips):
            video = _synthetic_video(clip, seed + index)
            torch.manual_seed(seed)
            try:
                compressed = _compress_smallest(get_codec(name), name, video)
            except Exception as error:  # a codec that cannot make a seed is reported, not fatal
                errors.append(f"{name} {clip}: {type(error).__name__}: {error}")
                continue
            header = {"media": video.info.to_dict(), "model": compressed.model_header}
            data = encode_bitstream(Bitstream(codec=name, header=header, groups=compressed.groups))
            seeds.append({"codec": name, "clip": f"{clip.width}x{clip.height}x{clip.frames} {clip.pix_fmt}",
                          "bytes": data})
        if name in SEGMENTED_SEED_CODECS and clips:
            try:  # a segmented file (--segment-frames): a segment table, groups s<i>/NAME, version 3
                seeds.append(_segmented(name, clips[0], seed))
            except Exception as error:
                errors.append(f"{name} segmented: {type(error).__name__}: {error}")
        if get_codec(name).kind == CodecKind.VIDEO_SET and clips:
            try:  # a set of two videos: sessions that build on each other, one group per video
                seeds.append(_two_video_set(name, clips[0], seed))
            except Exception as error:
                errors.append(f"{name} two-video set: {type(error).__name__}: {error}")
    return seeds, errors


# One codec's segmented file covers the segment table: every single-video codec's segments
# go through the same table and decoder (codec/segments.py).
SEGMENTED_SEED_CODECS = ("hnerv",)


def _segmented(name: str, clip: SeedClip, seed: int) -> dict:
    """A file of ``clip`` coded as segments of one frame (as ``--segment-frames 1`` writes it)."""
    import torch

    from nnc.bitstream import encode_bitstream
    from nnc.codec.registry import get_codec
    from nnc.codec.segment_fitting import segment_video
    from nnc.codec.segments import segmented_bitstream, spans

    video = _synthetic_video(clip, seed + 200)
    fitted = []
    for span in spans(clip.frames, 1):
        torch.manual_seed(seed)
        fitted.append((span, _compress_smallest(get_codec(name), name, segment_video(video, span))))
    data = encode_bitstream(segmented_bitstream(name, video.info, fitted))
    return {"codec": name, "clip": f"{clip.width}x{clip.height}x{clip.frames} {clip.pix_fmt} in segments of 1 frame",
            "bytes": data}


def _two_video_set(name: str, clip: SeedClip, seed: int) -> dict:
    """A set file of two different videos of ``clip``'s size (written by the set API,
    as ``nnc encode A B --model pfnr`` writes it)."""
    import tempfile

    import torch

    from nnc.codec.registry import get_codec
    from nnc.codec.video_set_api import encode_video_set

    codec_class = get_codec(name)
    known = codec_class.Options.fields()
    quick = dict(epochs=1, batch_size=1, show_progress=False, device="cpu", checkpoint_interval=0)
    quick = {k: v for k, v in quick.items() if k in known}
    videos = [(f"video{i}", _synthetic_video(clip, seed + 100 + i)) for i in range(2)]
    error = None
    for size in _seed_sizes(name, videos[0][1]) if "size" in known else [None]:  # the smallest accepted
        torch.manual_seed(seed)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "set.nnc"
            try:
                encode_video_set(videos, path, codec_class.make_options(**quick, size=size))
            except NncError as refused:
                error = refused
                continue
            data = path.read_bytes()
            break
    else:
        raise error
    return {"codec": name, "clip": f"2 videos of {clip.width}x{clip.height}x{clip.frames} {clip.pix_fmt}",
            "bytes": data}


# --------------------------------------------------------------------------- chunk helpers


def split_file(data: bytes) -> tuple[int, list[list]]:
    """A file's version and its chunks as mutable [tag, payload] pairs (through the
    bitstream's chunk API); a file whose framing an earlier mutation broke is Skip."""
    try:
        chunks = split_chunks(data)
    except NncError as error:
        raise Skip from error
    # the file's own version (a segmented file's 3 is in no chunk), or more if a chunk needs it
    version = max([read_version(data)] + [chunk.min_version for chunk in chunks])
    return version, [[chunk.tag, chunk.payload] for chunk in chunks]


def join_file(version: int, chunks) -> bytes:
    """The file of ``chunks`` ([tag, payload] pairs) with valid framing and CRCs."""
    return join_chunks([Chunk(tag, payload) for tag, payload in chunks], version)


def encode_uvarint(value: int) -> bytes:
    writer = ByteWriter()
    writer.uvarint(value)
    return bytes(writer.buffer)


# --------------------------------------------------------------------------- mutations

INTERESTING_INTS = [0, 1, 2, 3, 7, 8, 15, 16, 17, 127, 128, 255, 256, 4095, 4096, 4097, 65535, 65536, 65537,
                    2**25, 2**26, 2**26 + 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63, 2**64]
JSON_VALUES = [0, -1, 1, 2, 3, 7, 9, 255, 256, 2048, 16384, 16385, 65535, 10**6, 10**6 + 1, 2**31, 2**32 + 1, 2**63,
               10**100, -0.0, 0.5, 1.5, 1e308, True, False, None, "", "x" * 300, [], {}, [1], [0, 1], [1, 0], [25, 1, 1],
               [25, 0], [1e999, 1], [2, 2, 2, 2, 2, 2, 2, 2, 2], [8, 8, 8, 8, 8], [1], "yuv420p", "gray16le",
               "rgb24", "rgb48le", "yuv444p12le", "bt709", "rgb", "pc", "hnerv", {"a": 1}]
MEDIA_KEYS = ["width", "height", "num_frames", "fps", "pix_fmt", "bit_depth", "color_matrix", "color_range"]
CONFIG_KEYS = ["strides", "fc_dim", "embed_channels", "embed_height", "embed_width", "encoder_width", "kernel_first",
               "kernel_max", "reduce", "lower_width", "encoder_blocks"]


class Skip(Exception):
    """A mutation that does not apply to this seed; another one is drawn."""


def _pick_chunk(rng, chunks, prefer_group=True):
    candidates = [i for i, (tag, payload) in enumerate(chunks) if payload]
    groups = [i for i in candidates if chunks[i][0] == TAG_GROUP]
    if prefer_group and groups and rng.random() < 0.75:
        return rng.choice(groups)
    return rng.choice(candidates)


def m_truncate(rng, data, seeds):
    if not data:  # an earlier mutation truncated it to nothing
        raise Skip
    cut = rng.randrange(len(data)) if rng.random() < 0.7 else rng.choice([0, 1, 8, 9, 10, 12, 20, len(data) - 1, len(data) - 4])
    return data[:cut], f"truncate to {cut} of {len(data)} bytes"


def m_flip_raw(rng, data, seeds):
    if not data:
        raise Skip
    out = bytearray(data)
    positions = [rng.randrange(len(out)) for _ in range(rng.randint(1, 8))]
    for p in positions:
        out[p] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip bits at {positions} (CRC not fixed)"


def m_flip_payload(rng, data, seeds):
    version, chunks = split_file(data)
    i = _pick_chunk(rng, chunks)
    payload = bytearray(chunks[i][1])
    positions = [rng.randrange(len(payload)) for _ in range(rng.randint(1, 4))]
    for p in positions:
        payload[p] ^= 1 << rng.randrange(8)
    chunks[i][1] = bytes(payload)
    return join_file(version, chunks), f"flip bits at {positions} of chunk {i} {chunks[i][0].decode()} (CRC fixed)"


def m_byte_run(rng, data, seeds):
    version, chunks = split_file(data)
    i = _pick_chunk(rng, chunks)
    payload = bytearray(chunks[i][1])
    start, length = rng.randrange(len(payload)), rng.choice([1, 2, 4, 8, 16, 64, 256])
    value = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    end = min(len(payload), start + length)
    payload[start:end] = bytes([value]) * (end - start)
    chunks[i][1] = bytes(payload)
    return join_file(version, chunks), f"bytes {start}:{end} of chunk {i} set to {value:#04x} (CRC fixed)"


def m_insert_delete(rng, data, seeds):
    version, chunks = split_file(data)
    i = _pick_chunk(rng, chunks)
    payload = chunks[i][1]
    start = rng.randrange(len(payload) + 1)
    if rng.random() < 0.5:
        extra = bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 4, 16])))
        chunks[i][1] = payload[:start] + extra + payload[start:]
        what = f"insert {len(extra)} bytes at {start}"
    else:
        count = rng.choice([1, 3, 4, 16, 1000])
        chunks[i][1] = payload[:start] + payload[start + count :]
        what = f"delete {count} bytes at {start}"
    return join_file(version, chunks), f"{what} of chunk {i} (CRC fixed)"


def random_group_fields(rng, data):
    """A random tensor group of the file: (version, chunks, its chunk index, its fields);
    Skip when the file has none or an earlier mutation broke its payload."""
    version, chunks = split_file(data)
    groups = [i for i, (tag, _) in enumerate(chunks) if tag == TAG_GROUP]
    if not groups:
        raise Skip
    i = rng.choice(groups)
    try:
        fields = group_fields(chunks[i][1])
    except (NncError, IndexError) as error:
        raise Skip from error
    return version, chunks, i, fields


def m_field(rng, data, seeds):
    """Set one field of a tensor group (counts, dimensions, lengths, bytes) to an extreme value."""
    version, chunks, i, fields = random_group_fields(rng, data)
    payload = chunks[i][1]
    start, end, kind, what = rng.choice([f for f in fields if f[2] != "f32s"] if rng.random() < 0.85 else fields)
    if kind == "uvarint":
        value = rng.choice(INTERESTING_INTS) if rng.random() < 0.8 else rng.randrange(1 << rng.choice([8, 16, 32]))
        new = encode_uvarint(value)
        if rng.random() < 0.1:  # non-minimal encoding
            new = new[:-1] + bytes([new[-1] | 0x80, 0x00])
            value = f"{value} (non-minimal)"
    elif kind == "u8":
        value = rng.choice([0, 1, 2, 5, 6, 7, 8, 9, 15, 16, 17, 0x7F, 0xFE, 0xFF, rng.randrange(256)])
        new = bytes([value])
    elif kind == "f32s":
        value = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e-45, 1e38, 3.4e38])
        new = struct.pack("<f", value) * ((end - start) // 4)
    elif kind == "bytes":  # a raw byte string (CLC's rANS strings): one byte changed
        if end == start:
            raise Skip
        raw = bytearray(payload[start:end])
        p = rng.randrange(len(raw))
        raw[p] = rng.randrange(256)
        new, value = bytes(raw), f"byte {p} = {raw[p]:#04x}"
    else:  # an entropy model: change its kind byte, or its bytes after that
        model = bytearray(payload[start:end])
        p = rng.randrange(len(model))
        model[p] = rng.choice([0, 1, 2, 3, 4, 5, 6, 0x7F, 0xFF, rng.randrange(256)])
        new, value = bytes(model), f"byte {p} = {model[p]:#04x}"
    chunks[i][1] = payload[:start] + new + payload[end:]
    return join_file(version, chunks), f"chunk {i} field {what!r} ({kind}) = {value} (CRC fixed)"


def m_chunk_length(rng, data, seeds):
    version, chunks = split_file(data)
    i = rng.randrange(len(chunks))
    pos = PREFIX_BYTES + sum(Chunk(tag, payload).size for tag, payload in chunks[:i])
    value = rng.choice([0, 1, len(chunks[i][1]) - 1, len(chunks[i][1]) + 1, 2**31, 2**32 - 1, rng.randrange(2**32)]) % 2**32
    out = bytearray(data)
    struct.pack_into("<I", out, pos + CHUNK_LENGTH_OFFSET, value)
    return bytes(out), f"chunk {i} length field = {value}"


def m_version(rng, data, seeds):
    value = rng.choice([0, 1, 2, 3, 255, 256, 0xFFFF, rng.randrange(0x10000)])
    out = bytearray(data)
    struct.pack_into("<H", out, len(MAGIC), value)
    if rng.random() < 0.2:
        out[rng.randrange(len(MAGIC))] ^= 0xFF
        return bytes(out), f"version {value} and corrupt magic"
    return bytes(out), f"version {value}"


def m_chunks(rng, data, seeds):
    version, chunks = split_file(data)
    op = rng.choice(["drop", "duplicate", "swap", "move", "unknown", "trailing", "end payload", "splice"])
    if op == "drop":
        i = rng.randrange(len(chunks))
        del chunks[i]
        what = f"drop chunk {i}"
    elif op == "duplicate":
        i = rng.randrange(len(chunks))
        chunks.insert(rng.randrange(len(chunks) + 1), list(chunks[i]))
        what = f"duplicate chunk {i}"
    elif op == "swap":
        i, j = rng.randrange(len(chunks)), rng.randrange(len(chunks))
        chunks[i], chunks[j] = chunks[j], chunks[i]
        what = f"swap chunks {i} and {j}"
    elif op == "move":
        i = rng.randrange(len(chunks))
        chunk = chunks.pop(i)
        j = rng.randrange(len(chunks) + 1)
        chunks.insert(j, chunk)
        what = f"move chunk {i} to {j}"
    elif op == "unknown":
        tag = rng.choice([b"TGRQ", b"head", b"\x00\x00\x00\x00", b"XTRA"])
        chunks.insert(rng.randrange(len(chunks) + 1), [tag, b"\x00" * rng.choice([0, 4])])
        what = f"insert chunk {tag!r}"
    elif op == "trailing":
        return data + bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 12]))), "trailing bytes"
    elif op == "end payload":
        chunks[-1][1] = b"\x00"
        what = "non-empty TEND"
    else:
        _, other = split_file(rng.choice(seeds))
        i, j = rng.randrange(len(chunks)), rng.randrange(len(other))
        chunks[i] = list(other[j])
        what = f"chunk {i} replaced by chunk {j} of another seed"
    return join_file(version, chunks), f"{what} (CRCs valid)"


def _with_header(data, edit):
    """Edit the header JSON of a file (zlib and CRC kept valid); Skip where an earlier
    mutation left no readable header object, or not the keys the edit changes."""
    version, chunks = split_file(data)
    try:
        document = json.loads(zlib.decompress(chunks[0][1]))
        result = edit(document)
    except (zlib.error, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as error:
        raise Skip from error
    text = result if isinstance(result, (bytes, str)) else json.dumps(document)
    chunks[0][1] = zlib.compress(text.encode("utf-8") if isinstance(text, str) else text)
    return join_file(version, chunks)


def m_header(rng, data, seeds):
    """Edit the header JSON (CRC and zlib valid)."""
    choice = rng.random()
    if choice < 0.35:
        key = rng.choice(MEDIA_KEYS)
        value = rng.choice(JSON_VALUES)

        def edit(doc):
            doc["header"]["media"][key] = value
        what = f"media.{key} = {value!r}"[:120]
    elif choice < 0.7:
        key = rng.choice(CONFIG_KEYS)
        value = rng.choice(JSON_VALUES)

        def edit(doc):
            doc["header"]["model"]["config"][key] = value
        what = f"model.config.{key} = {value!r}"[:120]
    elif choice < 0.8:
        section, key = rng.choice([("media", k) for k in MEDIA_KEYS]
                                  + [("model", "config"), ("header", "media"), ("header", "model")])

        def edit(doc):
            target = doc["header"] if section == "header" else doc["header"][section]
            target.pop(key, None) if rng.random() < 0.7 else target.update({"extra": 1})
        what = f"remove {section}.{key} or add an unknown key"
    else:
        kind = rng.choice(["codec", "root", "deep", "duplicate key", "NaN", "1e999", "bad utf-8", "bomb", "big string"])

        def edit(doc):
            if kind == "codec":
                doc["codec"] = rng.choice(["", "HNERV", "x" * 65, 7, None, "nerv"])
            elif kind == "root":
                return json.dumps(rng.choice([[], "x", 1, None, {"codec": "hnerv"}, {"codec": "hnerv", "header": []}]))
            elif kind == "deep":
                return '{"codec": "hnerv", "header": ' + "[" * 100000 + "]" * 100000 + "}"
            elif kind == "duplicate key":
                return json.dumps(doc)[:-1] + ', "codec": "other"}'
            elif kind == "NaN":
                return json.dumps(doc).replace('"fc_dim": ', '"fc_dim": NaN, "x": ', 1)
            elif kind == "1e999":
                return json.dumps(doc).replace('"reduce": 1.2', '"reduce": 1e999').replace('"width": ', '"width": 1e999, "w": ')
            elif kind == "bad utf-8":
                return json.dumps(doc).encode() + b"\xff\xfe"
            elif kind == "bomb":
                return json.dumps(doc) + " " * (2 * MIB)
            else:
                doc["header"]["junk"] = "x" * (MIB - 100)
        what = f"header JSON {kind}"
    return _with_header(data, edit), what


_MODEL_CHOICES: dict = {}
_MODEL_CHOICES_KEPT = 50_000


@contextmanager
def _memoized_model_choice():
    """Re-encoding a file re-fits the entropy model of every tensor, most of them
    unchanged (0.4 s a case, 80% of the campaign's time): remember each choice by the
    symbols' content.  :func:`nnc.bitstream.entropy.choose_model` is deterministic, so
    the bytes written are the same."""
    from nnc.bitstream import entropy

    choose = entropy.choose_model

    def remembered(symbols):
        array = np.ascontiguousarray(symbols)
        key = (array.dtype.str, array.shape, hashlib.blake2b(array.view(np.uint8), digest_size=16).digest())
        if key not in _MODEL_CHOICES:
            if len(_MODEL_CHOICES) >= _MODEL_CHOICES_KEPT:
                _MODEL_CHOICES.clear()
            _MODEL_CHOICES[key] = choose(symbols)
        return _MODEL_CHOICES[key]

    entropy.choose_model = remembered
    try:
        yield
    finally:
        entropy.choose_model = choose


def _retensor(data, edit):
    """Decode a valid file, edit its Bitstream object, re-encode (CRCs, models valid)."""
    from nnc.bitstream import decode_bitstream, encode_bitstream

    try:
        bitstream = decode_bitstream(data)
    except NncError as error:  # an earlier mutation broke the file: nothing to edit
        raise Skip from error
    try:
        edit(bitstream)
        with _memoized_model_choice():
            return encode_bitstream(bitstream)
    except (ValueError, TypeError, KeyError, IndexError) as error:  # the encoder refuses: not applicable
        raise Skip from error


def m_tensors(rng, data, seeds):
    """Tensors that disagree with the config, renamed, dropped, added; groups renamed or dropped;
    raw byte strings cut short, renamed or replaced by random bytes."""
    from nnc.bitstream import QuantizedTensor, RawBytes, TensorGroup

    op = rng.choice(["reshape", "flatten", "slice", "extend", "rename", "drop", "add", "group rename", "group drop",
                     "group empty", "group add", "swap tensors", "bits", "raw cut", "raw random", "raw rename"])

    def edit(bs):
        group = rng.choice(bs.groups)
        if op.startswith("raw "):
            if not group.raw_bytes:
                raise Skip
            index = rng.randrange(len(group.raw_bytes))
            entry = group.raw_bytes[index]
            if op == "raw cut":
                data = entry.data[: rng.randrange(len(entry.data) + 1)]
            elif op == "raw random":
                data = bytes(rng.randrange(256) for _ in range(len(entry.data)))
            else:
                data = entry.data
            name = rng.choice(["", "streams", entry.name + "x"]) if op == "raw rename" else entry.name
            group.raw_bytes[index] = RawBytes(name, data)
            return
        tensor_index = rng.randrange(len(group.tensors)) if group.tensors else None
        tensor = group.tensors[tensor_index] if tensor_index is not None else None
        if op in ("reshape", "flatten", "slice", "extend", "bits", "rename", "drop") and tensor is None:
            raise Skip  # a group of raw byte strings only (CLC)
        if op == "add" and not any(g.tensors for g in bs.groups):
            raise Skip
        if op == "reshape":
            shape = list(tensor.symbols.shape)
            if len(shape) < 2:
                raise Skip
            shape[0], shape[-1] = shape[-1], shape[0]
            group.tensors[tensor_index] = replace_tensor(tensor, tensor.symbols.reshape(shape))
        elif op == "flatten":
            group.tensors[tensor_index] = replace_tensor(tensor, tensor.symbols.reshape(-1))
        elif op == "slice":
            group.tensors[tensor_index] = replace_tensor(tensor, tensor.symbols[: max(1, tensor.symbols.shape[0] - 1)])
        elif op == "extend":
            group.tensors[tensor_index] = replace_tensor(tensor, np.concatenate([tensor.symbols, tensor.symbols[:1]]))
        elif op == "rename":
            tensor.name = rng.choice(["", "x", tensor.name + ".extra", "embeddings", "weights"])
        elif op == "drop":
            del group.tensors[tensor_index]
        elif op == "add":
            source = rng.choice([t for g in bs.groups for t in g.tensors])
            group.tensors.append(QuantizedTensor(source.name + "_copy" if rng.random() < 0.5 else source.name,
                                                 source.symbols, source.scheme, source.bits, source.axis,
                                                 source.offset, source.scale))
        elif op == "group rename":
            group.name = rng.choice(["", "weights", "embeddings", "other"])
        elif op == "group drop":
            bs.groups.remove(group)
        elif op == "group empty":
            group.tensors.clear()
        elif op == "group add":
            bs.groups.append(TensorGroup(rng.choice(["weights", "extra"]), list(group.tensors), list(group.raw_bytes)))
        elif op == "swap tensors":
            if len(group.tensors) < 2:
                raise Skip
            i, j = rng.sample(range(len(group.tensors)), 2)
            group.tensors[i].name, group.tensors[j].name = group.tensors[j].name, group.tensors[i].name
        else:
            if tensor.scheme != "minmax":
                raise Skip
            tensor.bits = max(1, int(tensor.symbols.max()).bit_length())

    return _retensor(data, edit), op


def m_quant(rng, data, seeds):
    """Quantization parameters re-encoded through the container: axis moved (per tensor <->
    per channel on another dimension), scales and offsets made zero, negative, huge,
    infinite or NaN, symbols pushed to the extremes of their bit width."""
    op = rng.choice(["axis", "scale", "offset", "extreme symbols"])

    def edit(bs):
        tensors = [t for g in bs.groups for t in g.tensors]
        if not tensors:
            raise Skip
        index = rng.randrange(len(tensors))
        tensor = tensors[index]
        if op == "axis":
            dims = [d for d in range(tensor.symbols.ndim) if d != tensor.axis]
            if not dims:
                raise Skip
            axis = rng.choice(dims)
            count = tensor.symbols.shape[axis]
            tensor.axis = axis
            tensor.offset = np.resize(tensor.offset, count).astype(tensor.offset.dtype)
            tensor.scale = np.resize(tensor.scale, count).astype(tensor.scale.dtype)
        elif op in ("scale", "offset"):
            values = getattr(tensor, op).copy()
            values[rng.randrange(len(values))] = rng.choice([0.0, -1.0, 1e30, -1e30, np.inf, np.nan, 1e-45])
            setattr(tensor, op, values)
        else:
            top = (1 << min(tensor.bits, 16)) - 1
            symbols = tensor.symbols.copy()
            flat = symbols.reshape(-1)
            flat[rng.randrange(flat.size)] = rng.choice([0, top])
            tensor.symbols = symbols

    return _retensor(data, edit), f"quant {op}"


def _header_paths(node, path=()):
    """Every node under the header JSON (dict keys and list items), as key paths."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        yield path + (key,)
        yield from _header_paths(value, path + (key,))


def _nearby_values(rng, value):
    """Values a careless or hostile writer might put where ``value`` was."""
    if isinstance(value, bool) or value is None:
        return [not value, 0, 1, "true", None, []]
    if isinstance(value, (int, float)):
        return [value + 1, value - 1, value * 2, -value, 0, value // 2 if isinstance(value, int) else value / 2,
                float(value) + 0.5, str(value), 2**31, 2**53 + 1, 10**6, 1e308, [value]]
    if isinstance(value, str):
        return ["", value.upper(), value + "x", value[:-1], 0, [value], "\udcff"]
    if isinstance(value, list):
        return [[], value[:-1], value + value[-1:], value[::-1], value * 3, {"0": value[:1]}, len(value)]
    return [{}, [], {k: v for k, v in list(value.items())[:-1]}, dict(value, extra=1), "x"]


def m_header_tree(rng, data, seeds):
    """Any field of any codec's header, found by walking its JSON (media, model config,
    CLC's frame records, PFNR's per-video records, NIRVANA's chains...): set to a nearby
    or absurd value, deleted, or an item of a list duplicated or dropped (zlib, CRC valid)."""
    described = []

    def edit(doc):
        header = doc["header"]
        paths = list(_header_paths(header))
        if not paths:
            raise KeyError("empty header")
        # the model's own structure is what differs between codecs: weight it up
        model_paths = [path for path in paths if path[0] == "model"]
        path = rng.choice(model_paths if model_paths and rng.random() < 0.7 else paths)
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        key, value = path[-1], parent[path[-1]]
        op = rng.choice(["nearby", "nearby", "absurd", "delete"])
        if op == "delete":
            del parent[key]
        else:
            parent[key] = rng.choice(_nearby_values(rng, value) if op == "nearby" else JSON_VALUES)
        described.append(f"{'.'.join(map(str, path))} {op}" + ("" if op == "delete" else f" = {parent[key]!r}"[:80]))

    data = _with_header(data, edit)
    return data, f"header field {described[0]}"


def _histogram_table(rng, size: int, precision: int, peaked: bool) -> np.ndarray:
    """A valid histogram table: >= 0, two or more symbols, summing to 2**precision."""
    total = 1 << precision
    if not 2 <= size <= total:
        raise Skip
    table = np.ones(size, np.int64)
    if peaked:  # one symbol takes nearly everything: the others cost ~16 bits each
        table[rng.randrange(size)] += total - size
    else:
        table += np.random.default_rng(rng.randrange(2**32)).multinomial(total - size, np.full(size, 1 / size))
    return table


def m_entropy(rng, data, seeds):
    """An entropy model's parameters edited and re-encoded validly (CRC fixed): another
    kind over the same symbols, extreme means and scales, a shifted or resized symbol
    range, a peaked or reshuffled histogram, a coded tensor declared constant.  The rANS
    stream is unchanged, so it now decodes under the wrong model."""
    from nnc.bitstream import entropy

    version, chunks, i, fields = random_group_fields(rng, data)
    payload = chunks[i][1]
    fields = [f for f in fields if f[2] == "model"]
    if not fields:
        raise Skip  # a group of raw byte strings only (CLC)
    start, end, _, what = rng.choice(fields)
    try:
        model = entropy.read_model(entropy.ByteReader(payload[start:end], "model"), "model",
                                   entropy.MIN_SYMBOL, entropy.MAX_SYMBOL)
    except NncError as error:
        raise Skip from error
    op = rng.choice(["kind", "mean", "scale", "low", "size", "table", "constant"])
    kind, low, size = model.kind, model.low, max(model.size, 2)
    mean, scale, precision, table = model.mean, model.scale or 1.0, model.precision or 12, model.table
    if op == "kind":
        kind = rng.choice([k for k in entropy.MODEL_KINDS if k not in (model.kind, "constant")])
    elif op == "mean":
        kind = kind if kind in entropy.PARAMETRIC_KINDS else rng.choice(entropy.PARAMETRIC_KINDS)
        mean = rng.choice([0.0, float(low), float(low + size - 1), entropy.MAX_MODEL_ABS_MEAN,
                           -entropy.MAX_MODEL_ABS_MEAN, 1e9])
    elif op == "scale":
        kind = kind if kind in entropy.PARAMETRIC_KINDS else rng.choice(entropy.PARAMETRIC_KINDS)
        scale = rng.choice([entropy.MIN_MODEL_SCALE, entropy.MAX_MODEL_SCALE, 1e-2, 1e6])
    elif op == "low":
        low = rng.choice([low - 1, low + 1, low - size, low + size, 0, entropy.MIN_SYMBOL])
    elif op == "size":
        size = rng.choice([size - 1, size + 1, 2, size * 2, entropy.MAX_ALPHABET_SIZE])
    elif op == "table":
        kind = "histogram"
        precision = rng.choice([precision, 1, 8, 16])
    else:
        kind = "constant"
    if kind == "histogram" and (op in ("kind", "size", "table") or table is None or len(table) != size):
        table = _histogram_table(rng, max(2, size), precision, rng.random() < 0.5)
        size = len(table)
    if kind not in entropy.PARAMETRIC_KINDS:
        mean = scale = 0.0
    edited = entropy.EntropyModel(kind, low, 1 if kind == "constant" else max(2, size), mean=mean, scale=scale,
                                  precision=precision if kind == "histogram" else 0,
                                  table=table if kind == "histogram" else None)
    writer = entropy.ByteWriter()
    try:
        entropy.write_model(writer, edited)
    except (ValueError, OverflowError, IndexError) as error:
        raise Skip from error
    chunks[i][1] = payload[:start] + bytes(writer.buffer) + payload[end:]
    return join_file(version, chunks), f"{what} {op}: {edited.describe()} (was {model.describe()})"[:300]


def replace_tensor(tensor, symbols):
    from nnc.bitstream import QuantizedTensor

    axis = tensor.axis
    offset, scale = tensor.offset, tensor.scale
    if axis is not None and (axis >= symbols.ndim or symbols.shape[axis] != len(offset)):
        axis, offset, scale = None, offset[:1], scale[:1]
    return QuantizedTensor(tensor.name, np.ascontiguousarray(symbols), tensor.scheme, tensor.bits, axis, offset, scale)


def m_resize(rng, data, seeds):
    """Consistent edits that must still decode: fewer/more frames, a cropped size, other pixel formats."""
    op = rng.choice(["frames", "crop", "pix_fmt", "fps"])
    if op == "frames":
        count = rng.choice([1, 2, 5, 9])

        def edit(bs):
            embeddings = [t for g in bs.groups for t in g.tensors if t.name == "embeddings"]
            if not embeddings or "media" not in bs.header:
                raise Skip
            tensor = embeddings[0]
            symbols = np.resize(tensor.symbols, (count, *tensor.symbols.shape[1:]))
            for g in bs.groups:
                g.tensors = [replace_tensor(t, symbols) if t is tensor else t for t in g.tensors]
            bs.header["media"]["num_frames"] = count
        return _retensor(data, edit), f"{count} frames (consistent)"
    if op == "crop":
        def edit(doc):
            media, stride = doc["header"]["media"], int(np.prod(doc["header"]["model"]["config"]["strides"]))
            for key in ("width", "height"):
                grid = -(-media[key] // stride)
                media[key] = rng.randint((grid - 1) * stride + 1, media[key])
        return _with_header(data, edit), "crop inside the embedding grid (consistent)"
    if op == "pix_fmt":
        pix_fmt, depth = rng.choice([("yuv420p", 8), ("gray", 8), ("rgb24", 8), ("yuv444p12le", 12),
                                     ("gray16le", 16), ("rgb48le", 16), ("yuv420p10le", 10)])

        def edit(doc):
            media = doc["header"]["media"]
            media.update(pix_fmt=pix_fmt, bit_depth=depth)
            if pix_fmt.startswith("rgb"):
                media.update(color_matrix="rgb", color_range="pc")
            elif media["color_matrix"] == "rgb":
                media.update(color_matrix="bt601", color_range="tv")
        return _with_header(data, edit), f"pix_fmt {pix_fmt} (consistent)"
    fps = rng.choice([[1, 1], [999999, 1], [1, 999999], [30000, 1001]])

    def edit(doc):
        doc["header"]["media"]["fps"] = fps
    return _with_header(data, edit), f"fps {fps} (consistent)"


MUTATIONS = {
    "truncate": (m_truncate, 1),
    "flip_raw": (m_flip_raw, 1),
    "flip_payload": (m_flip_payload, 3),
    "byte_run": (m_byte_run, 2),
    "insert_delete": (m_insert_delete, 1),
    "field": (m_field, 4),
    "chunk_length": (m_chunk_length, 1),
    "version": (m_version, 1),
    "chunks": (m_chunks, 2),
    "header": (m_header, 4),
    "tensors": (m_tensors, 3),
    "resize": (m_resize, 2),
    "quant": (m_quant, 2),
    "header_tree": (m_header_tree, 3),
    "entropy": (m_entropy, 2),
}


def make_case(seed: int, index: int, seeds: list[bytes]) -> tuple[bytes, str]:
    """Case ``index``: a seed file with one to three mutations, deterministic in (seed, index)."""
    rng = random.Random(f"{seed}:{index}")
    names = list(MUTATIONS)
    weights = [MUTATIONS[n][1] for n in names]
    seed_index = rng.randrange(len(seeds))
    data, steps = seeds[seed_index], []
    rounds = 1 if rng.random() < 0.7 else rng.randint(2, 3)
    attempts = 0
    while len(steps) < rounds and attempts < 50:
        attempts += 1
        name = rng.choices(names, weights)[0]
        try:
            mutated, what = MUTATIONS[name][0](rng, data, seeds)
        except Skip:
            continue
        except Exception as error:  # a structural mutation on an already broken file: try another
            if steps:
                continue
            raise RuntimeError(f"mutation {name} failed on a valid seed: {error!r}") from error
        data = mutated
        steps.append(f"{name}: {what}")
    return data, f"seed {seed_index}; " + "; ".join(steps)


# --------------------------------------------------------------------------- workers


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM, the peak resident set size
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def decode_all(data: bytes, max_output_bytes: int = FUZZ_MAX_OUTPUT_BYTES) -> int:
    """What ``nnc info`` and ``nnc decode --max-output-bytes MAX_OUTPUT_BYTES`` do, minus
    writing: the header check they share, the decode bounds (Y4M output), every frame
    decoded (every video of a set); then ``nnc info``'s description.  Returns the frames
    produced."""
    from nnc.bitstream import decode_bitstream
    from nnc.codec.base import CodecKind
    from nnc.codec.header import check_header
    from nnc.codec.segments import is_segmented
    from nnc.codec.video_api import decode_frames
    from nnc.codec.video_set_api import decode_session_frames
    from nnc.media.limits import check_output_limits

    bitstream = decode_bitstream(data)
    checked = check_header(bitstream.codec, bitstream.header, bitstream.version)
    if is_segmented(bitstream.header):  # nnc decode --frames: only the last frame's segment is read
        _decode_last_frame(data, checked.videos[0].num_frames)
    for info in checked.videos:
        check_output_limits(info, "y4m", max_output_bytes=max_output_bytes)
    frames = 0
    if checked.codec.kind == CodecKind.VIDEO_SET:
        for index in range(len(checked.videos)):
            for batch in decode_session_frames(bitstream, index):
                frames += batch.shape[0]
    else:
        for batch in decode_frames(bitstream, device="cpu"):
            frames += batch.shape[0]
    _describe(data)
    return frames


def _decode_last_frame(data: bytes, num_frames: int) -> None:
    """``nnc decode --frames N-1:`` (``num_frames``: the checked header's N) through the
    random-access reader (a file on disk, as the command reads one)."""
    import tempfile

    from nnc.codec.video_api import decode_frames, read_for_decode, resolve_frame_range

    last = num_frames - 1
    with tempfile.NamedTemporaryFile(suffix=".nnc") as handle:
        handle.write(data)
        handle.flush()
        bitstream = read_for_decode(Path(handle.name), (last, None))
    for _ in decode_frames(bitstream, device="cpu", frames=resolve_frame_range((last, None), last + 1)):
        pass


def _describe(data: bytes) -> None:
    """``nnc info`` on ``data`` (through a file, as the command reads one), text and JSON."""
    import tempfile

    from nnc.codec.files import describe

    with tempfile.NamedTemporaryFile(suffix=".nnc") as handle:
        handle.write(data)
        handle.flush()
        description = describe(Path(handle.name))
    description["text"].encode("utf-8")
    json.dumps(description["data"])


def _allocate_unchecked(data: bytes) -> int:
    """A deliberately bad "decoder" (for the harness's own tests): allocates what the input says."""
    size = int.from_bytes(data[:8], "little")
    return int(np.ones(size, np.uint8).sum())


def _spin(data: bytes) -> int:
    """Another bad "decoder" for the harness's tests: works for as many milliseconds of
    CPU time as the input says."""
    end = time.process_time() + int.from_bytes(data[:8], "little") / 1000
    spins = 0
    while time.process_time() < end:
        spins += 1
    return 0


def _worker(connection, warmup: list[bytes], memory_bytes: int, target: str = "decode_all") -> None:
    import resource
    import warnings

    # Corrupt scales legitimately dequantize to inf/NaN; the warnings are noise here.
    warnings.simplefilter("ignore", RuntimeWarning)
    decode = globals()[target]
    if target == "decode_all":  # the harness's test targets need no torch
        import torch

        torch.set_num_threads(1)
        for data in warmup:  # every lazy import, allocator arena and kernel is in place before the limit
            decode_all(data)
    base = _vm_size()
    limited = False
    if base is not None and memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (base + memory_bytes, resource.getrlimit(resource.RLIMIT_AS)[1]))
        limited = True
    connection.send({"ready": True, "rlimit_as": base + memory_bytes if limited else None, "base_vm": base})
    while True:
        try:
            data = connection.recv()
        except EOFError:
            return
        if data is None:
            return
        rss_reset = _peak_rss_reset()
        rss_before = _status_bytes("VmRSS")
        started = time.perf_counter()
        cpu_started = time.process_time()
        result = {}
        try:
            result["frames"] = decode(data)
            result["outcome"] = "decoded"
        except NncError as error:
            result["outcome"] = "rejected"
            result["error"] = f"{type(error).__name__}: {error}"[:300]
        except BaseException as error:  # noqa: BLE001 - that is the point
            result["outcome"] = "crash"
            result["error"] = f"{type(error).__name__}: {error}"[:500]
            result["traceback"] = "".join(traceback.format_exception(error)[-6:])[-3000:]
        result["seconds"] = time.perf_counter() - started
        result["cpu_seconds"] = time.process_time() - cpu_started
        peak = _status_bytes("VmHWM")
        if rss_reset and peak is not None and rss_before is not None:
            result["peak_rss_bytes"] = peak
            result["rss_growth_bytes"] = max(0, peak - rss_before)
        connection.send(result)
        if result["outcome"] == "crash":
            return  # a fresh worker for the next case: nothing left over from the crash


class Worker:
    def __init__(self, context, warmup, memory_bytes, target="decode_all"):
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, warmup, memory_bytes, target), daemon=True)
        self.process.start()
        child.close()
        ready = self.connection.recv()
        self.limits = ready
        self.case = None
        self.started = None

    def submit(self, case):
        self.case = case
        self.started = time.perf_counter()
        self.connection.send(case["data"])

    def stop(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.connection.close()


def run_campaign(cases: int, seed: int = 0, *, jobs: int = 1, time_limit: float = DEFAULT_TIME_LIMIT,
                 memory_mib: int = DEFAULT_MEMORY_MIB, kill_after: float = DEFAULT_KILL_AFTER,
                 only: list[int] | None = None, save: Path | None = None, progress: bool = False,
                 max_seconds: float | None = None, max_cpu_seconds: float | None = None, target: str = "decode_all",
                 inputs: list[tuple[bytes, str]] | None = None, seeds: list[dict] | None = None) -> dict:
    """Build seeds, run ``cases`` mutated inputs through the decoder, return the JSON record.

    ``inputs`` replaces the generated cases by given (bytes, description) pairs, and
    ``target`` the decode function run on them (a name in this module): the harness's
    own tests use them to check that it catches what it claims to.  ``seeds`` (as
    returned by :func:`build_seeds`) skips building them again.  ``max_seconds`` stops
    drawing cases after that much wall-clock time, ``max_cpu_seconds`` after that much
    CPU time of the cases (this process's, seeds included, plus the workers' decodes),
    which does not depend on how loaded the machine is.
    """
    started_at = datetime.datetime.now(datetime.timezone.utc)
    started = time.perf_counter()
    cpu_started = time.process_time()
    seeds, seed_errors = (seeds, []) if seeds is not None else build_seeds(seed)
    if not seeds:
        raise RuntimeError(f"no codec could make a seed file: {seed_errors}")
    seed_bytes = [s["bytes"] for s in seeds]
    seed_seconds = time.perf_counter() - started
    seed_cpu = time.process_time() - cpu_started
    for index, data in enumerate(seed_bytes):  # the seeds themselves must decode, in this process too
        decode_all(data)

    context = multiprocessing.get_context("spawn")  # no fork of a process with torch threads
    memory_bytes = memory_mib * MIB
    workers = [Worker(context, seed_bytes, memory_bytes, target) for _ in range(max(1, jobs))]
    limits = workers[0].limits
    if inputs is not None:
        cases = len(inputs)
    indices = iter(only if only is not None else range(cases))
    outcomes: dict[str, int] = {}
    by_mutation: dict[str, dict[str, int]] = {}
    failures, slowest, tried = [], [], 0
    peak_rss = 0
    worker_cpu = 0.0
    growth = {"bytes": 0, "case": None}
    exhausted = False
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds

    def cpu_spent() -> float:
        return time.process_time() - cpu_started + worker_cpu

    def record(case, result):
        nonlocal tried, peak_rss, worker_cpu
        tried += 1
        worker_cpu += result.get("cpu_seconds") or result.get("seconds") or 0.0
        outcome = result["outcome"]
        seconds = result.get("seconds")
        # "slow" is judged on the decode's CPU time, which the load of a shared machine
        # does not inflate; a hang (or a wait) is caught by the wall-clock kill_after.
        work = result.get("cpu_seconds", seconds)
        kind = case["mutation"].split(";")[1].split(":")[0].strip() if ";" in case["mutation"] else "given"
        counts = by_mutation.setdefault(kind, {})
        counts[outcome] = counts.get(outcome, 0) + 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        peak_rss = max(peak_rss, result.get("peak_rss_bytes") or 0)
        if (result.get("rss_growth_bytes") or 0) > growth["bytes"]:
            growth.update(bytes=result["rss_growth_bytes"], case=case["index"], mutation=case["mutation"])
        problem = None
        if outcome in ("crash", "timeout", "worker died"):
            problem = outcome
        elif work is not None and work > time_limit:
            problem = "slow"
        entry = {"case": case["index"], "mutation": case["mutation"], "outcome": outcome,
                 "seconds": None if seconds is None else round(seconds, 4),
                 "cpu_seconds": None if work is None else round(work, 4), "input_bytes": len(case["data"])}
        if "error" in result:
            entry["error"] = result["error"]
        if work is not None:
            slowest.append(entry)
            slowest.sort(key=lambda e: -e["cpu_seconds"])
            del slowest[5:]
        if problem:
            failure = dict(entry, problem=problem)
            if "traceback" in result:
                failure["traceback"] = result["traceback"]
            failures.append(failure)
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"case_{seed}_{case['index']}.nnc").write_bytes(case["data"])
            if progress:
                print(f"FAILURE case {case['index']}: {problem}: {entry.get('error', '')} [{case['mutation']}]",
                      file=sys.stderr)
        if progress and tried % 200 == 0:
            print(f"{tried} cases, {len(failures)} failures, {time.perf_counter() - started:.0f} s, "
                  f"{cpu_spent():.0f} CPU s", file=sys.stderr)

    try:
        while True:
            for slot, worker in enumerate(workers):
                if worker.case is None and not exhausted:
                    if (deadline is not None and time.perf_counter() > deadline
                            or max_cpu_seconds is not None and cpu_spent() > max_cpu_seconds):
                        exhausted = True
                        break
                    index = next(indices, None)
                    if index is None:
                        exhausted = True
                        break
                    data, mutation = inputs[index] if inputs is not None else make_case(seed, index, seed_bytes)
                    worker.submit({"index": index, "data": data, "mutation": mutation})
            busy = [w for w in workers if w.case is not None]
            if not busy:
                break
            ready = multiprocessing.connection.wait([w.connection for w in busy], timeout=0.1)
            for slot, worker in enumerate(workers):
                if worker.case is None:
                    continue
                restart = False
                if worker.connection in ready:
                    try:
                        result = worker.connection.recv()
                    except (EOFError, OSError):
                        code = worker.process.exitcode
                        worker.process.join(1)
                        code = worker.process.exitcode if code is None else code
                        result = {"outcome": "worker died", "error": f"worker exit code {code}"}
                        restart = True
                    restart = restart or result["outcome"] == "crash"
                elif time.perf_counter() - worker.started > kill_after:
                    result = {"outcome": "timeout", "error": f"killed after {kill_after:.0f} s"}
                    restart = True
                else:
                    continue
                record(worker.case, result)
                worker.case = None
                if restart:
                    worker.stop()
                    workers[slot] = Worker(context, seed_bytes, memory_bytes, target)
    finally:
        for worker in workers:
            try:
                worker.connection.send(None)
            except (OSError, BrokenPipeError):
                pass
            worker.stop()

    from nnc.codec.base import machine_description

    slowest_seconds = slowest[0]["cpu_seconds"] if slowest else None
    return {
        "tool": "tools/fuzz_decoder.py",
        "summary": {"cases": tried, "failures": len(failures), "slowest_cpu_seconds": slowest_seconds,
                    "slowest_case": slowest[0] if slowest else None,
                    "peak_memory_mib": round(peak_rss / MIB, 1) if peak_rss else None,
                    "memory_limit_mib": memory_mib, "memory_limit": "address space of a worker after warm-up + "
                    f"{memory_mib} MiB (RLIMIT_AS {limits.get('rlimit_as')} bytes)", "time_limit_cpu_s": time_limit},
        "date": started_at.isoformat(timespec="seconds"),
        "machine": dict(machine_description(), platform=platform.platform(), cpu_count=os.cpu_count()),
        "settings": {
            "cases": cases if only is None else len(only), "seed": seed, "jobs": jobs, "time_limit_s": time_limit,
            "memory_limit_mib": memory_mib, "kill_after_s": kill_after, "max_seconds": max_seconds,
            "max_cpu_seconds": max_cpu_seconds,
            "memory_limit": "RLIMIT_AS of each worker = its address space after warm-up + memory_limit_mib",
            "worker_rlimit_as_bytes": limits.get("rlimit_as"), "worker_base_vm_bytes": limits.get("base_vm"),
            "torch_threads_per_worker": 1,
            "decode_path": "decode_bitstream, check_header and the decode bounds (as nnc decode --max-output-bytes "
                           f"{FUZZ_MAX_OUTPUT_BYTES}), every frame of every video decoded on the CPU, then nnc info's "
                           "description",
            "max_output_bytes": FUZZ_MAX_OUTPUT_BYTES,
            "mutations": {name: weight for name, (_, weight) in MUTATIONS.items()},
        },
        "known_limits": KNOWN_LIMITS,
        "seeds": [{"codec": s["codec"], "clip": s["clip"], "bytes": len(s["bytes"])} for s in seeds],
        "seed_errors": seed_errors,
        "seed_build_seconds": round(seed_seconds, 2),
        "seed_build_cpu_seconds": round(seed_cpu, 2),
        "inputs_tried": tried,
        "outcomes": outcomes,
        "outcomes_by_mutation": by_mutation,
        "failures": failures,
        "failure_count": len(failures),
        "slowest": slowest,
        "max_peak_rss_mib": round(peak_rss / MIB, 1) if peak_rss else None,
        "max_rss_growth": dict(growth, mib=round(growth["bytes"] / MIB, 1)),
        "elapsed_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": {"harness": round(time.process_time() - cpu_started, 1), "worker_cases": round(worker_cpu, 1)},
        "cases_per_cpu_second": round(tried / max(cpu_spent() - seed_cpu, 1e-9), 2) if tried else None,
    }


def _free_result_path(stem: str) -> Path:
    """benchmarks/results/STEM.json, or STEM_2.json... : a committed result is never overwritten."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    path, number = folder / f"{stem}.json", 2
    while path.exists():
        path, number = folder / f"{stem}_{number}.json", number + 1
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tools/fuzz_decoder.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="mutated inputs to try (100,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="CPU seconds per input (1)")
    parser.add_argument("--memory-mib", type=int, default=DEFAULT_MEMORY_MIB,
                        help="address space per worker beyond its warmed-up size (1024)")
    parser.add_argument("--kill-after", type=float, default=DEFAULT_KILL_AFTER)
    parser.add_argument("--max-seconds", type=float, help="stop drawing new cases after this long")
    parser.add_argument("--max-cpu-seconds", type=float,
                        help="stop drawing new cases after this much CPU time (harness + cases), whatever the load")
    parser.add_argument("--only", type=int, nargs="+", help="run only these case numbers")
    parser.add_argument("--save", type=Path, help="write failing inputs to this folder")
    parser.add_argument("--out", type=Path, help="write the JSON record here (default: benchmarks/results/"
                        "fuzz_decoder.json, or fuzz_decoder_2.json... when it exists); - prints it")
    args = parser.parse_args(argv)
    record = run_campaign(args.cases, args.seed, jobs=args.jobs, time_limit=args.time_limit, memory_mib=args.memory_mib,
                          kill_after=args.kill_after, only=args.only, save=args.save, progress=True,
                          max_seconds=args.max_seconds, max_cpu_seconds=args.max_cpu_seconds)
    text = json.dumps(record, indent=2)
    out = args.out if args.out is not None else _free_result_path("fuzz_decoder")
    if str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(out, (text + "\n").encode())
        print(f"wrote {out}", file=sys.stderr)
    slowest = record["slowest"][0] if record["slowest"] else None
    print(f"{record['inputs_tried']} inputs, {record['failure_count']} failures, outcomes {record['outcomes']}, "
          f"slowest {slowest['cpu_seconds'] if slowest else '-'} CPU s, {record['elapsed_seconds']} s", file=sys.stderr)
    if str(out) == "-":
        print(text)
    return 1 if record["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
