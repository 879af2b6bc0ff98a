"""Sphinx configuration of relaxjax's documentation (``make docs``).

The narrative pages are MyST Markdown (``docs/*.md``); the API reference (``api.md``)
is generated from the docstrings (Google style, read by ``sphinx.ext.napoleon``). The
build runs with ``-W --keep-going``: every warning fails it. The docstrings' examples
are doctests run by pytest (``--doctest-modules``), not by Sphinx.
"""

from __future__ import annotations

import relaxjax

project = "relaxjax"
author = "relaxjax developers"
copyright = "relaxjax developers"
release = relaxjax.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Docstrings are Google style; NumPy style is not used anywhere.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False

# Signatures keep their annotations; members appear in source order.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Signatures show these aliases by name instead of their expansion (this works in modules
# with postponed annotations, ``from __future__ import annotations``, as relaxjax's are).
autodoc_type_aliases = {
    "ScalarOrSchedule": "relaxjax.core.hyperparams.ScalarOrSchedule",
    "Seed": "relaxjax.core.keys.Seed",
    "Loss": "relaxjax.pde.Loss",
    "ArrayLike": "jax.typing.ArrayLike",
}

# Cross-references to other projects (jax, optax, flax) are not resolved.
nitpicky = False

html_theme = "alabaster"
html_title = f"relaxjax {release}"
