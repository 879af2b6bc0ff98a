"""CPU-fast Flax layers: max-pooling as a reshape, small convolutions as matrix products.

XLA:CPU runs the gradient of max-pooling (``select-and-scatter``) and of small
convolutions slowly; these layers compute the same values and gradients with
elementwise masks and matrix products. ``relaxjax.models.LeNet`` uses them on
the CPU backend (``conv_implementation="auto"``, ``pooling="auto"``).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["PatchConv", "conv_as_matmul", "max_pool_tiles"]


def max_pool_tiles(x: jax.Array, size: int) -> jax.Array:
    """Non-overlapping ``size x size`` max-pooling of NHWC ``x`` (stride = size, floor rounding).

    The same values as ``nn.max_pool(x, (size, size), strides=(size, size))``,
    computed as a reshape and a ``max`` over the two window axes. Its gradient
    is then an elementwise mask instead of XLA's ``select-and-scatter``, which
    XLA:CPU runs slowly (measured in ``benchmarks/RESULTS.md``, "LeNet's layers on
    CPU"). Gradients agree except at ties inside a window, which ``max`` shares
    equally and ``select-and-scatter`` gives to the first element; after a ReLU,
    tied zeros have zero gradient either way.

    Args:
      x: an NHWC array.
      size: the window's height and width, and the stride.

    Returns:
      The pooled array, shape ``(N, H // size, W // size, C)``.

    Example:
      >>> import flax.linen as nn, jax.numpy as jnp
      >>> from relaxjax.cpu.layers import max_pool_tiles
      >>> x = jnp.arange(2 * 7 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 7, 3)
      >>> bool(jnp.all(max_pool_tiles(x, 3) == nn.max_pool(x, (3, 3), strides=(3, 3))))
      True
    """
    n, h, w, c = x.shape
    h, w = h // size * size, w // size * size
    tiles = x[:, :h, :w].reshape(n, h // size, size, w // size, size, c)
    return jnp.max(tiles, axis=(2, 4))


def conv_as_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 VALID convolution of NHWC ``x`` with an HWIO ``kernel`` as one matrix product.

    The kh·kw shifted views of ``x`` are stacked into patches (im2col) and
    multiplied by the kernel reshaped to (kh·kw·C_in, C_out). Autodiff then
    gives two matrix products and pads/adds for the backward pass instead of
    XLA's transposed convolutions, which XLA:CPU runs slowly for LeNet's small
    shapes (``benchmarks/RESULTS.md``, "LeNet's layers on CPU").

    Args:
      x: an NHWC array.
      kernel: an HWIO kernel.

    Returns:
      ``lax.conv_general_dilated(x, kernel, (1, 1), "VALID")`` in NHWC, up to
      floating-point summation order.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.cpu.layers import conv_as_matmul
      >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
      >>> k = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 3, 4))
      >>> ref = jax.lax.conv_general_dilated(
      ...     x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> bool(jnp.allclose(conv_as_matmul(x, k), ref, atol=1e-4))
      True
    """
    kh, kw, c_in, c_out = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    views = [x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)]
    patches = jnp.stack(views, axis=3).reshape(n * oh * ow, kh * kw * c_in)
    return (patches @ kernel.reshape(kh * kw * c_in, c_out)).reshape(n, oh, ow, c_out)


class PatchConv(nn.Module):
    """``nn.Conv(features, kernel_size, padding="VALID")`` (stride 1, same parameters and init).

    ``implementation``: ``"patches"`` (:func:`conv_as_matmul`), ``"xla"``
    (``lax.conv_general_dilated``) or ``"auto"``: patches on the CPU backend,
    where they are faster for small convolutions, XLA's convolution elsewhere
    (cuDNN on GPU). Both give the same values and gradients up to float
    rounding (tested).

    Attributes:
      features: output channels.
      kernel_size: (height, width) of the kernel.
      implementation: ``"auto"``, ``"patches"`` or ``"xla"``.
      kernel_init: the kernel's initialiser (``nn.Conv``'s default: LeCun normal).
      bias_init: the bias's initialiser (``nn.Conv``'s default: zeros).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.cpu.layers import PatchConv
      >>> layer = PatchConv(4, (3, 3), implementation="patches")
      >>> variables = layer.init(jax.random.PRNGKey(0), jnp.ones((1, 6, 6, 2)))
      >>> layer.apply(variables, jnp.ones((1, 6, 6, 2))).shape
      (1, 4, 4, 4)
    """

    features: int
    kernel_size: tuple[int, int]
    implementation: str = "auto"
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.implementation not in ("auto", "patches", "xla"):
            raise ValueError(
                f"implementation must be 'auto', 'patches' or 'xla', got {self.implementation!r}"
            )
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        bias = self.param("bias", self.bias_init, (self.features,))
        patches = self.implementation == "patches" or (
            self.implementation == "auto" and jax.default_backend() == "cpu"
        )
        if patches:
            y = conv_as_matmul(x, kernel)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return y + bias
