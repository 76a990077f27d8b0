"""Training of the CLC image codec (``nnc train clc``).

Rate-distortion loss ``lambda * 255^2 * MSE + bpp`` on random crops (with horizontal
flips) of a folder of photographs, Adam with a short warm-up and cosine decay, a
separate optimiser for the entropy bottleneck's quantiles (CompressAI's aux loss),
resumable checkpoints, and a final ``update()`` of the entropy coder's CDF tables.  A
loop of its own (two optimisers, crops, references), sharing the checkpoint, progress
and schedule modules with the INR training loop (:mod:`nnc.codec.training`).

The conditioned model is trained with references drawn like the dictionary draws them
at coding time, but never from the same photograph: each crop is conditioned on crops
of k photographs among its nearest neighbours (by a pyramid of pooled colours), so
the model learns what a related, not identical, reference is worth.

A variable-rate model (``rate_lambdas``) draws one of its lambdas for every image of a
batch; the loss is the batch mean of each image's own ``lambda * 255^2 * MSE + bpp``.
Training data: the photographs of one folder plus, optionally, frames sampled evenly
from video clips.  ``holdout`` photographs (the last ones by name) are kept out of
training and evaluated every ``eval_interval`` steps at every rate point (bpp from the
likelihoods, PSNR of the quantized reconstruction); the log is JSON lines beside the
weights (``OUT.log.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NncError
from ..models.clc import CLCConfig, CLCModel
from .clc_weights import load_weights, save_weights
from .checkpoint import CheckpointPolicy, load_checkpoint, remove_checkpoint, save_checkpoint
from .progress import ProgressBar
from .schedule import warmup_cosine_lr

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
NEIGHBOURS = 6  # references for a crop come from this many nearest other photographs


def image_files(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise NncError(f"--data {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise NncError(f"--data {folder}: no images (png, jpg, ...) in it")
    return files


def load_training_images(folder, min_size: int) -> tuple[list[torch.Tensor], list[Path]]:
    """All images of ``folder`` as uint8 (3, H, W) tensors; each must be at least min_size."""
    from ..media.image import read_image

    files = image_files(folder)
    images = []
    for path in files:
        array = read_image(path)
        if min(array.shape[:2]) < min_size:
            raise NncError(f"{path}: {array.shape[1]}x{array.shape[0]} is smaller than the {min_size}-pixel crops")
        images.append(torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous())
    return images, files


def sample_video_frames(paths, per_video: int, min_size: int) -> tuple[list[torch.Tensor], list[str]]:
    """``per_video`` frames spread evenly over each clip, as uint8 (3, H, W); a clip whose
    frames are smaller than the crops is refused (one line)."""
    from ..media.reader import read_video

    frames, names = [], []
    for path in paths:
        video = read_video(path)
        if min(video.info.height, video.info.width) < min_size:
            raise NncError(f"{path}: {video.info.width}x{video.info.height} is smaller than the {min_size}-pixel crops")
        count = len(video.frames)
        wanted = min(per_video, count)
        picks = sorted({round(i * (count - 1) / max(wanted - 1, 1)) for i in range(wanted)})
        for index in picks:
            frame = video.frames[index]
            if frame.dtype != np.uint8:  # 16-bit sources: to the 8-bit scale photographs use
                frame = ((frame.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
            frames.append(torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).contiguous())
            names.append(f"{Path(path).name}#{index}")
    return frames, names


def pooled_colour_features(images: list[torch.Tensor]) -> torch.Tensor:
    """Pyramid of average-pooled colours (1x1, 2x2, 4x4 grids): a cheap similarity."""
    features = []
    for image in images:
        x = image.float().unsqueeze(0) / 255
        features.append(torch.cat([F.adaptive_avg_pool2d(x, s).flatten() for s in (1, 2, 4)]))
    return torch.stack(features)


def nearest_other_images(images: list[torch.Tensor], count: int) -> torch.Tensor:
    features = pooled_colour_features(images)
    distances = torch.cdist(features, features)
    distances.fill_diagonal_(float("inf"))
    count = min(count, len(images) - 1)
    return distances.topk(count, largest=False).indices


def random_crop(image: torch.Tensor, size: int, generator: torch.Generator, flip: bool) -> torch.Tensor:
    _, h, w = image.shape
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    crop = image[:, top : top + size, left : left + size]
    if flip and bool(torch.randint(0, 2, (1,), generator=generator)):
        crop = crop.flip(-1)
    return crop


def rd_loss(output: dict, target: torch.Tensor, rate_lambda) -> dict:
    """``rate_lambda``: one float, or a tensor with one lambda per image (variable rate)."""
    pixels = target.shape[2] * target.shape[3]
    bits = sum(l.clamp_min(1e-9).log2().flatten(1).sum(1) for l in output["likelihoods"].values()).neg()
    bpp_each = bits / pixels
    mse_each = (output["x_hat"] - target).square().flatten(1).mean(1)
    loss = (torch.as_tensor(rate_lambda, dtype=mse_each.dtype, device=mse_each.device) * 255**2 * mse_each
            + bpp_each).mean()
    return {"loss": loss, "bpp": bpp_each.mean(), "mse": mse_each.mean(), "bpp_each": bpp_each,
            "mse_each": mse_each}


def evaluate_holdout(model, images: list[torch.Tensor], references, crop: int, device) -> list[dict]:
    """bpp (from the likelihoods) and PSNR at every rate point on centre crops of the
    held-back images; ``references``: per image, k reference crops (conditioned models)."""
    qualities = list(range(1, len(model.config.rate_lambdas) + 1)) or [None]
    x = torch.stack([centre_crop(image, crop) for image in images]).to(device).float() / 255
    results = []
    model.eval()
    with torch.no_grad():
        ref_latents = None
        if references is not None:
            ref_latents = model.reference_latents(references.to(device).float() / 255)
        for quality in qualities:
            q = None if quality is None else torch.full((len(images),), float(quality))
            out = model(x, ref_latents, q)
            out["x_hat"] = out["x_hat"].clamp(0, 1)
            losses = rd_loss(out, x, 0.0)
            psnr = (10 * torch.log10(1 / losses["mse_each"].clamp_min(1e-10))).mean()
            results.append({"quality": quality, "bpp": round(float(losses["bpp"]), 4), "psnr": round(float(psnr), 3)})
    model.train()
    return results


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    _, h, w = image.shape
    top, left = (h - size) // 2, (w - size) // 2
    return image[:, top : top + size, left : left + size]


def train_clc(
    data: str | Path, output: str | Path, *, rate_lambda: float | None = None, steps: int,
    conditioning: bool = True, init: str | Path | None = None, crop: int = 128, batch_size: int = 8,
    lr: float = 3e-4, seed: int = 0, device: torch.device = torch.device("cpu"), quality: int | None = None,
    config: CLCConfig | None = None, checkpoint_interval: float = 300.0, resume: bool = False,
    show_progress: bool = True, rate_lambdas: list[float] | None = None, videos: list[str | Path] = (),
    frames_per_video: int = 8, holdout: int = 0, eval_interval: int = 250, eval_crop: int = 256,
) -> dict:
    """Train a CLC model and write its weights (after ``update()``) to ``output``.

    ``rate_lambda``: a single-rate model; ``rate_lambdas`` (increasing): one variable-rate
    model with a gain pair per lambda (quality i+1 is lambda i).
    """
    if steps < 1 or batch_size < 1 or crop < 64 or crop % 64:
        raise NncError("--steps and --batch-size must be positive and --crop a multiple of 64")
    if (rate_lambda is None) == (not rate_lambdas):
        raise NncError("give either --lambda (one rate) or --lambdas (a variable-rate model)")
    lambdas = list(rate_lambdas or [rate_lambda])
    if not all(value > 0 for value in lambdas):
        raise NncError("--lambda must be positive")
    if rate_lambdas and any(b <= a for a, b in zip(lambdas, lambdas[1:])):
        raise NncError("--lambdas must increase")
    if holdout < 0 or eval_interval < 1 or eval_crop < 64 or eval_crop % 64:
        raise NncError("--holdout must be >= 0, --eval-interval positive, --eval-crop a multiple of 64")
    photos, files = load_training_images(data, crop)
    if holdout >= len(photos):
        raise NncError(f"--holdout {holdout} leaves no training photograph out of {len(photos)}")
    held_images, held_files = photos[len(photos) - holdout :], files[len(files) - holdout :]
    for image, path in zip(held_images, held_files):
        if min(image.shape[1:]) < eval_crop:
            raise NncError(f"{path}: {image.shape[2]}x{image.shape[1]} (held back) is smaller than the "
                           f"{eval_crop}-pixel evaluation crop (--eval-crop)")
    images, names = photos[: len(photos) - holdout], [f.name for f in files[: len(files) - holdout]]
    frame_images, frame_names = sample_video_frames(videos, frames_per_video, crop) if videos else ([], [])
    images, names = images + frame_images, names + frame_names
    if conditioning and len(images) < 2:
        raise NncError("--data: a conditioned model needs at least two training images (references)")
    init_meta = {}
    if init is not None:
        try:
            model, init_meta = load_weights(init)
        except (OSError, KeyError, ValueError) as error:
            raise NncError(f"--init {init}: not a CLC weights file ({error})") from None
        if model.config.conditioning != conditioning:
            raise NncError(f"--init {init}: its conditioning={model.config.conditioning} differs from this run")
        if model.config.rate_lambdas != (list(rate_lambdas) if rate_lambdas else []):
            raise NncError(f"--init {init}: its lambdas {model.config.rate_lambdas} differ from this run's")
        model.train()
    else:
        torch.manual_seed(seed)
        base = config or CLCConfig(conditioning=conditioning)
        try:
            model_config = CLCConfig.from_dict(dict(base.to_dict(), conditioning=conditioning,
                                                    rate_lambdas=list(rate_lambdas or [])))
        except ValueError as error:  # e.g. a lambda outside the config's range, or too many
            raise NncError(f"--lambdas: {error}") from None
        model = CLCModel(model_config)
    model.to(device)
    variable_rate = model.config.variable_rate
    k = model.config.num_refs
    neighbours = nearest_other_images(images, max(k, NEIGHBOURS)) if conditioning else None
    held_references = None
    if conditioning and held_images:
        # Each held-back photograph is conditioned on centre crops of its k nearest
        # training images (fixed, so the log's points are comparable over time).
        # Only training images at least as large as the crop can serve; with fewer than
        # k of them, the nearest repeat (as in training).
        eligible = [i for i, image in enumerate(images) if min(image.shape[1:]) >= eval_crop]
        if not eligible:
            raise NncError(f"no training image is as large as the {eval_crop}-pixel evaluation crop (--eval-crop)")
        features = pooled_colour_features([images[i] for i in eligible])
        order = torch.cdist(pooled_colour_features(held_images), features).argsort(dim=1)
        held_references = torch.stack([
            torch.stack([centre_crop(images[eligible[int(row[j % len(eligible)])]], eval_crop) for j in range(k)])
            for row in order])

    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(main_params, lr=lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)

    settings = {"data": [(f.name, f.stat().st_size) for f in files], "lambda": rate_lambda, "lambdas": rate_lambdas,
                "steps": steps, "conditioning": conditioning, "crop": crop, "batch_size": batch_size, "lr": lr,
                "seed": seed, "init": hashlib.sha256(Path(init).read_bytes()).hexdigest() if init else None,
                "config": model.config.to_dict(), "videos": [(Path(v).name, Path(v).stat().st_size) for v in videos],
                "frames_per_video": frames_per_video, "holdout": holdout}
    policy = CheckpointPolicy(Path(str(output) + ".ckpt"), checkpoint_interval, resume,
                              hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest())
    log_path = Path(str(output) + ".log.jsonl")
    start = 0
    state = load_checkpoint(policy)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        generator.set_state(state["generator"])
        start = int(state["step"])
    # The log continues from the checkpoint: lines written after it are dropped.
    kept = []
    if start and log_path.exists():
        kept = [line for line in log_path.read_text().splitlines() if _log_step(line) <= start]
    log_path.write_text("".join(line + "\n" for line in kept))
    if not start:
        _append_log(log_path, {"step": 0, "event": "start", "train_images": len(images), "photos": len(images) - len(frame_images),
                               "video_frames": len(frame_images), "held_back": [f.name for f in held_files],
                               "lambdas": lambdas, "config": model.config.to_dict()})

    def save(step: int) -> None:
        save_checkpoint(policy, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "aux_optimizer": aux_optimizer.state_dict(), "generator": generator.get_state(),
                                 "step": step})

    warmup = 0 if init else min(200, steps // 10)
    began = time.monotonic()
    last_save = time.monotonic()
    label = f"clc lambda={rate_lambda}" if not variable_rate else f"clc {len(lambdas)} rates"
    bar = ProgressBar(steps, label, enabled=show_progress, initial=start, unit="step")
    recent = []
    model.train()
    step = start
    lambda_table = torch.tensor(lambdas, dtype=torch.float32)
    stop = _StopAtStepBoundary()
    try:
        for step in range(start, steps):
            if stop.requested:
                save(step)
                raise NncError(f"interrupted after step {step}; the same command with --resume continues")
            # The entropy models' training noise comes from torch's global generator:
            # seeding it per step makes a resumed run draw what an uninterrupted one does.
            torch.manual_seed(seed * 1_000_003 + step)
            picks = torch.randint(0, len(images), (batch_size,), generator=generator).tolist()
            x = torch.stack([random_crop(images[i], crop, generator, True) for i in picks]).to(device).float() / 255
            levels = torch.randint(0, len(lambdas), (batch_size,), generator=generator) if variable_rate else None
            ref_latents = None
            if conditioning:
                refs = []
                for i in picks:
                    count = neighbours.shape[1]
                    choice = (torch.randperm(count, generator=generator)[:k] if count >= k  # few photos: repeats
                              else torch.randint(0, count, (k,), generator=generator))
                    refs.append(torch.stack([random_crop(images[int(neighbours[i, c])], crop, generator, False)
                                             for c in choice]))
                with torch.no_grad():  # the references' latents are inputs, not trained through
                    ref_latents = model.reference_latents(torch.stack(refs).to(device).float() / 255)
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine_lr(step, steps, lr, warmup)
            result = model(x, ref_latents, None if levels is None else (levels + 1).float())
            step_lambda = lambda_table[levels].to(device) if levels is not None else lambdas[0]
            losses = rd_loss(result, x, step_lambda)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(main_params, 1.0)
            optimizer.step()
            aux_loss = model.aux_loss()
            aux_optimizer.zero_grad(set_to_none=True)
            aux_loss.backward()
            aux_optimizer.step()
            recent = (recent + [(losses["loss"].item(), losses["bpp"].item(), losses["mse"].item())])[-50:]
            text = None
            if step % 10 == 0:
                mean = np.mean(recent, axis=0)
                text = f"loss {mean[0]:.3f} bpp {mean[1]:.3f} psnr {10 * math.log10(1 / max(mean[2], 1e-10)):.2f}"
            bar.advance(1, text)
            done = step + 1
            if held_images and (done % eval_interval == 0 or done == steps):
                mean = np.mean(recent, axis=0)
                _append_log(log_path, {
                    "step": done, "seconds": round(time.monotonic() - began, 1), "lr": warmup_cosine_lr(step, steps, lr, warmup),
                    "train_loss": round(float(mean[0]), 4), "train_bpp": round(float(mean[1]), 4),
                    "train_psnr": round(10 * math.log10(1 / max(float(mean[2]), 1e-10)), 3),
                    "holdout": evaluate_holdout(model, held_images, held_references, eval_crop, device)})
            if time.monotonic() - last_save > checkpoint_interval:
                save(done)
                last_save = time.monotonic()
    except KeyboardInterrupt:  # a second Ctrl-C (or no signal handler): the last checkpoint stands
        raise NncError("interrupted; the same command with --resume continues from the last checkpoint") from None
    finally:
        stop.restore()
        bar.close()
    model.eval().cpu()
    model.update(force=True)
    mean = np.mean(recent, axis=0) if recent else np.zeros(3)
    metadata = {"lambda": rate_lambda, "lambdas": rate_lambdas, "steps": steps, "crop": crop,
                "batch_size": batch_size, "lr": lr, "seed": seed, "conditioning": conditioning, "quality": quality,
                "init": init_meta.get("name") if init else None, "name": Path(output).name,
                "train_images": len(images), "video_frames": len(frame_images),
                "held_back": [f.name for f in held_files],
                "final_train_bpp": round(float(mean[1]), 4),
                "final_train_psnr": round(10 * math.log10(1 / max(float(mean[2]), 1e-10)), 3),
                "train_seconds_this_run": round(time.monotonic() - began, 1)}
    save_weights(model, output, metadata)
    remove_checkpoint(policy)
    return metadata


class _StopAtStepBoundary:
    """Ctrl-C or SIGTERM during training: finish the current step, checkpoint, stop.

    A step interrupted half way (after the optimiser moved but before the step counter
    did, or after drawing some of its random crops) would checkpoint a state no
    uninterrupted run passes through; deferring to the step boundary keeps ``--resume``
    exact.  A second Ctrl-C interrupts at once (the last periodic checkpoint stands).
    """

    def __init__(self):
        self.requested = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            # None: the previous handler was not installed from Python; the default stands in.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self.previous = {}


def _log_step(line: str) -> float:
    """The step of a log line; a line cut short by a kill (or empty) counts as after any."""
    try:
        return json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return math.inf


def _append_log(path: Path, entry: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def train_clc_dictionary(data, weights, output, *, entries: int = 32, crop: int = 256, pca_dim: int = 64,
                         seed: int = 0, show_progress: bool = True) -> dict:
    """Build CLC's dictionary from the photographs in ``data`` with the analysis transform of
    ``weights`` and write it to ``output``; returns its meta plus ``sha256`` (``nnc train clc-dictionary``)."""
    from ..media.image import read_image
    from ..models.clc_dictionary import build_dictionary
    from .clc_weights import file_sha256, save_dictionary

    if crop % 64:
        raise NncError("--crop must be a multiple of 64")
    try:
        model, _ = load_weights(weights)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise NncError(f"--weights {weights}: not a CLC weights file ({str(error).splitlines()[0]})") from None
    images = [read_image(path) for path in image_files(data)]
    bar = ProgressBar(None, "dictionary features", enabled=show_progress, unit="crop")

    def progress(done, total):
        bar.advance(done - bar.position, f"of {total}")

    try:
        dictionary = build_dictionary(model, images, entries=entries, crop=crop, pca_dim=pca_dim, seed=seed,
                                      weights_sha256=file_sha256(weights), progress=progress)
    finally:
        bar.close()
    sha = save_dictionary(dictionary, output)
    return dict(dictionary.meta, entries=dictionary.size, crop=crop, sha256=sha)
