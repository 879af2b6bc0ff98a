"""Data sets, preprocessing and input pipeline for relaxjax.

Loads the data of Deep Relaxation (Chaudhari et al. 2018) -- MNIST, CIFAR-10,
CIFAR-100 and image-folder trees -- from the official files with strict
verification, and provides the paper's preprocessing (per-channel
normalisation, GCN + ZCA whitening, crop/flip augmentation) and a
deterministic, resumable, prefetching batch iterator.

Typical use::

    from relaxjax import data
    x, y = data.load_dataset("mnist", "train", data_dir="../shared/data")
    stats = data.channel_stats(x)
    loader = data.DataLoader(data.normalize(x, stats), y, batch_size=128, seed=0)
    for batch in loader.epoch(0):
        ...
"""

from .augment import CropFlip, apply_crop_flip, random_crop_flip, sample_crop_flip
from .cifar import CIFAR10, CIFAR100, load_cifar10, load_cifar100
from .datasets import (
    CIFAR10_CLASSES,
    CIFAR10_JPEG_SHA256,
    DATASETS,
    DatasetInfo,
    dataset_info,
    load_dataset,
)
from .download import DownloadError, download
from .errors import ChecksumError, DataError, DataNotFoundError, UnsafePickleError
from .idx import parse_idx, read_idx
from .image_folder import LabeledImages, load_image_folder, read_image_folder
from .locations import CACHE_DIR_ENV, DATA_DIR_ENV, cache_dir
from .mnist import load_mnist
from .pipeline import (
    Batch,
    DataLoader,
    Prefetcher,
    batch_indices,
    batch_rng,
    epoch_batches,
    epoch_permutation,
    steps_per_epoch,
)
from .preprocess import (
    ZCA,
    ChannelStats,
    apply_zca,
    channel_stats,
    fit_zca,
    global_contrast_normalize,
    normalize,
    zca_whiten,
)
from .safe_pickle import RestrictedUnpickler, safe_loads

__all__ = [
    "CropFlip",
    "apply_crop_flip",
    "random_crop_flip",
    "sample_crop_flip",
    "CIFAR10",
    "CIFAR100",
    "load_cifar10",
    "load_cifar100",
    "CIFAR10_CLASSES",
    "CIFAR10_JPEG_SHA256",
    "DATASETS",
    "DatasetInfo",
    "dataset_info",
    "load_dataset",
    "DownloadError",
    "download",
    "ChecksumError",
    "DataError",
    "DataNotFoundError",
    "UnsafePickleError",
    "parse_idx",
    "read_idx",
    "LabeledImages",
    "load_image_folder",
    "read_image_folder",
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "cache_dir",
    "load_mnist",
    "Batch",
    "DataLoader",
    "Prefetcher",
    "batch_indices",
    "batch_rng",
    "epoch_batches",
    "epoch_permutation",
    "steps_per_epoch",
    "ZCA",
    "ChannelStats",
    "apply_zca",
    "channel_stats",
    "fit_zca",
    "global_contrast_normalize",
    "normalize",
    "zca_whiten",
    "RestrictedUnpickler",
    "safe_loads",
]
