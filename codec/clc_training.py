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
"""

from __future__ import annotations

import hashlib
import json
import math
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


def rd_loss(output: dict, target: torch.Tensor, rate_lambda: float) -> dict:
    num_pixels = target.shape[0] * target.shape[2] * target.shape[3]
    bpp = sum(l.clamp_min(1e-9).log2().sum() for l in output["likelihoods"].values()).neg() / num_pixels
    mse = F.mse_loss(output["x_hat"], target)
    return {"loss": rate_lambda * 255**2 * mse + bpp, "bpp": bpp, "mse": mse}


def train_clc(
    data: str | Path, output: str | Path, *, rate_lambda: float, steps: int, conditioning: bool = True,
    init: str | Path | None = None, crop: int = 128, batch_size: int = 8, lr: float = 3e-4,
    seed: int = 0, device: torch.device = torch.device("cpu"), quality: int | None = None,
    config: CLCConfig | None = None, checkpoint_interval: float = 300.0, resume: bool = False,
    show_progress: bool = True,
) -> dict:
    """Train a CLC model and write its weights (after ``update()``) to ``output``."""
    if steps < 1 or batch_size < 1 or crop < 64 or crop % 64:
        raise NncError("--steps and --batch-size must be positive and --crop a multiple of 64")
    if not rate_lambda > 0:
        raise NncError("--lambda must be positive")
    images, files = load_training_images(data, crop)
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
        model.train()
    else:
        torch.manual_seed(seed)
        model = CLCModel(config or CLCConfig(conditioning=conditioning))
    model.to(device)
    k = model.config.num_refs
    neighbours = nearest_other_images(images, max(k, NEIGHBOURS)) if conditioning else None

    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(main_params, lr=lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)

    settings = {"data": [(f.name, f.stat().st_size) for f in files], "lambda": rate_lambda, "steps": steps,
                "conditioning": conditioning, "crop": crop, "batch_size": batch_size, "lr": lr, "seed": seed,
                "init": hashlib.sha256(Path(init).read_bytes()).hexdigest() if init else None,
                "config": model.config.to_dict()}
    policy = CheckpointPolicy(Path(str(output) + ".ckpt"), checkpoint_interval, resume,
                              hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest())
    start = 0
    state = load_checkpoint(policy)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        generator.set_state(state["generator"])
        start = int(state["step"])

    def save(step: int) -> None:
        save_checkpoint(policy, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "aux_optimizer": aux_optimizer.state_dict(), "generator": generator.get_state(),
                                 "step": step})

    warmup = 0 if init else min(200, steps // 10)
    began = time.monotonic()
    last_save = time.monotonic()
    bar = ProgressBar(steps, f"clc lambda={rate_lambda}", enabled=show_progress, initial=start, unit="step")
    recent = []
    model.train()
    step = start
    try:
        for step in range(start, steps):
            picks = torch.randint(0, len(images), (batch_size,), generator=generator).tolist()
            x = torch.stack([random_crop(images[i], crop, generator, True) for i in picks]).to(device).float() / 255
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
            result = model(x, ref_latents)
            losses = rd_loss(result, x, rate_lambda)
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
            if time.monotonic() - last_save > checkpoint_interval:
                save(step + 1)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        save(step)
        raise NncError(f"interrupted at step {step}; the same command with --resume continues") from None
    finally:
        bar.close()
    model.eval().cpu()
    model.update(force=True)
    mean = np.mean(recent, axis=0) if recent else np.zeros(3)
    metadata = {"lambda": rate_lambda, "steps": steps, "crop": crop, "batch_size": batch_size, "lr": lr,
                "seed": seed, "conditioning": conditioning, "quality": quality,
                "init": init_meta.get("name") if init else None, "name": Path(output).name,
                "final_train_bpp": round(float(mean[1]), 4),
                "final_train_psnr": round(10 * math.log10(1 / max(float(mean[2]), 1e-10)), 3),
                "train_seconds_this_run": round(time.monotonic() - began, 1)}
    save_weights(model, output, metadata)
    remove_checkpoint(policy)
    return metadata


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
