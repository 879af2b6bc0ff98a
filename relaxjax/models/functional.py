"""A functional ``(init, apply)`` adapter for any Flax model, linen or NNX."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

Params = Any
"""A pytree (nested dict) of trainable arrays."""
ModelState = dict[str, Any]
"""Non-trainable model state, e.g. ``{"batch_stats": ...}``; ``{}`` if none."""


class FunctionalModel(NamedTuple):
    """A model as two pure functions.

    ``init(key, sample_input) -> (params, model_state)``

    ``apply(params, model_state, x, *, train, dropout_key=None) ->
    (logits, new_model_state)``: in train mode dropout is on (masks drawn
    from ``dropout_key``) and BatchNorm uses and updates batch statistics;
    in eval mode dropout is off, running statistics are used and
    ``new_model_state`` is ``model_state``.

    Attributes:
      init: ``init(key, sample_input) -> (params, model_state)``.
      apply: ``apply(params, model_state, x, *, train, dropout_key=None) ->
        (logits, new_model_state)``.
      feed_statistics: see below; None if the model does not support it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.models import get_model
      >>> model = get_model("mnistfc")
      >>> params, state = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> sorted(params), sorted(state)  # shapes only: eval_shape initialises nothing
      (['BatchNorm_0', 'BatchNorm_1', 'Dense_0', 'Dense_1', 'Dense_2'], ['batch_stats'])
    """

    init: Callable[[jax.Array, jax.Array], tuple[Params, ModelState]]
    apply: Callable[..., tuple[jax.Array, ModelState]]
    feed_statistics: Callable[[Params, ModelState, jax.Array], ModelState] | None = None
    """``feed_statistics(params, model_state, x) -> new_model_state``: one forward
    pass with normalisation in train mode (batch statistics, running statistics
    updated) and dropout *off*. Used to re-estimate BatchNorm's running
    statistics before an evaluation, as the original code's "dry feed" does
    (see ``relaxjax.train.make_statistics_refresh``). None: not supported."""


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

    Args:
      model: a ``flax.linen`` module (uninitialised) or a ``flax.nnx`` module
        (initialised).
      train_kwarg: the keyword of a linen module's train/eval switch, or None if its
        ``__call__`` has none (ignored for NNX).

    Returns:
      A :class:`FunctionalModel` ``(init, apply, feed_statistics)``.

    Raises:
      TypeError: if ``model`` is neither a linen nor an NNX module.

    Example:
      >>> import flax.linen as nn
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.models import functional
      >>> model = functional(nn.Dense(3), train_kwarg=None)
      >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
      >>> logits, state = model.apply(params, state, jnp.ones((2, 4)), train=True)
      >>> logits.shape, state
      ((2, 3), {})
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

    Args:
      params: a pytree of arrays, shape-dtype structs or scalars.

    Returns:
      The number of scalars, a Python int.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax.models import count_params
      >>> count_params({"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)})
      16
    """
    return sum(
        math.prod(p.shape) if hasattr(p, "shape") else int(jnp.size(p))
        for p in jax.tree_util.tree_leaves(params)
    )
