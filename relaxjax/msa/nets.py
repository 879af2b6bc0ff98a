"""Example networks of the MSA paper as layer sequences: the sine net and the MNIST ResNet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from relaxjax.cpu.layers import max_pool_tiles
from relaxjax.msa.layers import Array, LayerSequence, sequential

# --------------------------------------------------------------------------------------
# Paper networks
# --------------------------------------------------------------------------------------


class Broadcast(nn.Module):
    """Copy a scalar input into ``dim`` coordinates: ``(S, 1) -> (S, dim)``.

    A parameter-free layer (the sine net's first).

    Attributes:
      dim: the number of coordinates.
    """

    dim: int

    def __call__(self, x: Array) -> Array:
        return jnp.broadcast_to(x, x.shape[:-1] + (self.dim,))


class SumReadout(nn.Module):
    """Sum of the coordinates: ``(S, d) -> (S, 1)``.

    A parameter-free layer (the sine net's last).
    """

    def __call__(self, x: Array) -> Array:
        return jnp.sum(x, axis=-1, keepdims=True)


class ResidualTanh(nn.Module):
    """Forward-Euler step of ``Ẋ = tanh(W X + b)``: ``x + dt·tanh(W x + b)``.

    Attributes:
      features: the width of x (W is ``features × features``).
      dt: the time step.
      kernel_init: W's initialiser (truncated normal, std 0.1).
      bias_init: b's initialiser (0.1).

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      sine-approximation experiment. ``docs/msa.md`` §4, ``docs/emsa.md`` §4.
    """

    features: int
    dt: float
    kernel_init: Callable = nn.initializers.truncated_normal(stddev=0.1)
    bias_init: Callable = nn.initializers.constant(0.1)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        z = nn.Dense(self.features, kernel_init=self.kernel_init, bias_init=self.bias_init)(x)
        return x + self.dt * jnp.tanh(z)


class Projection(nn.Module):
    """Convolution, tanh, 2×2 max-pool (the paper's projection layers).

    Attributes:
      features: the output channels.
      kernel_size: the convolution's kernel size (SAME padding).
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.tanh(nn.Conv(self.features, self.kernel_size, padding="SAME")(x))
        return max_pool_tiles(x, 2)


class ResidualConv(nn.Module):
    """``x + dt·tanh(W ⋆ x + b)`` with a ``features → features`` 3×3 convolution.

    Attributes:
      features: the channels C of x.
      dt: the time step δ (paper: 0.5).
    """

    features: int = 32
    dt: float = 0.5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return x + self.dt * jnp.tanh(nn.Conv(self.features, (3, 3), padding="SAME")(x))


class DenseClassifier(nn.Module):
    """Flatten and a dense layer to ``num_classes`` logits (softmax in the loss).

    Attributes:
      num_classes: the number of logits.
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def sine_net(
    key: Array,
    *,
    num_layers: int = 20,
    dt: float = 0.25,
    dim: int = 5,
    init: Literal["good", "zero"] = "good",
) -> LayerSequence:
    """The sine-approximation network of the paper (Ẋ = tanh(W X + b), X ∈ ℝ⁵, T = 5).

    Layers: copy the scalar input into ``dim`` coordinates (no parameters),
    ``num_layers`` forward-Euler residual layers ``x + dt·tanh(W x + b)``, sum of the
    coordinates (no parameters).  ``init="good"``: weights truncated normal std 0.1,
    biases 0.1; ``init="zero"``: all zeros (the paper's bad initialisation).  Use with
    :func:`squared_error` and :func:`sine_dataset`.

    Args:
      key: PRNG key of the initialisation.
      num_layers: the number of residual layers (> 0).
      dt: the forward-Euler time step.
      dim: the state dimension.
      init: ``"good"`` or ``"zero"``.

    Returns:
      A :class:`LayerSequence` of ``num_layers + 2`` layers.

    Raises:
      ValueError: for ``num_layers <= 0`` or an unknown ``init``.

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      sine-approximation experiment. ``docs/msa.md`` §4.

    Example:
      >>> import jax
      >>> from relaxjax import msa
      >>> layers = msa.sine_net(jax.random.key(0), num_layers=3)
      >>> x, y = msa.sine_dataset(jax.random.key(1), n=64)
      >>> layers.num_layers, layers(x).shape  # Broadcast, 3 residual layers, SumReadout
      (5, (64, 1))
    """
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}.")
    if init == "good":
        layer = ResidualTanh(dim, dt)
    elif init == "zero":
        zeros = nn.initializers.zeros
        layer = ResidualTanh(dim, dt, kernel_init=zeros, bias_init=zeros)
    else:
        raise ValueError(f"init must be 'good' or 'zero', got {init!r}.")
    modules = [Broadcast(dim), *([layer] * num_layers), SumReadout()]
    return sequential(modules, jnp.zeros((1, 1)), key)


def sine_dataset(key: Array, *, n: int = 1000) -> tuple[Array, Array]:
    """``n`` samples ``x ~ U[−π, π]``, ``y = sin x``, each of shape ``(n, 1)``.

    Args:
      key: PRNG key of the samples.
      n: the number of samples.

    Returns:
      ``(x, y)``, arrays of shape ``(n, 1)``.

    References:
      ``docs/msa.md`` §4.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import msa
      >>> x, y = msa.sine_dataset(jax.random.key(0), n=8)
      >>> x.shape, bool(jnp.all(jnp.abs(x) <= jnp.pi)), bool(jnp.allclose(y, jnp.sin(x)))
      ((8, 1), True, True)
    """
    x = jax.random.uniform(key, (n, 1), minval=-jnp.pi, maxval=jnp.pi)
    return x, jnp.sin(x)


def paper_mnist_net(
    key: Array,
    *,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    projection_channels: tuple[int, int] = (32, 32),
    num_residual: int = 7,
    dt: float = 0.5,
    num_classes: int = 10,
) -> LayerSequence:
    """The paper's residual CNN for MNIST (10 layers by default).

    Two projection layers (3×3 conv, tanh, 2×2 max-pool), ``num_residual`` residual
    layers ``x ← x + dt·tanh(W ⋆ x + b)`` (3×3, ``C → C`` channels, C the last
    projection width, paper: 32 and δ = 0.5), and a dense classifier producing
    logits (use :func:`softmax_cross_entropy`).  Kernel sizes and the first
    projection width are our choices (not given in the paper).  The residual
    layers share one module, so they compile once and can be vmapped together.

    Args:
      key: PRNG key of the initialisation.
      input_shape: one input's (height, width, channels).
      projection_channels: the two projection layers' channels.
      num_residual: the number of residual layers.
      dt: the residual layers' time step δ.
      num_classes: the number of logits.

    Returns:
      A :class:`LayerSequence` of ``num_residual + 3`` layers.

    References:
      Li et al., *Maximum Principle Based Algorithms for Deep Learning* (2018), the
      MNIST experiment. ``docs/msa.md`` §4, ``docs/emsa.md`` §4.

    Example:
      >>> import jax
      >>> from relaxjax import msa
      >>> net = msa.paper_mnist_net(jax.random.key(0), input_shape=(8, 8, 1), num_residual=2)
      >>> net.num_layers, net.apply_fns[2] is net.apply_fns[3]  # the residual layers share
      (5, True)
    """
    c = projection_channels[-1]
    residual = ResidualConv(c, dt)
    modules = [
        Projection(projection_channels[0]),
        Projection(c),
        *([residual] * num_residual),
        DenseClassifier(num_classes),
    ]
    return sequential(modules, jnp.zeros((1, *input_shape)), key)
