"""The layer-wise maximisation and the E-MSA optimizer."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from relaxjax.msa.hamiltonian import (
    augmented_hamiltonian,
    forward_backward,
    hamiltonian,
    total_loss,
)
from relaxjax.msa.layers import (
    Array,
    LayerSequence,
    LossFn,
    Penalty,
    PyTree,
    forward,
    from_pairs,
    is_sequence,
)

# --------------------------------------------------------------------------------------
# Layer-wise maximisation
# --------------------------------------------------------------------------------------


class LayerResult(NamedTuple):
    """Outcome of one layer's maximisation (all evaluated at the stored x, p, v, q).

    Attributes:
      params: the new θ_t.
      h_old: ``H_t(θ_old)``.
      aug_old: ``H̃_t(θ_old)`` (= ``H_t(θ_old)`` up to rounding: the penalties vanish
        there).
      h_new: ``H_t(θ_new)``.
      aug_new: ``H̃_t(θ_new)``.
    """

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

    Args:
      inner_optimizer: the Optax transform minimising ``−H̃_t``.
      inner_steps: the number of its steps.
      penalty: ``"sum"`` or ``"mean"`` (see :func:`augmented_hamiltonian`).
      init_noise: half-width of the uniform noise on the starting point; 0: none.
      monotone: return the best iterate seen (never worse than ``params``).
      unroll: forwarded to ``jax.lax.scan``.

    Returns:
      ``solve(apply_fn, regularizer, params, x, p, v, q, rho, key) -> LayerResult``.

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      maximisation step of E-MSA. ``docs/msa.md`` §3, ``docs/emsa.md`` §3.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from relaxjax import msa
      >>> apply_fn = lambda w, x: jnp.tanh(x * w)
      >>> w, x, p = jnp.float32(0.5), jnp.ones((4, 1)), jnp.ones((4, 1))
      >>> v, q = apply_fn(w, x), jax.grad(lambda x: jnp.vdot(p, apply_fn(w, x)))(x)
      >>> solve = msa.layer_maximizer(optax.sgd(0.1), 5)
      >>> result = jax.jit(solve, static_argnums=(0, 1))(
      ...     apply_fn, None, w, x, p, v, q, 1.0, jax.random.key(0)
      ... )
      >>> bool(result.aug_new >= result.aug_old), bool(result.params > w)  # H grows with w
      (True, True)
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
    """State of :func:`emsa`: the network (parameters inside), step count, noise key.

    Attributes:
      layers: the :class:`LayerSequence` at the current θ.
      count: the number of E-MSA iterations taken.
      key: the PRNG key of the inner starting points' noise.
    """

    layers: LayerSequence
    count: Array
    key: Array

    @property
    def params(self) -> tuple:
        """The layers' parameters θ (``layers.params``)."""
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
    """An E-MSA optimizer (see :func:`emsa`): four functions of a state or a network."""

    init: Callable[[Any], MSAState]
    """``init(layers) -> state`` (a :class:`LayerSequence` or ``(apply_fn, params)`` pairs)."""
    step: Callable[[MSAState, tuple[Array, Array]], tuple[MSAState, MSAMetrics]]
    """One iteration on a (mini-)batch, ``step(state, (x, y)) -> (state, metrics)``."""
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
    if not (is_sequence(batch) and len(batch) == 2):
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
        convolutions inside loops run much slower than outside them (measurements
        on the paper CNN: ``benchmarks/RESULTS.md``, ``docs/cpu.md`` §6); this does
        not help L-BFGS, whose line search is itself a ``while_loop``.  Costs
        compile time proportional to ``inner_steps``.
      seed: seed of the noise key.

    Returns:
      An :class:`MSA` with ``init``, ``step``, ``loss`` and ``predict``.

    Raises:
      ValueError: for a non-callable ``loss_fn``, ρ < 0 or not finite,
        ``inner_steps`` not a positive int, an ``inner_optimizer`` that is not an
        Optax transform, ``init_noise < 0`` or an unknown ``penalty``.

    References:
      Li, Chen, Tai, E, *Maximum Principle Based Algorithms for Deep Learning*, JMLR
      18(165), 2018, the extended MSA. ``docs/msa.md`` §3 and §5, ``docs/emsa.md`` §3.

    Example:
      >>> import jax, optax
      >>> from relaxjax import msa
      >>> layers = msa.sine_net(jax.random.key(0), num_layers=3)
      >>> x, y = msa.sine_dataset(jax.random.key(1), n=64)
      >>> opt = msa.emsa(msa.squared_error, rho=1.0, inner_optimizer=optax.sgd(0.05), inner_steps=3)
      >>> state = opt.init(layers)
      >>> state, metrics = opt.step(state, (x, y))
      >>> metrics.layer_gains.shape, bool(metrics.augmented_gain >= 0)
      ((5,), True)
      >>> bool(opt.loss(state, (x, y)) < metrics.loss)
      True
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

    fwd_bwd = jax.jit(functools.partial(forward_backward, loss_fn))
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
    """Basic MSA: :func:`emsa` with ``ρ = 0`` (plain maximisation of ``H_t``; may diverge).

    Args:
      loss_fn: the per-sample loss, as in :func:`emsa`.
      **kwargs: the other keyword arguments of :func:`emsa`, except ``rho``.

    Returns:
      An :class:`MSA`.

    Raises:
      ValueError: if ``rho`` is given, and as :func:`emsa`.

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      method of successive approximations. ``docs/msa.md`` §2.

    Example:
      >>> from relaxjax import msa
      >>> opt = msa.basic_msa(msa.squared_error, inner_steps=5)
      >>> type(opt).__name__, sorted(opt._fields)
      ('MSA', ['init', 'loss', 'predict', 'step'])
    """
    if "rho" in kwargs:
        raise ValueError("basic_msa fixes rho = 0; use emsa(rho=...) for E-MSA.")
    return emsa(loss_fn, rho=0.0, **kwargs)
