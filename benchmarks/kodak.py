"""Kodak benchmark of the CLC image codec: ``.venv/bin/python benchmarks/kodak.py``.

Every image of the Kodak set (24 PNGs, ``../shared/media/image/kodak``) is encoded at
every quality of a CLC weights folder into a real ``.nnc`` file and decoded back with
the decoder alone.  bpp is the file size (header and container included) over the
pixels; PSNR and MS-SSIM are measured in RGB on the 8-bit decoded image.  Per quality,
the results are averaged over the images as CompressAI does (mean of per-image PSNR
and bpp), and written in CompressAI's results format, with BD-rate and BD-PSNR
against the published JPEG and BPG curves in ``../shared/reference/kodak-results``
(same 24 images) in ``meta``.  Without ``--output`` the results go to a new file
(``kodak_clc_2.json``...): a committed result is never overwritten by default.

    python benchmarks/kodak.py                                   # shipped weights
    python benchmarks/kodak.py --weights DIR --name "CLC (no reference)" \
        --output benchmarks/results/kodak_clc_noref.json --compare benchmarks/results/kodak_clc.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
KODAK = SHARED / "media" / "image" / "kodak"
REFERENCE = SHARED / "reference" / "kodak-results"
ANCHORS = {"JPEG": "jpeg.json", "WebP": "webp.json", "BPG": "bpg_444_x265_ycbcr.json"}


def code_image(path: Path, quality: float, workdir: Path, keep: bool = False) -> dict:
    """Encode ``path`` at ``quality`` to a file, decode the file, measure."""
    from nnc.bitstream import read_bitstream_file
    from nnc.codec.files import decode_image, make_options
    from nnc.codec.image_api import encode_image
    from nnc.media.image import read_image
    from nnc.metrics import ms_ssim_rgb, psnr_per_frame

    image = read_image(path)
    output = workdir / f"{path.stem}_q{quality}.nnc"
    started = time.perf_counter()
    report = encode_image(image, output, "clc", make_options("clc", quality=quality, show_progress=False,
                                                             checkpoint_interval=0))
    encode_seconds = time.perf_counter() - started
    file_bytes = report.file_bytes
    model_header = read_bitstream_file(output).header["model"]
    started = time.perf_counter()
    decoded = decode_image(output)
    decode_seconds = time.perf_counter() - started
    if not keep:
        output.unlink()
    h, w = image.shape[:2]
    return {"image": path.name, "bytes": file_bytes, "bpp": file_bytes * 8 / (h * w),
            "psnr-rgb": float(psnr_per_frame(image[None], decoded[None], 255)[0]),
            "ms-ssim-rgb": ms_ssim_rgb(image[None], decoded[None], 255),
            "references": model_header["frames"][0]["references"],
            "encoding_time": encode_seconds, "decoding_time": decode_seconds}


def load_curve(path: Path) -> tuple[list[float], list[float]]:
    results = json.loads(path.read_text())["results"]
    return results["bpp"], results["psnr-rgb"]


def bd_against(rates, psnrs, anchors: dict) -> dict:
    from nnc.eval.bdrate import bd_psnr, bd_rate

    out = {}
    for name, (anchor_rates, anchor_psnrs) in anchors.items():
        try:
            out[name] = {"bd_rate_percent": round(bd_rate(anchor_rates, anchor_psnrs, rates, psnrs), 2),
                         "bd_psnr_db": round(bd_psnr(anchor_rates, anchor_psnrs, rates, psnrs), 3)}
        except Exception as error:  # too few points or no overlap: say so in the JSON
            out[name] = {"error": str(error)}
    return out


def psnr_at_rate(curve_rates, curve_psnrs, rate: float) -> float | None:
    """PSNR of a curve at ``rate`` (PCHIP in log-rate), None outside its range."""
    from scipy.interpolate import PchipInterpolator

    order = np.argsort(curve_rates)
    x, y = np.log(np.asarray(curve_rates)[order]), np.asarray(curve_psnrs)[order]
    if len(x) < 2 or not x[0] <= np.log(rate) <= x[-1]:
        return None
    return float(PchipInterpolator(x, y)(np.log(rate)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kodak", type=Path, default=KODAK)
    parser.add_argument("--weights", type=Path, default=None, help="CLC weights folder (default: shipped)")
    parser.add_argument("--qualities", default=None, help="comma-separated (default: all in the folder)")
    parser.add_argument("--images", type=int, default=None, help="first N images only (smoke runs)")
    parser.add_argument("--name", default="CLC (nnc)")
    parser.add_argument("--output", "--out", dest="out", type=Path, default=None,
                        help="results JSON (overwritten if it exists; default: a new name next to "
                             "benchmarks/results/kodak_clc.json)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another results JSON (the conditioned model) to compare this one with")
    parser.add_argument("--command", default=None, help="command line to record in meta")
    parser.add_argument("--bitstreams", type=Path, default=None,
                        help="keep every .nnc file in this folder (anyone can decode them and check bpp and PSNR)")
    parser.add_argument("--jobs", type=int, default=1, help="images coded in parallel processes (one torch thread each)")
    args = parser.parse_args(argv)

    import torch

    from nnc.codec.base import machine_description
    from nnc.codec.clc import WEIGHTS_ENV, CLCBundle, quality_lambda, weights_dir
    from nnc.eval.output_paths import unused_path

    if args.out is None:
        args.out = unused_path(ROOT / "benchmarks" / "results" / "kodak_clc.json")

    if args.weights is not None:
        os.environ[WEIGHTS_ENV] = str(args.weights.resolve())
    bundle = CLCBundle(weights_dir())
    qualities = ([bundle.resolve_quality(float(q)) for q in args.qualities.split(",")]
                 if args.qualities else bundle.qualities)
    images = sorted(args.kodak.glob("kodim*.png"))[: args.images]
    if not images:
        print(f"nnc: no kodim*.png in {args.kodak}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    per_quality = []
    with tempfile.TemporaryDirectory(prefix="nnc-kodak-") as temp:
        keep = args.bitstreams is not None
        workdir = args.bitstreams if keep else Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        for quality in qualities:
            _, meta, sha = bundle.model(quality)
            rows = []
            if args.jobs > 1:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                    rows = list(pool.map(code_image, images, [quality] * len(images), [workdir] * len(images),
                                        [keep] * len(images)))
            else:
                rows = [code_image(path, quality, workdir, keep) for path in images]
            for row in rows:
                print(f"q{quality} {row['image']}: {row['bpp']:.4f} bpp {row['psnr-rgb']:.2f} dB", flush=True)
            model = bundle.model(quality)[0]
            rate_lambda = (quality_lambda(model.config.rate_lambdas, quality) if bundle.variable_rate
                           else meta.get("lambda"))
            per_quality.append({"quality": quality, "lambda": rate_lambda, "weights_sha256": sha,
                                "train_steps": meta.get("steps"), "images": rows})

    def mean(key, rows):
        return float(np.mean([r[key] for r in rows]))

    results = {key: [mean(key, q["images"]) for q in per_quality]
               for key in ("psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time")}
    anchors = {name: load_curve(REFERENCE / file) for name, file in ANCHORS.items() if (REFERENCE / file).exists()}
    meta = {
        "dataset": f"Kodak, {len(images)} images ({args.kodak})",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": args.command or "python benchmarks/kodak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_description(),
        # Encode/decode times are only comparable when nothing else ran (1-minute load
        # average before and after the run).
        "machine_load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine_idle": load_before < 0.5 and os.getloadavg()[0] < 1.5 and args.jobs == 1,
        "bpp": "file bytes * 8 / pixels, header and container included",
        "psnr": "RGB, 8-bit decoded image, mean over images of per-image PSNR",
        "qualities": [{k: v for k, v in q.items() if k != "images"} for q in per_quality],
        "dictionary_sha256": bundle.dictionary().sha256 if bundle.dictionary_path.exists() else None,
        "per_image": {f"q{q['quality']}": q["images"] for q in per_quality},
    }
    if len(per_quality) >= 2:
        meta["bd_vs"] = bd_against(results["bpp"], results["psnr-rgb"], anchors)
    if args.compare is not None and args.compare.exists():
        other = json.loads(args.compare.read_text())["results"]
        meta["compared_with"] = str(args.compare)
        meta["psnr_of_compared_at_these_rates_db"] = [psnr_at_rate(other["bpp"], other["psnr-rgb"], r)
                                                     for r in results["bpp"]]
        meta["psnr_difference_compared_minus_this_db"] = [
            None if p is None else round(p - own, 3)
            for p, own in zip(meta["psnr_of_compared_at_these_rates_db"], results["psnr-rgb"])]
        # And the other way round: this curve at the compared points' rates (when the
        # compared run has a single rate point, e.g. the ablation).
        meta["psnr_of_this_at_compared_rates_db"] = [psnr_at_rate(results["bpp"], results["psnr-rgb"], r)
                                                     for r in other["bpp"]]
        meta["compared_points"] = {"bpp": other["bpp"], "psnr-rgb": other["psnr-rgb"]}
        meta["psnr_difference_this_minus_compared_at_compared_rates_db"] = [
            None if p is None else round(p - q, 3)
            for p, q in zip(meta["psnr_of_this_at_compared_rates_db"], other["psnr-rgb"])]
        if len(other["bpp"]) >= 2 and len(results["bpp"]) >= 2:
            meta["bd_compared_vs_this"] = bd_against(other["bpp"], other["psnr-rgb"],
                                                     {"this": (results["bpp"], results["psnr-rgb"])})
    document = {"name": args.name, "description": "nnc CLC image codec (conditional latent coding), "
                                                   "trained by nnc train clc (meta.weights: on what)", "meta": meta,
                "results": results}
    document["meta"]["weights"] = {key: value for key, value in bundle.model(qualities[0])[1].items()
                                   if key in ("steps", "lambdas", "lambda", "train_images", "video_frames", "held_back",
                                              "conditioning", "crop", "batch_size", "lr", "init")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps({"results": results, "bd_vs": meta.get("bd_vs")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
