"""Rate-distortion plots (matplotlib, Agg) and the published curves that can be overlaid on them.

Overlays are read from CompressAI's results JSON (``name``, ``results.bpp``,
``results.psnr-rgb`` ...; nnc's own results files are in that format too) or from the
CSV tables of ``shared/reference/uvg-results`` (a ``Method,video,...,bpp,PSNR,ms-ssim``
table, or NeRV's table whose first column labels blocks of rows by dataset).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NncError

METRIC_LABELS = {"psnr-rgb": "PSNR-RGB (dB)", "psnr-y": "PSNR-Y (dB)", "psnr-yuv": "PSNR-YUV 6:1:1 (dB)",
                 "ms-ssim-rgb": "MS-SSIM RGB (dB)"}
# Published result folders that do not say what they were measured on inside the files.
KNOWN_REFERENCE_SETS = {
    "kodak-results": {"dataset": "kodak", "inputs": 24, "frames": [1] * 24},  # CompressAI: all 24 Kodak images
    "uvg-results": {"dataset": "uvg", "inputs": 7},  # the 7 UVG sequences (per-video rows name theirs)
}
_CSV_COLUMNS = {"bpp": "bpp", "psnr": "psnr-rgb", "psnr-rgb": "psnr-rgb", "ms-ssim": "ms-ssim-rgb",
                "ms-ssim-rgb": "ms-ssim-rgb", "msssim": "ms-ssim-rgb"}


@dataclass
class Curve:
    """One line of a plot: points sorted by bpp, with any of the metrics."""

    name: str
    bpp: list[float]
    metrics: dict[str, list[float | None]] = field(default_factory=dict)
    video: str | None = None  # None: a dataset-level curve; else the input it belongs to
    published: bool = False  # read from an --overlay file, not measured by this report: drawn dashed
    source: dict = field(default_factory=dict)  # overlays: what the file says it measured (dataset, inputs, frames)

    def sorted(self) -> "Curve":
        order = sorted(range(len(self.bpp)), key=lambda i: self.bpp[i])
        return Curve(self.name, [self.bpp[i] for i in order],
                     {m: [v[i] for i in order] for m, v in self.metrics.items()}, self.video, self.published,
                     self.source)


def _declared_source(path: Path, meta: dict | None) -> dict:
    """Dataset, input count and frames an overlay file declares (its meta, or its folder's known set)."""
    source = dict(KNOWN_REFERENCE_SETS.get(path.parent.name, {}))
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("dataset"):
        source["dataset"] = str(meta["dataset"])
    frames = meta.get("frames")
    if isinstance(frames, int):
        frames = [frames]
    if isinstance(frames, list) and all(isinstance(f, int) for f in frames):
        source["frames"], source["inputs"] = frames, len(frames)
    if isinstance(meta.get("inputs"), dict):
        source["inputs"] = len(meta["inputs"])
    source["file"] = path.name
    return source


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value else None


def _overlay_json(path: Path) -> list[Curve]:
    try:
        data = json.loads(path.read_text())
        results = data["results"]
        bpp = [float(v) for v in results["bpp"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NncError(f"--overlay {path}: not a CompressAI results JSON ({type(error).__name__}: {error})") from None
    metrics = {}
    for key, metric in (("psnr-rgb", "psnr-rgb"), ("psnr", "psnr-rgb"), ("ms-ssim-rgb", "ms-ssim-rgb"),
                        ("ms-ssim", "ms-ssim-rgb"), ("psnr-yuv", "psnr-yuv")):
        values = results.get(key)
        if isinstance(values, list) and len(values) == len(bpp) and metric not in metrics:
            metrics[metric] = [_number(v) for v in values]
    if not metrics:
        raise NncError(f"--overlay {path}: no psnr-rgb or ms-ssim-rgb results")
    name = str(data.get("name") or path.stem)
    return [Curve(name, bpp, metrics, published=True, source=_declared_source(path, data.get("meta"))).sorted()]


def _overlay_csv(path: Path) -> list[Curve]:
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise NncError(f"--overlay {path}: cannot read it as CSV ({error})") from None
    if not rows:
        raise NncError(f"--overlay {path}: empty")
    header = [cell.strip().lower() for cell in rows[0]]
    columns = {_CSV_COLUMNS[name]: index for index, name in enumerate(header) if name in _CSV_COLUMNS}
    if "bpp" not in columns or len(columns) < 2:
        raise NncError(f"--overlay {path}: expected columns bpp and PSNR and/or ms-ssim")
    method = header.index("method") if "method" in header else None
    video = header.index("video") if "video" in header else None
    # NeRV's table: no Method column; the first cell labels a block of rows (UVG, MCL, ...).
    block_label = rows[0][0].strip() if method is None and header[0] not in _CSV_COLUMNS else None
    curves: dict[tuple, Curve] = {}
    for row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        if block_label is not None and row[0].strip():
            block_label = row[0].strip()
        bpp = _number(row[columns["bpp"]]) if columns["bpp"] < len(row) else None
        if bpp is None or bpp <= 0:
            continue
        name = row[method].strip() if method is not None else path.stem
        if block_label is not None:
            name = f"{path.stem} ({block_label})"
        clip = row[video].strip() if video is not None else None
        clip = None if clip in (None, "", "all") else clip
        source = _declared_source(path, None)
        if clip is not None:
            source = {"dataset": source.get("dataset", path.stem), "inputs": 1, "file": path.name}
        curve = curves.setdefault((name, clip), Curve(name, [], {m: [] for m in columns if m != "bpp"}, clip, True,
                                                      source))
        curve.bpp.append(bpp)
        for metric in curve.metrics:
            index = columns[metric]
            curve.metrics[metric].append(_number(row[index]) if index < len(row) else None)
    if not curves:
        raise NncError(f"--overlay {path}: no rows with a bpp value")
    return [curve.sorted() for curve in curves.values()]


def read_overlay(path: Path) -> list[Curve]:
    path = Path(path)
    if not path.is_file():
        raise NncError(f"--overlay {path}: no such file")
    return _overlay_csv(path) if path.suffix.lower() == ".csv" else _overlay_json(path)


def overlays_for(curves: list[Curve], input_name: str | None) -> list[Curve]:
    """The overlay curves that belong on a plot of ``input_name`` (None: the dataset average)."""
    if input_name is None:
        return [c for c in curves if c.video is None]
    wanted = input_name.lower().replace("_", "")
    return [c for c in curves if c.video is not None and c.video.lower().replace("_", "") == wanted]


def overlay_warnings(curves: list[Curve], dataset: str, frames: list) -> list[str]:
    """Why a published curve may not be comparable: another dataset, input count or frame count than measured.

    ``dataset`` is the report's dataset name (e.g. ``kodak``, ``bunny-cpu``), ``frames``
    the frame count of each measured input.
    """
    token = re.split(r"[^a-z0-9]+", dataset.lower().strip())[0] if dataset else ""
    warnings = []
    for curve in curves:
        source, label = curve.source, f"overlay {curve.name} ({curve.source.get('file', '?')})"
        declared = source.get("dataset")
        if declared is None and "inputs" not in source and "frames" not in source:
            warnings.append(f"{label} does not say which dataset or how many frames it was measured on: "
                            "it may not be comparable")
            continue
        if declared is not None and token and token not in declared.lower():
            warnings.append(f"{label} was measured on {declared!r}, this report on {dataset!r}")
        if curve.video is None and source.get("inputs") not in (None, len(frames)):
            warnings.append(f"{label} averages {source['inputs']} inputs, this report {len(frames)}")
        if source.get("frames") is not None and curve.video is None and sorted(source["frames"]) != sorted(frames):
            warnings.append(f"{label} was measured on {sum(source['frames'])} frames "
                            f"({', '.join(map(str, source['frames'][:8]))}{'...' if len(source['frames']) > 8 else ''}"
                            f" per input), this report on {sum(frames)}")
    return warnings


def to_db(values: list) -> list:
    """MS-SSIM values as -10 log10(1 - MS-SSIM)."""
    return [None if v is None else (100.0 if v >= 1 else -10.0 * math.log10(1.0 - v)) for v in values]


def rd_plot(curves: list[Curve], metric: str, title: str, stem: Path, bpp_axis: str = "log") -> list[Path] | None:
    """Draw ``metric`` versus bpp, one line per curve; write STEM.png and STEM.svg (None: nothing to draw).

    The bpp axis is logarithmic by default: rate points of different codecs span decades
    (x265 near 0.01 bpp, an nnc set at several bpp).  MS-SSIM is drawn in dB.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Stable ids and no timestamp: a re-run with the same numbers writes the same SVG.
    matplotlib.rcParams["svg.hashsalt"] = "nnc-report"
    drawable = []
    for curve in curves:
        values = curve.metrics.get(metric)
        if values is None:
            continue
        if metric == "ms-ssim-rgb":
            values = to_db(values)
        points = [(b, v) for b, v in zip(curve.bpp, values) if v is not None]
        if points:
            drawable.append((curve, points))
    if not drawable:
        return None
    figure, axes = plt.subplots(figsize=(9.5, 4.8), dpi=100)
    for curve, points in drawable:
        xs, ys = zip(*points)
        style = dict(linestyle="--", marker="x", alpha=0.8) if curve.published else dict(linestyle="-", marker="o")
        axes.plot(xs, ys, label=curve.name + (" (overlay)" if curve.published else ""), **style)
    if bpp_axis == "log":
        from matplotlib.ticker import FuncFormatter, LogLocator

        axes.set_xscale("log")
        # Plain numbers (0.02, 0.05, 0.1...) rather than 2x10^-2: labels at 1, 2 and 5 per decade.
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        axes.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel("bits per pixel (bpp, from file sizes)" + (", log scale" if bpp_axis == "log" else ""))
    axes.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    # Outside the axes: with many codecs an inside legend hides points.
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, extra in ((".png", {"metadata": {"Software": None}}), (".svg", {"metadata": {"Date": None}})):
        target = stem.with_suffix(suffix)
        figure.savefig(target, **extra)
        written.append(target)
    plt.close(figure)
    return written
