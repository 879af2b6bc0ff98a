"""Deterministic, resumable epoch iterator with background prefetch.

Everything random is a pure function of ``(seed, epoch[, step])``:

* :func:`epoch_permutation` -- the order of the examples in an epoch;
* :func:`batch_rng` -- the generator handed to a batch ``transform``
  (e.g. :func:`~relaxjax.data.augment.random_crop_flip`).

So restarting from a checkpoint taken after ``step`` batches of ``epoch``
with ``epoch_batches(..., epoch=epoch, start_step=step)`` reproduces exactly
the batches an uninterrupted run would have seen. :class:`Prefetcher` runs
any iterator in a background thread (optionally with ``jax.device_put``) so
that the accelerator does not wait for the host.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

__all__ = [
    "Batch",
    "Transform",
    "epoch_permutation",
    "batch_rng",
    "steps_per_epoch",
    "batch_indices",
    "epoch_batches",
    "Prefetcher",
    "DataLoader",
]

T = TypeVar("T")
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""``transform(images, rng) -> images`` applied to each batch's images."""

_PERMUTATION_TAG = 0x70E2
_TRANSFORM_TAG = 0x7A46


class Batch(NamedTuple):
    """A mini-batch: ``images`` (NHWC) and int32 ``labels``.

    Attributes:
      images: the batch's images (NumPy, or JAX arrays after ``device_put``).
      labels: the batch's labels.
    """

    images: Any
    labels: Any


def _seed_sequence(*values: int) -> np.random.SeedSequence:
    if any(int(v) < 0 for v in values):
        raise ValueError(f"seed, epoch and step must be non-negative, got {values[1:]}")
    return np.random.SeedSequence([int(v) for v in values])


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of ``n`` examples in ``epoch`` for run ``seed`` (pure function).

    Args:
      seed: the run's seed (≥ 0).
      epoch: the epoch (≥ 0).
      n: the number of examples.

    Returns:
      A permutation of ``0 … n − 1``.

    Raises:
      ValueError: for a negative seed or epoch.

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> perm = data.epoch_permutation(0, 1, 6)
      >>> sorted(perm.tolist()), bool((perm == data.epoch_permutation(0, 1, 6)).all())
      ([0, 1, 2, 3, 4, 5], True)
    """
    return np.random.default_rng(_seed_sequence(_PERMUTATION_TAG, seed, epoch)).permutation(n)


def batch_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """Independent generator for the transform of batch ``step`` of ``epoch`` (pure function).

    Args:
      seed: the run's seed (≥ 0).
      epoch: the epoch (≥ 0).
      step: the batch's index in the epoch (≥ 0).

    Returns:
      A fresh ``numpy.random.Generator``.

    Raises:
      ValueError: for a negative seed, epoch or step.

    Example:
      >>> from relaxjax import data
      >>> a, b = data.batch_rng(0, 2, 5).random(), data.batch_rng(0, 2, 5).random()
      >>> a == b, a == data.batch_rng(0, 2, 6).random()
      (True, False)
    """
    return np.random.default_rng(_seed_sequence(_TRANSFORM_TAG, seed, epoch, step))


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches in an epoch of ``n`` examples.

    Args:
      n: the number of examples.
      batch_size: the batch size (> 0).
      drop_remainder: drop the last, incomplete batch.

    Returns:
      The number of batches.

    Raises:
      ValueError: for ``batch_size <= 0``.

    Example:
      >>> from relaxjax import data
      >>> data.steps_per_epoch(10, 4), data.steps_per_epoch(10, 4, drop_remainder=False)
      (2, 3)
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return n // batch_size if drop_remainder else -(-n // batch_size)


def batch_indices(
    seed: int,
    epoch: int,
    step: int,
    n: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> np.ndarray:
    """Example indices of batch ``step`` of ``epoch``.

    Args:
      seed: the run's seed.
      epoch: the epoch.
      step: the batch's index in the epoch.
      n: the number of examples.
      batch_size: the batch size.
      shuffle: use :func:`epoch_permutation` (else the examples in order).
      drop_remainder: as in :func:`steps_per_epoch`.

    Returns:
      The indices of the batch's examples.

    Raises:
      IndexError: for a step outside the epoch.

    Example:
      >>> from relaxjax import data
      >>> data.batch_indices(0, 0, 1, n=10, batch_size=4, shuffle=False).tolist()
      [4, 5, 6, 7]
      >>> perm = data.epoch_permutation(0, 0, 10)
      >>> bool((data.batch_indices(0, 0, 1, n=10, batch_size=4) == perm[4:8]).all())
      True
    """
    if not 0 <= step < steps_per_epoch(n, batch_size, drop_remainder):
        raise IndexError(f"step {step} outside epoch of {n} examples / batch {batch_size}")
    order = epoch_permutation(seed, epoch, n) if shuffle else np.arange(n)
    return order[step * batch_size : (step + 1) * batch_size]


def epoch_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    start_step: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    transform: Transform | None = None,
) -> Iterator[Batch]:
    """Yield the batches of one epoch, starting at ``start_step`` (for resuming).

    With ``drop_remainder=False`` the last batch may be smaller.

    Args:
      images: the data set's images (any array indexable along axis 0).
      labels: its labels.
      batch_size: the batch size.
      seed: the run's seed.
      epoch: the epoch.
      start_step: the first batch to yield.
      shuffle: shuffle with :func:`epoch_permutation`.
      drop_remainder: drop the last, incomplete batch.
      transform: ``transform(images, rng)`` applied to each batch's images, with
        ``rng = batch_rng(seed, epoch, step)``.

    Yields:
      :class:`Batch` es, in order.

    Raises:
      ValueError: if images and labels differ in length.

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> images, labels = np.arange(10)[:, None], np.arange(10)
      >>> batches = list(data.epoch_batches(images, labels, 4, shuffle=False, start_step=1))
      >>> [b.labels.tolist() for b in batches]
      [[4, 5, 6, 7]]
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    n = len(images)
    steps = steps_per_epoch(n, batch_size, drop_remainder)
    order = epoch_permutation(seed, epoch, n) if shuffle else np.arange(n)
    for step in range(start_step, steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        x = np.take(images, idx, axis=0)
        if transform is not None:
            x = transform(x, batch_rng(seed, epoch, step))
        yield Batch(x, np.take(labels, idx, axis=0))


_ITEM, _END, _ERROR = range(3)


class Prefetcher(Generic[T]):
    """Iterate ``iterable`` in a daemon thread, keeping up to ``buffer_size`` items ready.

    ``transfer`` (e.g. ``jax.device_put``) is applied in the thread too.
    Exceptions from the source are re-raised in the consumer. Call
    :meth:`close` (or use ``with``) to stop early; iteration to the end
    stops the thread by itself.

    Args:
      iterable: the source.
      buffer_size: items kept ready (≥ 1).
      transfer: applied to each item in the thread, e.g. ``jax.device_put``.

    Raises:
      ValueError: for ``buffer_size < 1``.

    Example:
      >>> from relaxjax import data
      >>> with data.Prefetcher(range(5), buffer_size=2, transfer=lambda i: i * i) as items:
      ...     list(items)
      [0, 1, 4, 9, 16]
    """

    def __init__(
        self,
        iterable: Iterable[T],
        buffer_size: int = 2,
        transfer: Callable[[T], Any] | None = None,
    ):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self._queue: queue.Queue = queue.Queue(maxsize=buffer_size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=self._run, args=(iter(iterable), transfer), daemon=True, name="relaxjax-prefetch"
        )
        self._thread.start()

    def _put(self, message: tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator[T], transfer: Callable[[T], Any] | None) -> None:
        try:
            for item in it:
                if not self._put((_ITEM, transfer(item) if transfer is not None else item)):
                    return
            self._put((_END, None))
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            self._put((_ERROR, e))

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._done = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the background thread and drop buffered items."""
        self._done = True
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self.close()


class DataLoader(NamedTuple):
    """Batches of an in-memory data set, shuffled per epoch from ``seed``, prefetched.

    ``transform(images, rng)`` runs on each batch in the prefetch thread with
    ``rng = batch_rng(seed, epoch, step)``. ``prefetch=0`` disables the
    thread; ``device_put=True`` moves batches to the default JAX device in it.

    Attributes:
      images: the data set's images.
      labels: its labels.
      batch_size: the batch size.
      seed: the run's seed.
      shuffle: shuffle every epoch.
      drop_remainder: drop each epoch's last, incomplete batch.
      transform: ``transform(images, rng)`` per batch, or None.
      prefetch: batches prepared ahead in a thread (0: no thread).
      device_put: move batches to the default JAX device in the thread.

    Example:
      >>> import numpy as np
      >>> from relaxjax import data
      >>> loader = data.DataLoader(np.zeros((10, 2, 2, 1)), np.arange(10), batch_size=4, seed=0)
      >>> loader.steps_per_epoch, [b.images.shape for b in loader.epoch(0)]
      (2, [(4, 2, 2, 1), (4, 2, 2, 1)])
      >>> stream = loader.iterate(start_epoch=3, start_step=1)
      >>> [(epoch, step) for epoch, step, _ in (next(stream) for _ in range(3))]
      [(3, 1), (4, 0), (4, 1)]
    """

    images: np.ndarray
    labels: np.ndarray
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = True
    transform: Transform | None = None
    prefetch: int = 2
    device_put: bool = False

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch."""
        return steps_per_epoch(len(self.images), self.batch_size, self.drop_remainder)

    def _batches(self, epoch: int, start_step: int) -> Iterator[Batch]:
        return epoch_batches(
            self.images,
            self.labels,
            self.batch_size,
            seed=self.seed,
            epoch=epoch,
            start_step=start_step,
            shuffle=self.shuffle,
            drop_remainder=self.drop_remainder,
            transform=self.transform,
        )

    def _wrap(self, it: Iterator[T], transfer: Callable[[T], Any] | None) -> Iterator[T]:
        if self.prefetch <= 0 and transfer is None:
            return it
        return Prefetcher(it, max(self.prefetch, 1), transfer)

    def _device_put(self) -> Callable[[Any], Any] | None:
        if not self.device_put:
            return None
        import jax

        return jax.device_put

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` from ``start_step`` on.

        Args:
          epoch: the epoch.
          start_step: the first batch (to resume mid-epoch).

        Returns:
          An iterator of :class:`Batch` es (prefetched unless ``prefetch=0``).
        """
        return self._wrap(self._batches(epoch, start_step), self._device_put())

    def iterate(
        self, start_epoch: int = 0, start_step: int = 0
    ) -> Iterator[tuple[int, int, Batch]]:
        """Endless ``(epoch, step, batch)`` stream resuming at ``(start_epoch, start_step)``.

        Args:
          start_epoch: the first epoch.
          start_step: the first batch of ``start_epoch``.

        Returns:
          An endless iterator of ``(epoch, step, Batch)``.

        Raises:
          ValueError: if the data set holds no full batch.
        """

        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.images)} examples give no batch of {self.batch_size}")
        put = self._device_put()

        def gen() -> Iterator[tuple[int, int, Batch]]:
            epoch, step = start_epoch, start_step
            while True:
                for i, batch in enumerate(self._batches(epoch, step)):
                    yield epoch, step + i, batch
                epoch, step = epoch + 1, 0

        transfer = None if put is None else (lambda item: (item[0], item[1], put(item[2])))
        return self._wrap(gen(), transfer)
