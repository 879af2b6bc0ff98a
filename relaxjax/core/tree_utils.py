"""Small pytree helpers shared by relaxjax transforms."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def check_matching_tree(what: str, tree: Any, params: Any) -> None:
    """Raises ``ValueError`` unless ``tree`` has the structure and shapes of ``params``.

    Runs at trace time (structures and shapes are static), so it costs nothing
    inside ``jit``.
    """
    tree_def, params_def = jax.tree.structure(tree), jax.tree.structure(params)
    if tree_def != params_def:
        hint = ""
        if isinstance(tree, tuple) and len(tree) == 2:
            hint = (
                " It looks like a (gradients, aux) pair: return only the gradients, "
                "e.g. jax.grad(loss, has_aux=True)(...)[0]."
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
