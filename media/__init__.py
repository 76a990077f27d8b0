"""Video input and output: any common video, Y4M, raw YUV or PNG frames in; RGB frames in memory; back out.

YUV<->RGB conversion is explicit and recorded in :class:`VideoInfo`; by default it is
exactly what ``ffmpeg -i input f%05d.png`` does.
"""

from .clip import COLOR_MATRICES, COLOR_RANGES, PIX_FMT_BIT_DEPTH, Video, VideoInfo
from .colour import describe_colour, rgb_to_source, source_to_rgb
from .limits import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_PIXELS, check_output_limits, estimated_output_bytes
from .reader import probe_video, read_video
from .writer import OUTPUT_FORMATS, VideoWriter, output_format_for, write_video

__all__ = [
    "COLOR_MATRICES",
    "COLOR_RANGES",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_MAX_PIXELS",
    "OUTPUT_FORMATS",
    "PIX_FMT_BIT_DEPTH",
    "Video",
    "VideoInfo",
    "VideoWriter",
    "check_output_limits",
    "describe_colour",
    "estimated_output_bytes",
    "output_format_for",
    "probe_video",
    "read_video",
    "rgb_to_source",
    "source_to_rgb",
    "write_video",
]
