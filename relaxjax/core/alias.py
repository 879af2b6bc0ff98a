"""The optimizers of *Deep Relaxation* as single Optax transforms.

Each alias chains a relaxation (``relaxjax.local_entropy``, ``relaxjax.hopf_lax``
or ``relaxjax.heat_smoothing``) with the outer optimizer the paper uses: SGD with
Nesterov momentum 0.9 (Chaudhari et al., *Deep Relaxation*, 2018, §6;
*Entropy-SGD*, ICLR 2017, Alg. 1).
"""

from __future__ import annotations

import optax

from relaxjax.core.hyperparams import ScalarOrSchedule
from relaxjax.core.keys import Seed
from relaxjax.core.relaxation import heat_smoothing, hopf_lax, local_entropy

__all__ = ["entropy_adam", "entropy_sgd", "heat_sgd", "hj_sgd"]


def outer_sgd(
    learning_rate: ScalarOrSchedule, momentum: ScalarOrSchedule | None, nesterov: bool
) -> optax.GradientTransformation:
    """The outer SGD; a Python 0 or None means none, an array (even 0) keeps a trace.

    Deciding on the Python type, never on a value, keeps the state's structure the
    same when ``optax.inject_hyperparams`` passes ``momentum`` as an array (concrete
    in ``init``, traced in ``update``).
    """
    if momentum is None or (isinstance(momentum, (int, float)) and momentum == 0):
        return optax.sgd(learning_rate)
    return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def entropy_sgd(
    learning_rate: ScalarOrSchedule,
    gamma: ScalarOrSchedule,
    *,
    num_steps: int | None = None,
    step_size: ScalarOrSchedule = 0.1,
    noise: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    momentum: ScalarOrSchedule | None = 0.9,
    nesterov: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    seed: Seed = 0,
    unroll: int | bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Entropy-SGD: local-entropy gradient followed by Nesterov SGD.

    x ← x − η · NesterovMomentum(x − ⟨y⟩), with ⟨y⟩ from L SGLD steps (see
    ``relaxjax.local_entropy``). ``weight_decay`` λ is applied inside the inner
    loop, so the outer step descends the local entropy of f + (λ/2)‖x‖².

    Args:
      learning_rate: the outer learning rate η (float or Optax schedule) on the
        displacement x − μ towards the inner average, as the original code's
        ``--lr``: η = 1 without momentum moves x to μ. Port from ``optax.sgd(lr,
        momentum=m)`` with ``learning_rate=1.0``, ``step_size=lr``, ``momentum=m``
        (``docs/conventions.md`` §3).
      gamma: the scope γ > 0 (float or schedule, e.g. :func:`relaxjax.scoping`).
      num_steps: L ≥ 1, inner steps (gradient evaluations) per outer step (None: 20).
      step_size: inner step size η′ > 0.
      noise: ε ≥ 0, the Langevin noise scale (temperature ε²).
      alpha: α ∈ [0, 1), weight of the old running average.
      momentum: the outer momentum (0.9 in the papers); None or 0: plain SGD.
      nesterov: Nesterov momentum (when ``momentum`` is set).
      weight_decay: λ ≥ 0, L2 penalty inside the inner loop.
      seed: an int or PRNG key for the Langevin noise.
      unroll: forwarded to ``jax.lax.scan`` for the inner loop.

    Returns:
      ``optax.chain(local_entropy(..., output="displacement"), optax.sgd(...))``, an
      ``optax.GradientTransformationExtraArgs`` whose update takes ``grad_fn``.

    References:
      Chaudhari et al., *Entropy-SGD* (ICLR 2017), Alg. 1; *Deep Relaxation* (2018).
      ``docs/deep-relaxation.md`` §2.1, ``docs/algorithms.md`` §3.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import relaxjax
      >>> loss = lambda x: 0.5 * jnp.sum(x**2)
      >>> tx = relaxjax.entropy_sgd(1.0, 1.0, num_steps=5)
      >>> @jax.jit
      ... def step(x, state):
      ...     grad_fn = lambda y, i: jax.grad(loss)(y)  # mini-batch i's gradient
      ...     updates, state = tx.update(jax.grad(loss)(x), state, x, grad_fn=grad_fn)
      ...     return optax.apply_updates(x, updates), state
      >>> x = x0 = jnp.array([1.0, -2.0])
      >>> state = tx.init(x)
      >>> for _ in range(3):
      ...     x, state = step(x, state)
      >>> bool(loss(x) < 0.5 * loss(x0))
      True
    """
    return optax.chain(
        local_entropy(
            gamma,
            num_steps=num_steps,
            step_size=step_size,
            noise=noise,
            alpha=alpha,
            weight_decay=weight_decay,
            inner_optimizer=None,
            seed=seed,
            unroll=unroll,
            output="displacement",
        ),
        outer_sgd(learning_rate, momentum, nesterov),
    )


def hj_sgd(
    learning_rate: ScalarOrSchedule,
    gamma: ScalarOrSchedule,
    *,
    num_steps: int | None = None,
    step_size: ScalarOrSchedule = 0.1,
    alpha: ScalarOrSchedule = 0.75,
    momentum: ScalarOrSchedule | None = 0.9,
    nesterov: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    unroll: int | bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """HJ: Hopf-Lax (non-viscous) relaxed gradient followed by Nesterov SGD.

    x ← x − η · NesterovMomentum(x − y*), y* the proximal point estimated by
    L noise-free inner steps (see ``relaxjax.hopf_lax``).

    Args:
      learning_rate: the outer learning rate η (float or Optax schedule) on the
        displacement x − μ towards the inner average, as the original code's
        ``--lr``: η = 1 without momentum moves x to μ. Port from ``optax.sgd(lr,
        momentum=m)`` with ``learning_rate=1.0``, ``step_size=lr``, ``momentum=m``
        (``docs/conventions.md`` §3).
      gamma: the scope γ > 0 (float or schedule, e.g. :func:`relaxjax.scoping`).
      num_steps: L ≥ 1, inner steps (gradient evaluations) per outer step (None: 20).
      step_size: inner step size η′ > 0.
      alpha: α ∈ [0, 1), weight of the old running average.
      momentum: the outer momentum (0.9 in the papers); None or 0: plain SGD.
      nesterov: Nesterov momentum (when ``momentum`` is set).
      weight_decay: λ ≥ 0, L2 penalty inside the inner loop.
      unroll: forwarded to ``jax.lax.scan`` for the inner loop.

    Returns:
      ``optax.chain(hopf_lax(..., output="displacement"), optax.sgd(...))``, an
      ``optax.GradientTransformationExtraArgs`` whose update takes ``grad_fn``.

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the HJ optimizer.
      ``docs/deep-relaxation.md`` §1.2 and §2.1, ``docs/algorithms.md`` §3.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import relaxjax
      >>> loss = lambda x: 0.5 * jnp.sum(x**2)
      >>> tx = relaxjax.hj_sgd(1.0, 1.0, num_steps=5, momentum=None)
      >>> @jax.jit
      ... def updates(x, state):
      ...     grad_fn = lambda y, i: jax.grad(loss)(y)
      ...     return tx.update(jax.grad(loss)(x), state, x, grad_fn=grad_fn)[0]
      >>> x = jnp.array([1.0, -2.0])
      >>> bool(jnp.all(jnp.sign(updates(x, tx.init(x))) == -jnp.sign(x)))  # a descent step
      True
    """
    return optax.chain(
        hopf_lax(
            gamma,
            num_steps=num_steps,
            step_size=step_size,
            alpha=alpha,
            weight_decay=weight_decay,
            inner_optimizer=None,
            unroll=unroll,
            output="displacement",
        ),
        outer_sgd(learning_rate, momentum, nesterov),
    )


def heat_sgd(
    learning_rate: ScalarOrSchedule,
    *,
    gamma: ScalarOrSchedule = 0.1,
    num_steps: int | None = None,
    step_size: ScalarOrSchedule = 0.1,
    noise: ScalarOrSchedule = 1e-4,
    momentum: ScalarOrSchedule | None = 0.9,
    nesterov: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    seed: Seed = 0,
    unroll: int | bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """HEAT: the heat-equation relaxed gradient followed by Nesterov SGD.

    x ← x − η · NesterovMomentum(x − μ), with μ the uniform average of L SGLD
    iterates (see ``relaxjax.heat_smoothing``); the defaults are those of the Deep
    Relaxation research code's ``HEAT`` class: γ = 0.1 (coupling 10), L = 100,
    η′ = 0.1, ε = 1e-4 (its inner steps also carry Nesterov momentum, which
    ``heat_smoothing``'s ``inner_optimizer`` and ``keep_inner_state`` give).

    Args:
      learning_rate: the outer learning rate η (float or Optax schedule) on the
        displacement x − μ, as for :func:`entropy_sgd` (``docs/conventions.md`` §3).
        Here x − μ ≈ γ · L/(L + 1) · (the chain's average gradient), so η is an
        SGD rate of η·γ on that average.
      gamma: the scope γ > 0 (default 0.1, the research code's coupling 10).
      num_steps: L ≥ 1, inner steps (gradient evaluations) per outer step (None: 100).
      step_size: inner step size η′ > 0 (< 2γ).
      noise: ε ≥ 0, the Langevin noise scale; the heat time is t = 2γε²/(2 − η′/γ).
      momentum: the outer momentum (0.9 in the papers); None or 0: plain SGD.
      nesterov: Nesterov momentum (when ``momentum`` is set).
      weight_decay: λ ≥ 0, L2 penalty inside the inner loop.
      seed: an int or PRNG key for the Langevin noise.
      unroll: forwarded to ``jax.lax.scan`` for the inner loop.

    Returns:
      ``optax.chain(heat_smoothing(..., output="displacement"), optax.sgd(...))``, an
      ``optax.GradientTransformationExtraArgs`` whose update takes ``grad_fn``.

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the heat equation and the Heat
      column. ``docs/deep-relaxation.md`` §1.3, ``docs/algorithms.md`` §3.

    Example:
      With a constant gradient c the chain takes one step and stays, so (without
      momentum or noise) the research code's defaults step by −η·γ·c·L/(L + 1):

      >>> import jax, jax.numpy as jnp
      >>> import relaxjax
      >>> c = jnp.array([1.0, -2.0])
      >>> grad_fn = lambda y, i: c  # f(x) = c·x on every mini-batch
      >>> tx = relaxjax.heat_sgd(1.0, momentum=None, noise=0.0)  # γ = η′ = 0.1, L = 100
      >>> x = jnp.zeros(2)
      >>> updates, _ = jax.jit(lambda x, s: tx.update(c, s, x, grad_fn=grad_fn))(x, tx.init(x))
      >>> print(jnp.round(updates / (0.1 * 100 / 101), 4))
      [-1.  2.]
    """
    return optax.chain(
        heat_smoothing(
            gamma,
            num_steps=num_steps,
            step_size=step_size,
            noise=noise,
            weight_decay=weight_decay,
            inner_optimizer=None,
            seed=seed,
            unroll=unroll,
            output="displacement",
        ),
        outer_sgd(learning_rate, momentum, nesterov),
    )


def entropy_adam(
    learning_rate: ScalarOrSchedule,
    gamma: ScalarOrSchedule,
    *,
    num_steps: int | None = None,
    step_size: ScalarOrSchedule = 1e-3,
    noise: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    momentum: ScalarOrSchedule | None = 0.9,
    nesterov: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    seed: Seed = 0,
    unroll: int | bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Entropy-Adam: Adam (step ``step_size``) plus Langevin noise in the inner loop.

    As in the Entropy-SGD paper (ICLR 2017, §5), Adam replaces the inner SGLD
    step; the outer step is Nesterov SGD on x − μ. The noise scale is
    ε √(2 η′) with η′ = ``step_size``.

    Args:
      learning_rate: the outer learning rate η (float or Optax schedule) on the
        displacement x − μ towards the inner average, as the original code's
        ``--lr``: η = 1 without momentum moves x to μ. Port from ``optax.sgd(lr,
        momentum=m)`` with ``learning_rate=1.0``, ``step_size=lr``, ``momentum=m``
        (``docs/conventions.md`` §3).
      gamma: the scope γ > 0 (float or schedule, e.g. :func:`relaxjax.scoping`).
      num_steps: L ≥ 1, inner steps (gradient evaluations) per outer step (None: 20).
      step_size: η′ > 0, Adam's inner learning rate (and the noise's step).
      noise: ε ≥ 0, the Langevin noise scale.
      alpha: α ∈ [0, 1), weight of the old running average.
      momentum: the outer momentum (0.9 in the papers); None or 0: plain SGD.
      nesterov: Nesterov momentum (when ``momentum`` is set).
      weight_decay: λ ≥ 0, L2 penalty inside the inner loop.
      b1: Adam's first-moment decay.
      b2: Adam's second-moment decay.
      seed: an int or PRNG key for the Langevin noise.
      unroll: forwarded to ``jax.lax.scan`` for the inner loop.

    Returns:
      ``optax.chain(local_entropy(..., inner_optimizer=optax.adam(...),
      output="displacement"), optax.sgd(...))``, whose update takes ``grad_fn``.
      Adam's state is started afresh at every outer step.

    References:
      Chaudhari et al., *Entropy-SGD* (ICLR 2017), §5. ``docs/algorithms.md`` §3.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import relaxjax
      >>> loss = lambda x: 0.5 * jnp.sum(x**2)
      >>> tx = relaxjax.entropy_adam(0.1, 1.0, num_steps=4)
      >>> @jax.jit
      ... def updates(x, state):
      ...     grad_fn = lambda y, i: jax.grad(loss)(y)
      ...     return tx.update(jax.grad(loss)(x), state, x, grad_fn=grad_fn)[0]
      >>> x = jnp.array([1.0, -2.0])
      >>> updates(x, tx.init(x)).shape
      (2,)
    """
    return optax.chain(
        local_entropy(
            gamma,
            num_steps=num_steps,
            step_size=step_size,
            noise=noise,
            alpha=alpha,
            weight_decay=weight_decay,
            inner_optimizer=optax.adam(step_size, b1=b1, b2=b2),
            seed=seed,
            unroll=unroll,
            output="displacement",
        ),
        outer_sgd(learning_rate, momentum, nesterov),
    )
