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

With more than one process (``jax.distributed``: one process per host) the
mesh spans every process's devices (``jax.devices()`` lists them all) and
``place`` builds global arrays from the value every process holds
(``jax.make_array_from_callback``: each process puts only its own devices'
slices); ``local_copy`` gives a process its own copy of a replicated one.
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
    "local_copy",
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


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    if sharding.is_fully_addressable or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)  # one process's devices, or global to global
    # A mesh over several processes: every process holds the whole value and puts the
    # slices of its own devices.
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def place(tree: Any, mesh: Mesh | None, spec: P = REPLICATED) -> Any:
    """Every leaf laid out as ``NamedSharding(mesh, spec)`` (identity if no mesh).

    ``jax.device_put`` on one process's devices; on a mesh over several processes each
    process passes the same whole value and only its own devices' slices are placed.
    """
    if mesh is None:
        return tree
    return jax.tree.map(lambda x: _put(x, _sharding(mesh, spec, x)), tree)


def local_copy(tree: Any) -> Any:
    """Each leaf as an array on this process's devices: a global array spanning several
    processes becomes this process's copy of it (a replicated one its first local
    shard, at no cost; another is gathered from every process, a collective that every
    process must call). Other leaves are returned as they are."""

    def local(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        from jax.experimental import multihost_utils

        return jax.numpy.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(local, tree)


def constrain(tree: Any, mesh: Mesh | None, spec: P = REPLICATED) -> Any:
    """``jax.lax.with_sharding_constraint`` on every leaf (identity if no mesh)."""
    if mesh is None:
        return tree
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, _sharding(mesh, spec, x)), tree
    )
