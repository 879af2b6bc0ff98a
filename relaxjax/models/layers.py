"""Layers of relaxjax's networks: dropout with hashed masks, PyTorch-style BatchNorm,
Torch's default initialisation."""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from relaxjax.core import noise

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "DROPOUT_MASKS",
    "HashDropout",
    "WEIGHT_INITS",
    "batch_norm",
    "dropout_layer",
    "torch_uniform",
]

BN_MOMENTUM = 0.9  # PyTorch BatchNorm momentum 0.1
"""Flax's BatchNorm momentum (weight of the old statistic) of PyTorch's default 0.1."""
BN_EPSILON = 1e-5
"""PyTorch's BatchNorm epsilon."""


class HashDropout(nn.Dropout):
    """``nn.Dropout`` whose mask is drawn with relaxjax's counter hash instead of threefry.

    Keeps each input with probability 1 − ``rate`` and scales it by 1/(1 − ``rate``),
    like ``nn.Dropout``; the per-call key still comes from the ``"dropout"`` RNG stream,
    but the mask (one uniform per activation) is the hash of ``relaxjax.core.noise`` keyed by
    two words of that key, on the 2⁻²⁴ grid of ``jax.random.uniform``. On CPU,
    threefry's masks for ``mnistfc``'s activations are a sizeable part of a training
    step; ``benchmarks/inner_loop.py`` times both (its reference rows with flax's
    ``nn.Dropout``). ``broadcast_dims`` share one mask value, as in ``nn.Dropout``.

    Attributes:
      rate: the probability of dropping an input (as ``nn.Dropout``).
      broadcast_dims: axes along which the mask is shared.
      deterministic: if True, the identity.
      rng_collection: the RNG stream of the per-call key (``"dropout"``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.models import HashDropout
      >>> layer = HashDropout(0.5, deterministic=False)
      >>> apply = jax.jit(lambda x, key: layer.apply({}, x, rngs={"dropout": key}))
      >>> y = apply(jnp.ones((1, 1000)), jax.random.key(0))
      >>> sorted(set(y.ravel().tolist())), 400 < int((y > 0).sum()) < 600
      ([0.0, 2.0], True)
    """

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or self.rate == 0.0:
            return inputs
        # Zeros from the shape and dtype alone: ``zeros_like`` would copy the inputs'
        # sharding, which inside a ``shard_map`` (Parle's replicas) names the outer mesh.
        zero = jnp.zeros((), jnp.result_type(inputs))
        if self.rate == 1.0:
            return jnp.broadcast_to(zero, jnp.shape(inputs))
        keep = 1.0 - self.rate
        key = self.make_rng(self.rng_collection) if rng is None else rng
        shape = [1 if d in self.broadcast_dims else n for d, n in enumerate(jnp.shape(inputs))]
        u = noise.hash_uniform(jax.random.bits(key, (2,), jnp.uint32), tuple(shape))
        mask = jnp.broadcast_to(u < 2.0 * keep - 1.0, jnp.shape(inputs))
        return jnp.where(mask, inputs / keep, zero)


WEIGHT_INITS = ("flax", "torch")
"""``LeNet``'s ``weight_init`` values (and :func:`batch_norm`'s): Flax's defaults, or
Torch's (:func:`torch_uniform`)."""


def torch_uniform(fan_in: int) -> Callable:
    """Torch's default initialiser of a layer with ``fan_in`` inputs: uniform in ±1/√fan_in.

    Lua Torch's ``nn.Linear`` and ``nn.SpatialConvolution`` (``reset()``) draw their
    weights and biases so, as PyTorch's ``nn.Linear`` and ``nn.Conv2d`` do by default; a
    standard deviation 1/√(3·fan_in), √3 smaller than Flax's LeCun-normal kernels.

    Args:
      fan_in: the inputs of one output unit (``kh·kw·c_in`` for a convolution).

    Returns:
      An initialiser ``init(key, shape, dtype=float32)``.

    Example:
      >>> import jax
      >>> from relaxjax.models import torch_uniform
      >>> w = torch_uniform(25)(jax.random.key(0), (100_000,))
      >>> bool(abs(w).max() <= 0.2), round(float(w.std()) * 25**0.5 * 3**0.5, 1)
      (True, 1.0)
    """
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def batch_norm(train: bool, *, weight_init: str = "flax") -> nn.BatchNorm:
    """``nn.BatchNorm`` with PyTorch's defaults (momentum 0.1 on the new statistic, ε = 1e-5).

    Args:
      train: normalise with the batch's statistics and update the running ones (True)
        or with the running statistics (False).
      weight_init: ``"flax"``: scale 1, bias 0; ``"torch"``: scale uniform in [0, 1), bias 0,
        as Lua Torch's and cudnn's ``BatchNormalization`` (``weight:uniform()``) and
        PyTorch's before version 1.2.

    Returns:
      An ``nn.BatchNorm`` with ``momentum=BN_MOMENTUM`` and ``epsilon=BN_EPSILON``.

    References:
      ``docs/deep-relaxation.md`` §3.1 (BatchNorm as in the authors' PyTorch code).

    Example:
      >>> from relaxjax.models import batch_norm
      >>> layer = batch_norm(train=True)
      >>> layer.use_running_average, layer.momentum, layer.epsilon
      (False, 0.9, 1e-05)
    """
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
    torch = weight_init == "torch"
    scale_init = nn.initializers.uniform(1.0) if torch else nn.initializers.ones
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        scale_init=scale_init,
    )


DROPOUT_MASKS = ("hash", "threefry")
"""The values of the networks' ``dropout_masks``: :class:`HashDropout` or flax's ``nn.Dropout``."""


def dropout_layer(rate: float, *, train: bool, masks: str = "hash") -> nn.Dropout:
    """A dropout layer of the networks: :class:`HashDropout` (``masks="hash"``) or
    flax's ``nn.Dropout`` (``masks="threefry"``, the masks of ``jax.random.bernoulli``).

    Both keep each input with probability 1 − ``rate`` and scale it by 1/(1 − ``rate``);
    they draw different masks from the same ``"dropout"`` key.

    Args:
      rate: the probability of dropping an input.
      train: dropout is on in train mode, the identity otherwise.
      masks: one of :data:`DROPOUT_MASKS`.

    Returns:
      The (unbound) dropout module.

    Raises:
      ValueError: for an unknown ``masks``.

    Example:
      >>> import flax.linen as nn
      >>> from relaxjax.models import HashDropout, dropout_layer
      >>> type(dropout_layer(0.5, train=True)) is HashDropout
      True
      >>> type(dropout_layer(0.5, train=False, masks="threefry")) is nn.Dropout
      True
    """
    if masks not in DROPOUT_MASKS:
        raise ValueError(f"dropout masks must be one of {DROPOUT_MASKS}, got {masks!r}")
    layer = HashDropout if masks == "hash" else nn.Dropout
    return layer(rate, deterministic=not train)
