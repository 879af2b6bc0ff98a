"""``relaxjax.adapters.nnx_grad_fn`` with ``nnx.Optimizer``: a model with BatchNorm and dropout.

Everything runs under ``nnx.jit`` (eager NNX code compiles op by op, which is slower), with
one optimizer and one batch shape, so that each jitted function compiles once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import relaxjax
from relaxjax.adapters import nnx_grad_fn

NUM_STEPS = 3
TX = optax.chain(
    relaxjax.local_entropy(0.1, num_steps=NUM_STEPS, step_size=0.05, noise=1e-3),
    optax.sgd(0.05, momentum=0.9),
)
BATCHES = (NUM_STEPS, 32)


class _Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, *, rate: float = 0.3):
        self.linear = nnx.Linear(8, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
        self.dropout = nnx.Dropout(rate, rngs=rngs)
        self.out = nnx.Linear(32, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(self.dropout(nnx.relu(self.norm(self.linear(x)))))


@pytest.fixture(scope="module")
def fresh_model():
    """A new model, the same each time (built once: eager NNX initialisation is slow)."""
    built = nnx.jit(lambda: _Net(nnx.Rngs(0)))()
    return lambda: nnx.clone(built)


def _loss(model, batch):
    images, labels = batch
    logits = model(images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


def _blobs(key, shape):
    k1, k2 = jax.random.split(key)
    labels = jax.random.bernoulli(k1, 0.5, shape).astype(jnp.int32)
    centres = jnp.where(labels[..., None] == 1, 1.0, -1.0) * jnp.ones((*shape, 8))
    return centres + 0.8 * jax.random.normal(k2, (*shape, 8)), labels


def _at(batches, i):
    return jax.tree.map(lambda b: b[i], batches)


@nnx.jit
def _train_step(model, optimizer, batches):
    """The documented step: Flax's, on mini-batch 0, plus ``grad_fn``."""
    (loss, _), grads = nnx.value_and_grad(_loss, has_aux=True)(model, _at(batches, 0))
    grad_fn = nnx_grad_fn(model, _loss, batches, has_aux=True)
    optimizer.update(model, grads, grad_fn=grad_fn)
    return loss


_jit_loss = nnx.jit(lambda model, batch: _loss(model, batch)[0])


def _batch_stats(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def test_local_entropy_chained_with_optax_trains_under_jit(fresh_model):
    model = fresh_model()
    optimizer = nnx.Optimizer(model, TX, wrt=nnx.Param)
    test_batch = _blobs(jax.random.key(99), BATCHES)

    def test_loss():
        model.eval()
        loss = float(_jit_loss(model, test_batch))
        model.train()
        return loss

    before = test_loss()
    key = jax.random.key(1)
    for _ in range(15):
        key, data_key = jax.random.split(key)
        _train_step(model, optimizer, _blobs(data_key, BATCHES))
    assert int(optimizer.step[...]) == 15
    assert test_loss() < 0.5 * before, (before, test_loss())


def test_batch_norm_keeps_the_statistics_of_the_outer_evaluation_only(fresh_model):
    model, reference, leaky = fresh_model(), fresh_model(), fresh_model()
    batches = _blobs(jax.random.key(2), BATCHES)  # a different mini-batch per inner step
    initial = _batch_stats(model)
    _train_step(model, nnx.Optimizer(model, TX, wrt=nnx.Param), batches)

    _jit_loss(reference, _at(batches, 0))  # the outer evaluation alone
    expected = _batch_stats(reference)
    close = lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    assert all(jax.tree.leaves(jax.tree.map(close, _batch_stats(model), expected)))
    assert not close(expected["norm"]["mean"], initial["norm"]["mean"])
    # Statistics updated by an inner step's mini-batch as well would differ from these.
    _jit_loss(leaky, _at(batches, 0))
    _jit_loss(leaky, _at(batches, 1))
    assert not close(_batch_stats(leaky)["norm"]["mean"], expected["norm"]["mean"])


@nnx.jit
def _inner_kernel_grads(model, batches, key):
    """The first layer's gradient at inner steps 1 and 2 of one ``grad_fn``."""
    grad_fn = nnx_grad_fn(model, _loss, batches, key=key, has_aux=True)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    return [grad_fn(params, jnp.int32(i))["linear"]["kernel"] for i in (1, 2)]


def _same_batch_everywhere():
    images, labels = _blobs(jax.random.key(3), (BATCHES[1],))
    return jnp.stack([images] * NUM_STEPS), jnp.stack([labels] * NUM_STEPS)


def test_each_inner_step_draws_its_own_dropout_masks_from_the_models_streams(fresh_model):
    model = fresh_model()
    g1, g2 = _inner_kernel_grads(model, _same_batch_everywhere(), None)
    assert not np.allclose(g1, g2)  # one mini-batch: only the dropout masks differ
    # The next outer step draws other masks: nnx_grad_fn advanced the model's streams.
    assert int(model.dropout.rngs.count[...]) == 1
    next_g1, _ = _inner_kernel_grads(model, _same_batch_everywhere(), None)
    assert not np.allclose(next_g1, g1)
    # The masks are all that differs: the same draws give the same gradients.
    again_g1, _ = _inner_kernel_grads(fresh_model(), _same_batch_everywhere(), None)
    np.testing.assert_array_equal(again_g1, g1)


def test_each_inner_step_draws_its_own_dropout_masks_from_a_key(fresh_model):
    model = fresh_model()
    key = jax.random.key(5)
    g1, g2 = _inner_kernel_grads(model, _same_batch_everywhere(), key)
    assert not np.allclose(g1, g2)
    assert int(model.dropout.rngs.count[...]) == 0  # with a key, the model is left alone
    np.testing.assert_array_equal(_inner_kernel_grads(model, _same_batch_everywhere(), key)[0], g1)
    other = _inner_kernel_grads(model, _same_batch_everywhere(), jax.random.key(6))[0]
    assert not np.allclose(other, g1)


def test_without_dropout_every_inner_step_is_the_same():
    """The control of the two tests above: the masks are what differs between steps."""
    model = nnx.jit(lambda: _Net(nnx.Rngs(0), rate=0.0))()
    g1, g2 = _inner_kernel_grads(model, _same_batch_everywhere(), None)
    np.testing.assert_allclose(g1, g2)


@nnx.jit
def _inner_and_direct_grads(model, batches):
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    inner = nnx_grad_fn(model, _loss, batches, has_aux=True)(params, jnp.int32(2))
    direct = nnx.grad(_loss, has_aux=True)(model, _at(batches, 2))[0]
    return params, inner, nnx.as_pure(direct)


def test_grad_fn_is_the_gradient_on_the_optimizers_pure_state(fresh_model):
    model = fresh_model()
    batches = _blobs(jax.random.key(4), BATCHES)
    _train_step(model, nnx.Optimizer(model, TX, wrt=nnx.Param), batches)
    model.eval()  # deterministic, and BatchNorm reads the running statistics of the state
    before = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState)))
    params, inner, direct = _inner_and_direct_grads(model, batches)
    assert jax.tree.structure(inner) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_allclose, inner, direct)
    after = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState)))
    jax.tree.map(np.testing.assert_array_equal, after, before)  # only the RNG streams move


def test_returning_nnx_grad_names_nnx_as_pure(fresh_model):
    model = fresh_model()
    optimizer = nnx.Optimizer(model, TX, wrt=nnx.Param)
    batch = _blobs(jax.random.key(6), (BATCHES[1],))

    @nnx.jit
    def train_step(model, optimizer):
        grads = nnx.grad(_loss, has_aux=True)(model, batch)[0]
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)

        def grad_fn(params, i):
            copy = nnx.merge(graphdef, params, rest, copy=True)
            return nnx.grad(_loss, has_aux=True)(copy, batch)[0]  # Param variables, not arrays

        optimizer.update(model, grads, grad_fn=grad_fn)

    with pytest.raises(ValueError, match=r"nnx\.as_pure\(grads\).*relaxjax\.adapters\.nnx_grad_fn"):
        train_step(model, optimizer)


def test_a_mismatch_without_nnx_gets_no_nnx_hint():
    tx = relaxjax.local_entropy(0.1, num_steps=2)
    params = {"w": jnp.ones(3)}
    update = jax.jit(lambda p, s: tx.update(p, s, p, grad_fn=lambda y, i: {"v": y["w"]}))
    with pytest.raises(ValueError, match="does not match") as error:
        update(params, tx.init(params))
    assert "nnx" not in str(error.value)
