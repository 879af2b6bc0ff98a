"""Maximum-principle training: the method of successive approximations (MSA, E-MSA).

Implements the algorithms of Q. Li, L. Chen, C. Tai and W. E, *Maximum Principle
Based Algorithms for Deep Learning*, JMLR 18(165), 2018 (arXiv:1710.09513).

A network is a discrete-time control system (one entry of a :class:`LayerSequence`
per layer)::

    x_{t+1}^i = f_t(x_t^i, θ_t),   t = 0 … T-1,   J(θ) = (1/S) Σ_i Φ(x_T^i, y^i) + Σ_t L_t(θ_t)

with S the batch size, Φ the per-sample loss and L_t an optional regulariser.
With the layer Hamiltonian (summed over the batch)

    H_t(x, p, θ) = Σ_i p^i · f_t(x^i, θ) − L_t(θ)

the co-states are ``p_T = −(1/S) ∇_x Φ(x_T, y)`` and ``p_t = ∇_x H_t(x_t, p_{t+1}, θ_t)
= (∂f_t/∂x)ᵀ p_{t+1}``, i.e. minus the back-propagated gradient of the batch-mean
loss with respect to the activation ``x_t``.  One E-MSA iteration is

1. forward pass storing ``x_0 … x_T`` (current θ);
2. backward pass for ``p_T … p_0``;
3. for every layer independently, ``θ_t ← argmax_θ H̃_t(x_t, p_{t+1}, θ, x_{t+1}, p_t)``
   with the augmented Hamiltonian

       H̃_t(x, p, θ, v, q) = H_t(x, p, θ) − (ρ/2)|v − f_t(x, θ)|² − (ρ/2)|q − ∇_x H_t(x, p, θ)|².

   ρ = 0 is the basic MSA (which can diverge).  The maximisation is approximate:
   a few steps (default: 10, as in the paper) of an inner Optax optimizer
   (default :func:`optax.lbfgs`) on ``−H̃_t``, jit-compiled per layer.

**Penalty convention.**  With ``penalty="sum"`` (default, the literal formula) the
two squared norms are sums over the batch *and* the features, while the loss is a
batch mean (so ``p = O(1/S)``): the state penalty then grows like ``S`` relative to
``H_t`` and the co-state penalty shrinks like ``1/S``, i.e. the effective ρ depends
on the batch size.  ``penalty="mean"`` rescales both terms to per-sample quantities,
``(ρ/2)(1/S)Σ_i|v^i − f_t(x^i, θ)|² + (ρ/2)(1/S)Σ_i|S q^i − S ∇_x H_t^i|²``,
which makes ρ independent of the batch size.

Example::

    layers = msa.sine_net(jax.random.key(0))
    opt = msa.emsa(msa.squared_error, rho=1.0)
    state = opt.init(layers)
    state, metrics = opt.step(state, (x, y))  # metrics.loss, metrics.hamiltonian_gain
"""

from relaxjax.msa.hamiltonian import (
    augmented_hamiltonian,
    costates,
    hamiltonian,
    softmax_cross_entropy,
    squared_error,
    total_loss,
)
from relaxjax.msa.layers import (
    ApplyFn,
    LayerSequence,
    LossFn,
    Penalty,
    Regularizer,
    forward,
    from_pairs,
    l2_regularizer,
    sequential,
)
from relaxjax.msa.nets import (
    Broadcast,
    DenseClassifier,
    Projection,
    ResidualConv,
    ResidualTanh,
    SumReadout,
    paper_mnist_net,
    sine_dataset,
    sine_net,
)
from relaxjax.msa.optimizer import (
    MSA,
    LayerResult,
    MSAMetrics,
    MSAState,
    basic_msa,
    emsa,
    layer_maximizer,
)

__all__ = [
    "ApplyFn",
    "augmented_hamiltonian",
    "basic_msa",
    "Broadcast",
    "costates",
    "DenseClassifier",
    "emsa",
    "forward",
    "from_pairs",
    "hamiltonian",
    "l2_regularizer",
    "layer_maximizer",
    "LayerResult",
    "LayerSequence",
    "LossFn",
    "MSA",
    "MSAMetrics",
    "MSAState",
    "paper_mnist_net",
    "Penalty",
    "Projection",
    "Regularizer",
    "ResidualConv",
    "ResidualTanh",
    "sequential",
    "sine_dataset",
    "sine_net",
    "softmax_cross_entropy",
    "squared_error",
    "SumReadout",
    "total_loss",
]
