"""The jitted steps of the training command: one outer step, evaluation, BatchNorm refresh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from relaxjax import models as models_lib
from relaxjax.core.mesh import DATA_AXIS, constrain
from relaxjax.train.config import TrainState
from relaxjax.train.inputs import crop_flip


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_train_step(
    model: models_lib.FunctionalModel,
    tx: optax.GradientTransformationExtraArgs,
    inner_steps: int,
    batch_size: int,
    *,
    augment: bool = False,
    mesh: Mesh | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """One jitted outer step: ``step(state, images, labels, perm, step_in_epoch)``.

    Mini-batch ℓ of the step holds ``perm[(s·L + ℓ)·B : (s·L + ℓ + 1)·B]`` with
    s = ``step_in_epoch``. The gradient at x on mini-batch 0 (train mode) is the
    incoming gradient and its batch statistics become the new running
    statistics; inner mini-batches ℓ ≥ 1 are evaluated by ``grad_fn`` with
    their own dropout keys, their statistics discarded (see README). With a
    ``mesh`` every mini-batch is constrained to ``P('data')`` and the new
    state to replicated.

    Args:
      model: the model (:class:`relaxjax.models.FunctionalModel`).
      tx: the optimizer (:func:`make_optimizer`); its update takes ``grad_fn``.
      inner_steps: L, the mini-batches (gradient evaluations) per outer step.
      batch_size: B.
      augment: apply :func:`crop_flip` to every mini-batch.
      mesh: a mesh with a ``'data'`` axis, or None.

    Returns:
      ``step(state, images, labels, perm, step_in_epoch) -> (state, {"loss", "error"})``,
      jitted; it donates ``state``. Loss and error are those of mini-batch 0.

    References:
      ``docs/cli.md`` §1.3 (what an outer step does), ``docs/conventions.md`` §5.

    Example:
      >>> import flax.linen as nn
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import train
      >>> from relaxjax.models import functional
      >>> images = jax.random.normal(jax.random.key(0), (64, 4, 4, 1))
      >>> labels = (images.mean(axis=(1, 2, 3)) > 0).astype(jnp.int32)
      >>> flatten = lambda x: x.reshape(len(x), -1)
      >>> model = functional(nn.Sequential([flatten, nn.Dense(2)]), train_kwarg=None)
      >>> config = train.OptimizerConfig("entropy-sgd", num_steps=2, gamma=1.0, lr=0.1)
      >>> tx = train.make_optimizer(config, outer_steps_per_epoch=4)
      >>> state = train.init_state(train.TrainConfig(), model, tx, images[:1])
      >>> step = train.make_train_step(model, tx, inner_steps=2, batch_size=8)
      >>> state, metrics = step(state, images, labels, jnp.arange(64), 0)
      >>> int(state.step), sorted(metrics)
      (1, ['error', 'loss'])
    """

    def loss_fn(params, model_state, images, labels, dropout_key):
        logits, new_model_state = model.apply(
            params, model_state, images, train=True, dropout_key=dropout_key
        )
        return cross_entropy(logits, labels), (new_model_state, logits)

    def train_step(state: TrainState, images, labels, perm, step_in_epoch):
        key, step_key = jax.random.split(state.key)
        dropout_keys = jax.random.split(jax.random.fold_in(step_key, 0), inner_steps)
        augment_keys = jax.random.split(jax.random.fold_in(step_key, 1), inner_steps)
        window = jax.lax.dynamic_slice_in_dim(
            perm, step_in_epoch * inner_steps * batch_size, inner_steps * batch_size
        ).reshape(inner_steps, batch_size)

        def batch(i):
            x = jnp.take(images, window[i], axis=0)
            if augment:
                x = crop_flip(augment_keys[i], x)
            return constrain((x, jnp.take(labels, window[i], axis=0)), mesh, P(DATA_AXIS))

        x0, y0 = batch(0)
        (loss, (model_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.model_state, x0, y0, dropout_keys[0]
        )

        def grad_fn(params, i):
            x, y = batch(i)
            return jax.grad(loss_fn, has_aux=True)(
                params, state.model_state, x, y, dropout_keys[i]
            )[0]

        updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
        params = optax.apply_updates(state.params, updates)
        error = jnp.mean(jnp.argmax(logits, -1) != y0)
        sums = state.epoch_sums + jnp.stack([loss, error]).astype(state.epoch_sums.dtype)
        new_state = TrainState(state.step + 1, params, model_state, opt_state, key, sums)
        return constrain(new_state, mesh), {"loss": loss, "error": error}

    return jax.jit(train_step, donate_argnums=0)


def make_eval_fn(
    model: models_lib.FunctionalModel, batch_size: int
) -> Callable[[Any, Any, jax.Array, jax.Array], tuple[float, float]]:
    """``evaluate(params, model_state, images, labels) -> (mean loss, error rate)``, eval mode.

    The images are evaluated in batches of ``batch_size`` (the last one padded and
    masked, so one shape compiles).

    Args:
      model: the model (:class:`relaxjax.models.FunctionalModel`).
      batch_size: the evaluation batch size.

    Returns:
      ``evaluate(params, model_state, images, labels) -> (loss, error)``, Python floats:
      the mean cross-entropy and the error rate.

    Example:
      >>> import flax.linen as nn
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import train
      >>> from relaxjax.models import functional
      >>> images = jax.random.normal(jax.random.key(0), (64, 4, 4, 1))
      >>> labels = (images.mean(axis=(1, 2, 3)) > 0).astype(jnp.int32)
      >>> flatten = lambda x: x.reshape(len(x), -1)
      >>> model = functional(nn.Sequential([flatten, nn.Dense(2)]), train_kwarg=None)
      >>> params, model_state = model.init(jax.random.key(1), images[:1])
      >>> evaluate = train.make_eval_fn(model, batch_size=48)
      >>> loss, error = evaluate(params, model_state, images, labels)
      >>> loss > 0, 0.0 <= error <= 1.0
      (True, True)
    """

    @jax.jit
    def batch_sums(params, model_state, images, labels, mask):
        logits, _ = model.apply(params, model_state, images, train=False, dropout_key=None)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        wrong = jnp.argmax(logits, -1) != labels
        return jnp.sum(losses * mask), jnp.sum(wrong * mask)

    def evaluate(params, model_state, images, labels):
        n = len(labels)
        loss_sum, wrong_sum = 0.0, 0.0
        for start in range(0, n, batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            pad = batch_size - len(y)
            mask = jnp.concatenate([jnp.ones(len(y)), jnp.zeros(pad)])
            if pad:  # keep one compiled shape
                x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
                y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
            loss, wrong = batch_sums(params, model_state, x, y, mask)
            loss_sum, wrong_sum = loss_sum + loss, wrong_sum + wrong
        return float(loss_sum) / n, float(wrong_sum) / n

    return evaluate


def make_statistics_refresh(
    model: models_lib.FunctionalModel, batch_size: int, num_batches: int
) -> Callable[[Any, Any, jax.Array, int, int], Any]:
    """``refresh(params, model_state, images, seed, step) -> model_state``, BatchNorm re-estimated.

    Before every validation the original Entropy-SGD / Deep Relaxation code
    runs the training set through the network in train mode with every
    dropout probability set to 0 (its ``dry_feed``), so that BatchNorm's
    running statistics describe the activations the evaluation sees: the
    statistics gathered during training are taken with dropout on, which
    changes the scale of every layer after a dropout. ``refresh`` does the
    same with ``model.feed_statistics``. BatchNorm puts weight 0.1 on each new
    batch (PyTorch's momentum, ``_BN_MOMENTUM`` of ``relaxjax.models``), so
    after a full pass the statistics are those of its last k batches up to a
    weight 0.9^k on everything older (0.9^50 ≈ 0.005): ``num_batches`` = 50
    random mini-batches give the original's estimate at a ninth of MNIST's
    pass. The batches depend on (seed, step) only, so a resumed run draws the
    same ones. ``model_state`` comes back unchanged when it is empty, when
    the model has no ``feed_statistics`` or when ``num_batches`` is 0.

    Args:
      model: the model (:class:`relaxjax.models.FunctionalModel`).
      batch_size: the size of each feeding batch.
      num_batches: the number of random training batches fed (0: no refresh).

    Returns:
      ``refresh(params, model_state, images, seed, step) -> model_state``.

    References:
      ``docs/cli.md`` §1.3; the original code's ``dry_feed``.

    Example:
      >>> import flax.linen as nn
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import train
      >>> from relaxjax.models import functional
      >>> images = jax.random.normal(jax.random.key(0), (64, 4, 4, 1))
      >>> labels = (images.mean(axis=(1, 2, 3)) > 0).astype(jnp.int32)
      >>> flatten = lambda x: x.reshape(len(x), -1)
      >>> model = functional(nn.Sequential([flatten, nn.Dense(2)]), train_kwarg=None)
      >>> from relaxjax.models import get_model
      >>> model = get_model("mnistfc", num_classes=2, hidden=8)  # with BatchNorm and dropout
      >>> params, model_state = jax.jit(model.init)(jax.random.key(1), images[:1])
      >>> refresh = train.make_statistics_refresh(model, batch_size=16, num_batches=2)
      >>> new_state = refresh(params, model_state, images, 0, 0)
      >>> before = model_state["batch_stats"]["BatchNorm_0"]["mean"]
      >>> after = new_state["batch_stats"]["BatchNorm_0"]["mean"]
      >>> bool(jnp.any(before != after))
      True
    """

    @jax.jit
    def feed(params, model_state, images, indices):
        return model.feed_statistics(params, model_state, jnp.take(images, indices, axis=0))

    def refresh(params, model_state, images, seed: int, step: int):
        if model.feed_statistics is None or num_batches == 0 or not jax.tree.leaves(model_state):
            return model_state
        n = len(images)
        size = min(batch_size, n)
        count = max(1, min(num_batches, n // size))
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0xD27F), step)
        order = jax.random.permutation(key, n)[: count * size].reshape(count, size)
        for indices in order:
            model_state = feed(params, model_state, images, indices)  # gather inside the jit
        return model_state

    return refresh
