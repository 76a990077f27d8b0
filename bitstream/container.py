"""The .nnc container: a JSON header plus groups of entropy-coded quantized tensors.

Layout (FORMAT.md is the byte-level specification)::

    magic (8) | format version (u16 LE) | HEAD chunk | TGRP chunk * | TEND chunk

Every chunk is ``tag (4 ASCII) | payload length (u32 LE) | payload | CRC32 (u32 LE)``,
the CRC covering tag, length and payload.  The decoder checks framing, order and CRC
before it parses a payload, bounds every count before it allocates anything, and
reports every defect as InvalidBitstreamError (NewerFormatError for a newer version).
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from nnc.bitstream import entropy
from nnc.bitstream.entropy import ByteReader, ByteWriter
from nnc.bitstream.quantize import MAX_BITS, MIN_BITS, SCHEMES, QuantizedTensor
from nnc.errors import InvalidBitstreamError, MediaError, NewerFormatError

FORMAT_VERSION = 1
# PNG-style signature: a non-ASCII first byte and CR LF / ^Z / LF catch text-mode
# transfers and truncated "type" output early.
MAGIC = b"\x89NNC\r\n\x1a\n"

TAG_HEADER = b"HEAD"
TAG_GROUP = b"TGRP"
TAG_END = b"TEND"
KNOWN_TAGS = (TAG_HEADER, TAG_GROUP, TAG_END)
CHUNK_OVERHEAD = 12  # tag + length + CRC

MAX_HEADER_JSON_BYTES = 1 << 20
MAX_CODEC_NAME_BYTES = 64
MAX_NAME_BYTES = 256
MAX_GROUPS = 1024
MAX_TENSORS_PER_GROUP = 4096
MAX_NDIM = 8
MAX_TENSOR_ELEMENTS = 1 << 26
MAX_FILE_ELEMENTS = 1 << 26  # all tensors of a file, constant ones included
MAX_FILE_CODED_SYMBOLS = 1 << 25  # symbols that go through rANS
# Decoding time is linear in the coded symbols, and a skewed table makes symbols
# nearly free in bytes; so a group's rANS stream must spend at least 1/16 bit per coded
# symbol on average (beyond a small allowance).  A crafted file then cannot make the
# decoder work much longer than its own size justifies.
MAX_CODED_SYMBOLS_PER_STREAM_BYTE = 128
CODED_SYMBOL_ALLOWANCE = 1 << 16


def _check_coded_symbols_per_byte(coded: int, stream_bytes: int) -> bool:
    return coded <= MAX_CODED_SYMBOLS_PER_STREAM_BYTE * stream_bytes + CODED_SYMBOL_ALLOWANCE
_AXIS_NONE = 0xFF
_SCHEME_CODES = {scheme: code for code, scheme in enumerate(SCHEMES)}


@dataclass
class TensorGroup:
    name: str
    tensors: list[QuantizedTensor] = field(default_factory=list)


@dataclass
class Bitstream:
    codec: str
    header: dict
    groups: list[TensorGroup] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Encoding


def _chunk(tag: bytes, payload: bytes) -> bytes:
    head = tag + struct.pack("<I", len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))


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


def _write_descriptor(writer: ByteWriter, tensor: QuantizedTensor, symbols, offset, scale, model) -> None:
    writer.text(tensor.name)
    writer.u8(_SCHEME_CODES[tensor.scheme])
    writer.u8(int(tensor.bits))
    writer.u8(symbols.ndim)
    for dim in symbols.shape:
        writer.uvarint(dim)
    writer.u8(_AXIS_NONE if tensor.axis is None else int(tensor.axis))
    writer.f32_array(offset)
    writer.f32_array(scale)
    entropy.write_model(writer, model)


def _encode_group(group: TensorGroup, index: int, totals: dict) -> bytes:
    where = f"group {index}"
    if not isinstance(group, TensorGroup):
        raise ValueError(f"{where}: expected a TensorGroup, got {type(group).__name__}")
    _check_name(group.name, f"{where} name", MAX_NAME_BYTES)
    if len(group.tensors) > MAX_TENSORS_PER_GROUP:
        raise ValueError(f"{where}: {len(group.tensors)} tensors exceed the limit of {MAX_TENSORS_PER_GROUP}")
    writer = ByteWriter()
    writer.text(group.name)
    writer.uvarint(len(group.tensors))
    parts = []
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
        _write_descriptor(writer, tensor, symbols, offset, scale, model)
        parts.append((symbols, model))
    stream = entropy.encode_symbols(parts)
    coded = sum(symbols.size for symbols, model in parts if model.is_coded)
    if not _check_coded_symbols_per_byte(coded, len(stream)):
        raise ValueError(f"{where}: {coded} symbols coded in {len(stream)} bytes exceed the format's "
                         f"{MAX_CODED_SYMBOLS_PER_STREAM_BYTE} symbols per byte; the tensors are too redundant")
    writer.uvarint(len(stream))
    writer.raw(stream)
    return bytes(writer.buffer)


def encode_bitstream(bs: Bitstream) -> bytes:
    """Serialise a Bitstream; raises ValueError if it breaks the format's rules."""
    if len(bs.groups) > MAX_GROUPS:
        raise ValueError(f"{len(bs.groups)} groups exceed the limit of {MAX_GROUPS}")
    out = [MAGIC, struct.pack("<H", FORMAT_VERSION), _chunk(TAG_HEADER, _encode_header(bs.codec, bs.header))]
    totals = {"elements": 0, "coded": 0}
    for index, group in enumerate(bs.groups):
        out.append(_chunk(TAG_GROUP, _encode_group(group, index, totals)))
    out.append(_chunk(TAG_END, b""))
    return b"".join(out)


# --------------------------------------------------------------------------------------
# Decoding


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


def _read_tensor_descriptor(reader: ByteReader, position: int, totals: dict) -> _Descriptor:
    start = reader.pos
    what = f"tensor {position}"
    name = reader.text(f"{what} name", MAX_NAME_BYTES)
    what = f"tensor {position} ({name!r})"
    scheme_code = reader.u8(f"{what} scheme")
    if scheme_code >= len(SCHEMES):
        raise reader.fail(f"{what} has unknown quantization scheme {scheme_code}")
    scheme = SCHEMES[scheme_code]
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
    offset = reader.f32_array(params, f"{what} offsets")
    scale = reader.f32_array(params, f"{what} scales")
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


def _decode_group(payload: bytes, index: int, totals: dict, stats: list | None) -> TensorGroup:
    reader = ByteReader(payload, f"group {index}")
    name = reader.text("group name", MAX_NAME_BYTES)
    reader.context = f"group {index} ({name!r})"
    count = reader.uvarint("tensor count", MAX_TENSORS_PER_GROUP)
    descriptors = [_read_tensor_descriptor(reader, position, totals) for position in range(count)]
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
    if stats is not None:
        stats.append(
            {
                "name": name,
                "bytes": len(payload) + CHUNK_OVERHEAD,
                "payload_bytes": len(stream),
                "side_info_bytes": len(payload) + CHUNK_OVERHEAD - len(stream),
                "num_symbols": int(sum(flat.size for flat in decoded)),
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
                ],
            }
        )
    return TensorGroup(name, tensors)


def _parse(data: bytes, stats: dict | None = None) -> Bitstream:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) + 2:
        if MAGIC.startswith(data[: len(MAGIC)]):
            raise InvalidBitstreamError(f"truncated: only {len(data)} bytes")
        raise InvalidBitstreamError("wrong magic bytes (not an .nnc file)")
    if data[: len(MAGIC)] != MAGIC:
        raise InvalidBitstreamError("wrong magic bytes (not an .nnc file)")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version > FORMAT_VERSION:
        raise NewerFormatError(
            f"format version {version} is newer than version {FORMAT_VERSION} that this nnc reads; upgrade nnc"
        )
    if version == 0:
        raise InvalidBitstreamError("format version 0 does not exist")
    pos = len(MAGIC) + 2
    codec = header = None
    groups: list[TensorGroup] = []
    totals = {"elements": 0, "coded": 0}
    group_stats: list | None = [] if stats is not None else None
    while True:
        if len(data) - pos < 8:
            raise InvalidBitstreamError(f"truncated at offset {pos}: missing chunk header or end chunk")
        tag = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        if tag not in KNOWN_TAGS:
            raise InvalidBitstreamError(f"unknown chunk tag {tag!r} at offset {pos}")
        end = pos + 8 + length
        if end + 4 > len(data):
            raise InvalidBitstreamError(
                f"truncated: {tag.decode()} chunk at offset {pos} declares {length} bytes, "
                f"{max(0, len(data) - pos - 12)} available"
            )
        (crc,) = struct.unpack_from("<I", data, end)
        if zlib.crc32(data[pos:end]) != crc:
            raise InvalidBitstreamError(f"CRC mismatch in {tag.decode()} chunk at offset {pos} (corrupted file)")
        payload = data[pos + 8 : end]
        if tag == TAG_HEADER:
            if codec is not None:
                raise InvalidBitstreamError(f"duplicate HEAD chunk at offset {pos}")
            codec, header = _decode_header(payload)
            if stats is not None:
                stats["header_bytes"] = length + CHUNK_OVERHEAD
        elif codec is None:
            raise InvalidBitstreamError(f"{tag.decode()} chunk at offset {pos} before the HEAD chunk")
        elif tag == TAG_GROUP:
            if len(groups) >= MAX_GROUPS:
                raise InvalidBitstreamError(f"more than {MAX_GROUPS} tensor groups")
            groups.append(_decode_group(payload, len(groups), totals, group_stats))
        else:  # TAG_END
            if length:
                raise InvalidBitstreamError("end chunk must be empty")
            pos = end + 4
            break
        pos = end + 4
    if pos != len(data):
        raise InvalidBitstreamError(f"{len(data) - pos} bytes of trailing data after the end chunk")
    if stats is not None:
        stats.update(format_version=version, groups=group_stats)
    return Bitstream(codec, header, groups)


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
    """Write ``data`` under a temporary name in the same directory, then os.replace;
    returns the number of bytes written.  On any failure the target is left untouched
    and no temporary file remains.  OSError -> MediaError."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        # O_EXCL: never clobber a file of the same name; mode 0o666 lets the umask
        # decide the final permissions, as for any ordinary output file.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise MediaError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise MediaError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return len(data)


def read_bitstream_file(path: str | os.PathLike) -> Bitstream:
    """Read and decode a .nnc file; an unreadable file is an InvalidBitstreamError."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(MAGIC))
            if start != MAGIC:
                # A foreign file (say a video passed by mistake) fails fast, unread.
                return decode_bitstream(start)
            data = start + handle.read()
    except OSError as exc:
        raise InvalidBitstreamError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    return decode_bitstream(data)
