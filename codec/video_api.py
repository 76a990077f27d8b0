"""Single videos in files: encode a :class:`~nnc.media.Video` into a .nnc file, decode one.

The helpers here (frame ranges, output checks, decoding a parsed bitstream to frames)
serve the image and video-set modules too; :mod:`nnc.codec.files` picks the module by
the codec's kind.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..bitstream import (Bitstream, decode_bitstream, decode_selected, encode_bitstream, group_names,
                         write_bitstream_file)
from ..bitstream.container import read_bitstream_bytes
from ..errors import InvalidBitstreamError, MediaError, NncError
from ..fileio import exclusive_lock
from ..metrics import mean_psnr, psnr_per_frame
from ..units import plural
from ..media import Video, VideoInfo, VideoWriter
from .base import CodecOptions, float_to_frames
from .planning import PlanOnly, PlanReport
from .checkpoint import checkpoint_path_for, remove_checkpoint_files
from .header import check_header
from .registry import DEFAULT_CODEC, get_codec
from .segments import check_group_names, decode_segments, is_segmented, needed_segments, segmented_bitstream


@dataclass
class EncodeReport:
    path: Path
    file_bytes: int
    bpp: float
    psnr: float  # RGB PSNR of what `nnc decode` will produce, mean over frames
    encode_seconds: float
    settings: dict
    stats: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)

    def summary(self) -> str:
        segments = self.stats.get("segments")
        return (f"wrote {self.path}: {self.file_bytes} bytes, {self.bpp:.4f} bpp, "
                f"PSNR {self.psnr:.2f} dB (RGB, after quantization), "
                f"{self.stats.get('model_size', 0) / 1e6:.3f}M parameters"
                + (f" in {plural(len(segments), 'segment')}" if segments else "") + f", {self.encode_seconds:.1f} s")


def bits_per_pixel(file_bytes: int, info: VideoInfo) -> float:
    """Every byte of the file, over every pixel of every frame."""
    return file_bytes * 8.0 / (info.width * info.height * info.num_frames)


def resolve_frame_range(frame_range: tuple[int, int | None] | None, num_frames: int) -> range:
    """The frames to decode: all of them, or START:STOP clipped to the video (STOP None: to the end)."""
    if frame_range is None:
        return range(num_frames)
    start, stop = frame_range
    stop = num_frames if stop is None else min(stop, num_frames)
    if start < 0 or start >= num_frames:
        raise NncError(f"--frames starts at {start}, but the video has {plural(num_frames, 'frame')} "
                       f"(0..{num_frames - 1})")
    return range(start, stop)


def decode_frames(bitstream: Bitstream, *, device: str = "cpu", batch_size: int = 4, frames: range | None = None):
    """Yield (N, H, W, 3) integer RGB batches for a parsed bitstream (all frames, or ``frames``)."""
    info = media_info(bitstream)
    codec = get_codec(bitstream.codec, from_file=True)()
    wanted = range(info.num_frames) if frames is None else frames
    if is_segmented(bitstream.header):
        segments = check_header(bitstream.codec, bitstream.header, bitstream.version).segments
        batches = decode_segments(codec, segments, bitstream.groups, info.height, info.width, wanted, device=device,
                                  batch_size=batch_size)
    else:
        model_header = bitstream.header.get("model")
        if not isinstance(model_header, dict):
            raise InvalidBitstreamError("header has no model section")
        extra = {} if frames is None else {"frames": wanted}
        batches = codec.decompress(model_header, bitstream.groups, info.num_frames, info.height, info.width,
                                   device=device, batch_size=batch_size, **extra)
    produced = 0
    for batch in batches:
        produced += batch.shape[0]
        yield float_to_frames(batch, info.max_value)
    if produced != len(wanted):
        raise InvalidBitstreamError(f"decoded {produced} frames, expected {len(wanted)}")


def read_for_decode(path: str | Path, frame_range: tuple[int, int | None] | None = None) -> Bitstream:
    """The bitstream of the file ``path`` for decoding ``frame_range`` (None: every frame):
    all of it, except that of a segmented file only the groups of the segments holding
    those frames are entropy-decoded (the others' chunks are checked, not parsed)."""
    data = read_bitstream_bytes(path)
    if frame_range is not None:
        head = decode_selected(data, ())
        if is_segmented(head.header):
            checked = check_header(head.codec, head.header, head.version)
            needed = needed_segments(checked.segments,
                                     resolve_frame_range(frame_range, checked.videos[0].num_frames))
            positions = check_group_names(checked.segments, group_names(data))
            return decode_selected(data, [positions[name] for segment in needed for name in segment.groups])
    return decode_bitstream(data)


def media_info(bitstream: Bitstream) -> VideoInfo:
    media = bitstream.header.get("media")
    try:
        return VideoInfo.from_dict(media)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise InvalidBitstreamError(f"bad media header: {error}") from None


def check_output_path(path: str | Path) -> None:
    """Fail now, not after the training, when the .nnc file ``path`` cannot be written."""
    path = Path(path)
    parent = path.absolute().parent
    if path.is_dir():
        raise MediaError(f"{path} is a folder; name the .nnc file to write")
    if not parent.exists():
        raise MediaError(f"output folder {parent} does not exist")
    if not parent.is_dir():
        raise MediaError(f"cannot write {path}: {parent} is not a folder")
    try:  # permissions, read-only mounts, full quotas: only trying tells (root ignores mode bits)
        handle, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise MediaError(f"cannot write to {parent}: {error.strerror or error}") from None


def encode_video(video: Video, output: str | Path, model: str = DEFAULT_CODEC,
                 options: CodecOptions | None = None) -> EncodeReport:
    """Fit ``model`` to ``video`` and write the .nnc file atomically (``options``: the codec's Options)."""
    codec = get_codec(model)()
    options = options or codec.Options()
    check_output_path(output)
    if getattr(options, "dry_run", False):
        return dry_run(codec, video, options)
    if options.checkpoint_path is None and options.checkpoint_interval > 0:
        options = replace(options, checkpoint_path=str(checkpoint_path_for(output)))
    if options.checkpoint_path is None:
        return _encode_video(codec, video, output, model, options)
    # Two encodes with the same checkpoint (the same output) would overwrite each
    # other's training state: the second is refused at once.
    lock = f"{options.checkpoint_path}.lock"
    with exclusive_lock(lock, f"another nnc encode to {output} is running (its checkpoint {options.checkpoint_path} "
                              f"is locked by {lock}); wait for it or choose another output"):
        return _encode_video(codec, video, output, model, options)


def dry_run(codec, video: Video, options: CodecOptions) -> PlanReport:
    """Calibrate a few training steps and return the plan; no checkpoint, no file."""
    if options.resume:
        raise NncError("--dry-run does not resume (drop --resume to see the plan)")
    segmented = getattr(options, "segment_frames", None) is not None
    if segmented:  # the plan of the first segment, with its share of the budget
        from .segment_fitting import SegmentsPlanReport, plan_segments

        tasks = plan_segments(video, options, codec.name)
        video, options = tasks[0].video, tasks[0].options
    try:
        codec.compress(video, replace(options, checkpoint_path=None, checkpoint_interval=0))
    except PlanOnly as plan:
        if segmented:
            return SegmentsPlanReport(dict(plan.plan, segments=len(tasks), segment_frames=video.info.num_frames))
        return PlanReport(plan.plan)
    raise NncError(f"--dry-run is not supported by --model {codec.name}")


def _verified_psnr(bitstream: Bitstream, video: Video, device: str) -> float:
    """Measure what the decoder will really produce: decode our own serialised bytes."""
    parsed = decode_bitstream(encode_bitstream(bitstream))
    psnr_values = []
    position = 0
    for frames in decode_frames(parsed, device=device):
        reference = video.frames[position : position + frames.shape[0]]
        psnr_values.append(psnr_per_frame(reference, frames, video.max_value))
        position += frames.shape[0]
    return mean_psnr(np.concatenate(psnr_values))


def _encoder_record(psnr: float, settings: dict) -> dict:
    # Recorded so `nnc info` can show it; part of the file, so counted in bpp.
    return {"nnc": __version__, "psnr_rgb": round(psnr, 4), "settings": settings}


def _encode_video(codec, video: Video, output: str | Path, model: str, options: CodecOptions) -> EncodeReport:
    started = time.perf_counter()
    segment_frames = getattr(options, "segment_frames", None)
    if segment_frames is not None:
        from .segment_fitting import fit_segments, remove_segment_files

        if options.resume and options.checkpoint_path is None:
            raise NncError("--resume needs checkpoints (do not disable them)")
        fitted = fit_segments(codec, video, options)
        bitstream = segmented_bitstream(model, video.info, fitted)
        settings, stats = dict(options.settings(), segment_frames=segment_frames), _segment_stats(fitted)
        psnr, decode_seconds = _verify_and_record(bitstream, video, options.device, settings)
    else:
        compressed = codec.compress(video, options)
        settings, stats = compressed.settings, compressed.stats
        header = {"media": video.info.to_dict(), "model": compressed.model_header}
        if compressed.rate_target is not None:
            bitstream, psnr, decode_seconds = _land_on_target(compressed, model, header, video, options.device)
        else:
            bitstream = Bitstream(codec=model, header=header, groups=compressed.groups)
            psnr, decode_seconds = _verify_and_record(bitstream, video, options.device, settings)
    file_bytes = write_bitstream_file(output, bitstream)
    if options.checkpoint_path is not None:  # the encode is complete: the checkpoints have served
        remove_checkpoint_files(options.checkpoint_path)
        if segment_frames is not None:
            remove_segment_files(options.checkpoint_path, len(fitted))
    elapsed = time.perf_counter() - started
    stats = dict(stats, verify_decode_seconds=decode_seconds)
    return EncodeReport(
        path=Path(output), file_bytes=file_bytes, bpp=bits_per_pixel(file_bytes, video.info), psnr=psnr,
        encode_seconds=elapsed, settings=settings, stats=stats, header=bitstream.header,
    )


def _verify_and_record(bitstream: Bitstream, video: Video, device: str, settings: dict) -> tuple[float, float]:
    """The verified PSNR, now in the header's encoder record, and the seconds decoding took."""
    started = time.perf_counter()
    psnr = _verified_psnr(bitstream, video, device)
    bitstream.header["encoder"] = _encoder_record(psnr, settings)
    return psnr, time.perf_counter() - started


def _segment_stats(fitted) -> dict:
    """A segmented encode's stats: the parameters of all networks, and each segment's own."""
    segments = [dict(compressed.stats, start=span.start, frames=len(span), settings=compressed.settings)
                for span, compressed in fitted]
    return {"model_size": sum(int(segment.get("model_size", 0)) for segment in segments), "segments": segments}


# While searching, the PSNR in the encoder record is not known yet: a stand-in of the same
# printed length.  The final header can still differ by a byte or two after zlib, so the
# file is measured again and the search repeated with that much less when it overshoots.
PSNR_STAND_IN = 99.9999
LANDING_ATTEMPTS = 4


def _land_on_target(compressed, model: str, header: dict, video: Video, device: str):
    """The bitstream requantized to land at or just under the rate target (see
    :mod:`nnc.codec.rate_target`: a precision of min-max tensors, or a multiplier on a
    rate-trained file's steps), its verified PSNR and the seconds spent decoding."""
    from .rate_target import land_on_target

    source = compressed.rate_target
    budget = source.target_bits
    decode_seconds = 0.0

    def file_bits(groups, record):
        settings = dict(compressed.settings, rate_target=record)
        trial = dict(header, encoder=_encoder_record(PSNR_STAND_IN, settings))
        return 8 * len(encode_bitstream(Bitstream(codec=model, header=trial, groups=groups)))

    for _ in range(LANDING_ATTEMPTS):
        landing = land_on_target(source, file_bits, budget)
        compressed.settings["rate_target"] = landing.record
        bitstream = Bitstream(codec=model, header=header, groups=landing.groups)
        header.pop("encoder", None)
        decode_started = time.perf_counter()
        psnr = _verified_psnr(bitstream, video, device)
        decode_seconds += time.perf_counter() - decode_started
        header["encoder"] = _encoder_record(psnr, compressed.settings)
        final_bits = 8 * len(encode_bitstream(bitstream))
        compressed.stats["rate_target"] = dict(landing.record, file_bits=final_bits,
                                               file_bpp=final_bits / source.pixels, evaluations=landing.evaluations)
        if final_bits <= source.target_bits:
            break
        budget -= final_bits - source.target_bits
    return bitstream, psnr, decode_seconds


def write_video(bitstream: Bitstream, output: str | Path, *, format: str | None = None, crf: int | None = None,
                device: str = "cpu", batch_size: int = 4,
                frame_range: tuple[int, int | None] | None = None) -> VideoInfo:
    """Decode a single-video file's bitstream into the video file ``output``; returns what was written."""
    info = media_info(bitstream)
    frames = resolve_frame_range(frame_range, info.num_frames)
    if frame_range is not None:
        info = replace(info, num_frames=len(frames))
    with VideoWriter(output, info, format=format, crf=crf) as writer:
        for batch in decode_frames(bitstream, device=device, batch_size=batch_size,
                                   frames=None if frame_range is None else frames):
            writer.write(batch)
    return info
