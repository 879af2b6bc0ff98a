"""Flax NNX: a ``grad_fn`` for the relaxations from an NNX model and its loss.

``nnx.Optimizer(model, tx, wrt=nnx.Param).update(model, grads, grad_fn=grad_fn)``
forwards ``grad_fn`` to ``tx.update`` and hands the transform pure arrays: the
parameters as ``nnx.as_pure(nnx.state(model, nnx.Param))``, an ``nnx.State`` of
arrays. So the relaxation calls ``grad_fn(params, i)`` with such a pure state, at
perturbed parameters, inside ``jax.lax.scan``, and needs gradients of the same pure
tree back. Written by hand, this trips on three things, which :func:`nnx_grad_fn`
takes care of:

* ``nnx.grad`` returns a ``State`` of ``Param`` variables, not of arrays: the tree
  does not match (the error names ``nnx.as_pure``);
* the model must be rebuilt from the traced parameters with
  ``nnx.merge(graphdef, params, rest, copy=True)``: without ``copy=True`` the
  forward pass writes BatchNorm statistics into variables of the outer trace and
  Flax raises a ``TraceContextError``;
* the rebuilt model's RNG streams hold one state for the whole loop, so every inner
  step would draw the same dropout masks; and its BatchNorm statistics, updated at
  perturbed parameters, must not reach the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from relaxjax.core import GradFn

__all__ = ["nnx_grad_fn"]


def _mini_batch(batches: Any, i: jax.Array) -> Any:
    """Mini-batch ``i`` of ``batches``: a function of ``i``, or a pytree stacked on axis 0."""
    if callable(batches):
        return batches(i)
    return jax.tree.map(lambda b: b[i], batches)


def _is_typed(key: jax.Array) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def _key_like(key: jax.Array, like: jax.Array) -> jax.Array:
    """``key`` as a typed key if ``like`` is one, else as raw ``uint32`` key data."""
    if _is_typed(like):
        return key if _is_typed(key) else jax.random.wrap_key_data(key)
    return jax.random.key_data(key) if _is_typed(key) else key


def _rng_streams(node: Any, graph: bool | None) -> list[tuple[Any, nnx.RngStream]]:
    """``(path, stream)`` of every RNG stream of ``node``, in graph order."""
    return [(p, s) for p, s in nnx.iter_graph(node, graph=graph) if isinstance(s, nnx.RngStream)]


def nnx_grad_fn(
    model: nnx.Module,
    loss_fn: Callable[[nnx.Module, Any], Any],
    batches: Any,
    *,
    key: jax.Array | None = None,
    has_aux: bool = False,
    wrt: Any = nnx.Param,
    graph: bool | None = None,
) -> GradFn:
    """The relaxation's ``grad_fn(params, i)`` from an NNX model and its loss.

    ``grad_fn(params, i)`` takes the pure state that
    ``nnx.Optimizer(model, tx, wrt=wrt).update(model, grads, grad_fn=grad_fn)`` passes
    to ``tx.update`` (``nnx.as_pure(nnx.state(model, wrt))``, at the relaxation's
    perturbed parameters), rebuilds a copy of ``model`` from it and the model's other
    state (``nnx.merge(..., copy=True)``), and returns the gradient of
    ``loss_fn(copy, batch_i)`` as the same pure state. On every call:

    * **dropout**: each RNG stream of the copy is reseeded with a key of its own for
      inner step ``i``, so every inner step draws fresh masks. The keys derive from
      ``key`` if given; otherwise from one key drawn from each of the model's streams
      when ``nnx_grad_fn`` is called (that advances them, as one forward pass would,
      so the next outer step draws other keys);
    * **BatchNorm**: the copy runs as the model is set (``model.train()``: batch
      statistics) and its updated running statistics are discarded: the model keeps
      those of the outer evaluation, the one that gave ``grads``.

    Call it inside the train step, after the outer evaluation, with the model the
    optimizer updates; the model is never modified, except the RNG streams' counts
    when ``key`` is None.

    Args:
      model: the NNX module being trained.
      loss_fn: ``loss_fn(model, batch)``, a scalar loss, or ``(loss, aux)`` with
        ``has_aux``; the same function the outer ``nnx.value_and_grad`` takes.
      batches: the inner steps' mini-batches: a pytree of arrays stacked on axis 0
        (at least the relaxation's ``num_steps`` of them: JAX clamps an index past
        the end to the last one), or a function ``i -> batch`` of a traced int32.
      key: a PRNG key for the inner steps' RNG streams (dropout); None: drawn from
        the model's streams.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the inner steps' aux is
        discarded.
      wrt: the filter of the trained variables, the ``wrt`` of ``nnx.Optimizer``.
      graph: NNX's graph mode for ``split``/``merge``, as ``nnx.Optimizer``'s
        ``graph``; None: the current ``nnx.set_graph_mode`` setting.

    Returns:
      ``grad_fn(params, i) -> gradients`` (a :class:`relaxjax.GradFn`) on pure
      states, the structure of ``nnx.as_pure(nnx.state(model, wrt))``.

    Example:
      A train step with ``nnx.Optimizer``; compared with Flax's, the step receives
      the L mini-batches stacked on axis 0, evaluates the gradient on mini-batch 0,
      and passes ``grad_fn`` to ``optimizer.update``:

      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> import relaxjax
      >>> from relaxjax.adapters import nnx_grad_fn
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.linear = nnx.Linear(2, 8, rngs=rngs)
      ...         self.norm = nnx.BatchNorm(8, rngs=rngs)
      ...         self.dropout = nnx.Dropout(0.1, rngs=rngs)
      ...         self.out = nnx.Linear(8, 1, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.out(self.dropout(nnx.relu(self.norm(self.linear(x)))))[:, 0]
      >>> model = Net(nnx.Rngs(0))
      >>> tx = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=3, step_size=0.05)
      >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
      >>> def loss_fn(model, batch):
      ...     inputs, targets = batch
      ...     return jnp.mean((model(inputs) - targets) ** 2)
      >>> @nnx.jit
      ... def train_step(model, optimizer, batches):
      ...     batch0 = jax.tree.map(lambda b: b[0], batches)  # the outer evaluation's
      ...     loss, grads = nnx.value_and_grad(loss_fn)(model, batch0)
      ...     optimizer.update(model, grads, grad_fn=nnx_grad_fn(model, loss_fn, batches))
      ...     return loss
      >>> x = jax.random.normal(jax.random.key(1), (3, 16, 2))  # 3 mini-batches
      >>> batches = (x, x @ jnp.array([1.0, -1.0]))
      >>> losses = [float(train_step(model, optimizer, batches)) for _ in range(20)]
      >>> int(optimizer.step[...]), losses[-1] < losses[0]
      (20, True)
    """
    streams = _rng_streams(model, graph)
    for path, stream in streams:
        if stream.key.shape != ():
            raise ValueError(
                f"nnx_grad_fn reseeds RNG streams with scalar keys; the stream at "
                f"{'/'.join(map(str, path))} has keys of shape {stream.key.shape}."
            )
    if key is None:  # one key from each stream, advancing it as a forward pass does
        bases = {path: stream() for path, stream in streams}
    else:
        bases = {path: jax.random.fold_in(key, j) for j, (path, _) in enumerate(streams)}
    graphdef, _, rest = nnx.split(model, wrt, ..., graph=graph)

    def reseed(copy: nnx.Module, i: jax.Array) -> None:
        """Gives every RNG stream of ``copy`` a key of its own for inner step ``i``."""
        for path, stream in _rng_streams(copy, graph):
            stream.key.set_value(_key_like(jax.random.fold_in(bases[path], i), stream.key[...]))
            stream.count.set_value(jnp.zeros((), jnp.uint32))

    def grad_fn(params: optax.Params, i: jax.Array) -> optax.Updates:
        batch = _mini_batch(batches, i)

        def loss_at(params: optax.Params) -> Any:
            copy = nnx.merge(graphdef, params, rest, copy=True)
            reseed(copy, i)
            return loss_fn(copy, batch)

        grads = jax.grad(loss_at, has_aux=has_aux)(params)
        return grads[0] if has_aux else grads

    return grad_fn
