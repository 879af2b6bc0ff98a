"""Flatness diagnostics around trained weights: local entropy and the Hessian spectrum.

* :mod:`relaxjax.diagnostics.local_entropy`: the local entropy f_γ(x) by SGLD and
  thermodynamic integration, with its Gibbs and Gaussian-smoothing bounds.
* :mod:`relaxjax.diagnostics.hessian`: the Hessian's extreme eigenvalues by Lanczos on
  Hessian-vector products, and its spectral density by stochastic Lanczos quadrature.

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
