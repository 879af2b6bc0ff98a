"""An eager PyTorch Entropy-SGD and the paper's MNIST networks, as users run them today.

This is the baseline of ``compare_pytorch.py``: a plain ``torch.optim.Optimizer``
in the style of the original authors' PyTorch ``EntropySGD`` (Chaudhari et al.,
*Entropy-SGD*, ICLR 2017; *Deep Relaxation*, 2018): ``step(closure)`` runs the
L inner steps in Python, one closure call (forward + backward on a fresh
mini-batch) per inner step, updating every parameter tensor in a Python loop.

It uses the *conventions of relaxjax* (``relaxjax.local_entropy`` chained with
``optax.sgd(lr, momentum=0.9, nesterov=True)``, i.e. ``relaxjax.entropy_sgd``)
so that both implement the same algorithm, step for step::

    y ← x;  μ ← x
    for ℓ = 0 … L−1:                     (closure ℓ: gradient g at y on mini-batch ℓ)
        y ← y − η′ (g + (y − x)/γ + λ y) + ε √(2η′) ξ,   ξ ~ N(0, I)
        μ ← α μ + (1 − α) y
    d = (x − μ)/γ                        (the relaxed gradient)
    b ← m b + d;  x ← x − lr (d + m b)   (Nesterov momentum m, as optax/torch SGD)

with the scope γ_t = γ₀ (1 + r)^(−t) at outer step t (``relaxjax.scoping``).
Differences from the authors' code, all deliberate: γ is the scope (their
``gamma`` is the coupling 1/γ); the outer rate ``lr`` multiplies (x − μ)/γ
(theirs multiplies x − μ); no momentum in the inner loop; no extra
mini-batch evaluated at x for logging, so an outer step costs exactly L
gradient evaluations, as in relaxjax.

The networks copy ``relaxjax.models.MnistFC`` and ``relaxjax.models.LeNet``
(same layers, BatchNorm with PyTorch's defaults, dropout), in PyTorch's
NCHW layout and PyTorch's default initialisation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["EntropySGD", "MnistFC", "LeNet", "TORCH_MODELS", "get_torch_model"]


class EntropySGD(torch.optim.Optimizer):
    """Entropy-SGD with L inner SGLD steps per ``step(closure)`` (see module docstring).

    Args:
      params: the parameters (or parameter groups) to optimise.
      lr: outer learning rate on the relaxed gradient (x − μ)/γ.
      gamma: initial scope γ₀ > 0 (coupling 1/γ of the inner loss).
      scoping: r ≥ 0, γ_t = γ₀ (1 + r)^(−t) at outer step t.
      num_steps: L ≥ 1, inner steps (closure calls) per outer step.
      step_size: inner step η′ > 0.
      noise: Langevin noise ε ≥ 0; the step noise is ε √(2η′) ξ.
      alpha: weight α ∈ [0, 1) of the old running average.
      momentum: outer momentum m (0 for none).
      nesterov: Nesterov momentum on the outer step.
      weight_decay: λ ≥ 0, L2 coefficient inside the inner loop.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1.0,
        gamma: float = 1e4,
        scoping: float = 0.0,
        num_steps: int = 20,
        step_size: float = 0.1,
        noise: float = 1e-4,
        alpha: float = 0.75,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
    ) -> None:
        if gamma <= 0 or step_size <= 0 or num_steps < 1:
            raise ValueError("need gamma > 0, step_size > 0 and num_steps >= 1")
        if not 0 <= alpha < 1 or noise < 0 or weight_decay < 0 or scoping < 0:
            raise ValueError("need 0 <= alpha < 1 and noise, weight_decay, scoping >= 0")
        defaults = dict(
            lr=lr,
            gamma=gamma,
            scoping=scoping,
            num_steps=num_steps,
            step_size=step_size,
            noise=noise,
            alpha=alpha,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)
        self.outer_steps = 0

    def _params(self) -> Iterable[tuple[dict, torch.Tensor]]:
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    def _gamma(self, group: dict) -> float:
        return group["gamma"] * (1.0 + group["scoping"]) ** (-self.outer_steps)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """One outer step: L closure calls, then the outer update. Returns the first loss.

        ``closure`` must zero the gradients, evaluate the loss on the *next*
        mini-batch at the current parameters, call ``backward`` and return the loss.
        """
        if closure is None:
            raise ValueError("EntropySGD needs a closure (one mini-batch per inner step)")
        for _, p in self._params():  # x ← current weights, μ ← x
            state = self.state[p]
            if "x" not in state:
                state["x"], state["mu"] = p.detach().clone(), p.detach().clone()
            else:
                state["x"].copy_(p)
                state["mu"].copy_(p)

        num_steps = self.param_groups[0]["num_steps"]
        first_loss = None
        for _ in range(num_steps):
            with torch.enable_grad():
                loss = closure()
            first_loss = loss if first_loss is None else first_loss
            self._inner_step()
        self._outer_step()
        self.outer_steps += 1
        return first_loss

    def _inner_step(self) -> None:
        """y ← y − η′(g + (y − x)/γ + λy) + ε√(2η′)ξ;  μ ← αμ + (1 − α)y (in place on p)."""
        for group, p in self._params():
            if p.grad is None:
                continue
            state, eta = self.state[p], group["step_size"]
            d = p.grad
            d.add_(p - state["x"], alpha=1.0 / self._gamma(group))
            if group["weight_decay"]:
                d.add_(p, alpha=group["weight_decay"])
            p.add_(d, alpha=-eta)
            if group["noise"]:
                p.add_(torch.randn_like(p), alpha=group["noise"] * math.sqrt(2.0 * eta))
            state["mu"].mul_(group["alpha"]).add_(p, alpha=1.0 - group["alpha"])

    def _outer_step(self) -> None:
        """x ← x − lr · Nesterov((x − μ)/γ), written into the parameters."""
        for group, p in self._params():
            state = self.state[p]
            d = (state["x"] - state["mu"]).div_(self._gamma(group))
            if group["momentum"]:
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                buf = state["momentum_buffer"]
                d = d.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
            p.copy_(state["x"]).add_(d, alpha=-group["lr"])


class MnistFC(nn.Module):
    """``mnistfc``: input dropout 0.2, 784-1024-1024-10 with BN, ReLU, dropout.

    ``bn_after_relu`` puts BatchNorm after the ReLU, as ``relaxjax.models.MnistFC``
    does for ``mnistfc-dr`` (the Deep Relaxation code's network, dropout 0.2).
    """

    def __init__(
        self,
        num_classes: int = 10,
        hidden: int = 1024,
        dropout: float = 0.5,
        bn_after_relu: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(0.2)]
        width = 28 * 28
        for _ in range(2):
            bn_relu = [nn.BatchNorm1d(hidden), nn.ReLU()]
            layers += [nn.Linear(width, hidden), *(bn_relu[::-1] if bn_after_relu else bn_relu)]
            layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet(nn.Module):
    """The paper's LeNet (``mnistconv`` of the Lua code) for (N, 1, 28, 28) inputs.

    conv-ReLU-pool-BN blocks and no BatchNorm on the 500-unit layer, as in
    ``relaxjax.models.LeNet``; with dropout 0.25 it is ``lenet-dr``, the Deep Relaxation
    code's network. ``bn_after_pool=False`` (conv-BN-ReLU-pool) with ``dense_bn=True``
    is the PyTorch port's revised ``mnistconv`` (``lenet-pytorch``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        dropout: float = 0.5,
        bn_after_pool: bool = True,
        dense_bn: bool = False,
    ) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, pool: int) -> list[nn.Module]:
            conv, bn = nn.Conv2d(c_in, c_out, 5), nn.BatchNorm2d(c_out)
            if bn_after_pool:
                layers = [conv, nn.ReLU(), nn.MaxPool2d(pool, pool), bn]
            else:
                layers = [conv, bn, nn.ReLU(), nn.MaxPool2d(pool, pool)]
            return [*layers, nn.Dropout(dropout)]

        self.net = nn.Sequential(
            *block(1, 20, 3),
            *block(20, 50, 2),
            nn.Flatten(),  # 50 * 2 * 2 = 200
            nn.Linear(200, 500),
            *([nn.BatchNorm1d(500)] if dense_bn else []),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# The same names and variants as relaxjax.models.MODELS.
TORCH_MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnistfc": MnistFC,
    "lenet": LeNet,
    "mnistconv": LeNet,
    "lenet-pytorch": functools.partial(LeNet, bn_after_pool=False, dense_bn=True),
    "mnistfc-dr": functools.partial(MnistFC, dropout=0.2, bn_after_relu=True),
    "lenet-dr": functools.partial(LeNet, dropout=0.25, bn_after_pool=True, dense_bn=False),
}


def get_torch_model(name: str, num_classes: int = 10) -> nn.Module:
    """The PyTorch twin of ``relaxjax.models.get_model(name)`` (the MNIST networks)."""
    if name not in TORCH_MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(TORCH_MODELS)}")
    return TORCH_MODELS[name](num_classes=num_classes)
