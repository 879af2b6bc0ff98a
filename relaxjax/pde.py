"""Reference solvers for the relaxed losses of Deep Relaxation, on uniform grids.

Chaudhari, Oberman, Osher, Soatto & Carlier, *Deep Relaxation: partial
differential equations for optimizing deep neural networks*, Research in the
Mathematical Sciences 5:30 (2018), arXiv:1704.04932, relax a loss
``f : R^d -> R`` by running a PDE for a time ``t`` from ``u(., 0) = f``:

* the viscous Hamilton-Jacobi equation (local entropy, Entropy-SGD)::

      u_t = -1/2 |grad u|^2 + (2 beta)^-1 Laplace(u)

  solved with the Cole-Hopf transform ``u = -beta^-1 log(G_{t/beta} * exp(-beta f))``;
  its gradient is ``(x - <y>) / t`` with ``<y>`` the mean of the Gibbs measure
  ``rho(y; x) ∝ exp(-beta f(y) - beta |x - y|^2 / (2 t))``;
* the non-viscous Hamilton-Jacobi equation, solved by the Hopf-Lax formula::

      u_t = -1/2 |grad u|^2,   u(x, t) = min_y f(y) + |x - y|^2 / (2 t)

  (the Moreau envelope), with gradient ``(x - y*) / t``, ``y* = prox_{t f}(x)``;
* the heat equation ``u_t = 1/2 Laplace(u)``, ``u = G_t * f``, for comparison.

``G_s`` is the Gaussian kernel of variance ``s`` per coordinate.

These are deterministic, jit-compiled *oracles* for small problems (d = 1 or 2),
e.g. for testing the stochastic inner loops of the optimizers: every integral
over ``R^d`` is replaced by the trapezoidal rule on a uniform :class:`Grid`,
every minimum by a brute-force minimum over the grid nodes (optionally
refined). They are accurate **only if the grid covers the relevant mass**: the
Gibbs measure (or heat kernel) of each query point must be negligible outside
the grid, and the spacing ``h`` must resolve it (a fraction of its standard
deviation, about ``sqrt(t / beta)`` for the viscous equation and ``sqrt(t)`` for
heat); proximal points must lie inside the grid. Under these conditions the
quadrature error decays faster than any power of ``h`` (smooth integrands,
negligible at the boundary; the trapezoidal rule is second order when they are
not). The brute-force minimum has error ``O(h^2)`` in value and ``O(h)`` in the
minimiser before the refinement described in :func:`moreau_envelope_at`.

Two families of functions: ``*_at(f, x, ..., grid)`` evaluate at arbitrary query
points (cost ``O(#points * grid.size)``, chunked to bounded memory; the number
of points is padded to a bucket so that varying batch sizes share
compilations), and ``local_entropy(f, grid, ...)`` etc. evaluate at every grid
node using the tensor-product structure of the kernels (separable sweeps, cost
``O(grid.size * sum(grid.num))``). Both agree to round-off.

Conventions. A loss ``f`` is either a callable or its values sampled on the grid
(an array of shape ``grid.shape``). A callable must be written with ``jax.numpy``
and be vectorised over points: for a 1-D grid it maps an array of points of any
shape to values of the same shape (e.g. ``lambda y: 0.5 * y**2``); for d >= 2 it
maps an array of shape ``(..., d)`` to values of shape ``(...)``. It is a static
argument of the jitted solvers (compiled once per function object). Query
points ``x`` follow the same convention (shape ``(...)`` in 1-D, ``(..., d)``
otherwise); results have the batch shape ``(...)`` (values) or the shape of
``x`` (points and gradients). The functions can be called inside ``jit`` and
differentiated with respect to ``x``. Computations use the default JAX float
dtype; enable 64-bit mode (``with jax.enable_x64(True):``) for tight tolerances.

Beside the grid solvers, :func:`hj_prox` estimates the same viscous quantities (the
Gibbs mean and the local entropy, hence the proximal point as the viscosity goes to 0)
by Monte Carlo sampling of the Cole-Hopf formula, without a grid and in any dimension
(Osher, Heaton & Wu Fung, PNAS 2023), and :func:`hj_prox_minimize` iterates it as a
derivative-free proximal-point method. Their losses take one point and return a scalar.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

Array = jax.Array
LossFn = Callable[[Array], Array]
Loss = LossFn | ArrayLike  # a callable, or its values sampled on the grid

# Default number of (query point, grid node) pairs held in memory at once.
_PAIR_BUDGET = 2**22

__all__ = [
    "Grid",
    "uniform_grid",
    "grid_values",
    "GibbsMoments",
    "local_entropy_at",
    "local_entropy",
    "gibbs_mean_at",
    "gibbs_mean",
    "gibbs_moments_at",
    "local_entropy_gradient_at",
    "local_entropy_gradient",
    "moreau_envelope_at",
    "moreau_envelope",
    "prox_at",
    "moreau_gradient_at",
    "moreau_gradient",
    "heat_smoothing_at",
    "heat_smoothing",
    "heat_gradient_at",
    "heat_gradient",
    "hj_prox",
    "hj_prox_minimize",
    "HJProxResult",
]


# ----------------------------------------------------------------------------
# Grids.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Grid:
    """A uniform tensor-product grid on the box ``[lower, upper]`` (end points included).

    Hashable, so it can be a static argument of ``jax.jit``. Build it with
    :func:`uniform_grid`.

    Attributes:
      lower: lower corner, one float per dimension.
      upper: upper corner, one float per dimension.
      num: number of nodes per dimension (at least 3).

    Raises:
      ValueError: for lengths that differ, ``upper <= lower`` or fewer than 3 nodes.

    Example:
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid((-1.0, 0.0), (1.0, 2.0), (5, 3))
      >>> grid.shape, grid.spacing, grid.size
      ((5, 3), (0.5, 1.0), 15)
      >>> grid.nodes().shape, grid.points().shape
      ((5, 3, 2), (15, 2))
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    num: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.lower) == len(self.upper) == len(self.num) >= 1):
            raise ValueError("lower, upper and num must have the same length >= 1")
        for lo, hi, n in zip(self.lower, self.upper, self.num, strict=True):
            if not hi > lo:
                raise ValueError(f"need upper > lower, got [{lo}, {hi}]")
            if n < 3:
                raise ValueError(f"need at least 3 nodes per dimension, got {n}")

    @property
    def ndim(self) -> int:
        """Dimension ``d`` of the space."""
        return len(self.num)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of an array of values sampled on the grid."""
        return tuple(self.num)

    @property
    def size(self) -> int:
        """Total number of nodes."""
        return math.prod(self.num)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Grid spacing ``h`` per dimension."""
        return tuple(
            (hi - lo) / (n - 1) for lo, hi, n in zip(self.lower, self.upper, self.num, strict=True)
        )

    # Grid arrays are built with NumPy (float64) and converted to the default JAX
    # float dtype: inside ``jit`` they become literal constants rather than ops.

    def _np_axes(self) -> list[np.ndarray]:
        return [
            np.linspace(lo, hi, n)
            for lo, hi, n in zip(self.lower, self.upper, self.num, strict=True)
        ]

    def _np_mesh(self) -> list[np.ndarray]:
        return np.meshgrid(*self._np_axes(), indexing="ij")

    @property
    def axes(self) -> tuple[Array, ...]:
        """The 1-D node coordinates along each dimension."""
        return tuple(_as_float(a) for a in self._np_axes())

    def mesh(self) -> tuple[Array, ...]:
        """Coordinate arrays of shape ``grid.shape`` (``meshgrid`` with ``indexing='ij'``)."""
        return tuple(_as_float(m) for m in self._np_mesh())

    def nodes(self) -> Array:
        """All nodes in the query-point convention: shape ``(n,)`` in 1-D, ``(*shape, d)`` else.

        ``local_entropy(f, grid, ...)`` equals ``local_entropy_at(f, grid.nodes(), ..., grid)``.
        """
        if self.ndim == 1:
            return self.axes[0]
        return _as_float(np.stack(self._np_mesh(), axis=-1))

    def points(self) -> Array:
        """All nodes as a ``(size, d)`` array, in C order of ``grid.shape``."""
        return _as_float(np.stack([m.reshape(-1) for m in self._np_mesh()], axis=-1))

    def _np_axis_log_weights(self, k: int) -> np.ndarray:
        w = np.full(self.num[k], math.log(self.spacing[k]))
        w[[0, -1]] -= math.log(2.0)
        return w

    def axis_log_weights(self, k: int) -> Array:
        """Log of the 1-D trapezoidal-rule weights along dimension ``k``, shape ``(num[k],)``."""
        return _as_float(self._np_axis_log_weights(k))

    def log_weights(self) -> Array:
        """Log of the (tensor-product) trapezoidal-rule weights, shape ``(size,)``."""
        total = np.zeros(self.shape)
        for k in range(self.ndim):
            total = total + _along_axis(self._np_axis_log_weights(k), k, self.ndim)
        return _as_float(total.reshape(-1))


def _as_float(a: np.ndarray) -> Array:
    """Converts a NumPy array to the default JAX float dtype (float32 unless x64 is on)."""
    return jnp.asarray(a, dtype=jnp.result_type(float))


def _along_axis(v: Array, k: int, d: int) -> Array:
    """Reshapes a 1-D array so that it broadcasts along axis ``k`` of a d-D array."""
    return v.reshape((1,) * k + (-1,) + (1,) * (d - 1 - k))


def uniform_grid(
    lower: float | Sequence[float],
    upper: float | Sequence[float],
    num: int | Sequence[int],
) -> Grid:
    """Builds a uniform :class:`Grid`; scalars give a 1-D grid, sequences a d-D grid.

    Scalars are broadcast against sequences, e.g. ``uniform_grid(-3, 3, (101, 81))``
    is a 2-D grid on ``[-3, 3]^2``.

    Args:
      lower: the lower corner, a float (all dimensions) or one per dimension.
      upper: the upper corner, likewise.
      num: the number of nodes, an int (all dimensions) or one per dimension.

    Returns:
      The :class:`Grid`.

    Raises:
      ValueError: for sequences of different lengths, and as :class:`Grid`.

    Example:
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-1, 1, 5)
      >>> grid.ndim, grid.spacing, grid.nodes().tolist()
      (1, (0.5,), [-1.0, -0.5, 0.0, 0.5, 1.0])
      >>> pde.uniform_grid(-3, 3, (101, 81)).shape
      (101, 81)
    """
    seqs = [v for v in (lower, upper, num) if isinstance(v, Sequence)]
    d = len(seqs[0]) if seqs else 1

    def _tuple(v: Any, cast: type) -> tuple:
        if isinstance(v, Sequence):
            if len(v) != d:
                raise ValueError("lower, upper and num must have the same length")
            return tuple(cast(e) for e in v)
        return (cast(v),) * d

    return Grid(_tuple(lower, float), _tuple(upper, float), _tuple(num, int))


# ----------------------------------------------------------------------------
# Helpers: losses, query points, chunking.
# ----------------------------------------------------------------------------


def _eval_loss(f: LossFn, pts: Array, d: int) -> Array:
    """Evaluates a vectorised loss on points of shape ``(m, d)``; returns ``(m,)``."""
    out = f(pts[:, 0]) if d == 1 else f(pts)
    return jnp.reshape(out, (pts.shape[0],))


def grid_values(f: Loss, grid: Grid) -> Array:
    """Values of the loss ``f`` (a callable or sampled values) on ``grid``, shape ``grid.shape``.

    Args:
      f: a vectorised callable (see the module's conventions) or its values on
        ``grid``.
      grid: the grid.

    Returns:
      The values, an array of shape ``grid.shape`` in the default float dtype.

    Raises:
      ValueError: if sampled values do not have the grid's shape.

    Example:
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid((0.0, 0.0), (1.0, 2.0), (3, 3))
      >>> pde.grid_values(lambda y: y[..., 0] + y[..., 1], grid).tolist()
      [[0.0, 1.0, 2.0], [0.5, 1.5, 2.5], [1.0, 2.0, 3.0]]
    """
    if callable(f):
        return _eval_loss(f, grid.points(), grid.ndim).reshape(grid.shape)
    values = jnp.asarray(f, dtype=jnp.result_type(float))
    if values.shape != grid.shape:
        raise ValueError(f"sampled loss has shape {values.shape}, grid has shape {grid.shape}")
    return values


def _split_loss(f: Loss, grid: Grid) -> tuple[Array | None, LossFn | None]:
    """Returns ``(sampled values, None)`` or ``(None, callable)``."""
    if callable(f):
        return None, f
    return grid_values(f, grid), None


def _values_in_jit(fy: Array | None, loss_fn: LossFn | None, grid: Grid) -> Array:
    """The loss on the grid, shape ``grid.shape`` (inside a jitted core)."""
    if loss_fn is not None:
        return _eval_loss(loss_fn, grid.points(), grid.ndim).reshape(grid.shape)
    return fy


def _bucket(m: int) -> int:
    """Padded number of query points: powers of two up to 4096, then multiples of 4096."""
    if m <= 8:
        return 8
    return 2 ** math.ceil(math.log2(m)) if m <= 4096 else -(-m // 4096) * 4096


def _as_points(x: Any, d: int) -> tuple[Array, tuple[int, ...]]:
    """Flattens query points to ``(m', d)``, padded; returns them with the batch shape.

    The number of points is padded (with copies of the first point) to a bucket
    size, so that calls with different numbers of points share the compiled
    solvers. Undo with :func:`_unpad`.
    """
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    batch = x.shape if d == 1 else x.shape[:-1]
    if d > 1 and (x.ndim == 0 or x.shape[-1] != d):
        raise ValueError(f"query points must have shape (..., {d}), got {x.shape}")
    if math.prod(batch) == 0:
        raise ValueError("no query points")
    return _pad_points(x, d), batch


@functools.partial(jax.jit, static_argnames=("d",))
def _pad_points(x: Array, d: int) -> Array:
    pts = x.reshape(-1, d)
    m = pts.shape[0]
    return jnp.concatenate([pts, jnp.broadcast_to(pts[:1], (_bucket(m) - m, d))])


@functools.partial(jax.jit, static_argnames=("batch", "d"))
def _unpad(outputs: Any, batch: tuple[int, ...], d: int) -> Any:
    """Drops the padding of :func:`_as_points` and restores the batch shape.

    Each output ``(m', *rest)`` becomes ``(*batch, *rest)``; in 1-D the point
    axes are dropped (``rest`` of ones), so means and gradients have the shape of
    ``x`` and variances the batch shape.
    """
    m = math.prod(batch)

    def one(o):
        rest = () if d == 1 else o.shape[1:]
        return o[:m].reshape(batch + rest)

    return jax.tree_util.tree_map(one, outputs)


def _unflatten(v: Array, batch: tuple[int, ...], d: int) -> Array:
    """Reshapes ``(m, d)`` points back to the query convention."""
    return v.reshape(batch) if d == 1 else v.reshape(batch + (d,))


def _chunked_map(fn: Callable[[Any], Any], xs: Any, work_per_item: int, chunk_size: int | None):
    """``lax.map`` over the leading axis, vmapped over chunks of bounded memory."""
    m = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if chunk_size is None:  # a power of two <= 4096: it divides the padded point counts
        budget = max(1, _PAIR_BUDGET // max(1, work_per_item))
        chunk_size = min(2 ** int(math.log2(budget)), 4096)
    chunk_size = max(1, min(m, int(chunk_size)))
    if chunk_size == m:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=chunk_size)


def _sq_dist(x: Array, ys: Array) -> Array:
    return jnp.sum(jnp.square(x - ys), axis=-1)


def _axis_pass(fn: Callable[[Any], Any], arrays: Sequence[Array], queries: Any, k: int):
    """One sweep of a separable (tensor-product) kernel along axis ``k``.

    ``fn(query, moved)`` receives the ``arrays`` with axis ``k`` moved last and
    reduces that axis for one query coordinate; the results, one per query, are
    stacked on axis ``k``. Used by the grid-wide solvers, which cost
    ``O(size * n_k)`` per axis instead of ``O(size^2)``.
    """
    moved = [jnp.moveaxis(a, k, -1) for a in arrays]
    size = moved[0].size
    out = _chunked_map(lambda q: fn(q, moved), queries, size, None)
    return jax.tree_util.tree_map(lambda o: jnp.moveaxis(o, 0, k), out)


# ----------------------------------------------------------------------------
# Viscous Hamilton-Jacobi: local entropy and the Gibbs measure.
# ----------------------------------------------------------------------------


class GibbsMoments(NamedTuple):
    """Mean and covariance of the Gibbs measure ``rho(y; x)`` (1-D: mean and variance).

    Returned by :func:`gibbs_moments_at`.

    Attributes:
      mean: the Gibbs mean ``<y>``, the shape of the query points ``x``.
      cov: the covariance, shape ``(..., d, d)``; in 1-D the variance, shape ``(...)``.
    """

    mean: Array
    cov: Array


def _viscous_point(x, fy, ys, logw, gamma, beta):
    log_kernel = logw - beta * _sq_dist(x, ys) / (2 * gamma)
    log_joint = log_kernel - beta * fy
    log_num = logsumexp(log_joint)
    # Normalising the kernel by its own quadrature sum equals the Gaussian
    # normalisation (2 pi gamma / beta)^(d/2) up to quadrature error.
    log_den = logsumexp(log_kernel)
    value = -(log_num - log_den) / beta
    p = jnp.exp(log_joint - log_num)
    mean = p @ ys
    c = ys - mean
    cov = (p[:, None] * c).T @ c
    return value, mean, cov


@functools.partial(jax.jit, static_argnames=("grid", "loss_fn", "chunk_size"))
def _viscous_core(fy, pts, gamma, beta, *, grid, loss_fn, chunk_size):
    fy = _values_in_jit(fy, loss_fn, grid).reshape(-1)
    fn = functools.partial(
        _viscous_point, fy=fy, ys=grid.points(), logw=grid.log_weights(), gamma=gamma, beta=beta
    )
    return _chunked_map(fn, pts, grid.size, chunk_size)


def _viscous(f, x, gamma, beta, grid, chunk_size):
    pts, batch = _as_points(x, grid.ndim)
    fy, loss_fn = _split_loss(f, grid)
    out = _viscous_core(fy, pts, gamma, beta, grid=grid, loss_fn=loss_fn, chunk_size=chunk_size)
    return _unpad(out, batch, grid.ndim)


@functools.partial(jax.jit, static_argnames=("grid", "loss_fn"))
def _viscous_grid_core(fy, gamma, beta, *, grid, loss_fn):
    """Separable log-space sweeps: log-mass and conditional means, axis by axis."""
    log_mass = -beta * _values_in_jit(fy, loss_fn, grid)
    means: list[Array] = []  # conditional Gibbs means of the coordinates already summed
    log_norm = jnp.zeros(())
    for k, ax in enumerate(grid.axes):
        log_kernel = grid.axis_log_weights(k)[None, :] - beta * jnp.square(
            ax[:, None] - ax[None, :]
        ) / (2 * gamma)
        log_norm = log_norm + _along_axis(logsumexp(log_kernel, axis=1), k, grid.ndim)

        def sweep(row, moved, ax=ax):
            s = moved[0] + row
            lse = logsumexp(s, axis=-1)
            w = jnp.exp(s - lse[..., None])
            return lse, [jnp.sum(w * m, axis=-1) for m in moved[1:]] + [w @ ax]

        log_mass, means = _axis_pass(sweep, [log_mass, *means], log_kernel, k)
    value = -(log_mass - log_norm) / beta
    return value, jnp.stack(means, axis=-1)


def local_entropy_at(
    f: Loss,
    x: ArrayLike,
    gamma: float | Array,
    beta: float | Array,
    grid: Grid,
    *,
    chunk_size: int | None = None,
) -> Array:
    """Local entropy ``f_gamma(x) = u(x, gamma)``, the viscous HJ solution, at points ``x``.

    Solves ``u_t = -1/2 |grad u|^2 + (2 beta)^-1 Laplace(u)``, ``u(., 0) = f`` at time
    ``t = gamma`` by the Cole-Hopf formula (Chaudhari et al. 2018, Deep Relaxation,
    viscous HJ equation and its Cole-Hopf solution)::

        u(x, t) = -beta^-1 log ∫ G_{t/beta}(x - y) exp(-beta f(y)) dy

    evaluated in log space (log-sum-exp over trapezoidal quadrature, never
    ``exp(-beta f)`` itself). The Gaussian normalisation is included, so
    ``u(., t) -> f`` as ``t -> 0`` and, for ``f(y) = 1/2 y^T A y``,
    ``u(x, t) = 1/2 x^T A (I + tA)^-1 x + (2 beta)^-1 log det(I + tA)``.
    The kernel is normalised by its own quadrature sum, which equals
    ``(2 pi t / beta)^(d/2)`` when the kernel's mass lies inside the grid.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      gamma: the scope (PDE time) ``gamma > 0``.
      beta: the inverse temperature ``beta > 0``.
      grid: quadrature grid; must cover the Gibbs measure's mass (see module doc).
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``u(x, gamma)``, shape ``(...)``.

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the viscous HJ equation and its
      Cole-Hopf solution. ``docs/deep-relaxation.md`` §1.1, ``docs/pde.md`` §1 and §5.

    Example:
      For ``f(y) = y²/2``, ``u(x, γ) = x²/(2(1 + γ)) + log(1 + γ)/(2β)``:

      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> round(float(pde.local_entropy_at(f, 1.0, 1.0, 1.0, grid)), 4)  # 0.25 + log(2)/2
      0.5966
    """
    return _viscous(f, x, gamma, beta, grid, chunk_size)[0]


def gibbs_moments_at(
    f: Loss,
    x: ArrayLike,
    gamma: float | Array,
    beta: float | Array,
    grid: Grid,
    *,
    chunk_size: int | None = None,
) -> GibbsMoments:
    """Mean and covariance of ``rho(y; x) ∝ exp(-beta f(y) - beta |x - y|^2 / (2 gamma))``.

    This is the measure sampled by the Entropy-SGD / SGLD inner loop
    (Chaudhari et al. 2018, Deep Relaxation, gradient of the local entropy);
    the covariance sizes the Monte Carlo error of such estimates. Computed by
    trapezoidal quadrature on ``grid``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      gamma: the scope ``gamma > 0``.
      beta: the inverse temperature ``beta > 0``.
      grid: quadrature grid; must cover the Gibbs measure's mass.
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``GibbsMoments(mean, cov)``: ``mean`` has the shape of ``x``; ``cov`` has shape
      ``(...)`` (the variance) in 1-D and ``(..., d, d)`` otherwise.

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the Gibbs measure of the local
      entropy's gradient. ``docs/deep-relaxation.md`` §1.1.

    Example:
      For ``f(y) = y²/2`` the measure is Gaussian, mean ``x/(1 + γ)``, variance
      ``1/(β(1 + 1/γ))``:

      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> moments = pde.gibbs_moments_at(f, jnp.array([1.0, -2.0]), 1.0, 1.0, grid)
      >>> print(jnp.round(moments.mean, 4), jnp.round(moments.cov, 4))
      [ 0.5 -1. ] [0.5 0.5]
    """
    _, mean, cov = _viscous(f, x, gamma, beta, grid, chunk_size)
    return GibbsMoments(mean, cov)


def gibbs_mean_at(
    f: Loss,
    x: ArrayLike,
    gamma: float | Array,
    beta: float | Array,
    grid: Grid,
    *,
    chunk_size: int | None = None,
) -> Array:
    """Gibbs mean ``<y> = E_rho[y]``, ``rho(y; x) ∝ exp(-beta f(y) - beta |x-y|^2/(2 gamma))``.

    The exact target of the SGLD inner loop of Entropy-SGD (Chaudhari et al. 2018,
    Deep Relaxation). For ``f(y) = 1/2 y^T A y`` it is ``(I + gamma A)^-1 x`` for every
    ``beta``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      gamma: the scope ``gamma > 0``.
      beta: the inverse temperature ``beta > 0``.
      grid: quadrature grid; must cover the Gibbs measure's mass.
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``<y>``, an array with the shape of ``x``.

    References:
      Chaudhari et al., *Deep Relaxation* (2018). ``docs/deep-relaxation.md`` §1.1.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> print(jnp.round(pde.gibbs_mean_at(f, jnp.array([1.0, -2.0]), 1.0, 1.0, grid), 4))
      [ 0.5 -1. ]
    """
    return _viscous(f, x, gamma, beta, grid, chunk_size)[1]


def local_entropy_gradient_at(
    f: Loss,
    x: ArrayLike,
    gamma: float | Array,
    beta: float | Array,
    grid: Grid,
    *,
    chunk_size: int | None = None,
) -> Array:
    """Gradient of the local entropy, ``grad f_gamma(x) = (x - <y>) / gamma``.

    (Chaudhari et al. 2018, Deep Relaxation, gradient of the viscous HJ solution.)
    Equals the derivative of :func:`local_entropy_at` up to quadrature error.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      gamma: the scope ``gamma > 0``.
      beta: the inverse temperature ``beta > 0``.
      grid: quadrature grid; must cover the Gibbs measure's mass.
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``grad f_gamma(x)``, an array with the shape of ``x``: the exact target of
      ``relaxjax.local_entropy``'s output.

    References:
      Chaudhari et al., *Deep Relaxation* (2018). ``docs/deep-relaxation.md`` §1.1.

    Example:
      For ``f(y) = y²/2`` the gradient is ``x/(1 + γ)``:

      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> x = jnp.array([1.0, -2.0])
      >>> print(jnp.round(pde.local_entropy_gradient_at(f, x, 1.0, 1.0, grid), 4))
      [ 0.5 -1. ]
    """
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    return (x - gibbs_mean_at(f, x, gamma, beta, grid, chunk_size=chunk_size)) / gamma


def _viscous_grid(f, grid, gamma, beta):
    fy, loss_fn = _split_loss(f, grid)
    value, mean = _viscous_grid_core(fy, gamma, beta, grid=grid, loss_fn=loss_fn)
    return value, _unflatten(mean, grid.shape, grid.ndim)


def local_entropy(f: Loss, grid: Grid, gamma: float | Array, beta: float | Array) -> Array:
    """Local entropy (viscous HJ solution at ``t = gamma``) on all grid nodes, ``grid.shape``.

    Same equation and quadrature as :func:`local_entropy_at` at ``grid.nodes()``,
    computed by separable sweeps (``O(size * sum(num))`` work instead of
    ``O(size²)``, bounded memory). Nodes near the edge of the grid are inaccurate
    when their Gibbs measure is cut off.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: the grid, both the quadrature grid and the query points.
      gamma: the scope ``gamma > 0``.
      beta: the inverse temperature ``beta > 0``.

    Returns:
      ``u(x, gamma)`` at every node, shape ``grid.shape``.

    References:
      Chaudhari et al., *Deep Relaxation* (2018). ``docs/deep-relaxation.md`` §1.1,
      ``docs/pde.md`` §3.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> x = grid.nodes()
      >>> u = pde.local_entropy(f, grid, 1.0, 1.0)
      >>> exact = x**2 / 4 + jnp.log(2.0) / 2
      >>> u.shape, bool(jnp.allclose(u[jnp.abs(x) <= 2], exact[jnp.abs(x) <= 2], atol=1e-5))
      ((161,), True)
    """
    return _viscous_grid(f, grid, gamma, beta)[0]


def gibbs_mean(f: Loss, grid: Grid, gamma: float | Array, beta: float | Array) -> Array:
    """:func:`gibbs_mean_at` at all grid nodes (separable sweeps), shape of ``grid.nodes()``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: the grid, both the quadrature grid and the query points.
      gamma: the scope ``gamma > 0``.
      beta: the inverse temperature ``beta > 0``.

    Returns:
      ``<y>`` at every node, an array of the shape of ``grid.nodes()``.

    References:
      ``docs/deep-relaxation.md`` §1.1, ``docs/pde.md`` §3.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> x = grid.nodes()
      >>> mean = pde.gibbs_mean(f, grid, 1.0, 1.0)
      >>> bool(jnp.allclose(mean[jnp.abs(x) <= 2], x[jnp.abs(x) <= 2] / 2, atol=1e-5))
      True
    """
    return _viscous_grid(f, grid, gamma, beta)[1]


def local_entropy_gradient(f: Loss, grid: Grid, gamma: float | Array, beta: float | Array) -> Array:
    """``(x - <y>) / gamma`` at all grid nodes ``x``, shape of ``grid.nodes()``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: the grid, both the quadrature grid and the query points.
      gamma: the scope ``gamma > 0``.
      beta: the inverse temperature ``beta > 0``.

    Returns:
      ``grad f_gamma`` at every node, an array of the shape of ``grid.nodes()``.

    References:
      ``docs/deep-relaxation.md`` §1.1, ``docs/pde.md`` §3.

    Example:
      In 2-D, for ``f(y) = |y|²/2`` the gradient is ``x/(1 + γ)``:

      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-6.0, 6.0, (41, 41))
      >>> x = grid.nodes()
      >>> grad = pde.local_entropy_gradient(0.5 * jnp.sum(x**2, -1), grid, 1.0, 1.0)
      >>> grad.shape, bool(jnp.allclose(grad[20, 20:24], x[20, 20:24] / 2, atol=1e-4))
      ((41, 41, 2), True)
    """
    return (grid.nodes() - gibbs_mean(f, grid, gamma, beta)) / gamma


# ----------------------------------------------------------------------------
# Non-viscous Hamilton-Jacobi: Hopf-Lax formula / Moreau envelope.
# ----------------------------------------------------------------------------


def _newton_direction(hess: Array, grad: Array) -> tuple[Array, Array]:
    """``(positive definite?, -hess^-1 grad)``, in closed form for d <= 2 (cheap to compile)."""
    d = grad.shape[0]
    if d == 1:
        a = hess[0, 0]
        ok = a > 0
        return ok, -grad / jnp.where(ok, a, 1.0)
    if d == 2:
        a, b, c = hess[0, 0], hess[0, 1], hess[1, 1]
        det = a * c - b * b
        ok = (a > 0) & (det > 0)
        det = jnp.where(ok, det, 1.0)
        return ok, -jnp.stack([c * grad[0] - b * grad[1], a * grad[1] - b * grad[0]]) / det
    ok = jnp.min(jnp.linalg.eigvalsh(hess)) > 0
    return ok, -jnp.linalg.solve(jnp.where(ok, hess, jnp.eye(d, dtype=hess.dtype)), grad)


def _fd_weights(spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference weights on the flattened 3^d stencil (C order, centre at 1).

    Returns the gradient weights, shape ``(d, 3^d)``, and the Hessian weights,
    shape ``(d * d, 3^d)`` (second differences on the diagonal, the four-point
    cross difference off it); all are exact for quadratics.
    """
    d = len(spacing)
    grad_w = np.zeros((d,) + (3,) * d)
    hess_w = np.zeros((d, d) + (3,) * d)

    def node(*pairs: tuple[int, int]) -> tuple[int, ...]:
        off = [1] * d
        for k, sign in pairs:
            off[k] += sign
        return tuple(off)

    for k, hk in enumerate(spacing):
        grad_w[(k,) + node((k, 1))] = 1 / (2 * hk)
        grad_w[(k,) + node((k, -1))] = -1 / (2 * hk)
        hess_w[(k, k) + node((k, 1))] = hess_w[(k, k) + node((k, -1))] = 1 / hk**2
        hess_w[(k, k) + node()] = -2 / hk**2
        for m, hm in enumerate(spacing):
            if m != k:
                for sk in (-1, 1):
                    for sm in (-1, 1):
                        hess_w[(k, m) + node((k, sk), (m, sm))] = sk * sm / (4 * hk * hm)
    return grad_w.reshape(d, -1), hess_w.reshape(d * d, -1)


def _refine_step(x, idx, fgrid, t, grid):
    """Newton step on a finite-difference quadratic model of ``g`` around node ``idx``.

    ``g(y) = f(y) + |x - y|^2 / (2 t)`` is sampled on the 3^d stencil around the
    node. Returns ``(ok, delta, model_decrease)``; ``ok`` is False at the grid
    boundary or when the model is not strictly convex. The step is scaled back
    into the cell ``|delta_k| <= h_k``.
    """
    d = grid.ndim
    h = jnp.asarray(grid.spacing, dtype=x.dtype)
    inside = jnp.all(
        jnp.stack([(i >= 1) & (i <= n - 2) for i, n in zip(idx, grid.num, strict=True)])
    )
    start = [jnp.clip(i - 1, 0, n - 3) for i, n in zip(idx, grid.num, strict=True)]
    block = jax.lax.dynamic_slice(fgrid, start, (3,) * d)  # f on the stencil
    for k, (ax, s0) in enumerate(zip(grid.axes, start, strict=True)):
        y_k = jax.lax.dynamic_slice(ax, (s0,), (3,))
        block = block + _along_axis(jnp.square(x[k] - y_k), k, d) / (2 * t)

    grad_w, hess_w = _fd_weights(grid.spacing)
    values = block.reshape(-1)
    grad = jnp.asarray(grad_w, dtype=values.dtype) @ values
    hess = (jnp.asarray(hess_w, dtype=values.dtype) @ values).reshape(d, d)
    convex, delta = _newton_direction(hess, grad)
    delta = delta * jnp.minimum(1.0, jnp.min(h / jnp.maximum(jnp.abs(delta), 1e-30)))
    decrease = grad @ delta + 0.5 * delta @ hess @ delta
    ok = inside & convex & jnp.all(jnp.isfinite(delta))
    return ok, jnp.where(ok, delta, 0.0), jnp.where(ok, decrease, 0.0)


def _newton_polish(x, node, value, prox, t, grid, loss_fn, steps):
    """Safeguarded Newton steps on the true objective (callable losses, autodiff derivatives).

    A step is kept only if the Hessian is positive definite, the point stays within
    one cell of the grid minimiser ``node`` (so the brute-force global search is
    respected) and the objective does not increase beyond round-off.
    """
    d = grid.ndim
    h = jnp.asarray(grid.spacing, dtype=x.dtype)
    slack = 16 * jnp.finfo(x.dtype).eps

    def objective(y):
        return _eval_loss(loss_fn, y[None], d)[0] + jnp.sum(jnp.square(x - y)) / (2 * t)

    def step(_, carry):
        value, prox = carry
        grad = jax.grad(objective)(prox)
        hess = jax.hessian(objective)(prox).reshape(d, d)
        convex, delta = _newton_direction(hess, grad)
        cand = prox + delta
        cand_value = objective(cand)
        ok = (
            convex
            & jnp.all(jnp.abs(cand - node) <= h)
            & jnp.isfinite(cand_value)
            & (cand_value <= value + slack * jnp.maximum(1.0, jnp.abs(value)))
        )
        return jnp.where(ok, cand_value, value), jnp.where(ok, cand, prox)

    if steps == 0:
        return value, prox
    return jax.lax.fori_loop(0, steps, step, (value, prox))


def _refine(x, idx, value, prox, fgrid, t, grid, loss_fn, newton_steps):
    """Refines the grid minimiser ``prox`` (node ``idx``, objective ``value``) of one query."""
    ok, delta, decrease = _refine_step(x, idx, fgrid, t, grid)
    cand = prox + delta
    if loss_fn is None:
        # Sampled loss: trust the quadratic model's minimum.
        return jnp.where(ok, value + decrease, value), jnp.where(ok, cand, prox)
    # Callable loss: evaluate the true objective; keep the candidate only if it is lower.
    cand_value = _eval_loss(loss_fn, cand[None], grid.ndim)[0] + _sq_dist(x, cand) / (2 * t)
    ok = ok & (cand_value < value)
    node = prox
    value, prox = jnp.where(ok, cand_value, value), jnp.where(ok, cand, prox)
    return _newton_polish(x, node, value, prox, t, grid, loss_fn, newton_steps)


def _moreau_point(x, fgrid, ys, t, *, grid, loss_fn, refine, newton_steps):
    g = fgrid.reshape(-1) + _sq_dist(x, ys) / (2 * t)
    j = jnp.argmin(g)
    value, prox = g[j], ys[j]
    if refine:
        idx = jnp.unravel_index(j, grid.shape)
        value, prox = _refine(x, idx, value, prox, fgrid, t, grid, loss_fn, newton_steps)
    return value, prox


_MOREAU_STATIC = ("grid", "loss_fn", "refine", "newton_steps")


@functools.partial(jax.jit, static_argnames=_MOREAU_STATIC + ("chunk_size",))
def _moreau_core(fy, pts, t, *, grid, loss_fn, refine, newton_steps, chunk_size):
    fn = functools.partial(
        _moreau_point,
        fgrid=_values_in_jit(fy, loss_fn, grid),
        ys=grid.points(),
        t=t,
        grid=grid,
        loss_fn=loss_fn,
        refine=refine,
        newton_steps=newton_steps,
    )
    return _chunked_map(fn, pts, grid.size, chunk_size)


@functools.partial(jax.jit, static_argnames=_MOREAU_STATIC)
def _moreau_grid_core(fy, t, *, grid, loss_fn, refine, newton_steps):
    """Separable min-plus sweeps with argmin bookkeeping, then optional refinement."""
    d = grid.ndim
    fgrid = _values_in_jit(fy, loss_fn, grid)
    value = fgrid
    argmins = []
    for k, ax in enumerate(grid.axes):
        cost = jnp.square(ax[:, None] - ax[None, :]) / (2 * t)

        def sweep(row, moved):
            s = moved[0] + row
            return jnp.min(s, axis=-1), jnp.argmin(s, axis=-1)

        value, arg = _axis_pass(sweep, [value], cost, k)
        argmins.append(arg)
    # Backtrack: argmins[k] is indexed by (query_0..query_k, node_{k+1}..node_{d-1}).
    queries = jnp.meshgrid(*[jnp.arange(n) for n in grid.num], indexing="ij")
    idx = [None] * d
    idx[d - 1] = argmins[d - 1]
    for k in range(d - 2, -1, -1):
        idx[k] = argmins[k][tuple(queries[: k + 1]) + tuple(idx[k + 1 :])]
    prox = jnp.stack([ax[i] for ax, i in zip(grid.axes, idx, strict=True)], axis=-1)
    if refine:
        flat_idx = tuple(i.reshape(-1) for i in idx)

        def one(args):
            x, i, v, p = args
            return _refine(x, i, v, p, fgrid, t, grid, loss_fn, newton_steps)

        value, prox = _chunked_map(
            one, (grid.points(), flat_idx, value.reshape(-1), prox.reshape(-1, d)), 3**d, None
        )
    return value.reshape(grid.shape), prox.reshape(grid.shape + (d,))


def moreau_envelope_at(
    f: Loss,
    x: ArrayLike,
    t: float | Array,
    grid: Grid,
    *,
    refine: bool = True,
    newton_steps: int = 3,
    chunk_size: int | None = None,
) -> tuple[Array, Array]:
    """Hopf-Lax solution of the non-viscous HJ equation and its minimiser at points ``x``.

    Solves ``u_t = -1/2 |grad u|^2``, ``u(., 0) = f`` by the Hopf-Lax formula
    (Chaudhari et al. 2018, Deep Relaxation, non-viscous HJ equation / Hopf-Lax
    formula), i.e. the Moreau envelope and the proximal point::

        u(x, t) = min_y f(y) + |x - y|^2 / (2 t),   y* = argmin (= prox_{t f}(x))

    by brute-force (global) minimisation over the grid nodes, chunked over ``x``.
    With ``refine=True`` the grid minimiser is then refined within one cell:

    1. a Newton step on the finite-difference quadratic model of the objective on
       the 3^d stencil around the best node (exact for quadratic ``f``);
    2. for a callable ``f`` only, ``newton_steps`` Newton steps on the true
       objective with autodiff derivatives.

    For a callable every step is safeguarded (kept only if the true objective
    does not increase beyond round-off and the point stays within one cell of the
    grid minimiser), so the value is never worse than the grid minimum and is an
    attained value, an upper bound on ``u`` (up to round-off). For sampled values
    the model's minimum is used. Errors for smooth ``f`` (spacing ``h``):

    * ``refine=False``: value ``O(h^2)``, minimiser ``O(h)``;
    * sampled values, refined: value ``O(h^3)``, minimiser ``O(h^2)``; at kinks of
      ``f`` the model step can err by ``O(h)`` (use ``refine=False`` or a callable);
    * callable, refined, ``newton_steps=0``: value ``O(h^4)``, minimiser ``O(h^2)``;
      with the default Newton steps both reach round-off where ``f`` is smooth.

    If the minimiser is not unique, the grid's global minimiser is refined.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      t: the time ``t > 0``.
      grid: the search grid; must contain the proximal points.
      refine: refine the grid minimiser.
      newton_steps: autodiff Newton steps after the stencil step (callable ``f``).
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``(u(x, t), y*)`` with shapes ``(...)`` and the shape of ``x``.

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the non-viscous HJ equation and the
      Hopf-Lax formula. ``docs/deep-relaxation.md`` §1.2, ``docs/pde.md`` §1, §4, §5.

    Example:
      For ``f(y) = y²/2`` and ``t = 1``: ``u(x, 1) = x²/4``, ``y* = x/2``:

      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> value, prox = pde.moreau_envelope_at(f, jnp.array([1.0, 3.0]), 1.0, grid)
      >>> print(jnp.round(value, 4), jnp.round(prox, 4))
      [0.25 2.25] [0.5 1.5]
    """
    pts, batch = _as_points(x, grid.ndim)
    fy, loss_fn = _split_loss(f, grid)
    value, prox = _moreau_core(
        fy,
        pts,
        t,
        grid=grid,
        loss_fn=loss_fn,
        refine=bool(refine),
        newton_steps=int(newton_steps),
        chunk_size=chunk_size,
    )
    return _unpad((value, prox), batch, grid.ndim)


def prox_at(
    f: Loss,
    x: ArrayLike,
    t: float | Array,
    grid: Grid,
    *,
    refine: bool = True,
    newton_steps: int = 3,
    chunk_size: int | None = None,
) -> Array:
    """Proximal point ``y* = argmin_y f(y) + |x - y|^2 / (2 t)``; see :func:`moreau_envelope_at`.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      t: the time ``t > 0``.
      grid: the search grid; must contain the proximal points.
      refine: refine the grid minimiser.
      newton_steps: autodiff Newton steps after the stencil step (callable ``f``).
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``y* = prox_{t f}(x)``, an array with the shape of ``x``.

    References:
      ``docs/deep-relaxation.md`` §1.2, ``docs/pde.md`` §5.

    Example:
      The proximal point of ``abs`` is soft-thresholding:

      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> print(pde.prox_at(jnp.abs, jnp.array([-2.0, 0.5, 3.0]), 1.0, grid))
      [-1.  0.  2.]
    """
    return moreau_envelope_at(
        f, x, t, grid, refine=refine, newton_steps=newton_steps, chunk_size=chunk_size
    )[1]


def moreau_gradient_at(
    f: Loss,
    x: ArrayLike,
    t: float | Array,
    grid: Grid,
    *,
    refine: bool = True,
    newton_steps: int = 3,
    chunk_size: int | None = None,
) -> Array:
    """Gradient of the Hopf-Lax solution, ``grad u(x, t) = (x - y*) / t``.

    (Chaudhari et al. 2018, Deep Relaxation, gradient of the Hopf-Lax formula.)
    The error is that of :func:`prox_at` divided by ``t``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      t: the time ``t > 0``.
      grid: the search grid; must contain the proximal points.
      refine: refine the grid minimiser.
      newton_steps: autodiff Newton steps after the stencil step (callable ``f``).
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``grad u(x, t)``, an array with the shape of ``x``: the exact target of
      ``relaxjax.hopf_lax``'s output.

    References:
      Chaudhari et al., *Deep Relaxation* (2018). ``docs/deep-relaxation.md`` §1.2.

    Example:
      The envelope of ``abs`` is the Huber function, whose gradient is
      ``clip(x / t, -1, 1)``:

      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> print(pde.moreau_gradient_at(jnp.abs, jnp.array([-2.0, 0.5, 3.0]), 1.0, grid))
      [-1.   0.5  1. ]
    """
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    y = prox_at(f, x, t, grid, refine=refine, newton_steps=newton_steps, chunk_size=chunk_size)
    return (x - y) / t


def moreau_envelope(
    f: Loss, grid: Grid, t: float | Array, *, refine: bool = True, newton_steps: int = 3
) -> tuple[Array, Array]:
    """:func:`moreau_envelope_at` at all grid nodes: values ``grid.shape``, proximal points.

    Computed by separable min-plus sweeps (``O(size * sum(num))`` work instead of
    ``O(size²)``, bounded memory); the grid minimiser is the brute-force one (up to
    ties), refined the same way.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: the grid, both the search grid and the query points.
      t: the time ``t > 0``.
      refine: refine the grid minimiser.
      newton_steps: autodiff Newton steps after the stencil step (callable ``f``).

    Returns:
      ``(u, y*)`` at every node: values of shape ``grid.shape`` and proximal points
      of the shape of ``grid.nodes()``.

    References:
      ``docs/deep-relaxation.md`` §1.2, ``docs/pde.md`` §3.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-4.0, 4.0, 81)
      >>> x = grid.nodes()
      >>> value, prox = pde.moreau_envelope(jnp.abs, grid, 1.0)
      >>> huber = jnp.where(jnp.abs(x) <= 1, x**2 / 2, jnp.abs(x) - 0.5)
      >>> value.shape, bool(jnp.allclose(value, huber, atol=1e-5))
      ((81,), True)
    """
    fy, loss_fn = _split_loss(f, grid)
    value, prox = _moreau_grid_core(
        fy, t, grid=grid, loss_fn=loss_fn, refine=bool(refine), newton_steps=int(newton_steps)
    )
    return value, _unflatten(prox, grid.shape, grid.ndim)


def moreau_gradient(
    f: Loss, grid: Grid, t: float | Array, *, refine: bool = True, newton_steps: int = 3
) -> Array:
    """``(x - y*) / t`` at all grid nodes ``x``, shape of ``grid.nodes()``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: the grid, both the search grid and the query points.
      t: the time ``t > 0``.
      refine: refine the grid minimiser.
      newton_steps: autodiff Newton steps after the stencil step (callable ``f``).

    Returns:
      ``grad u(x, t)`` at every node, an array of the shape of ``grid.nodes()``.

    References:
      ``docs/deep-relaxation.md`` §1.2, ``docs/pde.md`` §3.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-4.0, 4.0, 81)
      >>> grad = pde.moreau_gradient(jnp.abs, grid, 1.0)
      >>> bool(jnp.allclose(grad, jnp.clip(grid.nodes(), -1, 1), atol=1e-5))
      True
    """
    prox = moreau_envelope(f, grid, t, refine=refine, newton_steps=newton_steps)[1]
    return (grid.nodes() - prox) / t


# ----------------------------------------------------------------------------
# Heat equation (Gaussian smoothing).
# ----------------------------------------------------------------------------


def _heat_point(x, fy, ys, logw, t):
    p = jax.nn.softmax(logw - _sq_dist(x, ys) / (2 * t))
    value = p @ fy
    mean = p @ ys
    # d/dx of sum_j K_j f_j / sum_j K_j = Cov_p(y, f) / t.
    grad = ((fy - value) * p) @ (ys - mean) / t
    return value, grad


@functools.partial(jax.jit, static_argnames=("grid", "loss_fn", "chunk_size"))
def _heat_core(fy, pts, t, *, grid, loss_fn, chunk_size):
    fy = _values_in_jit(fy, loss_fn, grid).reshape(-1)
    fn = functools.partial(_heat_point, fy=fy, ys=grid.points(), logw=grid.log_weights(), t=t)
    return _chunked_map(fn, pts, grid.size, chunk_size)


def _apply_along(mat: Array, arr: Array, k: int) -> Array:
    """Contracts ``mat[i, j]`` with axis ``k`` of ``arr`` (result axis ``k`` indexed by ``i``)."""
    return jnp.moveaxis(jnp.tensordot(mat, arr, axes=([1], [k])), 0, k)


@functools.partial(jax.jit, static_argnames=("grid", "loss_fn"))
def _heat_grid_core(fy, t, *, grid, loss_fn):
    """The normalised heat kernel is a tensor product of 1-D kernel matrices."""
    fgrid = _values_in_jit(fy, loss_fn, grid)
    weights, dweights = [], []
    for k, ax in enumerate(grid.axes):
        w = jax.nn.softmax(
            grid.axis_log_weights(k)[None, :] - jnp.square(ax[:, None] - ax[None, :]) / (2 * t),
            axis=1,
        )
        weights.append(w)
        dweights.append(w * (ax[None, :] - (w @ ax)[:, None]) / t)  # d w / d x_k
    value = fgrid
    for k, w in enumerate(weights):
        value = _apply_along(w, value, k)
    grads = []
    for m in range(grid.ndim):
        g = fgrid
        for k, w in enumerate(weights):
            g = _apply_along(dweights[k] if k == m else w, g, k)
        grads.append(g)
    return value, jnp.stack(grads, axis=-1)


def _heat(f, x, t, grid, chunk_size):
    pts, batch = _as_points(x, grid.ndim)
    fy, loss_fn = _split_loss(f, grid)
    out = _heat_core(fy, pts, t, grid=grid, loss_fn=loss_fn, chunk_size=chunk_size)
    return _unpad(out, batch, grid.ndim)


def heat_smoothing_at(
    f: Loss, x: ArrayLike, t: float | Array, grid: Grid, *, chunk_size: int | None = None
) -> Array:
    """Solution of the heat equation ``u_t = 1/2 Laplace(u)``, ``u(., 0) = f``, at points ``x``.

    ``u(x, t) = (G_t * f)(x) = E[f(x + sqrt(t) z)]``, ``z ~ N(0, I)``: the
    comparison relaxation of Chaudhari et al. 2018 (Deep Relaxation, heat
    equation). Trapezoidal quadrature with the kernel normalised by its
    quadrature sum. For ``f(y) = 1/2 y^T A y``: ``u = f + t tr(A) / 2``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      t: the time ``t > 0``.
      grid: quadrature grid; must cover the heat kernel's mass.
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``u(x, t)``, values of shape ``(...)``.

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the heat equation.
      ``docs/deep-relaxation.md`` §1.3.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> print(jnp.round(pde.heat_smoothing_at(f, jnp.array([0.0, 1.0]), 1.0, grid), 4))
      [0.5 1. ]
    """
    return _heat(f, x, t, grid, chunk_size)[0]


def heat_gradient_at(
    f: Loss, x: ArrayLike, t: float | Array, grid: Grid, *, chunk_size: int | None = None
) -> Array:
    """Gradient of :func:`heat_smoothing_at`, ``grad (G_t * f)(x) = E[(y - x) f(y)] / t``.

    Equals ``E[grad f(x + sqrt(t) z)]`` for smooth ``f``; it is the exact
    derivative of the quadrature formula.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      x: query points, shape ``(...)`` in 1-D or ``(..., d)``.
      t: the time ``t > 0``.
      grid: quadrature grid; must cover the heat kernel's mass.
      chunk_size: query points processed at once (default: bounded memory).

    Returns:
      ``grad u(x, t)``, an array with the shape of ``x``.

    References:
      ``docs/deep-relaxation.md`` §1.3.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> print(jnp.round(pde.heat_gradient_at(f, jnp.array([0.0, 1.0]), 1.0, grid), 4))
      [0. 1.]
    """
    return _heat(f, x, t, grid, chunk_size)[1]


def _heat_grid(f, grid, t):
    fy, loss_fn = _split_loss(f, grid)
    value, grad = _heat_grid_core(fy, t, grid=grid, loss_fn=loss_fn)
    return value, _unflatten(grad, grid.shape, grid.ndim)


def heat_smoothing(f: Loss, grid: Grid, t: float | Array) -> Array:
    """:func:`heat_smoothing_at` at all grid nodes (separable), shape ``grid.shape``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: the grid, both the quadrature grid and the query points.
      t: the time ``t > 0``.

    Returns:
      ``u(x, t)`` at every node, shape ``grid.shape``.

    References:
      ``docs/deep-relaxation.md`` §1.3, ``docs/pde.md`` §3.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> x = grid.nodes()
      >>> u = pde.heat_smoothing(f, grid, 1.0)  # f + t/2 away from the edges
      >>> bool(jnp.allclose(u[jnp.abs(x) <= 2], f[jnp.abs(x) <= 2] + 0.5, atol=1e-5))
      True
    """
    return _heat_grid(f, grid, t)[0]


def heat_gradient(f: Loss, grid: Grid, t: float | Array) -> Array:
    """:func:`heat_gradient_at` at all grid nodes (separable), shape of ``grid.nodes()``.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: the grid, both the quadrature grid and the query points.
      t: the time ``t > 0``.

    Returns:
      ``grad u(x, t)`` at every node, an array of the shape of ``grid.nodes()``.

    References:
      ``docs/deep-relaxation.md`` §1.3, ``docs/pde.md`` §3.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> grid = pde.uniform_grid(-8.0, 8.0, 161)
      >>> f = 0.5 * grid.nodes() ** 2  # f(y) = y²/2, sampled on the grid
      >>> x = grid.nodes()
      >>> grad = pde.heat_gradient(f, grid, 1.0)
      >>> bool(jnp.allclose(grad[jnp.abs(x) <= 2], x[jnp.abs(x) <= 2], atol=1e-5))
      True
    """
    return _heat_grid(f, grid, t)[1]


# ----------------------------------------------------------------------------
# HJ-Prox: the proximal point by Cole-Hopf sampling (zeroth order, no grid).
# ----------------------------------------------------------------------------


class HJProxResult(NamedTuple):
    """The run of :func:`hj_prox_minimize`.

    Attributes:
      x: the last iterate ``x_K``, the shape of ``x0``.
      trajectory: the iterates ``x_0 … x_K``, shape ``(num_steps + 1, *x0.shape)``.
      values: ``f`` at each iterate, shape ``(num_steps + 1,)``; ``trajectory[argmin]``
        is the best point visited.
    """

    x: Array
    trajectory: Array
    values: Array


def _check_hj_positive(name: str, value: Any) -> None:
    """Raises ``ValueError`` naming ``name`` unless every concrete entry is > 0."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        array = np.asarray(value, dtype=float)
    except Exception:  # e.g. a tracer inside a container: checked by nobody, as in jit
        return
    if array.size and not np.all(array > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}.")


def _check_hj_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a Python int >= 1 (a static shape), got {value!r}.")
    return int(value)


def _as_float_point(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _hj_prox_sample(f, x, t, delta, key, num_samples):
    """(prox estimate, envelope estimate) from ``num_samples`` draws of N(x, delta t I)."""
    noise = jax.random.normal(key, (num_samples, *x.shape), x.dtype)
    scale = jnp.sqrt(delta * t).astype(x.dtype)
    values = jax.vmap(f)(x + scale * noise)
    if values.shape != (num_samples,):
        raise ValueError(
            f"f must map one point of shape {x.shape} to a scalar; it returned shape "
            f"{values.shape[1:]} per point."
        )
    logits = -values / delta
    weights = jax.nn.softmax(logits)
    # x + sqrt(delta t) E_w[xi], not E_w[y]: no cancellation when |x| >> the spread.
    prox = x + scale * jnp.tensordot(weights.astype(x.dtype), noise, axes=1)
    envelope = -delta * (logsumexp(logits) - math.log(num_samples))
    return prox, envelope


@functools.partial(jax.jit, static_argnames=("f", "num_samples"))
def _hj_prox_core(x, t, delta, key, *, f, num_samples):
    return _hj_prox_sample(f, x, t, delta, key, num_samples)


def hj_prox(
    f: LossFn,
    x: ArrayLike,
    t: float | Array,
    *,
    delta: float | Array,
    num_samples: int = 1000,
    key: Array,
    return_envelope: bool = False,
) -> Array | tuple[Array, Array]:
    """HJ-Prox: ``prox_{t f}(x)`` estimated from values of ``f`` alone (Cole-Hopf sampling).

    The proximal point ``prox_{t f}(x) = argmin_y f(y) + |x - y|^2 / (2 t)`` is the limit as
    ``delta -> 0`` of the mean of the Gibbs measure of the viscous HJ equation
    ``u_t + 1/2 |grad u|^2 = delta/2 Laplace(u)``, whose Cole-Hopf solution is an
    expectation under the heat kernel (Osher, Heaton & Wu Fung 2023)::

        u^delta(x, t)         = -delta log E[exp(-f(y) / delta)]
        prox^delta_{t f}(x)   = E[y exp(-f(y) / delta)] / E[exp(-f(y) / delta)],
                                y ~ N(x, delta t I)

    Both are estimated by Monte Carlo with ``num_samples`` draws ``y_i``: the proximal
    point is the softmax-weighted mean ``sum_i softmax(-f(y_i) / delta)_i y_i`` and the
    envelope ``-delta (logsumexp(-f(y_i) / delta) - log N)``, in log space so nothing
    underflows (this replaces the original code's recursive enlargement of ``delta``).
    ``u^delta`` and ``prox^delta`` are exactly :func:`local_entropy_at` and
    :func:`gibbs_mean_at` with ``gamma = t``, ``beta = 1 / delta``; as ``delta -> 0`` they
    tend to the Moreau envelope and the proximal point of :func:`moreau_envelope_at`.
    Zeroth order: ``f`` is only evaluated (it may be nonsmooth or nonconvex, even noisy).

    Accuracy. Bias: ``prox^delta - prox = O(delta)`` where ``f`` is smooth near the
    proximal point (a kink adds ``O(sqrt(delta t))``). Variance: the samples are spread
    around ``x``, the Gibbs measure around the proximal point, so the effective number
    of samples is about ``N exp(-|x - prox|^2 / (delta t))``: small ``delta`` needs
    exponentially many samples unless ``x`` is near its proximal point, as in a
    proximal-point iteration with small ``t`` (:func:`hj_prox_minimize`).

    Args:
      f: the loss, ``f(y) -> scalar`` for one point ``y`` of the shape of ``x`` (it is
        ``jax.vmap``-ed over the samples), written with ``jax.numpy``; a static argument
        (compiled once per function object).
      x: the point, any shape (a scalar for a 1-D problem, ``(d,)`` in ``R^d``); vmap
        ``hj_prox`` over a batch of points (with one key each).
      t: the time (prox step) ``t > 0``.
      delta: the viscosity ``delta > 0``; smaller is closer to the true proximal point
        but needs more samples.
      num_samples: the Monte Carlo sample size ``N``.
      key: a JAX PRNG key for the samples.
      return_envelope: also return the estimate of ``u^delta(x, t)``.

    Returns:
      The estimate of ``prox_{t f}(x)``, an array of the shape of ``x``; with
      ``return_envelope`` the pair ``(prox, envelope)``, the envelope a scalar.

    Raises:
      ValueError: for ``t <= 0``, ``delta <= 0``, a ``num_samples`` that is not an
        int >= 1, or an ``f`` that does not return one scalar per point.

    References:
      Osher, Heaton, Wu Fung, *A Hamilton-Jacobi-based proximal operator*, PNAS
      120(14):e2220469120 (2023). Chaudhari et al., *Deep Relaxation* (2018), the
      viscous HJ equation and Cole-Hopf. ``docs/relatives.md`` §2, ``docs/pde.md`` §1.

    Example:
      For ``f(y) = |y|`` the proximal point is soft-thresholding, ``sign(x) max(|x| - t, 0)``:

      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import pde
      >>> x = jnp.array([1.5, -0.2])
      >>> prox = pde.hj_prox(lambda y: jnp.sum(jnp.abs(y)), x, 0.5, delta=0.1,
      ...                    num_samples=10_000, key=jax.random.key(0))
      >>> print(jnp.round(prox, 1))
      [ 1. -0.]
    """
    _check_hj_positive("t", t)
    _check_hj_positive("delta", delta)
    num_samples = _check_hj_count("num_samples", num_samples)
    x = _as_float_point(x)
    prox, envelope = _hj_prox_core(
        x,
        jnp.asarray(t, x.dtype),
        jnp.asarray(delta, x.dtype),
        key,
        f=f,
        num_samples=num_samples,
    )
    return (prox, envelope) if return_envelope else prox


def _schedule_values(name: str, value: Any, num_steps: int, dtype) -> Array:
    """A float or a schedule ``k -> value`` evaluated at the steps ``k = 0 … num_steps - 1``."""
    if callable(value):
        values = jax.vmap(value)(jnp.arange(num_steps, dtype=jnp.int32))
        values = jnp.broadcast_to(jnp.asarray(values, dtype), (num_steps,))
    else:
        if np.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar or a schedule, got shape {np.shape(value)}")
        values = jnp.full((num_steps,), value, dtype)
    _check_hj_positive(name, values)
    return values


@functools.partial(jax.jit, static_argnames=("f", "num_samples"))
def _hj_prox_minimize_core(x0, ts, deltas, keys, *, f, num_samples):
    def step(x, inputs):
        t, delta, key = inputs
        x = _hj_prox_sample(f, x, t, delta, key, num_samples)[0]
        return x, x

    last, iterates = jax.lax.scan(step, x0, (ts, deltas, keys))
    trajectory = jnp.concatenate([x0[None], iterates])
    return HJProxResult(last, trajectory, jax.vmap(f)(trajectory))


def hj_prox_minimize(
    f: LossFn,
    x0: ArrayLike,
    *,
    t: float | Array | Callable[[Array], Array],
    delta: float | Array | Callable[[Array], Array],
    num_samples: int = 1000,
    num_steps: int = 100,
    key: Array,
) -> HJProxResult:
    """Derivative-free minimisation by the proximal-point iteration with HJ-Prox steps.

    ``x_{k+1} = hj_prox(f, x_k, t_k, delta=delta_k)`` (:func:`hj_prox`), ``num_steps``
    times inside one ``jax.lax.scan``: the proximal-point method with each proximal
    point replaced by its Cole-Hopf Monte Carlo estimate, so only values of ``f`` are
    used (Osher, Heaton & Wu Fung 2023). A larger ``delta`` smooths ``f`` more (the
    viscous envelope ``u^delta`` averages it over a Gaussian of variance ``delta t``) and
    lets the iterates cross barriers between local minima; a schedule that decreases
    ``delta`` then refines the point. Meant for small problems (a few to a few hundred
    dimensions): each step costs ``num_samples`` evaluations of ``f``.

    Args:
      f: the loss, ``f(y) -> scalar`` for one point of the shape of ``x0`` (vmapped over
        the samples); a static argument.
      x0: the starting point, any shape.
      t: the prox step ``t > 0``, a float or a schedule ``k -> t_k`` (e.g. an Optax
        schedule) of the step index ``k = 0 … num_steps - 1``.
      delta: the viscosity ``delta > 0``, a float or a schedule ``k -> delta_k``.
      num_samples: Monte Carlo samples per step.
      num_steps: the number of proximal steps ``K``.
      key: a JAX PRNG key (split into one key per step).

    Returns:
      :class:`HJProxResult` ``(x, trajectory, values)``: the last iterate, all iterates
      ``x_0 … x_K`` and ``f`` at each.

    Raises:
      ValueError: for a ``t`` or ``delta`` (or a schedule value) that is not > 0, or a
        ``num_samples`` or ``num_steps`` that is not an int >= 1.

    References:
      Osher, Heaton, Wu Fung, *A Hamilton-Jacobi-based proximal operator*, PNAS
      120(14):e2220469120 (2023). ``docs/relatives.md`` §2.

    Example:
      A nonsmooth function of two variables, minimised at ``(1, -2)`` without gradients:

      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import pde
      >>> f = lambda y: jnp.sum(jnp.abs(y - jnp.array([1.0, -2.0])))
      >>> run = pde.hj_prox_minimize(f, jnp.zeros(2), t=0.5, delta=0.01, num_steps=30,
      ...                            key=jax.random.key(0))
      >>> print(jnp.round(run.x, 1), run.trajectory.shape, run.values.shape)
      [ 1. -2.] (31, 2) (31,)
    """
    num_samples = _check_hj_count("num_samples", num_samples)
    num_steps = _check_hj_count("num_steps", num_steps)
    x0 = _as_float_point(x0)
    ts = _schedule_values("t", t, num_steps, x0.dtype)
    deltas = _schedule_values("delta", delta, num_steps, x0.dtype)
    keys = jax.random.split(key, num_steps)
    return _hj_prox_minimize_core(x0, ts, deltas, keys, f=f, num_samples=num_samples)
