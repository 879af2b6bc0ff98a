"""The Optax contract: composition, wrappers, jit/vmap, dtypes, seeds, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import relaxjax


def _quadratic(params):
    return 0.5 * jnp.sum(params["w"] ** 2) + 2.0 * jnp.sum((params["b"] - 1.0) ** 2)


PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(3.0)}


def _grad_fn(loss):
    grad = jax.grad(loss)
    return lambda p, i: grad(p)


def _train(tx, loss, params, steps):
    grad = jax.grad(loss)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad(params), state, params, grad_fn=_grad_fn(loss))
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize(
    "make",
    [
        lambda: relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=5, step_size=0.05, noise=1e-3),
        lambda: relaxjax.hj_sgd(1.0, gamma=0.1, num_steps=5, step_size=0.05),
        lambda: relaxjax.entropy_adam(1.0, gamma=0.1, num_steps=5, step_size=2e-3, noise=1e-4),
    ],
    ids=["entropy_sgd", "hj_sgd", "entropy_adam"],
)
def test_aliases_converge_on_a_parabola(make):
    params, _ = _train(make(), _quadratic, PARAMS, 150)
    np.testing.assert_allclose(params["w"], 0.0, atol=1e-2)
    np.testing.assert_allclose(params["b"], 1.0, atol=1e-2)


def test_converges_on_rosenbrock():
    def rosenbrock(p):
        return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    # The Moreau envelope keeps the global minimiser (1, 1).
    tx = optax.chain(
        relaxjax.hopf_lax(gamma=0.01, num_steps=10, step_size=1e-3, alpha=0.5),
        optax.adam(0.02),
    )
    params, _ = _train(tx, rosenbrock, jnp.array([-1.0, 1.0]), 3000)
    np.testing.assert_allclose(params, [1.0, 1.0], atol=2e-2)


def test_inner_loop_reuses_the_incoming_gradient():
    """grad_fn is evaluated at i = 1 … L−1 only; step 0 uses the incoming gradient."""
    seen = []

    def grad_fn(p, i):
        jax.debug.callback(lambda i: seen.append(int(i)), i)
        return jax.tree.map(jnp.zeros_like, p)

    x = jnp.array([1.0, 2.0])
    g0 = jnp.array([10.0, -10.0])
    eta, gamma = 0.01, 1.0
    tx = relaxjax.hopf_lax(gamma=gamma, num_steps=4, step_size=eta, alpha=0.0)
    updates, _ = tx.update(g0, tx.init(x), x, grad_fn=grad_fn)
    jax.effects_barrier()
    assert seen == [1, 2, 3]
    # y₁ = x − η g₀; afterwards only the coupling acts: y_{ℓ+1} − x = (1 − η/γ)(y_ℓ − x).
    expected_y = x - eta * g0 * (1 - eta / gamma) ** 3
    np.testing.assert_allclose(updates, (x - expected_y) / gamma, rtol=1e-5)


@pytest.mark.parametrize("num_steps", [1, 4])
def test_first_gradient_in_the_loop_gives_the_same_update(num_steps):
    """reuse_gradient=False calls grad_fn at i = 0 … L−1 and ignores the incoming values."""
    seen = []
    grad = jax.grad(_quadratic)

    def grad_fn(p, i):
        jax.debug.callback(lambda i: seen.append(int(i)), i)
        return grad(jax.tree.map(lambda a: a + 0.01 * i, p))  # a different "mini-batch" per i

    kwargs = dict(gamma=0.5, num_steps=num_steps, step_size=0.05, noise=0.1, seed=3)
    reuse = relaxjax.local_entropy(**kwargs)
    in_loop = relaxjax.local_entropy(**kwargs, reuse_gradient=False)
    expected, _ = reuse.update(grad(PARAMS), reuse.init(PARAMS), PARAMS, grad_fn=grad_fn)
    jax.effects_barrier()
    seen.clear()
    garbage = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), PARAMS)
    updates, _ = in_loop.update(garbage, in_loop.init(PARAMS), PARAMS, grad_fn=grad_fn)
    jax.effects_barrier()
    assert seen == list(range(num_steps))
    chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="grad_fn is required.*i = 0"):
        in_loop.update(garbage, in_loop.init(PARAMS), PARAMS)


def test_single_inner_step_needs_no_grad_fn():
    x = jnp.array([1.0])
    tx = relaxjax.hopf_lax(gamma=0.5, num_steps=1, step_size=0.1, alpha=0.0)
    updates, _ = tx.update(jnp.array([2.0]), tx.init(x), x)
    np.testing.assert_allclose(updates, 0.1 * 2.0 / 0.5, rtol=1e-6)


def test_jit_keeps_state_shapes_and_dtypes_and_is_reproducible():
    tx = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=3, noise=0.1, seed=7)
    state = tx.init(PARAMS)
    grads = jax.grad(_quadratic)(PARAMS)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, grad_fn=_grad_fn(_quadratic)))
    updates, new_state = update(grads, state, PARAMS)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
    updates_again, _ = update(grads, tx.init(PARAMS), PARAMS)
    chex.assert_trees_all_equal(updates, updates_again)
    # The key advances, so the next step draws fresh noise.
    later, _ = update(grads, new_state, PARAMS)
    assert not np.allclose(later["w"], updates["w"])
    other_seed = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=3, noise=0.1, seed=8)
    other, _ = update(grads, other_seed.init(PARAMS), PARAMS)
    assert not np.allclose(other["w"], updates["w"])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_updates_keep_parameter_dtypes(dtype):
    params = jax.tree.map(lambda p: p.astype(dtype), PARAMS)
    tx = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=3, noise=1e-2)
    grads = jax.grad(_quadratic)(params)
    updates, _ = tx.update(grads, tx.init(params), params, grad_fn=_grad_fn(_quadratic))
    chex.assert_trees_all_equal_dtypes(updates, params)
    assert all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))


def test_inject_hyperparams_matches_constant_and_changes_with_gamma():
    kwargs = dict(gamma=0.2, num_steps=4, step_size=0.05, noise=0.1, alpha=0.5, seed=3)
    injected = optax.inject_hyperparams(relaxjax.local_entropy, static_args=("num_steps",))(
        **kwargs
    )
    plain = relaxjax.local_entropy(**kwargs)
    grads = jax.grad(_quadratic)(PARAMS)
    update = jax.jit(
        lambda tx_update, g, s, p: tx_update(g, s, p, grad_fn=_grad_fn(_quadratic)),
        static_argnums=0,
    )
    state = injected.init(PARAMS)
    u_injected, new_state = update(injected.update, grads, state, PARAMS)
    u_plain, _ = update(plain.update, grads, plain.init(PARAMS), PARAMS)
    chex.assert_trees_all_close(u_injected, u_plain, rtol=1e-6)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)

    state.hyperparams["gamma"] = jnp.asarray(0.8)
    u_wider, _ = update(injected.update, grads, state, PARAMS)
    assert not np.allclose(u_wider["w"], u_injected["w"])


def test_inject_hyperparams_without_static_num_steps_explains_the_fix():
    with pytest.raises(ValueError, match="static_args=\\('num_steps',\\)"):
        tx = optax.inject_hyperparams(relaxjax.local_entropy)(gamma=1.0, num_steps=4)
        jax.jit(lambda s: tx.update(PARAMS, s, PARAMS, grad_fn=_grad_fn(_quadratic)))(
            tx.init(PARAMS)
        )


def test_multisteps_accumulates_then_steps():
    tx = optax.MultiSteps(relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=3), every_k_schedule=2)
    state = tx.init(PARAMS)
    grads = jax.grad(_quadratic)(PARAMS)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, grad_fn=_grad_fn(_quadratic)))
    u1, s1 = update(grads, state, PARAMS)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, s1)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(u1))
    u2, s2 = update(grads, s1, PARAMS)
    assert float(jnp.abs(u2["w"]).max()) > 0
    chex.assert_trees_all_equal_shapes_and_dtypes(state, s2)


def test_non_finite_gradients_are_skipped_by_apply_if_finite():
    """Wrap the *outer* optimizer: it sees the relaxed gradient, which is non-finite
    whenever the incoming gradient or any inner gradient is."""
    tx = optax.chain(
        relaxjax.local_entropy(gamma=0.1, num_steps=3, noise=0.0),
        optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=5),
    )
    state = tx.init(PARAMS)
    grads = jax.grad(_quadratic)(PARAMS)

    def nan_at_step_2(p, i):
        g = jax.grad(_quadratic)(p)
        return jax.tree.map(lambda x: jnp.where(i == 2, jnp.nan, x), g)

    def update(grads, state, params, bad):
        grad_fn = nan_at_step_2 if bad else _grad_fn(_quadratic)
        return tx.update(grads, state, params, grad_fn=grad_fn)

    update = jax.jit(update, static_argnums=3)
    updates, state = update(grads, state, PARAMS, True)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates))
    assert int(state[1].notfinite_count) == 1
    updates, state = update(grads, state, PARAMS, False)
    assert float(jnp.abs(updates["w"]).max()) > 0
    assert int(state[1].notfinite_count) == 0


def test_vmap_over_seeds_matches_separate_runs():
    grads = jax.grad(_quadratic)(PARAMS)

    def run(seed):
        tx = relaxjax.local_entropy(gamma=0.1, num_steps=3, noise=0.1, seed=seed)
        return tx.update(grads, tx.init(PARAMS), PARAMS, grad_fn=_grad_fn(_quadratic))[0]

    seeds = jnp.arange(4)
    batched = jax.jit(jax.vmap(run))(seeds)
    for s in range(4):
        chex.assert_trees_all_close(jax.tree.map(lambda u, s=s: u[s], batched), run(s), rtol=1e-5)
    assert not np.allclose(batched["w"][0], batched["w"][1])


def test_vmap_over_gamma_with_inject_hyperparams():
    factory = optax.inject_hyperparams(relaxjax.hopf_lax, static_args=("num_steps",))
    tx = factory(gamma=0.1, num_steps=50, step_size=0.02, alpha=0.0)
    x = jnp.array([1.0, -1.0])
    loss = lambda y: 1.5 * jnp.sum(y**2)  # noqa: E731  (a = 3)
    gammas = jnp.array([0.05, 0.1, 0.2])

    def run(gamma):
        state = tx.init(x)
        state.hyperparams["gamma"] = gamma
        return tx.update(jax.grad(loss)(x), state, x, grad_fn=_grad_fn(loss))[0]

    out = jax.jit(jax.vmap(run))(gammas)
    expected = 3.0 * x[None] / (1 + 3.0 * gammas[:, None])
    np.testing.assert_allclose(out, expected, rtol=2e-3)


def test_scoping_schedule_drives_gamma():
    schedule = relaxjax.scoping(initial_gamma=1.0, rate=0.5, final_gamma=0.3)
    np.testing.assert_allclose(
        [schedule(t) for t in range(5)], [1.0, 1 / 1.5, 1 / 2.25, 0.3, 0.3], rtol=1e-6
    )
    stairs = relaxjax.scoping(1.0, 1.0, transition_steps=3, staircase=True)
    np.testing.assert_allclose([stairs(t) for t in (0, 2, 3, 6)], [1.0, 1.0, 0.5, 0.25])

    # A scheduled γ equals a constant γ = schedule(t) at every outer step t.
    x = {"w": jnp.array([2.0])}
    loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)  # noqa: E731
    scheduled = relaxjax.hopf_lax(gamma=schedule, num_steps=5, step_size=0.05)
    state = scheduled.init(x)
    for t in range(4):
        u, state = scheduled.update(jax.grad(loss)(x), state, x, grad_fn=_grad_fn(loss))
        fixed = relaxjax.hopf_lax(gamma=float(schedule(t)), num_steps=5, step_size=0.05)
        u_fixed, _ = fixed.update(jax.grad(loss)(x), fixed.init(x), x, grad_fn=_grad_fn(loss))
        np.testing.assert_allclose(u["w"], u_fixed["w"], rtol=1e-5)


def test_schedules_for_step_size_noise_and_outer_rate():
    tx = relaxjax.entropy_sgd(
        optax.cosine_decay_schedule(1.0, 10),
        gamma=0.1,
        num_steps=3,
        step_size=optax.linear_schedule(0.05, 0.01, 10),
        noise=optax.constant_schedule(1e-3),
    )
    params, state = _train(tx, _quadratic, PARAMS, 10)
    assert int(state[0].relaxation_count) == 10
    assert _quadratic(params) < _quadratic(PARAMS)


def test_inner_optimizer_and_weight_decay():
    # With weight decay λ the inner problem is f + λ/2|y|²: for f = ½ a y² the relaxed
    # gradient is (a + λ) x / (1 + (a + λ) γ).
    a, lam, gamma = 1.0, 0.5, 0.4
    x = jnp.array([2.0])
    loss = lambda y: 0.5 * a * jnp.sum(y**2)  # noqa: E731
    tx = relaxjax.hopf_lax(
        gamma=gamma,
        num_steps=300,
        step_size=0.02,
        alpha=0.0,
        weight_decay=lam,
        inner_optimizer=optax.sgd(0.02, momentum=0.5),
    )
    u, _ = tx.update(jax.grad(loss)(x), tx.init(x), x, grad_fn=_grad_fn(loss))
    np.testing.assert_allclose(u, (a + lam) * x / (1 + (a + lam) * gamma), rtol=1e-4)


def _authors_inner_momentum_reference(x, a, b, gamma, num_steps, eta, momentum, alpha, lr, outer):
    """The inner loop of the authors' Deep Relaxation research code (``ESGD``, noise 0) on
    f(y) = ½ a·y² − b·y, written out: Nesterov momentum on the whole inner gradient with one
    buffer for the whole run, then a plain outer step x ← x − lr (x − μ)/γ. Run one outer
    step at a time it is the buffer zeroed at every outer step, as in their Entropy-SGD
    code (Lua and PyTorch; there the momentum acts on the loss gradient only)."""
    buffer = np.zeros_like(x)
    for _ in range(outer):
        y, mu = x.copy(), x.copy()
        for _ in range(num_steps):
            dw = a * y - b + (y - x) / gamma
            buffer = momentum * buffer + dw
            y = y - eta * (dw + momentum * buffer)
            mu = alpha * mu + (1 - alpha) * y
        x = x - lr * (x - mu) / gamma
    return x


@pytest.mark.parametrize("keep", [True, False])
def test_inner_state_is_kept_across_outer_steps_on_request(keep):
    a, b = np.array([1.0, 3.0, 0.2]), np.array([0.5, -1.0, 2.0])
    x0 = np.ones(3)
    gamma, num_steps, eta, momentum, alpha, lr, outer = 2.0, 5, 0.05, 0.9, 0.75, 0.5, 4
    loss = lambda y: jnp.sum(0.5 * a * y**2 - b * y)  # noqa: E731
    relaxation = relaxjax.local_entropy(
        gamma,
        num_steps=num_steps,
        step_size=eta,
        noise=0.0,
        alpha=alpha,
        inner_optimizer=optax.sgd(eta, momentum=momentum, nesterov=True),
        keep_inner_state=keep,
    )

    def reference(x, outer_steps):
        return _authors_inner_momentum_reference(
            x, a, b, gamma, num_steps, eta, momentum, alpha, lr, outer_steps
        )

    kept = reference(x0, outer)
    restarted = x0  # every outer step starts its momentum afresh: one step at a time
    for _ in range(outer):
        restarted = reference(restarted, 1)
    # The two differ: the kept buffer changes the trajectory after the first outer step.
    assert not np.allclose(kept, restarted)
    with jax.enable_x64(True):
        x, _ = _train(optax.chain(relaxation, optax.sgd(lr)), loss, jnp.asarray(x0), outer)
        np.testing.assert_allclose(np.asarray(x), kept if keep else restarted, rtol=1e-10)


def test_keep_inner_state_without_an_inner_optimizer_raises():
    with pytest.raises(ValueError, match="keep_inner_state=True needs an inner_optimizer"):
        relaxjax.local_entropy(0.1, keep_inner_state=True)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=-1.0), "gamma"),
        (dict(gamma=optax.constant_schedule(-0.1)), "gamma"),
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=2.5), "num_steps"),
        (dict(step_size=0.0), "step_size"),
        (dict(noise=-1e-4), "noise"),
        (dict(alpha=1.0), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(weight_decay=-1.0), "weight_decay"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        relaxjax.local_entropy(**{"gamma": 1.0, **kwargs})


def test_unstable_inner_step_is_rejected_with_the_fix():
    # η′ ≥ 2γ: the coupling alone multiplies y − x by 1 − η′/γ ≤ −1 every inner step.
    with pytest.raises(ValueError, match="step_size=0.1 must be < 2\\*gamma=0.06"):
        relaxjax.local_entropy(gamma=0.03, step_size=0.1)
    with pytest.raises(ValueError, match="step_size"):
        relaxjax.hj_sgd(0.1, gamma=relaxjax.scoping(0.04, 0.1), step_size=0.1)
    # A custom inner optimizer sets its own steps: no such constraint.
    relaxjax.local_entropy(gamma=0.03, step_size=0.1, inner_optimizer=optax.adam(1e-3))


def test_bad_scoping_raises():
    with pytest.raises(ValueError, match="initial_gamma"):
        relaxjax.scoping(0.0, 0.1)
    with pytest.raises(ValueError, match="final_gamma"):
        relaxjax.scoping(1.0, 0.1, final_gamma=2.0)


def test_missing_grad_fn_and_params_raise_clear_errors():
    tx = relaxjax.local_entropy(gamma=1.0, num_steps=3)
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match="grad_fn is required"):
        tx.update(PARAMS, state, PARAMS)
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(PARAMS, state, grad_fn=_grad_fn(_quadratic))


def test_mismatched_grad_fn_output_raises():
    tx = relaxjax.local_entropy(gamma=1.0, num_steps=3)
    state = tx.init(PARAMS)
    grads = jax.grad(_quadratic)(PARAMS)
    with pytest.raises(ValueError, match="grad_fn does not match the parameters' tree"):
        tx.update(grads, state, PARAMS, grad_fn=lambda p, i: {"w": p["w"]})
    with pytest.raises(ValueError, match="\\(gradients, aux\\) pair"):
        tx.update(grads, state, PARAMS, grad_fn=lambda p, i: (grads, 0.0))
    with pytest.raises(ValueError, match="shape \\(2,\\) at \\['w'\\]"):
        tx.update(grads, state, PARAMS, grad_fn=lambda p, i: {"w": jnp.zeros(2), "b": p["b"]})
    with pytest.raises(ValueError, match="incoming gradient"):
        tx.update({"w": grads["w"]}, state, PARAMS, grad_fn=_grad_fn(_quadratic))
