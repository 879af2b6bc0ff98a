"""The relaxed gradients against exact answers (quadratics, |x|, quadrature)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import relaxjax


def _relaxed_gradient(tx, loss, x):
    """One outer step of ``tx`` at ``x`` with the full-batch gradient of ``loss``."""
    grad = jax.grad(loss)

    @jax.jit
    def run(x, state):
        return tx.update(grad(x), state, x, grad_fn=lambda y, i: grad(y))

    updates, _ = run(x, tx.init(x))
    return updates


@pytest.mark.parametrize("gamma", [0.1, 0.5, 2.0])
def test_noiseless_quadratic_1d(gamma):
    a = 3.0
    x = jnp.linspace(-2.0, 2.0, 9)
    loss = lambda y: 0.5 * a * jnp.sum(y**2)  # noqa: E731
    step = 0.5 / (a + 1 / gamma)  # stable: η′(a + 1/γ) = 0.5
    tx = relaxjax.local_entropy(gamma=gamma, num_steps=200, step_size=step, noise=0.0, alpha=0.5)
    d = _relaxed_gradient(tx, loss, x)
    np.testing.assert_allclose(d, a * x / (1 + a * gamma), rtol=1e-4, atol=1e-5)


def test_noiseless_anisotropic_quadratic():
    # f(y) = ½ yᵀAy with a non-diagonal A: ∇f_γ(x) = A (I + γA)⁻¹ x.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    a_matrix = q @ np.diag([0.2, 1.0, 3.0, 8.0]) @ q.T
    gamma = 0.25
    x = jnp.asarray(rng.normal(size=4), jnp.float32)
    loss = lambda y: 0.5 * y @ jnp.asarray(a_matrix, jnp.float32) @ y  # noqa: E731
    tx = relaxjax.hopf_lax(gamma=gamma, num_steps=400, step_size=0.05, alpha=0.0)
    d = _relaxed_gradient(tx, loss, x)
    expected = a_matrix @ np.linalg.solve(np.eye(4) + gamma * a_matrix, np.asarray(x))
    np.testing.assert_allclose(d, expected, rtol=1e-4, atol=1e-5)


def test_noisy_quadratic_mean_and_temperature():
    """With Langevin noise the mean of the estimate is unchanged and the chain has temperature ε².

    f(y) = ½ a Σ y_i² is separable, so the n coordinates of the parameter are n
    independent chains started at the same x.
    """
    a, gamma, eta, eps, n = 2.0, 0.5, 0.02, 0.3, 20000
    x = jnp.full((n,), 1.5)
    loss = lambda y: 0.5 * a * jnp.sum(y**2)  # noqa: E731
    k = a + 1 / gamma  # curvature of the inner objective

    # Mean: the relaxed gradient averaged over chains is a x/(1 + aγ) for every temperature.
    tx = relaxjax.local_entropy(gamma, num_steps=300, step_size=eta, noise=eps, alpha=0.9, seed=1)
    d = np.asarray(_relaxed_gradient(tx, loss, x))
    standard_error = d.std() / np.sqrt(n)
    assert d.std() > 0.05  # the noise is really there
    assert abs(d.mean() - a * 1.5 / (1 + a * gamma)) < 4 * standard_error

    # Temperature: the last iterate (α = 0) has the discrete OU stationary variance
    # 2η′ε² / (1 − (1 − η′k)²) ≈ ε²/k, the variance of exp(−(f + |y−x|²/2γ)/ε²).
    tx = relaxjax.local_entropy(gamma, num_steps=400, step_size=eta, noise=eps, alpha=0.0, seed=2)
    y_last = np.asarray(x) - gamma * np.asarray(_relaxed_gradient(tx, loss, x))
    expected_var = 2 * eta * eps**2 / (1 - (1 - eta * k) ** 2)
    assert y_last.var() == pytest.approx(expected_var, rel=0.05)
    assert y_last.mean() == pytest.approx(1.5 / (1 + a * gamma), abs=4 * np.sqrt(expected_var / n))


def test_hopf_lax_of_absolute_value_is_soft_thresholding():
    # f = |y|: prox_{γf}(x) = sign(x) max(|x| − γ, 0); Moreau gradient clip(x/γ, −1, 1).
    gamma = 1.0
    x = jnp.linspace(-3.0, 3.0, 61)
    loss = lambda y: jnp.sum(jnp.abs(y))  # noqa: E731
    eta = 0.005

    tx = relaxjax.hopf_lax(gamma=gamma, num_steps=1500, step_size=eta, alpha=0.0)
    prox = x - gamma * _relaxed_gradient(tx, loss, x)
    soft = jnp.sign(x) * jnp.maximum(jnp.abs(x) - gamma, 0.0)
    # Subgradient descent chatters around the kink at 0 with amplitude ≤ η′.
    np.testing.assert_allclose(prox, soft, atol=2 * eta)

    tx = relaxjax.hopf_lax(gamma=gamma, num_steps=1500, step_size=eta, alpha=0.9)
    d = _relaxed_gradient(tx, loss, x)
    np.testing.assert_allclose(d, jnp.clip(x / gamma, -1, 1), atol=2 * eta / gamma)


def test_hopf_lax_is_the_fixed_point_iteration_of_its_gradient():
    """p ← (1 − θ) p + θ ∇f_ℓ(x − γ p), p₀ = 0, is hopf_lax with η′ = θγ and α = 0.

    The Hopf-Lax gradient p = ∇u(x, γ) solves p = ∇f(x − γ p); the Deep Relaxation
    code iterates that fixed point with θ = ¼. With y = x − γ p, each iteration is
    one gradient step on the proximal problem, a fresh mini-batch each time.
    """
    gamma, theta, num_steps = 0.3, 0.25, 12
    x = jnp.array([1.5, -0.7, 0.2])

    def grad_fn(y, i):  # a different smooth "mini-batch" loss per inner step
        return jax.grad(lambda y: jnp.sum(jnp.cos((1 + 0.1 * i) * y) + 0.5 * y**4))(y)

    p = jnp.zeros_like(x)
    for i in range(num_steps):
        p = (1 - theta) * p + theta * grad_fn(x - gamma * p, i)
    tx = relaxjax.hopf_lax(gamma, num_steps=num_steps, step_size=theta * gamma, alpha=0.0)
    updates, _ = tx.update(grad_fn(x, 0), tx.init(x), x, grad_fn=grad_fn)
    np.testing.assert_allclose(updates, p, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p, grad_fn(x, 0), atol=1e-2)  # the iteration moved p


def _nonconvex(y):
    return y**4 / 4 - y**2 / 2 + 0.3 * jnp.sin(5 * y)


def _gibbs_mean_by_quadrature(x, gamma, beta):
    y = np.linspace(-6, 6, 200001)
    f = y**4 / 4 - y**2 / 2 + 0.3 * np.sin(5 * y)
    log_w = -beta * f - beta * (x - y) ** 2 / (2 * gamma)
    w = np.exp(log_w - log_w.max())
    return np.trapezoid(w * y, y) / np.trapezoid(w, y)


def test_local_entropy_on_nonconvex_1d_matches_quadrature():
    """SGLD estimate of (x − ⟨y⟩)/γ against quadrature of the Gibbs measure.

    Each x is replicated over n coordinates of a separable loss: n chains.
    """
    gamma, eps, eta, n = 0.5, 0.5, 2e-3, 2000  # β = 1/ε² = 4
    beta = 1 / eps**2
    xs = np.array([-1.2, -0.3, 0.4, 1.0])
    x = jnp.asarray(np.repeat(xs[:, None], n, axis=1), jnp.float32)
    loss = lambda y: jnp.sum(_nonconvex(y))  # noqa: E731
    tx = relaxjax.local_entropy(
        gamma, num_steps=3000, step_size=eta, noise=eps, alpha=0.995, seed=3
    )
    d = np.asarray(_relaxed_gradient(tx, loss, x))
    for row, x0 in zip(d, xs, strict=True):
        exact = (x0 - _gibbs_mean_by_quadrature(x0, gamma, beta)) / gamma
        # Statistical error of the chain average plus the O(η′) Euler bias.
        tolerance = 4 * row.std() / np.sqrt(n) + 0.02
        assert abs(row.mean() - exact) < tolerance, (x0, row.mean(), exact, tolerance)
    # The estimate differs from the plain gradient: the relaxation is not a no-op.
    plain = np.asarray(jax.vmap(jax.grad(_nonconvex))(jnp.asarray(xs, jnp.float32)))
    assert np.max(np.abs(d.mean(axis=1) - plain)) > 0.1
