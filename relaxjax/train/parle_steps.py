"""The training step of ``relaxjax train --optimizer parle`` and its device layout.

Parle (Chaudhari et al., *Parle: parallelizing stochastic gradient descent*,
2017) runs n replicas of Entropy-SGD, each on its own mini-batches, coupled
to a reference x̄ (``relaxjax.parle``). In the training loop:

* ``TrainState.params`` is the reference x̄, the network the run produces
  and evaluates; ``TrainState.opt_state`` is the ``ParleState`` holding all
  replicas, their optimizer states and Langevin keys (so checkpoints and
  ``--resume`` carry every replica); ``TrainState.model_state`` holds each
  replica's BatchNorm statistics, stacked on the replica axis.
* **Data.** Outer step s of an epoch gives replica a the mini-batches
  ``perm[((s·n + a)·L + ℓ)·B : … + B]``, ℓ = 0 … L − 1: disjoint streams from
  the epoch's permutation. One outer step therefore consumes n·L mini-batches,
  and an *effective epoch* (a pass of gradient evaluations over the training
  set, counting every replica's) is ``N // (B·L·n)`` outer steps.
* **Evaluation** uses x̄ with the replicas' averaged BatchNorm running
  statistics (the authors' code instead re-estimated them with a pass over
  the training data); as the elastic coupling grows the replicas and x̄
  coincide.
* **Layout.** With ``--devices``, replicas lie on the mesh axis ``'replica'``
  and each replica's mini-batches on ``'data'`` (``relaxjax.core.mesh``); the data
  set is replicated on every device and each device gathers its own slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from relaxjax import models as models_lib
from relaxjax.core.mesh import DATA_AXIS, REPLICA_AXIS, constrain, place
from relaxjax.core.parle import Parle, replica_map
from relaxjax.train.config import TrainState
from relaxjax.train.inputs import crop_flip
from relaxjax.train.steps import cross_entropy

__all__ = ["average_model_state", "make_parle_train_step", "parle_state", "place_parle_state"]


def parle_state(state: TrainState, num_replicas: int) -> TrainState:
    """A fresh ``TrainState`` with the model state (BatchNorm statistics) stacked per replica."""
    stacked = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (num_replicas, *jnp.shape(x))), state.model_state
    )
    return state._replace(model_state=stacked)


def place_parle_state(state: TrainState, mesh: Mesh | None) -> TrainState:
    """Replica-stacked parts on the ``'replica'`` axis, the rest (x̄, keys, sums) replicated."""
    if mesh is None:
        return state
    stacked = P(REPLICA_AXIS)
    return TrainState(
        place(state.step, mesh),
        place(state.params, mesh),
        place(state.model_state, mesh, stacked),
        place(state.opt_state, mesh, stacked),
        place(state.key, mesh),
        place(state.epoch_sums, mesh),
    )


def average_model_state(model_state: Any) -> Any:
    """The replicas' BatchNorm statistics averaged, used to evaluate x̄."""
    return jax.tree.map(lambda x: jnp.mean(x, axis=0).astype(x.dtype), model_state)


def make_parle_train_step(
    model: models_lib.FunctionalModel,
    tx: Parle,
    num_steps: int,
    batch_size: int,
    *,
    augment: bool = False,
    mesh: Mesh | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """One jitted Parle outer step: ``step(state, images, labels, perm, step_in_epoch)``.

    Every replica evaluates ∇f at xᵃ on its mini-batch 0 in train mode (its
    BatchNorm statistics are kept) and its inner mini-batches with
    ``grad_fn`` (statistics discarded, own dropout keys), as
    ``relaxjax.train.make_train_step`` does for one model. Reported loss and
    error are the replicas' mean on their mini-batch 0.
    """
    n, L, B = tx.num_replicas, num_steps, batch_size
    batch_spec = P(DATA_AXIS)  # a replica's batch axis; the replica axis is manual

    def loss_fn(params, model_state, images, labels, dropout_key):
        logits, new_model_state = model.apply(
            params, model_state, images, train=True, dropout_key=dropout_key
        )
        return cross_entropy(logits, labels), (new_model_state, logits)

    def train_step(state: TrainState, images, labels, perm, step_in_epoch):
        key, step_key = jax.random.split(state.key)
        windows = jax.lax.dynamic_slice_in_dim(perm, step_in_epoch * n * L * B, n * L * B)
        windows = windows.reshape(n, L, B)
        replica_keys = jax.random.split(step_key, n)

        def batch(window, replica_key, i):
            augment_key = jax.random.split(jax.random.fold_in(replica_key, 1), L)[i]
            x = jnp.take(images, window[i], axis=0)
            if augment:
                x = crop_flip(augment_key, x)
            return constrain((x, jnp.take(labels, window[i], axis=0)), mesh, batch_spec)

        def dropout_key(replica_key, i):
            return jax.random.split(jax.random.fold_in(replica_key, 0), L)[i]

        def first(params, model_state, window, replica_key):
            x0, y0 = batch(window, replica_key, 0)
            (loss, (new_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, model_state, x0, y0, dropout_key(replica_key, 0)
            )
            return grads, new_state, loss, jnp.mean(jnp.argmax(logits, -1) != y0)

        grads, model_state, losses, errors = replica_map(first, mesh=mesh)(
            state.opt_state.replicas, state.model_state, windows, replica_keys
        )

        def grad_fn(y, i, data):
            window, replica_key, replica_model_state = data
            x, labels_i = batch(window, replica_key, i)
            return jax.grad(loss_fn, has_aux=True)(
                y, replica_model_state, x, labels_i, dropout_key(replica_key, i)
            )[0]

        replica_data = (windows, replica_keys, state.model_state)
        updates, opt_state = tx.update(
            grads, state.opt_state, state.params, grad_fn=grad_fn, replica_data=replica_data
        )
        params = optax.apply_updates(state.params, updates)
        loss, error = jnp.mean(losses), jnp.mean(errors)
        sums = state.epoch_sums + jnp.stack([loss, error]).astype(state.epoch_sums.dtype)
        new_state = TrainState(state.step + 1, params, model_state, opt_state, key, sums)
        return place_parle_constraints(new_state, mesh), {"loss": loss, "error": error}

    return jax.jit(train_step, donate_argnums=0)


def place_parle_constraints(state: TrainState, mesh: Mesh | None) -> TrainState:
    """``place_parle_state``'s layout as sharding constraints (inside jit)."""
    if mesh is None:
        return state
    stacked = P(REPLICA_AXIS)
    return state._replace(
        params=constrain(state.params, mesh),
        model_state=constrain(state.model_state, mesh, stacked),
        opt_state=constrain(state.opt_state, mesh, stacked),
    )
