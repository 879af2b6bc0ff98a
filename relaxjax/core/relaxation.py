"""Relaxed gradients of the local entropy and of the Hopf-Lax (Moreau) envelope.

Both transforms replace the incoming gradient ∇f(x) by the gradient of a
relaxed loss obtained by solving a Hamilton-Jacobi PDE with initial datum f
(Chaudhari, Oberman, Osher, Soatto, Carlier, *Deep Relaxation: partial
differential equations for optimizing deep neural networks*, Res. Math. Sci.
5:30, 2018; Chaudhari et al., *Entropy-SGD*, ICLR 2017):

* **local entropy** (viscous HJ, u_t = −½|∇u|² + (2β)⁻¹Δu, u(·, 0) = f):
  f_γ(x) = −β⁻¹ log ∫ exp(−β f(y) − β|x − y|²/(2γ)) dy, with
  ∇f_γ(x) = (x − ⟨y⟩)/γ where ⟨y⟩ is the mean of the Gibbs measure
  ρ(y) ∝ exp(−β f(y) − β|x − y|²/(2γ));
* **Hopf-Lax** (non-viscous HJ, u_t = −½|∇u|²):
  u(x, γ) = min_y f(y) + |x − y|²/(2γ), with gradient (x − y*)/γ where
  y* = prox_{γf}(x) is the proximal point.

The expectation ⟨y⟩ (or the minimiser y*) is estimated by an inner loop of L
steps started at y₀ = x, run inside ``jax.lax.scan``::

    g_ℓ   = ∇f_ℓ(y_ℓ) + (y_ℓ − x)/γ + λ y_ℓ          (λ: weight decay)
    y_ℓ₊₁ = y_ℓ − η′ g_ℓ + ε √(2η′) ξ_ℓ,   ξ_ℓ ~ N(0, I)
    μ_ℓ₊₁ = α μ_ℓ + (1 − α) y_ℓ₊₁,          μ₀ = x
    output  (x − μ_L)/γ

With the default inner optimizer this is stochastic gradient Langevin
dynamics at temperature β⁻¹ = ε², whose stationary law is the Gibbs measure
above; with ε = 0 (``hopf_lax``) it is gradient descent on the proximal
problem. ``∇f_ℓ`` is a stochastic gradient on mini-batch ℓ: the incoming
gradient (evaluated by the caller at x) is used for ℓ = 0, and
``grad_fn(y, ℓ)`` for ℓ = 1 … L − 1, so an outer step costs exactly L
gradient evaluations. (The authors' Entropy-SGD code, Lua and PyTorch, evaluates
L + 1: a first gradient at x, for logging, is discarded when L > 0; their Deep
Relaxation research code evaluates one more, at the new x after the outer step.)

``heat_smoothing`` runs the same loop with the *uniform* average
μ_L = (y₀ + … + y_L)/(L + 1) in place of the exponential one (the HEAT optimizer
of the Deep Relaxation research code); its output is the average of the chain's
gradients, an estimate of the gradient of the heat-equation-smoothed loss
(see its docstring for the time t and the conditions).

Relation to the original code: its coupling ``gamma`` is ρ = 1/γ (the scope
of this module is the PDE time of *Deep Relaxation*), its step noise is
``eps/sqrt(0.5·lr)·ξ`` inside the gradient, i.e. ε √(2η′) ξ on the step as
here, and its outer update uses (x − μ) where this module returns
(x − μ)/γ (multiply the outer learning rate by γ to compare). Its running
average puts α = 0.75 on the old average, as here. Inner momentum: the
Entropy-SGD code (Lua and PyTorch) zeroes its inner momentum buffer at every
outer step, which an ``inner_optimizer`` does by default; the Deep Relaxation
research code keeps one buffer for the whole run, which is
``keep_inner_state=True``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from relaxjax.core import hyperparams, tree_utils
from relaxjax.core import noise as noise_lib
from relaxjax.core.finite import refuse_optax_apply_if_finite
from relaxjax.core.hyperparams import ScalarOrSchedule
from relaxjax.core.keys import Seed, key_from_seed
from relaxjax.cpu.conv_layout import with_canonical_convolutions

__all__ = [
    "DEFAULT_NUM_STEPS",
    "GradFn",
    "RelaxationState",
    "RelaxationStateWithInner",
    "heat_smoothing",
    "hopf_lax",
    "local_entropy",
]


DEFAULT_NUM_STEPS = 20
"""L when ``num_steps`` is not given (the original code's default)."""

HEAT_NUM_STEPS = 100
"""L of ``heat_smoothing`` when ``num_steps`` is not given (the research code's ``HEAT``)."""


class GradFn(Protocol):
    """``grad_fn(params, i) -> gradients`` for inner step ``i`` (an int32 scalar).

    The gradient function the relaxations call in their inner loop: the gradient of the
    loss at ``params`` on mini-batch ``i`` (a traced int32 scalar inside
    ``jax.lax.scan``), a pytree of the structure of ``params``. Any callable of this
    signature is one, e.g. ``lambda p, i: jax.grad(loss)(p, batches[i])``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda p, batch: jnp.mean((p * batch) ** 2)
      >>> batches = jnp.ones((3, 4))
      >>> grad_fn = lambda p, i: jax.grad(loss)(p, batches[i])
      >>> grad_fn(jnp.ones(4), jnp.int32(1)).shape
      (4,)
    """

    def __call__(self, params: optax.Params, i: jax.Array) -> optax.Updates: ...


class RelaxationState(NamedTuple):
    """State of ``local_entropy`` and ``hopf_lax``.

    The field names are the relaxation's own (not ``count``/``key``), so that
    ``optax.tree_utils.tree_get(state, "relaxation_count")`` finds exactly one
    leaf even under ``optax.inject_hyperparams``, whose state has a ``count`` too.

    Attributes:
      relaxation_count: number of outer steps taken; schedules of γ, η′, ε and λ
        are evaluated at it.
      noise_key: raw ``uint32[2]`` PRNG key of the Langevin noise, advanced every
        outer step, so a run is reproducible from its seed.
    """

    relaxation_count: jax.Array
    noise_key: jax.Array


class RelaxationStateWithInner(NamedTuple):
    """State of ``local_entropy`` and ``hopf_lax`` built with ``keep_inner_state=True``.

    The fields of :class:`RelaxationState` plus ``inner_state``, the inner
    optimizer's state (e.g. its momentum) carried from one outer step to the next.
    A separate type, so checkpoints of the default transforms keep their layout.

    Attributes:
      relaxation_count: number of outer steps taken (as in :class:`RelaxationState`).
      noise_key: raw ``uint32[2]`` PRNG key of the Langevin noise.
      inner_state: the ``inner_optimizer``'s state after the last inner step.
    """

    relaxation_count: jax.Array
    noise_key: jax.Array
    inner_state: optax.OptState


class _InnerCarry(NamedTuple):
    y: optax.Params
    average: optax.Params
    optimizer_state: optax.OptState


def _inner_loop_unroll(unroll: int | bool | None, num_steps: int) -> int | bool:
    """The ``unroll`` of the inner ``lax.scan`` (None: the library's default)."""
    if unroll is None:
        return 1
    if isinstance(unroll, bool):
        return unroll
    return hyperparams.check_num_steps("unroll", unroll)


def _check_inner_sgd_is_stable(gamma: ScalarOrSchedule, step_size: ScalarOrSchedule) -> None:
    """Rejects η′ ≥ 2γ, for which the inner SGD step diverges whatever f is.

    The coupling alone maps y − x to (1 − η′/γ)(y − x) each step.
    """
    gamma0 = hyperparams.concrete_value(gamma)
    eta0 = hyperparams.concrete_value(step_size)
    if gamma0 is not None and eta0 is not None and eta0 >= 2 * gamma0:
        raise ValueError(
            f"step_size={eta0:g} must be < 2*gamma={2 * gamma0:g}: with the coupling "
            f"|y - x|^2/(2*gamma) each inner step multiplies y - x by "
            f"1 - step_size/gamma = {1 - eta0 / gamma0:.3g}, so the inner loop diverges. "
            "Note that gamma is the scope (PDE time) = 1/coupling: the original code's "
            "--gamma 0.03 is gamma=1/0.03 here."
        )


def _is_static_zero(hyperparameter: ScalarOrSchedule) -> bool:
    return isinstance(hyperparameter, (int, float)) and hyperparameter == 0


def _raise_unstable_inner_step(unstable: Any, eta: Any, gamma: Any) -> None:
    unstable, eta, gamma = np.asarray(unstable), np.asarray(eta), np.asarray(gamma)
    if not unstable.any():
        return
    eta, gamma = (
        float(np.broadcast_to(eta, unstable.shape)[unstable].max()),
        float(np.broadcast_to(gamma, unstable.shape)[unstable].min()),
    )
    raise ValueError(
        f"step_size={eta:g} must be < 2*gamma={2 * gamma:g} at this outer step (gamma "
        "was lowered by a schedule or through optax.inject_hyperparams' "
        "state.hyperparams): each inner step would multiply y - x by "
        f"{1 - eta / gamma:.3g}, so the inner loop diverges."
    )


def _check_inner_sgd_at_update(eta: jax.Array, gamma: jax.Array) -> None:
    """At update time: stops the computation with a clear error when η′ ≥ 2γ.

    Values known at construction are checked there; this covers γ or η′ changed
    later (schedules, ``inject_hyperparams``). The host callback sits in a
    ``lax.cond`` branch, so an unbatched healthy step pays one scalar compare; under
    ``vmap`` (replicas, seeds) the cond becomes a select and the callback runs every
    step, re-checking the condition on the host.
    """
    if (
        hyperparams.concrete_value(eta) is not None
        and hyperparams.concrete_value(gamma) is not None
    ):
        _raise_unstable_inner_step(np.asarray(eta) >= 2 * np.asarray(gamma), eta, gamma)
        return
    unstable = eta >= 2 * gamma
    jax.lax.cond(
        jnp.any(unstable),
        lambda: jax.debug.callback(_raise_unstable_inner_step, unstable, eta, gamma),
        lambda: None,
    )


def _compute_dtypes(params: optax.Params, compute_dtype: Any) -> Any:
    """The dtype of every leaf's inner iterate: ``compute_dtype``, or at least float32."""

    def leaf_dtype(leaf):
        dtype = jnp.result_type(leaf)
        if compute_dtype is not None:
            return jnp.dtype(compute_dtype)
        if jnp.issubdtype(dtype, jnp.floating):
            return jnp.promote_types(dtype, jnp.float32)
        return dtype

    return jax.tree.map(leaf_dtype, params)


def _cast(tree: Any, dtypes: Any) -> Any:
    return jax.tree.map(lambda leaf, dtype: jnp.asarray(leaf).astype(dtype), tree, dtypes)


OUTPUTS = ("gradient", "displacement")
"""What a relaxation returns: the relaxed gradient (x − μ)/γ or the displacement x − μ."""

AVERAGES = ("exponential", "uniform")
"""How μ averages the inner iterates: μ ← α μ + (1 − α) y, or the mean of y₀ … y_L."""


def _relaxation(
    *,
    gamma: ScalarOrSchedule,
    num_steps: int | None,
    step_size: ScalarOrSchedule,
    noise: ScalarOrSchedule,
    alpha: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule,
    inner_optimizer: optax.GradientTransformation | None,
    seed: Seed,
    unroll: int | bool | None,
    canonical_convolutions: bool | None,
    noise_generator: str,
    reuse_gradient: bool,
    keep_inner_state: bool,
    compute_dtype: Any,
    output: str,
    check_at_update: bool = True,
    average: str = "exponential",
    default_num_steps: int = DEFAULT_NUM_STEPS,
) -> optax.GradientTransformationExtraArgs:
    """The inner loop shared by ``local_entropy`` (ε ≥ 0), ``hopf_lax`` (ε = 0) and
    ``heat_smoothing`` (``average="uniform"``)."""
    num_steps = hyperparams.check_num_steps(
        "num_steps", default_num_steps if num_steps is None else num_steps
    )
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}.")
    unroll = _inner_loop_unroll(unroll, num_steps)
    if not isinstance(check_at_update, bool):
        raise TypeError(f"check_at_update must be True or False, got {check_at_update!r}.")
    hyperparams.check_positive("gamma", gamma)
    hyperparams.check_positive("step_size", step_size)
    hyperparams.check_nonnegative("noise", noise)
    hyperparams.check_unit_interval("alpha", alpha)
    hyperparams.check_nonnegative("weight_decay", weight_decay)
    if noise_generator not in noise_lib.NOISE_GENERATORS:
        raise ValueError(
            f"noise_generator must be one of {noise_lib.NOISE_GENERATORS}, got {noise_generator!r}."
        )
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
    if compute_dtype is not None and not jnp.issubdtype(jnp.dtype(compute_dtype), jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype, got {compute_dtype!r}.")
    if keep_inner_state and inner_optimizer is None:
        raise ValueError(
            "keep_inner_state=True needs an inner_optimizer with a state to keep (e.g. "
            "optax.sgd(0.1, momentum=0.9, nesterov=True)); the default inner SGD has none."
        )
    if inner_optimizer is None:
        _check_inner_sgd_is_stable(gamma, step_size)
    elif not hasattr(inner_optimizer, "update"):
        raise TypeError(
            f"inner_optimizer must be an optax.GradientTransformation, got {inner_optimizer!r}."
        )
    # Terms that are statically zero (Hopf-Lax noise, no weight decay) are skipped.
    noiseless = _is_static_zero(noise)
    no_weight_decay = _is_static_zero(weight_decay)

    def init_fn(params: optax.Params) -> RelaxationState | RelaxationStateWithInner:
        count, key = jnp.zeros([], jnp.int32), key_from_seed(seed)
        if keep_inner_state:
            inner_params = _cast(params, _compute_dtypes(params, compute_dtype))
            return RelaxationStateWithInner(count, key, inner_optimizer.init(inner_params))
        return RelaxationState(count, key)

    def update_fn(
        updates: optax.Updates,
        state: RelaxationState | RelaxationStateWithInner,
        params: optax.Params | None = None,
        *,
        grad_fn: GradFn | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, RelaxationState | RelaxationStateWithInner]:
        del extra_args
        refuse_optax_apply_if_finite()
        if params is None:
            raise ValueError(
                "The relaxation needs the current parameters: call "
                "tx.update(grads, state, params, grad_fn=grad_fn)."
            )
        if grad_fn is None and (num_steps > 1 or not reuse_gradient):
            first_index = 1 if reuse_gradient else 0
            raise ValueError(
                f"grad_fn is required: the inner loop evaluates grad_fn(params, i) for "
                f"i = {first_index} … {num_steps - 1} (num_steps={num_steps}, "
                f"reuse_gradient={reuse_gradient}); pass "
                "tx.update(grads, state, params, grad_fn=lambda p, i: jax.grad(loss)(p, "
                "batches[i]))."
            )
        tree_utils.check_matching_tree("The incoming gradient", updates, params)

        count = state.relaxation_count
        gamma_t = hyperparams.value_at(gamma, count)
        eta = hyperparams.value_at(step_size, count)
        if inner_optimizer is None and check_at_update:
            _check_inner_sgd_at_update(eta, gamma_t)
        alpha_t = hyperparams.value_at(alpha, count)
        noise_scale = (
            None if noiseless else hyperparams.value_at(noise, count) * jnp.sqrt(2.0 * eta)
        )
        decay = None if no_weight_decay else hyperparams.value_at(weight_decay, count)
        optimizer = inner_optimizer if inner_optimizer is not None else optax.sgd(eta)
        key, noise_key = jax.random.split(state.noise_key)
        # The inner iterate and its average run in float32 (or compute_dtype) even for
        # bfloat16 parameters: there a Langevin step of ε√(2η′) ≈ 1e-5 would round away.
        dtypes = _compute_dtypes(params, compute_dtype)
        x = _cast(params, dtypes)
        # Every inner step's noise keys, drawn before the loop (no threefry inside it).
        step_noise = (
            None if noiseless else noise_lib.noise_source(noise_key, x, num_steps, noise_generator)
        )

        def step(carry: _InnerCarry, grads: optax.Updates, i: jax.Array) -> _InnerCarry:
            def total_gradient(g, y, x_):
                total = g + (y - x_) / gamma_t.astype(y.dtype)
                if decay is not None:
                    total = total + decay.astype(y.dtype) * y
                return total

            inner_grads = jax.tree.map(total_gradient, grads, carry.y, x)
            moves, optimizer_state = optimizer.update(inner_grads, carry.optimizer_state, carry.y)
            y = optax.apply_updates(carry.y, moves)
            if noise_scale is not None:
                xi = noise_lib.gaussian_at_step(step_noise, i, y, noise_generator)
                y = jax.tree.map(lambda y_, n: y_ + noise_scale.astype(y_.dtype) * n, y, xi)
            # Weight of the old average: α, or (i + 1)/(i + 2) for the mean of y₀ … y_{i+1}.
            old = alpha_t if average == "exponential" else (i + 1) / (i + 2)
            average_ = jax.tree.map(
                lambda m, y_: (old * m + (1 - old) * y_).astype(m.dtype), carry.average, y
            )
            return _InnerCarry(y, average_, optimizer_state)

        start = _InnerCarry(x, x, state.inner_state if keep_inner_state else optimizer.init(x))
        if reuse_gradient:  # inner step 0 takes the incoming gradient, the loop i = 1 … L − 1
            start = step(start, _cast(updates, dtypes), jnp.zeros([], jnp.int32))

        evaluate = grad_fn
        if canonical_convolutions or (
            canonical_convolutions is None and jax.default_backend() == "cpu"
        ):
            evaluate = with_canonical_convolutions(grad_fn)

        def body(carry: _InnerCarry, i: jax.Array) -> tuple[_InnerCarry, None]:
            # grad_fn sees the parameters' own dtypes; its gradient joins the iterate's.
            grads = evaluate(tree_utils.cast_like(carry.y, params), i)
            tree_utils.check_matching_tree("The output of grad_fn", grads, params)
            return step(carry, _cast(grads, dtypes), i), None

        first_index = 1 if reuse_gradient else 0
        if num_steps > first_index:
            last, _ = jax.lax.scan(body, start, jnp.arange(first_index, num_steps), unroll=unroll)
        else:
            last = start
        if output == "gradient":
            relaxed = jax.tree.map(
                lambda x_, m: (x_ - m) / gamma_t.astype(x_.dtype), x, last.average
            )
        else:
            relaxed = jax.tree.map(lambda x_, m: x_ - m, x, last.average)
        relaxed = tree_utils.cast_like(relaxed, params)
        if keep_inner_state:
            state = RelaxationStateWithInner(optax.safe_increment(count), key, last.optimizer_state)
        else:
            state = RelaxationState(optax.safe_increment(count), key)
        return relaxed, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def local_entropy(
    gamma: ScalarOrSchedule,
    *,
    num_steps: int | None = None,
    step_size: ScalarOrSchedule = 0.1,
    noise: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    weight_decay: ScalarOrSchedule = 0.0,
    inner_optimizer: optax.GradientTransformation | None = None,
    seed: Seed = 0,
    unroll: int | bool | None = None,
    canonical_convolutions: bool | None = None,
    noise_generator: str = "hash",
    reuse_gradient: bool = True,
    keep_inner_state: bool = False,
    compute_dtype: Any = None,
    output: str = "gradient",
    check_at_update: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Replaces the gradient by the gradient of the local entropy (Entropy-SGD).

    Returns ∇f_γ(x) = (x − ⟨y⟩)/γ, the gradient of the viscous Hamilton-Jacobi
    relaxation f_γ = −β⁻¹ log(G_γ ∗ e^{−βf}) of *Deep Relaxation* (Chaudhari et
    al. 2018, eq. for local entropy; Entropy-SGD, ICLR 2017, Alg. 1), where ⟨y⟩
    is estimated by L steps of stochastic gradient Langevin dynamics on
    f(y) + ‖y − x‖²/(2γ) with an exponential running average of the iterates::

        y ← y − η′ (∇f_ℓ(y) + (y − x)/γ + λ y) + ε √(2η′) ξ,   ξ ~ N(0, I)
        μ ← α μ + (1 − α) y                                      (μ₀ = y₀ = x)
        update = (x − μ)/γ

    The Langevin temperature is β⁻¹ = ε², so the inner chain samples
    ρ(y) ∝ exp(−β f(y) − β|x − y|²/(2γ)).

    Call ``update(grads, state, params, grad_fn=grad_fn)`` where ``grads`` is
    ∇f at ``params`` on mini-batch 0 and ``grad_fn(y, i)`` returns ∇f at ``y`` on
    mini-batch ``i`` for ``i = 1 … L − 1`` (the convention of the opaque mode of
    ``optax.contrib.sam``): an outer step costs L gradient evaluations. Chain
    with an outer optimizer, e.g.
    ``optax.chain(local_entropy(...), optax.sgd(0.1, momentum=0.9, nesterov=True))``.

    Args:
      gamma: scope γ > 0, the PDE time of *Deep Relaxation*; the coupling of the
        inner loss is ‖y − x‖²/(2γ), i.e. the coupling ρ = 1/γ of the Entropy-SGD
        paper and its code (``--gamma`` there is ρ). A float or an Optax schedule
        of the outer step (see ``relaxjax.scoping``).
      num_steps: L ≥ 1, inner steps (= gradient evaluations) per outer step; None
        (default): ``DEFAULT_NUM_STEPS`` = 20. A Python int: it fixes the loop's
        length at trace time (under ``optax.inject_hyperparams``, leave it out or
        list it in ``static_args``).
      step_size: inner step size η′ > 0 (float or schedule). With a custom
        ``inner_optimizer`` it only sets the noise scale ε √(2η′).
      noise: ε ≥ 0, the Langevin noise scale (temperature ε²; β = 1/ε²). The
        original code's default is 1e-4.
      alpha: α ∈ [0, 1), weight of the old running average. α = 0 returns the
        last inner iterate.
      weight_decay: λ ≥ 0, L2 penalty (λ/2)‖y‖² added to f inside the inner loop,
        so the output is the relaxed gradient of f + (λ/2)‖·‖².
      inner_optimizer: an Optax transform replacing the inner SGD step (e.g.
        ``optax.adam(1e-3)`` gives Entropy-Adam); Langevin noise is still added
        after its step. Its state is re-initialised at every outer step (as the
        Entropy-SGD code zeroes its inner momentum) unless ``keep_inner_state``.
      seed: an int or a PRNG key for the Langevin noise; it lives in the state.
      unroll: forwarded to ``jax.lax.scan`` for the inner loop; None (default)
        lets relaxjax choose. Must be a Python int or bool (with
        ``optax.inject_hyperparams``, list it in ``static_args``).
      canonical_convolutions: evaluate ``grad_fn`` with its convolutions in
        XLA:CPU's canonical layout (see ``relaxjax.cpu.conv_layout``); otherwise
        XLA:CPU gives convolutions inside loop bodies a layout it runs slowly
        (``docs/cpu.md`` §1). None (default): on the CPU backend only.
      noise_generator: ``"hash"`` (default; a keyed counter hash, cheaper than
        threefry on CPU, same 24-bit resolution; measurements in
        ``benchmarks/RESULTS.md``) or ``"threefry"`` (``jax.random.normal``). See
        ``relaxjax.core.noise``.
      reuse_gradient: True (default): inner step 0 uses the incoming gradient
        and ``grad_fn`` is called for i = 1 … L − 1. False: ``grad_fn`` is
        called for every i = 0 … L − 1 inside the loop and the incoming
        gradient is only checked against ``params``. The compiled step then
        holds one copy of the gradient computation (in the loop body) instead
        of two, so compile time no longer doubles from L = 1 to L = 2 (see
        ``benchmarks/results/inner_loop.md``); under ``jit`` XLA removes the
        caller's unused gradient as dead code, so an outer step still costs L
        gradient evaluations, unless the caller uses that gradient otherwise.
        ``grad_fn(params, 0)`` must then be the gradient on mini-batch 0.
      keep_inner_state: what happens to ``inner_optimizer``'s state (e.g. its
        momentum buffer) between outer steps. False (default): it starts afresh at
        every outer step, as in the authors' Entropy-SGD code (Lua
        ``entropyoptim.lua`` and PyTorch ``python/optim.py`` zero their inner
        momentum at every outer step). True: it is carried from one outer step into
        the next, one buffer for the whole run, as in their Deep Relaxation research
        code (``ESGD`` in ``code/optim.py``). Either code's inner Nesterov momentum
        is ``inner_optimizer=optax.sgd(0.1, momentum=0.9, nesterov=True)``; it acts
        here on the whole inner gradient (loss, coupling and weight decay), as in
        the research code (which passes the Langevin noise through it too), while
        the Entropy-SGD code applies it to the loss gradient only (the PyTorch code:
        and the weight decay), before adding the coupling and the noise.
      compute_dtype: dtype of the inner iterate y and its average μ. None
        (default): each parameter's dtype promoted to at least float32, so that
        with bfloat16 parameters the Langevin step ε √(2η′) is not rounded away;
        ``grad_fn`` is still called with parameters of their own dtype, and the
        update is returned in it.
      output: ``"gradient"`` (default): the relaxed gradient (x − μ)/γ, for
        chaining before any Optax optimizer (scale-free ones such as Adam need no
        retuning); ``"displacement"``: x − μ, the direction the original code's
        outer rate multiplies (the aliases use it, ``docs/conventions.md`` §3).
      check_at_update: True (default): with the default inner SGD, η′ ≥ 2γ reached at
        run time (a γ or η′ schedule, or a value changed through
        ``inject_hyperparams``) stops that step with a ``ValueError``, raised by a
        host callback inside a ``lax.cond``. False: no update-time check; the values
        known at construction are checked either way. JAX's persistent compilation
        cache never stores a program that calls back into Python, so ``relaxjax
        train`` checks its γ schedule over the whole run on the host when it starts
        and passes False, and its step is cached (``docs/cli.md`` §1.5).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose update takes
      ``grad_fn`` as a keyword argument; its state is a :class:`RelaxationState`
      (:class:`RelaxationStateWithInner` with ``keep_inner_state``).

    Raises:
      ValueError: for γ ≤ 0, L < 1, η′ ≤ 0, ε < 0, α ∉ [0, 1), λ < 0,
        ``keep_inner_state`` without an ``inner_optimizer``, or (with
        the default inner SGD) η′ ≥ 2γ, which diverges whatever f is; at
        ``update`` time for a missing ``grad_fn`` (when L > 1), missing
        ``params``, gradients whose tree does not match the parameters, or a
        call from inside ``optax.apply_if_finite`` (use
        :func:`relaxjax.apply_if_finite`). η′ ≥ 2γ reached later (a schedule, or
        γ lowered through ``inject_hyperparams``) stops the computation at that
        step with the same ``ValueError`` (under ``jit`` wrapped in JAX's runtime
        error).

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the local entropy and the viscous
      Hamilton-Jacobi equation; Chaudhari et al., *Entropy-SGD* (ICLR 2017), Alg. 1.
      ``docs/deep-relaxation.md`` §1.1 and §2.1, ``docs/algorithms.md`` §1,
      ``docs/conventions.md`` §1-§3 (γ against the code's coupling, the noise, the
      learning rate).

    Example:
      For the quadratic f(y) = ½ y², the Gibbs measure is Gaussian with mean
      x/(1 + γ) at every temperature, so the relaxed gradient is x/(1 + γ):

      >>> import jax, jax.numpy as jnp
      >>> import relaxjax
      >>> loss = lambda y: 0.5 * jnp.sum(y**2)
      >>> grad_fn = lambda y, i: jax.grad(loss)(y)  # the same "mini-batch" every step
      >>> tx = relaxjax.local_entropy(1.0, num_steps=100, step_size=0.1, noise=1e-4)
      >>> @jax.jit
      ... def relax(x, state):
      ...     return tx.update(jax.grad(loss)(x), state, x, grad_fn=grad_fn)
      >>> x = jnp.array([1.0, -2.0])
      >>> updates, state = relax(x, tx.init(x))
      >>> bool(jnp.allclose(updates, x / 2, atol=1e-3)), int(state.relaxation_count)
      (True, 1)
    """
    return _relaxation(
        gamma=gamma,
        num_steps=num_steps,
        step_size=step_size,
        noise=noise,
        alpha=alpha,
        weight_decay=weight_decay,
        inner_optimizer=inner_optimizer,
        seed=seed,
        unroll=unroll,
        canonical_convolutions=canonical_convolutions,
        noise_generator=noise_generator,
        reuse_gradient=reuse_gradient,
        keep_inner_state=keep_inner_state,
        compute_dtype=compute_dtype,
        output=output,
        check_at_update=check_at_update,
    )


def hopf_lax(
    gamma: ScalarOrSchedule,
    *,
    num_steps: int | None = None,
    step_size: ScalarOrSchedule = 0.1,
    alpha: ScalarOrSchedule = 0.75,
    weight_decay: ScalarOrSchedule = 0.0,
    inner_optimizer: optax.GradientTransformation | None = None,
    unroll: int | bool | None = None,
    canonical_convolutions: bool | None = None,
    reuse_gradient: bool = True,
    keep_inner_state: bool = False,
    compute_dtype: Any = None,
    output: str = "gradient",
    check_at_update: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Replaces the gradient by the gradient of the Hopf-Lax (Moreau) envelope.

    The non-viscous Hamilton-Jacobi relaxation of *Deep Relaxation* (Chaudhari
    et al. 2018): u(x, γ) = min_y f(y) + ‖x − y‖²/(2γ), whose gradient is
    (x − y*)/γ with y* = prox_{γf}(x). y* is estimated by L noise-free inner
    steps with a running average::

        y ← y − η′ (∇f_ℓ(y) + (y − x)/γ + λ y)
        μ ← α μ + (1 − α) y                    (μ₀ = y₀ = x)
        update = (x − μ)/γ

    With α = 0 the output uses the last iterate y_L, the proximal-point
    estimate itself. Then, with η′ = θγ, the loop is the fixed-point iteration
    p ← (1 − θ) p + θ ∇f_ℓ(x − γ p) (p₀ = 0) of the envelope's gradient, which
    solves p = ∇f(x − γp); p_ℓ = (x − y_ℓ)/γ. The Deep Relaxation code's
    fixed-point optimizer uses θ = ¼. Gradient descent on the proximal problem
    converges when η′ < 2/(Lip(∇f) + 1/γ); η′ < γ is necessary. The calling
    convention is that of ``local_entropy`` (``grad_fn(y, i)`` for i = 1 … L − 1).

    Args:
      gamma: the PDE time (scope) γ > 0, float or schedule.
      num_steps: L ≥ 1 inner steps per outer step (None: 20).
      step_size: inner step η′ > 0, float or schedule.
      alpha: α ∈ [0, 1), weight of the old running average.
      weight_decay: λ ≥ 0, L2 penalty inside the inner loop.
      inner_optimizer: an Optax transform replacing the inner gradient step.
      unroll: forwarded to ``jax.lax.scan``.
      canonical_convolutions: see ``local_entropy``.
      reuse_gradient: see ``local_entropy``.
      keep_inner_state: see ``local_entropy``.
      compute_dtype: see ``local_entropy``.
      output: see ``local_entropy``.
      check_at_update: see ``local_entropy``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose update takes ``grad_fn`` as a
      keyword argument (as :func:`local_entropy`'s); its state is a
      :class:`RelaxationState` (:class:`RelaxationStateWithInner` with
      ``keep_inner_state``).

    Raises:
      ValueError: as :func:`local_entropy`.

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the non-viscous Hamilton-Jacobi
      equation and the Hopf-Lax formula. ``docs/deep-relaxation.md`` §1.2 and §2.1,
      ``docs/algorithms.md`` §2.

    Example:
      The Moreau envelope of f(y) = ½ y² at time γ is ½ x²/(1 + γ), whose gradient
      is x/(1 + γ); with α = 0 the update is the last inner iterate's estimate:

      >>> import jax, jax.numpy as jnp
      >>> import relaxjax
      >>> loss = lambda y: 0.5 * jnp.sum(y**2)
      >>> grad_fn = lambda y, i: jax.grad(loss)(y)
      >>> tx = relaxjax.hopf_lax(1.0, num_steps=50, step_size=0.5, alpha=0.0)
      >>> @jax.jit
      ... def relax(x, state):
      ...     return tx.update(jax.grad(loss)(x), state, x, grad_fn=grad_fn)
      >>> x = jnp.array([1.0, -2.0])
      >>> updates, _ = relax(x, tx.init(x))
      >>> print(jnp.round(updates, 4))
      [ 0.5 -1. ]
    """
    return _relaxation(
        gamma=gamma,
        num_steps=num_steps,
        step_size=step_size,
        noise=0.0,
        alpha=alpha,
        weight_decay=weight_decay,
        inner_optimizer=inner_optimizer,
        seed=0,
        unroll=unroll,
        canonical_convolutions=canonical_convolutions,
        noise_generator="hash",
        reuse_gradient=reuse_gradient,
        keep_inner_state=keep_inner_state,
        compute_dtype=compute_dtype,
        output=output,
        check_at_update=check_at_update,
    )


def heat_smoothing(
    gamma: ScalarOrSchedule,
    *,
    num_steps: int | None = None,
    step_size: ScalarOrSchedule = 0.1,
    noise: ScalarOrSchedule = 1e-4,
    weight_decay: ScalarOrSchedule = 0.0,
    inner_optimizer: optax.GradientTransformation | None = None,
    seed: Seed = 0,
    unroll: int | bool | None = None,
    canonical_convolutions: bool | None = None,
    noise_generator: str = "hash",
    reuse_gradient: bool = True,
    keep_inner_state: bool = False,
    compute_dtype: Any = None,
    output: str = "gradient",
    check_at_update: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Replaces the gradient by a chain average of gradients: the heat-equation relaxation.

    The HEAT optimizer of the *Deep Relaxation* research code (Chaudhari et al.
    2018, the table's "Heat" column): the inner loop of :func:`local_entropy`
    with a strong coupling, and the *uniform* average of the inner iterates
    (the start and the L iterates, divided by L + 1) instead of the exponential
    one::

        y ← y − η′ (∇f_ℓ(y) + (y − x)/γ + λ y) + ε √(2η′) ξ,   ξ ~ N(0, I)
        μ = (y₀ + y₁ + … + y_L)/(L + 1)                           (y₀ = x)
        update = (x − μ)/γ

    Summing the L steps gives, with the default inner SGD, exactly::

        (x − μ)/γ = [Σ_ℓ (∇f_ℓ(y_ℓ) + λ y_ℓ) − ε √(2/η′) Σ_ℓ ξ_ℓ + (1/η′ − 1/γ)(y_L − x)] / (L + 1)

    (ℓ = 0 … L − 1): the average of the gradients along the chain, times
    L/(L + 1), plus zero-mean noise; at η′ = γ (the research code's 0.1 and
    coupling 10) the last term vanishes. While the coupling dominates the loss's
    curvature (γ‖∇²f‖ ≪ 1) the chain's points are Gaussian around x with variance
    ``t = 2γε²/(2 − η′/γ)`` per coordinate (γε² = γ/β as η′/γ → 0; 2γε² at η′ = γ),
    so the output estimates ∇(G_t ∗ f)(x) = E[∇f(x + √t z)], the gradient of the
    heat-equation solution u_t = ½Δu, u(·, 0) = f, at time t
    (``relaxjax.pde.heat_gradient_at``), up to O(γ ‖∇²f‖ ‖∇f‖): the chain sits
    around x − γ∇f(x), the Gibbs tilt that makes a long chain's average tend to
    the local-entropy gradient E_ρ[∇f] = ∇f_γ (the heat solution at time γ/β is
    the β → 0 limit of the local entropy at fixed γ/β). At equal L the uniform
    average is far less noisy than the exponential one (variance ∝ 1/L against
    ≈ (1 − α)/(1 + α)), which is what makes the high-temperature estimate usable.

    With the research code's noise ε = 1e-4 the Gaussian smoothing is negligible
    (t = 2e-9 at γ = η′ = 0.1); there the chain's spread comes from the
    mini-batch noise of the L gradients, and the step is close to SGD on the
    average of L mini-batch gradients. Call convention and cost as
    :func:`local_entropy` (L gradient evaluations per outer step).

    Args:
      gamma: scope γ > 0 (float or schedule); the research code's HEAT uses a
        coupling of 10, i.e. ``gamma=0.1``.
      num_steps: L ≥ 1 inner steps per outer step; None (default):
        ``HEAT_NUM_STEPS`` = 100, the research code's.
      step_size: inner step η′ > 0 (float or schedule); 0.1 in the research code.
        With the default inner SGD, η′ < 2γ.
      noise: ε ≥ 0, the Langevin noise scale (temperature ε²); the heat time is
        t = 2γε²/(2 − η′/γ).
      weight_decay: λ ≥ 0, L2 penalty inside the inner loop.
      inner_optimizer: an Optax transform replacing the inner SGD step, as in
        :func:`local_entropy`.
      seed: an int or a PRNG key for the Langevin noise.
      unroll: forwarded to ``jax.lax.scan``.
      canonical_convolutions: see :func:`local_entropy`.
      noise_generator: see :func:`local_entropy`.
      reuse_gradient: see :func:`local_entropy`.
      keep_inner_state: see :func:`local_entropy` (the research code keeps one
        inner momentum buffer for the whole run).
      compute_dtype: see :func:`local_entropy`.
      output: ``"gradient"`` (default): (x − μ)/γ; ``"displacement"``: x − μ.
      check_at_update: see ``local_entropy``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose update takes ``grad_fn``
      (as :func:`local_entropy`'s); its state is a :class:`RelaxationState`
      (:class:`RelaxationStateWithInner` with ``keep_inner_state``).

    Raises:
      ValueError: as :func:`local_entropy`.

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the heat equation and the Heat
      column of its table; the research code's ``HEAT`` (``code/optim.py``).
      ``docs/deep-relaxation.md`` §1.3, ``docs/algorithms.md`` §1.1.

    Example:
      f(y) = cos(2y)/4 has f′(x) = −sin(2x)/2, and its heat solution the gradient
      e^(−2t) f′(x). Four thousand independent chains at x = 0.6 (one coordinate
      each) with η′ = γ = 0.02 and ε = 5, i.e. t = 2γε² = 1:

      >>> import math
      >>> import jax, jax.numpy as jnp
      >>> import relaxjax
      >>> loss = lambda y: jnp.sum(jnp.cos(2 * y)) / 4
      >>> grad_fn = lambda y, i: jax.grad(loss)(y)
      >>> tx = relaxjax.heat_smoothing(0.02, num_steps=500, step_size=0.02, noise=5.0)
      >>> @jax.jit
      ... def relax(x, state):
      ...     return tx.update(jax.grad(loss)(x), state, x, grad_fn=grad_fn)[0]
      >>> x = jnp.full((4000,), 0.6)
      >>> estimate = float(jnp.mean(relax(x, tx.init(x))))
      >>> slope = -float(jnp.sin(1.2)) / 2
      >>> heat = math.exp(-2.0) * slope  # the heat solution's gradient at t = 1
      >>> abs(estimate - heat) < 0.1, abs(estimate - slope) > 0.3
      (True, True)
    """
    return _relaxation(
        gamma=gamma,
        num_steps=num_steps,
        step_size=step_size,
        noise=noise,
        alpha=0.0,  # unused: the average is uniform
        weight_decay=weight_decay,
        inner_optimizer=inner_optimizer,
        seed=seed,
        unroll=unroll,
        canonical_convolutions=canonical_convolutions,
        noise_generator=noise_generator,
        reuse_gradient=reuse_gradient,
        keep_inner_state=keep_inner_state,
        compute_dtype=compute_dtype,
        output=output,
        check_at_update=check_at_update,
        average="uniform",
        default_num_steps=HEAT_NUM_STEPS,
    )
