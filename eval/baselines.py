"""Classical baselines: x264, x265 and SVT-AV1 through PyAV's FFmpeg; JPEG and WebP through Pillow.

They get exactly the RGB frames the neural codecs get.  Video encoders need YUV, so the
frames are converted to 4:2:0 (yuv420p, or yuv420p10le above 8 bits) with nnc's own
RGB->YUV conversion (media.colour.rgb_to_source) using the matrix and range the RGB was
made with (BT.601 limited range for RGB sources, as ffmpeg does), and the stream is
tagged with them; decoding goes through nnc's reader, which converts back with the tags.
Quality is then measured on RGB against the original frames, like every other codec.
The rate is the size of the whole file (container included), as for .nnc files.
"""

from __future__ import annotations

import io
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import MediaError, NncError
from ..media import Video, read_video, rgb_to_source
from ..media.colour import AV_RANGE_OF, TAG_OF_MATRIX
from ..metrics import compare

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
X265_PRESETS = X264_PRESETS


@dataclass(frozen=True)
class ClassicalCodec:
    """One classical encoder configuration: its report name, the rate knob and its default ladder."""

    name: str  # as in reports: x264-medium, x265-veryslow, svtav1-p8, jpeg, webp
    family: str  # x264, x265, svtav1, jpeg, webp
    preset: str | None
    rate_kind: str  # "crf" or "quality"
    default_rates: tuple[int, ...]
    rate_range: tuple[int, int]

    @property
    def is_image(self) -> bool:
        return self.family in ("jpeg", "webp")

    def describe(self) -> str:
        if self.family == "x264":
            return f"x264 (libx264, preset {self.preset}), yuv420p, MP4; rate points are CRF values"
        if self.family == "x265":
            return f"x265 (libx265, preset {self.preset}), yuv420p, MP4; rate points are CRF values"
        if self.family == "svtav1":
            return f"SVT-AV1 (libsvtav1, preset {self.preset}), yuv420p, MP4; rate points are CRF values"
        if self.family == "jpeg":
            return "JPEG (Pillow/libjpeg, 4:2:0, optimized Huffman tables), one file per frame; rate points are quality"
        return "WebP (Pillow/libwebp, lossy, method 6), one file per frame; rate points are quality"


def classical_codec(name: str) -> ClassicalCodec | None:
    """The classical codec called ``name`` (x264 = x264-medium, x265 = x265-medium, svtav1 = svtav1-p8), or None."""
    text = name.strip().lower()
    if text in ("jpeg", "jpg"):
        return ClassicalCodec("jpeg", "jpeg", None, "quality", (20, 40, 60, 80, 95), (1, 95))
    if text == "webp":
        return ClassicalCodec("webp", "webp", None, "quality", (20, 40, 60, 80, 95), (0, 100))
    if match := re.fullmatch(r"(x264|x265)(?:-([a-z]+))?", text):
        family, preset = match[1], match[2] or "medium"
        if preset not in X264_PRESETS:
            raise NncError(f"codec {name!r}: unknown preset {preset!r} (choose from {', '.join(X264_PRESETS)})")
        # HEVC common test conditions use QP 22/27/32/37; the CRF ladder follows them.
        return ClassicalCodec(f"{family}-{preset}", family, preset, "crf", (22, 27, 32, 37), (0, 51))
    if match := re.fullmatch(r"svtav1(?:-p(\d+))?", text):
        preset = int(match[1]) if match[1] is not None else 8
        if not 0 <= preset <= 13:
            raise NncError(f"codec {name!r}: SVT-AV1 presets are p0..p13")
        return ClassicalCodec(f"svtav1-p{preset}", "svtav1", str(preset), "crf", (27, 35, 43, 51), (1, 63))
    return None


def _codec_options(codec: ClassicalCodec, crf: int, threads: int) -> tuple[str, dict]:
    if codec.family == "x264":
        return "libx264", {"crf": str(crf), "preset": codec.preset, "threads": str(threads)}
    if codec.family == "x265":
        return "libx265", {"crf": str(crf), "preset": codec.preset,
                           "x265-params": f"log-level=error:pools={threads}:frame-threads={min(threads, 4)}"}
    return "libsvtav1", {"crf": str(crf), "preset": codec.preset, "svtav1-params": f"lp={threads}"}


def _colour_for(video: Video) -> tuple[str, str]:
    # An RGB source is converted as ffmpeg converts RGB to YUV by default; a YUV source
    # goes back to the matrix and range its RGB came from.
    if video.info.color_matrix == "rgb":
        return "bt601", "tv"
    return video.info.color_matrix, video.info.color_range


def encode_video_baseline(video: Video, codec: ClassicalCodec, crf: int, workdir: Path, threads: int = 1) -> dict:
    """Encode ``video`` with a classical video codec at ``crf``; decode it and measure it on RGB."""
    low, high = codec.rate_range
    if not low <= crf <= high:
        raise NncError(f"{codec.name}: CRF {crf} is outside {low}..{high}")
    info = video.info
    if info.width % 2 or info.height % 2:
        raise MediaError(f"{codec.name} with 4:2:0 chroma needs even frame dimensions, the input is "
                         f"{info.width}x{info.height}")
    pix_fmt = "yuv420p" if info.bit_depth == 8 else "yuv420p10le"
    matrix, value_range = _colour_for(video)
    encoder, options = _codec_options(codec, crf, threads)
    path = Path(workdir) / f"{codec.name}_crf{crf}.mp4"
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration on stderr unless told errors only
    started = time.perf_counter()
    try:
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream(encoder, rate=info.fps, options=options)
            stream.width, stream.height, stream.pix_fmt = info.width, info.height, pix_fmt
            stream.codec_context.color_range = AV_RANGE_OF[value_range]
            stream.codec_context.colorspace = TAG_OF_MATRIX[matrix]
            reformatter = VideoReformatter()
            for index, rgb in enumerate(video.frames):
                frame = rgb_to_source(rgb, info, pix_fmt, color_matrix=matrix, color_range=value_range,
                                      reformatter=reformatter)
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    except av.FFmpegError as error:
        raise MediaError(f"{codec.name} failed: {error}") from None
    encoding_time = time.perf_counter() - started
    file_bytes = path.stat().st_size

    started = time.perf_counter()
    decoded = read_video(path)
    decoding_time = time.perf_counter() - started
    if decoded.frames.shape != video.frames.shape:
        raise MediaError(f"{codec.name} decoded {decoded.frames.shape}, expected {video.frames.shape}")
    metrics = compare(video.frames, decoded.frames, video.max_value, matrix)
    settings = {"encoder": encoder, "crf": crf, "preset": codec.preset, "pix_fmt": pix_fmt, "container": "mp4",
                "rgb_to_yuv": f"{matrix} {value_range}", "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
                "threads": threads}
    return dict(metrics, bytes=file_bytes, encoding_time=encoding_time, decoding_time=decoding_time,
                settings=settings)


def encode_images_baseline(video: Video, codec: ClassicalCodec, quality: int, workdir: Path) -> dict:
    """Each frame as its own JPEG or WebP file at ``quality``; rate = the files' total size."""
    import PIL
    from PIL import Image

    low, high = codec.rate_range
    if not low <= quality <= high:
        raise NncError(f"{codec.name}: quality {quality} is outside {low}..{high}")
    if video.info.bit_depth != 8:
        raise MediaError(f"{codec.name} takes 8-bit frames; the input is {video.info.bit_depth}-bit")
    suffix = "jpg" if codec.family == "jpeg" else "webp"
    save_options = ({"format": "JPEG", "quality": quality, "optimize": True, "subsampling": "4:2:0"}
                    if codec.family == "jpeg" else {"format": "WEBP", "quality": quality, "method": 6})
    paths = []
    started = time.perf_counter()
    for index, rgb in enumerate(video.frames):
        path = Path(workdir) / f"{codec.name}_q{quality}_{index:05d}.{suffix}"
        Image.fromarray(rgb, "RGB").save(path, **save_options)
        paths.append(path)
    encoding_time = time.perf_counter() - started
    file_bytes = sum(path.stat().st_size for path in paths)

    started = time.perf_counter()
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB")) for path in paths])
    decoding_time = time.perf_counter() - started
    metrics = compare(video.frames, decoded, 255)
    settings = {"encoder": f"Pillow {PIL.__version__}",
                "quality": quality, **{k: v for k, v in save_options.items() if k != "quality"}}
    return dict(metrics, bytes=file_bytes, encoding_time=encoding_time, decoding_time=decoding_time,
                settings=settings)


def run_baseline(video: Video, codec: ClassicalCodec, rate: int, workdir: Path, threads: int = 1) -> dict:
    if codec.is_image:
        return encode_images_baseline(video, codec, rate, workdir)
    return encode_video_baseline(video, codec, rate, workdir, threads)
