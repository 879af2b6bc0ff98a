"""Input normalisation of Deep Relaxation / Entropy-SGD (Chaudhari et al. 2017, 2018).

* :func:`channel_stats` / :func:`normalize`: per-channel standardisation with
  the training set's mean and standard deviation.
* :func:`global_contrast_normalize` + :func:`fit_zca` / :func:`apply_zca`:
  the CIFAR-10 preprocessing of the authors' ``process_cifar.py`` (after Taco
  Cohen's gconv experiments): each image is centred and divided by its own
  standard deviation (GCN), then ZCA-whitened with a transform fitted on the
  training set and applied to both splits. :func:`zca_whiten` does all of it.

ZCA: with ``C = U diag(lam) U^T`` the covariance (ddof=1) of the flattened,
centred training images, the whitening matrix is
``W = U diag(1 / (sqrt(lam) + eps)) U^T`` and ``x -> (x - mean) W``. As in
the original script, ``eps`` (default ``1e-5``) is added to the *singular
values* ``sqrt(lam)``, not to the eigenvalues; it bounds the gain of
near-degenerate directions (GCN makes one direction exactly degenerate).
The covariance is accumulated in float32 BLAS blocks into float64 and
diagonalised with ``numpy.linalg.eigh`` in float64. For CIFAR-10
(50,000 x 3072) a fit plus transform took 25-50 s on two shared CPU cores
(covariance ~8 s, eigh ~6 s, transform ~8 s), so cache the result if you
need it often.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "ChannelStats",
    "channel_stats",
    "normalize",
    "global_contrast_normalize",
    "ZCA",
    "fit_zca",
    "apply_zca",
    "zca_whiten",
]

_BLOCK = 4096


class ChannelStats(NamedTuple):
    """Per-channel ``mean`` and ``std`` (float64, shape ``(C,)``), in input units."""

    mean: np.ndarray
    std: np.ndarray


def channel_stats(images: np.ndarray) -> ChannelStats:
    """Mean and (population) standard deviation of each channel of NHWC ``images``."""
    x = np.asarray(images)
    c = x.shape[-1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    flat = x.reshape(-1, c)
    for start in range(0, len(flat), _BLOCK * 256):
        block = flat[start : start + _BLOCK * 256].astype(np.float64)
        total += block.sum(0)
        total_sq += np.square(block).sum(0)
    n = max(len(flat), 1)
    mean = total / n
    var = np.maximum(total_sq / n - mean**2, 0.0)
    return ChannelStats(mean, np.sqrt(var))


def normalize(images: np.ndarray, stats: ChannelStats, eps: float = 1e-8) -> np.ndarray:
    """``(images - mean) / std`` per channel, as float32 (std floored at ``eps``)."""
    mean = stats.mean.astype(np.float32)
    std = np.maximum(stats.std, eps).astype(np.float32)
    return (np.asarray(images, dtype=np.float32) - mean) / std


def global_contrast_normalize(images: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Centre each image and divide by its standard deviation (ddof=1), as float32.

    Images with std below ``eps`` (constant images) are only centred.
    """
    x = np.asarray(images, dtype=np.float32)
    axes = tuple(range(1, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    std = np.sqrt(x.var(axis=axes, ddof=1, keepdims=True))
    std[std < eps] = 1.0
    return x / std


class ZCA(NamedTuple):
    """ZCA whitening transform: ``x -> (x.reshape(n, -1) - mean) @ matrix``."""

    mean: np.ndarray  # (D,) float32
    matrix: np.ndarray  # (D, D) float32, symmetric
    eps: float


def _covariance(flat: np.ndarray, mean: np.ndarray) -> np.ndarray:
    d = flat.shape[1]
    cov = np.zeros((d, d))
    m32 = mean.astype(np.float32)
    for start in range(0, len(flat), _BLOCK):
        block = flat[start : start + _BLOCK].astype(np.float32) - m32
        cov += block.T @ block
    return cov / max(len(flat) - 1, 1)


def fit_zca(images: np.ndarray, eps: float = 1e-5) -> ZCA:
    """Fit ZCA whitening on (training) ``images`` of any shape ``(N, ...)``; see module doc."""
    x = np.asarray(images)
    flat = x.reshape(len(x), -1)
    mean = flat.mean(axis=0, dtype=np.float64)
    lam, u = np.linalg.eigh(_covariance(flat, mean))
    scale = 1.0 / (np.sqrt(np.maximum(lam, 0.0)) + eps)
    w = (u * scale) @ u.T
    return ZCA(mean.astype(np.float32), w.astype(np.float32), float(eps))


def apply_zca(zca: ZCA, images: np.ndarray) -> np.ndarray:
    """Whiten ``images`` with a fitted :class:`ZCA`; float32, same shape."""
    x = np.asarray(images)
    flat = x.reshape(len(x), -1)
    out = np.empty(flat.shape, dtype=np.float32)
    for start in range(0, len(flat), _BLOCK):
        block = flat[start : start + _BLOCK].astype(np.float32) - zca.mean
        out[start : start + _BLOCK] = block @ zca.matrix
    return out.reshape(x.shape)


def zca_whiten(
    train: np.ndarray, test: np.ndarray | None = None, eps: float = 1e-5, gcn: bool = True
) -> tuple[np.ndarray, np.ndarray | None, ZCA]:
    """The original CIFAR preprocessing: optional GCN, ZCA fitted on ``train``, applied to both.

    Returns ``(train_white, test_white, zca)``; ``test_white`` is ``None`` if
    ``test`` is.
    """
    tr = global_contrast_normalize(train) if gcn else np.asarray(train, dtype=np.float32)
    zca = fit_zca(tr, eps)
    te = None
    if test is not None:
        te = apply_zca(zca, global_contrast_normalize(test) if gcn else test)
    return apply_zca(zca, tr), te, zca
