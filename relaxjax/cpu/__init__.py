"""CPU-specific accelerations, all in one place.

* :mod:`relaxjax.cpu.conv_layout`: re-evaluates a gradient function's jaxpr with its
  convolutions in XLA:CPU's canonical layout (used by the relaxations' inner loop
  on the CPU backend; anything it does not recognise runs unchanged).
* :mod:`relaxjax.cpu.xla_flags`: XLA:CPU flags for the scheduler and vector width
  (:func:`apply_cpu_settings`, to call before JAX starts its backend).
* :mod:`relaxjax.cpu.layers`: max-pooling and small convolutions written as
  reshapes and matrix products (needs flax; imported only when used).

See ``docs/cpu.md``.
"""

from relaxjax.cpu.conv_layout import with_canonical_convolutions
from relaxjax.cpu.xla_flags import apply_cpu_settings

__all__ = ["apply_cpu_settings", "with_canonical_convolutions"]
