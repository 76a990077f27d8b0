"""Editing .nnc files chunk by chunk, without re-encoding what is already there.

A file is a HEAD chunk, TGRP chunks (one tensor group each) and a TEND chunk
(FORMAT.md section 2).  PFNR sets grow by one group per video and must keep the earlier
groups' bytes exactly: :func:`group_chunks` takes them from a file verbatim,
:func:`encode_group_chunk` encodes one new group, :func:`assemble` writes a file from a
header and group chunks, :func:`append_group` does all three.  :func:`split_chunks` and
:func:`join_chunks` give tools (the decoder fuzzer) every chunk, and
:func:`group_fields` where each field of a group lies.  :func:`group_names` and
:func:`decode_selected` give random access: a reader that needs a few groups of a file
(one segment of a long video) decodes those and only checks the others' framing.  Only bitstream/ knows the
framing: no other code cuts files at byte offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from nnc.bitstream import entropy
from nnc.bitstream.container import (
    MAX_GROUPS,
    MAX_NAME_BYTES,
    OFFSETLESS_STEP_CODE,
    RAW_BYTES_CODE,
    Bitstream,
    TensorGroup,
    decode_bitstream,
    encode_group_payload,
    encode_header_payload,
)
from nnc.bitstream.framing import (
    CHUNK_OVERHEAD,
    FORMAT_VERSION,
    PREFIX_BYTES,
    TAG_END,
    TAG_GROUP,
    TAG_HEADER,
    file_prefix,
    frame_chunk,
    iter_chunks,
    read_version,
)
from nnc.bitstream.quantize import SCHEMES

__all__ = [
    "PREFIX_BYTES",
    "Chunk",
    "Field",
    "append_group",
    "assemble",
    "decode_selected",
    "encode_group_chunk",
    "group_chunks",
    "group_fields",
    "group_names",
    "join_chunks",
    "split_chunks",
]


@dataclass(frozen=True)
class Chunk:
    """One chunk: its tag and payload (the framing around them is a function of the two,
    so a chunk written again is byte-identical), and the lowest format version whose
    readers can read it."""

    tag: bytes
    payload: bytes
    min_version: int = 1

    @property
    def size(self) -> int:
        """Bytes the chunk takes in a file, framing included (what ``nnc info`` counts)."""
        return len(self.payload) + CHUNK_OVERHEAD

    def to_bytes(self) -> bytes:
        return frame_chunk(self.tag, self.payload)


def split_chunks(data: bytes) -> list[Chunk]:
    """Every chunk of a file, HEAD and TEND included, in file order.

    Checks the framing (magic, version, lengths, CRCs, nothing after TEND) and raises
    InvalidBitstreamError (NewerFormatError for a newer version); payloads are not
    parsed: :func:`nnc.bitstream.decode_bitstream` does that.  A TGRP chunk is given
    the file's version, the lowest one known to read it."""
    version = read_version(data)
    return [Chunk(tag, payload, version if tag == TAG_GROUP else 1) for _, tag, payload in iter_chunks(data)]


def group_chunks(data: bytes) -> list[Chunk]:
    """The TGRP chunks of a file, verbatim and in order (framing checked as in
    :func:`split_chunks`)."""
    return [chunk for chunk in split_chunks(data) if chunk.tag == TAG_GROUP]


def group_names(data: bytes) -> list[str]:
    """The names of a file's groups, in order, read without decoding the groups (framing
    checked as in :func:`split_chunks`)."""
    return [entropy.ByteReader(chunk.payload, f"group {index}").text("group name", MAX_NAME_BYTES)
            for index, chunk in enumerate(group_chunks(data))]


def decode_selected(data: bytes, positions) -> Bitstream:
    """The file's codec and header and the groups at ``positions`` (indices among its
    groups), decoded as :func:`nnc.bitstream.decode_bitstream` decodes a file; the other
    groups are framing- and CRC-checked only, never parsed nor entropy-decoded.  The
    file-wide limits apply to the groups decoded."""
    wanted = set(positions)
    version = read_version(data)
    kept, index = [], 0
    for chunk in split_chunks(data):
        if chunk.tag == TAG_GROUP:
            index += 1
            if index - 1 not in wanted:
                continue
        kept.append(chunk)
    return decode_bitstream(join_chunks(kept, version))


def join_chunks(chunks: list[Chunk], version: int | None = None) -> bytes:
    """Magic, version and the chunks as given: no check of which chunk comes where
    (tools may build broken files on purpose).  ``version`` defaults to the lowest that
    reads every chunk."""
    if version is None:
        version = max((chunk.min_version for chunk in chunks), default=1)
    return file_prefix(version) + b"".join(chunk.to_bytes() for chunk in chunks)


def encode_group_chunk(group: TensorGroup, max_version: int = FORMAT_VERSION) -> Chunk:
    """The TGRP chunk of one tensor group, encoded alone, with the lowest version that
    reads it (``max_version`` as Bitstream's: the newest whose shorter forms it may use);
    raises ValueError if the group breaks the format's rules (file-wide limits are
    checked when the file is decoded)."""
    payload, version = encode_group_payload(group, max_version=max_version)
    return Chunk(TAG_GROUP, payload, version)


def assemble(codec: str, header: dict, groups: list[Chunk]) -> bytes:
    """A complete file: a fresh HEAD chunk for ``codec`` and ``header``, the TGRP chunks
    verbatim, TEND.  The version is the lowest that reads every group.  Limits that span
    the file (elements, symbols) are checked by decoding the result."""
    for chunk in groups:
        if not isinstance(chunk, Chunk) or chunk.tag != TAG_GROUP:
            raise ValueError(f"expected TGRP chunks, got {chunk!r:.60}")
    if len(groups) > MAX_GROUPS:
        raise ValueError(f"{len(groups)} groups exceed the limit of {MAX_GROUPS}")
    head = Chunk(TAG_HEADER, encode_header_payload(codec, header))
    return join_chunks([head, *groups, Chunk(TAG_END, b"")])


def append_group(data: bytes, group: TensorGroup | Chunk, header: dict | None = None) -> bytes:
    """``data`` with one more group at the end: its groups stay byte-identical, the
    header is replaced by ``header`` when given (else kept), the codec name is kept."""
    existing = decode_bitstream(data)  # the whole file is checked before anything is copied from it
    new = group if isinstance(group, Chunk) else encode_group_chunk(group)
    return assemble(existing.codec, existing.header if header is None else header, [*group_chunks(data), new])


class Field(NamedTuple):
    """Where one field of a TGRP payload lies: ``payload[start:end]``."""

    start: int
    end: int
    kind: str  # "uvarint", "u8", "f32s", "model" (an entropy-model descriptor) or "bytes"
    what: str


def group_fields(payload: bytes) -> list[Field]:
    """The fields of a valid TGRP payload (FORMAT.md section 4), for tools that edit
    files field by field.  Raises InvalidBitstreamError where the payload is not valid."""
    reader = entropy.ByteReader(payload, "group")
    fields: list[Field] = []
    unbounded = 1 << 62

    def mark(kind, what, read):
        start = reader.pos
        value = read()
        fields.append(Field(start, reader.pos, kind, what))
        return value

    length = mark("uvarint", "group name length", lambda: reader.uvarint("", unbounded))
    reader.take(length, "group name")
    count = mark("uvarint", "tensor count", lambda: reader.uvarint("", unbounded))
    for index in range(count):
        length = mark("uvarint", f"tensor {index} name length", lambda: reader.uvarint("", unbounded))
        reader.take(length, "name")
        scheme = mark("u8", f"tensor {index} scheme", lambda: reader.u8(""))
        if scheme == RAW_BYTES_CODE:
            length = mark("uvarint", f"tensor {index} raw byte count", lambda: reader.uvarint("", unbounded))
            mark("bytes", f"tensor {index} raw bytes", lambda: reader.take(length, "raw bytes"))
            continue
        offsetless = scheme == OFFSETLESS_STEP_CODE
        if scheme >= len(SCHEMES) and not offsetless:
            raise reader.fail(f"tensor {index} has unknown scheme {scheme}")
        bits = mark("u8", f"tensor {index} bits", lambda: reader.u8(""))
        ndim = mark("u8", f"tensor {index} ndim", lambda: reader.u8(""))
        shape = [mark("uvarint", f"tensor {index} dim {axis}", lambda: reader.uvarint("", unbounded))
                 for axis in range(ndim)]
        axis = mark("u8", f"tensor {index} axis", lambda: reader.u8(""))
        params = 1 if axis == 0xFF else shape[axis]
        if not offsetless:
            mark("f32s", f"tensor {index} offsets", lambda: reader.f32_array(params, ""))
        mark("f32s", f"tensor {index} scales", lambda: reader.f32_array(params, ""))
        minmax = not offsetless and SCHEMES[scheme] == "minmax"
        low, high = (0, 2**bits - 1) if minmax else (entropy.MIN_SYMBOL, entropy.MAX_SYMBOL)
        mark("u8", f"tensor {index} model kind", lambda: reader.u8(""))
        reader.pos -= 1  # the kind byte is also the model descriptor's first byte
        mark("model", f"tensor {index} model", lambda: entropy.read_model(reader, "", low, high))
    mark("uvarint", "stream length", lambda: reader.uvarint("", unbounded))
    return fields
