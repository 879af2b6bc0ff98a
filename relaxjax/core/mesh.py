"""Device meshes for data parallelism and for Parle's replicas.

relaxjax lays devices out on a two-axis mesh ``('replica', 'data')``:

* ``'replica'`` carries Parle's replicas (Chaudhari et al., *Parle:
  parallelizing stochastic gradient descent*, 2017): replica a's parameters,
  optimizer state and mini-batches live on the devices of row a;
* ``'data'`` carries the examples of a mini-batch (data parallelism): every
  mini-batch, and every inner mini-batch of a relaxation, is split along
  its batch axis, the parameters are replicated, and XLA all-reduces the
  gradients.

Without Parle the ``'replica'`` axis has size 1, so the same specs serve
both. The code placing arrays only names axes, never device counts, so it
runs unchanged on 1, 4 or 4096 devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "REPLICA_AXIS",
    "REPLICATED",
    "constrain",
    "make_mesh",
    "mesh_shape",
    "place",
]

REPLICA_AXIS = "replica"
DATA_AXIS = "data"
REPLICATED = P()


def mesh_shape(num_devices: int, num_replicas: int = 1) -> tuple[int, int]:
    """(replica rows, data columns) for ``num_replicas`` replicas on at most ``num_devices``.

    The replica axis gets the largest divisor r of ``num_replicas`` with
    r ≤ ``num_devices`` (a sharded axis must divide the replicas evenly);
    each replica then gets ``num_devices // r`` devices for its batch. With
    3 replicas on 4 devices that is (3, 1): one device stays idle.
    """
    if num_devices < 1 or num_replicas < 1:
        raise ValueError(f"need >= 1 device and replica, got {num_devices}, {num_replicas}")
    rows = max(r for r in range(1, min(num_devices, num_replicas) + 1) if num_replicas % r == 0)
    return rows, num_devices // rows


def make_mesh(
    num_devices: int | None = None,
    *,
    num_replicas: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A ``('replica', 'data')`` mesh over the first ``num_devices`` devices.

    Args:
      num_devices: how many of ``devices`` to use (default: all of them).
      num_replicas: Parle replicas to lay out on the ``'replica'`` axis (1:
        pure data parallelism); see ``mesh_shape``.
      devices: the devices (default ``jax.devices()``).
    """
    devices = list(jax.devices() if devices is None else devices)
    num_devices = len(devices) if num_devices is None else num_devices
    if num_devices > len(devices):
        raise ValueError(
            f"asked for {num_devices} devices but only {len(devices)} are visible "
            f"({devices[0].platform}); on CPU, simulate more with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={num_devices}"
        )
    rows, cols = mesh_shape(num_devices, num_replicas=num_replicas)
    grid = np.array(devices[: rows * cols], dtype=object).reshape(rows, cols)
    return Mesh(grid, (REPLICA_AXIS, DATA_AXIS))


def _sharding(mesh: Mesh, spec: P, leaf: Any) -> NamedSharding:
    # Scalars cannot be split: they are replicated whatever the spec says.
    return NamedSharding(mesh, spec if np.ndim(leaf) >= len(spec) else P())


def place(tree: Any, mesh: Mesh | None, spec: P = REPLICATED) -> Any:
    """``jax.device_put`` every leaf with ``NamedSharding(mesh, spec)`` (identity if no mesh)."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: jax.device_put(x, _sharding(mesh, spec, x)), tree)


def constrain(tree: Any, mesh: Mesh | None, spec: P = REPLICATED) -> Any:
    """``jax.lax.with_sharding_constraint`` on every leaf (identity if no mesh)."""
    if mesh is None:
        return tree
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, _sharding(mesh, spec, x)), tree
    )
