"""Standard CIFAR augmentation, vectorised over the batch in numpy.

Random crop with zero padding (pad each side by ``padding`` pixels, crop back
to the original size at a uniformly random offset) and random horizontal flip
with probability 1/2 -- the "standard flips and crops" that the Deep
Relaxation paper mentions for CIFAR-10. One gather does both for the whole
batch (no per-image Python loop). Results are a pure function of the images
and the random generator (or integer seed).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CropFlip", "sample_crop_flip", "apply_crop_flip", "random_crop_flip"]


class CropFlip(NamedTuple):
    """Per-image augmentation parameters: crop offsets into the padded image and flip flags.

    Attributes:
      dy: the row offsets, int ``(N,)`` in ``[0, 2 * padding]``.
      dx: the column offsets, int ``(N,)`` in ``[0, 2 * padding]``.
      flip: whether to flip each image left-right, bool ``(N,)``.
    """

    dy: np.ndarray  # (N,) int, in [0, 2 * padding]
    dx: np.ndarray  # (N,) int, in [0, 2 * padding]
    flip: np.ndarray  # (N,) bool


def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def sample_crop_flip(
    rng: np.random.Generator | int, n: int, padding: int = 4, flip: bool = True
) -> CropFlip:
    """Draw offsets uniformly in ``[0, 2 * padding]`` and flips with probability 1/2.

    Args:
      rng: a NumPy generator or an integer seed.
      n: the number of images.
      padding: the zero padding of each side.
      flip: draw flips (False: none).

    Returns:
      The :class:`CropFlip` parameters of ``n`` images.

    References:
      ``docs/deep-relaxation.md`` §3.2 (the CIFAR augmentation).

    Example:
      >>> from relaxjax import data
      >>> params = data.sample_crop_flip(0, 5, padding=4)
      >>> params.dy.shape, bool(((0 <= params.dx) & (params.dx <= 8)).all())
      ((5,), True)
      >>> bool(data.sample_crop_flip(0, 5, flip=False).flip.any())
      False
    """
    g = _rng(rng)
    dy = g.integers(0, 2 * padding + 1, size=n)
    dx = g.integers(0, 2 * padding + 1, size=n)
    flips = g.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    return CropFlip(dy, dx, flips)


def apply_crop_flip(
    images: np.ndarray, params: CropFlip, padding: int = 4, fill: float = 0
) -> np.ndarray:
    """Apply :class:`CropFlip` to NHWC ``images`` (any dtype); output has the input shape.

    Args:
      images: NHWC images.
      params: the per-image offsets and flips (:func:`sample_crop_flip`).
      padding: the padding the offsets refer to.
      fill: the value of the padding.

    Returns:
      The augmented images, the shape and dtype of ``images``.

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> images = np.arange(2 * 3 * 3).reshape(2, 3, 3, 1)
      >>> offsets, flips = np.array([1, 1]), np.array([False, True])
      >>> params = data.CropFlip(dy=offsets, dx=offsets, flip=flips)
      >>> out = data.apply_crop_flip(images, params, padding=1)  # offset 1: no shift
      >>> bool((out[0] == images[0]).all()), bool((out[1] == images[1, :, ::-1]).all())
      (True, True)
    """
    x = np.asarray(images)
    n, h, w = x.shape[:3]
    if padding:
        pad = [(0, 0), (padding, padding), (padding, padding)] + [(0, 0)] * (x.ndim - 3)
        x = np.pad(x, pad, constant_values=fill)
    rows = params.dy[:, None] + np.arange(h)  # (N, H)
    cols = np.where(params.flip[:, None], np.arange(w)[::-1], np.arange(w))
    cols = params.dx[:, None] + cols  # (N, W)
    return x[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_crop_flip(
    images: np.ndarray,
    rng: np.random.Generator | int,
    padding: int = 4,
    flip: bool = True,
    fill: float = 0,
) -> np.ndarray:
    """Random ``padding``-pixel-padded crop + horizontal flip of NHWC ``images``.

    Pad with ``fill`` (0: black for uint8 input, the mean for normalised input).

    Args:
      images: NHWC images.
      rng: a NumPy generator or an integer seed.
      padding: the zero padding of each side (4 in the paper).
      flip: also flip left-right with probability 1/2.
      fill: the value of the padding.

    Returns:
      The augmented images, the shape and dtype of ``images``.

    References:
      ``docs/deep-relaxation.md`` §3.2.

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> images = np.ones((4, 32, 32, 3), np.uint8)
      >>> out = data.random_crop_flip(images, 0)
      >>> out.shape, out.dtype, bool((data.random_crop_flip(images, 0) == out).all())
      ((4, 32, 32, 3), dtype('uint8'), True)
    """
    params = sample_crop_flip(rng, len(images), padding, flip)
    return apply_crop_flip(images, params, padding, fill)
