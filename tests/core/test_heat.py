"""relaxjax.heat_smoothing (HEAT): the uniform average of the inner chain, and its
gradient against the heat-equation solution of ``relaxjax.pde`` in 1-D and 2-D.

The statistical tests run many independent chains at once (one coordinate, or one 2-D
point, each) with deterministic gradients, so the only randomness is the Langevin noise.
With the coupling dominating the loss's curvature the chain's points are Gaussian around
x with variance t = 2γε²/(2 − η′/γ) per coordinate, and the output estimates the
gradient of the heat solution at that time (docs/deep-relaxation.md §1.3).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import relaxjax
from relaxjax import pde

GAMMA, TIME = 0.05, 0.5  # scope γ (coupling 20) and the heat time t the noise is set for
# |estimate − ∇(G_t ∗ f)(x)| ≤ TOL: the O(γ) Gibbs tilt γ|∇²u ∇u| (≤ 0.014 at these
# points, measured with 40000 chains) plus about three standard errors (≤ 0.006 each);
# over seeds 0-3 the largest error seen was 0.025 (2-D), 0.019 (1-D).
TOL = 0.03


def _noise_for(time, theta):
    """ε giving the chain the variance t = 2γε²/(2 − θ), θ = η′/γ."""
    return float(np.sqrt(time * (2 - theta) / (2 * GAMMA)))


def _updates(tx, x, loss):
    grad = jax.grad(loss)
    update = jax.jit(lambda x, s: tx.update(grad(x), s, x, grad_fn=lambda y, i: grad(y))[0])
    return np.asarray(update(x, tx.init(x)))


def f1(y):
    """A 1-D loss whose heat solution damps the oscillation by e^(−2t)."""
    return y**2 / 4 + jnp.cos(2 * y) / 4


X1 = jnp.array([-0.9, -0.3, 0.4, 0.8])
GRID1 = pde.uniform_grid(-8.0, 8.0, 321)


def f2(y):
    """A 2-D loss (points of shape (..., 2)) with a non-separable oscillation."""
    return jnp.sum(y**2, -1) / 4 + jnp.cos(2 * y[..., 0]) * jnp.cos(y[..., 1]) / 4


X2 = jnp.array([[-0.8, 0.5], [0.3, -0.6], [0.7, 0.9]])
GRID2 = pde.uniform_grid(-6.0, 6.0, (121, 121))


def _chains(f, points, chains, theta, num_steps, *, seed=0):
    """HEAT's update at every point, for ``chains`` independent chains: (chains, *points)."""
    x = jnp.broadcast_to(points, (chains, *points.shape))
    tx = relaxjax.heat_smoothing(
        GAMMA,
        num_steps=num_steps,
        step_size=theta * GAMMA,
        noise=_noise_for(TIME, theta),
        seed=seed,
    )
    return _updates(tx, x, lambda y: jnp.sum(f(y)))


@pytest.mark.parametrize(
    "theta, num_steps, chains",
    [(1.0, 1000, 6000), (0.5, 1500, 12000)],
    ids=["step=scope", "step=scope/2"],
)
def test_1d_matches_the_heat_solution_at_time_2_gamma_eps2_over_2_minus_theta(
    theta, num_steps, chains
):
    estimate = _chains(f1, X1, chains, theta, num_steps).mean(axis=0)
    heat = np.asarray(pde.heat_gradient_at(f1, X1, TIME, GRID1))
    np.testing.assert_allclose(estimate, heat, atol=TOL)
    # The smoothing is visible: the estimate is far from the unsmoothed gradient f′(x).
    plain = np.asarray(jax.vmap(jax.grad(f1))(X1))
    assert np.abs(estimate - plain).max() > 0.25
    if theta == 1.0:
        # At η′ = γ the chain's spread is 2γε², twice the Gibbs measure's γε²: the
        # estimate is the heat gradient at 2γε², not at γε², and not the local-entropy
        # gradient at (γ, β = 1/ε²), which is close to the heat gradient at γε².
        eps = _noise_for(TIME, theta)
        continuum = np.asarray(pde.heat_gradient_at(f1, X1, GAMMA * eps**2, GRID1))
        entropy = np.asarray(pde.local_entropy_gradient_at(f1, X1, GAMMA, 1 / eps**2, GRID1))
        assert np.abs(estimate - continuum).max() > 3 * TOL
        assert np.abs(estimate - entropy).max() > 3 * TOL


def test_2d_matches_the_heat_solution():
    estimate = _chains(f2, X2, 6000, 1.0, 1000).mean(axis=0)
    heat = np.asarray(pde.heat_gradient_at(f2, X2, TIME, GRID2))
    np.testing.assert_allclose(estimate, heat, atol=TOL)
    plain = np.asarray(jax.vmap(jax.grad(f2))(X2))
    assert np.abs(estimate - plain).max() > 0.25
    eps = _noise_for(TIME, 1.0)
    continuum = np.asarray(pde.heat_gradient_at(f2, X2, GAMMA * eps**2, GRID2))
    assert np.abs(estimate - continuum).max() > 3 * TOL


def test_the_uniform_average_is_an_average_over_the_whole_chain():
    """One chain's estimate has the spread of a mean over L iterates, √(t/L)/γ at η′ = γ,
    about twelve times smaller than the exponential average's (α = 0.75, local_entropy on
    the same chain), √(t (1 − α)/(1 + α))/γ, which does not shrink with L."""
    num_steps, chains, eps = 1000, 1000, _noise_for(TIME, 1.0)
    x = jnp.broadcast_to(X1, (chains, X1.size))
    loss = lambda y: jnp.sum(f1(y))  # noqa: E731
    common = dict(num_steps=num_steps, step_size=GAMMA, noise=eps)
    uniform = _updates(relaxjax.heat_smoothing(GAMMA, **common), x, loss).std(axis=0)
    exponential = _updates(relaxjax.local_entropy(GAMMA, alpha=0.75, **common), x, loss).std(0)
    np.testing.assert_allclose(uniform, np.sqrt(TIME / num_steps) / GAMMA, rtol=0.15)
    np.testing.assert_allclose(exponential, np.sqrt(TIME * 0.25 / 1.75) / GAMMA, rtol=0.15)
    assert (exponential > 8 * uniform).all()


def _reference_chain(x, gamma, step_size, num_steps, weight_decay):
    """The inner loop in float64 NumPy for f(y) = Σ (y⁴/4 − y²/2), noise-free."""
    gradient = lambda y: y**3 - y + weight_decay * y  # noqa: E731
    ys, grads = [x], []
    for _ in range(num_steps):
        y = ys[-1]
        grads.append(gradient(y))
        ys.append(y - step_size * (grads[-1] + (y - x) / gamma))
    return np.array(ys), np.array(grads)


@pytest.mark.parametrize("reuse_gradient", [True, False])
def test_the_average_is_the_mean_of_the_start_and_the_iterates(reuse_gradient):
    x = np.array([0.9, -0.4, 1.3])
    gamma, step_size, num_steps, weight_decay = 0.3, 0.12, 12, 0.05
    loss = lambda y: jnp.sum(y**4 / 4 - y**2 / 2)  # noqa: E731
    ys, _ = _reference_chain(x, gamma, step_size, num_steps, weight_decay)
    expected = (x - ys.mean(axis=0)) / gamma  # (y₀ + … + y_L)/(L + 1), y₀ = x
    options = dict(num_steps=num_steps, step_size=step_size, noise=0.0, weight_decay=weight_decay)
    tx = relaxjax.heat_smoothing(gamma, reuse_gradient=reuse_gradient, **options)
    got = _updates(tx, jnp.asarray(x, jnp.float32), loss)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    # The exponential average of local_entropy on the same chain is another number.
    exponential = _updates(relaxjax.local_entropy(gamma, **options), jnp.asarray(x), loss)
    assert np.abs(exponential - expected).max() > 0.01


def test_at_step_equal_to_scope_the_update_is_the_chains_mean_gradient():
    """η′ = γ, ε = 0: (x − μ)/γ = Σ_ℓ (∇f(y_ℓ) + λ y_ℓ) / (L + 1), exactly (the docs'
    identity; the boundary term (1/η′ − 1/γ)(y_L − x) vanishes)."""
    x = np.array([0.9, -0.4, 1.3])
    gamma, num_steps, weight_decay = 0.2, 9, 0.1
    _, grads = _reference_chain(x, gamma, gamma, num_steps, weight_decay)
    tx = relaxjax.heat_smoothing(
        gamma, num_steps=num_steps, step_size=gamma, noise=0.0, weight_decay=weight_decay
    )
    got = _updates(tx, jnp.asarray(x, jnp.float32), lambda y: jnp.sum(y**4 / 4 - y**2 / 2))
    np.testing.assert_allclose(got, grads.sum(axis=0) / (num_steps + 1), rtol=2e-5, atol=1e-6)


def test_research_code_defaults_and_the_l_over_l_plus_1_factor():
    """With a constant gradient c the chain moves once and stays: the update is
    c · L/(L + 1), here with the default L = 100 of the research code's HEAT."""
    assert relaxjax.core.relaxation.HEAT_NUM_STEPS == 100
    c = jnp.array([1.0, -2.0])
    tx = relaxjax.heat_smoothing(0.1, noise=0.0)  # η′ = 0.1 = γ: coupling 10
    got = _updates(tx, jnp.zeros(2), lambda y: jnp.sum(c * y))
    np.testing.assert_allclose(got, np.asarray(c) * 100 / 101, rtol=1e-5)


def test_heat_sgd_steps_by_the_rate_times_the_displacement():
    x = jnp.array([1.0, -2.0, 0.5])
    loss = lambda y: jnp.sum(y**4 / 4 - y**2 / 2)  # noqa: E731
    options = dict(num_steps=7, step_size=0.05, noise=1e-3, seed=3)
    relax = relaxjax.heat_smoothing(0.1, output="displacement", **options)
    displacement = _updates(relax, x, loss)
    updates = _updates(relaxjax.heat_sgd(0.5, gamma=0.1, momentum=None, **options), x, loss)
    np.testing.assert_allclose(updates, -0.5 * displacement, rtol=1e-6)
