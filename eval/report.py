"""``nnc report``: run every (input, codec, rate point), then write results, tables, plots and index.html.

Layout of a report folder:

* ``results/<codec>.json``: the dataset curve (plain mean over inputs per rate point,
  as the papers average over videos); ``results/<input>/<codec>.json``: per input. Both
  in CompressAI's results format with ``meta``.
* ``summary.csv``: every job, one row each (failed ones with their error).
* ``bd.csv`` / ``bd.json``: BD-rate and BD-PSNR against the anchor, per input and overall
  (overall = mean of the per-input values, as in the JVET common test conditions).
* ``plots/*.png|svg`` and ``index.html`` (self-contained: plots inlined as PNG).
* ``cache/``: one JSON per finished job; a re-run only runs the jobs missing there.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import MediaError, NncError
from .bdrate import bd_psnr, bd_rate
from .datasets import InputSpec, resolve_inputs
from .jobs import (CodecPlan, bitstream_plans, load_cached, make_job, parse_rates, rate_label, resolve_codec, run_jobs,
                   store_cached)
from .plots import METRIC_LABELS, Curve, overlay_warnings, overlays_for, rd_plot, read_overlay

METRICS = ("psnr-rgb", "psnr-y", "psnr-yuv", "ms-ssim-rgb")
PLOTTED_METRICS = ("psnr-rgb", "psnr-y", "psnr-yuv", "ms-ssim-rgb")  # MS-SSIM drawn in dB
RESULT_KEYS = ("bpp", "psnr-rgb", "psnr-y", "psnr-u", "psnr-v", "psnr-yuv", "ms-ssim-rgb", "ms-ssim-db", "bytes",
               "payload_bytes", "encoding_time", "decoding_time", "encode_fps", "decode_fps")
# (column, metric, function): BD-rate on each quality metric, BD-PSNR on RGB PSNR.
BD_COLUMNS = (("bd-rate psnr-rgb (%)", "psnr-rgb", bd_rate), ("bd-psnr psnr-rgb (dB)", "psnr-rgb", bd_psnr),
              ("bd-rate psnr-y (%)", "psnr-y", bd_rate), ("bd-rate psnr-yuv (%)", "psnr-yuv", bd_rate),
              ("bd-rate ms-ssim-rgb (%)", "ms-ssim-rgb", bd_rate))
COLOUR_NOTE = ("YUV sources are converted to RGB as ffmpeg does by default (swscale, bicubic chroma), with the "
               "stream's tagged matrix and range, BT.601 limited range when untagged (UVG); RGB sources are used "
               "as they are. Classical video codecs get a YUV clip's own planes when their pixel format is the "
               "clip's, else the RGB frames converted with the same matrix and range (RGB sources: BT.601 limited "
               "range). PSNR-RGB and MS-SSIM are computed on RGB (PSNR per frame, mean over frames). PSNR-Y, -U, "
               "-V and PSNR-YUV (6:1:1) are computed on the source's own planes as stored (limited range, 4:2:0, "
               "peak 2^bits - 1, as ffmpeg's psnr filter), where each codec's output is converted to the source's "
               "pixel format as nnc decode writes it, unless the codec decodes to that format itself; inputs that "
               "only exist in RGB here (images, bunny CPU tier, crops) use the planes made from their RGB, which "
               "are the planes the video baselines encode.")
MEASUREMENT_NOTE = {"bpp": "file size in bits / (width x height x frames)",
                    "payload_bytes": "bytes of the coded data without container: the elementary stream (Annex-B "
                                     "NAL units, AV1 OBUs) for video codecs, JPEG without APPn/COM, WebP's VP8/VP8L "
                                     "chunk, and for nnc the entropy-coded tensor payloads (side info, header and "
                                     "container are in byte_layout)",
                    "encoder_metadata": "x265 info=0; x264's settings SEI removed (filter_units=remove_types=6)",
                    "times": "wall-clock seconds of one job (encode: from frames in memory to the written file; "
                             "decode: file to RGB frames), on the machine below while it was shared (see "
                             "machine_load)"}


def dataset_title(dataset: str, inputs: list) -> str:
    """A title from the dataset's name (never an absolute path): ``kodak (24 images)``."""
    name = dataset if dataset in ("uvg", "bunny-cpu") else (Path(dataset).stem or Path(dataset).name)
    kinds = {spec.kind for spec in inputs}
    if len(inputs) > 1:
        return f"{name} ({len(inputs)} {'images' if kinds == {'image'} else 'inputs'})"
    return name


def machine_load() -> dict:
    """How busy the machine was: timings from a shared machine are not a speed benchmark."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return {"cpus": os.cpu_count(), "load_average": None, "idle": None}
    cpus = os.cpu_count() or 1
    return {"cpus": cpus, "load_average_1min": round(one, 2), "load_average_5min": round(five, 2),
            "idle": five < 0.25 * cpus}


@dataclass
class ReportSettings:
    dataset: str
    output: Path
    codecs: list[str]
    rates: list[str] = field(default_factory=list)
    root: Path | None = None
    frames: int | None = None
    crop: tuple[int, int] | None = None
    epochs: int | None = None
    device: str = "auto"
    seed: int = 0
    anchor: str = "x265-medium"
    jobs: int = 1
    threads: int | None = None
    backend: str = "local"
    address: str | None = None
    overlays: list[Path] = field(default_factory=list)
    # existing .nnc files measured as they are: "PATH" (a one-point curve) or "CURVE=PATH"
    bitstreams: list[str] = field(default_factory=list)
    bpp_axis: str = "log"  # "log" (default: nnc points at several bpp would squash the rest) or "linear"
    per_input_plots: bool = True  # with many inputs (Kodak's 24), the average plots may be enough
    progress: bool = True
    command: str | None = None


@dataclass
class ReportOutcome:
    output: Path
    jobs_total: int
    jobs_cached: int
    jobs_run: int
    failed: list[dict]
    skipped: list[str]
    files: list[Path]


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise MediaError(f"-o {output}: exists and is not a folder")
    parent = output.absolute().parent
    if not parent.is_dir():
        raise MediaError(f"-o {output}: folder {parent} does not exist")


def _device_threads(settings: ReportSettings) -> int:
    if settings.threads:
        return settings.threads
    # Split the machine's cores between the jobs that run at once (local pool).
    return max(1, (os.cpu_count() or 1) // max(1, settings.jobs)) if settings.backend == "local" else 1


def plan_jobs(settings: ReportSettings, inputs: list[InputSpec], hashes: dict[str, str],
              plans: list[CodecPlan]) -> tuple[list[dict], list[str]]:
    rates = parse_rates(settings.rates, plans)
    threads = _device_threads(settings)
    jobs, skipped = [], []
    for plan in plans:
        if plan.classical is not None:
            job_settings = {"threads": threads}
        elif plan.bitstream is not None:
            if len(inputs) != 1:
                skipped.append(f"{plan.name}: a .nnc file holds one input, this report has {len(inputs)}")
                continue
            job_settings = {"threads": threads}
        else:
            if plan.kind == "video-set":
                skipped.append(f"{plan.name}: multi-video (video-set) codecs are not run by reports")
                continue
            if plan.kind == "image":
                try:
                    from ..codec import image_api  # noqa: F401
                except ImportError:
                    skipped.append(f"{plan.name}: image codec, but nnc.codec.image_api is not available")
                    continue
            job_settings = {"epochs": settings.epochs, "device": settings.device, "seed": settings.seed,
                            "threads": threads}
        for spec in inputs:
            if plan.kind == "image" and plan.classical is None and spec.kind != "image":
                skipped.append(f"{plan.name} on {spec.name}: image codec, the input is a video")
                continue
            for rate in rates[plan.name]:
                jobs.append(make_job(spec.to_dict(), hashes[spec.name], plan, rate, job_settings))
    return jobs, skipped


def run_report(settings: ReportSettings) -> ReportOutcome:
    output = Path(settings.output)
    _check_output(output)
    plans = []
    for name in settings.codecs:
        plan = resolve_codec(name)
        if plan.name not in [p.name for p in plans]:
            plans.append(plan)
    for plan in bitstream_plans(settings.bitstreams):
        if plan.name in [p.name for p in plans]:
            raise NncError(f"--bitstream {plan.bitstream}: the name {plan.name} is already a codec of this report")
        plans.append(plan)
    if not plans:
        raise NncError("--codecs: name at least one codec")
    anchor = resolve_codec(settings.anchor).name
    overlays = [curve for path in settings.overlays for curve in read_overlay(Path(path))]
    inputs = resolve_inputs(settings.dataset, settings.root, settings.frames, settings.crop)
    for spec in inputs:
        spec.check()
    hashes = {spec.name: spec.content_hash() for spec in inputs}
    jobs, skipped = plan_jobs(settings, inputs, hashes, plans)

    output.mkdir(exist_ok=True)
    load_at_start = machine_load()
    cache_dir = output / "cache"
    results, pending = [], []
    for job in jobs:
        cached = load_cached(cache_dir, job)
        if cached is None:
            pending.append(job)
        else:
            results.append(cached)
    if settings.progress:
        print(f"nnc report: {len(jobs)} jobs, {len(jobs) - len(pending)} cached, {len(pending)} to run", file=sys.stderr)
    failed = []
    for result in run_jobs(pending, backend=settings.backend, workers=settings.jobs, address=settings.address,
                           progress=settings.progress):
        if result.get("status") == "ok":
            store_cached(cache_dir, result)
            results.append(result)
        else:
            failed.append(result)
    files = write_report(output, settings, inputs, hashes, plans, anchor, results, failed, skipped, overlays,
                         {"at_start": load_at_start, "at_end": machine_load(), "jobs_run_here": len(pending)})
    return ReportOutcome(output, len(jobs), len(jobs) - len(pending), len(pending), failed, skipped, files)


# -- assembling the results ------------------------------------------------------------


def _rate_order(plan_rates: list, result: dict) -> int:
    try:
        return plan_rates.index(tuple(result["rate"]))
    except ValueError:
        return len(plan_rates)


def _curve_results(rows: list[dict]) -> dict:
    """CompressAI's ``results``: lists over rate points, sorted by bpp."""
    rows = sorted(rows, key=lambda r: r["bpp"])
    return {key: [row.get(key) for row in rows] for key in RESULT_KEYS}


def _averaged(per_input: dict[str, list[dict]], rate_points: list) -> list[dict]:
    """Per rate point, the plain mean over inputs; only points every input has."""
    averaged = []
    for rate in rate_points:
        rows = []
        for input_rows in per_input.values():
            match = [r for r in input_rows if tuple(r["rate"]) == tuple(rate)]
            if not match:
                break
            rows.append(match[0])
        else:
            point = {"rate": list(rate)}
            for key in RESULT_KEYS:
                values = [r.get(key) for r in rows]
                point[key] = None if any(v is None for v in values) else sum(values) / len(values)
            averaged.append(point)
    return averaged


def _bd_row(anchor_rows: list[dict], test_rows: list[dict]) -> dict:
    row = {}
    for column, metric, function in BD_COLUMNS:
        a = [(r["bpp"], r.get(metric)) for r in anchor_rows if r.get(metric) is not None]
        t = [(r["bpp"], r.get(metric)) for r in test_rows if r.get(metric) is not None]
        if not a or not t:
            row[column] = None
            if metric == "ms-ssim-rgb":
                row.setdefault("notes", []).append("ms-ssim-rgb not measured (frames under 161 pixels)")
            continue
        try:
            row[column] = function([p[0] for p in a], [p[1] for p in a], [p[0] for p in t], [p[1] for p in t])
        except NncError as error:
            row[column] = None
            row.setdefault("notes", []).append(f"{column}: {str(error).removeprefix('BD: ')}")
    return row


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_report(output: Path, settings: ReportSettings, inputs: list[InputSpec], hashes: dict, plans: list[CodecPlan],
                 anchor: str, results: list[dict], failed: list[dict], skipped: list[str],
                 overlays: list[Curve], load: dict | None = None) -> list[Path]:
    import numpy
    import torch

    from ..codec.base import machine_description
    from .baselines import encoder_versions
    from .html import write_index

    # Everything below is regenerated from the cache: drop what an earlier run wrote.
    for folder in ("results", "plots"):
        shutil.rmtree(output / folder, ignore_errors=True)
    files: list[Path] = []
    rates = parse_rates(settings.rates, plans)
    by_codec: dict[str, dict[str, list[dict]]] = {}
    for result in results:
        by_codec.setdefault(result["codec"], {}).setdefault(result["input"], []).append(result)
    input_meta = {}
    for spec in inputs:
        rows = [r for per in by_codec.values() for r in per.get(spec.name, [])]
        first = rows[0] if rows else {}
        input_meta[spec.name] = {"source": spec.describe(), "frames": first.get("frames"),
                                 "resolution": first.get("resolution"), "colour": first.get("colour"),
                                 "sha256": hashes[spec.name]}
    machine = machine_description()
    libraries = dict(encoder_versions(), torch=torch.__version__, numpy=numpy.__version__, nnc=__version__)
    load = load or {"at_start": machine_load()}
    start_load = load.get("at_start") or {}
    # Idle only if nothing else ran: cached results were measured at another time, under unknown load.
    idle = bool(start_load.get("idle"))
    load = dict(load, idle=idle, note="load averages of the whole machine when this report started and ended; "
                "timings from a busy machine are slower than on an idle one; results taken from the cache were "
                "timed when they ran")
    title = dataset_title(settings.dataset, inputs)
    base_meta = {"dataset": settings.dataset, "title": title, "nnc": __version__, "device": settings.device,
                 "machine": machine, "machine_load": load, "machine_idle": idle, "libraries": libraries,
                 "colour_conversion": COLOUR_NOTE, "bpp": MEASUREMENT_NOTE["bpp"], "measurements": MEASUREMENT_NOTE,
                 "command": settings.command}

    curves_average: list[Curve] = []
    curves_by_input: dict[str, list[Curve]] = {spec.name: [] for spec in inputs}
    averaged_by_codec: dict[str, list[dict]] = {}
    for plan in plans:
        per_input = {name: sorted(rows, key=lambda r: _rate_order(rates[plan.name], r))
                     for name, rows in by_codec.get(plan.name, {}).items()}
        for name, rows in per_input.items():
            meta = dict(base_meta, input=name, **input_meta[name],
                        rate_points=[r["rate_label"] for r in sorted(rows, key=lambda r: r["bpp"])],
                        settings=[r.get("settings") for r in sorted(rows, key=lambda r: r["bpp"])])
            document = {"name": plan.name, "description": f"{plan.describe()}; input {name}",
                        "results": _curve_results(rows), "meta": meta}
            path = output / "results" / _safe(name) / f"{_safe(plan.name)}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(document, indent=2, default=str) + "\n")
            files.append(path)
            curve = document["results"]
            curves_by_input[name].append(Curve(plan.name, curve["bpp"], {m: curve[m] for m in METRICS}, name))
        if len(per_input) == len(inputs) and per_input:
            averaged = _averaged(per_input, rates[plan.name])
            if averaged:
                averaged_by_codec[plan.name] = averaged
                frames = [input_meta[n]["frames"] for n in per_input]
                meta = dict(base_meta, inputs=input_meta, frames=frames,
                            resolution=sorted({str(input_meta[n]["resolution"]) for n in per_input}),
                            rate_points=[rate_label(*p["rate"]) for p in sorted(averaged, key=lambda p: p["bpp"])],
                            averaging="plain mean over inputs at each rate point (times: mean per input)",
                            settings=next(iter(per_input.values()))[0].get("settings"))
                document = {"name": plan.name, "description": f"{plan.describe()}; mean over {len(per_input)} inputs",
                            "results": _curve_results(averaged), "meta": meta}
                path = output / "results" / f"{_safe(plan.name)}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(document, indent=2, default=str) + "\n")
                files.append(path)
                curve = document["results"]
                curves_average.append(Curve(plan.name, curve["bpp"], {m: curve[m] for m in METRICS}))

    # summary.csv: every job.
    summary = output / "summary.csv"
    columns = ["input", "codec", "rate", "status", *RESULT_KEYS, "error"]
    with open(summary, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in sorted(results + failed, key=lambda r: (r["input"], r["codec"], r.get("bpp") or 0)):
            writer.writerow([row["input"], row["codec"], row["rate_label"], row.get("status"),
                             *[_fmt(row.get(k)) for k in RESULT_KEYS], row.get("error", "")])
    files.append(summary)

    # BD tables against the anchor.
    bd_rows = []
    anchor_data = {name: rows for name, rows in by_codec.get(anchor, {}).items()}
    anchor_listed = anchor in [plan.name for plan in plans]
    for plan in plans:
        if plan.name == anchor or not anchor_listed:
            continue
        per_input_rows = []
        for spec in inputs:
            test_rows = by_codec.get(plan.name, {}).get(spec.name)
            anchor_rows = anchor_data.get(spec.name)
            if not test_rows or not anchor_rows:
                row = {column: None for column, _, _ in BD_COLUMNS}
                row["notes"] = ["no results for " + ("the anchor" if not anchor_rows else plan.name)]
            else:
                row = _bd_row(anchor_rows, test_rows)
            row.update(input=spec.name, codec=plan.name)
            per_input_rows.append(row)
        overall = {"input": "overall (mean over inputs)", "codec": plan.name}
        for column, _, _ in BD_COLUMNS:
            values = [r[column] for r in per_input_rows]
            overall[column] = None if any(v is None for v in values) else sum(values) / len(values)
        bd_rows.extend(per_input_rows if len(inputs) > 1 else [])
        if len(inputs) == 1:
            overall = dict(per_input_rows[0], input=inputs[0].name)
        bd_rows.append(overall)
    bd_csv = output / "bd.csv"
    with open(bd_csv, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["anchor", "codec", "input", *[c for c, _, _ in BD_COLUMNS], "notes"])
        for row in bd_rows:
            writer.writerow([anchor, row["codec"], row["input"], *[_fmt(row[c]) for c, _, _ in BD_COLUMNS],
                             "; ".join(row.get("notes", []))])
    bd_json = output / "bd.json"
    bd_json.write_text(json.dumps({"anchor": anchor, "method": "Bjontegaard, piecewise cubic (PCHIP) over log rate, "
                                   "integrated over the overlap; overall = mean of per-input values",
                                   "rows": bd_rows}, indent=2) + "\n")
    files += [bd_csv, bd_json]

    # Plots: per input, plus the dataset average when there are several inputs.
    plots = []
    targets = [(name, curves_by_input[name], overlays_for(overlays, name)) for name in curves_by_input
               if settings.per_input_plots]
    if len(inputs) == 1:
        name = inputs[0].name
        targets = [(name, curves_by_input[name], overlays_for(overlays, name) + overlays_for(overlays, None))]
    else:
        targets.append(("average", curves_average, overlays_for(overlays, None)))
    for name, curves, extra in targets:
        for metric in PLOTTED_METRICS:
            label = METRIC_LABELS[metric].split(" (")[0]
            where = f"{title}, mean over inputs" if name == "average" else name
            written = rd_plot(curves + extra, metric, f"{label} vs bpp: {where}",
                              output / "plots" / f"rd_{metric}_{_safe(name)}", settings.bpp_axis)
            if written:
                plots.append({"input": name, "metric": metric, "png": written[0], "svg": written[1],
                              "bpp_axis": settings.bpp_axis})
                files += written

    # Published curves: BD-rate of every measured codec against each, and why they may not compare.
    dataset_curves = curves_by_input[inputs[0].name] if len(inputs) == 1 else curves_average
    dataset_overlays = overlays_for(overlays, None) + (overlays_for(overlays, inputs[0].name) if len(inputs) == 1
                                                       else [])
    frames = [input_meta[spec.name]["frames"] or 0 for spec in inputs]
    warnings = overlay_warnings(dataset_overlays, title.split(" (")[0], frames)
    overlay_bd = []
    for published in dataset_overlays:
        for curve in dataset_curves:
            row = {"overlay": published.name, "overlay_file": published.source.get("file"), "codec": curve.name}
            for metric in ("psnr-rgb", "ms-ssim-rgb"):
                a = [(b, v) for b, v in zip(published.bpp, published.metrics.get(metric) or []) if v is not None]
                t = [(b, v) for b, v in zip(curve.bpp, curve.metrics.get(metric) or []) if v is not None]
                try:
                    row[f"bd-rate {metric} (%)"] = bd_rate(*zip(*a), *zip(*t)) if a and t else None
                except NncError as error:
                    row[f"bd-rate {metric} (%)"] = None
                    row.setdefault("notes", []).append(f"{metric}: {str(error).removeprefix('BD: ')}")
            overlay_bd.append(row)
    if overlay_bd or warnings:
        document = json.loads(bd_json.read_text())
        document.update(against_overlays=overlay_bd, overlay_warnings=warnings)
        bd_json.write_text(json.dumps(document, indent=2) + "\n")

    failures = [f"{r['input']} {r['codec']} {r['rate_label']}: {r.get('error')}" for r in failed]
    index = write_index(output, settings=settings, anchor=anchor, plans=plans, rates=rates, inputs=input_meta,
                        machine=machine, bd_rows=bd_rows, bd_columns=[c for c, _, _ in BD_COLUMNS], plots=plots,
                        results=sorted(results, key=lambda r: (r["input"], r["codec"], r["bpp"])),
                        failures=failures, skipped=skipped, files=files, overlays=overlays,
                        colour_note=COLOUR_NOTE, version=__version__, title=title, libraries=libraries, load=load,
                        overlay_bd=overlay_bd, overlay_warnings=warnings, measurement_note=MEASUREMENT_NOTE)
    files.append(index)
    return files


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value
