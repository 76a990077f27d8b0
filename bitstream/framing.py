"""How a .nnc file is cut into chunks: magic, format version, then framed chunks.

Layout (FORMAT.md section 2)::

    magic (8) | format version (u16 LE) | HEAD chunk | TGRP chunk * | TEND chunk

Every chunk is ``tag (4 ASCII) | payload length (u32 LE) | payload | CRC32 (u32 LE)``,
the CRC covering tag, length and payload.  This module is the only code that reads or
writes that framing: the container (container.py) parses the payloads it yields, and
the chunk API (chunks.py) edits files chunk by chunk through it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from nnc.errors import InvalidBitstreamError, NewerFormatError

# The newest version this reader reads.  Writers write the LOWEST version whose readers
# can read the file (FORMAT.md, Versions), so a file that needs nothing newer stays a
# version-1 file, byte for byte as earlier nnc versions wrote it.
FORMAT_VERSION = 4
RAW_BYTES_VERSION = 2  # raw-bytes group entries (FORMAT.md section 4.3) need version 2
# Headers with a segment table (FORMAT.md section 3.1): the bytes are those of versions 1
# and 2; the version makes older readers refuse the file as newer, not as corrupt.
SEGMENTS_VERSION = 3
# Step tensors whose offsets are all +0.0 written without them (FORMAT.md section 4.1).
OFFSETLESS_VERSION = 4
# PNG-style signature: a non-ASCII first byte and CR LF / ^Z / LF catch text-mode
# transfers and truncated "type" output early.
MAGIC = b"\x89NNC\r\n\x1a\n"
PREFIX_BYTES = len(MAGIC) + 2  # magic + format version

TAG_HEADER = b"HEAD"
TAG_GROUP = b"TGRP"
TAG_END = b"TEND"
KNOWN_TAGS = (TAG_HEADER, TAG_GROUP, TAG_END)
CHUNK_OVERHEAD = 12  # tag + length + CRC


def file_prefix(version: int) -> bytes:
    """Magic and format version: the first PREFIX_BYTES bytes of every file."""
    if not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"format version {version} is not in 1..{FORMAT_VERSION}")
    return MAGIC + struct.pack("<H", version)


def frame_chunk(tag: bytes, payload: bytes) -> bytes:
    """One chunk: tag, payload length, payload, CRC-32 of all three."""
    if len(tag) != 4:
        raise ValueError(f"chunk tag {tag!r} must be 4 bytes")
    if len(payload) > 0xFFFFFFFF:
        raise ValueError(f"chunk payload of {len(payload)} bytes does not fit a u32 length")
    head = tag + struct.pack("<I", len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))


def read_version(data: bytes) -> int:
    """The format version of a file after checking its magic; a version this reader
    does not know is NewerFormatError, version 0 and anything not .nnc InvalidBitstreamError."""
    if len(data) < PREFIX_BYTES:
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
    return version


def iter_chunks(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(offset, tag, payload) of each chunk after the prefix, up to and including TEND.

    Framing is checked before a chunk is yielded (header present, known tag, length
    inside the file, CRC); after TEND, that nothing follows.  Which chunk may come
    where is the caller's business (the container checks HEAD first, TEND empty, ...).
    """
    pos = PREFIX_BYTES
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
        yield pos, tag, data[pos + 8 : end]
        pos = end + 4
        if tag == TAG_END:
            break
    if pos != len(data):
        raise InvalidBitstreamError(f"{len(data) - pos} bytes of trailing data after the end chunk")
