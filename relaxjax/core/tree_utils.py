"""Small pytree helpers shared by relaxjax transforms."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def check_matching_tree(what: str, tree: Any, params: Any) -> None:
    """Raises ``ValueError`` unless ``tree`` has the structure and shapes of ``params``.

    Runs at trace time (structures and shapes are static), so it costs nothing
    inside ``jit``. When the mismatch comes from Flax NNX objects (``nnx.Variable``
    nodes such as ``Param``, e.g. the ``State`` that ``nnx.grad`` returns, while
    ``nnx.Optimizer`` hands the transform pure arrays), the message says how to make
    them pure. Flax is recognised by the modules of the nodes' classes, not imported.
    """

    def is_nnx_variable(node: Any) -> bool:  # Param, BatchStat, a user's subclass
        return any(
            cls.__name__ == "Variable" and cls.__module__.startswith("flax.nnx")
            for cls in type(node).__mro__
        )

    def holds_nnx_variables(tree: Any) -> bool:
        return any(map(is_nnx_variable, jax.tree.leaves(tree, is_leaf=is_nnx_variable)))

    tree_def, params_def = jax.tree.structure(tree), jax.tree.structure(params)
    if tree_def != params_def:
        hint = ""
        if isinstance(tree, tuple) and len(tree) == 2:
            hint = (
                " It looks like a (gradients, aux) pair: return only the gradients, "
                "e.g. jax.grad(loss, has_aux=True)(...)[0]."
            )
        elif holds_nnx_variables(tree) or holds_nnx_variables(params):
            hint = (
                " It holds Flax NNX Variable objects (e.g. the State that nnx.grad returns), "
                "but nnx.Optimizer(model, tx, wrt=nnx.Param).update passes the transform "
                "pure arrays: return nnx.as_pure(grads), with grads taken w.r.t. the "
                "optimizer's wrt filter, or "
                "build grad_fn with relaxjax.adapters.nnx_grad_fn(model, loss_fn, batches), "
                "which also rebuilds the model with nnx.merge(..., copy=True)."
            )
        raise ValueError(
            f"{what} does not match the parameters' tree.{hint}\n"
            f"  expected: {params_def}\n  got:      {tree_def}"
        )
    for path_leaf, leaf, param in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree.leaves(tree),
        jax.tree.leaves(params),
        strict=True,
    ):
        if jnp.shape(leaf) != jnp.shape(param):
            name = jax.tree_util.keystr(path_leaf[0])
            raise ValueError(
                f"{what} has shape {jnp.shape(leaf)} at {name or 'the root'}, "
                f"but the parameter there has shape {jnp.shape(param)}."
            )


def cast_like(tree: Any, reference: Any) -> Any:
    """Casts every leaf of ``tree`` to the dtype of the matching leaf of ``reference``."""
    return jax.tree.map(lambda t, r: jnp.asarray(t).astype(jnp.result_type(r)), tree, reference)


def all_finite(tree: Any) -> jax.Array:
    """A bool scalar: whether every floating-point value of ``tree`` is finite.

    Integer leaves (counts, PRNG keys) pass; an empty tree is finite. Traceable, so
    it runs inside ``jit`` (``relaxjax.apply_if_finite``) and, jitted, on the host
    side of a checkpoint write.
    """
    leaves = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
