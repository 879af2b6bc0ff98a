"""Skipping non-finite steps of transforms that evaluate gradients themselves.

``optax.apply_if_finite`` checks the *incoming* gradient and then runs its inner
transform. A relaxation evaluates L − 1 further gradients inside its inner loop,
so a non-finite value born there passes that check: the NaN reaches the
parameters and no step is counted as skipped. :func:`apply_if_finite` checks the
transform's *output* as well, and the relaxations refuse to run inside Optax's
wrapper rather than fail silently.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
import optax

from relaxjax.core.tree_utils import all_finite

__all__ = ["apply_if_finite", "refuse_optax_apply_if_finite"]


def apply_if_finite(
    inner: optax.GradientTransformation, max_consecutive_errors: int
) -> optax.GradientTransformationExtraArgs:
    """Skips a step whose incoming gradient *or* whose resulting update is not finite.

    Like ``optax.apply_if_finite``, with the same state
    (``optax.ApplyIfFiniteState``: ``notfinite_count``, ``last_finite``,
    ``total_notfinite``, ``inner_state``), but the inner transform is always run
    and its update is checked too. A skipped step returns zero updates and keeps
    the inner state, so the relaxation's count, noise key and the outer momentum
    are those of the last good step. After ``max_consecutive_errors`` consecutive
    skipped steps the non-finite update is let through, as in Optax.

    Args:
      inner: the transform to guard, e.g. ``relaxjax.entropy_sgd(...)``; its
        update's extra arguments (``grad_fn``) are passed on.
      max_consecutive_errors: how many consecutive non-finite steps are skipped
        before one is applied (an int ≥ 0).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an
      ``optax.ApplyIfFiniteState`` state.

    Raises:
      ValueError: for a negative or non-integer ``max_consecutive_errors``.

    References:
      Optax's ``apply_if_finite``, of which this is the variant for transforms that
      evaluate gradients themselves. ``docs/conventions.md`` §3 and the README's
      "Composition".

    Example:
      An inner step whose gradient is NaN is skipped and counted:

      >>> import jax, jax.numpy as jnp
      >>> import relaxjax
      >>> loss = lambda x: 0.5 * jnp.sum(x**2)
      >>> bad = lambda y, i: jnp.where(i == 2, jnp.nan, 1.0) * jax.grad(loss)(y)
      >>> tx = relaxjax.apply_if_finite(relaxjax.entropy_sgd(1.0, 1.0, num_steps=3), 5)
      >>> x = jnp.array([1.0, -2.0])
      >>> updates, state = tx.update(jax.grad(loss)(x), tx.init(x), x, grad_fn=bad)
      >>> updates.tolist(), int(state.total_notfinite)
      ([0.0, 0.0], 1)
    """
    if isinstance(max_consecutive_errors, bool) or not isinstance(max_consecutive_errors, int):
        raise ValueError(
            f"max_consecutive_errors must be a Python int, got {max_consecutive_errors!r}."
        )
    if max_consecutive_errors < 0:
        raise ValueError(f"max_consecutive_errors must be >= 0, got {max_consecutive_errors}.")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> optax.ApplyIfFiniteState:
        return optax.ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True, jnp.bool_),
            total_notfinite=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def update_fn(
        updates: optax.Updates,
        state: optax.ApplyIfFiniteState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.ApplyIfFiniteState]:
        new_updates, new_inner_state = inner.update(
            updates, state.inner_state, params, **extra_args
        )
        finite = jnp.logical_and(all_finite(updates), all_finite(new_updates))
        notfinite_count = jnp.where(
            finite, jnp.zeros([], jnp.int32), optax.safe_increment(state.notfinite_count)
        )
        accept = jnp.logical_or(finite, notfinite_count > max_consecutive_errors)
        new_updates = jax.tree.map(lambda u: jnp.where(accept, u, jnp.zeros_like(u)), new_updates)
        new_inner_state = jax.tree.map(
            lambda new, old: jnp.where(accept, new, old), new_inner_state, state.inner_state
        )
        total = jnp.where(
            finite, state.total_notfinite, optax.safe_increment(state.total_notfinite)
        )
        return new_updates, optax.ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=finite,
            total_notfinite=total,
            inner_state=new_inner_state,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


_OPTAX_GUARD = "apply_if_finite.<locals>."


def refuse_optax_apply_if_finite() -> None:
    """Raises ``ValueError`` when called (at trace time) from ``optax.apply_if_finite``.

    The relaxations call it first thing in their update. It looks up the Python
    call stack for the body of Optax's wrapper, which would check only the
    incoming gradient and let a non-finite value of the inner loop through.

    Returns:
      None; raises when the combination is unsafe.

    Raises:
      ValueError: naming :func:`relaxjax.apply_if_finite` and the outer-only
        alternative.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import relaxjax
      >>> tx = optax.apply_if_finite(relaxjax.entropy_sgd(1.0, 1.0, num_steps=1), 3)
      >>> x = jnp.ones(2)
      >>> tx.update(x, tx.init(x), x)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: optax.apply_if_finite checks only the incoming gradient...
    """
    frame = sys._getframe(1)
    depth = 0
    while frame is not None and depth < 64:
        module = frame.f_globals.get("__name__", "")
        code = frame.f_code
        # co_qualname is Python 3.11+; on 3.10 the guard's inner function's own name.
        qualname = getattr(code, "co_qualname", None)
        inside = _OPTAX_GUARD in qualname if qualname else code.co_name == "do_update"
        if module.startswith("optax") and inside:
            raise ValueError(
                "optax.apply_if_finite checks only the incoming gradient, but a relaxation "
                "evaluates L - 1 more gradients in its inner loop: a non-finite value born "
                "there would reach the parameters uncounted. Use "
                "relaxjax.apply_if_finite(tx, max_consecutive_errors), which also checks "
                "the update, or guard only the outer optimizer: optax.chain("
                "relaxjax.local_entropy(...), optax.apply_if_finite(outer, n))."
            )
        frame = frame.f_back
        depth += 1
