"""The input pipeline's share of a training step.

``relaxjax train`` keeps the preprocessed training set on the device and
gathers (and, for CIFAR, crops and flips) each step's L mini-batches inside the
jitted step. This script times, side by side after compilation, for each
model: (a) one full outer step of ``relaxjax.train.make_train_step`` and (b)
the same step's input work alone — the gather of L·B examples from a
permutation plus augmentation — jitted by itself, and reports (b)/(a).

    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from relaxjax import models, train
from relaxjax.train.optimizers import OptimizerConfig, make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, json_text, write_json  # noqa: E402


def _median_seconds(fn, args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(name, num_steps, batch_size, num_examples, repeats):
    shape = models.INPUT_SHAPES[name]
    augment = shape[-1] == 3  # relaxjax train crops and flips the colour (CIFAR) sets only
    images = jax.random.normal(jax.random.PRNGKey(0), (num_examples, *shape))
    labels = jax.random.randint(jax.random.PRNGKey(1), (num_examples,), 0, 10)
    perm = jax.random.permutation(jax.random.PRNGKey(2), num_examples)
    model = models.get_model(name)
    config = OptimizerConfig("entropy-sgd", num_steps=num_steps)
    tx = make_optimizer(config, outer_steps_per_epoch=100)
    state = train.init_state(train.TrainConfig(model=name), model, tx, images[:1])
    step = train.make_train_step(model, tx, num_steps, batch_size, augment=augment)

    @jax.jit
    def inputs_only(images, labels, perm, key):
        window = perm[: num_steps * batch_size].reshape(num_steps, batch_size)
        x = jnp.take(images, window, axis=0)
        if augment:
            keys = jax.random.split(key, num_steps)
            x = jax.vmap(train.crop_flip)(keys, x)
        return x, jnp.take(labels, window, axis=0)

    def full(state):
        # make_train_step donates its state: time on a fresh copy each call.
        return step(jax.tree.map(jnp.copy, state), images, labels, perm, 0)[1]

    step_seconds = _median_seconds(full, (state,), repeats)
    copy_seconds = _median_seconds(lambda s: jax.tree.map(jnp.copy, s), (state,), repeats)
    input_seconds = _median_seconds(
        inputs_only, (images, labels, perm, jax.random.PRNGKey(3)), repeats
    )
    step_seconds -= copy_seconds
    return {
        "model": name,
        "L": num_steps,
        "batch_size": batch_size,
        "augment": augment,
        "step_ms": 1e3 * step_seconds,
        "input_ms": 1e3 * input_seconds,
        "input_share": input_seconds / step_seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mnistfc", "lenet", "allcnn"])
    parser.add_argument("--L", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.L, args.batch_size, args.repeats = ["mnistfc"], 2, 4, 1
    rows = []
    for name in args.models:
        L = args.L if name != "allcnn" or args.smoke else min(args.L, 5)
        rows.append(
            measure(name, L, args.batch_size, max(10_000, 2 * L * args.batch_size), args.repeats)
        )
        print(json_text(rows[-1]), flush=True)
    header = {
        "command": "python benchmarks/input_pipeline.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        **environment(),
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "input_pipeline.json", {**header, "rows": rows})
    lines = [
        "# Input pipeline's share of a training step",
        "",
        *(f"- {k}: {v}" for k, v in header.items()),
        "",
        "One outer step of `relaxjax train` (Entropy-SGD, L inner steps) against its input "
        "work alone (gather of L·B examples on device + crop/flip for CIFAR), medians.",
        "",
        "| model | L | batch | augment | step (ms) | inputs (ms) | share |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['model']} | {r['L']} | {r['batch_size']} | {r['augment']} | {r['step_ms']:.1f} "
        f"| {r['input_ms']:.2f} | {100 * r['input_share']:.1f}% |"
        for r in rows
    ]
    (out / "input_pipeline.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
