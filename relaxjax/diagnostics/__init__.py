"""Flatness diagnostics around trained weights: local entropy and the Hessian spectrum.

* :mod:`relaxjax.diagnostics.local_entropy`: the local entropy f_γ(x) by SGLD and
  thermodynamic integration, with its Gibbs and Gaussian-smoothing bounds.
* :mod:`relaxjax.diagnostics.hessian`: the Hessian's extreme eigenvalues by Lanczos on
  Hessian-vector products, and its spectral density by stochastic Lanczos quadrature.

Every function takes ``loss_fn(params, *loss_args) -> scalar``, a
deterministic loss: a fixed batch (for neural networks, a few thousand
training examples) and the model in inference mode (no dropout; BatchNorm with
running statistics). Pass arrays such as the batch and the model state in
``loss_args`` rather than closing over them: they are traced arguments of the
jitted computations, so one ``loss_fn`` compiles once for every batch and set
of weights of the same shapes (a new closure per call compiles anew).

See ``docs/diagnostics.md``.
"""

from relaxjax.diagnostics.hessian import (
    HessianEigen,
    SpectralDensity,
    hessian_spectral_density,
    hessian_top_eigenvalues,
    hessian_vector_product,
)
from relaxjax.diagnostics.local_entropy import (
    LocalEntropyEstimate,
    laplace_local_entropy_gap,
    lobatto_rule,
    local_entropy_estimate,
)

__all__ = [
    "hessian_spectral_density",
    "hessian_top_eigenvalues",
    "hessian_vector_product",
    "HessianEigen",
    "laplace_local_entropy_gap",
    "lobatto_rule",
    "local_entropy_estimate",
    "LocalEntropyEstimate",
    "SpectralDensity",
]
