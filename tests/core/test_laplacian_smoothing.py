"""Laplacian smoothing (LS-SGD): the FFT solve against a dense solve, the transform's contract."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from relaxjax.core.laplacian_smoothing import laplacian_smooth, laplacian_smoothing, ls_sgd

SIZES = [1, 2, 3, 4, 5, 7, 16, 33, 100, 257]
# Lengths with a large prime factor, which are solved at a padded fast FFT length (when
# sigma is static and n exceeds twice the Green's function's radius).
SLOW_FFT_SIZES = [1009, 2018, 2003]


def periodic_laplacian(n):
    """The dense circulant [1, -2, 1] matrix, wrapping around (n = 1: 0; n = 2: 2(P - I))."""
    shift = np.roll(np.eye(n), 1, axis=1)
    return -2.0 * np.eye(n) + shift + shift.T


def dense_smooth(g, sigma):
    g = np.asarray(g, dtype=np.float64)
    return np.linalg.solve(np.eye(g.size) - sigma * periodic_laplacian(g.size), g)


def test_the_dense_matrix_is_the_periodic_stencil():
    np.testing.assert_array_equal(periodic_laplacian(1), [[0.0]])
    np.testing.assert_array_equal(periodic_laplacian(2), [[-2.0, 2.0], [2.0, -2.0]])
    np.testing.assert_array_equal(
        periodic_laplacian(4),
        [[-2, 1, 0, 1], [1, -2, 1, 0], [0, 1, -2, 1], [1, 0, 1, -2]],
    )


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("sigma", [0.1, 1.0, 30.0])
def test_fft_solve_equals_the_dense_solve_in_float64(n, sigma):
    g = np.random.default_rng(n).normal(size=n)
    with jax.enable_x64(True):
        d = laplacian_smooth(jnp.asarray(g), sigma)
        assert d.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(d), dense_smooth(g, sigma), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", SLOW_FFT_SIZES)
@pytest.mark.parametrize("sigma", [0.01, 1.0, 30.0])
def test_lengths_with_a_large_prime_factor_equal_the_dense_solve(n, sigma):
    g = np.random.default_rng(n).normal(size=n)
    with jax.enable_x64(True):
        d = laplacian_smooth(jnp.asarray(g), sigma)
        np.testing.assert_allclose(np.asarray(d), dense_smooth(g, sigma), rtol=1e-12, atol=1e-12)
    d32 = laplacian_smooth(jnp.asarray(g, jnp.float32), sigma)
    np.testing.assert_allclose(np.asarray(d32), dense_smooth(g, sigma), rtol=1e-5, atol=2e-6)


def test_the_padded_solve_equals_the_direct_fft_at_a_network_size():
    """mnistfc's 1,867,786 = 2 * 933893 parameters: the padded fast-length solve (static
    sigma) equals the direct length-n FFT (a traced sigma takes that path)."""
    n = 1_867_786
    g = jnp.asarray(np.random.default_rng(0).normal(size=n), jnp.float32)
    padded = jax.jit(lambda v: laplacian_smooth(v, 1.0))(g)
    direct = jax.jit(laplacian_smooth)(g, 1.0)
    np.testing.assert_allclose(np.asarray(padded), np.asarray(direct), atol=1e-5)
    assert float(jnp.max(jnp.abs(padded - g))) > 0.5  # it did smooth


@pytest.mark.parametrize("n", SIZES)
def test_fft_solve_equals_the_dense_solve_in_float32(n):
    g = np.random.default_rng(100 + n).normal(size=n).astype(np.float32)
    d = laplacian_smooth(jnp.asarray(g), 1.0)
    assert d.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(d), dense_smooth(g, 1.0), rtol=2e-5, atol=2e-6)


def test_a_fourier_mode_is_divided_by_its_eigenvalue():
    n, sigma = 64, 0.7
    j = np.arange(n)
    with jax.enable_x64(True):
        for k in (0, 1, 5, 32):
            mode = np.cos(2 * np.pi * k * j / n)
            d = laplacian_smooth(jnp.asarray(mode), sigma)
            eigenvalue = 1 + 2 * sigma * (1 - np.cos(2 * np.pi * k / n))
            np.testing.assert_allclose(np.asarray(d), mode / eigenvalue, atol=1e-13)


def test_leading_axes_are_a_batch_of_vectors():
    g = np.random.default_rng(0).normal(size=(3, 2, 9))
    with jax.enable_x64(True):
        d = np.asarray(laplacian_smooth(jnp.asarray(g), 0.5))
    for index in np.ndindex(3, 2):
        np.testing.assert_allclose(d[index], dense_smooth(g[index], 0.5), atol=1e-12)


def test_smoothing_keeps_the_mean_and_shrinks_the_range():
    """The paper's properties: the mean is kept, the largest entry decreases, the smallest
    increases."""
    g = jnp.asarray(np.random.default_rng(1).normal(size=500), jnp.float32)
    d = laplacian_smooth(g, 1.0)
    np.testing.assert_allclose(float(d.mean()), float(g.mean()), atol=1e-6)
    assert float(d.max()) < float(g.max()) and float(d.min()) > float(g.min())


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_sigma_zero_is_exactly_the_identity(dtype):
    grads = {
        "w": jnp.asarray(np.random.default_rng(2).normal(size=(4, 5)), dtype),
        "b": jnp.asarray([1.5, -3.25, 7.0], dtype),
    }
    # ls_sgd with rate 1 returns -g: exactly -g when the smoothing is the identity.
    for tx, sign in (
        (laplacian_smoothing(0.0), 1),
        (laplacian_smoothing(0), 1),
        (ls_sgd(1.0, 0.0), -1),
    ):
        updates, _ = tx.update(grads, tx.init(grads))
        for key in grads:
            assert updates[key].dtype == dtype
            np.testing.assert_array_equal(np.asarray(updates[key]), sign * np.asarray(grads[key]))
    # A traced sigma = 0 (jit, inject_hyperparams) is the identity too, not FFT round-off.
    traced = jax.jit(lambda g, s: laplacian_smooth(g, s))(grads["w"].reshape(-1), 0.0)
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(grads["w"].reshape(-1)))
    injected = optax.inject_hyperparams(laplacian_smoothing)(sigma=0.0)
    updates, _ = jax.jit(injected.update)(grads, injected.init(grads))
    np.testing.assert_array_equal(np.asarray(updates["w"]), np.asarray(grads["w"]))


TREE_SHAPES = {"conv": (3, 2, 2), "bias": (5,), "dense": {"kernel": (4, 3), "scale": ()}}


def _tree(seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape: rng.normal(size=shape).astype(dtype),
        TREE_SHAPES,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def test_the_tree_is_smoothed_as_the_concatenation_of_its_leaves():
    grads = _tree(3)
    leaves, treedef = jax.tree.flatten(grads)
    flat = np.concatenate([np.ravel(leaf) for leaf in leaves])  # jax.tree.leaves order
    expected = dense_smooth(flat, 2.0)
    with jax.enable_x64(True):
        tx = laplacian_smoothing(2.0)
        updates, state = tx.update(jax.tree.map(jnp.asarray, grads), tx.init(grads))
    assert state == optax.EmptyState()
    assert jax.tree.structure(updates) == treedef
    got = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(updates)])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    for leaf, grad in zip(jax.tree.leaves(updates), leaves, strict=True):
        assert leaf.shape == np.shape(grad)


def test_per_leaf_smooths_each_leaf_on_its_own():
    grads = _tree(4)
    with jax.enable_x64(True):
        tx = laplacian_smoothing(2.0, per_leaf=True)
        updates, _ = tx.update(jax.tree.map(jnp.asarray, grads), tx.init(grads))
        together, _ = laplacian_smoothing(2.0).update(jax.tree.map(jnp.asarray, grads), None)
    for leaf, grad in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        expected = dense_smooth(np.ravel(grad), 2.0).reshape(np.shape(grad))
        np.testing.assert_allclose(np.asarray(leaf), expected, atol=1e-12)
    # The two flattenings are different operators on a tree of several leaves.
    assert not np.allclose(np.asarray(updates["bias"]), np.asarray(together["bias"]))


def test_mixed_dtypes_are_kept_and_computed_in_float32():
    grads = {
        "a": jnp.asarray(np.random.default_rng(5).normal(size=50), jnp.bfloat16),
        "b": jnp.asarray(np.random.default_rng(6).normal(size=30), jnp.float32),
        "c": jnp.asarray(np.random.default_rng(7).normal(size=20), jnp.float16),
    }
    tx = laplacian_smoothing(1.0)
    updates, _ = tx.update(grads, tx.init(grads))
    assert {k: v.dtype for k, v in updates.items()} == {k: v.dtype for k, v in grads.items()}
    flat = np.concatenate([np.asarray(grads[k], np.float64) for k in ("a", "b", "c")])
    expected = dense_smooth(flat, 1.0)
    got = np.concatenate([np.asarray(updates[k], np.float64) for k in ("a", "b", "c")])
    # The solve is float32; each leaf is rounded once to its own dtype at the end.
    np.testing.assert_allclose(got[:50], expected[:50], rtol=1e-2, atol=1e-2)  # bfloat16
    np.testing.assert_allclose(got[50:80], expected[50:80], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[80:], expected[80:], rtol=1e-3, atol=1e-3)  # float16
    bf16_of_float32 = np.asarray(jnp.asarray(expected[:50], jnp.float32).astype(jnp.bfloat16))
    assert np.mean(np.asarray(updates["a"]) == bf16_of_float32) > 0.9


def test_under_jit_equals_eager_and_compiles_once():
    grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), _tree(8))
    tx = laplacian_smoothing(1.5)
    eager, _ = tx.update(grads, tx.init(grads))
    traces = []

    @jax.jit
    def update(g):
        traces.append(None)
        return tx.update(g, tx.init(g))[0]

    for _ in range(3):
        jitted = update(grads)
    assert len(traces) == 1
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_inject_hyperparams_traces_sigma():
    grads = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), _tree(9))
    injected = optax.inject_hyperparams(laplacian_smoothing)(sigma=0.8)
    state = injected.init(grads)
    updates, state = jax.jit(injected.update)(grads, state)
    static, _ = laplacian_smoothing(0.8).update(grads, None)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(static), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert not np.allclose(np.asarray(updates["bias"]), np.asarray(grads["bias"]))


def test_an_empty_tree_and_empty_leaves():
    tx = laplacian_smoothing(1.0)
    assert tx.update({}, tx.init({}))[0] == {}
    grads = {"empty": jnp.zeros((0, 3)), "x": jnp.array([1.0, 0.0, 0.0])}
    updates, _ = tx.update(grads, None)
    assert updates["empty"].shape == (0, 3)
    np.testing.assert_allclose(np.asarray(updates["x"]), dense_smooth([1.0, 0, 0], 1.0), 1e-6)


def test_smoothing_reduces_the_variance_of_a_noisy_gradient_of_a_smooth_signal():
    """The paper's variance claim: on g = s + ξ (s smooth, ξ white noise of variance τ²) the
    smoothed noise (I − σΔ)⁻¹ξ has variance τ² mean_k λ_k⁻² (0.27 τ² at σ = 1, against
    τ² unsmoothed), while s itself is barely changed, so the smoothed gradient is closer
    to the clean one. Without smoothing (σ = 0) each of the checks below fails."""
    n, draws, tau, sigma = 4096, 64, 1.0, 1.0
    j = np.arange(n)
    signal = np.sin(2 * np.pi * j / n) + 0.5 * np.cos(6 * np.pi * j / n)
    noise = tau * np.random.default_rng(10).normal(size=(draws, n))
    noisy = jnp.asarray(signal + noise, jnp.float32)
    eigenvalues = 1 + 4 * sigma * np.sin(np.pi * np.arange(n) / n) ** 2
    predicted = tau**2 * np.mean(eigenvalues**-2.0)
    assert 0.25 < predicted < 0.3

    for s, expect_reduction in ((sigma, True), (0.0, False)):
        smoothed = np.asarray(jax.vmap(lambda g, s=s: laplacian_smooth(g, s))(noisy), np.float64)
        variance = np.mean(np.var(smoothed, axis=0))  # across draws, averaged over entries
        error = np.mean((smoothed - signal) ** 2)
        reduced = variance < 0.35 * tau**2 and error < 0.35 * tau**2
        assert reduced == expect_reduction, (s, variance, error)
        if expect_reduction:
            np.testing.assert_allclose(variance, predicted, rtol=0.05)
            bias = np.asarray(laplacian_smooth(jnp.asarray(signal, jnp.float32), s)) - signal
            assert np.max(np.abs(bias)) < 1e-3


def test_ls_sgd_is_smoothing_then_sgd():
    params = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), _tree(11))

    def loss(p):
        return sum(jnp.sum(jnp.cos(leaf) * leaf**2) for leaf in jax.tree.leaves(p))

    grad = jax.grad(loss)
    for options in ({}, {"momentum": 0.9, "nesterov": True}, {"per_leaf": True}):
        per_leaf = options.get("per_leaf", False)
        reference = optax.chain(
            laplacian_smoothing(0.7, per_leaf=per_leaf),
            optax.sgd(0.05, momentum=options.get("momentum"), nesterov="nesterov" in options),
        )
        runs = []
        for tx in (ls_sgd(0.05, 0.7, **options), reference):
            p, state = params, tx.init(params)
            for _ in range(4):
                updates, state = tx.update(grad(p), state, p)
                p = optax.apply_updates(p, updates)
            runs.append(p)
        for a, b in zip(*map(jax.tree.leaves, runs), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The smoothing is really applied: LS-SGD's first step differs from SGD's.
    ls_step = ls_sgd(0.05, 0.7).update(grad(params), ls_sgd(0.05, 0.7).init(params))[0]
    sgd_step = optax.sgd(0.05).update(grad(params), optax.sgd(0.05).init(params))[0]
    assert not np.allclose(np.asarray(ls_step["bias"]), np.asarray(sgd_step["bias"]))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: laplacian_smoothing(-0.1), "sigma must be >= 0"),
        (lambda: laplacian_smoothing(float("nan")), "sigma must be >= 0"),
        (lambda: laplacian_smoothing(np.ones(3)), "sigma must be a scalar"),
        (lambda: laplacian_smoothing(optax.constant_schedule(1.0)), "sigma must be a number"),
        (lambda: laplacian_smoothing(1.0, per_leaf="yes"), "per_leaf must be a bool"),
        (lambda: ls_sgd(0.0, 1.0), "learning_rate must be > 0"),
        (lambda: ls_sgd(0.1, -1.0), "sigma must be >= 0"),
        (lambda: ls_sgd(0.1, 1.0, momentum=-0.5), "momentum must be >= 0"),
        (lambda: laplacian_smooth(jnp.ones(3), -2.0), "sigma must be >= 0"),
        (lambda: laplacian_smooth(jnp.float32(1.0), 1.0), "at least one axis"),
        (lambda: laplacian_smooth(jnp.ones(3, jnp.complex64), 1.0), "real floating-point"),
        (lambda: laplacian_smooth(jnp.ones(3, jnp.int32), 1.0), "real floating-point"),
    ],
)
def test_bad_hyperparameters_and_inputs_raise_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()
