"""The convolution layout rewrite of relaxjax.cpu.conv_layout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import relaxjax
from relaxjax.cpu.conv_layout import with_canonical_convolutions


class _ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (5, 5), padding="VALID")(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), padding="SAME")(x))
        x = nn.relu(nn.Conv(8, (3, 3), kernel_dilation=(2, 2))(x))
        x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=2)(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _conv_problem():
    model = _ConvNet()
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 4, 10, 10, 3))
    labels = jax.random.randint(jax.random.PRNGKey(1), (4, 4), 0, 3)
    params = model.init(jax.random.PRNGKey(2), images[0])["params"]

    def loss(p, i):
        logits = model.apply({"params": p}, images[i])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels[i]).mean()

    return params, jax.grad(loss)


def test_canonical_convolutions_give_the_same_gradients_inside_scan():
    params, grad_fn = _conv_problem()
    fast = with_canonical_convolutions(grad_fn)

    def run(g):
        @jax.jit
        def loop(p):
            def body(p, i):
                return jax.tree.map(lambda a, b: a - 0.1 * b, p, g(p, i)), None

            return jax.lax.scan(body, p, jnp.arange(4))[0]

        return loop(params)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), run(fast), run(grad_fn)
    )


def test_rewritten_convolutions_are_in_canonical_layout():
    params, grad_fn = _conv_problem()
    rewritten = jax.make_jaxpr(with_canonical_convolutions(grad_fn))(params, 0)
    original = jax.make_jaxpr(grad_fn)(params, 0)

    def conv_specs(closed):
        found = []

        def visit(jaxpr):
            for eqn in jaxpr.eqns:
                if eqn.primitive.name == "conv_general_dilated":
                    numbers = eqn.params["dimension_numbers"]
                    groups = eqn.params["feature_group_count"] * eqn.params["batch_group_count"]
                    found.append((numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec, groups))
                for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                    visit(sub)

        visit(closed.jaxpr)
        return found

    canonical = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    before, after = conv_specs(original), conv_specs(rewritten)
    assert len(before) == len(after) >= 8  # forward and backward convolutions
    assert any(spec[:3] != canonical for spec in before)  # JAX emits non-canonical ones
    assert all(spec[:3] == canonical for spec in after if spec[3] == 1)


def test_relaxation_with_and_without_the_rewrite_agree():
    params, grad_fn = _conv_problem()
    out = []
    for canonical in (False, True):
        tx = relaxjax.hopf_lax(
            gamma=1.0, num_steps=4, step_size=0.1, canonical_convolutions=canonical
        )
        update = jax.jit(lambda p, s, tx=tx: tx.update(grad_fn(p, 0), s, p, grad_fn=grad_fn)[0])
        out.append(update(params, tx.init(params)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), *out)


def _scaled_sin_primitive():
    """A primitive the rewrite has never heard of: y = sin(x) * scale, with a JVP."""
    from jax.extend.core import Primitive
    from jax.interpreters import ad, mlir

    prim = Primitive("relaxjax_test_scaled_sin")
    prim.def_impl(lambda x, *, scale: jnp.sin(x) * scale)
    prim.def_abstract_eval(lambda x, *, scale: jax.core.ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(
        prim, mlir.lower_fun(lambda x, *, scale: jnp.sin(x) * scale, multiple_results=False)
    )
    ad.defjvp(prim, lambda t, x, *, scale: t * jnp.cos(x) * scale)
    return prim


def test_a_primitive_the_rewrite_does_not_know_runs_unchanged():
    """A gradient function with a convolution and an unknown primitive gives the same
    values and gradients through the rewrite, under jit and inside lax.scan."""
    prim = _scaled_sin_primitive()
    x, k = jnp.linspace(-1, 1, 2 * 6 * 6).reshape(1, 2, 6, 6), jnp.ones((3, 2, 3, 3)) / 9

    def loss(k, x):
        y = jax.lax.conv_general_dilated(
            x, k, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        return jnp.sum(prim.bind(y, scale=2.0) ** 2)

    grad = jax.grad(loss)
    rewritten = with_canonical_convolutions(grad)
    np.testing.assert_allclose(jax.jit(rewritten)(k, x), grad(k, x), rtol=1e-5, atol=1e-6)

    def scanned(g):
        return jax.lax.scan(lambda c, _: (c - 0.1 * g(c, x), None), k, None, length=3)[0]

    np.testing.assert_allclose(
        jax.jit(lambda: scanned(rewritten))(), scanned(grad), rtol=1e-5, atol=1e-6
    )


def test_a_function_the_rewrite_cannot_evaluate_runs_unchanged_with_a_warning():
    """If re-evaluating the jaxpr fails, the user's function runs as it is (and says so)."""
    from jax.extend.core import Primitive
    from jax.interpreters import mlir

    class Unbindable(Primitive):
        """Traces and lowers like any primitive, but refuses to be bound from a jaxpr."""

        def get_bind_params(self, params):
            raise NotImplementedError("cannot be bound again")

    prim = Unbindable("relaxjax_test_unbindable")
    prim.def_impl(lambda x: x + 1.0)
    prim.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(prim, mlir.lower_fun(lambda x: x + 1.0, multiple_results=False))

    def fn(x, k):
        y = jax.lax.conv_general_dilated(
            x, k, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        return prim.bind(y)

    x, k = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3))
    with pytest.warns(RuntimeWarning, match="runs unchanged"):
        out = jax.jit(with_canonical_convolutions(fn))(x, k)
    np.testing.assert_allclose(out, np.full((1, 3, 3, 3), 18.0 + 1.0))


def test_without_convolutions_the_function_itself_runs():
    traced = []

    def fn(x):
        traced.append(1)
        return x * 2

    assert float(jax.jit(with_canonical_convolutions(fn))(jnp.float32(3))) == 6.0
    assert len(traced) == 2  # inspected once by make_jaxpr, then run as itself
