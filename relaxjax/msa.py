"""Maximum-principle training: the method of successive approximations (MSA, E-MSA).

Implements the algorithms of Q. Li, L. Chen, C. Tai and W. E, *Maximum Principle
Based Algorithms for Deep Learning*, JMLR 18(165), 2018 (arXiv:1710.09513).

A network is a discrete-time control system (one entry of a :class:`LayerSequence`
per layer)::

    x_{t+1}^i = f_t(x_t^i, θ_t),   t = 0 … T-1,   J(θ) = (1/S) Σ_i Φ(x_T^i, y^i) + Σ_t L_t(θ_t)

with S the batch size, Φ the per-sample loss and L_t an optional regulariser.
With the layer Hamiltonian (summed over the batch)

    H_t(x, p, θ) = Σ_i p^i · f_t(x^i, θ) − L_t(θ)

the co-states are ``p_T = −(1/S) ∇_x Φ(x_T, y)`` and ``p_t = ∇_x H_t(x_t, p_{t+1}, θ_t)
= (∂f_t/∂x)ᵀ p_{t+1}``, i.e. minus the back-propagated gradient of the batch-mean
loss with respect to the activation ``x_t``.  One E-MSA iteration is

1. forward pass storing ``x_0 … x_T`` (current θ);
2. backward pass for ``p_T … p_0``;
3. for every layer independently, ``θ_t ← argmax_θ H̃_t(x_t, p_{t+1}, θ, x_{t+1}, p_t)``
   with the augmented Hamiltonian

       H̃_t(x, p, θ, v, q) = H_t(x, p, θ) − (ρ/2)|v − f_t(x, θ)|² − (ρ/2)|q − ∇_x H_t(x, p, θ)|².

   ρ = 0 is the basic MSA (which can diverge).  The maximisation is approximate:
   a few steps (default: 10, as in the paper) of an inner Optax optimizer
   (default :func:`optax.lbfgs`) on ``−H̃_t``, jit-compiled per layer.

**Penalty convention.**  With ``penalty="sum"`` (default, the literal formula) the
two squared norms are sums over the batch *and* the features, while the loss is a
batch mean (so ``p = O(1/S)``): the state penalty then grows like ``S`` relative to
``H_t`` and the co-state penalty shrinks like ``1/S``, i.e. the effective ρ depends
on the batch size.  ``penalty="mean"`` rescales both terms to per-sample quantities,
``(ρ/2)(1/S)Σ_i|v^i − f_t(x^i, θ)|² + (ρ/2)(1/S)Σ_i|S q^i − S ∇_x H_t^i|²``,
which makes ρ independent of the batch size.

Example::

    layers = msa.sine_net(jax.random.key(0))
    opt = msa.emsa(msa.squared_error, rho=1.0)
    state = opt.init(layers)
    state, metrics = opt.step(state, (x, y))  # metrics.loss, metrics.hamiltonian_gain
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from relaxjax.models import max_pool_tiles

__all__ = [
    "Broadcast",
    "DenseClassifier",
    "LayerResult",
    "LayerSequence",
    "MSA",
    "MSAMetrics",
    "MSAState",
    "augmented_hamiltonian",
    "basic_msa",
    "costates",
    "emsa",
    "forward",
    "from_pairs",
    "hamiltonian",
    "l2_regularizer",
    "layer_maximizer",
    "paper_mnist_net",
    "Projection",
    "ResidualConv",
    "ResidualTanh",
    "sequential",
    "sine_dataset",
    "sine_net",
    "softmax_cross_entropy",
    "squared_error",
    "SumReadout",
    "total_loss",
]

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


def _is_sequence(obj: Any) -> bool:
    return isinstance(obj, Sequence) and not isinstance(obj, (str, bytes))


def _check_sequence(obj: Any, what: str) -> list:
    if isinstance(obj, nn.Module) or not _is_sequence(obj):
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
    if not _is_sequence(regularizer) or len(regularizer) != n:
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
        if not _is_sequence(pair) or len(pair) != 2 or not callable(pair[0]):
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


def _regularization(reg: Regularizer | None, params: PyTree) -> Array:
    return jnp.zeros(()) if reg is None else jnp.asarray(reg(params))


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


def squared_error(outputs: Array, targets: Array) -> Array:
    """Per-sample ``Φ(x, y) = ½|x − y|²`` (summed over non-batch axes), shape ``(S,)``."""
    diff = (outputs - targets).reshape(outputs.shape[0], -1)
    return 0.5 * jnp.sum(jnp.square(diff), axis=-1)


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
    """Per-sample softmax cross-entropy with integer ``labels``, shape ``(S,)``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


# --------------------------------------------------------------------------------------
# Forward / backward passes and Hamiltonians
# --------------------------------------------------------------------------------------


def forward(layers: LayerSequence, x0: Array) -> list[Array]:
    """States ``[x_0, …, x_T]`` with ``x_{t+1} = f_t(x_t, θ_t)``."""
    xs = [x0]
    for fn, p in zip(layers.apply_fns, layers.params, strict=True):
        xs.append(fn(p, xs[-1]))
    return xs


def _data_loss(loss_fn: LossFn, outputs: Array, targets: Array) -> Array:
    losses = loss_fn(outputs, targets)
    if jnp.ndim(losses) != 1 or losses.shape[0] != outputs.shape[0]:
        raise ValueError(
            "loss_fn must return per-sample losses of shape (batch,), got shape "
            f"{jnp.shape(losses)} for outputs of shape {outputs.shape}."
        )
    return jnp.mean(losses)


def costates(
    layers: LayerSequence, states: Sequence[Array], targets: Array, loss_fn: LossFn
) -> list[Array]:
    """Co-states ``[p_0, …, p_T]``.

    ``p_T = −(1/S) ∇_x Φ(x_T, y)`` (loss = batch mean) and ``p_t = (∂f_t/∂x)ᵀ p_{t+1}``
    computed with :func:`jax.vjp` per layer; ``p_t`` equals minus the gradient of the
    batch-mean loss with respect to ``x_t``.
    """
    p = -jax.grad(lambda xT: _data_loss(loss_fn, xT, targets))(states[-1])
    ps = [p]
    for t in reversed(range(layers.num_layers)):
        fn, params = layers.apply_fns[t], layers.params[t]
        _, vjp = jax.vjp(lambda x, fn=fn, params=params: fn(params, x), states[t])
        p = vjp(p)[0]
        ps.append(p)
    return ps[::-1]


def total_loss(layers: LayerSequence, x0: Array, targets: Array, loss_fn: LossFn) -> Array:
    """``J(θ) = (1/S) Σ_i Φ(x_T^i, y^i) + Σ_t L_t(θ_t)`` on one batch."""
    data = _data_loss(loss_fn, forward(layers, x0)[-1], targets)
    reg = sum(
        _regularization(r, p) for r, p in zip(layers.regularizers, layers.params, strict=True)
    )
    return data + reg


def _forward_backward(loss_fn: LossFn, layers: LayerSequence, x0: Array, targets: Array):
    xs = forward(layers, x0)
    ps = costates(layers, xs, targets, loss_fn)
    data = _data_loss(loss_fn, xs[-1], targets)
    reg = sum(
        (_regularization(r, p) for r, p in zip(layers.regularizers, layers.params, strict=True)),
        jnp.zeros(()),
    )
    return xs, ps, data, reg


def hamiltonian(
    apply_fn: ApplyFn,
    params: PyTree,
    x: Array,
    p: Array,
    regularizer: Regularizer | None = None,
) -> Array:
    """``H_t(x, p, θ) = Σ_i p^i · f_t(x^i, θ) − L_t(θ)`` (sum over batch and features).

    ``x`` is ``x_t`` and ``p`` is ``p_{t+1}`` (same shape as ``f_t(x, θ)``).
    """
    return jnp.vdot(p, apply_fn(params, x)) - _regularization(regularizer, params)


def augmented_hamiltonian(
    apply_fn: ApplyFn,
    params: PyTree,
    x: Array,
    p: Array,
    v: Array,
    q: Array,
    rho: float | Array,
    regularizer: Regularizer | None = None,
    penalty: Penalty = "sum",
) -> Array:
    """``H̃_t = H_t(x,p,θ) − (ρ/2)|v − f_t(x,θ)|² − (ρ/2)|q − ∇_x H_t(x,p,θ)|²``.

    ``x = x_t``, ``p = p_{t+1}``, ``v = x_{t+1}`` and ``q = p_t`` of the current
    iterate.  ``penalty="sum"``: norms summed over batch and features (literal
    formula); ``penalty="mean"``: state term divided by the batch size S, co-state
    term multiplied by S (per-sample scaling, see the module docstring).
    """
    fx, vjp = jax.vjp(lambda x_: apply_fn(params, x_), x)
    (grad_x,) = vjp(p)  # ∇_x H_t = (∂f/∂x)ᵀ p; L_t does not depend on x
    h = jnp.vdot(p, fx) - _regularization(regularizer, params)
    state_pen = jnp.sum(jnp.square(v - fx))
    costate_pen = jnp.sum(jnp.square(q - grad_x))
    if penalty == "mean":
        s = x.shape[0]
        state_pen, costate_pen = state_pen / s, costate_pen * s
    elif penalty != "sum":
        raise ValueError(f"penalty must be 'sum' or 'mean', got {penalty!r}.")
    return h - 0.5 * rho * (state_pen + costate_pen)


# --------------------------------------------------------------------------------------
# Layer-wise maximisation
# --------------------------------------------------------------------------------------


class LayerResult(NamedTuple):
    """Outcome of one layer's maximisation (all evaluated at the stored x, p, v, q)."""

    params: PyTree
    h_old: Array  # H_t(θ_old)
    aug_old: Array  # H̃_t(θ_old) (= H_t(θ_old) up to rounding: penalties vanish there)
    h_new: Array  # H_t(θ_new)
    aug_new: Array  # H̃_t(θ_new)


def _tree_select(pred: Array, a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda u, w: jnp.where(pred, u, w), a, b)


def _has_stored_value(opt_state: PyTree) -> bool:
    try:
        return (
            optax.tree_utils.tree_get(opt_state, "value") is not None
            and optax.tree_utils.tree_get(opt_state, "grad") is not None
        )
    except KeyError:  # several matches: do not guess
        return False


def layer_maximizer(
    inner_optimizer: optax.GradientTransformation,
    inner_steps: int,
    *,
    penalty: Penalty = "sum",
    init_noise: float = 0.0,
    monotone: bool = True,
    unroll: bool | int = False,
) -> Callable[..., LayerResult]:
    """Return ``solve(apply_fn, regularizer, params, x, p, v, q, rho, key) -> LayerResult``.

    ``solve`` approximately maximises ``H̃_t(x, p, ·, v, q)`` by ``inner_steps`` steps
    of ``inner_optimizer`` on ``−H̃_t`` from ``params`` (plus ``U(−init_noise,
    init_noise)`` noise if ``init_noise > 0``).  With ``monotone=True`` the best
    iterate seen is returned, and the starting ``params`` if no iterate improves on
    them, so that ``H̃_t(new) ≥ H̃_t(old)`` holds by construction.  ``unroll`` is
    passed to the :func:`jax.lax.scan` over the inner steps.  Pure and jit-able with
    ``apply_fn``/``regularizer`` static.
    """
    tx = optax.with_extra_args_support(inner_optimizer)

    def solve(apply_fn, regularizer, params, x, p, v, q, rho, key) -> LayerResult:
        def objective(th):
            return -augmented_hamiltonian(apply_fn, th, x, p, v, q, rho, regularizer, penalty)

        start = params
        if init_noise > 0:
            leaves, treedef = jax.tree.flatten(params)
            keys = jax.random.split(key, len(leaves))
            leaves = [
                leaf + jax.random.uniform(k, leaf.shape, leaf.dtype, -init_noise, init_noise)
                for leaf, k in zip(leaves, keys, strict=True)
            ]
            start = jax.tree.unflatten(treedef, leaves)

        opt_state = tx.init(start)
        if _has_stored_value(opt_state):
            vag = optax.value_and_grad_from_state(objective)
        else:

            def vag(th, state):
                del state
                return jax.value_and_grad(objective)(th)

        old_val = objective(params)

        def body(carry, _):
            th, s, best_th, best_val = carry
            val, g = vag(th, state=s)
            better = val < best_val
            best_th = _tree_select(better, th, best_th)
            best_val = jnp.where(better, val, best_val)
            updates, s = tx.update(g, s, th, value=val, grad=g, value_fn=objective)
            return (optax.apply_updates(th, updates), s, best_th, best_val), None

        (th, _, best_th, best_val), _ = jax.lax.scan(
            body, (start, opt_state, params, old_val), None, length=inner_steps, unroll=unroll
        )
        if monotone:
            final_val = objective(th)
            better = final_val < best_val
            th = _tree_select(better, th, best_th)
        new_aug = -objective(th)
        return LayerResult(
            params=th,
            h_old=hamiltonian(apply_fn, params, x, p, regularizer),
            aug_old=-old_val,
            h_new=hamiltonian(apply_fn, th, x, p, regularizer),
            aug_new=new_aug,
        )

    return solve


# --------------------------------------------------------------------------------------
# The E-MSA optimizer
# --------------------------------------------------------------------------------------


class MSAState(NamedTuple):
    """State of :func:`emsa`: the network (parameters inside), step count, noise key."""

    layers: LayerSequence
    count: Array
    key: Array

    @property
    def params(self) -> tuple:
        return self.layers.params


class MSAMetrics(NamedTuple):
    """Diagnostics of one E-MSA iteration k on the given batch."""

    loss: Array
    """``J(θ^k)`` on the batch (data loss + regularisers), before the update."""
    data_loss: Array
    """``(1/S) Σ_i Φ(x_T^i, y^i)`` at ``θ^k``."""
    hamiltonian_gain: Array
    """``μ_k = Σ_t [H_t(x_t, p_{t+1}, θ_t^{k+1}) − H_t(x_t, p_{t+1}, θ_t^k)]``."""
    augmented_gain: Array
    """``Σ_t [H̃_t(θ_t^{k+1}) − H̃_t(θ_t^k)]`` (≥ 0 when ``monotone=True``)."""
    layer_gains: Array
    """Per-layer augmented gains, shape ``(T,)`` (0 for parameter-free layers)."""
    outputs: Array
    """Network outputs ``x_T`` at ``θ^k`` (e.g. for training accuracy)."""


class MSA(NamedTuple):
    """An E-MSA optimizer (see :func:`emsa`)."""

    init: Callable[[Any], MSAState]
    """``init(layers) -> state`` (a :class:`LayerSequence` or ``(apply_fn, params)`` pairs)."""
    step: Callable[[MSAState, tuple[Array, Array]], tuple[MSAState, MSAMetrics]]
    """``step(state, (x, y)) -> (state, metrics)``: one iteration on a (mini-)batch."""
    loss: Callable[[Any, tuple[Array, Array]], Array]
    """``loss(state_or_layers, (x, y)) -> J`` (jit-compiled)."""
    predict: Callable[[Any, Array], Array]
    """``predict(state_or_layers, x) -> x_T`` (jit-compiled)."""


def _validate_config(loss_fn, rho, inner_optimizer, inner_steps, init_noise, penalty) -> None:
    if not callable(loss_fn):
        raise ValueError(
            f"loss_fn must be callable (outputs, targets) -> (batch,), got {loss_fn!r}."
        )
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not math.isfinite(rho):
        raise ValueError(f"rho must be a finite number, got {rho!r}.")
    if rho < 0:
        raise ValueError(f"rho must be >= 0 (rho = 0 is the basic MSA), got {rho}.")
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps <= 0:
        raise ValueError(f"inner_steps must be a positive integer, got {inner_steps!r}.")
    if not (hasattr(inner_optimizer, "init") and hasattr(inner_optimizer, "update")):
        raise ValueError(
            "inner_optimizer must be an optax.GradientTransformation, got "
            f"{type(inner_optimizer).__name__}."
        )
    if not isinstance(init_noise, numbers.Real) or not init_noise >= 0:
        raise ValueError(f"init_noise must be a number >= 0, got {init_noise!r}.")
    if penalty not in ("sum", "mean"):
        raise ValueError(f"penalty must be 'sum' or 'mean', got {penalty!r}.")


def _as_layers(obj: Any) -> LayerSequence:
    if isinstance(obj, MSAState):
        return obj.layers
    if isinstance(obj, LayerSequence):
        return obj
    if isinstance(obj, nn.Module):
        raise ValueError(
            "got a single flax Module; build the layer sequence with "
            "msa.sequential([...modules...], sample_input, key)."
        )
    return from_pairs(obj)


def _has_params(params: PyTree) -> bool:
    return len(jax.tree.leaves(params)) > 0


def _group_layers(layers: LayerSequence, xs: Sequence[Array]) -> list[list[int]]:
    """Group layers (in order of first appearance) that can be vmapped together."""
    groups: dict = {}
    for t in range(layers.num_layers):
        if not _has_params(layers.params[t]):
            continue
        leaves, treedef = jax.tree.flatten(layers.params[t])
        key = (
            layers.apply_fns[t],
            layers.regularizers[t],
            treedef,
            tuple((leaf.shape, leaf.dtype) for leaf in leaves),
            (xs[t].shape, xs[t].dtype, xs[t + 1].shape, xs[t + 1].dtype),
        )
        groups.setdefault(key, []).append(t)
    return list(groups.values())


def _unpack_batch(batch: Any) -> tuple[Array, Array]:
    if not (_is_sequence(batch) and len(batch) == 2):
        raise ValueError("batch must be a pair (inputs, targets).")
    return jnp.asarray(batch[0]), jnp.asarray(batch[1])


def emsa(
    loss_fn: LossFn,
    *,
    rho: float = 1.0,
    inner_optimizer: optax.GradientTransformation | None = None,
    inner_steps: int = 10,
    init_noise: float = 0.0,
    monotone: bool = True,
    batch_layers: bool = False,
    penalty: Penalty = "sum",
    unroll_inner: bool = False,
    seed: int = 0,
) -> MSA:
    """Extended method of successive approximations (Li, Chen, Tai, E; JMLR 2018).

    Args:
      loss_fn: per-sample loss ``Φ(outputs, targets) -> (S,)``; the training loss is
        the batch mean plus the layers' regularisers ``L_t``.
      rho: penalty ``ρ ≥ 0`` of the augmented Hamiltonian; ``0`` is the basic MSA.
      inner_optimizer: Optax transformation minimising ``−H̃_t`` per layer (default
        ``optax.lbfgs()``, as the paper's L-BFGS).
      inner_steps: inner iterations per layer and outer iteration (paper: 10).
      init_noise: half-width ``a`` of ``U(−a, a)`` noise added to each layer's inner
        starting point (the authors' public code does this); 0 disables it.
      monotone: keep the best inner iterate and never accept a decrease of ``H̃_t``.
      batch_layers: vmap the maximisation over layers with equal apply function,
        regulariser and shapes (fast for fixed-step optimizers; a line-search
        L-BFGS under vmap can be slow on CPU).  Default: a Python loop over layers,
        each maximisation jit-compiled.
      penalty: ``"sum"`` or ``"mean"`` normalisation of the penalties (module doc).
      unroll_inner: unroll the inner-step loop instead of a ``lax.scan``.  On XLA:CPU
        convolutions inside loops are much slower (measured: 10 SGD steps on the
        paper CNN's 2nd layer, batch 100: 17 s in a scan, 1 s unrolled); this does
        not help L-BFGS, whose line search is itself a ``while_loop``.  Costs
        compile time proportional to ``inner_steps``.
      seed: seed of the noise key.

    Returns:
      An :class:`MSA` with ``init``, ``step``, ``loss`` and ``predict``.
    """
    if inner_optimizer is None:
        inner_optimizer = optax.lbfgs()
    _validate_config(loss_fn, rho, inner_optimizer, inner_steps, init_noise, penalty)

    solve = layer_maximizer(
        inner_optimizer,
        inner_steps,
        penalty=penalty,
        init_noise=float(init_noise),
        monotone=monotone,
        unroll=bool(unroll_inner),
    )
    solve_one = jax.jit(solve, static_argnums=(0, 1))

    @functools.cache
    def solve_many(apply_fn, regularizer):
        fn = functools.partial(solve, apply_fn, regularizer)
        return jax.jit(jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, None, 0)))

    fwd_bwd = jax.jit(functools.partial(_forward_backward, loss_fn))
    loss_jit = jax.jit(lambda layers, x, y: total_loss(layers, x, y, loss_fn))
    predict_jit = jax.jit(lambda layers, x: forward(layers, x)[-1])
    rho_value = float(rho)  # traced (weakly typed): changing ρ does not recompile

    def init(layers: Any) -> MSAState:
        layers = _as_layers(layers)
        if not any(_has_params(p) for p in layers.params):
            raise ValueError("the layer sequence has no trainable parameters.")
        return MSAState(layers=layers, count=jnp.zeros((), jnp.int32), key=jax.random.key(seed))

    def step(state: MSAState, batch: tuple[Array, Array]) -> tuple[MSAState, MSAMetrics]:
        x0, y = _unpack_batch(batch)
        layers = state.layers
        xs, ps, data, reg = fwd_bwd(layers, x0, y)
        key, sub = jax.random.split(state.key)
        keys = jax.random.split(sub, layers.num_layers)

        num = layers.num_layers
        new_params = list(layers.params)
        zero = jnp.zeros(())
        h_old, h_new, a_old, a_new = [zero] * num, [zero] * num, [zero] * num, [zero] * num

        if batch_layers:
            groups = _group_layers(layers, xs)
        else:
            groups = [[t] for t in range(num) if _has_params(layers.params[t])]
        for group in groups:
            t0 = group[0]
            fn, reg_fn = layers.apply_fns[t0], layers.regularizers[t0]
            if len(group) == 1:
                args = (layers.params[t0], xs[t0], ps[t0 + 1], xs[t0 + 1], ps[t0])
                res = solve_one(fn, reg_fn, *args, rho_value, keys[t0])
                results = [(t0, res)]
            else:
                stack = lambda *a: jnp.stack(a)  # noqa: E731
                res = solve_many(fn, reg_fn)(
                    jax.tree.map(stack, *[layers.params[t] for t in group]),
                    stack(*[xs[t] for t in group]),
                    stack(*[ps[t + 1] for t in group]),
                    stack(*[xs[t + 1] for t in group]),
                    stack(*[ps[t] for t in group]),
                    rho_value,
                    keys[jnp.asarray(group)],
                )
                results = [(t, jax.tree.map(lambda a, i=i: a[i], res)) for i, t in enumerate(group)]
            for t, r in results:
                new_params[t] = r.params
                h_old[t], h_new[t], a_old[t], a_new[t] = r.h_old, r.h_new, r.aug_old, r.aug_new

        layer_gains = jnp.stack(a_new) - jnp.stack(a_old)
        metrics = MSAMetrics(
            loss=data + reg,
            data_loss=data,
            hamiltonian_gain=jnp.sum(jnp.stack(h_new) - jnp.stack(h_old)),
            augmented_gain=jnp.sum(layer_gains),
            layer_gains=layer_gains,
            outputs=xs[-1],
        )
        new_state = MSAState(
            layers=layers.replace(params=tuple(new_params)), count=state.count + 1, key=key
        )
        return new_state, metrics

    def loss(state_or_layers: Any, batch: tuple[Array, Array]) -> Array:
        x0, y = _unpack_batch(batch)
        return loss_jit(_as_layers(state_or_layers), x0, y)

    def predict(state_or_layers: Any, x: Array) -> Array:
        return predict_jit(_as_layers(state_or_layers), jnp.asarray(x))

    return MSA(init=init, step=step, loss=loss, predict=predict)


def basic_msa(loss_fn: LossFn, **kwargs: Any) -> MSA:
    """Basic MSA: :func:`emsa` with ``ρ = 0`` (plain maximisation of ``H_t``; may diverge)."""
    if "rho" in kwargs:
        raise ValueError("basic_msa fixes rho = 0; use emsa(rho=...) for E-MSA.")
    return emsa(loss_fn, rho=0.0, **kwargs)


# --------------------------------------------------------------------------------------
# Paper networks
# --------------------------------------------------------------------------------------


class Broadcast(nn.Module):
    """Copy a scalar input into ``dim`` coordinates: ``(S, 1) -> (S, dim)``."""

    dim: int

    def __call__(self, x: Array) -> Array:
        return jnp.broadcast_to(x, x.shape[:-1] + (self.dim,))


class SumReadout(nn.Module):
    """Sum of the coordinates: ``(S, d) -> (S, 1)``."""

    def __call__(self, x: Array) -> Array:
        return jnp.sum(x, axis=-1, keepdims=True)


class ResidualTanh(nn.Module):
    """Forward-Euler step of ``Ẋ = tanh(W X + b)``: ``x + dt·tanh(W x + b)``."""

    features: int
    dt: float
    kernel_init: Callable = nn.initializers.truncated_normal(stddev=0.1)
    bias_init: Callable = nn.initializers.constant(0.1)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        z = nn.Dense(self.features, kernel_init=self.kernel_init, bias_init=self.bias_init)(x)
        return x + self.dt * jnp.tanh(z)


class Projection(nn.Module):
    """Convolution, tanh, 2×2 max-pool (the paper's projection layers)."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.tanh(nn.Conv(self.features, self.kernel_size, padding="SAME")(x))
        return max_pool_tiles(x, 2)


class ResidualConv(nn.Module):
    """``x + dt·tanh(W ⋆ x + b)`` with a ``features → features`` 3×3 convolution."""

    features: int = 32
    dt: float = 0.5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return x + self.dt * jnp.tanh(nn.Conv(self.features, (3, 3), padding="SAME")(x))


class DenseClassifier(nn.Module):
    """Flatten and a dense layer to ``num_classes`` logits (softmax in the loss)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def sine_net(
    key: Array,
    *,
    num_layers: int = 20,
    dt: float = 0.25,
    dim: int = 5,
    init: Literal["good", "zero"] = "good",
) -> LayerSequence:
    """The sine-approximation network of the paper (Ẋ = tanh(W X + b), X ∈ ℝ⁵, T = 5).

    Layers: copy the scalar input into ``dim`` coordinates (no parameters),
    ``num_layers`` forward-Euler residual layers ``x + dt·tanh(W x + b)``, sum of the
    coordinates (no parameters).  ``init="good"``: weights truncated normal std 0.1,
    biases 0.1; ``init="zero"``: all zeros (the paper's bad initialisation).  Use with
    :func:`squared_error` and :func:`sine_dataset`.
    """
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}.")
    if init == "good":
        layer = ResidualTanh(dim, dt)
    elif init == "zero":
        zeros = nn.initializers.zeros
        layer = ResidualTanh(dim, dt, kernel_init=zeros, bias_init=zeros)
    else:
        raise ValueError(f"init must be 'good' or 'zero', got {init!r}.")
    modules = [Broadcast(dim), *([layer] * num_layers), SumReadout()]
    return sequential(modules, jnp.zeros((1, 1)), key)


def sine_dataset(key: Array, n: int = 1000) -> tuple[Array, Array]:
    """``n`` samples ``x ~ U[−π, π]``, ``y = sin x``, each of shape ``(n, 1)``."""
    x = jax.random.uniform(key, (n, 1), minval=-jnp.pi, maxval=jnp.pi)
    return x, jnp.sin(x)


def paper_mnist_net(
    key: Array,
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    projection_channels: tuple[int, int] = (32, 32),
    num_residual: int = 7,
    dt: float = 0.5,
    num_classes: int = 10,
) -> LayerSequence:
    """The paper's residual CNN for MNIST (10 layers by default).

    Two projection layers (3×3 conv, tanh, 2×2 max-pool), ``num_residual`` residual
    layers ``x ← x + dt·tanh(W ⋆ x + b)`` (3×3, ``C → C`` channels, C the last
    projection width, paper: 32 and δ = 0.5), and a dense classifier producing
    logits (use :func:`softmax_cross_entropy`).  Kernel sizes and the first
    projection width are our choices (not given in the paper).  The residual
    layers share one module, so they compile once and can be vmapped together.
    """
    c = projection_channels[-1]
    residual = ResidualConv(c, dt)
    modules = [
        Projection(projection_channels[0]),
        Projection(c),
        *([residual] * num_residual),
        DenseClassifier(num_classes),
    ]
    return sequential(modules, jnp.zeros((1, *input_shape)), key)
