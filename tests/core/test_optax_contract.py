"""One Optax contract, run over every public transform and alias (optax's common-test style).

Each entry of ``TRANSFORMS`` builds a transform from its hyper-parameters; every test
below runs over all of them, so a transform added to the registry gets the whole
contract: jit, vmap over seeds, ``optax.inject_hyperparams`` without ``static_args``
(and changing γ or the rate through ``state.hyperparams``), ``optax.MultiSteps``,
skipping non-finite steps, bfloat16 parameters, stable state shapes, batches sharded
over devices, convergence on a parabola and on Rosenbrock's function.

Parle is in the registry too: its state holds the replicas, so ``_update`` gives it the
gradient at every replica and its ``grad_fn(y, i, data)``. It is left out of one test
only, ``optax.MultiSteps``, with the reason in ``NOT_APPLICABLE``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import relaxjax


def _chain_sgd(relaxation):
    return lambda **kw: optax.chain(relaxation(**kw), optax.sgd(0.5))


# name -> (factory, hyper-parameters: inject_hyperparams injects every numeric one)
TRANSFORMS = {
    "local_entropy": (
        lambda **kw: optax.chain(relaxjax.local_entropy(**kw), optax.sgd(0.05)),
        dict(gamma=0.1, step_size=0.05, noise=1e-3),
    ),
    "hopf_lax": (
        lambda **kw: optax.chain(relaxjax.hopf_lax(**kw), optax.sgd(0.05)),
        dict(gamma=0.1, step_size=0.05),
    ),
    "entropy_sgd": (relaxjax.entropy_sgd, dict(learning_rate=0.5, gamma=0.1, step_size=0.05)),
    "hj_sgd": (relaxjax.hj_sgd, dict(learning_rate=0.5, gamma=0.1, step_size=0.05)),
    "entropy_adam": (relaxjax.entropy_adam, dict(learning_rate=0.5, gamma=0.1, step_size=5e-3)),
    "heat_smoothing": (
        lambda **kw: optax.chain(relaxjax.heat_smoothing(**kw), optax.sgd(0.05)),
        dict(gamma=0.1, step_size=0.05, noise=1e-3),
    ),
    "heat_sgd": (relaxjax.heat_sgd, dict(learning_rate=0.5, gamma=0.1, step_size=0.05)),
    "ls_sgd": (relaxjax.ls_sgd, dict(learning_rate=0.3, sigma=1.0)),
}
TRANSFORMS["parle"] = (
    relaxjax.parle,
    dict(learning_rate=0.5, gamma=0.1, rho=0.1, num_replicas=2, step_size=0.05, noise=1e-3),
)
RELAXATIONS = [name for name in TRANSFORMS if name != "ls_sgd"]
TRANSFORMS_ONLY = ("local_entropy", "hopf_lax", "heat_smoothing")  # chained in the registry
ALIASES = [name for name in TRANSFORMS if name not in TRANSFORMS_ONLY]
NOT_APPLICABLE = {
    # optax.MultiSteps accumulates gradients shaped like the parameters; Parle's carry
    # the replica axis (one gradient per replica).
    ("multisteps", "parle"): "the gradient has a replica axis",
}


def _applicable(test, names):
    return [n for n in names if (test, n) not in NOT_APPLICABLE]


# name -> (hyper-parameter overrides, outer steps) that reach Rosenbrock's minimum (1, 1)
# from (−0.5, 1): its valley has curvature ~1000, so inner steps of 1e-3 (< 2/1000).
ROSENBROCK = {
    "local_entropy": (dict(gamma=0.03, step_size=1e-3, num_steps=10), 1000),
    "hopf_lax": (dict(gamma=0.03, step_size=1e-3, num_steps=10), 1000),
    "entropy_sgd": (dict(learning_rate=1.0, gamma=0.01, step_size=1e-3, num_steps=10), 300),
    "hj_sgd": (dict(learning_rate=1.0, gamma=0.01, step_size=1e-3, num_steps=10), 300),
    "entropy_adam": (dict(learning_rate=1.0, gamma=0.01, step_size=3e-3, num_steps=10), 300),
    "ls_sgd": (dict(learning_rate=2e-3, sigma=0.5, momentum=0.9), 1000),
    "parle": (dict(learning_rate=1.0, gamma=0.01, step_size=1e-3, num_steps=10), 300),
    "heat_smoothing": (dict(gamma=0.03, step_size=1e-3, num_steps=20), 1000),
    "heat_sgd": (dict(learning_rate=1.0, gamma=0.01, step_size=1e-3, num_steps=10), 300),
}


def _loss(params):
    return 0.5 * jnp.sum(params["w"] ** 2) + jnp.sum((params["b"] - 1.0) ** 2)


def _rosenbrock(params):
    a, b = params["x"][0], params["x"][1]
    return (1.0 - a) ** 2 + 100.0 * (b - a**2) ** 2


PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([3.0])}


def _grad_fn(loss):
    grad = jax.grad(loss)
    return lambda p, i: grad(p)


def _update(tx, state, params, grad, grad_fn):
    """``tx.update`` with ``grad`` at the parameters and ``grad_fn(y, i)``; for Parle
    (a state with ``replicas``), ``grad`` at every replica and ``grad_fn(y, i, data)``."""
    replicas = optax.tree_utils.tree_get(state, "replicas")
    if replicas is None:
        return tx.update(grad(params), state, params, grad_fn=grad_fn)
    replica_grad_fn = lambda y, i, data: grad_fn(y, i)  # noqa: E731
    return tx.update(jax.vmap(grad)(replicas), state, params, grad_fn=replica_grad_fn)


def _step(tx, loss=_loss):
    def step(params, state):
        updates, state = _update(tx, state, params, jax.grad(loss), _grad_fn(loss))
        return optax.apply_updates(params, updates), state

    return step


def _build(name, **overrides):
    factory, hyper = TRANSFORMS[name]
    return factory(**{**hyper, **overrides})


def _run(tx, params=PARAMS, steps=100, loss=_loss):
    step = jax.jit(_step(tx, loss))
    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("name", TRANSFORMS)
def test_converges_on_a_parabola_under_jit_with_stable_state_shapes(name):
    tx = _build(name)
    state = tx.init(PARAMS)
    shapes = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), state)
    params, state = _run(tx, steps=150)
    assert jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), state) == shapes
    np.testing.assert_allclose(params["w"], 0.0, atol=2e-2)
    np.testing.assert_allclose(params["b"], 1.0, atol=2e-2)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_converges_on_rosenbrock(name):
    assert name in ROSENBROCK, f"add {name}'s Rosenbrock hyper-parameters to ROSENBROCK"
    overrides, steps = ROSENBROCK[name]
    start = {"x": jnp.array([-0.5, 1.0])}
    params, _ = _run(_build(name, **overrides), params=start, steps=steps, loss=_rosenbrock)
    np.testing.assert_allclose(params["x"], [1.0, 1.0], atol=2e-2)
    assert float(_rosenbrock(params)) < 1e-3


@pytest.mark.parametrize("name", ALIASES)
def test_inject_hyperparams_without_static_args(name):
    factory, hyper = TRANSFORMS[name]
    tx = optax.inject_hyperparams(factory)(**hyper)
    step = jax.jit(_step(tx))
    state = tx.init(PARAMS)
    params, state = step(PARAMS, state)
    reference, _ = jax.jit(_step(factory(**hyper)))(PARAMS, factory(**hyper).init(PARAMS))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # A hyper-parameter changed through the state takes effect at the next step.
    key = "learning_rate" if "learning_rate" in hyper else "gamma"
    state.hyperparams[key] = (
        jnp.asarray(0.0, jnp.float32) if key == "learning_rate" else (state.hyperparams[key] * 2)
    )
    moved, _ = step(params, state)
    if key == "learning_rate":
        for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(params), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", [n for n in ALIASES if n != "ls_sgd"])
def test_inject_hyperparams_traces_momentum(name):
    factory, hyper = TRANSFORMS[name]
    tx = optax.inject_hyperparams(factory)(**hyper, momentum=0.5)
    params, state = jax.jit(_step(tx))(PARAMS, tx.init(PARAMS))
    assert float(state.hyperparams["momentum"]) == 0.5
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize("name", ["entropy_sgd", "hj_sgd", "parle"])
def test_gamma_lowered_through_the_state_below_half_the_step_fails_clearly(name):
    factory, hyper = TRANSFORMS[name]
    tx = optax.inject_hyperparams(factory)(**hyper)
    state = tx.init(PARAMS)
    state.hyperparams["gamma"] = jnp.asarray(0.01, jnp.float32)  # step_size 0.05 ≥ 2γ
    with pytest.raises(Exception, match=r"step_size=0.05 must be < 2\*gamma=0.02"):
        jax.block_until_ready(jax.jit(_step(tx))(PARAMS, state))


@pytest.mark.parametrize(
    "factory", [relaxjax.local_entropy, relaxjax.hopf_lax, relaxjax.heat_smoothing]
)
def test_check_at_update_false_leaves_no_host_callback_in_the_step(factory):
    """The update-time check of η′ < 2γ is the step's only call back into Python (which
    JAX's persistent compilation cache refuses to store); ``check_at_update=False`` drops
    it, and then a γ schedule that falls below η′/2 is no longer caught."""

    def step_text(check: bool) -> str:
        schedule = lambda t: 0.1 / (1.0 + t)  # noqa: E731  (γ_1 = 0.05 < 2·0.05 = η′)
        tx = factory(schedule, num_steps=2, step_size=0.05, check_at_update=check)
        return jax.jit(_step(tx)).lower(PARAMS, tx.init(PARAMS)).as_text()

    assert "callback" in step_text(True)
    assert "callback" not in step_text(False)
    with pytest.raises(TypeError, match="check_at_update must be True or False"):
        factory(0.1, check_at_update="no")


def test_tree_get_finds_the_relaxation_count_alone():
    tx = optax.inject_hyperparams(relaxjax.entropy_sgd)(learning_rate=0.5, gamma=0.1)
    _, state = jax.jit(_step(tx))(PARAMS, tx.init(PARAMS))
    assert int(optax.tree_utils.tree_get(state, "relaxation_count")) == 1
    assert int(optax.tree_utils.tree_get(state, "noise_key").shape[0]) == 2


@pytest.mark.parametrize("name", TRANSFORMS)
def test_vmap_over_seeds(name):
    tx = _build(name)
    batched = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), PARAMS)
    params, _ = jax.vmap(_step(tx))(batched, jax.vmap(tx.init)(batched))
    one, _ = _step(tx)(PARAMS, tx.init(PARAMS))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", _applicable("multisteps", TRANSFORMS))
def test_multisteps(name):
    tx = _build(name)
    multi = optax.MultiSteps(tx, every_k_schedule=2)
    step = jax.jit(_step(multi))
    state = multi.init(PARAMS)
    after_one, state = step(PARAMS, state)
    for a, b in zip(jax.tree.leaves(after_one), jax.tree.leaves(PARAMS), strict=True):
        np.testing.assert_array_equal(a, b)  # the first mini-step only accumulates
    after_two, _ = step(after_one, state)
    assert _loss(after_two) < _loss(PARAMS)


def _nan_at_inner_step(step_index):
    grad = jax.grad(_loss)
    return lambda p, i: jax.tree.map(lambda g: jnp.where(i == step_index, jnp.nan, g), grad(p))


@pytest.mark.parametrize("name", RELAXATIONS)
def test_apply_if_finite_skips_a_nan_born_in_the_inner_loop(name):
    tx = relaxjax.apply_if_finite(_build(name, num_steps=3), 2)
    state = tx.init(PARAMS)

    @jax.jit
    def step(params, state, grad_fn_nan_step):
        bad = _nan_at_inner_step(grad_fn_nan_step)
        updates, state = _update(tx, state, params, jax.grad(_loss), bad)
        return optax.apply_updates(params, updates), state

    params, new_state = step(PARAMS, state, 2)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(PARAMS), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(new_state.total_notfinite) == 1 and int(new_state.notfinite_count) == 1
    # The skipped step kept the inner state (count, key, momentum) of the last good one.
    for a, b in zip(
        jax.tree.leaves(new_state.inner_state), jax.tree.leaves(state.inner_state), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    params, new_state = step(params, new_state, -1)  # a healthy step is applied
    assert _loss(params) < _loss(PARAMS) and int(new_state.notfinite_count) == 0


@pytest.mark.parametrize("name", RELAXATIONS)
def test_optax_apply_if_finite_around_a_relaxation_is_refused(name):
    tx = optax.apply_if_finite(_build(name, num_steps=3), 2)
    with pytest.raises(ValueError, match="relaxjax.apply_if_finite"):
        _update(tx, tx.init(PARAMS), PARAMS, jax.grad(_loss), _grad_fn(_loss))


def test_optax_apply_if_finite_on_the_outer_optimizer_skips_the_step():
    tx = optax.chain(
        relaxjax.local_entropy(0.1, num_steps=3, step_size=0.05),
        optax.apply_if_finite(optax.sgd(0.05), 2),
    )
    updates, state = tx.update(
        jax.grad(_loss)(PARAMS), tx.init(PARAMS), PARAMS, grad_fn=_nan_at_inner_step(2)
    )
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    assert int(state[1].total_notfinite) == 1


@pytest.mark.parametrize("name", TRANSFORMS)
def test_bfloat16_params_keep_their_dtype(name):
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), PARAMS)
    tx = _build(name)
    new, _ = jax.jit(_step(tx))(params, tx.init(params))
    assert jax.tree.map(jnp.result_type, new) == jax.tree.map(jnp.result_type, params)


def test_langevin_noise_acts_on_bfloat16_params():
    params = {"w": jnp.full((64,), 0.3, jnp.bfloat16)}
    loss = lambda p: 0.5 * jnp.sum(p["w"].astype(jnp.float32) ** 2)  # noqa: E731
    outputs = {}
    for noise in (0.0, 1e-2):
        tx = relaxjax.local_entropy(1.0, num_steps=5, noise=noise)
        outputs[noise], _ = tx.update(
            jax.grad(loss)(params), tx.init(params), params, grad_fn=_grad_fn(loss)
        )
        assert outputs[noise]["w"].dtype == jnp.bfloat16
    # ε√(2η′) ≈ 4.5e-3 per step: in bfloat16 arithmetic (8-bit mantissa at 0.3) it would
    # round away and both updates would be bit-identical.
    assert int(jnp.sum(outputs[0.0]["w"] != outputs[1e-2]["w"])) > 16


def test_displacement_output_is_gamma_times_the_gradient():
    x = PARAMS
    outputs = {}
    for output in ("gradient", "displacement"):
        tx = relaxjax.local_entropy(0.25, num_steps=4, noise=1e-2, output=output)
        outputs[output], _ = tx.update(jax.grad(_loss)(x), tx.init(x), x, grad_fn=_grad_fn(_loss))
    gradient, displacement = outputs["gradient"], outputs["displacement"]
    for g, d in zip(jax.tree.leaves(gradient), jax.tree.leaves(displacement), strict=True):
        np.testing.assert_allclose(d, 0.25 * g, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="output"):
        relaxjax.local_entropy(1.0, output="step")


def test_alias_rate_is_on_the_displacement():
    # entropy_sgd(lr) steps by lr·(x − μ): without momentum, lr = 1 moves x to μ.
    x = PARAMS
    relax = relaxjax.hopf_lax(0.1, num_steps=4, step_size=0.05, output="displacement")
    displacement, _ = relax.update(jax.grad(_loss)(x), relax.init(x), x, grad_fn=_grad_fn(_loss))
    tx = relaxjax.hj_sgd(1.0, 0.1, num_steps=4, step_size=0.05, momentum=None)
    updates, _ = tx.update(jax.grad(_loss)(x), tx.init(x), x, grad_fn=_grad_fn(_loss))
    for u, d in zip(jax.tree.leaves(updates), jax.tree.leaves(displacement), strict=True):
        np.testing.assert_allclose(u, -d, rtol=1e-6)


_SHARDED_SCRIPT = """
import os, sys
os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
from relaxjax.core.mesh import make_mesh
import test_optax_contract as contract

assert jax.device_count() == 4, jax.devices()
mesh = make_mesh(4)
L, B = 20, 32  # L >= every entry's num_steps (the default, 20)
x = jax.random.normal(jax.random.PRNGKey(1), (L, B, 3))
y = jnp.sin(x.sum(-1))
sharded = jax.device_put((x, y), NamedSharding(mesh, P(None, "data")))
replicated = jax.device_put(contract.PARAMS, NamedSharding(mesh, P()))

def loss(params, batch):
    inputs, targets = batch
    return jnp.mean((inputs @ params["w"] + params["b"][0] - targets) ** 2)

def make_step(tx):
    @jax.jit
    def step(params, state, batches):
        batch = lambda i: jax.tree.map(lambda b: b[i], batches)
        grad = lambda p: jax.grad(loss)(p, batch(0))
        grad_fn = lambda p, i: jax.grad(loss)(p, batch(i))
        updates, state = contract._update(tx, state, params, grad, grad_fn)
        return optax.apply_updates(params, updates), state
    return step

for name in contract.TRANSFORMS:
    tx = contract._build(name)
    step = make_step(tx)
    p1, s1 = contract.PARAMS, tx.init(contract.PARAMS)
    p2, s2 = replicated, tx.init(replicated)
    for _ in range(2):
        p1, s1 = step(p1, s1, (x, y))
        p2, s2 = step(p2, s2, sharded)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    assert len(p2["w"].sharding.device_set) == 4, name
    assert not np.allclose(p1["w"], contract.PARAMS["w"]), name
    print("SHARDED-OK", name, flush=True)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_batches_sharded_over_devices_give_the_single_device_update(run_python):
    """Every entry, with each mini-batch split over 4 simulated devices (a subprocess: the
    device count is fixed when JAX starts) and the parameters replicated, takes the
    steps it takes on one device."""
    from pathlib import Path

    result = run_python(_SHARDED_SCRIPT, Path(__file__).parent, timeout=600)
    done = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("SHARDED")]
    assert done == list(TRANSFORMS), result.stderr[-4000:]
