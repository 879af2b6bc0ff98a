"""The data of a training run on the device: loading, per-epoch order, augmentation.

The training set lives on the accelerator; each outer step gathers its L
mini-batches from a per-epoch permutation inside the jitted step (and
augments them there), so the host never feeds batches. The permutation of
epoch e is a function of (seed, e) only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from relaxjax import data as data_lib
from relaxjax.train.config import LUA_PIXEL_OFFSET, DataArrays, TrainConfig


def _limited(images: np.ndarray, labels: np.ndarray, limit: int | None):
    """``limit`` examples: the first ones, or evenly spaced ones where the first lack
    classes of the split (a class-sorted image folder would give one class only)."""
    if limit is None or limit >= len(labels):
        return images, labels
    index = np.arange(limit)
    if len(np.unique(labels[:limit])) < min(limit, len(np.unique(labels))):
        index = np.linspace(0, len(labels) - 1, limit).round().astype(int)
    return images[index], labels[index]


def load_data(config: TrainConfig) -> DataArrays:
    """Loads, preprocesses (paper's preprocessing) and places the data set on device.

    ``config.train_limit``/``test_limit`` keep a subset; ``config.use_zca`` chooses
    GCN + ZCA whitening, otherwise each channel is normalised with the training set's
    statistics.

    Args:
      config: the run's configuration (``dataset``, ``data_dir``, limits, ``zca``).

    Returns:
      The :class:`DataArrays`.

    Raises:
      relaxjax.data.DataNotFoundError: if the data set is not on disk and cannot be
        downloaded.

    References:
      ``docs/deep-relaxation.md`` §3.2 (data and preprocessing), ``docs/cli.md`` §1.4.

    Example:
      A CIFAR-10 image folder of one 32x32 image per class (``cifar10-jpeg`` as a
      directory), normalised per channel:

      >>> import os, tempfile
      >>> from pathlib import Path
      >>> from unittest import mock
      >>> import numpy as np
      >>> from PIL import Image
      >>> from relaxjax import data, train
      >>> root = Path(tempfile.mkdtemp())
      >>> for split in ("train", "test"):
      ...     for value, name in enumerate(data.CIFAR10_CLASSES):
      ...         folder = root / "cifar10-jpeg" / split / name
      ...         folder.mkdir(parents=True)
      ...         image = np.full((32, 32, 3), 20 * value, np.uint8)
      ...         Image.fromarray(image).save(folder / "0.png")
      >>> config = train.TrainConfig(dataset="cifar10-jpeg", data_dir=str(root), zca=False)
      >>> with mock.patch.dict(os.environ, {data.CACHE_DIR_ENV: str(root / "cache")}):
      ...     arrays = train.load_data(config)  # the decoded splits are cached there
      >>> arrays.train_images.shape, arrays.train_labels.tolist()[:3], arrays.num_classes
      ((10, 32, 32, 3), [0, 1, 2], 10)
      >>> round(float(arrays.train_images.mean()), 4), str(arrays.train_images.dtype)
      (0.0, 'float32')
    """
    train_x, train_y = data_lib.load_dataset(config.dataset, "train", data_dir=config.data_dir)
    test_x, test_y = data_lib.load_dataset(config.dataset, "test", data_dir=config.data_dir)
    train_x, train_y = _limited(train_x, train_y, config.train_limit)
    test_x, test_y = _limited(test_x, test_y, config.test_limit)
    if config.use_zca:
        train_f, test_f, _ = data_lib.zca_whiten(train_x, test_x)
    elif config.input_scaling == "lua":
        train_f, test_f = (
            (np.asarray(x, np.float32) - LUA_PIXEL_OFFSET) / LUA_PIXEL_OFFSET
            for x in (train_x, test_x)
        )
    else:
        stats = data_lib.channel_stats(train_x)
        train_f, test_f = data_lib.normalize(train_x, stats), data_lib.normalize(test_x, stats)
    num_classes = data_lib.dataset_info(config.dataset).num_classes or int(train_y.max()) + 1
    return DataArrays(
        jnp.asarray(train_f, jnp.float32),
        jnp.asarray(train_y, jnp.int32),
        jnp.asarray(test_f, jnp.float32),
        jnp.asarray(test_y, jnp.int32),
        num_classes,
    )


def crop_flip(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Random crops of the zero-padded images and random horizontal flips, on device.

    Each image is padded with ``padding`` zeros on every side, cropped back to its size
    at a uniformly random offset, and flipped left-right with probability ½ (the
    paper's CIFAR augmentation).

    Args:
      key: PRNG key of the offsets and flips.
      images: NHWC images.
      padding: the zero padding (4 in the paper).

    Returns:
      The augmented images, the shape of ``images``.

    References:
      ``docs/deep-relaxation.md`` §3.2.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import train
      >>> images = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
      >>> crop_flip = jax.jit(train.crop_flip, static_argnames="padding")
      >>> out = crop_flip(jax.random.key(0), images, padding=0)  # flips only
      >>> out.shape, all(bool(jnp.all((o == x) | (o == x[:, ::-1]))) for o, x in zip(out, images))
      ((2, 4, 4, 1), True)
    """
    n, h, w, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    cropped = jax.vmap(crop)(padded, offsets)
    flips = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
    return jnp.where(flips, cropped[:, :, ::-1], cropped)


def epoch_permutation(seed: int, epoch: int, n: int) -> jax.Array:
    """The order of the training set in epoch ``epoch``: a function of (seed, epoch) only.

    So a resumed run visits the examples in the same order as an uninterrupted one.

    Args:
      seed: the run's seed.
      epoch: the (outer) epoch.
      n: the number of training examples.

    Returns:
      A permutation of ``0 … n − 1``, an int32 array.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import train
      >>> perm = train.epoch_permutation(0, 3, 10)
      >>> sorted(perm.tolist()) == list(range(10))
      True
      >>> bool(jnp.all(perm == train.epoch_permutation(0, 3, 10)))
      True
    """
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED), epoch)
    return jax.random.permutation(key, n)
