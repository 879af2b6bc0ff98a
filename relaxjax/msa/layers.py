"""Networks as layer sequences x_{t+1} = f_t(x_t, θ_t), the control system of E-MSA."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

PyTree = Any
Array = jax.Array
ApplyFn = Callable[[PyTree, Array], Array]
"""A layer ``f_t``: ``apply_fn(params, x) -> x_next`` on a batch ``x`` (leading batch axis)."""
Regularizer = Callable[[PyTree], Array]
"""``L_t(params) -> scalar``."""
LossFn = Callable[[Array, Array], Array]
"""Per-sample loss ``Φ``: ``loss_fn(outputs, targets) -> losses`` of shape ``(S,)``."""
Penalty = Literal["sum", "mean"]


# --------------------------------------------------------------------------------------
# Layer sequences
# --------------------------------------------------------------------------------------


@struct.dataclass
class LayerSequence:
    """A network as a sequence of layers ``x_{t+1} = f_t(x_t, θ_t)``.

    A pytree: ``params`` (a tuple, one parameter pytree per layer) are the leaves;
    ``apply_fns`` and ``regularizers`` are static.  Layers with no parameters (e.g. a
    reshape or a read-out) are allowed and are skipped by the maximisation step.
    """

    params: tuple
    apply_fns: tuple = struct.field(pytree_node=False)
    regularizers: tuple = struct.field(pytree_node=False)

    def __len__(self) -> int:
        return len(self.apply_fns)

    @property
    def num_layers(self) -> int:
        """``T``, the number of layers (including parameter-free ones)."""
        return len(self.apply_fns)

    def __call__(self, x: Array) -> Array:
        """Network output ``x_T`` for input ``x_0 = x``."""
        return forward(self, x)[-1]


def is_sequence(obj: Any) -> bool:
    return isinstance(obj, Sequence) and not isinstance(obj, (str, bytes))


def _check_sequence(obj: Any, what: str) -> list:
    if isinstance(obj, nn.Module) or not is_sequence(obj):
        raise ValueError(
            f"{what} must be a list/tuple of layers, got {type(obj).__name__}; "
            "wrap a single layer as [layer]."
        )
    if len(obj) == 0:
        raise ValueError(f"{what} is empty: a network needs at least one layer.")
    return list(obj)


def _broadcast_regularizers(regularizer: Any, n: int) -> tuple:
    if regularizer is None or callable(regularizer):
        return (regularizer,) * n
    if not is_sequence(regularizer) or len(regularizer) != n:
        raise ValueError(
            "regularizer must be None, a callable L(params), or a sequence of "
            f"{n} such entries (one per layer)."
        )
    for r in regularizer:
        if r is not None and not callable(r):
            raise ValueError(f"regularizer entries must be callables or None, got {r!r}.")
    return tuple(regularizer)


def from_pairs(
    pairs: Sequence[tuple[ApplyFn, PyTree]],
    *,
    regularizer: Regularizer | Sequence[Regularizer | None] | None = None,
) -> LayerSequence:
    """Build a :class:`LayerSequence` from ``[(apply_fn, params), ...]``.

    ``apply_fn(params, x)`` maps a batch of states ``x_t`` to ``x_{t+1}``.
    ``regularizer`` is ``L_t`` (one callable for all layers or one per layer).
    """
    pairs = _check_sequence(pairs, "pairs")
    apply_fns, params = [], []
    for i, pair in enumerate(pairs):
        if not is_sequence(pair) or len(pair) != 2 or not callable(pair[0]):
            raise ValueError(
                f"pairs[{i}] must be an (apply_fn, params) pair with a callable apply_fn, "
                f"got {type(pair).__name__}."
            )
        apply_fns.append(pair[0])
        params.append(pair[1])
    regs = _broadcast_regularizers(regularizer, len(pairs))
    return LayerSequence(params=tuple(params), apply_fns=tuple(apply_fns), regularizers=regs)


def sequential(
    modules: Sequence[nn.Module],
    sample_input: Array,
    key: Array,
    *,
    regularizer: Regularizer | Sequence[Regularizer | None] | None = None,
) -> LayerSequence:
    """Initialise a list of Flax linen modules as the layers of a :class:`LayerSequence`.

    Each module is initialised on the output of the previous one (starting from
    ``sample_input``, which must have a leading batch axis) with its own key.  The
    same module instance may appear several times: each occurrence gets its own
    parameters, and equal modules share one ``apply`` (hence one compilation and,
    with ``batch_layers=True``, one vmapped maximisation).  Only the ``"params"``
    collection is supported.
    """
    modules = _check_sequence(modules, "modules")
    for i, m in enumerate(modules):
        if not isinstance(m, nn.Module):
            raise ValueError(
                f"modules[{i}] is a {type(m).__name__}, not a flax.linen.Module; use "
                "msa.from_pairs for (apply_fn, params) pairs."
            )
    canonical: dict = {}
    apply_fns, params = [], []
    x = jax.ShapeDtypeStruct(jnp.shape(sample_input), jnp.asarray(sample_input).dtype)
    for m, k in zip(modules, jax.random.split(key, len(modules)), strict=True):
        try:  # equal modules share one apply and one compiled init
            fn, init_fn = canonical.setdefault(m, (m.apply, jax.jit(m.init)))
        except TypeError:  # unhashable module fields
            fn, init_fn = m.apply, jax.jit(m.init)
        variables = jax.eval_shape(init_fn, k, x)
        if jax.tree.leaves(variables):  # numpy zeros: no extra compilation
            variables = init_fn(k, np.zeros(x.shape, x.dtype))
        extra = set(variables) - {"params"}
        if extra:
            raise ValueError(
                f"{type(m).__name__} has variable collections {sorted(extra)}; only "
                "'params' is supported (no batch statistics or other mutable state)."
            )
        apply_fns.append(fn)
        params.append(variables)
        x = jax.eval_shape(fn, variables, x)  # shape propagation without compiling
    regs = _broadcast_regularizers(regularizer, len(modules))
    return LayerSequence(params=tuple(params), apply_fns=tuple(apply_fns), regularizers=regs)


def l2_regularizer(weight: float) -> Regularizer:
    """``L(θ) = (weight/2) Σ θ²`` over all parameter leaves."""

    def reg(params: PyTree) -> Array:
        return 0.5 * weight * sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))

    return reg


def regularization(reg: Regularizer | None, params: PyTree) -> Array:
    return jnp.zeros(()) if reg is None else jnp.asarray(reg(params))


def forward(layers: LayerSequence, x0: Array) -> list[Array]:
    """States ``[x_0, …, x_T]`` with ``x_{t+1} = f_t(x_t, θ_t)``."""
    xs = [x0]
    for fn, p in zip(layers.apply_fns, layers.params, strict=True):
        xs.append(fn(p, xs[-1]))
    return xs
