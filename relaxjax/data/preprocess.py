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
(50,000 x 3072) that is a 3072 x 3072 covariance, its eigendecomposition and
a 50,000 x 3072 x 3072 product, the costliest part of loading the data (see
``benchmarks/RESULTS.md``), so cache the result if you need it often.
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
    """Per-channel ``mean`` and ``std`` (float64, shape ``(C,)``), in input units.

    Attributes:
      mean: the channels' means.
      std: the channels' (population) standard deviations.
    """

    mean: np.ndarray
    std: np.ndarray


def channel_stats(images: np.ndarray) -> ChannelStats:
    """Mean and (population) standard deviation of each channel of NHWC ``images``.

    Args:
      images: NHWC images (any numeric dtype); accumulated in float64 blocks.

    Returns:
      The :class:`ChannelStats`.

    References:
      ``docs/deep-relaxation.md`` §3.2 (per-channel normalisation of MNIST).

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> images = np.stack([np.zeros((2, 2, 2)), np.full((2, 2, 2), 2.0)])
      >>> images[..., 1] += 10
      >>> stats = data.channel_stats(images)
      >>> stats.mean.tolist(), stats.std.tolist()
      ([1.0, 11.0], [1.0, 1.0])
    """
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
    """``(images - mean) / std`` per channel, as float32 (std floored at ``eps``).

    Args:
      images: NHWC images.
      stats: the training set's :class:`ChannelStats`.
      eps: the floor on the standard deviations.

    Returns:
      The normalised images, float32, the shape of ``images``.

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> stats = data.ChannelStats(mean=np.array([1.0]), std=np.array([2.0]))
      >>> data.normalize(np.array([[[[3]], [[255]]]], np.uint8), stats).ravel().tolist()
      [1.0, 127.0]
    """
    mean = stats.mean.astype(np.float32)
    std = np.maximum(stats.std, eps).astype(np.float32)
    return (np.asarray(images, dtype=np.float32) - mean) / std


def global_contrast_normalize(images: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Centre each image and divide by its standard deviation (ddof=1), as float32.

    Images with std below ``eps`` (constant images) are only centred.

    Args:
      images: images of any shape ``(N, ...)``.
      eps: the smallest standard deviation divided by.

    Returns:
      The normalised images, float32, the shape of ``images``.

    References:
      ``docs/deep-relaxation.md`` §3.2 (GCN + ZCA for CIFAR-10).

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> out = data.global_contrast_normalize(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
      >>> out.tolist()
      [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    x = np.asarray(images, dtype=np.float32)
    axes = tuple(range(1, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    std = np.sqrt(x.var(axis=axes, ddof=1, keepdims=True))
    std[std < eps] = 1.0
    return x / std


class ZCA(NamedTuple):
    """ZCA whitening transform: ``x -> (x.reshape(n, -1) - mean) @ matrix``.

    Attributes:
      mean: the training images' mean, float32 ``(D,)``.
      matrix: the whitening matrix W, float32 ``(D, D)``, symmetric.
      eps: the regulariser added to the singular values.
    """

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
    """Fit ZCA whitening on (training) ``images`` of any shape ``(N, ...)``; see module doc.

    Args:
      images: the training images, ``(N, ...)``, flattened to ``(N, D)``.
      eps: added to the singular values ``sqrt(lam)``.

    Returns:
      The :class:`ZCA` transform.

    References:
      ``docs/deep-relaxation.md`` §3.2 (the authors' ``process_cifar.py``).

    Example:
      Whitened training data have the identity covariance (up to ``eps``):

      >>> import numpy as np
      >>> from relaxjax import data
      >>> mixing = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
      >>> x = np.random.default_rng(0).normal(size=(500, 3)) @ mixing
      >>> white = data.apply_zca(data.fit_zca(x), x)
      >>> bool(np.allclose(np.cov(white, rowvar=False), np.eye(3), atol=1e-4))
      True
    """
    x = np.asarray(images)
    flat = x.reshape(len(x), -1)
    mean = flat.mean(axis=0, dtype=np.float64)
    lam, u = np.linalg.eigh(_covariance(flat, mean))
    scale = 1.0 / (np.sqrt(np.maximum(lam, 0.0)) + eps)
    w = (u * scale) @ u.T
    return ZCA(mean.astype(np.float32), w.astype(np.float32), float(eps))


def apply_zca(zca: ZCA, images: np.ndarray) -> np.ndarray:
    """Whiten ``images`` with a fitted :class:`ZCA`; float32, same shape.

    Args:
      zca: the fitted transform (:func:`fit_zca`).
      images: images of the training images' shape ``(M, ...)``.

    Returns:
      The whitened images, float32, the shape of ``images``.

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> matrix = 2 * np.eye(2, dtype=np.float32)
      >>> zca = data.ZCA(mean=np.ones(2, np.float32), matrix=matrix, eps=0.0)
      >>> data.apply_zca(zca, np.array([[1.0, 3.0]])).tolist()
      [[0.0, 4.0]]
    """
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

    Args:
      train: the training images, ``(N, ...)``.
      test: the test images, or None.
      eps: see :func:`fit_zca`.
      gcn: apply :func:`global_contrast_normalize` first (the original script does).

    Returns:
      ``(train_white, test_white, zca)``; ``test_white`` is ``None`` if
      ``test`` is.

    References:
      ``docs/deep-relaxation.md`` §3.2 (GCN + ZCA whitening of CIFAR-10).

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> rng = np.random.default_rng(0)
      >>> train, test = rng.integers(0, 256, (100, 2, 2, 1)), rng.integers(0, 256, (10, 2, 2, 1))
      >>> train_white, test_white, zca = data.zca_whiten(train, test)
      >>> train_white.shape, test_white.shape, zca.matrix.shape, train_white.dtype
      ((100, 2, 2, 1), (10, 2, 2, 1), (4, 4), dtype('float32'))
    """
    tr = global_contrast_normalize(train) if gcn else np.asarray(train, dtype=np.float32)
    zca = fit_zca(tr, eps)
    te = None
    if test is not None:
        te = apply_zca(zca, global_contrast_normalize(test) if gcn else test)
    return apply_zca(zca, tr), te, zca
