"""The networks of Deep Relaxation / Entropy-SGD, and a functional adapter for any Flax model.

Architectures follow the authors' public Entropy-SGD code, as summarised in
section 3 of ``docs/deep-relaxation.md`` (Chaudhari et al., *Deep Relaxation*,
2018; *Entropy-SGD*, ICLR 2017):

* :class:`MnistFC` (``mnistfc``, the PyTorch code's ``python/models.py``): input
  dropout 0.2, 784-1024-1024-10 with BatchNorm, ReLU and dropout 0.5 after each
  hidden layer.
* :class:`LeNet` (``lenet``, the paper's ``mnistconv``): the Lua code's
  ``models.lua``, which ran the Entropy-SGD paper's experiments: two
  conv5x5-ReLU-maxpool-BN-dropout blocks (20 and 50 channels, pools 3 and 2),
  then 200-500-10 with ReLU and dropout 0.5 and no BN on the 500 units. The
  PyTorch port's ``mnistconv`` as revised later (BN before every ReLU, also on
  the 500 units) is registered as ``lenet-pytorch``
  (``docs/deep-relaxation.md`` §3.1, the LeNet comparison).
* :class:`AllCNN` (``allcnn``): All-CNN-C with BN (Springenberg et al. 2015),
  c1 = 96, c2 = 192, input dropout 0.2, global average pooling.

The Deep Relaxation paper's MNIST cells come from the authors' later research
code (``code/models.py`` of their Hamilton-Jacobi repository, the same networks
as in their Parle code), whose networks differ; they are registered as

* ``mnistfc-dr``: dropout 0.2 (input and hidden), Dense-ReLU-BN order;
* ``lenet-dr``: ``lenet``'s layers (conv5x5-ReLU-maxpool-BN-dropout blocks,
  200-500-10 *without* BN on the 500-unit layer) with dropout 0.25 throughout.

Details kept from the original code: every convolution/dense layer has a
bias (also before BN); BN comes *before* ReLU in ``mnistfc`` and ``allcnn``;
the final 1x1 convolution of All-CNN is also followed by BN and ReLU (so
All-CNN's logits are non-negative, exactly as in the reference code);
max-pooling is non-overlapping with floor rounding. BatchNorm uses Torch's
and PyTorch's defaults, momentum 0.1 on the new statistic (``momentum=0.9`` in
Flax) and ``epsilon=1e-5``; Flax's running variance uses the biased batch
variance where Torch uses the unbiased one. Initialisation is Flax's default
(LeCun-normal kernels, zero biases; BN scale 1, bias 0), not Torch's uniform
fan-in init (kernels and biases uniform in ±1/√fan_in, a standard deviation
√3 smaller; BN scales uniform in [0, 1)); ``lenet-dr``, with ``lenet``'s layers
and this init, meets the paper's LeNet cells, and ``lenet-torch-init`` is
``lenet`` with Torch's init (``LeNet(weight_init="torch")``).

Inputs are NHWC (``(N, 28, 28, 1)`` for MNIST, ``(N, 32, 32, 3)`` for CIFAR)
and are cast to float32; scaling/whitening is the data pipeline's job.

:func:`functional` turns a :mod:`flax.linen` module or a :mod:`flax.nnx`
module into a :class:`FunctionalModel` ``(init, apply)`` pair whose
parameters and state are plain nested dicts of arrays, which is what the
Optax-style training code of relaxjax works with.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from relaxjax.cpu.layers import PatchConv, max_pool_tiles
from relaxjax.models.layers import batch_norm, dropout_layer, torch_uniform


class MnistFC(nn.Module):
    """``mnistfc`` of Entropy-SGD / Deep Relaxation (1,867,786 parameters for 10 classes).

    Input dropout, then two Dense(``hidden``)-BN-ReLU-dropout blocks (Dense-ReLU-BN with
    ``bn_after_relu``), then Dense(``num_classes``). Called as ``module(x, train)`` on
    NHWC (or any ``(N, ...)``) inputs, flattened per example.

    Attributes:
      num_classes: the number of outputs.
      hidden: the width of the two hidden layers.
      input_dropout: the dropout rate on the inputs.
      dropout: the dropout rate after each hidden layer.
      bn_after_relu: Dense-ReLU-BN (the Deep Relaxation code) instead of Dense-BN-ReLU.
      dropout_masks: ``"hash"`` (:class:`HashDropout`) or ``"threefry"`` (flax's
        ``nn.Dropout``).

    References:
      Chaudhari et al., *Entropy-SGD* (ICLR 2017), §5 (experiments);
      ``docs/deep-relaxation.md`` §3.1.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.models import MnistFC, count_params
      >>> x = jnp.zeros((1, 28, 28, 1))
      >>> count_params(jax.eval_shape(MnistFC().init, jax.random.key(0), x)["params"])
      1867786
    """

    num_classes: int = 10
    hidden: int = 1024
    input_dropout: float = 0.2
    dropout: float = 0.5
    bn_after_relu: bool = False  # Dense-ReLU-BN (the Deep Relaxation code) for Dense-BN-ReLU
    dropout_masks: str = "hash"  # "hash" (HashDropout) or "threefry" (flax nn.Dropout)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jnp.asarray(x, jnp.float32).reshape((x.shape[0], -1))
        x = dropout_layer(self.input_dropout, train=train, masks=self.dropout_masks)(x)
        for _ in range(2):
            x = nn.Dense(self.hidden)(x)
            x = (
                batch_norm(train)(nn.relu(x))
                if self.bn_after_relu
                else nn.relu(batch_norm(train)(x))
            )
            x = dropout_layer(self.dropout, train=train, masks=self.dropout_masks)(x)
        return nn.Dense(self.num_classes)(x)


class LeNet(nn.Module):
    """The paper's LeNet (``mnistconv`` of the Lua Entropy-SGD code), for 28x28 inputs.

    Two conv5x5-ReLU-maxpool-BN-dropout blocks (20 and 50 channels, pools 3 and 2),
    then Dense(500)-ReLU-dropout and Dense(``num_classes``): 131,220 parameters for
    10 classes. ``bn_after_pool=False`` (conv-BN-ReLU-pool) with ``dense_bn=True``
    (Dense(500)-BN-ReLU) is the PyTorch port's revised ``mnistconv``
    (``lenet-pytorch``, 132,220 parameters).

    Attributes:
      num_classes: the number of outputs.
      dropout: the dropout rate after each block and the 500-unit layer.
      conv_implementation: ``"auto"``, ``"patches"`` or ``"xla"``, see
        :class:`relaxjax.cpu.layers.PatchConv`.
      bn_after_pool: conv-ReLU-pool-BN (the Lua and the Deep Relaxation code) instead
        of conv-BN-ReLU-pool (the PyTorch port's revision).
      dense_bn: BatchNorm on the 500-unit layer (only in the PyTorch port's revision).
      dropout_masks: ``"hash"`` (:class:`HashDropout`) or ``"threefry"``.
      pooling: ``"tiles"`` (:func:`relaxjax.cpu.layers.max_pool_tiles`) or ``"xla"``
        (``nn.max_pool``), the same values.
      weight_init: ``"flax"`` (Flax's defaults: LeCun-normal kernels, zero biases, BatchNorm
        scale 1) or ``"torch"`` (Lua Torch's, which the Lua code used: kernels and biases
        uniform in ±1/√fan_in, :func:`relaxjax.models.torch_uniform`; BatchNorm scales
        uniform in [0, 1)); ``lenet-torch-init`` is ``lenet`` with ``"torch"``.

    References:
      Chaudhari et al., *Entropy-SGD* (ICLR 2017), §5 (experiments);
      ``docs/deep-relaxation.md`` §3.1.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.models import LeNet, count_params
      >>> x = jnp.zeros((2, 28, 28, 1))
      >>> variables = jax.eval_shape(LeNet().init, jax.random.key(0), x)
      >>> jax.eval_shape(LeNet().apply, variables, x).shape, count_params(variables["params"])
      ((2, 10), 131220)
    """

    num_classes: int = 10
    dropout: float = 0.5
    conv_implementation: str = "auto"  # see PatchConv
    bn_after_pool: bool = True  # conv-ReLU-pool-BN (Lua code); False: conv-BN-ReLU-pool
    dense_bn: bool = False  # BatchNorm on the 500-unit layer (the PyTorch port's revision)
    dropout_masks: str = "hash"  # "hash" (HashDropout) or "threefry" (flax nn.Dropout)
    pooling: str = "tiles"  # "tiles" (max_pool_tiles) or "xla" (nn.max_pool)
    weight_init: str = "flax"  # "flax" (Flax's defaults) or "torch" (Lua Torch's)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.pooling not in ("tiles", "xla"):
            raise ValueError(f"pooling must be 'tiles' or 'xla', got {self.pooling!r}")

        def initialisers(fan_in: int) -> dict:
            """A layer's kernel and bias initialisers: Torch's for ``weight_init="torch"``
            (``batch_norm`` refuses any other value than ``WEIGHT_INITS``')."""
            if self.weight_init != "torch":
                return {}
            return {"kernel_init": torch_uniform(fan_in), "bias_init": torch_uniform(fan_in)}

        def norm(y: jax.Array) -> jax.Array:
            return batch_norm(train, weight_init=self.weight_init)(y)

        def pool(y: jax.Array, size: int) -> jax.Array:
            if self.pooling == "xla":
                return nn.max_pool(y, (size, size), strides=(size, size))
            return max_pool_tiles(y, size)

        x = jnp.asarray(x, jnp.float32)
        kernel = (5, 5)
        for i, (features, size) in enumerate(((20, 3), (50, 2))):
            conv = PatchConv(
                features,
                kernel,
                self.conv_implementation,
                name=f"Conv_{i}",
                **initialisers(kernel[0] * kernel[1] * x.shape[-1]),
            )
            x = conv(x)
            x = norm(pool(nn.relu(x), size)) if self.bn_after_pool else pool(nn.relu(norm(x)), size)
            x = dropout_layer(self.dropout, train=train, masks=self.dropout_masks)(x)
        x = x.reshape((x.shape[0], -1))  # 50 * 2 * 2 = 200 for 28x28 inputs
        x = nn.Dense(500, **initialisers(x.shape[-1]))(x)
        x = nn.relu(norm(x) if self.dense_bn else x)
        x = dropout_layer(self.dropout, train=train, masks=self.dropout_masks)(x)
        return nn.Dense(self.num_classes, **initialisers(x.shape[-1]))(x)


class AllCNN(nn.Module):
    """All-CNN-C with BatchNorm (``allcnn``), c1 = 96, c2 = 192, for 32x32 inputs.

    Input dropout, three conv3x3-BN-ReLU layers of ``c1`` channels (the last with
    stride 2), dropout, the same with ``c2`` channels, dropout, two conv3x3 and one
    conv1x1 to ``num_classes`` channels (each with BN and ReLU), global average pooling.

    Attributes:
      num_classes: the number of outputs.
      c1: the channels of the first three convolutions.
      c2: the channels of the next five.
      input_dropout: the dropout rate on the inputs.
      dropout: the dropout rate after each stride-2 stage.
      dropout_masks: ``"hash"`` (:class:`HashDropout`) or ``"threefry"``.

    References:
      Springenberg et al., *Striving for simplicity: the all convolutional net*
      (ICLR 2015 workshop); Chaudhari et al., *Entropy-SGD* (ICLR 2017), §5 (experiments);
      ``docs/deep-relaxation.md`` §3.1.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.models import AllCNN
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> variables = jax.eval_shape(AllCNN().init, jax.random.key(0), x)
      >>> jax.eval_shape(AllCNN().apply, variables, x).shape
      (2, 10)
    """

    num_classes: int = 10
    c1: int = 96
    c2: int = 192
    input_dropout: float = 0.2
    dropout: float = 0.5
    dropout_masks: str = "hash"  # "hash" (HashDropout) or "threefry" (flax nn.Dropout)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def convbn(x: jax.Array, features: int, kernel: int, stride: int = 1) -> jax.Array:
            pad = (kernel - 1) // 2  # PyTorch-style symmetric padding (1 for 3x3, 0 for 1x1)
            x = nn.Conv(
                features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad),) * 2
            )(x)
            return nn.relu(batch_norm(train)(x))

        x = jnp.asarray(x, jnp.float32)
        x = dropout_layer(self.input_dropout, train=train, masks=self.dropout_masks)(x)
        x = convbn(x, self.c1, 3)
        x = convbn(x, self.c1, 3)
        x = convbn(x, self.c1, 3, stride=2)
        x = dropout_layer(self.dropout, train=train, masks=self.dropout_masks)(x)
        x = convbn(x, self.c2, 3)
        x = convbn(x, self.c2, 3)
        x = convbn(x, self.c2, 3, stride=2)
        x = dropout_layer(self.dropout, train=train, masks=self.dropout_masks)(x)
        x = convbn(x, self.c2, 3)
        x = convbn(x, self.c2, 3)
        x = convbn(x, self.num_classes, 1)
        return jnp.mean(x, axis=(1, 2))  # global average pooling (8x8 for 32x32 inputs)
