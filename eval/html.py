"""The report's ``index.html``: one self-contained page (plots inlined as PNG), tables and settings.

It links only to files of the report folder that exist when it is written (the SVG
plots, results JSON, CSV tables); nothing is fetched from elsewhere.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.good{color:#060}.bad{color:#a00}figure{display:inline-block;margin:0.5em}img{max-width:580px}
code{background:#f5f5f5;padding:1px 4px}.note{color:#555;font-size:13px}
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


def write_index(output: Path, *, settings, anchor, plans, rates, inputs, machine, bd_rows, bd_columns, plots, results,
                failures, skipped, files, overlays, colour_note, version) -> Path:
    from .jobs import rate_label

    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>nnc report: {_e(settings.dataset)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>nnc report: {_e(settings.dataset)}</h1>",
             f"<p class=note>nnc {_e(version)}. Rates are bits per pixel from the size of each encoded file "
             f"(containers and headers included). Command: <code>{_e(settings.command)}</code></p>"]

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

    parts.append("<h2>Rate-distortion plots</h2>")
    for plot in plots:
        data = base64.b64encode(Path(plot["png"]).read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{_e(plot['metric'])} vs bpp, {_e(plot['input'])}' "
                     f"src='data:image/png;base64,{data}'><figcaption class=note>{_e(plot['input'])}, "
                     f"{_e(plot['metric'])} (vector: {_link(output, Path(plot['svg']))})</figcaption></figure>")
    if overlays:
        parts.append("<p class=note>Dashed: curves read from --overlay files ("
                     + _e(", ".join(sorted({c.name for c in overlays}))) + "), drawn as given there; published "
                     "figures may leave side information out of their bpp.</p>")

    parts.append("<h2>All measured points</h2>")
    rows = []
    for r in results:
        rows.append(f"<td>{_e(r['input'])}</td><td>{_e(r['codec'])}</td><td>{_e(r['rate_label'])}</td>"
                    + _num(r.get("bytes")) + _num(r.get("bpp"), 5) + _num(r.get("psnr-rgb"), 3)
                    + _num(r.get("psnr-yuv"), 3) + _num(r.get("ms-ssim-rgb"), 4)
                    + _num(r.get("encoding_time"), 2) + _num(r.get("decoding_time"), 2))
    parts.append(_table(["input", "codec", "rate point", "bytes", "bpp", "PSNR-RGB", "PSNR-YUV", "MS-SSIM",
                         "encode s", "decode s"], rows))

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
               "colour conversion": colour_note}
    parts.append(_table(["setting", "value"], [f"<td>{_e(k)}</td><td>{_e(v)}</td>" for k, v in general.items()]))

    listed = [path for path in files if Path(path).exists() and Path(path).suffix in (".json", ".csv", ".svg")]
    parts.append("<h2>Files</h2><ul>" + "".join(f"<li>{_link(output, Path(p))}</li>" for p in listed) + "</ul>")
    parts.append("</body></html>\n")

    target = output / "index.html"
    handle, temp = tempfile.mkstemp(dir=output, prefix=".index.", suffix=".partial")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write("\n".join(parts))
    os.chmod(temp, 0o644)
    os.replace(temp, target)
    return target
