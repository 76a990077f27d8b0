"""Classical baselines: x264, x265 and SVT-AV1 through PyAV's FFmpeg; JPEG and WebP through Pillow.

They get the frames the neural codecs get.  Video encoders get YUV: a YUV clip's own
planes when the encoder's pixel format is the clip's (no RGB round trip), otherwise the
RGB frames converted with nnc's own RGB->YUV conversion (media.colour.rgb_to_source)
using the matrix and range the RGB was made with (BT.601 limited range for RGB sources,
as ffmpeg does); the stream is tagged with them.  ``x264-444`` / ``x265-444`` encode
4:4:4 (the ceiling of RGB quality the 4:2:0 variants cannot reach).  Decoding goes through
nnc's reader.  Quality: RGB metrics against the original frames, like every other codec,
and PSNR-Y/U/V/YUV on the planes (:mod:`nnc.eval.planes`).

Rate: the size of the whole file (container included), as for .nnc files; the payload
(the elementary stream: Annex-B NAL units or AV1 OBUs, container excluded; JPEG without
APPn/COM segments; WebP's VP8/VP8L chunk) is recorded next to it.  Encoder metadata is
turned off: x265 ``info=0`` (its settings SEI is about 2.3 KB per file), and x264's
user-data SEI (which x264 always writes, no option disables it) is removed by the
``filter_units=remove_types=6`` bitstream filter before muxing.  x264 medium writes no
other SEI; the removed bytes would otherwise be counted as rate.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import av
import av.bitstream
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import MediaError, NncError
from ..media import Video, read_video, rgb_to_source
from ..media.colour import AV_RANGE_OF, TAG_OF_MATRIX
from ..media.reader import read_planes
from ..metrics import compare
from .planes import ReferencePlanes, reference_planes

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
    chroma: str = "420"  # x264/x265: "420" or "444"

    @property
    def is_image(self) -> bool:
        return self.family in ("jpeg", "webp")

    def pix_fmt(self, bit_depth: int) -> str:
        return f"yuv{self.chroma}p" + ("" if bit_depth == 8 else "10le")

    def describe(self) -> str:
        if self.family == "x264":
            return (f"x264 (libx264, preset {self.preset}), yuv{self.chroma}p, MP4, settings SEI removed; "
                    "rate points are CRF values")
        if self.family == "x265":
            return (f"x265 (libx265, preset {self.preset}, info=0), yuv{self.chroma}p, MP4; "
                    "rate points are CRF values")
        if self.family == "svtav1":
            return f"SVT-AV1 (libsvtav1, preset {self.preset}), yuv420p, MP4; rate points are CRF values"
        if self.family == "jpeg":
            return "JPEG (Pillow/libjpeg, 4:2:0, optimized Huffman tables), one file per frame; rate points are quality"
        return "WebP (Pillow/libwebp, lossy, method 6), one file per frame; rate points are quality"


def classical_codec(name: str) -> ClassicalCodec | None:
    """The classical codec called ``name`` (x264 = x264-medium, x265-444 = x265-444-medium, svtav1 = svtav1-p8),
    or None."""
    text = name.strip().lower()
    if text in ("jpeg", "jpg"):
        return ClassicalCodec("jpeg", "jpeg", None, "quality", (20, 40, 60, 80, 95), (1, 95))
    if text == "webp":
        return ClassicalCodec("webp", "webp", None, "quality", (20, 40, 60, 80, 95), (0, 100))
    if match := re.fullmatch(r"(x264|x265)(-444)?(?:-([a-z]+))?", text):
        family, chroma, preset = match[1], "444" if match[2] else "420", match[3] or "medium"
        if preset not in X264_PRESETS:
            raise NncError(f"codec {name!r}: unknown preset {preset!r} (choose from {', '.join(X264_PRESETS)})")
        # HEVC common test conditions use QP 22/27/32/37; the CRF ladder follows them.
        label = f"{family}-444" if chroma == "444" else family
        return ClassicalCodec(f"{label}-{preset}", family, preset, "crf", (22, 27, 32, 37), (0, 51), chroma)
    if match := re.fullmatch(r"svtav1(?:-p(\d+))?", text):
        preset = int(match[1]) if match[1] is not None else 8
        if not 0 <= preset <= 13:
            raise NncError(f"codec {name!r}: SVT-AV1 presets are p0..p13")
        return ClassicalCodec(f"svtav1-p{preset}", "svtav1", str(preset), "crf", (27, 35, 43, 51), (1, 63))
    return None


# x264 writes its version and settings as a user-data-unregistered SEI and has no option
# to leave it out: the filter drops SEI NAL units (type 6) before muxing.
X264_METADATA_FILTER = "filter_units=remove_types=6"


def _codec_options(codec: ClassicalCodec, crf: int, threads: int) -> tuple[str, dict]:
    if codec.family == "x264":
        return "libx264", {"crf": str(crf), "preset": codec.preset, "threads": str(threads)}
    if codec.family == "x265":
        return "libx265", {"crf": str(crf), "preset": codec.preset,
                           "x265-params": f"log-level=error:info=0:pools={threads}:frame-threads={min(threads, 4)}"}
    return "libsvtav1", {"crf": str(crf), "preset": codec.preset, "svtav1-params": f"lp={threads}"}


def _library_path(stem: str) -> str | None:
    folder = Path(av.__file__).parent.parent / "av.libs"  # the libraries bundled with PyAV's wheel
    found = sorted(folder.glob(f"{stem}*.so*")) if folder.is_dir() else []
    return str(found[0]) if found else None


def _x264_build() -> str | None:
    # x264's own SEI names its build ("x264 - core 165 r3222 b35605a - H.264/MPEG-4 AVC codec").
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        frame = av.VideoFrame(64, 64, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    match = re.search(rb"x264 - (core \d+[^-]*)", buffer.getvalue())
    return match[1].decode("ascii", "replace").strip() if match else None


@functools.lru_cache(maxsize=1)
def encoder_versions() -> dict:
    """The encoder libraries PyAV runs (as the libraries report themselves), FFmpeg, PyAV and Pillow."""
    import PIL

    versions = {"pyav": av.__version__, "ffmpeg": av.ffmpeg_version_info,
                "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
                "pillow": PIL.__version__}
    try:
        versions["x264"] = _x264_build()
    except (av.FFmpegError, ValueError) as error:
        versions["x264"] = f"unknown ({error})"
    for name, stem, symbol in (("x265", "libx265", "x265_version_str"), ("svtav1", "libSvtAv1Enc", None)):
        path = _library_path(stem)
        try:
            library = ctypes.CDLL(path) if path else None
            if library is None:
                versions[name] = "unknown (library not found next to PyAV)"
            elif symbol:
                versions[name] = ctypes.c_char_p.in_dll(library, symbol).value.decode()
            else:
                library.svt_av1_get_version.restype = ctypes.c_char_p
                versions[name] = library.svt_av1_get_version().decode()
        except (OSError, AttributeError, ValueError) as error:
            versions[name] = f"unknown ({error})"
    return versions


def elementary_stream(path: Path) -> bytes:
    """The video stream of an MP4 without its container: Annex-B NAL units (H.264/HEVC, parameter
    sets included) or the AV1 OBUs of its samples."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        name = stream.codec_context.name
        to_annex_b = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}.get(name)
        bsf = av.bitstream.BitStreamFilterContext(to_annex_b, stream) if to_annex_b else None
        chunks = []
        for packet in container.demux(stream):
            packets = bsf.filter(packet if packet.size else None) if bsf else ([packet] if packet.size else [])
            chunks += [bytes(p) for p in packets]
        if bsf:
            chunks += [bytes(p) for p in bsf.filter(None)]
    return b"".join(chunks)


def _frame_from_planes(planes: list[np.ndarray], pix_fmt: str, width: int, height: int) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, values in zip(frame.planes, planes):
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        data = np.ascontiguousarray(values).view(np.uint8)
        rows[:, : data.shape[1]] = data
    return frame


def _colour_for(video: Video) -> tuple[str, str]:
    # An RGB source is converted as ffmpeg converts RGB to YUV by default; a YUV source
    # goes back to the matrix and range its RGB came from.
    if video.info.color_matrix == "rgb":
        return "bt601", "tv"
    return video.info.color_matrix, video.info.color_range


def encode_video_baseline(video: Video, codec: ClassicalCodec, crf: int, workdir: Path, threads: int = 1,
                          reference: ReferencePlanes | None = None) -> dict:
    """Encode ``video`` with a classical video codec at ``crf``; decode it and measure it (RGB and planes)."""
    low, high = codec.rate_range
    if not low <= crf <= high:
        raise NncError(f"{codec.name}: CRF {crf} is outside {low}..{high}")
    info = video.info
    if codec.chroma == "420" and (info.width % 2 or info.height % 2):
        raise MediaError(f"{codec.name} with 4:2:0 chroma needs even frame dimensions, the input is "
                         f"{info.width}x{info.height}")
    reference = reference or reference_planes(video)
    pix_fmt = codec.pix_fmt(info.bit_depth)
    matrix, value_range = _colour_for(video)
    # A YUV clip's own planes go to the encoder as they are; anything else is made from RGB.
    planes_in = reference.planes if reference.format.pix_fmt == pix_fmt else None
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
            strip = (av.bitstream.BitStreamFilterContext(X264_METADATA_FILTER, stream)
                     if codec.family == "x264" else None)

            def mux(packets) -> None:
                for packet in packets:
                    container.mux(strip.filter(packet) if strip else packet)

            reformatter = VideoReformatter()
            for index, rgb in enumerate(video.frames):
                if planes_in is not None:
                    frame = _frame_from_planes(planes_in[index], pix_fmt, info.width, info.height)
                    frame.color_range, frame.colorspace = AV_RANGE_OF[value_range], TAG_OF_MATRIX[matrix]
                else:
                    frame = rgb_to_source(rgb, info, pix_fmt, color_matrix=matrix, color_range=value_range,
                                          reformatter=reformatter)
                frame.pts = index
                mux(stream.encode(frame))
            mux(stream.encode(None))
            if strip:
                container.mux(strip.filter(None))
    except av.FFmpegError as error:
        raise MediaError(f"{codec.name} failed: {error}") from None
    encoding_time = time.perf_counter() - started
    file_bytes = path.stat().st_size

    started = time.perf_counter()
    decoded = read_video(path)
    decoding_time = time.perf_counter() - started
    if decoded.frames.shape != video.frames.shape:
        raise MediaError(f"{codec.name} decoded {decoded.frames.shape}, expected {video.frames.shape}")
    decoded_info, decoded_planes = read_planes(path)
    metrics = compare(video.frames, decoded.frames, video.max_value)
    metrics.update(reference.measure(decoded.frames, decoded.info, decoded_planes, decoded_info.pix_fmt))
    settings = {"encoder": encoder, "crf": crf, "preset": codec.preset, "pix_fmt": pix_fmt, "container": "mp4",
                "encoder_input": "the source's own planes" if planes_in is not None else "converted from RGB",
                "rgb_to_yuv": f"{matrix} {value_range}", "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
                "encoder_metadata": {"x264": f"settings SEI removed ({X264_METADATA_FILTER})",
                                     "x265": "info=0"}.get(codec.family, "none written"),
                "threads": threads}
    return dict(metrics, bytes=file_bytes, payload_bytes=len(elementary_stream(path)), encoding_time=encoding_time,
                decoding_time=decoding_time, settings=settings)


def _jpeg_payload(data: bytes) -> int:
    """JPEG bytes without APPn (JFIF, Exif...) and COM segments: what a decoder needs."""
    position, dropped = 2, 0
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        length = int.from_bytes(data[position + 2: position + 4], "big")
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            dropped += 2 + length
        position += 2 + length
    return len(data) - dropped


def _webp_payload(data: bytes) -> int:
    """The VP8/VP8L chunk's data: WebP without its RIFF container and extra chunks."""
    position = 12
    while position + 8 <= len(data):
        tag, size = data[position: position + 4], int.from_bytes(data[position + 4: position + 8], "little")
        if tag in (b"VP8 ", b"VP8L"):
            return size
        position += 8 + size + (size & 1)
    return len(data)


def encode_images_baseline(video: Video, codec: ClassicalCodec, quality: int, workdir: Path,
                           reference: ReferencePlanes | None = None) -> dict:
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
    metrics.update((reference or reference_planes(video)).measure(decoded, video.info))
    payload = _jpeg_payload if codec.family == "jpeg" else _webp_payload
    settings = {"encoder": f"Pillow {PIL.__version__}",
                "quality": quality, **{k: v for k, v in save_options.items() if k != "quality"}}
    return dict(metrics, bytes=file_bytes, payload_bytes=sum(payload(path.read_bytes()) for path in paths),
                encoding_time=encoding_time, decoding_time=decoding_time, settings=settings)


def run_baseline(video: Video, codec: ClassicalCodec, rate: int, workdir: Path, threads: int = 1,
                 reference: ReferencePlanes | None = None) -> dict:
    if codec.is_image:
        return encode_images_baseline(video, codec, rate, workdir, reference)
    return encode_video_baseline(video, codec, rate, workdir, threads, reference)
