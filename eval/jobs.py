"""The jobs of a report: one (input, codec, rate point) each, cached, run in a process pool or on Ray.

A job is a small JSON-able dict, so it travels to another process or machine as is;
the worker loads the input itself (:meth:`InputSpec.load`), encodes, decodes what was
written, measures, deletes its files and returns one result dict.  Its cache key hashes
the input's content, the codec, the rate point and every setting that can change the
result, so re-running a report only runs the jobs whose key has no cached result.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .. import __version__
from ..errors import NncError
from ..fileio import write_atomically
from ..units import parse_count
from .baselines import ClassicalCodec, classical_codec

# The codec option each kind of nnc rate point sets (a codec's ``rate_option`` is its default kind).
RATE_OPTIONS = {"size": "size", "lambda": "rate_lambda", "quality": "quality"}
NNC_DEFAULT_RATES = {"size": (100e3, 375e3), "lambda": (1e-3, 3e-4), "quality": (1, 2, 3, 4, 5, 6)}
RATE_KINDS = ("size", "lambda", "quality", "crf", "file")
# Bumped whenever what a job measures changes (native-plane PSNR-YUV, payload bytes, encoder
# metadata off): results cached by an earlier version are then measured again, never mixed.
MEASUREMENT_VERSION = 2


@dataclass(frozen=True)
class CodecPlan:
    """A codec of the report: a classical baseline or a registered nnc model."""

    name: str
    classical: ClassicalCodec | None = None
    kind: str = "video"  # nnc models: their CodecKind's value ("video", "video-set", "image")
    nnc_rate_kind: str = "size"  # nnc models: the kind of rate point their rate option takes
    # existing .nnc files, measured as they are (no encoding): one point each, one curve
    bitstreams: tuple[str, ...] = ()

    @property
    def bitstream(self) -> str | None:
        """The first file of a bitstream curve (None: not a bitstream curve)."""
        return self.bitstreams[0] if self.bitstreams else None

    def bitstream_path(self, rate_value: str) -> str:
        """The file of the rate point ``rate_value`` (a file name) of a bitstream curve."""
        return next(path for path in self.bitstreams if Path(path).name == rate_value)

    @property
    def rate_kind(self) -> str:
        if self.classical is not None:
            return self.classical.rate_kind
        if self.bitstream is not None:
            return "file"
        return self.nnc_rate_kind

    @property
    def default_rates(self) -> tuple:
        if self.classical is not None:
            return self.classical.default_rates
        if self.bitstreams:
            return tuple(Path(path).name for path in self.bitstreams)
        return NNC_DEFAULT_RATES[self.rate_kind]

    def describe(self) -> str:
        if self.classical is not None:
            return self.classical.describe()
        if self.bitstreams:
            files = ", ".join(self.bitstreams)
            return (f"existing .nnc files ({files}), decoded and measured as they are; bpp from their size; "
                    "encoded earlier, so no encode time")
        knob = {"size": "model size in parameters", "lambda": "rate-distortion lambda",
                "quality": "quality index"}[self.rate_kind]
        return f"nnc {self.name} ({self.kind} codec); rate points are the {knob}; bpp from the .nnc file size"


def resolve_codec(name: str) -> CodecPlan:
    """``x264``, ``x265-veryslow``, ``svtav1-p8``, ``jpeg``, ``webp`` or a registered nnc model."""
    classical = classical_codec(name)
    if classical is not None:
        return CodecPlan(classical.name, classical=classical)
    from ..codec.registry import available_codecs, get_codec

    if name not in available_codecs():
        raise NncError(f"unknown codec {name!r}: use x264[-PRESET], x265[-PRESET], svtav1[-pN], jpeg, webp or an "
                       f"nnc model ({', '.join(available_codecs())})")
    codec = get_codec(name)
    rate_kind = next(kind for kind, option in RATE_OPTIONS.items() if option == codec.rate_option)
    return CodecPlan(name, kind=codec.kind.value, nnc_rate_kind=rate_kind)


def bitstream_plans(specs: Iterable[str]) -> list[CodecPlan]:
    """``--bitstream [CURVE=]PATH`` (repeatable) -> one curve per CURVE (a file without
    CURVE is a one-point curve named after the file), in the order first named."""
    curves: dict[str, list[str]] = {}
    for spec in specs:
        spec = str(spec)
        name, path = None, spec
        match = re.fullmatch(r"([\w.+-]+)=(.+)", spec)
        if match and not Path(spec).is_file():  # a file whose name holds "=" is still a file
            name, path = match[1], match[2]
        if not Path(path).is_file():
            raise NncError(f"--bitstream {spec}: no such file")
        name = name or Path(path).stem
        files = curves.setdefault(name, [])
        if Path(path).name in [Path(f).name for f in files]:
            raise NncError(f"--bitstream {spec}: curve {name} already has a file named {Path(path).name}")
        files.append(path)
    return [CodecPlan(name, kind="bitstream", bitstreams=tuple(files)) for name, files in curves.items()]


def _parse_number(text: str, kind: str, codec: str) -> float | int:
    value = text.strip().lower()
    if kind == "size":
        size = parse_count(value)
        if size is None or size < 1:
            raise NncError(f"--rates {codec}: {text!r} is not a model size (e.g. 100k, 375k, 1.5M)")
        return size
    if kind == "file":
        return value
    if kind == "lambda":
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise NncError(f"--rates {codec}: {text!r} is not a lambda (a number >= 0, e.g. 0.001)")
        return number
    if not re.fullmatch(r"\d+", value):
        raise NncError(f"--rates {codec}: {text!r} is not an integer {kind} value")
    return int(value)


def parse_rates(specs: Iterable[str], plans: list[CodecPlan]) -> dict[str, list[tuple[str, float | int]]]:
    """``--rates CODEC=[KIND:]V1,V2`` (repeatable) -> each codec's rate points; the rest get defaults.

    KIND is size, lambda or quality for nnc models (default: the model's own knob), crf for
    x264/x265/svtav1 and quality for jpeg/webp.
    """
    by_name = {plan.name: plan for plan in plans}
    aliases = {}
    for plan in plans:  # x265 means x265-medium, x265-444 x265-444-medium, svtav1 svtav1-p8
        if plan.classical is not None and plan.classical.family in ("x264", "x265", "svtav1"):
            for short in (plan.classical.family, f"{plan.classical.family}-444"):
                default = classical_codec(short)
                if default is not None and default.name == plan.name:
                    aliases[short] = plan.name
    chosen: dict[str, list] = {}
    for spec in specs:
        match = re.fullmatch(r"\s*([\w.+-]+)\s*=\s*(?:([a-z]+)\s*:)?\s*(.+)", spec)
        if not match:
            raise NncError(f"--rates {spec!r}: expected CODEC=V1,V2 (e.g. x265=22,27,32 or hnerv=100k,375k)")
        name = aliases.get(match[1].lower(), match[1].lower())
        if name not in by_name:
            raise NncError(f"--rates {spec!r}: {match[1]} is not among --codecs ({', '.join(by_name)})")
        plan = by_name[name]
        kind = match[2] or plan.rate_kind
        allowed = (plan.rate_kind,) if plan.classical is not None else ("size", "lambda", "quality")
        if kind not in allowed:
            raise NncError(f"--rates {spec!r}: {name} takes {' or '.join(allowed)} values")
        values = [_parse_number(v, kind, name) for v in match[3].split(",") if v.strip()]
        if not values:
            raise NncError(f"--rates {spec!r}: no values")
        if plan.classical is not None:
            low, high = plan.classical.rate_range
            for value in values:
                if not low <= value <= high:
                    raise NncError(f"--rates {spec!r}: {name} {kind} must be in {low}..{high}")
        chosen[name] = [(kind, v) for v in dict.fromkeys(values)]
    return {plan.name: chosen.get(plan.name, [(plan.rate_kind, v) for v in plan.default_rates]) for plan in plans}


def rate_label(kind: str, value) -> str:
    if kind == "size":
        return f"size {value / 1e6:g}M" if value >= 1e6 else f"size {value / 1e3:g}k"
    if kind == "lambda":
        return f"lambda {value:g}"
    if kind == "file":
        return str(value)
    return f"{kind} {value}"


def make_job(spec_dict: dict, input_hash: str, plan: CodecPlan, rate: tuple, settings: dict) -> dict:
    """One job: what to run, and the cache key of its result."""
    # Threads only split the work (they follow --jobs): a result stays valid for any count.
    keyed_settings = {k: v for k, v in settings.items() if k != "threads"}
    key_material = {"input": input_hash, "codec": plan.name, "rate": list(rate), "settings": keyed_settings,
                    "nnc": __version__, "measurement": MEASUREMENT_VERSION}
    bitstream = plan.bitstream_path(rate[1]) if plan.bitstreams else None
    if bitstream is not None:
        key_material["bitstream_sha256"] = hashlib.sha256(Path(bitstream).read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:32]
    return {"key": key, "input": spec_dict, "input_hash": input_hash, "codec": plan.name,
            "codec_kind": "classical" if plan.classical else plan.kind, "rate": list(rate), "settings": settings,
            **({"bitstream": bitstream} if bitstream else {})}


# -- the worker side -------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, NncError):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def run_job(job: dict) -> dict:
    """Run one job; never raises for a codec or input failure (the result says ``failed``)."""
    started = time.perf_counter()
    result = {"key": job["key"], "input": job["input"]["name"], "codec": job["codec"], "rate": job["rate"],
              "rate_label": rate_label(*job["rate"]), "settings": job["settings"]}
    try:
        threads = int(job["settings"].get("threads") or 1)
        import torch

        torch.set_num_threads(threads)
        from ..media import describe_colour
        from .datasets import InputSpec

        from .planes import reference_planes

        spec = InputSpec.from_dict(job["input"])
        video = spec.load()
        info = video.info
        reference = reference_planes(video, spec.source_planes())
        with tempfile.TemporaryDirectory(prefix="nnc-report-job-") as workdir:
            if job["codec_kind"] == "classical":
                from .baselines import run_baseline

                measured = run_baseline(video, classical_codec(job["codec"]), int(job["rate"][1]), Path(workdir),
                                        threads, reference)
            elif job["codec_kind"] == "bitstream":
                measured = _measure_bitstream(job, video, reference)
            else:
                measured = _run_nnc(job, video, Path(workdir), reference)
        pixels = info.width * info.height * info.num_frames
        result.update(measured, status="ok", bpp=measured["bytes"] * 8.0 / pixels, frames=info.num_frames,
                      settings=dict(job["settings"], **measured.get("settings", {})),
                      resolution=f"{info.width}x{info.height}", colour=describe_colour(info),
                      yuv_planes=reference.describe(),
                      encode_fps=info.num_frames / measured["encoding_time"] if measured.get("encoding_time") else None,
                      decode_fps=info.num_frames / measured["decoding_time"] if measured.get("decoding_time") else None,
                      job_seconds=time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 -- any failure of one job is reported, the others go on
        result.update(status="failed", error=_one_line(error), job_seconds=time.perf_counter() - started)
    return result


def _byte_layout(path: Path) -> dict:
    """Payload (the entropy-coded tensor data) versus side info, header and container, from the bitstream layer."""
    from ..bitstream import inspect_bitstream

    layout = inspect_bitstream(Path(path).read_bytes())
    return {"payload": sum(g["payload_bytes"] for g in layout["groups"]),
            "side_info": sum(g["side_info_bytes"] for g in layout["groups"]),
            "header": layout["header_bytes"], "container": layout["container_bytes"]}


def _measure_bitstream(job: dict, video, reference) -> dict:
    from ..bitstream import read_bitstream_file
    from ..codec.files import decode_to_frames
    from ..metrics import compare

    path = Path(job["bitstream"])
    bitstream = read_bitstream_file(path)
    started = time.perf_counter()
    decoded = decode_to_frames(path, device="cpu").frames
    decoding_time = time.perf_counter() - started
    if decoded.shape != video.frames.shape:
        raise NncError(f"{path.name} decodes to {decoded.shape}, the input is {video.frames.shape}")
    metrics = compare(video.frames, decoded, video.max_value)
    metrics.update(reference.measure(decoded, video.info))
    layout = _byte_layout(path)
    encoder = bitstream.header.get("encoder") or {}
    return dict(metrics, bytes=path.stat().st_size, payload_bytes=layout["payload"], byte_layout=layout,
                encoding_time=None, decoding_time=decoding_time,
                settings=dict(encoder.get("settings") or {}, codec=bitstream.codec, bitstream=str(path),
                              encoder_psnr=encoder.get("psnr_rgb")))


def _run_nnc(job: dict, video, workdir: Path, reference) -> dict:
    from ..codec.base import resolve_device
    from ..codec.files import decode_to_frames, encode_media, make_options
    from ..metrics import compare

    settings = job["settings"]
    kind, value = job["rate"]
    options = make_options(
        job["codec"], **{RATE_OPTIONS[kind]: int(value) if kind == "quality" else value},
        optional=dict(epochs=settings.get("epochs"), device=settings.get("device", "auto"),
                      seed=settings.get("seed", 0), show_progress=False, checkpoint_interval=0),
    )
    output = workdir / "out.nnc"
    report = encode_media(video, output, job["codec"], options)
    started = time.perf_counter()
    decoded = decode_to_frames(output, device=str(resolve_device(options.device))).frames
    decoding_time = time.perf_counter() - started
    if decoded.shape != video.frames.shape:
        raise NncError(f"{job['codec']} decoded {decoded.shape}, expected {video.frames.shape}")
    metrics = compare(video.frames, decoded, video.max_value)
    metrics.update(reference.measure(decoded, video.info))  # the planes `nnc decode` would write
    layout = _byte_layout(output)
    return dict(metrics, bytes=output.stat().st_size, payload_bytes=layout["payload"], byte_layout=layout,
                encoding_time=report.encode_seconds,
                decoding_time=decoding_time,
                settings=dict(report.settings or {}, encoder_psnr=round(float(report.psnr), 4),
                              model_size=(report.stats or {}).get("model_size")))


# -- the cache -------------------------------------------------------------------------


def cache_path(cache_dir: Path, job: dict) -> Path:
    return cache_dir / f"{job['key']}.json"


def load_cached(cache_dir: Path, job: dict) -> dict | None:
    """A cached successful result of ``job``, or None (failed jobs are not cached: they run again)."""
    path = cache_path(cache_dir, job)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("key") != job["key"] or result.get("status") != "ok":
        return None
    return result


def store_cached(cache_dir: Path, result: dict) -> None:
    """Write atomically: an interrupted sweep never leaves a half-written cache entry."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(cache_dir / f"{result['key']}.json", json.dumps(result, indent=1, default=str).encode())


# -- running them ----------------------------------------------------------------------


def _local_results(jobs: list[dict], workers: int, on_start: Callable[[int], None]) -> Iterator[dict]:
    # spawn: a fresh interpreter per worker (fork would copy torch's threads and locks).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = {}
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < workers:
                job = queue.pop(0)
                pending[pool.submit(run_job, job)] = job
            on_start(len(pending))
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    yield future.result()
                except Exception as error:  # the worker died (killed, out of memory): report, go on
                    yield {"key": job["key"], "input": job["input"]["name"], "codec": job["codec"],
                           "rate": job["rate"], "rate_label": rate_label(*job["rate"]), "settings": job["settings"],
                           "status": "failed", "error": f"worker died: {_one_line(error)}"}


def _ray_results(jobs: list[dict], address: str | None, on_start: Callable[[int], None]) -> Iterator[dict]:
    from ..codec.ray_backend import connect_ray  # here: the codec package imports torch

    ray, started_here = connect_ray(address)
    remote = ray.remote(run_job)
    references = {}
    try:
        for job in jobs:
            gpu = job["codec_kind"] != "classical" and job["settings"].get("device") == "cuda"
            threads = int(job["settings"].get("threads") or 1)
            references[remote.options(num_cpus=threads, num_gpus=1 if gpu else 0, max_retries=0).remote(job)] = job
        while references:
            on_start(len(references))
            done, _ = ray.wait(list(references), num_returns=1)
            job = references.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as error:  # noqa: BLE001 -- a task that died is reported like a failed job
                result = {"key": job["key"], "input": job["input"]["name"], "codec": job["codec"], "rate": job["rate"],
                          "rate_label": rate_label(*job["rate"]), "settings": job["settings"], "status": "failed",
                          "error": f"Ray task died: {_one_line(error)}"}
            yield result
    finally:
        for reference in references:  # only after an interrupt (or a consumer that stopped early)
            ray.cancel(reference, force=True)
        if started_here:  # an instance this report started ends with it
            ray.shutdown()


def run_jobs(jobs: list[dict], *, backend: str = "local", workers: int = 1, address: str | None = None,
             progress: bool = True) -> Iterator[dict]:
    """Yield each job's result as it finishes, with a progress bar (done, running, failed, ETA)."""
    from tqdm import tqdm

    if not jobs:
        return
    bar = tqdm(total=len(jobs), desc="report jobs", unit="job", disable=not progress, dynamic_ncols=True)
    counts = {"running": 0, "failed": 0}

    def on_start(running: int) -> None:
        counts["running"] = running
        bar.set_postfix(running=running, failed=counts["failed"], refresh=True)

    if backend == "local":
        results = _local_results(jobs, workers, on_start)
    elif backend == "ray":
        results = _ray_results(jobs, address, on_start)
    else:
        raise NncError(f"unknown backend {backend!r} (use local or ray)")
    try:
        for result in results:
            if result.get("status") != "ok":
                counts["failed"] += 1
                bar.write(f"nnc: job failed: {result['input']} {result['codec']} {result['rate_label']}: "
                          f"{result.get('error')}")
            counts["running"] = max(0, counts["running"] - 1)
            bar.set_postfix(running=counts["running"], failed=counts["failed"], refresh=False)
            bar.update(1)
            yield result
    finally:
        bar.close()
