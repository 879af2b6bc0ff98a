"""Convolutions in canonical layout inside loop bodies (a workaround for XLA:CPU).

XLA:CPU runs a convolution through its fast Eigen kernel only when the
operands are in the canonical layout (input NHWC, kernel HWIO, output NHWC).
Its ``convolution-canonicalization`` pass inserts the transposes that make a
convolution canonical, but only in the entry computation: a convolution
inside a ``while`` body (``lax.scan``, ``fori_loop``) keeps its layout and is
emitted as naive loops. The convolution that back-propagates to a conv
layer's input has its kernel in OIHW-swapped order (``01oi``), so a gradient
of a conv net inside an inner loop runs slower than the same gradient outside
a loop (JAX issue 12868). ``python benchmarks/inner_loop.py --models allcnn --L 5
--candidates default "rolled scan, no"`` times the step with and without the rewrite
(LeNet no longer shows it: its convolutions are patch matrix products on CPU).

``with_canonical_convolutions(fn)`` re-evaluates ``fn``'s jaxpr with every
``conv_general_dilated`` replaced by transposes to the canonical layout, the
same convolution in that layout, and a transpose back: exactly the rewrite
XLA applies outside loops, done before XLA sees the loop. Nested ``jit`` and
call primitives are inlined so that convolutions inside them are reached.
Results are identical up to floating-point summation order.

The rewrite never changes what a program computes beyond that order: every
other equation is bound again exactly as ``jax.core.eval_jaxpr`` would bind it,
a function without a convolution runs unchanged (its jaxpr is only inspected),
and if re-evaluating a jaxpr raises (a construct the rewrite does not handle,
e.g. a primitive that cannot be bound again outside its original trace), the
function runs unchanged and a ``RuntimeWarning`` says so once per function.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.extend import core as jex_core

__all__ = ["with_canonical_convolutions"]

_INLINED = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr"}


def _canonical_positions(spec: Sequence[int]) -> list[int]:
    """Axes of an operand listed in the canonical order (batch/out, spatial..., feature/in)."""
    return [spec[0], *spec[2:], spec[1]]


def _canonical_conv(lhs: jax.Array, rhs: jax.Array, **params: Any) -> jax.Array:
    numbers = params["dimension_numbers"]
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        return jax.lax.conv_general_dilated_p.bind(lhs, rhs, **params)
    nd = lhs.ndim
    lhs_perm = _canonical_positions(numbers.lhs_spec)  # N, spatial..., C
    # Kernel: spatial..., I, O.
    rhs_perm = [*numbers.rhs_spec[2:], numbers.rhs_spec[1], numbers.rhs_spec[0]]
    out_perm = _canonical_positions(numbers.out_spec)
    canonical = list(range(nd))
    if lhs_perm == canonical and rhs_perm == canonical and out_perm == canonical:
        return jax.lax.conv_general_dilated_p.bind(lhs, rhs, **params)
    canonical_numbers = jax.lax.ConvDimensionNumbers(
        lhs_spec=(0, nd - 1, *range(1, nd - 1)),
        rhs_spec=(nd - 1, nd - 2, *range(nd - 2)),
        out_spec=(0, nd - 1, *range(1, nd - 1)),
    )
    out = jax.lax.conv_general_dilated_p.bind(
        lhs.transpose(lhs_perm),
        rhs.transpose(rhs_perm),
        **{**params, "dimension_numbers": canonical_numbers},
    )
    inverse = [0] * nd
    for position, axis in enumerate(out_perm):
        inverse[axis] = position
    return out.transpose(inverse)


def _inlined(eqn: jex_core.JaxprEqn) -> tuple[jex_core.Jaxpr, Sequence[Any]] | None:
    """The ``(jaxpr, consts)`` of a nested ``jit`` or call the rewrite inlines, else None."""
    inner = eqn.params.get(_INLINED.get(eqn.primitive.name, ""))
    if inner is None:
        return None
    if isinstance(inner, jex_core.ClosedJaxpr):
        return inner.jaxpr, inner.consts
    return inner, ()


def _eval(jaxpr: jex_core.Jaxpr, consts: Sequence[Any], *args: Any) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(var):
        return var.val if isinstance(var, jex_core.Literal) else env[var]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inlined = _inlined(eqn)
        if eqn.primitive.name == "conv_general_dilated":
            outvals = [_canonical_conv(*invals, **eqn.params)]
        elif inlined is not None:
            outvals = _eval(*inlined, *invals)
        else:  # as jax.core.eval_jaxpr does
            with eqn.ctx.manager:
                outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
        for var, value in zip(eqn.outvars, outvals, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _has_convolution(jaxpr: jex_core.Jaxpr) -> bool:
    """Whether a convolution the rewrite would reach (here or in an inlined call) is present."""
    for eqn in jaxpr.eqns:
        inlined = _inlined(eqn)
        if eqn.primitive.name == "conv_general_dilated" or (
            inlined is not None and _has_convolution(inlined[0])
        ):
            return True
    return False


def with_canonical_convolutions(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its convolutions rewritten to XLA:CPU's canonical layout.

    Args:
      fn: a function of arrays (e.g. a gradient function ``grad_fn(params, i)``),
        traceable by ``jax.make_jaxpr``.

    Returns:
      A function with ``fn``'s signature and results. Without convolutions, or
      when the rewrite cannot re-evaluate ``fn``'s jaxpr, it calls ``fn`` itself.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.cpu import with_canonical_convolutions
      >>> conv = lambda x, k: jax.lax.conv_general_dilated(
      ...     x, k, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
      >>> x, k = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3))
      >>> bool(jnp.allclose(with_canonical_convolutions(conv)(x, k), conv(x, k)))
      True
    """
    warned = False

    def wrapped(*args: Any) -> Any:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not _has_convolution(closed.jaxpr):
            return fn(*args)
        try:
            outs = _eval(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
        except Exception as error:  # noqa: BLE001 - any failure: run the user's function as is
            nonlocal warned
            if not warned:
                warned = True
                warnings.warn(
                    f"relaxjax.cpu.with_canonical_convolutions could not rewrite "
                    f"{getattr(fn, '__name__', fn)!r} ({type(error).__name__}: {error}); it "
                    "runs unchanged. Pass canonical_convolutions=False to skip the rewrite.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return fn(*args)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped
