"""The two inner-loop speed-ups are exact: hashed Gaussian noise and canonical conv layouts."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import relaxjax
from relaxjax.core import noise


@pytest.mark.parametrize("generator", noise.NOISE_GENERATORS)
def test_noise_is_standard_normal(generator):
    tree = {"a": jnp.zeros((300, 400)), "b": jnp.zeros((50_000,))}
    draws = noise.gaussian_like(jax.random.PRNGKey(0), tree, generator)
    for z in map(np.asarray, jax.tree.leaves(draws)):
        n = z.size
        assert abs(z.mean()) < 5 / np.sqrt(n)
        assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
        assert abs(stats.skew(z.ravel())) < 5 * np.sqrt(6 / n)
        assert abs(stats.kurtosis(z.ravel())) < 5 * np.sqrt(24 / n)
        assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
        # Tails: P(|z| > 3) = 0.0027.
        assert abs(np.mean(np.abs(z) > 3) - 0.0027) < 5 * np.sqrt(0.0027 / n)
        flat = z.ravel()
        assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 5 / np.sqrt(n)


def test_inverse_erf_is_accurate_on_the_whole_uniform_grid():
    # Every u the hash generator can produce: centres of 2^24 cells of (-1, 1).
    from scipy.special import erfinv

    grid = np.arange(1 << 24, dtype=np.uint32).astype(np.float32) * np.float32(2.0 / (1 << 24))
    grid += np.float32(1.0 / (1 << 24) - 1.0)
    approx = np.asarray(jax.jit(noise._erf_inv_open)(jnp.asarray(grid)), np.float64)
    exact = erfinv(grid.astype(np.float64))
    assert np.all(np.isfinite(approx))
    assert np.max(np.abs(approx - exact) / np.abs(exact)) < 1e-6
    assert approx[0] == -approx[-1] and approx[-1] > 3.8  # symmetric; largest |z| = 3.83 sqrt(2)


def test_inverse_erf_covers_every_float32_input_and_its_table_is_the_stated_fit():
    from scipy.special import erfinv

    # The extreme float32 inputs of the open interval, and the far ends of the fit's range.
    u = np.array([np.nextafter(np.float32(1), np.float32(0)), np.float32(-1) + 2.0**-24, 2.0**-24])
    u = u.astype(np.float32)
    approx = np.asarray(jax.jit(noise._erf_inv_open)(jnp.asarray(u)), np.float64)
    exact = erfinv(u.astype(np.float64))
    np.testing.assert_allclose(approx, exact, rtol=1e-6)
    # w = -log(1 - u^2) of the largest float32 u below 1 stays inside the fit's [0, 16].
    assert -np.log1p(-(np.float64(u[0]) ** 2)) < 16

    # The coefficient table is the degree-16 Chebyshev interpolant of erf^-1(u)/u in w.
    def ratio(w):
        s = np.sqrt(-np.expm1(-w))
        safe = np.where(s > 0, s, 0.5)
        return np.where(s > 0, erfinv(safe) / safe, np.sqrt(np.pi) / 2)

    fit = np.polynomial.chebyshev.Chebyshev.interpolate(ratio, 16, domain=[0.0, 16.0])
    table = np.polynomial.Polynomial(noise._ERF_INV_OVER_U[::-1])
    t = np.linspace(-1.0, 1.0, 10_001)
    assert np.max(np.abs(table(t) - fit(8.0 * (t + 1.0)))) < 1e-8
    assert np.max(np.abs(fit(8.0 * (t + 1.0)) / ratio(8.0 * (t + 1.0)) - 1)) < 2e-7


def test_estrin_and_the_logarithm_against_numpy():
    coefficients = (0.5, -1.25, 3.0, 0.125, -2.0, 1.0)
    t = np.linspace(-2.0, 2.0, 101)
    np.testing.assert_allclose(
        np.asarray(noise._estrin(coefficients, jnp.asarray(t, jnp.float32))),
        np.polyval(coefficients, t),
        rtol=1e-5,
        atol=1e-5,
    )
    x = np.geomspace(2.0**-23, 1.0, 100_001).astype(np.float32)
    approx = np.asarray(jax.jit(noise._log_normal_positive)(jnp.asarray(x)), np.float64)
    np.testing.assert_allclose(approx, np.log(x.astype(np.float64)), rtol=2e-7, atol=5e-7)


def test_noise_streams_are_independent_and_reproducible():
    tree = {"a": jnp.zeros((100_000,)), "b": jnp.zeros((100_000,))}
    key = jax.random.PRNGKey(3)
    first = noise.gaussian_like(key, tree)
    again = noise.gaussian_like(key, tree)
    other = noise.gaussian_like(jax.random.fold_in(key, 1), tree)
    np.testing.assert_array_equal(first["a"], again["a"])
    bound = 5 / np.sqrt(100_000)
    for x, y in [(first["a"], first["b"]), (first["a"], other["a"]), (first["b"], other["b"])]:
        assert abs(np.corrcoef(x, y)[0, 1]) < bound


@pytest.mark.parametrize("generator", noise.NOISE_GENERATORS)
def test_per_step_draws_are_independent_normals_and_reproducible(generator):
    """The inner loop's draws: every step's key material made once, before the loop."""
    tree = {"a": jnp.zeros((200, 500)), "b": jnp.zeros((100_000,))}
    key = jax.random.PRNGKey(7)
    source = jax.jit(noise.noise_source, static_argnums=(2, 3))(key, tree, 4, generator)
    at = jax.jit(noise.gaussian_at_step, static_argnums=3)
    steps = [at(source, jnp.int32(i), tree, generator) for i in range(4)]
    np.testing.assert_array_equal(steps[2]["b"], at(source, 2, tree, generator)["b"])
    if generator == "threefry":  # JAX's own stream, as before: fold_in(key, i)
        expected = noise.gaussian_like(jax.random.fold_in(key, 2), tree, generator)
        np.testing.assert_array_equal(steps[2]["b"], expected["b"])
    flat = [np.concatenate([np.ravel(z) for z in jax.tree.leaves(d)]) for d in steps]
    n = flat[0].size
    for z in flat:
        assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.var() - 1) < 5 * np.sqrt(2 / n)
        assert stats.kstest(z, "norm").pvalue > 1e-3
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs(np.corrcoef(flat[i], flat[j])[0, 1]) < 5 / np.sqrt(n)
    a, b = (np.ravel(steps[0][k]) for k in ("a", "b"))
    assert abs(np.corrcoef(a, b[: a.size])[0, 1]) < 5 / np.sqrt(a.size)  # leaves too
    if generator == "hash":  # one threefry call: the words of all steps and leaves
        assert source.shape == (4, 2, 2) and source.dtype == jnp.uint32


def test_the_inner_loop_runs_no_threefry():
    """The relaxation step's loop body holds the hash draw but no threefry (drawing the
    keys inside the loop is a reference row of benchmarks/inner_loop.py)."""
    tx = relaxjax.local_entropy(gamma=1.0, num_steps=5, step_size=0.1, noise=1e-2)
    params = {"w": jnp.ones((64, 32))}
    state = tx.init(params)

    def step(params, state):
        grad_fn = lambda p, i: jax.tree.map(lambda w: w * (1.0 + i), p)  # noqa: E731
        return tx.update(params, state, params, grad_fn=grad_fn)

    hlo = jax.jit(step).lower(params, state).compile().as_text()
    # The inner loop: the while whose carry holds the parameters (threefry has loops too).
    name = re.search(r"f32\[64,32\][^\n]*while\([^\n]*?body=%?([\w.\-]+)", hlo).group(1)
    body = re.search(r"\n%?" + re.escape(name) + r" .*?\n}", hlo, re.S).group(0)
    assert "while/body" in body  # the loop's own instructions (their op names say so)
    assert "threefry" not in body  # none of them comes from a threefry computation
    assert "threefry" in hlo  # the key words: drawn before the loop


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_noise_keeps_dtype(dtype):
    draws = noise.gaussian_like(jax.random.PRNGKey(0), {"w": jnp.zeros((3, 4), dtype)})
    assert draws["w"].dtype == dtype


def test_unknown_noise_generator_is_rejected():
    with pytest.raises(ValueError, match="noise_generator"):
        relaxjax.local_entropy(gamma=1.0, noise_generator="mersenne")


def test_both_generators_give_the_same_langevin_statistics():
    # Stationary variance of the inner chain on f = ½ a y² (see the oracle tests).
    a, gamma, eta, eps, n = 2.0, 0.5, 0.02, 0.3, 20000
    x = jnp.full((n,), 1.0)
    grad = jax.grad(lambda y: 0.5 * a * jnp.sum(y**2))
    variances = []
    for generator in noise.NOISE_GENERATORS:
        tx = relaxjax.local_entropy(
            gamma,
            num_steps=400,
            step_size=eta,
            noise=eps,
            alpha=0.0,
            seed=4,
            noise_generator=generator,
        )
        d = tx.update(grad(x), tx.init(x), x, grad_fn=lambda y, i: grad(y))[0]
        variances.append(float(np.var(np.asarray(x - gamma * d))))
    k = a + 1 / gamma
    expected = 2 * eta * eps**2 / (1 - (1 - eta * k) ** 2)
    np.testing.assert_allclose(variances, expected, rtol=0.05)
