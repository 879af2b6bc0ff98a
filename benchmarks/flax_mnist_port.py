"""Flax's own MNIST example, ported to relaxjax as the README says, beside the original.

The network, data scaling, batch size, shuffling and optimizer are those of Flax's linen
example (``examples/mnist/train.py``: a two-convolution CNN, images / 255, batch 128,
``optax.sgd(0.1, momentum=0.9)``). Each port changes only what the README tells a user
to change, through ``relaxjax.adapters.RelaxTrainState`` and ``linen_grad_fn``:

* ``sgd``: the example as it is.
* ``entropy-sgd``: the README's porting rule, SGD's rate kept as the inner step size,
  ``relaxjax.entropy_sgd(1.0, gamma=GAMMA, step_size=0.1, momentum=0.9, num_steps=L)``.
* ``adamw`` and ``local-entropy+adamw``: the README's first snippet, ``local_entropy``
  put in front of ``optax.adamw`` with its rate times L (an outer step stands for L of
  its steps); ``local-entropy+adamw-same-rate`` keeps the rate unchanged, to show why.

Every run gets the same budget of gradient evaluations (equal *effective epochs*: an
outer step of a relaxation costs L of them), the same initialisation and the same
sequence of mini-batches for a seed, and is scored on the whole test set. The README's
claim is that each port lands within 0.3 points of test accuracy of the optimizer it
replaces; the results file says whether it did.

    python benchmarks/flax_mnist_port.py --data-dir ../shared/data
    python benchmarks/flax_mnist_port.py --smoke   # tiny generated data, a few steps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import relaxjax
from relaxjax import data
from relaxjax.adapters import RelaxTrainState, linen_grad_fn

sys.path.insert(0, str(Path(__file__).parent))
from _env import command_line, environment, provenance_lines, smoke_mnist, write_json  # noqa: E402

# The README's values (tests/test_readme.py checks that the README shows these).
README_LOCAL_ENTROPY = dict(gamma=1.0, num_steps=5, step_size=0.1, noise=1e-4)
README_PORT = dict(gamma=1.0, num_steps=5)  # entropy_sgd(1.0, step_size=lr, momentum=m)
SGD_RATE, SGD_MOMENTUM, ADAMW_RATE = 0.1, 0.9, 1e-3
TOLERANCE_POINTS = 0.3


class CNN(nn.Module):
    """The CNN of Flax's linen MNIST example."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(features=32, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.Conv(features=64, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(features=256)(x)
        x = nn.relu(x)
        return nn.Dense(features=10)(x)


def optimizers(gamma: float, num_steps: int) -> dict[str, tuple[optax.GradientTransformation, int]]:
    """name -> (transform, gradient evaluations per step), as the README writes them."""
    local_entropy = {**README_LOCAL_ENTROPY, "gamma": gamma, "num_steps": num_steps}
    return {
        "sgd": (optax.sgd(SGD_RATE, momentum=SGD_MOMENTUM), 1),
        "entropy-sgd": (
            relaxjax.entropy_sgd(
                1.0, gamma=gamma, step_size=SGD_RATE, momentum=SGD_MOMENTUM, num_steps=num_steps
            ),
            num_steps,
        ),
        "adamw": (optax.adamw(ADAMW_RATE), 1),
        "local-entropy+adamw": (
            optax.chain(
                relaxjax.local_entropy(**local_entropy), optax.adamw(ADAMW_RATE * num_steps)
            ),
            num_steps,
        ),
        "local-entropy+adamw-same-rate": (
            optax.chain(relaxjax.local_entropy(**local_entropy), optax.adamw(ADAMW_RATE)),
            num_steps,
        ),
    }


BASELINE = {
    "entropy-sgd": "sgd",
    "local-entropy+adamw": "adamw",
    "local-entropy+adamw-same-rate": "adamw",
}


def load(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images (float32 in [0, 1], NHWC, as the Flax example) and labels."""
    if args.smoke:
        train, test = smoke_mnist(args.smoke_examples)
    else:
        train = data.load_dataset("mnist", "train", data_dir=args.data_dir, download=False)
        test = data.load_dataset("mnist", "test", data_dir=args.data_dir, download=False)

    def scale(images):
        return (np.asarray(images, np.float32) / 255.0).reshape(-1, 28, 28, 1)

    return scale(train[0]), np.asarray(train[1]), scale(test[0]), np.asarray(test[1])


def loss_fn(apply_fn, params, batch):
    images, labels = batch
    logits = apply_fn({"params": params}, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_step(relaxation: bool):
    """The example's ``train_step``; for a relaxation, the README's few changed lines."""

    def step(state, batches):  # batches: (images, labels) with L mini-batches on axis 0
        loss = lambda params, batch: loss_fn(state.apply_fn, params, batch)  # noqa: E731
        batch0 = jax.tree.map(lambda b: b[0], batches)
        value, grads = jax.value_and_grad(loss)(state.params, batch0)
        if relaxation:
            grad_fn = linen_grad_fn(loss, batches)
            return state.apply_gradients(grads=grads, grad_fn=grad_fn), value
        return state.apply_gradients(grads=grads), value

    return jax.jit(step)


@jax.jit
def _correct(state, images, labels):
    return jnp.sum(jnp.argmax(state.apply_fn({"params": state.params}, images), -1) == labels)


def test_accuracy(state, images, labels, batch_size=1000) -> float:
    correct = sum(
        int(_correct(state, images[s : s + batch_size], labels[s : s + batch_size]))
        for s in range(0, len(images), batch_size)
    )
    return 100.0 * correct / len(images)


def mini_batches(num_examples, batch_size, seed):
    """Index arrays of the example's shuffled, complete mini-batches, epoch after epoch."""
    epoch = 0
    while True:
        perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
        for i in range(num_examples // batch_size):
            yield perm[i * batch_size : (i + 1) * batch_size]
        epoch += 1


def train_one(name, tx, per_step, seed, arrays, args) -> dict[str, Any]:
    train_x, train_y, test_x, test_y = arrays
    model = CNN()
    params = model.init(jax.random.key(seed), jnp.ones((1, 28, 28, 1)))["params"]
    state = RelaxTrainState.create(apply_fn=model.apply, params=params, tx=tx)
    step = make_step(per_step > 1)
    batches_per_epoch = len(train_x) // args.batch_size
    if args.max_steps_per_epoch:
        batches_per_epoch = min(batches_per_epoch, args.max_steps_per_epoch)
    budget = int(args.epochs * batches_per_epoch)  # gradient evaluations
    source = mini_batches(len(train_x), args.batch_size, seed)
    evaluations, seconds, curve, next_report = 0, [], [], batches_per_epoch
    while evaluations + per_step <= budget:
        idx = np.stack([next(source) for _ in range(per_step)])
        batch = (jnp.asarray(train_x[idx]), jnp.asarray(train_y[idx]))
        start = time.perf_counter()
        state, loss = step(state, batch)
        loss = float(loss)  # waits for the step
        if evaluations > 0:  # the first step compiles
            seconds.append(time.perf_counter() - start)
        evaluations += per_step
        if evaluations >= next_report or evaluations + per_step > budget:
            accuracy = test_accuracy(state, test_x, test_y)
            curve.append(
                {
                    "effective_epochs": evaluations / batches_per_epoch,
                    "test_accuracy": accuracy,
                    "train_loss": loss,
                }
            )
            print(f"{name} seed {seed}: {curve[-1]}", flush=True)
            next_report += batches_per_epoch
    return {
        "optimizer": name,
        "seed": seed,
        "gradient_evaluations": evaluations,
        "steps": int(state.step),
        "curve": curve,
        "final_test_accuracy": curve[-1]["test_accuracy"],
        "ms_per_gradient": 1e3 * float(np.median(seconds)) / per_step if seconds else None,
    }


def summarise(rows):
    out = []
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        accuracies = np.array([r["final_test_accuracy"] for r in rows if r["optimizer"] == name])
        out.append(
            {
                "optimizer": name,
                "seeds": len(accuracies),
                "mean": float(accuracies.mean()),
                "std": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else None,
                "per_seed": accuracies.tolist(),
            }
        )
    return out


def verdicts(summary):
    """Each port against the optimizer it replaces: mean accuracy gap, within tolerance?"""
    means = {s["optimizer"]: s["mean"] for s in summary}
    return [
        {
            "port": port,
            "baseline": base,
            "gap_points": means[base] - means[port],
            "within_tolerance": means[base] - means[port] <= TOLERANCE_POINTS,
        }
        for port, base in BASELINE.items()
        if port in means and base in means
    ]


def write_markdown(path, result):
    config = result["config"]
    lines = [
        "# Flax's MNIST example ported to relaxjax",
        "",
        *provenance_lines(result),
        "",
        f"The CNN of Flax's linen MNIST example on {config['data']}, batch "
        f"{config['batch_size']}, {config['epochs']} effective epochs "
        f"({config['gradient_evaluations']} gradient evaluations) per run, seeds "
        f"{config['seeds']}; L = {config['num_steps']}, γ = {config['gamma']} for both "
        "ports. Same initialisation and mini-batch sequence per seed for every optimizer. "
        "Test accuracy (%) on the whole test set at the end, mean ± std over seeds.",
        "",
        "| optimizer | as written | seeds | test accuracy (%) | per seed |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for s in result["summary"]:
        spread = f" ± {s['std']:.2f}" if s["std"] is not None else ""
        per_seed = ", ".join(f"{a:.2f}" for a in s["per_seed"])
        lines.append(
            f"| {s['optimizer']} | `{config['written'][s['optimizer']]}` | {s['seeds']} | "
            f"{s['mean']:.2f}{spread} | {per_seed} |"
        )
    lines += [
        "",
        f"Each port against the optimizer it replaces (tolerance {TOLERANCE_POINTS} points):",
        "",
    ]
    for v in result["verdicts"]:
        word = "within" if v["within_tolerance"] else "NOT within"
        side = "behind" if v["gap_points"] > 0 else "ahead of"
        lines.append(
            f"- {v['port']}: {abs(v['gap_points']):.2f} points {side} {v['baseline']} "
            f"({word} tolerance)."
        )
    lines += ["", "Test accuracy (%) after each effective epoch:", ""]
    for r in result["rows"]:
        cells = ", ".join(
            f"{c['effective_epochs']:.2f}: {c['test_accuracy']:.2f}" for c in r["curve"]
        )
        lines.append(f"- {r['optimizer']}, seed {r['seed']}: {cells}")
    path.write_text("\n".join(lines) + "\n")


def written(gamma, num_steps):
    """How each optimizer is written in the user's code (for the results table)."""
    le = {**README_LOCAL_ENTROPY, "gamma": gamma, "num_steps": num_steps}
    args = ", ".join(f"{k}={v:g}" for k, v in le.items())
    return {
        "sgd": f"optax.sgd({SGD_RATE}, momentum={SGD_MOMENTUM})",
        "entropy-sgd": (
            f"relaxjax.entropy_sgd(1.0, gamma={gamma:g}, step_size={SGD_RATE}, "
            f"momentum={SGD_MOMENTUM}, num_steps={num_steps})"
        ),
        "adamw": f"optax.adamw({ADAMW_RATE})",
        "local-entropy+adamw": (
            f"chain(relaxjax.local_entropy({args}), optax.adamw({ADAMW_RATE * num_steps:g}))"
        ),
        "local-entropy+adamw-same-rate": (
            f"chain(relaxjax.local_entropy({args}), optax.adamw({ADAMW_RATE}))"
        ),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=3.0, help="effective epochs per run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gamma", type=float, default=README_PORT["gamma"])
    parser.add_argument("--num-steps", type=int, default=README_PORT["num_steps"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--optimizers", nargs="+", default=None, help="a subset of: sgd entropy-sgd adamw ..."
    )
    parser.add_argument("--max-steps-per-epoch", type=int, default=0, help="0: the whole set")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--smoke", action="store_true", help="tiny generated data, few steps")
    parser.add_argument("--smoke-examples", type=int, default=256)
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the .md from --out-dir's .json"
    )
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if args.report_only:
        write_markdown(
            out / "flax_mnist_port.md", json.loads((out / "flax_mnist_port.json").read_text())
        )
        return 0
    if args.smoke:
        args.epochs, args.batch_size, args.seeds, args.num_steps = 1.0, 16, [0], 2
        args.max_steps_per_epoch = 4
    if args.gamma <= 0 or args.num_steps < 1 or args.epochs <= 0:
        parser.error("--gamma and --epochs must be > 0 and --num-steps >= 1")
    table = optimizers(args.gamma, args.num_steps)
    names = args.optimizers or list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        parser.error(f"unknown optimizers {unknown}; choose from {sorted(table)}")
    arrays = load(args)
    batches_per_epoch = len(arrays[0]) // args.batch_size
    if args.max_steps_per_epoch:
        batches_per_epoch = min(batches_per_epoch, args.max_steps_per_epoch)

    rows = [
        train_one(name, *table[name], seed, arrays, args) for seed in args.seeds for name in names
    ]
    summary = summarise(rows)
    result = {
        "command": command_line(__file__, argv),
        **environment(),
        "config": {
            "data": "generated (smoke)" if args.smoke else "MNIST",
            "epochs": args.epochs,
            "gradient_evaluations": int(args.epochs * batches_per_epoch),
            "batch_size": args.batch_size,
            "gamma": args.gamma,
            "num_steps": args.num_steps,
            "seeds": args.seeds,
            "written": written(args.gamma, args.num_steps),
        },
        "summary": summary,
        "verdicts": verdicts(summary),
        "rows": rows,
    }
    write_json(out / "flax_mnist_port.json", result)
    write_markdown(out / "flax_mnist_port.md", result)
    for v in result["verdicts"]:
        print(v, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
