"""Adapters for Flax users: the relaxations' ``grad_fn`` in linen and NNX training steps.

The relaxations' ``update(grads, state, params, grad_fn=grad_fn)`` needs a
``grad_fn(params, i)``, the loss gradient at ``params`` on inner mini-batch ``i``.

* linen (:mod:`relaxjax.adapters.linen`): :class:`RelaxTrainState`, a
  ``flax.training.train_state.TrainState`` whose ``apply_gradients`` passes
  ``grad_fn`` on, and :func:`linen_grad_fn`, which builds it from the step's loss;
* NNX (:mod:`relaxjax.adapters.nnx`): :func:`nnx_grad_fn`, which builds it from an
  NNX model and its loss for ``nnx.Optimizer(model, tx, wrt=nnx.Param).update``.

Both give every inner step its own dropout key and keep the BatchNorm statistics of
the outer evaluation only. Needs the ``[flax]`` extra; each module loads on first use,
so the linen one does not load ``flax.nnx``. See ``docs/adapters.md``.
"""

import importlib
from typing import Any

__all__ = ["RelaxTrainState", "linen_grad_fn", "nnx_grad_fn"]

_HOMES = {
    "RelaxTrainState": "linen",
    "linen_grad_fn": "linen",
    "nnx_grad_fn": "nnx",
}


def __getattr__(name: str) -> Any:
    """Loads ``relaxjax.adapters.linen`` or ``relaxjax.adapters.nnx`` on first access."""
    if name in _HOMES:
        return getattr(importlib.import_module(f"relaxjax.adapters.{_HOMES[name]}"), name)
    if name in ("linen", "nnx"):
        return importlib.import_module(f"relaxjax.adapters.{name}")
    raise AttributeError(f"module 'relaxjax.adapters' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__, "linen", "nnx"])
