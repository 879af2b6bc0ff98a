"""The stochastic inner loops against the PDE grid oracles of ``relaxjax.pde``.

Non-convex losses in 1-D and 2-D: the SGLD estimate of ``local_entropy`` against the
Gibbs mean by quadrature (viscous HJ), and the gradient-descent estimate of
``hopf_lax`` against the proximal map by grid minimisation (Hopf-Lax formula).
"""

import jax
import jax.numpy as jnp
import numpy as np

import relaxjax
from relaxjax import pde


def _f2(y):
    """A 2-D double well with ripples (vectorised over leading axes)."""
    a, b = y[..., 0], y[..., 1]
    return 0.25 * (a**2 - 1) ** 2 + 0.5 * b**2 + 0.2 * jnp.sin(3 * a) * jnp.cos(2 * b)


def _f1(y):
    return y**4 / 4 - y**2 / 2 + 0.3 * jnp.sin(5 * y)


def _relaxed_gradient(tx, loss, x):
    grad = jax.grad(loss)
    update = jax.jit(lambda x, s: tx.update(grad(x), s, x, grad_fn=lambda y, i: grad(y))[0])
    return update(x, tx.init(x))


def test_local_entropy_matches_the_viscous_hj_oracle_in_2d():
    gamma, eps, n = 1.0, 0.7, 2000  # β = 1/ε² ≈ 2; n independent chains (separable loss)
    beta = 1 / eps**2
    grid = pde.uniform_grid(-4.0, 4.0, (161, 161))
    for x0 in ([0.9, 0.3], [-0.5, -1.0]):
        x = jnp.tile(jnp.asarray(x0, jnp.float32), (n, 1))
        tx = relaxjax.local_entropy(
            gamma, num_steps=3000, step_size=2e-3, noise=eps, alpha=0.995, seed=5
        )
        d = np.asarray(_relaxed_gradient(tx, lambda y: jnp.sum(_f2(y)), x))
        mean = np.asarray(pde.gibbs_mean_at(_f2, jnp.asarray([x0]), gamma, beta, grid))[0]
        exact = (np.asarray(x0) - mean) / gamma
        tolerance = 4 * d.std(axis=0) / np.sqrt(n) + 0.02
        assert np.all(np.abs(d.mean(axis=0) - exact) < tolerance), (x0, d.mean(0), exact)
        # The relaxation is far from a no-op here: the plain gradient is outside tolerance.
        plain = np.asarray(jax.grad(_f2)(jnp.asarray(x0)))
        assert np.max(np.abs(plain - exact) - tolerance) > 0


def test_hopf_lax_matches_the_proximal_map_in_1d():
    # t = 0.1: 1/t exceeds max(−f''), so the proximal problem is strongly convex and
    # gradient descent from y₀ = x finds the unique minimiser.
    t = 0.1
    xs = jnp.linspace(-1.8, 1.8, 37)
    tx = relaxjax.hopf_lax(t, num_steps=600, step_size=0.01, alpha=0.0)
    d = _relaxed_gradient(tx, lambda y: jnp.sum(_f1(y)), xs)
    grid = pde.uniform_grid(-4.0, 4.0, 4001)
    prox = pde.prox_at(_f1, xs[:, None], t, grid)[:, 0]
    np.testing.assert_allclose(d, (xs - prox) / t, atol=2e-3)
    assert np.max(np.abs(np.asarray(d) - np.asarray(jax.vmap(jax.grad(_f1))(xs)))) > 0.1
