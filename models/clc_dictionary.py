"""CLC's universal dictionary: a few real image crops that stand for a photo collection.

Build (``nnc train clc-dictionary``), after CLC's paper with nnc's own features:

1. candidate crops (``crop`` x ``crop``) on a grid over every training photograph, at
   full size and at half size (two scales of content);
2. features by pyramid pooling of the CLC analysis transform's stage outputs (1/2,
   1/4, 1/8 and the latent at 1/16), each averaged over 1x1 and 2x2 grids, so that
   any image size maps to one fixed-length vector;
3. standardisation and PCA (scikit-learn) to at most ``pca_dim`` dimensions;
4. k-means (scikit-learn) with ``entries`` clusters; each entry is the real crop
   nearest its centroid (never the centroid itself: the reference must be an image).

The file keeps the entry crops as 8-bit pixels, so one dictionary serves every rate
point: the latent of an entry is the chosen quality's analysis transform applied to
its crop, recomputed by encoder and decoder alike.  The file also keeps what the
encoder needs to retrieve entries for a new image (scaler, PCA, the entries' reduced
features) and the SHA-256 of the weights whose transform made the features.

Saving and loading dictionaries (safetensors files) is the codec layer's business:
:mod:`nnc.codec.clc_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NncError

POOL_GRIDS = (1, 2)
DICTIONARY_VERSION = 1


def pyramid_features(model, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> (B, D) pooled features of the analysis stages."""
    pooled = []
    with torch.no_grad():
        for stage in model.analysis_features(images):
            for grid in POOL_GRIDS:
                pooled.append(F.adaptive_avg_pool2d(stage, grid).flatten(1))
    return torch.cat(pooled, dim=1)


def candidate_crops(images: list[np.ndarray], crop: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Non-overlapping crops on a grid, at full and half size; returns crops and their origin.

    Origin: (image index, scale divisor, top, left)."""
    from PIL import Image

    crops, origins = [], []
    for index, array in enumerate(images):
        for divisor in (1, 2):
            if divisor == 1:
                scaled = array
            else:
                h, w = array.shape[:2]
                scaled = np.asarray(Image.fromarray(array).resize((w // 2, h // 2), Image.Resampling.LANCZOS))
            h, w = scaled.shape[:2]
            for top in range(0, h - crop + 1, crop):
                for left in range(0, w - crop + 1, crop):
                    crops.append(scaled[top : top + crop, left : left + crop])
                    origins.append((index, divisor, top, left))
    if not crops:
        raise NncError(f"no training image is at least {crop}x{crop}")
    return np.stack(crops), origins


@dataclass
class CLCDictionary:
    crops: torch.Tensor  # (E, 3, S, S) uint8
    feature_mean: torch.Tensor  # (D,) standardisation of the pooled features
    feature_std: torch.Tensor
    pca_mean: torch.Tensor  # (D,)
    pca_components: torch.Tensor  # (P, D)
    entry_features: torch.Tensor  # (E, P) reduced features of the entries
    meta: dict
    sha256: str = ""  # of the file it was read from or written to (nnc.codec.clc_weights)

    @property
    def size(self) -> int:
        return int(self.crops.shape[0])

    def reduce(self, features: torch.Tensor) -> torch.Tensor:
        standardised = (features.double() - self.feature_mean.double()) / self.feature_std.double()
        return (standardised - self.pca_mean.double()) @ self.pca_components.double().T

    def retrieve(self, feature_model, image: torch.Tensor, k: int) -> list[int]:
        """Indices of the k entries nearest ``image`` (1, 3, H, W) in the reduced space."""
        if k > self.size:
            raise NncError(f"the CLC dictionary has {self.size} entries, fewer than k={k}")
        query = self.reduce(pyramid_features(feature_model, image))
        distances = torch.cdist(query, self.entry_features.double())[0]
        return [int(i) for i in torch.argsort(distances, stable=True)[:k]]

    def reference_images(self, indices: list[int]) -> torch.Tensor:
        """(1, k, 3, S, S) float references in [0, 1] for the entries ``indices``."""
        return self.crops[list(indices)].float().div(255).unsqueeze(0)


def build_dictionary(feature_model, images: list[np.ndarray], *, entries: int = 32, crop: int = 256,
                     pca_dim: int = 64, seed: int = 0, batch_size: int = 8, weights_sha256: str = "",
                     progress=None) -> CLCDictionary:
    """Cluster crops of ``images`` (uint8 HxWx3) into ``entries`` representative real crops."""
    try:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
    except ImportError:
        raise NncError("building the CLC dictionary needs scikit-learn: pip install 'nnc-toolkit[train]'") from None

    crops, origins = candidate_crops(images, crop)
    if len(crops) < entries:
        raise NncError(f"only {len(crops)} candidate crops for {entries} dictionary entries")
    feature_model.eval()
    features = []
    for start in range(0, len(crops), batch_size):
        batch = torch.from_numpy(crops[start : start + batch_size]).permute(0, 3, 1, 2).float() / 255
        features.append(pyramid_features(feature_model, batch).double())
        if progress is not None:
            progress(min(start + batch_size, len(crops)), len(crops))
    features = torch.cat(features)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    standardised = ((features - mean) / std).numpy()
    pca = PCA(n_components=min(pca_dim, len(crops) - 1, standardised.shape[1]), random_state=seed)
    reduced = pca.fit_transform(standardised)
    kmeans = KMeans(n_clusters=entries, n_init=10, random_state=seed).fit(reduced)
    chosen: list[int] = []
    for centroid in kmeans.cluster_centers_:
        order = np.argsort(((reduced - centroid) ** 2).sum(axis=1), kind="stable")
        chosen.append(int(next(i for i in order if i not in chosen)))  # distinct crops
    meta = {"version": DICTIONARY_VERSION, "entries": entries, "crop": crop, "pool_grids": list(POOL_GRIDS),
            "pca_dim": int(pca.n_components_), "candidates": len(crops), "seed": seed,
            "feature_weights_sha256": weights_sha256,
            "origins": [list(origins[i]) for i in chosen],
            "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4)}
    return CLCDictionary(
        crops=torch.from_numpy(crops[chosen]).permute(0, 3, 1, 2).contiguous(),
        feature_mean=mean.float(), feature_std=std.float(),
        pca_mean=torch.from_numpy(pca.mean_).float(), pca_components=torch.from_numpy(pca.components_).float(),
        entry_features=torch.from_numpy(reduced[chosen]).float(), meta=meta,
    )
