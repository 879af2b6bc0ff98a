"""Hyper-parameter validation and schedule evaluation shared by relaxjax transforms.

A hyper-parameter is a Python number, a scalar array, or an Optax schedule
(a callable of the outer step count). Constructors validate what is concrete
and leave traced values (under ``optax.inject_hyperparams``, ``jit`` or
``vmap``) alone, so the same factory works eagerly and inside transformations.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Scalar = float | int | jax.Array | np.ndarray
ScalarOrSchedule = Scalar | Callable[[jax.Array], Scalar]


def value_at(hyperparameter: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    """Returns a hyper-parameter's value at outer step ``count``."""
    if callable(hyperparameter):
        return jnp.asarray(hyperparameter(count))
    return jnp.asarray(hyperparameter)


def concrete_value(hyperparameter: ScalarOrSchedule) -> float | None:
    """The value at step 0 if it can be known without tracing, else None."""
    if callable(hyperparameter):
        try:
            hyperparameter = hyperparameter(0)
        except Exception:  # a schedule that needs a traced count: check at run time
            return None
    if isinstance(hyperparameter, jax.core.Tracer):
        return None
    try:
        array = np.asarray(hyperparameter)
    except Exception:  # e.g. a tracer hidden in a container
        return None
    if array.ndim != 0:
        # A batch of values (e.g. under vmap by hand): check every entry.
        if not np.issubdtype(array.dtype, np.number):
            return None
        return float(array.min()) if array.size else None
    return float(array)


def check_positive(name: str, hyperparameter: ScalarOrSchedule) -> None:
    """Raises ``ValueError`` naming ``name`` if its value is not > 0."""
    value = concrete_value(hyperparameter)
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}.")


def check_nonnegative(name: str, hyperparameter: ScalarOrSchedule) -> None:
    """Raises ``ValueError`` naming ``name`` if its value is not >= 0."""
    value = concrete_value(hyperparameter)
    if value is not None and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


def check_unit_interval(name: str, hyperparameter: ScalarOrSchedule) -> None:
    """Raises ``ValueError`` naming ``name`` if its value is outside [0, 1)."""
    if callable(hyperparameter):
        values = [concrete_value(hyperparameter)]
    else:
        try:
            array = np.asarray(hyperparameter, dtype=float)
            values = [float(v) for v in array.ravel()]
        except Exception:  # traced
            values = [None]
    for value in values:
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {value!r}.")


def check_num_steps(name: str, num_steps: object, minimum: int = 1) -> int:
    """Returns ``num_steps`` as an ``int`` or raises a ``ValueError`` naming it."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ValueError(
            f"{name} must be a Python int (it fixes the length of the inner loop at trace "
            f"time), got {num_steps!r}. With optax.inject_hyperparams pass "
            f"static_args=('{name}',)."
        )
    if num_steps < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {num_steps}.")
    return int(num_steps)
