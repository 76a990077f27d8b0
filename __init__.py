"""nnc: neural video and image codecs with one shared, versioned bitstream format."""

__version__ = "0.1.0"
