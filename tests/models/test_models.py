"""The paper's networks and the linen/nnx functional adapter."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from relaxjax import models

MNIST = (2, 28, 28, 1)
CIFAR = (2, 32, 32, 3)


def x_of(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


@functools.cache
def built(name: str, num_classes: int = 10):
    """(model, params, state, jitted apply) -- built once per test session."""
    model = models.get_model(name, num_classes=num_classes)
    shape = (2, *models.INPUT_SHAPES[name])
    params, state = jax.jit(model.init)(jax.random.key(0), jnp.zeros(shape))
    apply = jax.jit(model.apply, static_argnames="train")
    return model, params, state, apply


@pytest.mark.parametrize(
    "name, classes",
    [*((name, 10) for name in models.MODELS if name != "mnistconv"), ("allcnn", 100)],
)
def test_output_shapes(name, classes):
    _, params, state, apply = built(name, classes)
    logits, _ = apply(params, state, x_of((2, *models.INPUT_SHAPES[name])), train=False)
    assert logits.shape == (2, classes) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_input_shapes_are_the_papers_data_sets():
    assert models.INPUT_SHAPES.keys() == models.MODELS.keys()
    assert models.INPUT_SHAPES["allcnn"] == CIFAR[1:]
    assert {models.INPUT_SHAPES[n] for n in models.MODELS if n != "allcnn"} == {MNIST[1:]}


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="mnistfc.*lenet.*allcnn"):
        models.get_model("resnet")
    assert isinstance(models.get_module("mnistconv"), models.LeNet)


def abstract_variables(name: str):
    """(params, state) as shapes and dtypes only: nothing is compiled or computed."""
    model = models.get_model(name)
    zeros = jax.ShapeDtypeStruct((2, *models.INPUT_SHAPES[name]), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), zeros)


def test_parameter_counts():
    p, s = abstract_variables("mnistfc")
    # 784*1024+1024 + 1024*1024+1024 + 1024*10+10 = 1,863,690 (dense) + 2*2*1024 (BN affine)
    assert models.count_params(p) == 1_867_786
    kernels = [v for path, v in jax.tree_util.tree_leaves_with_path(p) if "kernel" in str(path)]
    assert sum(k.size for k in kernels) == 1_861_632
    assert models.count_params(s) == 4096  # running mean and var
    # LeNet of the Lua code (models.lua: no BN on the 500 units), as lenet-dr; the PyTorch
    # port's revision adds 2 * 500 BN affine parameters.
    assert models.count_params(abstract_variables("lenet")[0]) == 131_220
    assert models.count_params(abstract_variables("lenet-pytorch")[0]) == 132_220
    assert models.count_params(abstract_variables("allcnn")[0]) == 1_667_166
    # The Deep Relaxation code's variants (PyTorch's counts of its models.py networks).
    assert models.count_params(abstract_variables("mnistfc-dr")[0]) == 1_867_786
    assert (
        models.count_params(abstract_variables("lenet-dr")[0]) == 131_220
    )  # no BN on the 500 units


def _batch_norm(x, params, stats):
    """Eval-mode BatchNorm (epsilon 1e-5), written out."""
    return (x - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * params["scale"] + params["bias"]


def _pool(x, size):
    return nn.max_pool(x, (size, size), strides=(size, size))  # Flax's, floor rounding


def _conv(x, params):
    y = jax.lax.conv_general_dilated(
        x, params["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + params["bias"]


def _random_stats(state, seed):
    """Running statistics far from (0, 1), so a BatchNorm in the wrong place shows."""
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        tree,
        [
            jax.random.uniform(k, v.shape, minval=0.5, maxval=2.0)
            for k, v in zip(keys, leaves, strict=True)
        ],
    )


def _lenet_reference(x, p, bn, *, pytorch_port: bool):
    """LeNet in eval mode, written out: the Lua code's ``mnistconv`` (models.lua:
    conv-ReLU-pool-BN blocks, Linear-ReLU on the 500 units), or the PyTorch port's
    revision (conv-BN-ReLU-pool blocks, Linear-BN-ReLU)."""
    relu = jax.nn.relu
    h = x
    for i, size in enumerate((3, 2)):
        h = _conv(h, p[f"Conv_{i}"])
        norm = functools.partial(
            _batch_norm, params=p[f"BatchNorm_{i}"], stats=bn[f"BatchNorm_{i}"]
        )
        h = _pool(relu(norm(h)), size) if pytorch_port else norm(_pool(relu(h), size))
    assert h.shape[1:] == (2, 2, 50)  # 28 -conv5-> 24 -pool3-> 8 -conv5-> 4 -pool2-> 2
    h = h.reshape(len(h), -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    if pytorch_port:
        h = _batch_norm(h, p["BatchNorm_2"], bn["BatchNorm_2"])
    return relu(h) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


@pytest.mark.parametrize(
    "name, dropout, pytorch_port",
    [("lenet", 0.5, False), ("lenet-dr", 0.25, False), ("lenet-pytorch", 0.5, True)],
)
def test_lenets_compute_their_codes_layers_in_order(name, dropout, pytorch_port):
    """``lenet`` is the Lua Entropy-SGD code's mnistconv (which ran the paper's
    experiments), ``lenet-dr`` the same layers with the Deep Relaxation code's dropout,
    ``lenet-pytorch`` the PyTorch port's revision; random running statistics make a
    BatchNorm moved across a ReLU or a pooling, or a missing one, change the logits."""
    x = x_of(MNIST)
    _, p, state, apply = built(name)
    state = _random_stats(state, 1)
    layers = ["BatchNorm_0", "BatchNorm_1", "Conv_0", "Conv_1", "Dense_0", "Dense_1"]
    assert sorted(p) == sorted(layers + ["BatchNorm_2"] * pytorch_port)
    shapes = {k: v.shape for k, v in p["Conv_0"].items()} | {"dense": p["Dense_0"]["kernel"].shape}
    assert shapes == {"kernel": (5, 5, 1, 20), "bias": (20,), "dense": (200, 500)}
    assert p["BatchNorm_1"]["scale"].shape == (50,) and p["Dense_1"]["kernel"].shape == (500, 10)
    expected = _lenet_reference(x, p, state["batch_stats"], pytorch_port=pytorch_port)
    logits, _ = apply(p, state, x, train=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    assert models.get_module(name).dropout == dropout


def test_deep_relaxation_variants_compute_their_layers_in_the_codes_order():
    x = x_of(MNIST)
    relu = jax.nn.relu

    _, p, state, apply = built("mnistfc-dr")
    state = _random_stats(state, 2)
    bn = state["batch_stats"]
    h = x.reshape(2, -1)
    for i in range(2):
        dense = p[f"Dense_{i}"]
        h = _batch_norm(
            relu(h @ dense["kernel"] + dense["bias"]), p[f"BatchNorm_{i}"], bn[f"BatchNorm_{i}"]
        )
    expected = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    logits, _ = apply(p, state, x, train=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    # Dropout rates of the code: 0.2 in mnistfc (input and hidden).
    module = models.get_module("mnistfc-dr")
    assert (module.input_dropout, module.dropout) == (0.2, 0.2)


@pytest.mark.parametrize("name", ["mnistfc", "lenet"])
def test_eval_mode_is_deterministic_and_uses_running_stats(name):
    _, params, state, apply = built(name)
    x = x_of(MNIST)
    a, s1 = apply(params, state, x, train=False, dropout_key=jax.random.key(1))
    b, _ = apply(params, state, x, train=False, dropout_key=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert s1 is state or jax.tree.all(jax.tree.map(jnp.array_equal, s1, state))
    # per-example output does not depend on the rest of the batch (no batch statistics)
    single, _ = apply(params, state, x[:1], train=False)
    np.testing.assert_allclose(single[0], a[0], rtol=1e-5, atol=1e-5)
    # and changing the running statistics changes the output
    shifted = jax.tree.map(lambda v: v + 1.0, state)
    c, _ = apply(params, shifted, x, train=False)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("name", ["mnistfc", "lenet"])
def test_train_mode_dropout_and_batch_stats(name):
    _, params, state, apply = built(name)
    x = x_of(MNIST)
    a, new_state = apply(params, state, x, train=True, dropout_key=jax.random.key(1))
    a2, _ = apply(params, state, x, train=True, dropout_key=jax.random.key(1))
    b, _ = apply(params, state, x, train=True, dropout_key=jax.random.key(2))
    np.testing.assert_array_equal(a, a2)
    assert not np.allclose(a, b)
    changed = jax.tree.map(lambda u, v: not np.array_equal(u, v), new_state, state)
    assert all(jax.tree.leaves(changed))  # every running mean/var moved
    assert set(new_state) == {"batch_stats"}


def test_allcnn_train_mode_updates_stats():
    _, params, state, apply = built("allcnn")
    _, new_state = apply(params, state, x_of(CIFAR), train=True, dropout_key=jax.random.key(0))
    assert not np.array_equal(jax.tree.leaves(new_state)[0], jax.tree.leaves(state)[0])


# ------------------------------------------------------------------ user models via functional()
class LinenUser(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.Dropout(0.1, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x)


class NnxUser(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(4, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.l2 = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(nnx.relu(self.bn(self.l1(x)))))


def toy_problem():
    kx, kw = jax.random.split(jax.random.key(42))
    x = jax.random.normal(kx, (64, 4))
    y = jnp.argmax(x @ jax.random.normal(kw, (4, 3)), axis=-1)
    return x, y


def train_loss_drops(model: models.FunctionalModel, steps=30):
    x, y = toy_problem()
    params, state = model.init(jax.random.key(0), x)
    opt = optax.sgd(0.1, momentum=0.9)
    opt_state = opt.init(params)

    def loss_fn(p, s, key):
        logits, new_s = model.apply(p, s, x, train=True, dropout_key=key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_s

    @jax.jit
    def step(p, s, o, key):
        (loss, new_s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, key)
        updates, o = opt.update(g, o, p)
        return optax.apply_updates(p, updates), new_s, o, loss

    def eval_loss(p, s):
        logits, _ = model.apply(p, s, x, train=False)
        return float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())

    before = eval_loss(params, state)
    for i in range(steps):
        params, state, opt_state, _ = step(params, state, opt_state, jax.random.key(i))
    after = eval_loss(params, state)
    assert after < 0.5 * before, (before, after)
    return params, state


def test_linen_user_model_trains():
    params, state = train_loss_drops(models.functional(LinenUser()))
    assert set(state) == {"batch_stats"} and "Dense_0" in params


def test_nnx_user_model_trains_and_is_not_mutated():
    user = NnxUser(nnx.Rngs(0))
    kernel0 = np.array(user.l1.kernel[...])
    mean0 = np.array(user.bn.mean[...])
    model = models.functional(user)
    params, state = train_loss_drops(model)
    assert isinstance(params, dict) and set(params) == {"l1", "bn", "l2"}
    assert set(state) == {"bn"} and set(state["bn"]) == {"mean", "var"}
    assert not np.allclose(state["bn"]["mean"], mean0)  # running stats were returned updated
    np.testing.assert_array_equal(user.l1.kernel[...], kernel0)  # the user's module untouched
    np.testing.assert_array_equal(user.bn.mean[...], mean0)


def test_nnx_modes():
    model = models.functional(NnxUser(nnx.Rngs(0)))
    x, _ = toy_problem()
    p, s = model.init(jax.random.key(0), x)
    e1, s1 = model.apply(p, s, x, train=False)
    e2, _ = model.apply(p, s, x, train=False, dropout_key=jax.random.key(3))
    np.testing.assert_array_equal(e1, e2)
    assert s1 is s
    t1, _ = model.apply(p, s, x, train=True, dropout_key=jax.random.key(1))
    t2, _ = model.apply(p, s, x, train=True, dropout_key=jax.random.key(2))
    assert not np.allclose(t1, t2)
    with pytest.raises(ValueError, match="dropout_key"):
        model.apply(p, s, x, train=True)
    with pytest.raises(TypeError):
        models.functional(object())


@pytest.mark.parametrize(
    ("size", "shape"), [(3, (4, 24, 24, 5)), (2, (3, 7, 9, 2)), (2, (2, 8, 8, 50))]
)
def test_max_pool_tiles_matches_flax_max_pool_and_its_gradient(size, shape):
    import flax.linen as nn

    x = jax.random.normal(jax.random.PRNGKey(size), shape)  # no ties
    cotangent = jax.random.normal(
        jax.random.PRNGKey(7), nn.max_pool(x, (size,) * 2, (size,) * 2).shape
    )

    def pooled(pool):
        return lambda x: jnp.sum(pool(x) * cotangent)

    flax_pool = lambda x: nn.max_pool(x, (size, size), strides=(size, size))  # noqa: E731
    tiles_pool = lambda x: models.max_pool_tiles(x, size)  # noqa: E731
    np.testing.assert_array_equal(tiles_pool(x), flax_pool(x))
    np.testing.assert_array_equal(jax.grad(pooled(tiles_pool))(x), jax.grad(pooled(flax_pool))(x))


@pytest.mark.slow
def test_lenet_convolution_implementations_agree():
    """LeNet's patch (im2col) convolutions equal XLA's, values and gradients."""
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 28, 28, 1))
    nets = {impl: models.LeNet(conv_implementation=impl) for impl in ("patches", "xla")}
    # Jitted: eagerly, every primitive of the patch gradients compiles on its own (slow).
    variables = {impl: jax.jit(net.init)(jax.random.PRNGKey(1), x) for impl, net in nets.items()}
    jax.tree.map(np.testing.assert_array_equal, variables["patches"], variables["xla"])
    reference = nn.Conv(20, (5, 5), padding="VALID").init(jax.random.PRNGKey(2), x)
    conv = models.PatchConv(20, (5, 5)).init(jax.random.PRNGKey(2), x)
    jax.tree.map(np.testing.assert_array_equal, conv, reference)  # nn.Conv's parameters

    def loss(params, impl):
        logits, _ = nets[impl].apply(
            {**variables[impl], "params": params}, x, train=True,
            rngs={"dropout": jax.random.PRNGKey(3)}, mutable=["batch_stats"],
        )  # fmt: skip
        return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

    params = variables["xla"]["params"]
    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    values = {impl: value_and_grad(params, impl) for impl in nets}
    np.testing.assert_allclose(values["patches"][0], values["xla"][0], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        values["patches"][1],
        values["xla"][1],
    )
    with pytest.raises(ValueError, match="implementation"):
        models.PatchConv(4, (3, 3), "cudnn").init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_hash_dropout_inside_parles_replica_map_on_a_batch_split_over_data(rate):
    """Parle's replicas run in a ``shard_map`` (manual over 'replica') whose batches carry a
    sharding constraint over the automatic 'data' axis, as All-CNN's input dropout sees
    them: the dropout's zeros must not copy that outer-mesh sharding (``zeros_like`` did,
    and All-CNN's Parle step did not compile)."""
    from jax.sharding import PartitionSpec as P

    from relaxjax.core import replica_map
    from relaxjax.core.mesh import DATA_AXIS, constrain, make_mesh

    mesh = make_mesh(1, num_replicas=1)
    layer = models.HashDropout(rate)

    def replica(x, key):
        x = constrain(x, mesh, P(DATA_AXIS))
        return layer.apply({}, x, deterministic=False, rngs={"dropout": key})

    x = jnp.ones((1, 8, 4, 4, 3))  # one replica's batch of 8 images
    keys = jax.random.split(jax.random.key(0), 1)
    out = jax.jit(replica_map(replica, mesh=mesh))(x, keys)
    expected = jax.vmap(replica)(x, keys)  # no mesh: plain vmap
    np.testing.assert_array_equal(out, expected)
    assert set(np.unique(np.asarray(out))) <= {0.0, 1 / (1 - rate) if rate < 1 else 0.0}


def test_hash_dropout_keeps_the_rate_and_scale():
    """relaxjax's models drop out with the counter hash: keep probability 1 − rate, kept
    values scaled by 1/(1 − rate), fresh masks per key, the identity in eval mode."""
    x = jnp.ones((400, 500))
    layer = models.HashDropout(0.25)
    out = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    kept = np.asarray(out) != 0
    n = kept.size
    assert abs(kept.mean() - 0.75) < 5 * np.sqrt(0.75 * 0.25 / n)
    np.testing.assert_allclose(np.asarray(out)[kept], 1 / 0.75, rtol=1e-6)
    again = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    other = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(out, again)
    agree = (np.asarray(other) != 0) == kept
    assert abs(agree.mean() - (0.75**2 + 0.25**2)) < 5 * np.sqrt(0.5 / n)  # independent
    rows = kept.reshape(400, 500).mean(axis=1)  # no structure along the counter
    assert abs(np.corrcoef(rows[:-1], rows[1:])[0, 1]) < 5 / np.sqrt(400)
    assert (layer.apply({}, x, deterministic=True) == x).all()
    rows = models.HashDropout(0.5, broadcast_dims=(1,)).apply(
        {}, x, deterministic=False, rngs={"dropout": jax.random.key(2)}
    )
    assert set(np.unique((np.asarray(rows) != 0).mean(axis=1))) == {0.0, 1.0}  # whole rows
    assert (models.HashDropout(1.0).apply({}, x, deterministic=False) == 0).all()
    # Every Dropout of relaxjax's networks is this one (and BatchNorm refresh skips it).
    module = models.get_module("mnistfc-dr")
    variables = module.init(jax.random.key(0), jnp.ones((2, 28, 28, 1)))
    _, tree = module.apply(
        variables,
        jnp.ones((2, 28, 28, 1)),
        train=True,
        rngs={"dropout": jax.random.key(0)},
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Dropout),
    )
    names = list(tree["intermediates"])
    assert len(names) == 3 and all(n.startswith("HashDropout") for n in names)


def test_torch_init_draws_as_the_lua_codes_torch_layers():
    """``lenet-torch-init``: kernels and biases uniform in ±1/√fan_in (Torch's ``nn.Linear``
    and ``SpatialConvolution`` ``reset()``), BatchNorm scales uniform in [0, 1) and biases 0
    (cudnn's ``BatchNormalization``); ``lenet`` keeps Flax's defaults in the same tree."""
    model = models.get_model("lenet-torch-init")
    params, _ = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    fan_in = {"Conv_0": 5 * 5 * 1, "Conv_1": 5 * 5 * 20, "Dense_0": 200, "Dense_1": 500}
    for layer, n in fan_in.items():
        bound = 1 / np.sqrt(n)
        kernel, bias = np.asarray(params[layer]["kernel"]), np.asarray(params[layer]["bias"])
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.1)  # uniform's
        assert np.abs(bias).min() > 0 and len(np.unique(bias)) == bias.size
    for norm in ("BatchNorm_0", "BatchNorm_1"):
        scale = np.asarray(params[norm]["scale"])
        assert 0 <= scale.min() and scale.max() < 1 and np.std(scale) > 0.2  # U[0, 1): 0.29
        assert np.all(np.asarray(params[norm]["bias"]) == 0)
    flax_params = built("lenet")[1]
    assert jax.tree.structure(flax_params) == jax.tree.structure(params)
    assert np.all(np.asarray(flax_params["BatchNorm_1"]["scale"]) == 1)
    assert np.all(np.asarray(flax_params["Dense_0"]["bias"]) == 0)
    with pytest.raises(ValueError, match="weight_init must be one of"):
        jax.eval_shape(
            models.get_model("lenet", weight_init="kaiming").init,
            jax.random.key(0),
            jnp.zeros((1, 28, 28, 1)),
        )
    with pytest.raises(ValueError, match="weight_init must be one of"):
        models.batch_norm(True, weight_init="torch7")
    with pytest.raises(ValueError, match="fan_in must be >= 1"):
        models.torch_uniform(0)


def test_lenet_flax_init_is_the_one_before_weight_init_existed():
    """``weight_init="flax"`` (the default) draws the same parameters as ``LeNet`` did
    before the option: sums of |w| per leaf at key 0, recorded from that version."""
    before = {
        "BatchNorm_0/scale": 20.0, "BatchNorm_1/scale": 50.0, "Conv_0/kernel": 90.272,
        "Conv_1/kernel": 919.1817, "Dense_0/kernel": 5819.1211, "Dense_1/kernel": 183.1634,
    }  # fmt: skip
    params = built("lenet")[1]
    sums = {
        "/".join(str(k.key) for k in path): float(np.abs(np.asarray(leaf)).sum())
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    assert {k: v for k, v in sums.items() if k.endswith("bias")} == {
        k: 0.0 for k in sums if k.endswith("bias")
    }
    for leaf, total in before.items():
        assert sums[leaf] == pytest.approx(total, rel=1e-4), leaf
