"""Flatness diagnostics against exact answers: eigvalsh, Gauss quadrature, PDE oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from relaxjax import diagnostics, pde

# ----------------------------------------------------------------------------
# Hessian eigenvalues by Lanczos.
# ----------------------------------------------------------------------------


def _quadratic_over_tree(a_matrix):
    """f(p) = ½ vᵀAv with v the concatenation of a (3, 4) leaf and an (n − 12,) leaf."""

    def loss(p):
        v = jnp.concatenate([p["a"].ravel(), p["b"]])
        return 0.5 * v @ jnp.asarray(a_matrix, v.dtype) @ v

    n = a_matrix.shape[0]
    return loss, {"a": jnp.ones((3, 4)), "b": jnp.zeros(n - 12)}


def _rotated(eigenvalues, seed=0):
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q @ np.diag(eigenvalues) @ q.T, q


def test_full_lanczos_recovers_every_eigenvalue_with_multiplicities():
    # Repeated eigenvalues make the Krylov space smaller than n: Lanczos breaks down
    # and restarts, and the full spectrum must still come out, multiplicities included.
    eigenvalues = np.array([-3.0, -3.0, 0.0, 0.0, 0.0, 1.0, 2.5, 2.5, 7.0] + list(range(8, 29)))
    a_matrix, _ = _rotated(eigenvalues)
    with jax.enable_x64(True):
        loss, params = _quadratic_over_tree(a_matrix)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        n = len(eigenvalues)
        result = diagnostics.hessian_top_eigenvalues(loss, params, k=n, num_iterations=n + 10)
    np.testing.assert_allclose(
        np.sort(result.eigenvalues), np.linalg.eigvalsh(a_matrix), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_array_less(result.residuals, 1e-6)


def test_top_eigenpairs_converge_in_few_iterations():
    eigenvalues = np.concatenate([[-5.0], np.linspace(-1.0, 10.0, 26), [20.0, 30.0, 40.0]])
    a_matrix, q = _rotated(eigenvalues, seed=1)
    loss, params = _quadratic_over_tree(a_matrix)
    result = diagnostics.hessian_top_eigenvalues(
        loss, params, k=3, num_iterations=15, key=3, return_eigenvectors=True
    )
    np.testing.assert_allclose(result.eigenvalues, [40.0, 30.0, 20.0], rtol=1e-4)
    assert np.all(result.residuals < 1e-2 * 40)
    # Ritz vectors: a pytree like params with a leading axis k, unit norm, ± eigenvectors.
    vectors = result.eigenvectors
    assert vectors["a"].shape == (3, 3, 4) and vectors["b"].shape == (3, 18)
    flat = np.concatenate([np.asarray(vectors["a"]).reshape(3, -1), vectors["b"]], axis=1)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1.0, rtol=1e-4)
    overlaps = np.abs(flat @ q[:, [29, 28, 27]])
    np.testing.assert_allclose(np.diag(overlaps), 1.0, atol=1e-3)

    smallest = diagnostics.hessian_top_eigenvalues(
        loss, params, k=2, num_iterations=15, which="smallest"
    )
    np.testing.assert_allclose(smallest.eigenvalues[0], -5.0, rtol=1e-4)
    assert smallest.eigenvalues[1] > smallest.eigenvalues[0]
    largest = diagnostics.hessian_top_eigenvalues(
        loss, params, k=4, num_iterations=15, which="magnitude"
    )
    np.testing.assert_allclose(largest.eigenvalues[:3], [40.0, 30.0, 20.0], rtol=1e-4)
    assert abs(largest.eigenvalues[3]) <= 20.0


def _network_loss(p, x, y):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] - y) ** 2)


def test_hessian_of_a_small_network_over_a_pytree():
    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    with jax.enable_x64(True):
        x = jax.random.normal(keys[3], (16, 3), jnp.float64)
        y = jnp.sin(x.sum(axis=1))
        params = {
            "w1": jax.random.normal(keys[0], (3, 4), jnp.float64),
            "b1": jax.random.normal(keys[1], (4,), jnp.float64),
            "w2": jax.random.normal(keys[2], (4,), jnp.float64),
        }
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        hessian_of = jax.jit(jax.hessian(lambda v, x, y: _network_loss(unravel(v), x, y)))
        hessian = np.asarray(hessian_of(flat, x, y))
        result = diagnostics.hessian_top_eigenvalues(
            _network_loss, params, k=20, num_iterations=20, loss_args=(x, y)
        )
        hv = diagnostics.hessian_vector_product(
            _network_loss, params, unravel(jnp.ones_like(flat)), loss_args=(x, y)
        )
        hv = np.asarray(jax.flatten_util.ravel_pytree(hv)[0])
        # Data passed in loss_args is traced: new data, same shapes, no recompilation.
        compiled = diagnostics.hessian._hessian_lanczos._cache_size()
        x2 = jax.random.normal(keys[4], (16, 3), jnp.float64)
        other = diagnostics.hessian_top_eigenvalues(
            _network_loss, params, k=20, num_iterations=20, loss_args=(x2, jnp.cos(x2[:, 0]))
        )
        assert diagnostics.hessian._hessian_lanczos._cache_size() == compiled
        hessian2 = np.asarray(hessian_of(flat, x2, jnp.cos(x2[:, 0])))
    np.testing.assert_allclose(
        np.sort(result.eigenvalues), np.linalg.eigvalsh(hessian), rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(
        np.sort(other.eigenvalues), np.linalg.eigvalsh(hessian2), rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(hv, hessian @ np.ones(20), rtol=1e-10, atol=1e-12)


def test_spectral_density_is_gauss_quadrature_of_the_spectrum():
    # A diagonal Hessian: Rademacher probes give vᵀHᵏv = tr Hᵏ exactly, and m Lanczos
    # steps integrate polynomials of degree < 2m exactly, so every moment up to 2m - 1
    # is exact for every probe.
    d = np.linspace(0.5, 2.0, 40)
    split = {"u": jnp.asarray(d[:25]), "w": jnp.asarray(d[25:]).reshape(3, 5)}

    def loss(p):
        return 0.5 * (jnp.sum(split["u"] * p["u"] ** 2) + jnp.sum(split["w"] * p["w"] ** 2))

    params = {"u": jnp.zeros(25), "w": jnp.zeros((3, 5))}
    sd = diagnostics.hessian_spectral_density(loss, params, num_iterations=4, num_probes=3)
    assert sd.nodes.shape == sd.weights.shape == (3, 4) and sd.dimension == 40
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, rtol=1e-5)
    for power in range(8):
        assert sd.trace(lambda t, k=power: t**k) == pytest.approx(np.sum(d**power), rel=1e-4)
    t = np.linspace(-1.0, 3.5, 2001)
    density = sd.density(t, sigma=0.05)
    assert np.trapezoid(density, t) == pytest.approx(1.0, rel=1e-3)
    assert np.all(density[(t < 0.2) | (t > 2.3)] < 1e-2)
    # Spectral sums feed the Laplace approximation of the local-entropy gap.
    gap = diagnostics.laplace_local_entropy_gap(d, gamma=0.5, noise=0.1)
    assert 0.5 * 0.1**2 * sd.trace(lambda t: np.log1p(0.5 * t)) == pytest.approx(gap, rel=1e-3)


def test_lanczos_argument_checks():
    loss, params = _quadratic_over_tree(np.eye(14))
    with pytest.raises(ValueError, match="k"):
        diagnostics.hessian_top_eigenvalues(loss, params, k=6, num_iterations=5)
    with pytest.raises(ValueError, match="which"):
        diagnostics.hessian_top_eigenvalues(loss, params, which="biggest")
    with pytest.raises(ValueError, match="diverges"):
        diagnostics.laplace_local_entropy_gap([-3.0], gamma=1.0, noise=0.1)


# ----------------------------------------------------------------------------
# Local entropy by SGLD + thermodynamic integration, against quadrature oracles.
# ----------------------------------------------------------------------------


def test_lobatto_rule():
    nodes, weights = diagnostics.lobatto_rule(2)
    np.testing.assert_allclose(nodes, [0.0, 1.0])
    np.testing.assert_allclose(weights, [0.5, 0.5])
    for n in (3, 5, 7):
        nodes, weights = diagnostics.lobatto_rule(n)
        assert nodes[0] == 0.0 and nodes[-1] == 1.0
        for degree in range(2 * n - 2):  # exact up to degree 2n - 3
            assert np.dot(weights, nodes**degree) == pytest.approx(1 / (degree + 1), rel=1e-12)


def f1(y):
    return y**4 / 4 - y**2 / 2 + 0.2 * jnp.sin(4 * y)


def _gibbs_expectations(f, x, gamma, beta, grid):
    """E_ρ[f] and E_ρ|y − x|² by quadrature on a 1-D grid."""
    ys = np.asarray(grid.nodes(), np.float64)
    fy = np.asarray(f(jnp.asarray(ys)), np.float64)
    log_p = -beta * fy - beta * (ys - x) ** 2 / (2 * gamma)
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    return float(p @ fy), float(p @ (ys - x) ** 2)


@pytest.mark.parametrize("x, gammas", [(1.2, (0.2, 1.0)), (0.3, (0.5,))])
def test_local_entropy_estimate_1d_against_pde_oracles(x, gammas):
    noise, chains = 0.5, 1024
    beta = 1 / noise**2
    grid = pde.uniform_grid(-4.0, 4.0, 801)
    est = diagnostics.local_entropy_estimate(
        f1,
        jnp.asarray(x),
        gammas,
        noise=noise,
        step_size=0.005,
        num_steps=1200,
        num_chains=chains,
        key=7,
    )
    assert est.beta == pytest.approx(beta) and est.loss == pytest.approx(float(f1(x)))
    assert est.integrand.shape == (len(gammas), 5) and np.all(np.diff(est.integrand, axis=1) < 0.01)
    bias = 0.006  # SGLD discretisation, burn-in and λ-quadrature, measured ≲ 0.002
    for i, gamma in enumerate(gammas):
        relaxed = float(pde.local_entropy_at(f1, x, gamma, beta, grid))
        assert abs(est.relaxed_loss[i] - relaxed) < 4 * est.relaxed_loss_stderr[i] + bias
        smoothed = float(pde.heat_smoothing_at(f1, x, gamma / beta, grid))
        assert abs(est.smoothed_loss[i] - smoothed) < 4 * est.smoothed_loss_stderr[i] + 1e-3
        gibbs, spread = _gibbs_expectations(f1, x, gamma, beta, grid)
        assert abs(est.gibbs_loss[i] - gibbs) < 4 * est.gibbs_loss_stderr[i] + bias
        assert abs(est.spread[i] - spread) < 4 * est.spread_stderr[i] + 0.02 * spread
        # Bounds: E_ρ f ≤ f_γ ≤ E_{N(x, γ/β)} f.
        assert est.gibbs_loss[i] < est.relaxed_loss[i] < est.smoothed_loss[i]
        # Gradient (x − ȳ)/γ against the quadrature gradient, with the chains' error.
        moments = pde.gibbs_moments_at(f1, x, gamma, beta, grid)
        stderr = float(np.sqrt(moments.cov / chains)) / gamma
        grad = float(pde.local_entropy_gradient_at(f1, x, gamma, beta, grid))
        assert abs(float(est.gradient[i]) - grad) < 4 * stderr + bias / gamma
        assert est.gradient_norm[i] == pytest.approx(abs(float(est.gradient[i])), rel=1e-5)


def f2(y):
    return 0.5 * (y[..., 0] ** 2 + 2 * y[..., 1] ** 2) + 0.3 * jnp.sin(3 * y[..., 0]) * jnp.cos(
        2 * y[..., 1]
    )


def test_local_entropy_estimate_2d_over_a_pytree_against_pde_oracles():
    noise, gamma, chains = 0.6, 0.5, 1024
    beta = 1 / noise**2
    x = np.array([0.6, -0.4])
    grid = pde.uniform_grid((-5.0, -5.0), (5.0, 5.0), (161, 161))
    params = {"u": jnp.asarray(x[:1], jnp.float32), "v": jnp.asarray(x[1], jnp.float32)}
    est = diagnostics.local_entropy_estimate(
        lambda p: f2(jnp.concatenate([p["u"], p["v"][None]])),
        params,
        gamma,
        noise=noise,
        step_size=0.005,
        num_steps=600,
        num_chains=chains,
        key=11,
    )
    relaxed = float(pde.local_entropy_at(f2, x, gamma, beta, grid))
    assert abs(est.relaxed_loss[0] - relaxed) < 4 * est.relaxed_loss_stderr[0] + 0.006
    # The gradient is a pytree like the parameters, with a leading γ axis.
    assert est.gradient["u"].shape == (1, 1) and est.gradient["v"].shape == (1,)
    got = np.array([float(est.gradient["u"][0, 0]), float(est.gradient["v"][0])])
    moments = pde.gibbs_moments_at(f2, x, gamma, beta, grid)
    stderr = np.sqrt(np.diag(np.asarray(moments.cov)) / chains) / gamma
    grad = np.asarray(pde.local_entropy_gradient_at(f2, x, gamma, beta, grid))
    np.testing.assert_array_less(np.abs(got - grad), 4 * stderr + 0.01)
    assert est.gradient_norm[0] == pytest.approx(np.linalg.norm(got), rel=1e-5)


def test_laplace_gap_of_a_quadratic_from_lanczos_eigenvalues():
    # f(y) = ½ yᵀAy: f_γ(0) − f(0) = (2β)⁻¹ log det(I + γA) (Deep Relaxation, quadratic case).
    a_matrix, _ = _rotated(np.array([0.5, 2.0, 6.0]), seed=4)
    a32 = jnp.asarray(a_matrix, jnp.float32)
    loss = lambda v: 0.5 * jnp.einsum("...i,ij,...j->...", v, a32, v)  # noqa: E731
    noise, gamma = 0.3, 0.5
    hessian = diagnostics.hessian_top_eigenvalues(loss, jnp.zeros(3), k=3, num_iterations=3)
    gap = diagnostics.laplace_local_entropy_gap(hessian.eigenvalues, gamma, noise)
    exact = 0.5 * noise**2 * np.log(np.linalg.det(np.eye(3) + gamma * a_matrix))
    assert gap == pytest.approx(exact, rel=1e-5)
    grid = pde.uniform_grid((-3.0,) * 3, (3.0,) * 3, (41,) * 3)
    oracle = float(pde.local_entropy_at(loss, jnp.zeros(3), gamma, 1 / noise**2, grid))
    assert gap == pytest.approx(oracle, rel=1e-3)


def test_local_entropy_estimate_argument_checks():
    x = jnp.asarray(0.0)
    with pytest.raises(ValueError, match="gamma"):
        diagnostics.local_entropy_estimate(f1, x, [0.5, -1.0], noise=0.1)
    with pytest.raises(ValueError, match="noise"):
        diagnostics.local_entropy_estimate(f1, x, 0.5, noise=0.0)
    with pytest.raises(ValueError, match="step_size"):
        diagnostics.local_entropy_estimate(f1, x, 0.5, noise=0.1, step_size=1.0)
    with pytest.raises(ValueError, match="num_chains"):
        diagnostics.local_entropy_estimate(f1, x, 0.5, noise=0.1, num_chains=1)


def test_chains_in_batches_give_the_same_estimate():
    kwargs = dict(noise=0.5, step_size=0.01, num_steps=10, num_chains=6, num_lambdas=2, key=3)
    together = diagnostics.local_entropy_estimate(f1, jnp.asarray(0.4), 0.5, **kwargs)
    batched = diagnostics.local_entropy_estimate(
        f1, jnp.asarray(0.4), 0.5, chain_batch_size=4, **kwargs
    )
    np.testing.assert_allclose(batched.integrand, together.integrand, rtol=1e-5)
    np.testing.assert_allclose(batched.gradient, together.gradient, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chain_batch_size"):
        diagnostics.local_entropy_estimate(f1, jnp.asarray(0.4), 0.5, chain_batch_size=0, **kwargs)
