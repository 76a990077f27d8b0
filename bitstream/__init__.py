"""The .nnc bitstream: quantized integer tensors, entropy coding and the file container.

This layer knows nothing about neural networks: it stores named integer tensors with
their quantization parameters, grouped, plus a JSON header (FORMAT.md has the spec).
"""

from nnc.bitstream.container import (
    FORMAT_VERSION,
    MAGIC,
    Bitstream,
    TensorGroup,
    decode_bitstream,
    encode_bitstream,
    inspect_bitstream,
    read_bitstream_file,
    write_bitstream_file,
)
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
    "QuantizedTensor",
    "TensorGroup",
    "decode_bitstream",
    "encode_bitstream",
    "inspect_bitstream",
    "quantize_best_axis",
    "quantize_lowest_cost_axis",
    "quantize_per_channel",
    "quantize_per_tensor",
    "quantize_step",
    "read_bitstream_file",
    "write_bitstream_file",
]
