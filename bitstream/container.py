"""The .nnc container: a JSON header plus groups of entropy-coded quantized tensors
and raw byte strings.

The chunk framing (magic, version, ``tag | length | payload | CRC``) is framing.py's;
this module encodes and parses the payloads (FORMAT.md is the byte-level
specification).  The decoder checks framing, order and CRC before it parses a payload,
bounds every count before it allocates anything, and reports every defect as
InvalidBitstreamError (NewerFormatError for a newer version).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from nnc.bitstream import entropy
from nnc.bitstream.entropy import ByteReader, ByteWriter
from nnc.bitstream.framing import (
    CHUNK_OVERHEAD,
    FORMAT_VERSION,
    MAGIC,
    OFFSETLESS_VERSION,
    RAW_BYTES_VERSION,
    TAG_END,
    TAG_GROUP,
    TAG_HEADER,
    file_prefix,
    frame_chunk,
    iter_chunks,
    read_version,
)
from nnc.bitstream.quantize import MAX_BITS, MIN_BITS, SCHEMES, QuantizedTensor
from nnc.errors import InvalidBitstreamError, NncError
from nnc.fileio import read_at_most, write_atomically

MAX_HEADER_JSON_BYTES = 1 << 20
MAX_CODEC_NAME_BYTES = 64
MAX_NAME_BYTES = 256
MAX_GROUPS = 1024
MAX_TENSORS_PER_GROUP = 4096  # entries (tensors and raw byte strings) per group
MAX_NDIM = 8
MAX_TENSOR_ELEMENTS = 1 << 26
MAX_FILE_ELEMENTS = 1 << 26  # all tensors of a file, constant ones included
MAX_FILE_CODED_SYMBOLS = 1 << 25  # symbols that go through rANS
# Largest file a reader accepts (and reads from a FIFO or device before refusing): a
# file holds at most 2**26 elements, 64 MiB at 8 bits, so 4x that leaves room for side
# information; the largest file nnc writes in practice is a few MB.
MAX_FILE_BYTES = 1 << 28
# Decoding time is linear in the coded symbols, and a skewed table makes symbols
# nearly free in bytes; so a group's rANS stream must spend at least 1/16 bit per coded
# symbol on average (beyond a small allowance).  A crafted file then cannot make the
# decoder work much longer than its own size justifies.
MAX_CODED_SYMBOLS_PER_STREAM_BYTE = 128
CODED_SYMBOL_ALLOWANCE = 1 << 16
MAX_RAW_BYTES = 1 << 26  # one raw-bytes entry
MAX_FILE_RAW_BYTES = 1 << 26  # all raw-bytes entries of a file


def _check_coded_symbols_per_byte(coded: int, stream_bytes: int) -> bool:
    return coded <= MAX_CODED_SYMBOLS_PER_STREAM_BYTE * stream_bytes + CODED_SYMBOL_ALLOWANCE
_AXIS_NONE = 0xFF
_SCHEME_CODES = {scheme: code for code, scheme in enumerate(SCHEMES)}
# A raw-bytes entry has this code where a tensor descriptor has its scheme.
RAW_BYTES_CODE = len(SCHEMES)
# A step tensor whose offsets are all +0.0, written without them (version 4): the
# "step" scheme of QuantizedTensor in a shorter descriptor.
OFFSETLESS_STEP_CODE = RAW_BYTES_CODE + 1


@dataclass
class RawBytes:
    """Bytes stored as they are: no quantization, no entropy coding.  For payloads that
    another coder has already compressed (CLC's CompressAI rANS strings)."""

    name: str
    data: bytes


@dataclass
class TensorGroup:
    """Named tensors and raw byte strings; the file keeps the tensors first, then the
    raw byte strings, each list in its order."""

    name: str
    tensors: list[QuantizedTensor] = field(default_factory=list)
    raw_bytes: list[RawBytes] = field(default_factory=list)


@dataclass
class Bitstream:
    codec: str
    header: dict
    groups: list[TensorGroup] = field(default_factory=list)
    # The lowest format version the header needs (SEGMENTS_VERSION for a segment table);
    # the file is written at the larger of it and its groups'.  A decoded file's version.
    version: int = field(default=1, compare=False)
    # The newest version whose shorter forms the writer may choose (offsetless step
    # descriptors need OFFSETLESS_VERSION): all of them for a new bitstream; a decoded
    # file's own version, so that it re-encodes to its own bytes.
    max_version: int = field(default=FORMAT_VERSION, compare=False)


# --------------------------------------------------------------------------------------
# Encoding


def _check_name(name: object, what: str, max_bytes: int) -> None:
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a str, got {type(name).__name__}")
    if len(name.encode("utf-8")) > max_bytes:
        raise ValueError(f"{what} {name[:40]!r}... exceeds {max_bytes} UTF-8 bytes")


def _check_json_keys(value: object, path: str = "header") -> None:
    """JSON would silently turn non-string keys into strings; refuse them instead."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path} has non-string key {key!r}")
            _check_json_keys(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_keys(item, f"{path}[{index}]")


def _encode_header(codec: str, header: dict) -> bytes:
    _check_name(codec, "codec name", MAX_CODEC_NAME_BYTES)
    if not codec:
        raise ValueError("codec name must not be empty")
    if not isinstance(header, dict):
        raise ValueError(f"header must be a dict, got {type(header).__name__}")
    _check_json_keys(header)
    try:
        text = json.dumps(
            {"codec": codec, "header": header}, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"header is not JSON-serialisable: {exc}") from None
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_HEADER_JSON_BYTES:
        raise ValueError(f"header JSON is {len(encoded)} bytes; the limit is {MAX_HEADER_JSON_BYTES}")
    return zlib.compress(encoded, 9)


def _validate_tensor(tensor: QuantizedTensor, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a tensor against the format's rules; return (symbols, offset, scale)."""
    if not isinstance(tensor, QuantizedTensor):
        raise ValueError(f"{where}: expected a QuantizedTensor, got {type(tensor).__name__}")
    _check_name(tensor.name, f"{where} name", MAX_NAME_BYTES)
    symbols = np.asarray(tensor.symbols)
    if symbols.dtype.kind not in "iu":
        raise ValueError(f"{where}: symbols must be integers, got dtype {symbols.dtype}")
    if symbols.ndim > MAX_NDIM or symbols.size == 0:
        raise ValueError(f"{where}: shape {symbols.shape} must have at most {MAX_NDIM} dims, all >= 1")
    if symbols.size > MAX_TENSOR_ELEMENTS:
        raise ValueError(f"{where}: {symbols.size} elements exceed the limit of {MAX_TENSOR_ELEMENTS}")
    if tensor.scheme not in SCHEMES:
        raise ValueError(f"{where}: unknown scheme {tensor.scheme!r}")
    low, high = int(symbols.min()), int(symbols.max())
    if tensor.scheme == "minmax":
        if not (isinstance(tensor.bits, (int, np.integer)) and MIN_BITS <= tensor.bits <= MAX_BITS):
            raise ValueError(f"{where}: minmax bits must be in [{MIN_BITS}, {MAX_BITS}], got {tensor.bits!r}")
        if low < 0 or high > 2**tensor.bits - 1:
            raise ValueError(f"{where}: symbols [{low}, {high}] outside [0, {2**tensor.bits - 1}]")
    else:
        if tensor.bits != 0:
            raise ValueError(f"{where}: step scheme must have bits 0, got {tensor.bits!r}")
        if low < entropy.MIN_SYMBOL or high > entropy.MAX_SYMBOL:
            raise ValueError(f"{where}: symbols [{low}, {high}] do not fit int32")
    if tensor.axis is None:
        params = 1
    elif isinstance(tensor.axis, (int, np.integer)) and 0 <= tensor.axis < symbols.ndim:
        params = symbols.shape[tensor.axis]
    else:
        raise ValueError(f"{where}: axis {tensor.axis!r} must be None or in [0, {symbols.ndim})")
    offset = np.asarray(tensor.offset, dtype=np.float32).reshape(-1)
    scale = np.asarray(tensor.scale, dtype=np.float32).reshape(-1)
    if offset.shape != (params,) or scale.shape != (params,):
        raise ValueError(f"{where}: offset/scale must have shape ({params},)")
    if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError(f"{where}: offset must be finite and scale finite and > 0")
    return symbols, offset, scale


def _offsetless(tensor: QuantizedTensor, offset: np.ndarray, max_version: int) -> bool:
    """Whether the tensor goes in an offsetless step descriptor: every offset +0.0, bit
    for bit (an offset of -0.0 keeps a product of -0.0 negative where +0.0 makes it +0.0,
    so it keeps the full form)."""
    return tensor.scheme == "step" and max_version >= OFFSETLESS_VERSION and not offset.view(np.uint32).any()


def _write_descriptor(writer: ByteWriter, tensor: QuantizedTensor, symbols, offset, scale, model,
                      offsetless: bool) -> None:
    writer.text(tensor.name)
    writer.u8(OFFSETLESS_STEP_CODE if offsetless else _SCHEME_CODES[tensor.scheme])
    writer.u8(int(tensor.bits))
    writer.u8(symbols.ndim)
    for dim in symbols.shape:
        writer.uvarint(dim)
    writer.u8(_AXIS_NONE if tensor.axis is None else int(tensor.axis))
    if not offsetless:
        writer.f32_array(offset)
    writer.f32_array(scale)
    entropy.write_model(writer, model)


def _write_raw_bytes(writer: ByteWriter, entry: RawBytes, where: str, totals: dict) -> None:
    if not isinstance(entry, RawBytes):
        raise ValueError(f"{where}: expected RawBytes, got {type(entry).__name__}")
    _check_name(entry.name, f"{where} name", MAX_NAME_BYTES)
    if not isinstance(entry.data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{where}: data must be bytes, got {type(entry.data).__name__}")
    data = bytes(entry.data)
    if len(data) > MAX_RAW_BYTES:
        raise ValueError(f"{where}: {len(data)} bytes exceed the limit of {MAX_RAW_BYTES}")
    totals["raw"] += len(data)
    if totals["raw"] > MAX_FILE_RAW_BYTES:
        raise ValueError(f"{where}: the file's raw byte strings would exceed {MAX_FILE_RAW_BYTES} bytes")
    writer.text(entry.name)
    writer.u8(RAW_BYTES_CODE)
    writer.uvarint(len(data))
    writer.raw(data)


def _encode_group(group: TensorGroup, index: int, totals: dict, max_version: int) -> tuple[bytes, int]:
    """The group's TGRP payload and the lowest version that reads it."""
    where = f"group {index}"
    if not isinstance(group, TensorGroup):
        raise ValueError(f"{where}: expected a TensorGroup, got {type(group).__name__}")
    _check_name(group.name, f"{where} name", MAX_NAME_BYTES)
    entries = len(group.tensors) + len(group.raw_bytes)
    if entries > MAX_TENSORS_PER_GROUP:
        raise ValueError(f"{where}: {entries} tensors and raw byte strings exceed the limit of {MAX_TENSORS_PER_GROUP}")
    writer = ByteWriter()
    writer.text(group.name)
    writer.uvarint(entries)
    parts = []
    version = RAW_BYTES_VERSION if group.raw_bytes else 1
    for position, tensor in enumerate(group.tensors):
        tensor_where = f"{where} ({group.name!r}) tensor {position} ({getattr(tensor, 'name', '?')!r})"
        symbols, offset, scale = _validate_tensor(tensor, tensor_where)
        try:
            model = entropy.choose_model(symbols).model
        except ValueError as exc:
            raise ValueError(f"{tensor_where}: {exc}") from None
        totals["elements"] += symbols.size
        totals["coded"] += symbols.size if model.is_coded else 0
        if totals["elements"] > MAX_FILE_ELEMENTS or totals["coded"] > MAX_FILE_CODED_SYMBOLS:
            raise ValueError(
                f"{tensor_where}: the file would exceed {MAX_FILE_ELEMENTS} elements or "
                f"{MAX_FILE_CODED_SYMBOLS} entropy-coded symbols"
            )
        offsetless = _offsetless(tensor, offset, max_version)
        if offsetless:
            version = max(version, OFFSETLESS_VERSION)
        _write_descriptor(writer, tensor, symbols, offset, scale, model, offsetless)
        parts.append((symbols, model))
    for position, entry in enumerate(group.raw_bytes):
        _write_raw_bytes(writer, entry, f"{where} ({group.name!r}) raw bytes {position} "
                                        f"({getattr(entry, 'name', '?')!r})", totals)
    stream = entropy.encode_symbols(parts)
    coded = sum(symbols.size for symbols, model in parts if model.is_coded)
    if not _check_coded_symbols_per_byte(coded, len(stream)):
        raise ValueError(f"{where}: {coded} symbols coded in {len(stream)} bytes exceed the format's "
                         f"{MAX_CODED_SYMBOLS_PER_STREAM_BYTE} symbols per byte; the tensors are too redundant")
    writer.uvarint(len(stream))
    writer.raw(stream)
    return bytes(writer.buffer), version


def new_totals() -> dict:
    """Running file-wide counts that the limits of FORMAT.md section 7 apply to."""
    return {"elements": 0, "coded": 0, "raw": 0}


def encode_header_payload(codec: str, header: dict) -> bytes:
    """The HEAD chunk's payload; raises ValueError if it breaks the format's rules."""
    return _encode_header(codec, header)


def encode_group_payload(group: TensorGroup, index: int = 0, totals: dict | None = None,
                         max_version: int = FORMAT_VERSION) -> tuple[bytes, int]:
    """One TGRP chunk's payload and the lowest format version that reads it (``index``
    names the group in errors; ``totals`` carries the file-wide limits across groups;
    ``max_version`` as Bitstream's); raises ValueError if it breaks the format's rules."""
    return _encode_group(group, index, new_totals() if totals is None else totals, max_version)


def encode_bitstream(bs: Bitstream) -> bytes:
    """Serialise a Bitstream; raises ValueError if it breaks the format's rules.  The
    version written is the lowest one that holds the file: ``bs.version`` says what the
    header needs, each group what its entries need (raw bytes 2, an offsetless step
    descriptor 4, which it uses only up to ``bs.max_version``)."""
    if len(bs.groups) > MAX_GROUPS:
        raise ValueError(f"{len(bs.groups)} groups exceed the limit of {MAX_GROUPS}")
    out = [frame_chunk(TAG_HEADER, _encode_header(bs.codec, bs.header))]
    totals = new_totals()
    version = bs.version
    for index, group in enumerate(bs.groups):
        payload, needed = _encode_group(group, index, totals, bs.max_version)
        out.append(frame_chunk(TAG_GROUP, payload))
        version = max(version, needed)
    out.append(frame_chunk(TAG_END, b""))
    data = file_prefix(version) + b"".join(out)
    if len(data) > MAX_FILE_BYTES:  # every file nnc writes must be one nnc can read back
        raise NncError(f"the .nnc file would be {len(data)} bytes, above the format's limit of {MAX_FILE_BYTES} "
                       "bytes: use a smaller model (--params) or fewer frames")
    return data


# --------------------------------------------------------------------------------------
# Decoding


class _RawEntry(NamedTuple):
    name: str
    data: bytes
    side_info_bytes: int  # name, code and length


class _Descriptor(NamedTuple):
    name: str
    scheme: str
    bits: int
    shape: tuple[int, ...]
    axis: int | None
    offset: np.ndarray
    scale: np.ndarray
    model: entropy.EntropyModel
    elements: int
    size_bytes: int


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def _decode_header(payload: bytes) -> tuple[str, dict]:
    decompressor = zlib.decompressobj()
    try:
        text = decompressor.decompress(payload, MAX_HEADER_JSON_BYTES + 1)
    except zlib.error as exc:
        raise InvalidBitstreamError(f"header is not valid zlib data ({exc})") from None
    if len(text) > MAX_HEADER_JSON_BYTES:
        raise InvalidBitstreamError(f"header expands beyond {MAX_HEADER_JSON_BYTES} bytes")
    if not decompressor.eof or decompressor.unused_data or decompressor.unconsumed_tail:
        raise InvalidBitstreamError("header zlib stream is incomplete or followed by extra bytes")
    try:
        document = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidBitstreamError(f"header is not valid JSON ({type(exc).__name__})") from None
    if not (isinstance(document, dict) and set(document) == {"codec", "header"}):
        raise InvalidBitstreamError('header JSON must be an object with exactly the keys "codec" and "header"')
    codec, header = document["codec"], document["header"]
    if not (isinstance(codec, str) and codec and len(codec.encode("utf-8")) <= MAX_CODEC_NAME_BYTES):
        raise InvalidBitstreamError("header codec name must be a non-empty string of at most 64 bytes")
    if not isinstance(header, dict):
        raise InvalidBitstreamError("header must be a JSON object")
    return codec, header


def _read_entry(reader: ByteReader, position: int, totals: dict, version: int) -> _Descriptor | _RawEntry:
    """One group entry: a tensor descriptor (from version 4 also offsetless), or (from
    version 2) a raw byte string."""
    start = reader.pos
    what = f"tensor {position}"
    name = reader.text(f"{what} name", MAX_NAME_BYTES)
    what = f"tensor {position} ({name!r})"
    scheme_code = reader.u8(f"{what} scheme")
    if scheme_code == RAW_BYTES_CODE and version >= RAW_BYTES_VERSION:
        length = reader.uvarint(f"{what} raw byte count", MAX_RAW_BYTES)
        totals["raw"] += length
        if totals["raw"] > MAX_FILE_RAW_BYTES:
            raise reader.fail(f"the file's raw byte strings exceed {MAX_FILE_RAW_BYTES} bytes")
        data = reader.take(length, f"{what} raw bytes")
        return _RawEntry(name, data, reader.pos - start - length)
    if scheme_code == OFFSETLESS_STEP_CODE and version >= OFFSETLESS_VERSION:
        return _read_tensor_descriptor(reader, name, what, "step", start, totals, offsets=False)
    if scheme_code >= len(SCHEMES):
        raise reader.fail(f"{what} has unknown quantization scheme {scheme_code}")
    return _read_tensor_descriptor(reader, name, what, SCHEMES[scheme_code], start, totals)


def _read_tensor_descriptor(reader: ByteReader, name: str, what: str, scheme: str, start: int,
                            totals: dict, offsets: bool = True) -> _Descriptor:
    bits = reader.u8(f"{what} bits")
    if scheme == "minmax" and not MIN_BITS <= bits <= MAX_BITS or scheme == "step" and bits != 0:
        raise reader.fail(f"{what}: {bits} bits is invalid for scheme {scheme!r}")
    ndim = reader.u8(f"{what} ndim")
    if ndim > MAX_NDIM:
        raise reader.fail(f"{what} has {ndim} dimensions; at most {MAX_NDIM} are allowed")
    shape, elements = [], 1
    for axis in range(ndim):
        dim = reader.uvarint(f"{what} dimension {axis}", MAX_TENSOR_ELEMENTS)
        elements *= dim
        if dim < 1 or elements > MAX_TENSOR_ELEMENTS:
            raise reader.fail(f"{what}: dimension {dim} is zero or makes the tensor exceed {MAX_TENSOR_ELEMENTS}")
        shape.append(dim)
    totals["elements"] += elements
    if totals["elements"] > MAX_FILE_ELEMENTS:
        raise reader.fail(f"the file's tensors exceed {MAX_FILE_ELEMENTS} elements in total")
    axis_byte = reader.u8(f"{what} axis")
    if axis_byte != _AXIS_NONE and axis_byte >= ndim:
        raise reader.fail(f"{what}: axis {axis_byte} is out of range for {ndim} dimensions")
    axis = None if axis_byte == _AXIS_NONE else axis_byte
    params = 1 if axis is None else shape[axis]
    offset = reader.f32_array(params, f"{what} offsets") if offsets else None
    scale = reader.f32_array(params, f"{what} scales")
    if offset is None:  # made once the scales are read: the file holds 4 bytes for each zero
        offset = np.zeros(params, np.float32)
    if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise reader.fail(f"{what}: offsets must be finite and scales finite and > 0")
    if scheme == "minmax":
        symbol_range = (0, 2**bits - 1)
    else:
        symbol_range = (entropy.MIN_SYMBOL, entropy.MAX_SYMBOL)
    model = entropy.read_model(reader, what, *symbol_range)
    if model.is_coded:
        totals["coded"] += elements
        if totals["coded"] > MAX_FILE_CODED_SYMBOLS:
            raise reader.fail(f"the file's entropy-coded symbols exceed {MAX_FILE_CODED_SYMBOLS}")
    return _Descriptor(name, scheme, bits, tuple(shape), axis, offset, scale, model, elements, reader.pos - start)


def _decode_group(payload: bytes, index: int, totals: dict, stats: list | None, version: int) -> TensorGroup:
    reader = ByteReader(payload, f"group {index}")
    name = reader.text("group name", MAX_NAME_BYTES)
    reader.context = f"group {index} ({name!r})"
    count = reader.uvarint("tensor count", MAX_TENSORS_PER_GROUP)
    descriptors: list[_Descriptor] = []
    raw: list[_RawEntry] = []
    for position in range(count):
        entry = _read_entry(reader, position, totals, version)
        if isinstance(entry, _RawEntry):
            raw.append(entry)
        elif raw:
            raise reader.fail(f"tensor {position} ({entry.name!r}) follows a raw byte string; tensors come first")
        else:
            descriptors.append(entry)
    stream = reader.take(reader.uvarint("rANS stream length", len(payload)), "rANS stream")
    reader.expect_end("the rANS stream")
    coded = sum(d.elements for d in descriptors if d.model.is_coded)
    if not _check_coded_symbols_per_byte(coded, len(stream)):
        raise reader.fail(f"{coded} coded symbols in a {len(stream)}-byte stream (at most "
                          f"{MAX_CODED_SYMBOLS_PER_STREAM_BYTE} per byte + {CODED_SYMBOL_ALLOWANCE})")
    decoded = entropy.decode_symbols(stream, [(d.elements, d.model) for d in descriptors], reader.context)
    tensors = [
        QuantizedTensor(d.name, flat.reshape(d.shape), d.scheme, d.bits, d.axis, d.offset, d.scale)
        for d, flat in zip(descriptors, decoded)
    ]
    raw_bytes = [RawBytes(entry.name, entry.data) for entry in raw]
    if stats is not None:
        payload_bytes = len(stream) + sum(len(entry.data) for entry in raw)
        stats.append(
            {
                "name": name,
                "bytes": len(payload) + CHUNK_OVERHEAD,
                "payload_bytes": payload_bytes,
                "side_info_bytes": len(payload) + CHUNK_OVERHEAD - payload_bytes,
                "num_symbols": int(sum(flat.size for flat in decoded)) + sum(len(entry.data) for entry in raw),
                # raw byte strings are listed as tensors of bytes (shape: their length)
                "tensors": [
                    {
                        "name": d.name,
                        "shape": list(d.shape),
                        "scheme": d.scheme,
                        "bits": d.bits,
                        "axis": d.axis,
                        "entropy_model": d.model.kind,
                        "entropy_params": d.model.describe(),
                        "num_symbols": d.elements,
                        "payload_bits": d.model.ideal_bits(flat),
                        "side_info_bytes": d.size_bytes,
                    }
                    for d, flat in zip(descriptors, decoded)
                ]
                + [
                    {
                        "name": entry.name,
                        "shape": [len(entry.data)],
                        "scheme": "bytes",
                        "bits": 8,
                        "axis": None,
                        "entropy_model": "none",
                        "entropy_params": {},
                        "num_symbols": len(entry.data),
                        "payload_bits": 8 * len(entry.data),
                        "side_info_bytes": entry.side_info_bytes,
                    }
                    for entry in raw
                ],
            }
        )
    return TensorGroup(name, tensors, raw_bytes)


def _parse(data: bytes, stats: dict | None = None) -> Bitstream:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    version = read_version(data)
    codec = header = None
    groups: list[TensorGroup] = []
    totals = new_totals()
    group_stats: list | None = [] if stats is not None else None
    for pos, tag, payload in iter_chunks(data):
        if tag == TAG_HEADER:
            if codec is not None:
                raise InvalidBitstreamError(f"duplicate HEAD chunk at offset {pos}")
            codec, header = _decode_header(payload)
            if stats is not None:
                stats["header_bytes"] = len(payload) + CHUNK_OVERHEAD
        elif codec is None:
            raise InvalidBitstreamError(f"{tag.decode()} chunk at offset {pos} before the HEAD chunk")
        elif tag == TAG_GROUP:
            if len(groups) >= MAX_GROUPS:
                raise InvalidBitstreamError(f"more than {MAX_GROUPS} tensor groups")
            groups.append(_decode_group(payload, len(groups), totals, group_stats, version))
        elif payload:  # TAG_END
            raise InvalidBitstreamError("end chunk must be empty")
    if stats is not None:
        stats.update(format_version=version, groups=group_stats)
    return Bitstream(codec, header, groups, version, version)


def decode_bitstream(data: bytes) -> Bitstream:
    """Parse a .nnc file's bytes; raises InvalidBitstreamError (or NewerFormatError)."""
    try:
        return _parse(data)
    except InvalidBitstreamError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError, struct.error, zlib.error, RecursionError) as exc:
        # Every defect should be caught by an explicit check above; this keeps the
        # promise that a bad file never escapes as some other exception type.
        raise InvalidBitstreamError(f"unexpected {type(exc).__name__}: {exc}") from exc


def inspect_bitstream(data: bytes) -> dict:
    """Sizes and models of a .nnc file, for ``nnc info``.

    ``file_bytes == container_bytes + header_bytes + sum(group["bytes"])``, where
    ``container_bytes`` is magic, version and end chunk, ``header_bytes`` the whole HEAD
    chunk and each group's ``bytes`` its whole TGRP chunk, split into ``payload_bytes``
    (the rANS stream) and ``side_info_bytes`` (chunk framing, names, descriptors,
    quantization parameters and entropy-model tables).  A tensor's ``side_info_bytes``
    is its descriptor; ``payload_bits`` is the ideal cost of its symbols under its model.
    """
    stats: dict = {}
    try:
        bs = _parse(data, stats)
    except InvalidBitstreamError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError, struct.error, zlib.error, RecursionError) as exc:
        raise InvalidBitstreamError(f"unexpected {type(exc).__name__}: {exc}") from exc
    file_bytes = len(data)
    group_bytes = sum(group["bytes"] for group in stats["groups"])
    return {
        "format_version": stats["format_version"],
        "codec": bs.codec,
        "header": bs.header,
        "file_bytes": file_bytes,
        "header_bytes": stats["header_bytes"],
        "container_bytes": file_bytes - stats["header_bytes"] - group_bytes,
        "groups": stats["groups"],
    }


# --------------------------------------------------------------------------------------
# Files


def write_bitstream_file(path: str | os.PathLike, bs: Bitstream) -> int:
    """Encode and write atomically; returns the number of bytes written."""
    return write_file_atomically(path, encode_bitstream(bs))


def write_file_atomically(path: str | os.PathLike, data: bytes) -> int:
    """Write ``data`` to ``path``; returns the number of bytes written.

    A regular file (or the file a symlink points to) is written under a temporary name
    in the same directory, then renamed over the target: on any failure, and on
    SIGTERM/SIGHUP as on Ctrl-C, the target is left untouched and no temporary file
    remains.  ``-`` (stdout), FIFOs and character devices are written straight into.
    OSError -> MediaError.  (One implementation, :func:`nnc.fileio.write_atomically`,
    serves media too.)"""
    return write_atomically(path, data)


def read_bitstream_bytes(path: str | os.PathLike) -> bytes:
    """A .nnc file's bytes, read with a bound: at most MAX_FILE_BYTES, also from FIFOs
    and devices, which have no size (``nnc info /dev/urandom`` stops at once).  A file
    that does not start with the magic bytes is refused after reading 8 bytes.  The file
    is opened once: a FIFO or a pipe delivers its bytes once, so sniffing through a first
    handle would lose them (or wait forever for a second writer)."""

    def check_magic(start: bytes) -> None:
        if start != MAGIC:
            # A foreign file (say a video passed by mistake) fails fast, unread; the
            # framing's own check words the error (truncated or wrong magic).
            decode_bitstream(start)
            raise InvalidBitstreamError("wrong magic bytes (not an .nnc file)")  # not reached

    return read_at_most(path, MAX_FILE_BYTES, InvalidBitstreamError, "valid .nnc file",
                        check_start=check_magic, start_bytes=len(MAGIC))


def read_bitstream_file(path: str | os.PathLike) -> Bitstream:
    """Read and decode a .nnc file; an unreadable file is an InvalidBitstreamError."""
    return decode_bitstream(read_bitstream_bytes(path))
