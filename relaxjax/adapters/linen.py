"""Flax linen: a ``TrainState`` that passes ``grad_fn``, and a ``grad_fn`` from a loss.

``flax.training.train_state.TrainState.apply_gradients`` calls
``tx.update(grads, opt_state, params)`` and has no way to hand the relaxation its
``grad_fn``. :class:`RelaxTrainState` is a drop-in subclass whose ``apply_gradients``
takes ``grad_fn=`` as well; :func:`linen_grad_fn` builds that ``grad_fn`` from the
loss a linen training step already has, with a dropout key per inner step and the
BatchNorm statistics of the inner steps discarded. A linen step changes in a few lines
(``docs/adapters.md``):

* the loss takes the mini-batch (and the dropout key) as arguments;
* the step receives the L mini-batches stacked on axis 0 and evaluates the gradient
  at ``state.params`` on mini-batch 0 with key ``jax.random.fold_in(key, 0)``, as
  Flax's examples do on their one batch, keeping the BatchNorm statistics of that
  evaluation only;
* ``state.apply_gradients(grads=grads, grad_fn=linen_grad_fn(...), ...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax.linen.fp8_ops import OVERWRITE_WITH_GRADIENT
from flax.training import train_state

from relaxjax.core import GradFn

__all__ = ["RelaxTrainState", "linen_grad_fn"]


def _mini_batch(batches: Any, i: jax.Array) -> Any:
    """Mini-batch ``i`` of ``batches``: a function of ``i``, or a pytree stacked on axis 0."""
    if callable(batches):
        return batches(i)
    return jax.tree.map(lambda b: b[i], batches)


def linen_grad_fn(
    loss_fn: Callable[..., Any],
    batches: Any,
    *,
    key: jax.Array | None = None,
    has_aux: bool = False,
) -> GradFn:
    """The relaxation's ``grad_fn(params, i)`` from a linen training loss.

    ``grad_fn(params, i)`` is the gradient of ``loss_fn`` at ``params`` on mini-batch
    ``i`` of ``batches``, with the dropout key ``jax.random.fold_in(key, i)``, so every
    inner step draws fresh dropout masks. With ``has_aux``, ``loss_fn`` returns
    ``(loss, aux)`` and the aux is dropped: a loss that applies the model with
    ``mutable=["batch_stats"]`` and returns the updated statistics as its aux (as
    Flax's examples do) keeps BatchNorm in train mode in the inner steps, and the
    statistics of those evaluations at perturbed parameters are discarded. The step
    keeps the statistics of its own evaluation at ``state.params`` (mini-batch 0,
    key ``jax.random.fold_in(key, 0)``, which is also what ``grad_fn(params, 0)``
    evaluates, as ``reuse_gradient=False`` expects).

    Args:
      loss_fn: ``loss_fn(params, batch, key)`` with a ``key``, else
        ``loss_fn(params, batch)``; returns a scalar loss, or ``(loss, aux)`` with
        ``has_aux``.
      batches: the inner steps' mini-batches: a pytree of arrays stacked on axis 0
        (at least the relaxation's ``num_steps`` of them: JAX clamps an index past
        the end to the last one), or a function ``i -> batch`` of a traced int32.
      key: the step's PRNG key; inner step ``i`` passes ``jax.random.fold_in(key, i)``
        to ``loss_fn`` (e.g. as ``rngs={"dropout": key}``). None: ``loss_fn`` takes
        no key.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the aux of the inner
        steps (e.g. their BatchNorm statistics) is discarded.

    Returns:
      ``grad_fn(params, i) -> gradients`` (a :class:`relaxjax.GradFn`), gradients of
      the structure of ``params``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.adapters import linen_grad_fn
      >>> def loss_fn(params, batch, key):
      ...     kept = jax.random.bernoulli(key, 0.5, batch.shape)  # a dropout mask
      ...     return jnp.mean((params * batch * kept) ** 2)
      >>> batches = jnp.ones((3, 4))  # three mini-batches of shape (4,)
      >>> grad_fn = linen_grad_fn(loss_fn, batches, key=jax.random.key(0))
      >>> g1, g2 = grad_fn(jnp.ones(4), jnp.int32(1)), grad_fn(jnp.ones(4), jnp.int32(2))
      >>> g1.shape, bool((g1 != g2).any())  # another mini-batch, another dropout mask
      ((4,), True)
    """

    def grad_fn(params: optax.Params, i: jax.Array) -> optax.Updates:
        args = (_mini_batch(batches, i),)
        if key is not None:
            args += (jax.random.fold_in(key, i),)
        grads = jax.grad(loss_fn, has_aux=has_aux)(params, *args)
        return grads[0] if has_aux else grads

    return grad_fn


class RelaxTrainState(train_state.TrainState):
    """``flax.training.train_state.TrainState`` whose ``apply_gradients`` takes ``grad_fn``.

    A drop-in subclass: ``create`` and the fields are Flax's (subclass it to add
    fields such as ``batch_stats``, as Flax's examples do), and
    ``apply_gradients(grads=grads, grad_fn=grad_fn)`` calls
    ``tx.update(grads, opt_state, params, grad_fn=grad_fn)``, which the relaxations
    (``relaxjax.entropy_sgd``, ``relaxjax.local_entropy`` chained with an Optax
    optimizer, …) need. Without ``grad_fn`` it is Flax's ``apply_gradients``; a plain
    Optax optimizer (not a ``GradientTransformationExtraArgs``) ignores ``grad_fn``,
    as ``optax.chain`` lets its plain members ignore extra arguments, so one step
    serves both.

    Example:
      >>> import flax.linen as nn
      >>> import jax, jax.numpy as jnp, optax
      >>> import relaxjax
      >>> from relaxjax.adapters import RelaxTrainState, linen_grad_fn
      >>> model = nn.Dense(1)
      >>> x = jax.random.normal(jax.random.key(0), (3, 8, 2))  # 3 mini-batches
      >>> y = x @ jnp.array([1.0, -1.0])
      >>> tx = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=3, step_size=0.05)
      >>> state = RelaxTrainState.create(
      ...     apply_fn=model.apply, params=model.init(jax.random.key(1), x[0])["params"], tx=tx
      ... )
      >>> def loss_fn(params, batch):
      ...     inputs, targets = batch
      ...     return jnp.mean((state.apply_fn({"params": params}, inputs)[:, 0] - targets) ** 2)
      >>> @jax.jit
      ... def train_step(state, batches):
      ...     batch0 = jax.tree.map(lambda b: b[0], batches)  # the outer evaluation's
      ...     loss, grads = jax.value_and_grad(loss_fn)(state.params, batch0)
      ...     grad_fn = linen_grad_fn(loss_fn, batches)
      ...     return state.apply_gradients(grads=grads, grad_fn=grad_fn), loss
      >>> losses = []
      >>> for _ in range(20):
      ...     state, loss = train_step(state, (x, y))
      ...     losses.append(float(loss))
      >>> int(state.step), losses[-1] < losses[0]
      (20, True)
    """

    def apply_gradients(
        self, *, grads: Any, grad_fn: GradFn | None = None, **kwargs: Any
    ) -> RelaxTrainState:
        """Updates ``step``, ``params`` and ``opt_state``, and replaces ``**kwargs``.

        As Flax's ``TrainState.apply_gradients``, with ``grad_fn`` passed on to
        ``tx.update``. ``grad_fn`` takes and returns trees like ``grads``: with an
        fp8 ``_overwrite_with_gradient`` collection in ``params`` (which Flax leaves
        out of the optimizer), it gets and returns the full tree, of which only the
        ``"params"`` part reaches the optimizer.

        Args:
          grads: gradients of the structure of ``params``, evaluated at ``params``
            (for the relaxations: on mini-batch 0).
          grad_fn: ``grad_fn(params, i) -> gradients`` on mini-batch ``i``, e.g.
            from :func:`linen_grad_fn`; None passes nothing.
          **kwargs: other fields to ``replace`` (e.g. ``batch_stats``).

        Returns:
          The updated state, ``step`` incremented by one.
        """
        overwrite = OVERWRITE_WITH_GRADIENT in grads
        grads_with_opt = grads["params"] if overwrite else grads
        params_with_opt = self.params["params"] if overwrite else self.params
        extra_args = {}
        if grad_fn is not None:
            if overwrite:
                full_grad_fn, rest = grad_fn, self.params[OVERWRITE_WITH_GRADIENT]

                def grad_fn(params: optax.Params, i: jax.Array) -> optax.Updates:
                    return full_grad_fn({"params": params, OVERWRITE_WITH_GRADIENT: rest}, i)[
                        "params"
                    ]

            extra_args["grad_fn"] = grad_fn
        tx = optax.with_extra_args_support(self.tx)
        updates, new_opt_state = tx.update(
            grads_with_opt, self.opt_state, params_with_opt, **extra_args
        )
        new_params = optax.apply_updates(params_with_opt, updates)
        if overwrite:
            new_params = {
                "params": new_params,
                OVERWRITE_WITH_GRADIENT: grads[OVERWRITE_WITH_GRADIENT],
            }
        return self.replace(
            step=self.step + 1, params=new_params, opt_state=new_opt_state, **kwargs
        )
