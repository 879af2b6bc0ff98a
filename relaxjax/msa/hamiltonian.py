"""Losses, forward and backward passes, and the (augmented) layer Hamiltonians."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from relaxjax.msa.layers import (
    ApplyFn,
    Array,
    LayerSequence,
    LossFn,
    Penalty,
    PyTree,
    Regularizer,
    forward,
    regularization,
)

# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


def squared_error(outputs: Array, targets: Array) -> Array:
    """Per-sample ``Φ(x, y) = ½|x − y|²`` (summed over non-batch axes), shape ``(S,)``.

    Args:
      outputs: the network outputs ``x_T``, leading batch axis S.
      targets: the targets, same shape.

    Returns:
      The per-sample losses, shape ``(S,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import msa
      >>> print(msa.squared_error(jnp.array([[1.0, 2.0], [0.0, 0.0]]), jnp.zeros((2, 2))))
      [2.5 0. ]
    """
    diff = (outputs - targets).reshape(outputs.shape[0], -1)
    return 0.5 * jnp.sum(jnp.square(diff), axis=-1)


def softmax_cross_entropy(logits: Array, labels: Array) -> Array:
    """Per-sample softmax cross-entropy with integer ``labels``, shape ``(S,)``.

    Args:
      logits: the network outputs, shape ``(S, classes)``.
      labels: integer class labels, shape ``(S,)``.

    Returns:
      The per-sample losses, shape ``(S,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import msa
      >>> losses = msa.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))
      >>> print(jnp.round(losses, 4))  # log 4
      [1.3863 1.3863]
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


# --------------------------------------------------------------------------------------
# Forward / backward passes and Hamiltonians
# --------------------------------------------------------------------------------------


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

    Args:
      layers: the network.
      states: the states ``[x_0, …, x_T]`` of :func:`forward`.
      targets: the batch's targets.
      loss_fn: the per-sample loss ``Φ(outputs, targets) -> (S,)``.

    Returns:
      The T + 1 co-states, a list of arrays shaped like the states.

    Raises:
      ValueError: if ``loss_fn`` does not return per-sample losses.

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      co-state (adjoint) equation of Pontryagin's maximum principle.
      ``docs/msa.md`` §1-§2.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import msa
      >>> net = msa.from_pairs([(lambda w, x: x * w, jnp.float32(2.0))])
      >>> x0, y = jnp.ones((4, 1)), jnp.zeros((4, 1))
      >>> p0, p1 = msa.costates(net, msa.forward(net, x0), y, msa.squared_error)
      >>> grad_x0 = jax.grad(lambda x: msa.total_loss(net, x, y, msa.squared_error))(x0)
      >>> bool(jnp.allclose(p0, -grad_x0))
      True
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
    """``J(θ) = (1/S) Σ_i Φ(x_T^i, y^i) + Σ_t L_t(θ_t)`` on one batch.

    Args:
      layers: the network.
      x0: the batch's inputs.
      targets: the batch's targets.
      loss_fn: the per-sample loss ``Φ(outputs, targets) -> (S,)``.

    Returns:
      J, a scalar.

    Raises:
      ValueError: if ``loss_fn`` does not return per-sample losses.

    References:
      ``docs/msa.md`` §1.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import msa
      >>> net = msa.from_pairs([(lambda w, x: x * w, jnp.float32(2.0))])
      >>> float(msa.total_loss(net, jnp.ones((4, 1)), jnp.zeros((4, 1)), msa.squared_error))
      2.0
    """
    data = _data_loss(loss_fn, forward(layers, x0)[-1], targets)
    reg = sum(regularization(r, p) for r, p in zip(layers.regularizers, layers.params, strict=True))
    return data + reg


def forward_backward(loss_fn: LossFn, layers: LayerSequence, x0: Array, targets: Array):
    xs = forward(layers, x0)
    ps = costates(layers, xs, targets, loss_fn)
    data = _data_loss(loss_fn, xs[-1], targets)
    reg = sum(
        (regularization(r, p) for r, p in zip(layers.regularizers, layers.params, strict=True)),
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

    Args:
      apply_fn: the layer ``f_t``, ``apply_fn(params, x) -> x_next``.
      params: θ.
      x: the states ``x_t`` of the batch.
      p: the co-states ``p_{t+1}``.
      regularizer: ``L_t`` or None.

    Returns:
      ``H_t``, a scalar.

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      Hamiltonian of the maximum principle. ``docs/msa.md`` §1, ``docs/emsa.md`` §2.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import msa
      >>> apply_fn = lambda w, x: x * w
      >>> float(msa.hamiltonian(apply_fn, jnp.float32(2.0), jnp.ones((3, 1)), jnp.ones((3, 1))))
      6.0
    """
    return jnp.vdot(p, apply_fn(params, x)) - regularization(regularizer, params)


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

    Args:
      apply_fn: the layer ``f_t``, ``apply_fn(params, x) -> x_next``.
      params: θ, where H̃ is evaluated.
      x: the states ``x_t`` of the current iterate.
      p: the co-states ``p_{t+1}``.
      v: the states ``x_{t+1}``.
      q: the co-states ``p_t``.
      rho: the penalty ρ ≥ 0.
      regularizer: ``L_t`` or None.
      penalty: ``"sum"`` or ``"mean"``.

    Returns:
      ``H̃_t``, a scalar; it equals ``H_t`` at the θ that produced ``v`` and ``q``.

    Raises:
      ValueError: for an unknown ``penalty``.

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      augmented Hamiltonian of E-MSA. ``docs/msa.md`` §3, ``docs/emsa.md`` §2.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import msa
      >>> apply_fn = lambda w, x: x * w
      >>> w, x, p = jnp.float32(2.0), jnp.ones((3, 1)), jnp.ones((3, 1))
      >>> v, q = apply_fn(w, x), p * w  # x_{t+1} and p_t = ∇_x H_t at θ = w
      >>> float(msa.augmented_hamiltonian(apply_fn, w, x, p, v, q, rho=1.0))  # = H_t
      6.0
      >>> float(msa.augmented_hamiltonian(apply_fn, jnp.float32(3.0), x, p, v, q, rho=1.0))
      6.0
    """
    fx, vjp = jax.vjp(lambda x_: apply_fn(params, x_), x)
    (grad_x,) = vjp(p)  # ∇_x H_t = (∂f/∂x)ᵀ p; L_t does not depend on x
    h = jnp.vdot(p, fx) - regularization(regularizer, params)
    state_pen = jnp.sum(jnp.square(v - fx))
    costate_pen = jnp.sum(jnp.square(q - grad_x))
    if penalty == "mean":
        s = x.shape[0]
        state_pen, costate_pen = state_pen / s, costate_pen * s
    elif penalty != "sum":
        raise ValueError(f"penalty must be 'sum' or 'mean', got {penalty!r}.")
    return h - 0.5 * rho * (state_pen + costate_pen)
