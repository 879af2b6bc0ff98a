"""``relaxjax.adapters`` loads each Flax API only when it is used (a fresh interpreter)."""

import pytest

_SCRIPT = """
import sys
import relaxjax.adapters
assert "flax" not in sys.modules, "relaxjax.adapters loaded flax"
from relaxjax.adapters import RelaxTrainState
assert "flax.linen" in sys.modules
assert "flax.nnx" not in sys.modules, "the linen adapter loaded flax.nnx"
from relaxjax.adapters import nnx_grad_fn
assert "flax.nnx" in sys.modules
print("IMPORTS-OK")
"""


@pytest.mark.subprocess
def test_the_linen_adapter_loads_no_nnx_and_the_package_no_flax(run_python):
    result = run_python(_SCRIPT, timeout=120)
    assert "IMPORTS-OK" in result.stdout, result.stderr[-3000:]
