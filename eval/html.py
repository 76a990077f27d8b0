"""The report's ``index.html``: one self-contained page (plots inlined as PNG), tables and settings.

It links only to files of the report folder that exist when it is written (the SVG
plots, results JSON, CSV tables); nothing is fetched from elsewhere.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from ..fileio import write_atomically

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.good{color:#060}.bad{color:#a00}figure{display:inline-block;margin:0.5em}img{max-width:760px}
code{background:#f5f5f5;padding:1px 4px}.note{color:#555;font-size:13px}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:6px 10px;color:#6a4a00}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "<td class=num>n/a</td>"
    if isinstance(value, float):
        return f"<td class=num>{value:.{digits}f}</td>"
    return f"<td class=num>{_e(value)}</td>"


def _table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>{''.join(f'<tr>{r}</tr>' for r in rows)}</table>"


def _link(output: Path, path: Path) -> str:
    relative = Path(os.path.relpath(path, output)).as_posix()
    return f'<a href="{_e(relative)}">{_e(relative)}</a>'


def _time(value) -> str:
    """Seconds with 4 significant digits (0.01234 s and 1234 s both stay readable)."""
    if value is None:
        return "<td class=num>n/a</td>"
    return f"<td class=num>{float(value):.4g}</td>"


def _points_table(results: list[dict]) -> str:
    rows = []
    for r in results:
        rows.append(f"<td>{_e(r['codec'])}</td><td>{_e(r['rate_label'])}</td>"
                    + _num(r.get("bytes")) + _num(r.get("payload_bytes")) + _num(r.get("bpp"), 5)
                    + _num(r.get("psnr-rgb"), 3) + _num(r.get("psnr-y"), 3) + _num(r.get("psnr-u"), 3)
                    + _num(r.get("psnr-v"), 3) + _num(r.get("psnr-yuv"), 3) + _num(r.get("ms-ssim-rgb"), 4)
                    + _num(r.get("ms-ssim-db"), 2) + _time(r.get("encoding_time")) + _num(r.get("encode_fps"), 3)
                    + _time(r.get("decoding_time")) + _num(r.get("decode_fps"), 3))
    return _table(["codec", "rate point", "file bytes", "payload bytes", "bpp", "PSNR-RGB", "PSNR-Y", "PSNR-U",
                   "PSNR-V", "PSNR-YUV", "MS-SSIM", "MS-SSIM dB", "encode s", "encode fps", "decode s",
                   "decode fps"], rows)


def write_index(output: Path, *, settings, anchor, plans, rates, inputs, machine, bd_rows, bd_columns, plots, results,
                failures, skipped, files, overlays, colour_note, version, title=None, libraries=None, load=None,
                overlay_bd=(), overlay_warnings=(), measurement_note=None) -> Path:
    from .jobs import rate_label

    title = title or settings.dataset
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>nnc report: {_e(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>nnc report: {_e(title)}</h1>",
             f"<p class=note>nnc {_e(version)}. Rates are bits per pixel from the size of each encoded file "
             f"(containers and headers included; payload bytes without them are in the tables). "
             f"Command: <code>{_e(settings.command)}</code></p>"]
    if load is not None and not load.get("idle"):
        start = (load.get("at_start") or {})
        parts.append(f"<p class=warning>The machine was not idle (load average {_e(start.get('load_average_5min'))} "
                     f"on {_e(start.get('cpus'))} CPUs when the report started): encode and decode times are "
                     "those of a shared machine.</p>")
    for warning in overlay_warnings:
        parts.append(f"<p class='warning overlay-warning'>Warning: {_e(warning)}.</p>")

    parts.append(f"<h2>BD-rate against {_e(anchor)}</h2>")
    if bd_rows:
        rows = []
        for row in bd_rows:
            cells = [f"<td>{_e(row['codec'])}</td><td>{_e(row['input'])}</td>"]
            for column in bd_columns:
                value = row.get(column)
                better = value is not None and ((value < 0) if "bd-rate" in column else (value > 0))
                css = "" if value is None else (" good" if better else " bad")
                cells.append(f"<td class='num{css}'>{'n/a' if value is None else f'{value:+.2f}'}</td>")
            cells.append(f"<td class=note>{_e('; '.join(row.get('notes', [])))}</td>")
            rows.append("".join(cells))
        parts.append(_table(["codec", "input", *bd_columns, "notes"], rows))
        parts.append("<p class=note>Bjontegaard delta, piecewise cubic (PCHIP) interpolation over log rate, "
                     "integrated over the overlapping interval only. Negative BD-rate / positive BD-PSNR: better "
                     "than the anchor. Overall = mean of the per-input values.</p>")
    else:
        listed = anchor in [plan.name for plan in plans]
        parts.append("<p>No codec besides the anchor.</p>" if listed else
                     f"<p>The anchor {_e(anchor)} is not among the codecs of this report: no BD table "
                     "(add it to --codecs, or choose another --anchor).</p>")
    if overlay_bd:
        parts.append("<h2>BD-rate against the published curves (--overlay)</h2>")
        rows = [f"<td>{_e(r['codec'])}</td><td>{_e(r['overlay'])} ({_e(r.get('overlay_file'))})</td>"
                + "".join("<td class=num>n/a</td>" if r.get(c) is None else f"<td class=num>{r[c]:+.2f}</td>"
                          for c in ("bd-rate psnr-rgb (%)", "bd-rate ms-ssim-rgb (%)"))
                + f"<td class=note>{_e('; '.join(r.get('notes', [])))}</td>" for r in overlay_bd]
        parts.append(_table(["codec", "published curve (anchor)", "bd-rate psnr-rgb (%)", "bd-rate ms-ssim-rgb (%)",
                             "notes"], rows))

    parts.append("<h2>Rate-distortion plots</h2>")
    for plot in plots:
        data = base64.b64encode(Path(plot["png"]).read_bytes()).decode("ascii")
        axis = plot.get("bpp_axis", "linear")
        parts.append(f"<figure class=rd-plot data-metric='{_e(plot['metric'])}' data-x-scale='{_e(axis)}'>"
                     f"<img alt='{_e(plot['metric'])} vs bpp, {_e(plot['input'])}' "
                     f"src='data:image/png;base64,{data}'><figcaption class=note>{_e(plot['input'])}, "
                     f"{_e(plot['metric'])}, bpp axis: {_e(axis)} scale "
                     f"(vector: {_link(output, Path(plot['svg']))})</figcaption></figure>")
    if overlays:
        parts.append("<p class=note>Dashed: curves read from --overlay files ("
                     + _e(", ".join(sorted({c.name for c in overlays}))) + "), drawn as given there; published "
                     "figures may leave side information out of their bpp.</p>")

    parts.append("<h2>Results per input</h2>")
    by_input: dict[str, list[dict]] = {}
    for r in results:
        by_input.setdefault(r["input"], []).append(r)
    for name, rows in by_input.items():
        meta = inputs.get(name, {})
        parts.append(f"<h3 class=per-input>{_e(name)}</h3><p class=note>{_e(meta.get('source'))}, "
                     f"{_e(meta.get('resolution'))}, {_e(meta.get('frames'))} frames; YUV PSNR on "
                     f"{_e(rows[0].get('yuv_planes'))}</p>")
        parts.append(_points_table(rows))

    if failures or skipped:
        parts.append("<h2>Failed and skipped jobs</h2><ul>")
        parts += [f"<li class=bad>failed: {_e(f)}</li>" for f in failures]
        parts += [f"<li>skipped: {_e(s)}</li>" for s in skipped]
        parts.append("</ul>")

    parts.append("<h2>Settings</h2>")
    codec_rows = [f"<td>{_e(p.name)}</td><td>{_e(p.describe())}</td>"
                  f"<td>{_e(', '.join(rate_label(*r) for r in rates[p.name]))}</td>" for p in plans]
    parts.append(_table(["codec", "what", "rate points"], codec_rows))
    input_rows = [f"<td>{_e(name)}</td><td>{_e(m['source'])}</td><td>{_e(m['resolution'])}</td>"
                  f"<td>{_e(m['frames'])}</td><td>{_e(m['colour'])}</td><td><code>{_e(m['sha256'][:16])}</code></td>"
                  for name, m in inputs.items()]
    parts.append(_table(["input", "source", "resolution", "frames", "colour", "sha256"], input_rows))
    general = {"dataset": settings.dataset, "epochs (nnc models)": settings.epochs or "codec default",
               "device": settings.device, "seed": settings.seed, "backend": settings.backend,
               "parallel jobs": settings.jobs, "machine": ", ".join(f"{k} {v}" for k, v in machine.items()),
               "machine load": "" if load is None else
               f"idle: {load.get('idle')}; start {load.get('at_start')}; end {load.get('at_end')}",
               "colour conversion": colour_note}
    general.update({f"measurement: {k}": v for k, v in (measurement_note or {}).items()})
    parts.append(_table(["setting", "value"], [f"<td>{_e(k)}</td><td>{_e(v)}</td>" for k, v in general.items()]))
    if libraries:
        parts.append("<h3>Library versions</h3>")
        parts.append(_table(["library", "version"],
                            [f"<td>{_e(k)}</td><td>{_e(v)}</td>" for k, v in libraries.items()]))

    listed = [path for path in files if Path(path).exists() and Path(path).suffix in (".json", ".csv", ".svg")]
    parts.append("<h2>Files</h2><ul>" + "".join(f"<li>{_link(output, Path(p))}</li>" for p in listed) + "</ul>")
    parts.append("</body></html>\n")

    target = output / "index.html"
    write_atomically(target, "\n".join(parts).encode("utf-8"))
    return target
