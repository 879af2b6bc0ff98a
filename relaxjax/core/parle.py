"""Parle: replicas of Entropy-SGD coupled elastically to a reference variable.

Chaudhari, Baldassi, Zecchina, Soatto, Talwalkar, Oberman, *Parle:
parallelizing stochastic gradient descent* (arXiv 1707.00424, 2017); see
``docs/deep-relaxation.md`` §5. n replicas x¹ … xⁿ each descend the local
entropy of the loss (the Entropy-SGD inner loop on their *own* mini-batches)
plus an elastic term ρ/2 |xᵃ − x̄|² that ties them to a reference x̄; x̄ moves
toward the replicas' average. One outer step k::

    for every replica a, in parallel (L mini-batches of its own):
        dᵃ = (xᵃ − μᵃ)/γ_k + ρ_k (xᵃ − x̄)      μᵃ: L SGLD steps from xᵃ (local_entropy)
        xᵃ ← xᵃ − η · NesterovMomentum(dᵃ)
    x̄ ← x̄ + β (mean_a xᵃ − x̄)                  β = 1: x̄ is the replicas' average

The first term is ``relaxjax.local_entropy`` (vmapped over the replicas, not
re-implemented); the second is ``elastic_coupling``. Both couplings are
scoped: the scope γ_k shrinks and the elastic coupling ρ_k grows (pass
schedules, e.g. ``relaxjax.scoping(γ₀, r, final_gamma=γ_min)`` and
``coupling_schedule(ρ₀, r, maximum=ρ_max)``), so the replicas collapse onto one
solution by the end of training. The replicas communicate once per outer
step, every L gradient evaluations: the mean over replicas, one all-reduce of
the parameters, is the only collective (``benchmarks/parle_benchmark.py``
reads it off the compiled HLO).

Replicas are stacked on a leading axis of length n. With a ``mesh`` (from
``relaxjax.core.mesh.make_mesh(num_devices, num_replicas=n)``) that axis is
sharded over the mesh axis ``'replica'`` with ``NamedSharding``: each
device row holds and updates its own replicas, and a ``'data'`` axis of the
mesh may split each replica's mini-batches further. Without a mesh the
replicas are simply ``vmap``-ed on whatever device holds them. The code is
the same on 1, 4 or 4096 devices.

Relation to the authors' code (``parle_mpi.py``): its ``gamma`` is the
coupling 1/γ and grows by (1 + 0.5/B) per outer step up to 1 (γ ≥ 1 here);
its ``rho`` also grows and is capped at 10; its outer direction is
(xᵃ − μᵃ) + ρ (xᵃ − x̄) at rate η, i.e. η γ (xᵃ − μᵃ)/γ + η ρ (xᵃ − x̄): pass
``learning_rate = η γ_k`` and ``rho = ρ_code / γ_k`` here to reproduce it
(``relaxjax train --optimizer parle`` does). It uses no Langevin noise
(``noise=0``, the default here), and x̄ is the replicas' average (β = 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from relaxjax.core import hyperparams
from relaxjax.core.alias import outer_sgd
from relaxjax.core.keys import Seed, key_from_seed
from relaxjax.core.mesh import DATA_AXIS, REPLICA_AXIS, constrain, place
from relaxjax.core.relaxation import local_entropy

__all__ = [
    "ElasticState",
    "Parle",
    "ParleState",
    "coupling_schedule",
    "elastic_coupling",
    "parle",
    "parle_step",
    "replica_map",
    "replica_key",
]

ReplicaGradFn = Callable[[optax.Params, jax.Array, Any], optax.Updates]
"""``grad_fn(y, i, data)``: ∇f at y on inner mini-batch i of the replica whose data is ``data``."""


class ParleState(NamedTuple):
    """State of ``parle``; the reference x̄ is the parameters the transform updates.

    Attributes:
      replicas: the replicas' parameters xᵃ, stacked on a leading axis of
        length ``num_replicas`` (sharded over the mesh axis ``'replica'``).
      replica_states: each replica's optimizer state, stacked the same way:
        ``(RelaxationState, ElasticState, outer SGD state)``; the Langevin key
        of replica a is ``replica_key(seed, a)``.
    """

    replicas: optax.Params
    replica_states: optax.OptState


class ElasticState(NamedTuple):
    """State of ``elastic_coupling``: the outer-step count at which the schedule ρ is evaluated.

    Attributes:
      elastic_count: number of updates taken (int32 scalar); named apart from
        Optax's ``count`` fields so ``optax.tree_utils.tree_get`` finds it alone.
    """

    elastic_count: jax.Array


class Parle(optax.GradientTransformationExtraArgs):
    """The Parle optimizer: an Optax ``GradientTransformationExtraArgs`` plus its layout.

    ``init(params) -> ParleState``: every replica starts at ``params`` (= x̄₀).

    ``update(grads, state, params, *, grad_fn, replica_data=None) -> (updates,
    state)``: ``params`` is the reference x̄; ``grads`` holds ∇f at each
    replica on its mini-batch 0, stacked; ``grad_fn(y, i, data)`` is ∇f at y
    on inner mini-batch i (1 … L − 1) of the replica whose slice of
    ``replica_data`` (any pytree with leading axis n; default: the replica
    index) is ``data``. The replicas advance inside the returned state and
    ``updates`` moves x̄ toward their average (``optax.apply_updates``). Being an
    Optax transform with extra arguments, it passes ``grad_fn`` through Optax's
    wrappers (``optax.inject_hyperparams``, ``relaxjax.apply_if_finite``).

    Attributes:
      init: ``init(params) -> ParleState``.
      update: ``update(grads, state, params, *, grad_fn, replica_data=None)``.
      num_replicas: n, the length of the replicas' leading axis (None in the copy
        ``optax.inject_hyperparams`` rebuilds inside a jitted update).
      mesh: the mesh the replicas are sharded over, or None (vmap).
    """

    num_replicas: int | None
    mesh: Mesh | None

    def __new__(
        cls,
        init: Callable[[optax.Params], ParleState],
        update: Callable[..., tuple[optax.Updates, ParleState]],
        num_replicas: int | None,
        mesh: Mesh | None,
    ) -> Parle:
        self = super().__new__(cls, init, update)
        self.num_replicas, self.mesh = num_replicas, mesh
        return self


def coupling_schedule(
    initial: float, rate: float, *, maximum: float | None = None
) -> optax.Schedule:
    """ρ_t = min(ρ₀ (1 + r)^t, ρ_max): the elastic coupling grows geometrically, capped.

    The Parle paper's scoping of ρ (its code: r = 0.5/B per outer step for B
    mini-batches per epoch, ρ_max = 10).

    Args:
      initial: ρ₀ ≥ 0, the coupling at step 0.
      rate: r ≥ 0, the growth per outer step.
      maximum: optional cap ρ_max.

    Returns:
      An Optax schedule of the outer step count, to be passed as ``rho`` to
      :func:`parle` or :func:`elastic_coupling`.

    References:
      Chaudhari et al., *Parle* (2017), scoping of the coupling.
      ``docs/deep-relaxation.md`` §5, ``docs/parle.md`` §1.

    Example:
      >>> import relaxjax
      >>> rho = relaxjax.coupling_schedule(1.0, 1.0, maximum=10.0)
      >>> [float(rho(t)) for t in range(5)]
      [1.0, 2.0, 4.0, 8.0, 10.0]
    """
    hyperparams.check_nonnegative("initial", initial)
    hyperparams.check_nonnegative("rate", rate)

    def schedule(count: jax.Array) -> jax.Array:
        rho = initial * jnp.power(1.0 + rate, jnp.asarray(count, jnp.float32))
        return rho if maximum is None else jnp.minimum(rho, maximum)

    return schedule


def elastic_coupling(rho: hyperparams.ScalarOrSchedule) -> optax.GradientTransformationExtraArgs:
    """Adds ρ (x − x̄), the gradient of the elastic term ρ/2 ‖x − x̄‖² of a Parle replica.

    ``update(updates, state, params, reference=x̄)``. A static ρ = 0 adds
    nothing at all, so Parle with ρ = 0 performs exactly Entropy-SGD's steps.

    Args:
      rho: ρ ≥ 0, the coupling, a float or a schedule of the update count
        (:func:`coupling_schedule`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose update takes the reference
      x̄ as the keyword argument ``reference``; its state is an :class:`ElasticState`.

    Raises:
      ValueError: for ρ < 0, or at ``update`` time (unless ρ is a static 0) when
        ``params`` or ``reference`` is missing.

    References:
      Chaudhari et al., *Parle* (2017), the elastic term. ``docs/parle.md`` §1.

    Example:
      >>> import jax.numpy as jnp
      >>> import relaxjax
      >>> tx = relaxjax.elastic_coupling(0.5)
      >>> x, reference = jnp.array([1.0, 3.0]), jnp.array([0.0, 1.0])
      >>> updates, _ = tx.update(jnp.zeros(2), tx.init(x), x, reference=reference)
      >>> print(updates)
      [0.5 1. ]
    """
    hyperparams.check_nonnegative("rho", rho)
    static_zero = isinstance(rho, (int, float)) and rho == 0

    def init_fn(params: optax.Params) -> ElasticState:
        del params
        return ElasticState(jnp.zeros([], jnp.int32))

    def update_fn(
        updates: optax.Updates,
        state: ElasticState,
        params: optax.Params | None = None,
        *,
        reference: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, ElasticState]:
        del extra_args
        if static_zero:
            return updates, ElasticState(optax.safe_increment(state.elastic_count))
        if params is None or reference is None:
            raise ValueError("elastic_coupling needs params and reference= (the x̄ of Parle).")
        rho_t = hyperparams.value_at(rho, state.elastic_count)
        coupled = jax.tree.map(
            lambda u, x, r: (u + rho_t.astype(u.dtype) * (x - r)).astype(u.dtype),
            updates,
            params,
            reference,
        )
        return coupled, ElasticState(optax.safe_increment(state.elastic_count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def replica_key(seed: Seed, replica: int) -> jax.Array:
    """The raw Langevin key of replica ``replica``: the seed's own key for replica 0.

    So one replica uses exactly ``relaxjax.entropy_sgd(seed=seed)``'s noise,
    and replica a > 0 that of ``entropy_sgd(seed=replica_key(seed, a))``.

    Args:
      seed: the Parle seed (an int or a PRNG key, see ``key_from_seed``).
      replica: the replica's index a ≥ 0.

    Returns:
      A raw ``uint32[2]`` key: ``key_from_seed(seed)`` for a = 0, else that key
      folded with a.

    Example:
      >>> from relaxjax.core import key_from_seed, replica_key
      >>> replica_key(7, 0).tolist() == key_from_seed(7).tolist()
      True
      >>> replica_key(7, 1).tolist() == replica_key(7, 2).tolist()
      False
    """
    key = key_from_seed(seed)
    return key if replica == 0 else jax.random.fold_in(key, replica)


def replica_map(fn: Callable, *, mesh: Mesh | None = None) -> Callable:
    """``fn`` applied to every replica: its arguments and outputs are stacked on axis 0.

    Without a mesh this is ``jax.vmap(fn)``. With one, it is a ``shard_map``
    that is manual over the ``'replica'`` axis: each device row ``vmap``-s
    ``fn`` over its own replicas, with no communication (XLA's automatic
    partitioner, left to itself, re-gathers the activations of vmapped
    convolutions). The ``'data'`` axis stays automatic, so sharding
    constraints inside ``fn`` may split a replica's batch over it. Values
    ``fn`` closes over are replicated.

    Args:
      fn: the per-replica function; its positional arguments and outputs are pytrees.
      mesh: a mesh with a ``'replica'`` axis (``relaxjax.core.mesh.make_mesh``), or
        None.

    Returns:
      A function of the stacked arguments, returning the stacked outputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax.core import replica_map
      >>> replicas = jnp.arange(6.0).reshape(3, 2)  # 3 replicas of 2 parameters
      >>> print(replica_map(lambda x: x.sum())(replicas))
      [1. 5. 9.]
    """
    batched = jax.vmap(fn)
    if mesh is None:
        return batched
    stacked = P(REPLICA_AXIS)
    return jax.shard_map(
        batched,
        mesh=mesh,
        in_specs=stacked,
        out_specs=stacked,
        axis_names=frozenset({REPLICA_AXIS}),
        check_vma=False,
    )


def _replica_count(num_replicas: object) -> int | None:
    """n as an int; None when traced.

    ``optax.inject_hyperparams`` turns every numeric argument into an array, concrete when
    it builds the state and traced when it rebuilds the transform inside a jitted update,
    which reads n off the state instead.
    """
    if isinstance(num_replicas, jax.core.Tracer):
        return None
    if isinstance(num_replicas, jax.Array) and num_replicas.ndim == 0:
        if jnp.issubdtype(num_replicas.dtype, jnp.integer):
            num_replicas = int(num_replicas)
    return hyperparams.check_num_steps("num_replicas", num_replicas)


def _stack(tree: Any, n: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)


def _replica_mean(replicas: optax.Params) -> optax.Params:
    """mean_a xᵃ: the one all-reduce over the replica axis per outer step."""
    return jax.tree.map(lambda r: jnp.mean(r.astype(jnp.float32), axis=0).astype(r.dtype), replicas)


def parle(
    learning_rate: hyperparams.ScalarOrSchedule,
    gamma: hyperparams.ScalarOrSchedule,
    rho: hyperparams.ScalarOrSchedule,
    num_replicas: int,
    *,
    num_steps: int | None = None,
    step_size: hyperparams.ScalarOrSchedule = 0.1,
    noise: hyperparams.ScalarOrSchedule = 0.0,
    alpha: hyperparams.ScalarOrSchedule = 0.75,
    momentum: float | None = 0.9,
    nesterov: bool = True,
    weight_decay: hyperparams.ScalarOrSchedule = 0.0,
    reference_rate: float = 1.0,
    seed: Seed = 0,
    mesh: Mesh | None = None,
    unroll: int | bool | None = None,
) -> Parle:
    """Parle (Chaudhari et al. 2017): n Entropy-SGD replicas coupled elastically to x̄.

    Replica a takes the Entropy-SGD step of ``relaxjax.entropy_sgd`` on
    f_γ(xᵃ) + ρ/2 ‖xᵃ − x̄‖² (its own mini-batches and Langevin key), then x̄
    moves a fraction β = ``reference_rate`` of the way to the replicas'
    average. With one replica and ρ = 0 the replica follows
    ``relaxjax.entropy_sgd`` with the same arguments step for step.

    Args:
      learning_rate: outer rate η (float or schedule) on each replica's
        x − μ + ρ (x − x̄), as ``relaxjax.entropy_sgd``'s on x − μ.
      gamma: scope γ > 0 of each replica's local entropy (see
        ``relaxjax.local_entropy``); a schedule scopes it
        (``relaxjax.scoping(γ₀, r, final_gamma=γ_min)``).
      rho: elastic coupling ρ ≥ 0 (float or schedule; see ``coupling_schedule``).
      num_replicas: n ≥ 1.
      num_steps, step_size, noise, alpha, weight_decay, unroll: the inner
        loop of ``relaxjax.local_entropy`` (default noise 0, as in the Parle code).
      momentum, nesterov: the outer SGD of each replica.
      reference_rate: β ∈ (0, 1]; 1 sets x̄ to the replicas' average.
      seed: Langevin seed; replica a uses ``replica_key(seed, a)``.
      mesh: a mesh with a ``'replica'`` axis (``relaxjax.core.mesh.make_mesh``) to
        shard the replicas over; None: no sharding constraints (vmap).

    Returns:
      A ``Parle`` (``init``, ``update``, ``num_replicas``, ``mesh``).

    Raises:
      ValueError: for n < 1 or β outside (0, 1], and for the invalid inner-loop
        arguments of ``relaxjax.local_entropy``.

    References:
      Chaudhari, Baldassi, Zecchina, Soatto, Talwalkar, Oberman, *Parle:
      parallelizing stochastic gradient descent* (2017). ``docs/deep-relaxation.md``
      §5, ``docs/parle.md`` §1-§3.

    Example:
      Two replicas on f(x) = ½ ‖x‖², two inner steps each; :func:`parle_step` feeds
      each replica its own mini-batches (here unused by the loss):

      >>> import functools
      >>> import jax, jax.numpy as jnp
      >>> import relaxjax
      >>> loss = lambda x, batch: 0.5 * jnp.sum(x**2)
      >>> tx = relaxjax.parle(0.5, 1.0, 0.1, num_replicas=2, num_steps=2)
      >>> step = jax.jit(functools.partial(relaxjax.parle_step, tx, grad_fn=jax.grad(loss)))
      >>> x = jnp.array([1.0, -2.0])
      >>> state = tx.init(x)
      >>> state.replicas.shape
      (2, 2)
      >>> batches = jnp.zeros((2, 2, 1))  # [replica, inner step, ...]
      >>> x, state = step(x, state, batches=batches)
      >>> bool(loss(x, None) < 2.5)
      True
    """
    num_replicas = _replica_count(num_replicas)
    rate = hyperparams.concrete_value(reference_rate)  # None: traced, checked at trace time
    if rate is not None and not 0.0 < rate <= 1.0:
        raise ValueError(f"reference_rate must lie in (0, 1], got {reference_rate!r}.")
    replica_tx = optax.chain(
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
        elastic_coupling(rho),
        outer_sgd(learning_rate, momentum, nesterov),
    )
    stacked = P(REPLICA_AXIS)

    def init_fn(params: optax.Params) -> ParleState:
        if num_replicas is None:
            raise ValueError(
                "parle's num_replicas must be known when the state is built: a Python int "
                "(under optax.inject_hyperparams, call init outside jax.jit)."
            )
        replicas = _stack(params, num_replicas)
        states = jax.vmap(replica_tx.init)(replicas)
        keys = jnp.stack([replica_key(seed, a) for a in range(num_replicas)])
        states = (states[0]._replace(noise_key=keys), *states[1:])
        return place(ParleState(replicas, states), mesh, stacked)

    def update_fn(
        grads: optax.Updates,
        state: ParleState,
        params: optax.Params | None = None,
        *,
        grad_fn: ReplicaGradFn | None = None,
        replica_data: Any = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, ParleState]:
        del extra_args
        if params is None:
            raise ValueError("parle needs the reference x̄: call update(grads, state, params, ...).")
        if replica_data is None:
            count = jax.tree.leaves(state.replicas)[0].shape[0]
            replica_data = jnp.arange(count, dtype=jnp.int32)
        grads, replicas, states, replica_data = constrain(
            (grads, state.replicas, state.replica_states, replica_data), mesh, stacked
        )

        def replica_step(g, s, x, data):
            inner = None if grad_fn is None else (lambda y, i: grad_fn(y, i, data))
            updates, s = replica_tx.update(g, s, x, grad_fn=inner, reference=params)
            return optax.apply_updates(x, updates), s

        replicas, states = replica_map(replica_step, mesh=mesh)(
            grads, states, replicas, replica_data
        )
        replicas, states = constrain((replicas, states), mesh, stacked)
        average = constrain(_replica_mean(replicas), mesh)
        updates = jax.tree.map(
            lambda m, x: (reference_rate * (m - x)).astype(x.dtype), average, params
        )
        return constrain(updates, mesh), ParleState(replicas, states)

    return Parle(init_fn, update_fn, num_replicas, mesh)


def parle_step(
    optimizer: Parle,
    params: optax.Params,
    state: ParleState,
    grad_fn: Callable[[optax.Params, Any], optax.Updates],
    batches: Any,
) -> tuple[optax.Params, ParleState]:
    """One Parle outer step: every replica on its own L mini-batches, then x̄ moves.

    Args:
      optimizer: a ``parle(...)``.
      params: the reference x̄.
      state: its ``ParleState``.
      grad_fn: ``grad_fn(params, batch) -> ∇f`` on one mini-batch.
      batches: a pytree whose leaves have leading axes ``[num_replicas, L, ...]``:
        ``batches[a][i]`` is replica a's mini-batch i (0 at xᵃ, 1 … L − 1 inner).

    Returns:
      The new (x̄, state). Jit it, e.g. ``jax.jit(functools.partial(parle_step,
      tx, grad_fn=g))``. With a mesh, replica a's batches live on its device
      row and each mini-batch is split over the row's ``'data'`` axis (its
      batch size must divide evenly).

    References:
      Chaudhari et al., *Parle* (2017). ``docs/parle.md`` §2.

    Example:
      >>> import functools
      >>> import jax, jax.numpy as jnp
      >>> import relaxjax
      >>> def loss(x, batch):  # batch: (targets,) of one mini-batch
      ...     return 0.5 * jnp.mean((x - batch) ** 2)
      >>> tx = relaxjax.parle(0.5, 1.0, 0.0, num_replicas=3, num_steps=2, momentum=None)
      >>> step = jax.jit(functools.partial(relaxjax.parle_step, tx, grad_fn=jax.grad(loss)))
      >>> x = jnp.zeros(())
      >>> batches = jnp.ones((3, 2, 4))  # 3 replicas x 2 mini-batches of 4 targets 1.0
      >>> x, state = step(x, tx.init(x), batches=batches)
      >>> state.replicas.shape, bool(0.0 < x < 1.0)
      ((3,), True)
    """
    mesh = optimizer.mesh
    batches = constrain(batches, mesh, P(REPLICA_AXIS))

    def on_data_axis(batch: Any) -> Any:
        return constrain(batch, mesh, P(DATA_AXIS))

    def first(y, replica_batches):
        return grad_fn(y, on_data_axis(jax.tree.map(lambda b: b[0], replica_batches)))

    grads = replica_map(first, mesh=mesh)(state.replicas, batches)

    def inner(y, i, replica_batches):
        return grad_fn(y, on_data_axis(jax.tree.map(lambda b: b[i], replica_batches)))

    updates, state = optimizer.update(grads, state, params, grad_fn=inner, replica_data=batches)
    return optax.apply_updates(params, updates), state
