"""The .nnc bitstream: quantized integer tensors, entropy coding and the file container.

This layer knows nothing about neural networks: it stores named integer tensors with
their quantization parameters and raw byte strings, grouped, plus a JSON header
(FORMAT.md has the spec).  The chunk API (chunks.py) edits files group by group.
"""

from nnc.bitstream.chunks import (
    Chunk,
    append_group,
    assemble,
    decode_selected,
    encode_group_chunk,
    group_chunks,
    group_names,
    join_chunks,
    split_chunks,
)
from nnc.bitstream.container import (
    FORMAT_VERSION,
    MAGIC,
    Bitstream,
    RawBytes,
    TensorGroup,
    decode_bitstream,
    encode_bitstream,
    inspect_bitstream,
    read_bitstream_file,
    write_bitstream_file,
)
from nnc.bitstream.framing import SEGMENTS_VERSION
from nnc.bitstream.quantize import (
    QuantizedTensor,
    quantize_best_axis,
    quantize_lowest_cost_axis,
    quantize_per_channel,
    quantize_per_tensor,
    quantize_step,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Bitstream",
    "Chunk",
    "QuantizedTensor",
    "RawBytes",
    "SEGMENTS_VERSION",
    "TensorGroup",
    "append_group",
    "assemble",
    "decode_bitstream",
    "decode_selected",
    "encode_bitstream",
    "encode_group_chunk",
    "group_chunks",
    "group_names",
    "inspect_bitstream",
    "join_chunks",
    "quantize_best_axis",
    "quantize_lowest_cost_axis",
    "quantize_per_channel",
    "quantize_per_tensor",
    "quantize_step",
    "read_bitstream_file",
    "split_chunks",
    "write_bitstream_file",
]
