"""The PyTorch baseline of ``benchmarks/compare_pytorch.py`` (needs the optional ``torch``).

(i) The eager PyTorch ``EntropySGD`` and ``relaxjax.entropy_sgd`` take the same
steps on a deterministic problem (noise 0, float64), so the benchmark times
the same algorithm on both sides; the PyTorch networks have the parameter
counts of relaxjax's. (ii) A smoke run of the comparison script writes
Markdown and JSON results.
"""

import json

import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import relaxjax  # noqa: E402
from relaxjax import models  # noqa: E402

pytestmark = [pytest.mark.slow]

L, OUTER_STEPS = 4, 3
HYPER = dict(num_steps=L, step_size=0.1, alpha=0.75, weight_decay=1e-2, noise=0.0)


def _problem():
    """A linear least-squares model and one mini-batch per inner step of every outer step."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(OUTER_STEPS * L, 8, 5))
    y = rng.normal(size=(OUTER_STEPS * L, 8, 2))
    w0, b0 = rng.normal(size=(5, 2)), rng.normal(size=(2,))
    return x, y, w0, b0


def _relaxjax_trajectory(x, y, w0, b0, lr, gamma0, rate):
    with jax.enable_x64(True):
        xs, ys = jnp.asarray(x), jnp.asarray(y)

        def loss(params, i):
            return jnp.mean((xs[i] @ params["w"] + params["b"] - ys[i]) ** 2)

        gamma = relaxjax.scoping(gamma0, rate)
        # The twin's lr and Nesterov momentum act on the relaxed gradient (x − μ)/γ_t: the
        # transform's output, chained before optax.sgd (the aliases' rate is on x − μ,
        # which differs once γ_t changes under the momentum).
        tx = optax.chain(
            relaxjax.local_entropy(gamma, **HYPER),
            optax.sgd(lr, momentum=0.9, nesterov=True),
        )
        params = {"w": jnp.asarray(w0), "b": jnp.asarray(b0)}
        state, trajectory = tx.init(params), []
        for t in range(OUTER_STEPS):
            grads = jax.grad(loss)(params, t * L)  # mini-batch 0 of step t, at x
            updates, state = tx.update(
                grads, state, params, grad_fn=lambda p, i, t=t: jax.grad(loss)(p, t * L + i)
            )
            params = optax.apply_updates(params, updates)
            trajectory.append({k: np.asarray(v) for k, v in params.items()})
        return trajectory


def _torch_trajectory(EntropySGD, x, y, w0, b0, lr, gamma0, rate):
    w = torch.tensor(w0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    optimizer = EntropySGD([w, b], lr=lr, gamma=gamma0, scoping=rate, **HYPER)
    batches = iter(range(OUTER_STEPS * L))

    def closure():
        i = next(batches)
        optimizer.zero_grad()
        loss = torch.mean((torch.from_numpy(x[i]) @ w + b - torch.from_numpy(y[i])) ** 2)
        loss.backward()
        return loss

    trajectory = []
    for _ in range(OUTER_STEPS):
        optimizer.step(closure)
        trajectory.append({"w": w.detach().numpy().copy(), "b": b.detach().numpy().copy()})
    return trajectory


def test_pytorch_entropy_sgd_takes_relaxjax_steps(load_benchmark):
    x, y, w0, b0 = _problem()
    # Scoping shrinks γ every outer step; momentum, weight decay and averaging all act.
    setting = dict(lr=0.3, gamma0=0.5, rate=0.25)
    expected = _relaxjax_trajectory(x, y, w0, b0, **setting)
    EntropySGD = load_benchmark("torch_entropy_sgd").EntropySGD
    actual = _torch_trajectory(EntropySGD, x, y, w0, b0, **setting)
    for t, (e, a) in enumerate(zip(expected, actual, strict=True)):
        for name in ("w", "b"):
            assert np.abs(e[name] - (w0 if name == "w" else b0)).max() > 0.05  # it moved
            # relaxjax.scoping computes γ_t in float32: agreement to ~1e-8, not 1e-15.
            np.testing.assert_allclose(a[name], e[name], rtol=0, atol=1e-7, err_msg=f"step {t}")


def test_pytorch_entropy_sgd_step_noise_scale(load_benchmark):
    """With f = 0, γ huge and α = 0, one inner step is pure noise of std ε√(2η′)."""
    EntropySGD = load_benchmark("torch_entropy_sgd").EntropySGD
    torch.manual_seed(0)
    p = torch.zeros(200_000, dtype=torch.float64, requires_grad=True)
    eps, eta = 0.5, 0.08
    optimizer = EntropySGD(
        [p], lr=1.0, gamma=1e12, num_steps=1, step_size=eta, noise=eps, alpha=0.0, momentum=0
    )

    def closure():
        optimizer.zero_grad()
        loss = 0.0 * p.sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # x ← x − lr·(x − y)/γ with γ = 1e12: read y through μ
    displacement = -optimizer.state[p]["x"] + optimizer.state[p]["mu"]
    assert displacement.std().item() == pytest.approx(eps * np.sqrt(2 * eta), rel=0.01)


TWINS = ["mnistfc", "lenet", "lenet-pytorch", "mnistfc-dr", "lenet-dr"]


@pytest.mark.parametrize("name", TWINS)
def test_pytorch_networks_match_relaxjax_parameter_counts(name, load_benchmark):
    net = load_benchmark("torch_entropy_sgd").get_torch_model(name)
    init = models.get_model(name).init
    params, _ = jax.eval_shape(init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    relaxjax_count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    assert sum(p.numel() for p in net.parameters()) == relaxjax_count
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def _copy_flax_into_torch(variables, net):
    """Loads relaxjax's variables into the PyTorch twin, layer by layer in order.

    Flax numbers its layers in call order (Conv_i, Dense_i, BatchNorm_i), the order
    of the twin's ``nn.Sequential``. The first dense layer after the convolutions
    reads Flax's NHWC flattening; PyTorch flattens NCHW, so its input rows move.
    """
    params, stats = variables["params"], variables["batch_stats"]
    counts = {"Conv": 0, "Dense": 0, "BatchNorm": 0}
    previous_conv_channels = None
    with torch.no_grad():
        for module in net.modules():
            kind = {
                torch.nn.Conv2d: "Conv",
                torch.nn.Linear: "Dense",
                torch.nn.BatchNorm1d: "BatchNorm",
                torch.nn.BatchNorm2d: "BatchNorm",
            }.get(type(module))
            if kind is None:
                continue
            name = f"{kind}_{counts[kind]}"
            counts[kind] += 1
            layer = {k: np.asarray(v) for k, v in params[name].items()}
            if kind == "Conv":
                module.weight.copy_(torch.tensor(layer["kernel"].transpose(3, 2, 0, 1)))
                module.bias.copy_(torch.tensor(layer["bias"]))
                previous_conv_channels = layer["kernel"].shape[-1]
            elif kind == "Dense":
                kernel = layer["kernel"]  # (inputs, outputs)
                if previous_conv_channels is not None:  # rows (h, w, c) → (c, h, w)
                    c = previous_conv_channels
                    hw = kernel.shape[0] // c
                    kernel = kernel.reshape(hw, c, -1).transpose(1, 0, 2).reshape(hw * c, -1)
                    previous_conv_channels = None
                module.weight.copy_(torch.tensor(np.ascontiguousarray(kernel.T)))
                module.bias.copy_(torch.tensor(layer["bias"]))
            else:
                module.weight.copy_(torch.tensor(layer["scale"]))
                module.bias.copy_(torch.tensor(layer["bias"]))
                module.running_mean.copy_(torch.tensor(np.asarray(stats[name]["mean"])))
                module.running_var.copy_(torch.tensor(np.asarray(stats[name]["var"])))
    assert counts == {k: sum(1 for n in params if n.startswith(k + "_")) for k in counts}


@pytest.mark.parametrize("name", TWINS)
def test_pytorch_twin_computes_the_relaxjax_network(name, load_benchmark):
    """Same weights, same outputs (evaluation mode): the twins have relaxjax's layers in
    relaxjax's order. Random BatchNorm statistics and scales make a BatchNorm moved across
    a ReLU or a pooling, or a missing one, change the outputs."""
    module = models.get_module(name)
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)
    variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    variables = {
        "params": jax.tree.map(
            lambda v: v + 0.5 * jax.random.normal(next(keys), v.shape), variables["params"]
        ),
        "batch_stats": {
            layer: {
                "mean": jax.random.uniform(next(keys), stats["mean"].shape, minval=-1.0),
                "var": jax.random.uniform(next(keys), stats["var"].shape, minval=0.5, maxval=1.5),
            }
            for layer, stats in variables["batch_stats"].items()
        },
    }
    expected = np.asarray(module.apply(variables, jnp.asarray(x), train=False))
    net = load_benchmark("torch_entropy_sgd").get_torch_model(name).eval()
    _copy_flax_into_torch(variables, net)
    got = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


def test_compare_pytorch_smoke(tmp_path, load_benchmark):
    compare = load_benchmark("compare_pytorch")
    argv = ["--smoke", "--models", "mnistfc", "--unroll", "default", "--torch-threads", "1"]
    argv += ["--batch-size", "16", "--out-dir", str(tmp_path), "--stem", "cmp"]
    assert compare.main(argv) == 0
    results = json.loads((tmp_path / "cmp.json").read_text())
    env = results["environment"]
    assert env["settings"]["L"] == 2 and env["versions"]["torch"] == torch.__version__
    assert env["command"].startswith("python benchmarks/compare_pytorch.py --smoke")
    impls = {(r["impl"], r["model"]) for r in results["results"]}
    assert impls == {("relaxjax", "mnistfc"), ("pytorch", "mnistfc")}
    for row in results["results"]:
        assert row["grad_eval_ms"] > 0 and len(row["outer_step_ms_per_round"]) == 1
        assert row["ratio_vs_pytorch"] > 0
    table = (tmp_path / "cmp.md").read_text()
    assert "| cpu | mnistfc | relaxjax (unroll=default) |" in table
