"""Rewrite a .nnc file with this nnc's writer: the same symbols and parameters, the shortest forms.

``.venv/bin/python tools/rewrite_bitstream.py IN.nnc OUT.nnc``

A file keeps its own format version when nnc re-encodes it (so golden files re-encode to
their bytes).  This tool instead writes it as a new encode would today, e.g. with the
offsetless step descriptors of format version 4, which an encode made before them could
not use.  Nothing is retrained or requantized: the tool checks that the rewritten file
decodes to exactly the same frames, and prints both sizes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from nnc.bitstream import FORMAT_VERSION, read_bitstream_file, write_bitstream_file
from nnc.codec.files import decode_to_frames
from nnc.errors import NncError


def rewrite(source: Path, output: Path) -> tuple[int, int]:
    """Write ``source`` anew to ``output``; returns (old bytes, new bytes)."""
    if output.resolve() == source.resolve():
        raise NncError(f"{output} is the input: write the rewritten file elsewhere")
    bitstream = read_bitstream_file(source)
    written = write_bitstream_file(output, replace(bitstream, max_version=FORMAT_VERSION))
    before, after = decode_to_frames(source).frames, decode_to_frames(output).frames
    if not np.array_equal(before, after):
        output.unlink()
        raise NncError(f"{output} would decode to other frames than {source}: not written")
    return source.stat().st_size, written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    try:
        old, new = rewrite(args.input, args.output)
    except NncError as error:
        print(f"rewrite_bitstream: {error}", file=sys.stderr)
        return 1
    print(f"{args.input}: {old} bytes -> {args.output}: {new} bytes ({100 * (new - old) / old:+.2f}%), "
          "same frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
