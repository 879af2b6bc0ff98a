"""HJ-Prox (Cole-Hopf Monte Carlo proximal points) against the grid solvers and closed forms."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from relaxjax import pde

N = 2**17  # samples: enough that the bias, not the Monte Carlo error, shows below
DELTAS = (0.1, 0.05, 0.025)


def f_nc(y):
    """The non-convex 1-D loss of test_pde.py: double well with ripples, f'' >= -8.5."""
    return y**4 / 4 - y**2 / 2 + 0.3 * jnp.sin(5 * y)


A2 = np.array([[2.0, 0.6], [0.6, 0.5]])


def quad2(y):
    """1/2 y^T A y, vectorised over points (..., 2): for hj_prox and the grid solvers."""
    return 0.5 * jnp.einsum("...i,ij,...j->...", y, jnp.asarray(A2, y.dtype), y)


def soft_threshold(x, t):
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def shrinks(errors, factor):
    """Each error is more than ``factor`` times the next one."""
    return all(a > factor * b for a, b in itertools.pairwise(errors))


def estimates(f, xs, t, delta, seed, num_samples=N):
    """hj_prox at each point of ``xs`` (one key each): ``(prox, envelope)`` as NumPy arrays."""
    xs = jnp.asarray(xs, jnp.float32)
    keys = jax.random.split(jax.random.key(seed), len(xs))

    def one(x, key):
        return pde.hj_prox(
            f, x, t, delta=delta, num_samples=num_samples, key=key, return_envelope=True
        )

    prox, envelope = jax.vmap(one)(xs, keys)
    return np.asarray(prox, np.float64), np.asarray(envelope, np.float64)


GRID_1D = pde.uniform_grid(-4.0, 4.0, 8001)


@pytest.mark.parametrize(
    "f, xs", [(f_nc, [-1.2, -0.4, 0.7]), (jnp.abs, [0.3, -0.05, 0.12, -0.5])], ids=["nc", "abs"]
)
@pytest.mark.parametrize("delta", [0.2, 0.05])
def test_the_estimates_are_the_gibbs_mean_and_local_entropy_of_the_grid_solver(f, xs, delta):
    """At a fixed delta, HJ-Prox estimates the Cole-Hopf quantities that relaxjax.pde computes
    by quadrature: prox^delta = gibbs_mean_at and u^delta = local_entropy_at with
    gamma = t, beta = 1/delta (up to the Monte Carlo error)."""
    t = 0.1
    prox, envelope = estimates(f, xs, t, delta, seed=1)
    x = jnp.asarray(xs)
    mean = np.asarray(pde.gibbs_mean_at(f, x, t, 1 / delta, GRID_1D))
    value = np.asarray(pde.local_entropy_at(f, x, t, 1 / delta, GRID_1D))
    np.testing.assert_allclose(prox, mean, atol=2e-3)
    np.testing.assert_allclose(envelope, value, atol=2e-3)
    # ... and not the plain heat-smoothed point or x itself: the tilt by f is what matters.
    assert np.max(np.abs(prox - np.asarray(xs))) > 0.02


@pytest.mark.parametrize("t", [0.1, 0.3])
def test_nonconvex_1d_converges_to_the_grid_hopf_lax_solution(t):
    """f_nc against the grid Hopf-Lax solution (t = 0.3: the prox objective is non-convex):
    the errors of the proximal point and of the envelope decrease as delta -> 0, roughly
    halving with delta (the bias is O(delta) where f is smooth)."""
    xs = [-1.2, -0.4, 0.7]
    value, prox_exact = pde.moreau_envelope_at(f_nc, jnp.asarray(xs), t, GRID_1D)
    prox_errors, envelope_errors = [], []
    for delta in DELTAS:
        prox, envelope = estimates(f_nc, xs, t, delta, seed=2)
        prox_errors.append(np.max(np.abs(prox - np.asarray(prox_exact))))
        envelope_errors.append(np.max(np.abs(envelope - np.asarray(value))))
    assert shrinks(prox_errors, 1.3), prox_errors
    assert shrinks(envelope_errors, 1.5), envelope_errors
    assert prox_errors[-1] < 0.012 and envelope_errors[-1] < 0.025


def test_soft_thresholding_in_1d_as_delta_to_zero():
    """f = |y|: the proximal point is soft-thresholding (which relaxjax.pde.prox_at also
    gives); at the kink the bias decays like sqrt(delta)."""
    t, xs = 0.1, np.array([0.3, -0.05, 0.12, -0.5, 0.0])
    exact = soft_threshold(xs, t)
    np.testing.assert_allclose(
        np.asarray(pde.prox_at(jnp.abs, jnp.asarray(xs), t, GRID_1D)), exact, atol=1e-6
    )
    errors = []
    for delta in (*DELTAS, 0.0125):
        prox, _ = estimates(jnp.abs, xs, t, delta, seed=3)
        errors.append(np.max(np.abs(prox - exact)))
    assert shrinks(errors, 1.2), errors
    assert errors[-1] < 0.02


def test_quadratics_have_a_delta_free_closed_form_in_1d_and_2d():
    """For f = 1/2 y^T A y the Gibbs mean is the proximal point (I + t A)^-1 x for every
    delta: only the Monte Carlo error remains, at each delta."""
    t = 0.2
    for delta in (0.5, *DELTAS):
        xs = np.array([0.5, -0.3, 0.1])
        prox, _ = estimates(lambda y: y**2, xs, t, delta, seed=4)  # a = 2
        np.testing.assert_allclose(prox, xs / (1 + 2 * t), atol=4e-3)
        x2 = np.array([[0.4, -0.3], [-0.2, 0.5]])
        prox2, envelope2 = estimates(quad2, x2, t, delta, seed=5)
        expected = x2 @ np.linalg.inv(np.eye(2) + t * A2).T
        np.testing.assert_allclose(prox2, expected, atol=4e-3)
        grid = pde.uniform_grid(-2.0, 2.0, (81, 81))
        np.testing.assert_allclose(
            np.asarray(pde.prox_at(quad2, jnp.asarray(x2), t, grid)),
            expected,
            atol=1e-5,
        )
        # u^delta = Moreau value + (delta/2) log det(I + t A): the viscous correction.
        moreau = 0.5 * np.einsum("ni,ij,nj->n", x2, A2 @ np.linalg.inv(np.eye(2) + t * A2), x2)
        viscous = moreau + delta / 2 * np.log(np.linalg.det(np.eye(2) + t * A2))
        np.testing.assert_allclose(envelope2, viscous, atol=4e-3)


def test_soft_thresholding_in_2d_as_delta_to_zero():
    t = 0.1
    xs = np.array([[0.3, -0.05], [0.12, -0.4], [0.0, 0.2]])
    exact = soft_threshold(xs, t)
    errors = []
    for delta in DELTAS:
        prox, _ = estimates(lambda y: jnp.sum(jnp.abs(y)), xs, t, delta, seed=6)
        errors.append(np.max(np.abs(prox - exact)))
    assert shrinks(errors, 1.2), errors
    assert errors[-1] < 0.03


def test_hj_prox_is_reproducible_jittable_and_vmappable():
    f = lambda y: jnp.sum(jnp.abs(y)) + 0.5 * jnp.sum(y**2)  # noqa: E731
    x, key = jnp.array([0.7, -0.2, 1.1]), jax.random.key(7)
    a = pde.hj_prox(f, x, 0.3, delta=0.05, num_samples=512, key=key)
    b = pde.hj_prox(f, x, 0.3, delta=0.05, num_samples=512, key=key)
    c = pde.hj_prox(f, x, 0.3, delta=0.05, num_samples=512, key=jax.random.key(8))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert a.shape == x.shape and a.dtype == jnp.float32
    jitted = jax.jit(lambda x, k, t: pde.hj_prox(f, x, t, delta=0.05, num_samples=512, key=k))
    np.testing.assert_allclose(np.asarray(jitted(x, key, 0.3)), np.asarray(a), rtol=1e-5, atol=1e-6)
    # An integer point is promoted to the default float dtype.
    assert pde.hj_prox(jnp.abs, 1, 0.3, delta=0.1, num_samples=16, key=key).dtype == jnp.float32


def test_hj_prox_minimize_trajectory_is_the_iterated_hj_prox():
    f = lambda y: jnp.sum(jnp.abs(y - 1.0))  # noqa: E731
    x0, key = jnp.array([3.0, -1.0]), jax.random.key(9)
    delta = optax.exponential_decay(0.5, 5, 0.5)
    run = pde.hj_prox_minimize(f, x0, t=0.4, delta=delta, num_samples=256, num_steps=5, key=key)
    assert isinstance(run, pde.HJProxResult)
    assert run.trajectory.shape == (6, 2) and run.values.shape == (6,)
    np.testing.assert_array_equal(np.asarray(run.trajectory[0]), np.asarray(x0))
    np.testing.assert_array_equal(np.asarray(run.x), np.asarray(run.trajectory[-1]))
    np.testing.assert_allclose(
        np.asarray(run.values), np.asarray(jax.vmap(f)(run.trajectory)), rtol=1e-6
    )
    x = x0
    for k, step_key in enumerate(jax.random.split(key, 5)):
        x = pde.hj_prox(f, x, 0.4, delta=float(delta(k)), num_samples=256, key=step_key)
        np.testing.assert_allclose(np.asarray(run.trajectory[k + 1]), np.asarray(x), atol=1e-5)


def test_hj_prox_minimize_finds_the_global_minimiser_of_a_function_with_local_minima():
    """A Rastrigin-type function on R^2 (local minima near every integer point, the global
    one at 0): gradient descent from (2.2, -1.9) stops in the local minimum near (2, -2);
    the HJ-Prox iteration with a decreasing delta reaches 0 from there, every seed."""

    def f(y):
        return jnp.sum(y**2 + 2 * (1 - jnp.cos(2 * jnp.pi * y)))

    x0 = jnp.array([2.2, -1.9])
    grad = jax.jit(jax.grad(f))
    x = x0
    for _ in range(1000):
        x = x - 0.01 * grad(x)
    assert float(f(x)) > 7.0  # a local minimum: gradient descent is stuck
    schedule = optax.exponential_decay(2.0, 60, 0.005)  # delta from 2 to 0.01
    for seed in range(3):
        run = pde.hj_prox_minimize(
            f, x0, t=0.5, delta=schedule, num_samples=1000, num_steps=60, key=jax.random.key(seed)
        )
        np.testing.assert_allclose(np.asarray(run.x), [0.0, 0.0], atol=5e-3)
        assert float(run.values[-1]) < 1e-3


def test_hj_prox_minimize_nonsmooth_nonconvex_1d():
    """f_nc + |y - 1| (a kink, several local minima): from the left well the iteration
    reaches the global minimiser found on a fine grid."""

    def f(y):
        return f_nc(y) + 0.5 * jnp.abs(y - 1.0)

    grid = pde.uniform_grid(-3.0, 3.0, 60001)
    values = np.asarray(pde.grid_values(f, grid))
    y_star = float(np.asarray(grid.nodes())[np.argmin(values)])
    run = pde.hj_prox_minimize(
        f,
        jnp.float32(-1.3),
        t=0.3,
        delta=optax.exponential_decay(1.0, 80, 0.002),
        num_samples=2000,
        num_steps=80,
        key=jax.random.key(10),
    )
    assert abs(float(run.x) - y_star) < 0.02, (float(run.x), y_star)
    assert float(run.values[-1]) - float(values.min()) < 1e-3


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k: pde.hj_prox(jnp.abs, 1.0, 0.0, delta=0.1, key=k), "t must be > 0"),
        (lambda k: pde.hj_prox(jnp.abs, 1.0, 1.0, delta=-0.1, key=k), "delta must be > 0"),
        (lambda k: pde.hj_prox(jnp.abs, 1.0, 1.0, delta=float("nan"), key=k), "delta must be > 0"),
        (lambda k: pde.hj_prox(jnp.abs, 1.0, 1.0, delta=0.1, num_samples=0, key=k), "num_samples"),
        (
            lambda k: pde.hj_prox(jnp.abs, 1.0, 1.0, delta=0.1, num_samples=8.0, key=k),
            "num_samples",
        ),
        (lambda k: pde.hj_prox(jnp.abs, jnp.ones(3), 1.0, delta=0.1, key=k), "to a scalar"),
        (
            lambda k: pde.hj_prox_minimize(jnp.abs, 1.0, t=1.0, delta=0.1, num_steps=0, key=k),
            "num_steps",
        ),
        (
            lambda k: pde.hj_prox_minimize(
                jnp.abs, 1.0, t=1.0, delta=optax.linear_schedule(0.1, -0.1, 10), num_steps=10, key=k
            ),
            "delta must be > 0",
        ),
        (
            lambda k: pde.hj_prox_minimize(jnp.abs, 1.0, t=-1.0, delta=0.1, key=k),
            "t must be > 0",
        ),
        (
            lambda k: pde.hj_prox_minimize(jnp.abs, 1.0, t=np.ones(2), delta=0.1, key=k),
            "t must be a scalar",
        ),
    ],
)
def test_bad_arguments_raise_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call(jax.random.key(0))
