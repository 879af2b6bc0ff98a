"""Tests for relaxjax.msa (E-MSA of Li, Chen, Tai, E; JMLR 2018)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from relaxjax import msa

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _small_net(key, *, reg=None):
    """3 residual tanh layers on R^4 and a dense read-out to 3 logits."""
    res = msa.ResidualTanh(4, 0.5)
    modules = [res, res, res, nn.Dense(3)]
    return msa.sequential(modules, jnp.zeros((1, 4)), key, regularizer=reg)


def _small_data(key, n=16):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, 4)), jax.random.randint(ky, (n,), 0, 3)


def _lq_problem(lam=0.1, d=6, m=2, T=3, S=8, dt=0.5, seed=0, dtype=jnp.float64):
    """x_{t+1} = A x_t + dt·B θ_t, Φ = ½|x_T − y|², L_t = (λ/2)|θ_t|², with its optimum.

    Call inside ``jax.enable_x64(True)`` for ``dtype=float64``.
    """
    rng = np.random.default_rng(seed)
    A, _ = np.linalg.qr(rng.standard_normal((d, d)))
    B = rng.standard_normal((d, m))
    x0 = rng.standard_normal((S, d))
    y = rng.standard_normal((S, d))
    Aj, Bj = jnp.asarray(A, dtype), jnp.asarray(B, dtype)

    def f(params, x):
        return x @ Aj.T + dt * params["theta"] @ Bj.T

    layers = msa.from_pairs(
        [(f, {"theta": jnp.zeros(m, dtype)}) for _ in range(T)],
        regularizer=msa.l2_regularizer(lam),
    )
    # x_T = A^T x_0 + M θ with θ = (θ_0, …, θ_{T-1}) stacked: least squares + ridge.
    M = np.concatenate([dt * np.linalg.matrix_power(A, T - 1 - t) @ B for t in range(T)], 1)
    c = x0 @ np.linalg.matrix_power(A, T).T
    theta = np.linalg.solve(M.T @ M + lam * np.eye(T * m), M.T @ (y - c).mean(0))
    j_opt = 0.5 * np.mean(np.sum((c + theta @ M.T - y) ** 2, 1)) + 0.5 * lam * theta @ theta
    batch = (jnp.asarray(x0, dtype), jnp.asarray(y, dtype))
    return layers, batch, theta, j_opt


def _stacked_theta(state):
    return np.concatenate([np.asarray(p["theta"]) for p in state.params])


# --------------------------------------------------------------------------------------
# Forward / backward
# --------------------------------------------------------------------------------------


def test_costates_are_negative_backprop_gradients():
    layers = _small_net(jax.random.key(0), reg=msa.l2_regularizer(0.01))
    x, y = _small_data(jax.random.key(1))
    loss_fn = msa.softmax_cross_entropy
    xs = jax.jit(msa.forward)(layers, x)
    ps = jax.jit(lambda lay, xs: msa.costates(lay, xs, y, loss_fn))(layers, xs)
    assert len(xs) == len(ps) == layers.num_layers + 1

    # dJ/dx_t: gradient w.r.t. perturbations e_t added to the activations x_t.
    def loss_of_perturbations(es):
        h = x
        for t, (fn, p) in enumerate(zip(layers.apply_fns, layers.params, strict=True)):
            h = fn(p, h + es[t])
        return jnp.mean(loss_fn(h + es[-1], y))

    grads = jax.jit(jax.grad(loss_of_perturbations))([jnp.zeros_like(a) for a in xs])
    for p, g in zip(ps, grads, strict=True):
        np.testing.assert_allclose(p, -g, rtol=1e-5, atol=1e-7)
    # p_t = ∇_x H_t(x_t, p_{t+1}, θ_t)
    grad_h = jax.jit(jax.grad(msa.hamiltonian, argnums=2), static_argnums=(0, 4))
    for t in range(layers.num_layers):
        fn, params, reg = layers.apply_fns[t], layers.params[t], layers.regularizers[t]
        gx = grad_h(fn, params, xs[t], ps[t + 1], reg)
        np.testing.assert_allclose(ps[t], gx, rtol=1e-5, atol=1e-7)


def test_hamiltonian_and_augmented_hamiltonian_values():
    layers = _small_net(jax.random.key(2))
    x, _ = _small_data(jax.random.key(3), n=5)
    fn, params = layers.apply_fns[0], layers.params[0]
    p = jax.random.normal(jax.random.key(4), (5, 4))
    v = jax.random.normal(jax.random.key(5), (5, 4))
    q = jax.random.normal(jax.random.key(6), (5, 4))
    reg = msa.l2_regularizer(0.3)
    fx = fn(params, x)
    h = msa.hamiltonian(fn, params, x, p, reg)
    np.testing.assert_allclose(h, jnp.sum(p * fx) - reg(params), rtol=1e-6)
    gx = jax.grad(lambda z: jnp.sum(p * fn(params, z)))(x)
    sp, cp = jnp.sum((v - fx) ** 2), jnp.sum((q - gx) ** 2)
    for pen, scale_s, scale_c in [("sum", 1.0, 1.0), ("mean", 1 / 5, 5.0)]:
        aug = msa.augmented_hamiltonian(fn, params, x, p, v, q, 0.7, reg, penalty=pen)
        np.testing.assert_allclose(aug, h - 0.35 * (scale_s * sp + scale_c * cp), rtol=1e-5)
    # At the current iterate (v = f(x,θ), q = ∇_x H) the penalties vanish: H̃ = H.
    aug0 = msa.augmented_hamiltonian(fn, params, x, p, fx, gx, 10.0, reg)
    np.testing.assert_allclose(aug0, h, rtol=1e-6)


# --------------------------------------------------------------------------------------
# Proposition 5: basic MSA with one gradient-ascent step on H_t = gradient descent
# --------------------------------------------------------------------------------------


def test_proposition5_gradient_ascent_msa_is_backprop_gd():
    eta = 0.3
    layers = _small_net(jax.random.key(7), reg=msa.l2_regularizer(0.05))
    x, y = _small_data(jax.random.key(8))
    opt = msa.emsa(
        msa.softmax_cross_entropy,
        rho=0.0,
        inner_optimizer=optax.sgd(eta),
        inner_steps=1,
        monotone=False,
    )
    state = opt.init(layers)
    params = layers.params
    value_and_grad = jax.jit(
        jax.value_and_grad(
            lambda ps: msa.total_loss(layers.replace(params=ps), x, y, msa.softmax_cross_entropy)
        )
    )
    for _ in range(2):
        state, metrics = opt.step(state, (x, y))
        loss, grads = value_and_grad(params)
        np.testing.assert_allclose(metrics.loss, loss, rtol=1e-6)
        params = jax.tree.map(lambda p, g: p - eta * g, params, grads)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        # μ_k > 0 for a small ascent step
        assert float(metrics.hamiltonian_gain) > 0


# --------------------------------------------------------------------------------------
# Linear-quadratic control problem with a closed-form optimum
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rho,penalty", [(0.3, "sum"), (2.4, "mean")])
def test_emsa_reaches_lq_optimum(rho, penalty):
    # float64: the inner line search compares objective values, which in float32
    # resolves the maximiser of a quadratic only to about sqrt(eps) ~ 3e-4.
    with jax.enable_x64(True):
        layers, batch, theta_opt, j_opt = _lq_problem()
        opt = msa.emsa(msa.squared_error, rho=rho, penalty=penalty)  # 10 L-BFGS steps/layer
        state = opt.init(layers)
        losses = []
        for _ in range(120):
            state, metrics = opt.step(state, batch)
            losses.append(float(metrics.loss))
            assert float(metrics.augmented_gain) >= -1e-10
        final = float(opt.loss(state, batch))
        theta = _stacked_theta(state)
    # J decreases monotonically (ρ above the problem's threshold) to the optimum.
    assert np.all(np.diff(losses) <= 1e-12)
    np.testing.assert_allclose(final, j_opt, rtol=1e-9)
    np.testing.assert_allclose(theta, theta_opt, atol=1e-5)
    assert float(metrics.hamiltonian_gain) < 1e-9  # μ_k → 0 at the solution


def test_basic_msa_diverges_where_emsa_converges():
    """The paper's motivation: basic MSA (ρ = 0) overshoots; E-MSA does not."""
    layers, batch, _, j_opt = _lq_problem(dtype=jnp.float32)
    basic = msa.basic_msa(msa.squared_error)
    state = basic.init(layers)
    basic_losses = [float(basic.loss(state, batch))]
    for _ in range(4):
        state, _ = basic.step(state, batch)
        basic_losses.append(float(basic.loss(state, batch)))
    # each exact maximisation of H_t overshoots: the loss grows by orders of magnitude
    assert basic_losses[-1] > 1e4 * basic_losses[0], basic_losses
    assert np.all(np.diff(basic_losses[1:]) > 0), basic_losses

    emsa = msa.emsa(msa.squared_error, rho=0.3)
    state = emsa.init(layers)
    emsa_losses = [float(emsa.loss(state, batch))]
    for _ in range(4):
        state, _ = emsa.step(state, batch)
        emsa_losses.append(float(emsa.loss(state, batch)))
    assert np.all(np.diff(emsa_losses) < 0), emsa_losses
    assert emsa_losses[-1] >= j_opt - 1e-4


# --------------------------------------------------------------------------------------
# Layer-wise maximisation increases the augmented Hamiltonian
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("init_noise", [0.0, 0.01])
def test_layer_updates_do_not_decrease_augmented_hamiltonian(init_noise):
    layers = msa.sine_net(jax.random.key(0), num_layers=4)
    x, y = msa.sine_dataset(jax.random.key(1), n=64)
    rho, penalty = 1.0, "mean"
    # monotone=False: no safeguard, this checks the inner L-BFGS itself.
    opt = msa.emsa(
        msa.squared_error, rho=rho, penalty=penalty, monotone=False, init_noise=init_noise
    )
    state = opt.init(layers)
    fwd = jax.jit(msa.forward)
    bwd = jax.jit(lambda lay, xs: msa.costates(lay, xs, y, msa.squared_error))
    aug_h = jax.jit(msa.augmented_hamiltonian, static_argnums=(0, 7, 8))
    for _ in range(2):
        old = state.layers
        xs = fwd(old, x)
        ps = bwd(old, xs)
        state, metrics = opt.step(state, (x, y))
        for t in range(old.num_layers):
            if not jax.tree.leaves(old.params[t]):
                continue
            args = (xs[t], ps[t + 1], xs[t + 1], ps[t], rho, old.regularizers[t], penalty)
            fn = old.apply_fns[t]
            before = aug_h(fn, old.params[t], *args)
            after = aug_h(fn, state.params[t], *args)
            assert float(after) >= float(before) - 1e-6 * (1 + abs(float(before)))
            np.testing.assert_allclose(metrics.layer_gains[t], after - before, atol=1e-5)


# --------------------------------------------------------------------------------------
# Paper networks
# --------------------------------------------------------------------------------------


def test_one_emsa_step_reduces_sine_loss_from_good_init():
    layers = msa.sine_net(jax.random.key(0))  # 20 layers, δ = 0.25, X ∈ R^5
    assert layers.num_layers == 22  # + parameter-free input copy and read-out
    x, y = msa.sine_dataset(jax.random.key(1), n=1000)
    opt = msa.emsa(msa.squared_error, rho=1.0)
    state = opt.init(layers)
    state, metrics = opt.step(state, (x, y))
    new_loss = float(opt.loss(state, (x, y)))
    assert new_loss < 0.9 * float(metrics.loss)
    assert float(metrics.hamiltonian_gain) > 0
    assert metrics.outputs.shape == (1000, 1)


def test_batched_layers_match_layer_loop():
    layers = msa.sine_net(jax.random.key(3), num_layers=3)
    x, y = msa.sine_dataset(jax.random.key(4), n=32)
    results = []
    for batch_layers in (False, True):
        # fixed-step inner optimizer (vmap of a line-search L-BFGS compiles slowly)
        opt = msa.emsa(
            msa.squared_error,
            rho=0.5,
            penalty="mean",
            batch_layers=batch_layers,
            inner_optimizer=optax.adam(0.05),
            inner_steps=3,
            init_noise=0.01,
            unroll_inner=not batch_layers,  # also checks unrolled == scanned inner loop
        )
        state, metrics = opt.step(opt.init(layers), (x, y))
        results.append((state, metrics))
    (s0, m0), (s1, m1) = results
    for a, b in zip(jax.tree.leaves(s0.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m0.layer_gains, m1.layer_gains, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_paper_mnist_net_structure_and_step():
    # shapes only (no compilation): the full-size 10-layer net
    layers = jax.eval_shape(msa.paper_mnist_net, jax.random.key(0))
    assert layers.num_layers == 10
    assert len(set(layers.apply_fns[2:9])) == 1  # residual layers share one apply
    out = jax.eval_shape(msa.forward, layers, jnp.zeros((2, 28, 28, 1)))
    assert [a.shape for a in out[1:3]] == [(2, 14, 14, 32), (2, 7, 7, 32)]
    assert [a.shape for a in out[3:10]] == [(2, 7, 7, 32)] * 7
    assert out[-1].shape == (2, 10)
    # one cheap step on a reduced version of the net
    small = msa.paper_mnist_net(
        jax.random.key(1), input_shape=(8, 8, 1), projection_channels=(4, 4), num_residual=2
    )
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    y = jnp.array([0, 1, 2, 3])
    opt = msa.emsa(
        msa.softmax_cross_entropy,
        rho=1.0,
        inner_optimizer=optax.adam(1e-2),
        inner_steps=2,
        batch_layers=True,
    )
    state, metrics = opt.step(opt.init(small), (x, y))
    assert np.isfinite(float(metrics.loss))
    assert float(metrics.augmented_gain) >= -1e-6
    assert float(opt.loss(state, (x, y))) < float(metrics.loss)


# --------------------------------------------------------------------------------------
# Bad configurations
# --------------------------------------------------------------------------------------


def test_bad_configurations_raise():
    key = jax.random.key(0)
    x = jnp.zeros((1, 3))
    with pytest.raises(ValueError, match="list/tuple of layers"):
        msa.sequential(nn.Dense(3), x, key)
    with pytest.raises(ValueError, match="empty"):
        msa.sequential([], x, key)
    with pytest.raises(ValueError, match="not a flax.linen.Module"):
        msa.sequential([nn.Dense(3), "relu"], x, key)
    with pytest.raises(ValueError, match="only 'params'"):
        msa.sequential([nn.BatchNorm(use_running_average=False)], x, key)
    with pytest.raises(ValueError, match="empty"):
        msa.from_pairs([])
    with pytest.raises(ValueError, match="apply_fn, params"):
        msa.from_pairs([(1, 2)])
    with pytest.raises(ValueError, match="regularizer"):
        msa.from_pairs([(lambda p, x: x, {})], regularizer=[None, None])
    with pytest.raises(ValueError, match="rho must be >= 0"):
        msa.emsa(msa.squared_error, rho=-1.0)
    with pytest.raises(ValueError, match="rho must be a finite"):
        msa.emsa(msa.squared_error, rho=float("nan"))
    for steps in (0, -3, 2.5):
        with pytest.raises(ValueError, match="inner_steps"):
            msa.emsa(msa.squared_error, inner_steps=steps)
    with pytest.raises(ValueError, match="inner_optimizer"):
        msa.emsa(msa.squared_error, inner_optimizer="lbfgs")
    with pytest.raises(ValueError, match="penalty"):
        msa.emsa(msa.squared_error, penalty="max")
    with pytest.raises(ValueError, match="init_noise"):
        msa.emsa(msa.squared_error, init_noise=-0.1)
    with pytest.raises(ValueError, match="loss_fn"):
        msa.emsa("mse")
    with pytest.raises(ValueError, match="rho = 0"):
        msa.basic_msa(msa.squared_error, rho=1.0)

    opt = msa.emsa(msa.squared_error)
    with pytest.raises(ValueError, match="single flax Module"):
        opt.init(nn.Dense(3))
    with pytest.raises(ValueError, match="empty"):
        opt.init([])
    with pytest.raises(ValueError, match="no trainable parameters"):
        opt.init([(lambda p, x: x, {})])
    layers = msa.sequential([nn.Dense(3)], x, key)
    state = opt.init(layers)
    with pytest.raises(ValueError, match="pair"):
        opt.step(state, x)
    bad = msa.emsa(lambda out, y: jnp.mean((out - y) ** 2))  # scalar, not per-sample
    with pytest.raises(ValueError, match="per-sample"):
        bad.step(bad.init(layers), (x, x))
