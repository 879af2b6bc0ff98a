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
"""The normalisation of the augmented Hamiltonian's penalties: ``"sum"`` or ``"mean"``."""


# --------------------------------------------------------------------------------------
# Layer sequences
# --------------------------------------------------------------------------------------


@struct.dataclass
class LayerSequence:
    """A network as a sequence of layers ``x_{t+1} = f_t(x_t, θ_t)``.

    A pytree: ``params`` (a tuple, one parameter pytree per layer) are the leaves;
    ``apply_fns`` and ``regularizers`` are static.  Layers with no parameters (e.g. a
    reshape or a read-out) are allowed and are skipped by the maximisation step.
    Build it with :func:`from_pairs` or :func:`sequential`; calling it runs the network.

    Attributes:
      params: one parameter pytree θ_t per layer (``{}`` for parameter-free layers).
      apply_fns: one ``apply_fn(params, x) -> x_next`` per layer (static).
      regularizers: one ``L_t(params)`` or None per layer (static).

    References:
      Li, Chen, Tai, E, *Maximum Principle Based Algorithms for Deep Learning* (JMLR
      2018), the network as a discrete-time control system. ``docs/msa.md`` §1,
      ``docs/emsa.md`` §1.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import msa
      >>> layer = lambda w, x: jnp.tanh(x @ w)  # f_t(x, θ) with θ = w
      >>> net = msa.from_pairs([(layer, jnp.eye(2)), (layer, 2 * jnp.eye(2))])
      >>> len(net), net(jnp.ones((3, 2))).shape
      (2, (3, 2))
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
        """Network output ``x_T`` for input ``x_0 = x``.

        Args:
          x: a batch of inputs ``x_0`` (leading batch axis).

        Returns:
          ``x_T``, the last state of :func:`forward`.
        """
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

    Args:
      pairs: ``(apply_fn, params)`` per layer, in order.
      regularizer: None, one ``L_t(params) -> scalar`` for every layer, or a sequence
        with one callable (or None) per layer.

    Returns:
      The :class:`LayerSequence`.

    Raises:
      ValueError: for an empty or malformed ``pairs`` or ``regularizer``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import msa
      >>> layer = lambda w, x: jnp.tanh(x @ w)  # f_t(x, θ) with θ = w
      >>> net = msa.from_pairs([(layer, jnp.eye(2))] * 3, regularizer=msa.l2_regularizer(0.5))
      >>> net.num_layers, float(net.regularizers[0](net.params[0]))  # 0.5/2 · Σ θ²
      (3, 0.5)
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

    Args:
      modules: linen modules, one per layer; each is called as ``module(x)``.
      sample_input: a batch of inputs ``x_0`` (only its shape and dtype are used).
      key: PRNG key of the initialisation (split over the modules).
      regularizer: as in :func:`from_pairs`.

    Returns:
      The :class:`LayerSequence` of the initialised modules.

    Raises:
      ValueError: for something other than a non-empty list of linen modules, or a
        module with variable collections other than ``"params"``.

    Example:
      >>> import flax.linen as nn
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import msa
      >>> dense = nn.Dense(4)
      >>> net = msa.sequential([dense, dense], jnp.zeros((1, 4)), jax.random.key(0))
      >>> net.num_layers, net.apply_fns[0] is net.apply_fns[1]  # one apply, shared
      (2, True)
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
    """``L(θ) = (weight/2) Σ θ²`` over all parameter leaves.

    Args:
      weight: the L2 weight.

    Returns:
      The regulariser ``L(params) -> scalar``.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import msa
      >>> float(msa.l2_regularizer(0.5)({"w": jnp.ones(3), "b": jnp.ones(1)}))
      1.0
    """

    def reg(params: PyTree) -> Array:
        return 0.5 * weight * sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))

    return reg


def regularization(reg: Regularizer | None, params: PyTree) -> Array:
    return jnp.zeros(()) if reg is None else jnp.asarray(reg(params))


def forward(layers: LayerSequence, x0: Array) -> list[Array]:
    """States ``[x_0, …, x_T]`` with ``x_{t+1} = f_t(x_t, θ_t)``.

    Args:
      layers: the network.
      x0: a batch of inputs (leading batch axis).

    Returns:
      The T + 1 states, a list of arrays.

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      state equation. ``docs/msa.md`` §1.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import msa
      >>> layer = lambda w, x: jnp.tanh(x @ w)  # f_t(x, θ) with θ = w
      >>> net = msa.from_pairs([(layer, jnp.eye(2))] * 3)
      >>> [x.shape for x in msa.forward(net, jnp.ones((5, 2)))]
      [(5, 2), (5, 2), (5, 2), (5, 2)]
    """
    xs = [x0]
    for fn, p in zip(layers.apply_fns, layers.params, strict=True):
        xs.append(fn(p, xs[-1]))
    return xs
