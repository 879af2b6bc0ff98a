"""The networks of Deep Relaxation and Entropy-SGD, and functional adapters for Flax models.

Needs the ``[flax]`` extra. :func:`functional` wraps any linen or NNX module as a
:class:`FunctionalModel`; :func:`get_model` builds the papers' networks by name (see
:mod:`relaxjax.models.registry`). The CPU-fast layers they use live in
:mod:`relaxjax.cpu.layers`.
"""

from relaxjax.cpu.layers import PatchConv, conv_as_matmul, max_pool_tiles
from relaxjax.models.functional import (
    FunctionalModel,
    ModelState,
    Params,
    count_params,
    functional,
)
from relaxjax.models.layers import (
    DROPOUT_MASKS,
    WEIGHT_INITS,
    HashDropout,
    batch_norm,
    dropout_layer,
    torch_uniform,
)
from relaxjax.models.networks import AllCNN, LeNet, MnistFC
from relaxjax.models.registry import (
    INPUT_SHAPES,
    MODELS,
    get_model,
    get_module,
    register_model,
)

__all__ = [
    "AllCNN",
    "batch_norm",
    "conv_as_matmul",
    "count_params",
    "dropout_layer",
    "DROPOUT_MASKS",
    "functional",
    "FunctionalModel",
    "get_model",
    "get_module",
    "HashDropout",
    "INPUT_SHAPES",
    "LeNet",
    "max_pool_tiles",
    "MnistFC",
    "MODELS",
    "ModelState",
    "Params",
    "PatchConv",
    "register_model",
    "torch_uniform",
    "WEIGHT_INITS",
]
