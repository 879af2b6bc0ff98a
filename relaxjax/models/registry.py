"""The registry of relaxjax's networks: one name per network, shared by every caller.

The training command, the benchmarks and the notebooks look networks up here by
name (``get_model("lenet-dr")``); :func:`register_model` adds a network of your own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn

from relaxjax.models.functional import FunctionalModel, functional
from relaxjax.models.networks import AllCNN, LeNet, MnistFC

__all__ = ["INPUT_SHAPES", "MODELS", "get_model", "get_module", "register_model"]


#: The networks by registry name: ``MODELS[name](num_classes=..., **overrides)`` builds
#: the linen module (:func:`get_module`); :func:`register_model` adds to it.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnistfc": MnistFC,
    "lenet": LeNet,
    "mnistconv": LeNet,
    "allcnn": AllCNN,
    # The Entropy-SGD PyTorch port's mnistconv as revised after the paper (BatchNorm
    # before each ReLU and on the 500 units); ``lenet`` is the Lua code's, which ran
    # the paper's experiments.
    "lenet-pytorch": functools.partial(LeNet, bn_after_pool=False, dense_bn=True),
    # The variants of the Deep Relaxation research code (its ``models.py``), which
    # produced that paper's MNIST cells: lighter dropout, BatchNorm moved after the
    # nonlinearity in mnistfc (LeNet's layers are the Lua code's, as in ``lenet``).
    "mnistfc-dr": functools.partial(MnistFC, dropout=0.2, bn_after_relu=True),
    "lenet-dr": functools.partial(LeNet, dropout=0.25, bn_after_pool=True, dense_bn=False),
    # ``lenet`` initialised as the Lua code's Torch layers are (``LeNet.weight_init``).
    "lenet-torch-init": functools.partial(LeNet, weight_init="torch"),
}

#: The input (height, width, channels) each network is trained on in the papers: MNIST's
#: 28x28 grey images, CIFAR-10's 32x32 colour ones (All-CNN's final pooling assumes 8x8).
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    name: (32, 32, 3) if name == "allcnn" else (28, 28, 1) for name in MODELS
}


def register_model(
    name: str,
    constructor: Callable[..., nn.Module],
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
) -> None:
    """Adds a network to the registry (then ``get_model(name)`` and ``--model name`` find it).

    Args:
      name: the registry name (lower case).
      constructor: ``constructor(num_classes=..., **overrides) -> nn.Module``.
      input_shape: the (height, width, channels) of one input example.

    Raises:
      ValueError: if ``name`` is already registered.

    Example:
      >>> import functools
      >>> from relaxjax.models import INPUT_SHAPES, MODELS, MnistFC, get_module, register_model
      >>> register_model("mnistfc-narrow", functools.partial(MnistFC, hidden=64))
      >>> get_module("mnistfc-narrow").hidden, INPUT_SHAPES["mnistfc-narrow"]
      (64, (28, 28, 1))
      >>> del MODELS["mnistfc-narrow"], INPUT_SHAPES["mnistfc-narrow"]  # undo, for this example
    """
    key = name.lower()
    if key in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[key] = constructor
    INPUT_SHAPES[key] = tuple(input_shape)


def get_module(name: str, *, num_classes: int = 10, **overrides) -> nn.Module:
    """The linen module registered as ``name`` (see :data:`MODELS`).

    Args:
      name: a registry name, e.g. ``"mnistfc"`` or ``"lenet-dr"``.
      num_classes: the number of outputs.
      **overrides: module attributes to change, e.g. ``dropout_masks="threefry"``.

    Returns:
      The (uninitialised) Flax linen module.

    Raises:
      ValueError: for an unknown name, listing the valid ones.

    Example:
      >>> from relaxjax.models import get_module
      >>> module = get_module("lenet-dr", num_classes=100)
      >>> type(module).__name__, module.num_classes, module.dropout
      ('LeNet', 100, 0.25)
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[key](num_classes=num_classes, **overrides)


def get_model(name: str, *, num_classes: int = 10, **overrides) -> FunctionalModel:
    """The :class:`~relaxjax.models.FunctionalModel` of the network registered as ``name``.

    Args:
      name: ``"mnistfc"``, ``"lenet"`` (alias ``"mnistconv"``), ``"allcnn"``,
        ``"lenet-pytorch"`` (the PyTorch port's revised LeNet), or
        ``"mnistfc-dr"`` / ``"lenet-dr"`` (the Deep Relaxation code's variants), or
        a name added with :func:`register_model`.
      num_classes: the number of outputs.
      **overrides: module attributes to change (see :func:`get_module`).

    Returns:
      ``(init, apply, feed_statistics)`` as pure functions of plain dicts.

    Raises:
      ValueError: for an unknown name, listing the valid ones.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.models import get_model
      >>> model = get_model("mnistfc")
      >>> params, state = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
      >>> predict = jax.jit(lambda p, s, x: model.apply(p, s, x, train=False)[0])
      >>> predict(params, state, jnp.zeros((2, 28, 28, 1))).shape
      (2, 10)
    """
    return functional(get_module(name, num_classes=num_classes, **overrides))
