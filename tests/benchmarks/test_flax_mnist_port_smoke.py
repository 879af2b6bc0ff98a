"""benchmarks/flax_mnist_port.py: a tiny run, and the README shows the values it measures."""

import json
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.slow
def test_flax_mnist_port_benchmark_smoke(tmp_path, load_benchmark):
    """``--smoke``: generated data, one seed, every optimizer at the same budget."""
    bench = load_benchmark("flax_mnist_port")
    assert bench.main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "flax_mnist_port.json").read_text())
    assert result["command"].startswith("python benchmarks/flax_mnist_port.py --smoke")
    assert result["versions"].startswith("jax ") and result["machine"] and result["date"]
    rows = {r["optimizer"]: r for r in result["rows"]}
    assert list(rows) == list(bench.optimizers(1.0, 2))
    # Equal gradient evaluations: SGD takes one per step, a relaxation L = 2 per step.
    assert {r["gradient_evaluations"] for r in rows.values()} == {4}
    assert rows["sgd"]["steps"] == 4 and rows["entropy-sgd"]["steps"] == 2
    for row in rows.values():
        assert 0 <= row["final_test_accuracy"] <= 100
    assert {(v["port"], v["baseline"]) for v in result["verdicts"]} == set(bench.BASELINE.items())
    assert "within" in (tmp_path / "flax_mnist_port.md").read_text()


def test_the_readme_shows_the_benchmarked_values(load_benchmark):
    bench = load_benchmark("flax_mnist_port")
    steps = int(re.search(r"^L = (\d+)  # inner steps", README, re.M).group(1))
    chain = re.search(r"relaxjax\.local_entropy\((.*?)\),\n\s*optax\.adamw\((.*?)\)", README)
    assert chain, "README: the local_entropy + adamw snippet moved"
    options = dict(kv.split("=") for kv in chain.group(1).replace(" ", "").split(","))
    assert options.pop("num_steps") == "L" and steps == bench.README_LOCAL_ENTROPY["num_steps"]
    written = {k: v for k, v in bench.README_LOCAL_ENTROPY.items() if k != "num_steps"}
    assert {k: float(v) for k, v in options.items()} == written
    rate, times = chain.group(2).replace(" ", "").split("*")
    assert float(rate) == bench.ADAMW_RATE and times == "L"
    port = re.search(
        r"relaxjax\.entropy_sgd\(1\.0, gamma=([\d.]+), step_size=lr, "
        r"momentum=m, num_steps=(\d+)\)",
        README,
    )
    assert port, "README: the porting rule's example moved"
    assert float(port.group(1)) == bench.README_PORT["gamma"]
    assert int(port.group(2)) == bench.README_PORT["num_steps"]
