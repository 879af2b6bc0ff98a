"""The networks of Deep Relaxation / Entropy-SGD, and a functional adapter for any Flax model.

Architectures follow the authors' public PyTorch code (``python/models.py`` of
the Entropy-SGD repository), as summarised in section 3 of
``docs/deep-relaxation.md`` (Chaudhari et al., *Deep Relaxation*, 2018;
*Entropy-SGD*, ICLR 2017):

* :class:`MnistFC` (``mnistfc``): input dropout 0.2, 784-1024-1024-10 with
  BatchNorm, ReLU and dropout 0.5 after each hidden layer.
* :class:`LeNet` (``lenet``, the paper's ``mnistconv``): two
  conv5x5-BN-ReLU-maxpool-dropout blocks (20 and 50 channels, pools 3 and 2),
  then 200-500-10 with BN, ReLU and dropout 0.5.
* :class:`AllCNN` (``allcnn``): All-CNN-C with BN (Springenberg et al. 2015),
  c1 = 96, c2 = 192, input dropout 0.2, global average pooling.

The Deep Relaxation paper's MNIST cells come from the authors' later research
code (``code/models.py`` of their Hamilton-Jacobi repository, the same networks
as in their Parle code), whose networks differ; they are registered as

* ``mnistfc-dr``: dropout 0.2 (input and hidden), Dense-ReLU-BN order;
* ``lenet-dr``: conv5x5-ReLU-maxpool-BN-dropout blocks, 200-500-10 *without*
  BN on the 500-unit layer, dropout 0.25 throughout.

Details kept from the original code: every convolution/dense layer has a
bias (also before BN); BN comes *before* ReLU (in these three); the final 1x1 convolution of
All-CNN is also followed by BN and ReLU (so All-CNN's logits are
non-negative, exactly as in the reference code); max-pooling is
non-overlapping with floor rounding. BatchNorm uses PyTorch's defaults,
momentum 0.1 on the new statistic (``momentum=0.9`` in Flax) and
``epsilon=1e-5``; Flax's running variance uses the biased batch variance
where PyTorch uses the unbiased one. Initialisation is Flax's default
(LeCun-normal kernels, zero biases; BN scale 1, bias 0), not PyTorch's
uniform fan-in init; with BN after every layer the difference is minor.

Inputs are NHWC (``(N, 28, 28, 1)`` for MNIST, ``(N, 32, 32, 3)`` for CIFAR)
and are cast to float32; scaling/whitening is the data pipeline's job.

:func:`functional` turns a :mod:`flax.linen` module or a :mod:`flax.nnx`
module into a :class:`FunctionalModel` ``(init, apply)`` pair whose
parameters and state are plain nested dicts of arrays, which is what the
Optax-style training code of relaxjax works with.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from relaxjax import _noise

__all__ = [
    "HashDropout",
    "INPUT_SHAPES",
    "Params",
    "ModelState",
    "FunctionalModel",
    "MnistFC",
    "LeNet",
    "AllCNN",
    "MODELS",
    "get_module",
    "get_model",
    "functional",
    "count_params",
    "max_pool_tiles",
    "PatchConv",
    "conv_as_matmul",
]

Params = Any
"""A pytree (nested dict) of trainable arrays."""
ModelState = dict[str, Any]
"""Non-trainable model state, e.g. ``{"batch_stats": ...}``; ``{}`` if none."""

_BN_MOMENTUM = 0.9  # PyTorch BatchNorm momentum 0.1
_BN_EPSILON = 1e-5


class FunctionalModel(NamedTuple):
    """A model as two pure functions.

    ``init(key, sample_input) -> (params, model_state)``

    ``apply(params, model_state, x, *, train, dropout_key=None) ->
    (logits, new_model_state)``: in train mode dropout is on (masks drawn
    from ``dropout_key``) and BatchNorm uses and updates batch statistics;
    in eval mode dropout is off, running statistics are used and
    ``new_model_state`` is ``model_state``.
    """

    init: Callable[[jax.Array, jax.Array], tuple[Params, ModelState]]
    apply: Callable[..., tuple[jax.Array, ModelState]]
    feed_statistics: Callable[[Params, ModelState, jax.Array], ModelState] | None = None
    """``feed_statistics(params, model_state, x) -> new_model_state``: one forward
    pass with normalisation in train mode (batch statistics, running statistics
    updated) and dropout *off*. Used to re-estimate BatchNorm's running
    statistics before an evaluation, as the original code's "dry feed" does
    (see ``relaxjax.train.make_statistics_refresh``). None: not supported."""


def max_pool_tiles(x: jax.Array, size: int) -> jax.Array:
    """Non-overlapping ``size x size`` max-pooling of NHWC ``x`` (stride = size, floor rounding).

    The same values as ``nn.max_pool(x, (size, size), strides=(size, size))``,
    computed as a reshape and a ``max`` over the two window axes. Its gradient
    is then an elementwise mask instead of XLA's ``select-and-scatter``, which
    XLA:CPU runs slowly (about 2.7x slower for the whole LeNet gradient, batch
    128, 2 cores; table "LeNet's layers on CPU" of
    ``benchmarks/results/inner_loop.md``). Gradients agree except at ties
    inside a window, which ``max`` shares equally and ``select-and-scatter``
    gives to the first element; after a ReLU, tied zeros have zero gradient
    either way.
    """
    n, h, w, c = x.shape
    h, w = h // size * size, w // size * size
    tiles = x[:, :h, :w].reshape(n, h // size, size, w // size, size, c)
    return jnp.max(tiles, axis=(2, 4))


def conv_as_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 VALID convolution of NHWC ``x`` with an HWIO ``kernel`` as one matrix product.

    The kh·kw shifted views of ``x`` are stacked into patches (im2col) and
    multiplied by the kernel reshaped to (kh·kw·C_in, C_out). Autodiff then
    gives two matrix products and pads/adds for the backward pass instead of
    XLA's transposed convolutions, which XLA:CPU runs slowly for LeNet's
    shapes (the gradient of its 8x8x20 → 4x4x50 convolution, batch 128, took
    about 3.5x longer as a convolution on 2 cores; table "LeNet's layers on
    CPU" of ``benchmarks/results/inner_loop.md`` for the whole network).
    """
    kh, kw, c_in, c_out = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    views = [x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)]
    patches = jnp.stack(views, axis=3).reshape(n * oh * ow, kh * kw * c_in)
    return (patches @ kernel.reshape(kh * kw * c_in, c_out)).reshape(n, oh, ow, c_out)


class PatchConv(nn.Module):
    """``nn.Conv(features, kernel_size, padding="VALID")`` (stride 1, same parameters and init).

    ``implementation``: ``"patches"`` (:func:`conv_as_matmul`), ``"xla"``
    (``lax.conv_general_dilated``) or ``"auto"``: patches on the CPU backend,
    where they are faster for small convolutions, XLA's convolution elsewhere
    (cuDNN on GPU). Both give the same values and gradients up to float
    rounding (tested).
    """

    features: int
    kernel_size: tuple[int, int]
    implementation: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.implementation not in ("auto", "patches", "xla"):
            raise ValueError(
                f"implementation must be 'auto', 'patches' or 'xla', got {self.implementation!r}"
            )
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        patches = self.implementation == "patches" or (
            self.implementation == "auto" and jax.default_backend() == "cpu"
        )
        if patches:
            y = conv_as_matmul(x, kernel)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return y + bias


class HashDropout(nn.Dropout):
    """``nn.Dropout`` whose mask is drawn with relaxjax's counter hash instead of threefry.

    Keeps each input with probability 1 − ``rate`` and scales it by 1/(1 − ``rate``),
    like ``nn.Dropout``; the per-call key still comes from the ``"dropout"`` RNG stream,
    but the mask (one uniform per activation) is the hash of ``relaxjax._noise`` keyed by
    two words of that key, on the 2⁻²⁴ grid of ``jax.random.uniform``. On CPU,
    threefry's masks for ``mnistfc``'s activations are a sizeable part of a training
    step; ``benchmarks/inner_loop.py`` times both (its reference rows with flax's
    ``nn.Dropout``). ``broadcast_dims`` share one mask value, as in ``nn.Dropout``.
    """

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        keep = 1.0 - self.rate
        key = self.make_rng(self.rng_collection) if rng is None else rng
        shape = [1 if d in self.broadcast_dims else n for d, n in enumerate(jnp.shape(inputs))]
        u = _noise._hash_uniform(jax.random.bits(key, (2,), jnp.uint32), tuple(shape))
        mask = jnp.broadcast_to(u < 2.0 * keep - 1.0, jnp.shape(inputs))
        return jnp.where(mask, inputs / keep, jnp.zeros_like(inputs))


def _bn(train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON)


class MnistFC(nn.Module):
    """``mnistfc`` of Entropy-SGD / Deep Relaxation (1,867,786 parameters for 10 classes)."""

    num_classes: int = 10
    hidden: int = 1024
    input_dropout: float = 0.2
    dropout: float = 0.5
    bn_after_relu: bool = False  # Dense-ReLU-BN (the Deep Relaxation code) for Dense-BN-ReLU

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.asarray(x, jnp.float32).reshape((x.shape[0], -1))
        x = HashDropout(self.input_dropout, deterministic=not train)(x)
        for _ in range(2):
            x = nn.Dense(self.hidden)(x)
            x = _bn(train)(nn.relu(x)) if self.bn_after_relu else nn.relu(_bn(train)(x))
            x = HashDropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class LeNet(nn.Module):
    """The paper's LeNet (``mnistconv`` in the original code), for 28x28 inputs."""

    num_classes: int = 10
    dropout: float = 0.5
    conv_implementation: str = "auto"  # see PatchConv
    bn_after_pool: bool = False  # conv-ReLU-pool-BN (Deep Relaxation code) for conv-BN-ReLU-pool
    dense_bn: bool = True  # BatchNorm on the 500-unit layer (absent in the Deep Relaxation code)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        for i, (features, pool) in enumerate(((20, 3), (50, 2))):
            x = PatchConv(features, (5, 5), self.conv_implementation, name=f"Conv_{i}")(x)
            if self.bn_after_pool:
                x = _bn(train)(max_pool_tiles(nn.relu(x), pool))
            else:
                x = max_pool_tiles(nn.relu(_bn(train)(x)), pool)
            x = HashDropout(self.dropout, deterministic=not train)(x)
        x = x.reshape((x.shape[0], -1))  # 50 * 2 * 2 = 200 for 28x28 inputs
        x = nn.Dense(500)(x)
        x = nn.relu(_bn(train)(x) if self.dense_bn else x)
        x = HashDropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class AllCNN(nn.Module):
    """All-CNN-C with BatchNorm (``allcnn``), c1 = 96, c2 = 192, for 32x32 inputs."""

    num_classes: int = 10
    c1: int = 96
    c2: int = 192
    input_dropout: float = 0.2
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def convbn(x: jax.Array, features: int, kernel: int, stride: int = 1) -> jax.Array:
            pad = (kernel - 1) // 2  # PyTorch-style symmetric padding (1 for 3x3, 0 for 1x1)
            x = nn.Conv(
                features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad),) * 2
            )(x)
            return nn.relu(_bn(train)(x))

        x = jnp.asarray(x, jnp.float32)
        x = HashDropout(self.input_dropout, deterministic=not train)(x)
        x = convbn(x, self.c1, 3)
        x = convbn(x, self.c1, 3)
        x = convbn(x, self.c1, 3, stride=2)
        x = HashDropout(self.dropout, deterministic=not train)(x)
        x = convbn(x, self.c2, 3)
        x = convbn(x, self.c2, 3)
        x = convbn(x, self.c2, 3, stride=2)
        x = HashDropout(self.dropout, deterministic=not train)(x)
        x = convbn(x, self.c2, 3)
        x = convbn(x, self.c2, 3)
        x = convbn(x, self.num_classes, 1)
        return jnp.mean(x, axis=(1, 2))  # global average pooling (8x8 for 32x32 inputs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnistfc": MnistFC,
    "lenet": LeNet,
    "mnistconv": LeNet,
    "allcnn": AllCNN,
    # The variants of the Deep Relaxation research code (its ``models.py``), which
    # produced that paper's MNIST cells: lighter dropout, BatchNorm moved after the
    # nonlinearity (and the pooling), none on LeNet's 500-unit layer.
    "mnistfc-dr": functools.partial(MnistFC, dropout=0.2, bn_after_relu=True),
    "lenet-dr": functools.partial(LeNet, dropout=0.25, bn_after_pool=True, dense_bn=False),
}

# The input (height, width, channels) each network is trained on in the papers: MNIST's
# 28x28 grey images, CIFAR-10's 32x32 colour ones (All-CNN's final pooling assumes 8x8).
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    name: (32, 32, 3) if name == "allcnn" else (28, 28, 1) for name in MODELS
}


def get_module(name: str, num_classes: int = 10) -> nn.Module:
    """The linen module called ``name`` (see :data:`MODELS`)."""
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[key](num_classes=num_classes)


def get_model(name: str, num_classes: int = 10) -> FunctionalModel:
    """:class:`FunctionalModel` of the paper's network ``name``.

    ``name`` is ``"mnistfc"``, ``"lenet"`` (alias ``"mnistconv"``), ``"allcnn"``,
    or ``"mnistfc-dr"`` / ``"lenet-dr"`` (the Deep Relaxation code's variants); unknown
    names raise ``ValueError`` listing the valid ones.
    """
    return functional(get_module(name, num_classes))


def _linen_functional(module: nn.Module, train_kwarg: str | None) -> FunctionalModel:
    def mode(train: bool) -> dict[str, bool]:
        return {train_kwarg: train} if train_kwarg else {}

    def init(key: jax.Array, sample_input: jax.Array) -> tuple[Params, ModelState]:
        variables = dict(module.init({"params": key}, sample_input, **mode(False)))
        params = variables.pop("params", {})
        return params, variables

    def apply(
        params: Params,
        model_state: ModelState,
        x: jax.Array,
        *,
        train: bool,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, ModelState]:
        variables = {"params": params, **model_state}
        rngs = {"dropout": dropout_key} if dropout_key is not None else None
        if train and model_state:
            logits, updates = module.apply(
                variables, x, rngs=rngs, mutable=list(model_state), **mode(True)
            )
            return logits, {**model_state, **updates}
        return module.apply(variables, x, rngs=rngs, **mode(train)), model_state

    def feed_statistics(params: Params, model_state: ModelState, x: jax.Array) -> ModelState:
        if not model_state:
            return model_state
        with nn.intercept_methods(_skip_dropout):
            _, updates = module.apply(
                {"params": params, **model_state}, x, mutable=list(model_state), **mode(True)
            )
        return {**model_state, **updates}

    return FunctionalModel(init, apply, feed_statistics)


def _skip_dropout(next_fun, args, kwargs, context):
    """A linen method interceptor that makes every ``nn.Dropout`` the identity."""
    if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
        return args[0] if args else kwargs["inputs"]
    return next_fun(*args, **kwargs)


def _nnx_functional(model: nnx.Module) -> FunctionalModel:
    graphdef, params, rng_state, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)
    params0 = nnx.to_pure_dict(params)
    rng0 = nnx.to_pure_dict(rng_state)
    rest0 = nnx.to_pure_dict(rest)
    tags = sorted({v.tag for _, v in nnx.to_flat_state(rng_state) if isinstance(v, nnx.RngKey)})

    def init(key: jax.Array, sample_input: jax.Array) -> tuple[Params, ModelState]:
        del key, sample_input  # an nnx module is already initialised (by its own nnx.Rngs)
        return params0, rest0

    def apply(
        params: Params,
        model_state: ModelState,
        x: jax.Array,
        *,
        train: bool,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, ModelState]:
        # Merging pure dicts builds fresh Variables: the user's module is never mutated.
        m = nnx.merge(graphdef, params, rng0, model_state)
        if train:
            m.train()
        else:
            m.eval()
        if tags:
            if dropout_key is not None:
                keys = {t: jax.random.fold_in(dropout_key, i) for i, t in enumerate(tags)}
                nnx.reseed(m, **keys)
            elif train:
                raise ValueError("train=True needs a dropout_key for this nnx model's RNG streams")
        logits = m(x)
        if not train:
            return logits, model_state
        _, _, _, new_rest = nnx.split(m, nnx.Param, nnx.RngState, ...)
        return logits, nnx.to_pure_dict(new_rest)

    def feed_statistics(params: Params, model_state: ModelState, x: jax.Array) -> ModelState:
        if not model_state:
            return model_state
        m = nnx.merge(graphdef, params, rng0, model_state)
        m.train()
        m.set_attributes(nnx.Dropout, deterministic=True, raise_if_not_found=False)
        m(x)
        _, _, _, new_rest = nnx.split(m, nnx.Param, nnx.RngState, ...)
        return nnx.to_pure_dict(new_rest)

    return FunctionalModel(init, apply, feed_statistics)


def functional(
    model: nn.Module | nnx.Module, *, train_kwarg: str | None = "train"
) -> FunctionalModel:
    """Wrap a Flax model as a :class:`FunctionalModel`.

    * ``flax.linen`` module: called as ``module(x, train=...)`` (rename the
      keyword with ``train_kwarg``, or ``None`` if it takes none); dropout
      uses the ``"dropout"`` RNG collection; every non-``params`` collection
      (e.g. ``batch_stats``) is the model state and is mutable in train
      mode. ``init`` initialises with the given key in eval mode.
    * ``flax.nnx`` module (already initialised): split into ``nnx.Param``
      (params), RNG state (kept inside the adapter) and all other variables
      (model state, e.g. ``BatchStat``). ``apply`` merges them, switches
      ``.train()``/``.eval()``, reseeds every RNG stream from
      ``dropout_key`` and returns the updated non-param state. ``init``
      ignores its key and returns the module's current values. Dropout
      layers must be built with ``rngs=`` so that they own their stream.

    Params and state are plain nested dicts of arrays in both cases. Both also
    get ``feed_statistics`` (train-mode normalisation with every ``Dropout``
    made the identity: intercepted for linen, ``deterministic=True`` for NNX).
    """
    if isinstance(model, nnx.Module):
        return _nnx_functional(model)
    if isinstance(model, nn.Module):
        return _linen_functional(model, train_kwarg)
    raise TypeError(f"expected a flax.linen or flax.nnx Module, got {type(model).__name__}")


def count_params(params: Params) -> int:
    """Total number of scalars in a pytree of arrays or of their shapes.

    Leaves may be ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape(model.init, ...)``),
    which counts a network's parameters without initialising it.
    """
    return sum(
        math.prod(p.shape) if hasattr(p, "shape") else int(jnp.size(p))
        for p in jax.tree_util.tree_leaves(params)
    )
