"""Jacobian-vector products on disk: J f(x; θ₀)·τ per (pretrained, checkpoint, task inputs) in the data home.

Building the tangent preview costs one batched JVP pass per task; stored, a second view (another
session, a restarted server, another choice of tasks) only reads files. A product is keyed by the
pretrained model's and the fine-tuned checkpoint's tensors_sha256 (τ = θ_ft − θ₀) and the sha256 of
the uint8 input images, so it cannot be served for other weights or other images; f(x; θ₀) is keyed
by the pretrained model and the images alone. Stored in fp32, so the preview stays exact for
linearized checkpoints. A collection may ship products in the same layout (its warm folder,
engine/jobs/warm.py): `shipped` is read after `root`, never written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.eval.suite import EvalSuite
from engine.eval.tangent import jvp_features
from engine.io.atomic import atomic_path


@dataclass(frozen=True)
class JvpStore:
    root: Path  # e.g. <data home>/cache/jvp
    pretrained_sha256: str
    vector_sha256: tuple[str, ...]  # one fine-tuned checkpoint per row of T
    shipped: Path | None = None  # read-only products in the same layout, looked up when `root` has none

    def path(self, images_sha256: str, vector_sha256: str = "") -> Path:
        return self.root / self._name(images_sha256, vector_sha256)

    def read(self, images_sha256: str, vector_sha256: str = "") -> torch.Tensor | None:
        """A stored product: from `root`, else shipped; None when neither holds a readable one."""
        found = _read(self.path(images_sha256, vector_sha256))
        if found is None and self.shipped is not None:
            found = _read(self.shipped / self._name(images_sha256, vector_sha256))
        return found

    def _name(self, images_sha256: str, vector_sha256: str) -> str:
        key = hashlib.sha256(f"{self.pretrained_sha256}|{vector_sha256}|{images_sha256}".encode()).hexdigest()
        return f"{key[:2]}/{key[2:26]}.safetensors"


def images_sha256(images: torch.Tensor) -> str:
    """Content hash of uint8 images [N, 3, H, W] (shape included)."""
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_jvp_features(
    suite: EvalSuite, theta0: torch.Tensor, T: torch.Tensor, images: torch.Tensor, *, store: JvpStore | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x; θ₀) [N, E] and J f(x; θ₀)·τₖ [K, N, E], reading stored products and computing only the missing ones."""
    if store is None:
        return jvp_features(suite, theta0, T, images)
    if len(store.vector_sha256) != T.shape[0]:
        raise ValueError(f"{len(store.vector_sha256)} checkpoint hashes for {T.shape[0]} task vectors")
    key = images_sha256(images)
    base = store.read(key)
    rows = [store.read(key, sha) for sha in store.vector_sha256]
    missing = [k for k, row in enumerate(rows) if row is None]
    if missing or base is None:
        base, computed = jvp_features(suite, theta0, T[missing] if missing else T[:1], images)  # [N, E], [M, N, E]
        _write(store.path(key), base)
        for k, product in zip(missing, computed):
            rows[k] = product
            _write(store.path(key, store.vector_sha256[k]), product)
    device = theta0.device
    return base.to(device), torch.stack([row.to(device) for row in rows])  # [N, E], [K, N, E]


def _read(path: Path) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        return load_file(str(path))["value"]
    except (SafetensorError, OSError, KeyError):
        return None  # a damaged cache entry is recomputed and rewritten


def _write(path: Path, tensor: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"value": tensor.detach().float().cpu().contiguous()}, str(tmp))
