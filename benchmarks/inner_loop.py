"""Inner-loop efficiency: a relaxation outer step against L separately jitted SGD steps.

For each model (batch 128 by default), times side by side in one process,
after compilation, interleaved over rounds:

* ``baseline``: a Python loop of L calls of one jitted plain SGD step
  (gradient + ``optax.sgd`` update) on the same L mini-batches;
* one jitted outer step of ``relaxjax.local_entropy`` (L inner steps) for the
  inner-loop candidates: rolled ``lax.scan`` with and without the canonical
  convolution rewrite, partial and full unrolling, and both noise generators;
* references: the baseline's SGD steps inside one ``lax.scan`` (what a loop alone
  changes), and the step and the baseline with flax's threefry dropout masks
  (``relaxjax.models.get_model(name, dropout_masks="threefry")``).

The ratio's floor is 1.0 (the relaxation adds only O(parameters) vector work
per inner step). It also records, for the default configuration, compile time
and XLA's peak memory estimate as L goes from 1 to 50.

    python benchmarks/inner_loop.py                    # all models, writes results/
    python benchmarks/inner_loop.py --models lenet --rounds 3
    python benchmarks/inner_loop.py --smoke            # seconds; what the test runs
    python benchmarks/inner_loop.py --models allcnn --L 5 --rounds 2 --repeats 1 \
        --no-scaling --candidates default "no noise" --stem inner_loop_allcnn

(On a 2-core CPU the All-CNN run without the convolution rewrite, "rolled scan,
no conv rewrite", did not finish within 24 minutes, so the All-CNN results leave it out.)

Like ``relaxjax train``, it runs with XLA:CPU's concurrency-optimized scheduler
off (``relaxjax.cpu.xla_flags``); to time XLA's default instead::

    XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=true \
        python benchmarks/inner_loop.py --models lenet --no-scaling --stem inner_loop_xla_scheduler
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax

import relaxjax
from relaxjax import models

sys.path.insert(0, str(Path(__file__).parent))
from _env import command_line, environment, write_json  # noqa: E402

# name -> keyword arguments of relaxjax.local_entropy; "model": options of the network
# (relaxjax.models.get_model), for the reference rows that change the network.
CANDIDATES = {
    "default (rolled scan, canonical convs, hash noise)": {},
    "rolled scan, no conv rewrite": {"canonical_convolutions": False},
    "rolled scan, threefry noise": {"noise_generator": "threefry"},
    "unroll=4": {"unroll": 4},
    "fully unrolled, no conv rewrite": {"unroll": True, "canonical_convolutions": False},
    "first gradient in the loop (reuse_gradient=False, the training command's)": {
        "reuse_gradient": False
    },
    "no noise (Hopf-Lax cost)": {"noise": 0.0},
    "default with flax's nn.Dropout masks (dropout_masks='threefry')": {
        "model": {"dropout_masks": "threefry"}
    },
}
BASELINE = "baseline: L jitted SGD steps"
SCAN_BASELINE = "reference: the same L SGD steps inside one lax.scan"
FLOOR = "floor: L jitted SGD steps + L draws of the same noise"
FLOOR_TARGET = 1.05  # a noisy relaxation step costs at most 1.05 x the floor
# The noisy steps held to the floor: the transform's default and the training command's.
NOISY_STEPS = (
    "default (rolled scan, canonical convs, hash noise)",
    "first gradient in the loop (reuse_gradient=False, the training command's)",
)


def _model_variant(options: dict) -> tuple:
    """A candidate's network options (``models.get_model``), hashable: () for the default."""
    return tuple(sorted(options.get("model", {}).items()))


def variant_baseline(variant: tuple) -> str:
    """The label of the SGD baseline timed beside the candidates that change the network."""
    return "reference baseline: L jitted SGD steps with " + ", ".join(
        f"{key}={value!r}" for key, value in variant
    )


# Compile-time modes: the transform's default, and what ``relaxjax train`` uses.
SCALING_MODES = {"reuse_gradient=True (default)": True, "reuse_gradient=False (train)": False}


@functools.cache
def _problem(name: str, num_steps: int, batch_size: int, model_options: tuple = ()):
    """``(params, batches, grad)`` of network ``name`` on random batches, built once per
    arguments; ``model_options``: ``(key, value)`` pairs for ``models.get_model``."""
    model = models.get_model(name, **dict(model_options))
    return _build_problem(name, num_steps, batch_size, model)


def _build_problem(name: str, num_steps: int, batch_size: int, model):
    """:func:`_problem` for ``model`` (a variant of network ``name``'s layers)."""
    shape = models.INPUT_SHAPES[name]

    @jax.jit  # one compilation instead of one per eager operation of Flax's init
    def make():
        images = jax.random.normal(jax.random.PRNGKey(0), (num_steps, batch_size, *shape))
        labels = jax.random.randint(jax.random.PRNGKey(1), (num_steps, batch_size), 0, 10)
        keys = jax.random.split(jax.random.PRNGKey(2), num_steps)
        return images, labels, keys, model.init(jax.random.PRNGKey(3), images[0, :1])

    images, labels, keys, (params, model_state) = make()

    def loss(p, batches, i):
        """Loss on mini-batch i; the batches are an argument of the jitted step (as in
        training), not constants folded into the program."""
        images, labels, keys = batches
        logits, _ = model.apply(p, model_state, images[i], train=True, dropout_key=keys[i])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels[i]).mean()

    return params, (images, labels, keys), jax.grad(loss)


def _timed(fn, *args, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def interleaved_medians(runners: dict, rounds: int, repeats: int) -> dict:
    """Median seconds of each ``runners[label] = (fn, args)`` call, after a warm-up call of
    each: ``rounds`` rounds over all of them in turn, so drifts in machine load hit all
    alike, ``repeats`` timed calls per runner and round."""
    for fn, args in runners.values():
        jax.block_until_ready(fn(*args))
    samples = {label: [] for label in runners}
    for _ in range(rounds):
        for label, (fn, args) in runners.items():
            samples[label] += _timed(fn, *args, repeats=repeats)
    return {label: float(np.median(s)) for label, s in samples.items()}


def _sgd_step(grad):
    """``(sgd, step)``: plain ``optax.sgd`` and one step of it on mini-batch i, the unit
    both SGD references repeat."""
    sgd = optax.sgd(0.1)

    def step(params, state, batches, i):
        updates, state = sgd.update(grad(params, batches, i), state, params)
        return optax.apply_updates(params, updates), state

    return sgd, step


def sgd_baseline(grad, params, batches, num_steps: int, compiler_options=None):
    """The ratios' denominator: ``num_steps`` separately jitted plain SGD steps on the
    same mini-batches, as ``(run, args)``; the step is compiled with ``compiler_options``
    when given (``jax.jit(...).lower(...).compile``)."""
    sgd, sgd_step = _sgd_step(grad)
    state = sgd.init(params)
    step = jax.jit(sgd_step)
    if compiler_options is not None:
        step = step.lower(params, state, batches, 0).compile(compiler_options)

    def run(params, state, batches):
        for i in range(num_steps):
            params, state = step(params, state, batches, i)
        return params

    return run, (params, state, batches)


def sgd_scan(grad, params, batches, num_steps: int):
    """The same ``num_steps`` plain SGD steps as :func:`sgd_baseline`, but inside one
    jitted ``lax.scan``, as ``(run, args)``: what a loop, rather than the relaxation's
    arithmetic, changes (no dispatch or fresh buffers per step; the loop body's
    scheduling and copies)."""
    sgd, sgd_step = _sgd_step(grad)

    @jax.jit
    def run(params, state, batches):
        def body(carry, i):
            return sgd_step(*carry, batches, i), None

        return jax.lax.scan(body, (params, state), jax.numpy.arange(num_steps))[0][0]

    return run, (params, sgd.init(params), batches)


def sgd_and_draws(grad, params, batches, num_steps: int):
    """The noisy step's floor, as ``(run, args)``: the :func:`sgd_baseline` steps, then
    ``num_steps`` draws of the relaxation's default Langevin noise (the hash generator,
    one normal per parameter and a multiply-add, in one jitted ``lax.scan``) on a tree of
    the parameters' shapes. A noisy relaxation step does this work and some vector
    arithmetic more (the coupling, the average)."""
    run_sgd, args = sgd_baseline(grad, params, batches, num_steps)
    draws = jax.jit(noise_loop("hash", num_steps))
    key = jax.random.PRNGKey(0)

    def run(params, state, batches):
        return run_sgd(params, state, batches), draws(key, params)

    return run, args


def _relaxation_step(grad, num_steps: int, **options):
    tx = optax.chain(
        relaxjax.local_entropy(gamma=1.0, num_steps=num_steps, step_size=0.1, **options),
        optax.sgd(0.1, momentum=0.9, nesterov=True),
    )

    @jax.jit
    def step(params, state, batches):
        updates, state = tx.update(
            grad(params, batches, 0), state, params, grad_fn=lambda p, i: grad(p, batches, i)
        )
        return optax.apply_updates(params, updates), state

    return tx, step


def time_candidates(
    name: str, num_steps: int, batch_size: int, rounds: int, repeats: int, candidates=None
):
    candidates = candidates or CANDIDATES
    params, batches, grad = _problem(name, num_steps, batch_size)
    runners = {
        BASELINE: sgd_baseline(grad, params, batches, num_steps),
        SCAN_BASELINE: sgd_scan(grad, params, batches, num_steps),
        FLOOR: sgd_and_draws(grad, params, batches, num_steps),
    }
    for variant in sorted({_model_variant(options) for options in candidates.values()} - {()}):
        v_params, v_batches, v_grad = _problem(name, num_steps, batch_size, variant)
        runners[variant_baseline(variant)] = sgd_baseline(v_grad, v_params, v_batches, num_steps)
    compile_seconds = {}
    for label, options in candidates.items():
        params, batches, grad = _problem(name, num_steps, batch_size, _model_variant(options))
        transform_options = {k: v for k, v in options.items() if k != "model"}
        tx, step = _relaxation_step(grad, num_steps, **transform_options)
        state = tx.init(params)
        start = time.perf_counter()
        compiled = step.lower(params, state, batches).compile()
        compile_seconds[label] = time.perf_counter() - start
        runners[label] = (compiled, (params, state, batches))
    medians = interleaved_medians(runners, rounds, repeats)
    base = medians[BASELINE]
    return [
        {
            "model": name,
            "candidate": label,
            "seconds_per_outer_step": medians[label],
            "ms_per_gradient": 1e3 * medians[label] / num_steps,
            "ratio_to_baseline": medians[label] / base,
            "ratio_to_scan": medians[label] / medians[SCAN_BASELINE],
            "ratio_to_floor": medians[label] / medians[FLOOR],
            "compile_seconds": compile_seconds.get(label),
        }
        for label in runners
    ]


def noise_loop(draw, num_steps: int):
    """``run(key, y)``: ``num_steps`` steps of y ← y + σ ξ in ``lax.scan``, ξ drawn by
    ``draw`` (a generator name of ``relaxjax``, or ``draw(key, tree)``); ``None``: the
    same loop without a draw, y ← a y + b."""
    from relaxjax.core import noise

    def run(key, y):
        def body(y, i):
            if draw is None:
                return jax.tree.map(lambda a: 0.999 * a + 1e-6, y), None
            k = jax.random.fold_in(key, i)
            xi = noise.gaussian_like(k, y, draw) if isinstance(draw, str) else draw(k, y)
            return jax.tree.map(lambda a, n: a + 1e-5 * n, y, xi), None

        return jax.lax.scan(body, y, jax.numpy.arange(num_steps))[0]

    return run


# The noise table's rows: label -> the draw (None: none; "lax": the hash through lax.erf_inv).
NOISE_WORK = {
    "axpy only (no draw)": None,
    "hash noise (default)": "hash",
    "hash noise through jax.lax.erf_inv": "lax",
    "threefry noise": "threefry",
}


def time_noise(
    name: str, num_steps: int, rounds: int, repeats: int, works=tuple(NOISE_WORK)
) -> list[dict]:
    """The Langevin noise alone: L inner steps of y ← y + σ ξ inside ``lax.scan``.

    Per inner step this is the work the noise adds to the relaxation (the draw of
    one normal per parameter and one fused multiply-add); ``axpy only`` is the
    same loop without the draw (y ← a y + b, the vector-work floor). ``works``: the
    rows of ``NOISE_WORK`` to time.
    """
    from relaxjax.core import noise

    params, _, _ = _problem(name, 1, 1)

    def with_lax_erf_inv(key, tree):
        # The default generator's uniforms through XLA's own erf⁻¹: what the custom one saves.
        return noise.hash_tree(
            noise.hash_words(key, (), tree),
            tree,
            lambda w, shape: np.sqrt(2.0) * jax.lax.erf_inv(noise.hash_uniform(w, shape)),
        )

    def loop(draw):
        return jax.jit(noise_loop(with_lax_erf_inv if draw == "lax" else draw, num_steps))

    key = jax.random.PRNGKey(0)
    runners = {label: (loop(NOISE_WORK[label]), (key, params)) for label in works}
    medians = interleaved_medians(runners, rounds, repeats)
    size = sum(leaf.size for leaf in jax.tree.leaves(params))
    return [
        {
            "model": name,
            "work": label,
            "parameters": int(size),
            "ms_per_inner_step": 1e3 * m / num_steps,
        }
        for label, m in medians.items()
    ]


def scaling_in_L(name: str, batch_size: int, steps=(1, 2, 5, 20, 50), repeats: int = 3):
    """Median compile time over ``repeats`` fresh compilations, and XLA's temp memory.

    The repeats go round every (mode, L) in turn, so drifts of a shared machine fall
    on all alike. L = 1 has no inner loop at all (no ``grad_fn`` call), so L = 2 is
    the smallest configuration with the loop.
    """
    configs = {}
    for mode, reuse in SCALING_MODES.items():
        for num_steps in steps:
            params, batches, grad = _problem(name, max(num_steps, 1), batch_size)
            tx, step = _relaxation_step(grad, num_steps, reuse_gradient=reuse)
            configs[mode, num_steps] = (step, (params, tx.init(params), batches))
    times = {config: [] for config in configs}
    memory = {}
    for _ in range(repeats):
        for config, (step, args) in configs.items():
            jax.clear_caches()
            start = time.perf_counter()
            compiled = step.lower(*args).compile()
            times[config].append(time.perf_counter() - start)
            analysis = compiled.memory_analysis()
            memory[config] = getattr(analysis, "temp_size_in_bytes", None) if analysis else None
    return [
        {
            "model": name,
            "mode": mode,
            "L": num_steps,
            "compile_seconds": float(np.median(times[mode, num_steps])),
            "compile_seconds_each": times[mode, num_steps],
            "temp_bytes": memory[mode, num_steps],
        }
        for mode, num_steps in configs
    ]


def time_lenet_lowering(batch_size: int, rounds: int, repeats: int) -> list[dict]:
    """One LeNet gradient (outside any loop) with Flax's and relaxjax's pooling/convolutions."""
    variants = [
        ("nn.max_pool + XLA convolutions (Flax's layers)", "xla", "xla"),
        ("max_pool_tiles + XLA convolutions", "tiles", "xla"),
        ("max_pool_tiles + PatchConv (LeNet's CPU default)", "tiles", "patches"),
    ]
    runners = {}
    for label, pooling, conv in variants:
        model = models.functional(models.LeNet(conv_implementation=conv, pooling=pooling))
        params, batches, grad = _build_problem("lenet", 1, batch_size, model)
        step = jax.jit(grad)
        jax.block_until_ready(step(params, batches, 0))
        runners[label] = (step, (params, batches, 0))
    medians = interleaved_medians(runners, rounds, repeats)
    first = next(iter(medians.values()))
    return [
        {"layers": label, "ms_per_gradient": 1e3 * m, "ratio": m / first}
        for label, m in medians.items()
    ]


def floor_verdicts(timing: list[dict]) -> list[str]:
    """One line per model: its noisy steps against the floor, and whether the target holds."""
    lines = []
    for model in dict.fromkeys(row["model"] for row in timing):
        rows = {
            row["candidate"]: row
            for row in timing
            if row["model"] == model and row["candidate"] in NOISY_STEPS
        }
        if not rows:
            continue
        worst = max(row["ratio_to_floor"] for row in rows.values())
        lines.append(
            f"**Floor, {model}**: "
            + ", ".join(f"{label} {row['ratio_to_floor']:.3f}x" for label, row in rows.items())
            + f" the floor; target <= {FLOOR_TARGET:g}: "
            + ("met" if worst <= FLOOR_TARGET else "missed")
            + "."
        )
    return lines


def write_results(
    out_dir: Path, stem: str, command: str, timing, scaling, args, pooling=(), noise=()
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {
        "command": command,
        **environment(),
        "L": args.L,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "repeats": args.repeats,
    }
    write_json(
        out_dir / f"{stem}.json",
        {**header, "timing": timing, "scaling": scaling, "pooling": pooling, "noise": noise},
    )
    lines = [
        "# Inner-loop efficiency",
        "",
        f"- command: `{command}`",
        f"- machine: {header['machine']}",
        f"- versions: {header['versions']}",
        f"- date: {header['date']}",
    ]
    if timing:  # not with --scaling-only
        lines += [
            f"- L = {args.L}, batch {args.batch_size}; medians of {args.rounds} interleaved "
            f"rounds x {args.repeats} repeats, after compilation",
            "",
            "Ratio = time of one relaxation outer step (L inner steps) / time of L separately "
            "jitted plain SGD steps on the same mini-batches. Floor: 1.0. For `mnistfc` (no "
            "convolutions) 'default' and 'rolled scan, no conv rewrite' compile to the same "
            "program: their difference is this machine's timing noise. The rows with "
            "`dropout_masks='threefry'` build the networks with flax's `nn.Dropout` masks "
            "instead of the hashed ones (`relaxjax.models.get_model(name, "
            "dropout_masks='threefry')`); the 'reference baseline' is the SGD steps so built, "
            "so its ratio is what the hashed masks save a plain SGD step. The 'lax.scan' "
            "reference runs the baseline's SGD steps in one loop: a relaxation step costs "
            "what that loop costs plus its own arithmetic (the draw, the iterate and the "
            "average). The 'floor' is the baseline's SGD steps plus L draws of the "
            "relaxation's Langevin noise (the hash generator, exact statistics), timed in the "
            "same rounds: what a noisy relaxation step cannot do without; 'vs floor' divides "
            f"by it (target for the noisy steps: at most {FLOOR_TARGET:g}).",
            "",
            "| model | candidate | ms / gradient | ratio | vs lax.scan SGD | vs floor "
            "| compile (s) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
    else:
        lines.append(f"- batch {args.batch_size}")
    for row in timing:
        compile_s = "" if row["compile_seconds"] is None else f"{row['compile_seconds']:.1f}"
        lines.append(
            f"| {row['model']} | {row['candidate']} | {row['ms_per_gradient']:.1f} | "
            f"{row['ratio_to_baseline']:.2f} | {row['ratio_to_scan']:.2f} | "
            f"{row['ratio_to_floor']:.2f} | {compile_s} |"
        )
    floor_lines = floor_verdicts(timing)
    if floor_lines:
        lines += ["", *floor_lines]
    if noise:
        baseline = {
            row["model"]: row["ms_per_gradient"] for row in timing if row["candidate"] == BASELINE
        }
        lines += [
            "",
            "## What the Langevin noise costs",
            "",
            "L inner steps of y ← y + σξ alone (one standard normal per parameter and a fused "
            "multiply-add), inside `lax.scan`, per inner step; 'axpy only' is the same loop "
            "without the draw. 'share' divides by one baseline gradient (plain SGD step) of "
            "the table above: a noisy relaxation step cannot be cheaper than 1 + share of "
            "the draw on this machine, whatever the rest of the loop does.",
            "",
            "| model | parameters | work | ms / inner step | share of a baseline gradient |",
            "| --- | ---: | --- | ---: | ---: |",
        ]
        for row in noise:
            base = baseline.get(row["model"])
            share = f"{row['ms_per_inner_step'] / base:.3g}" if base else ""
            lines.append(
                f"| {row['model']} | {row['parameters']:,} | {row['work']} | "
                f"{row['ms_per_inner_step']:.2f} | {share} |"
            )
    if scaling:
        lines += [
            "",
            "## Compile time and peak temporary memory against L",
            "",
            f"Median of {1 if args.smoke else args.scaling_repeats} fresh compilations of the "
            "whole outer step, taken in turns over every row (the gradient at x, "
            "then the transform). With `reuse_gradient=True` (the transform's default) "
            "L = 1 has no inner loop and L ≥ 2 compiles a second copy of the gradient "
            "(the loop body); with `reuse_gradient=False` (what `relaxjax train` uses) "
            "every L has the gradient once, in the loop, and XLA drops the step's own.",
            "",
            "| model | mode | L | compile (s) | XLA temp memory (MB) | vs L=1 | vs L=2 "
            "| memory vs L=2 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        by_model: dict[tuple[str, str], dict[int, dict]] = {}
        for row in scaling:
            by_model.setdefault((row["model"], row.get("mode", "")), {})[row["L"]] = row
        for row in scaling:
            ref1 = by_model[(row["model"], row.get("mode", ""))].get(1, row)
            ref2 = by_model[(row["model"], row.get("mode", ""))].get(2, row)
            mem = "" if row["temp_bytes"] is None else f"{row['temp_bytes'] / 2**20:.1f}"
            mem_ratio = (
                f"{row['temp_bytes'] / ref2['temp_bytes']:.3f}"
                if row["temp_bytes"] and ref2["temp_bytes"]
                else ""
            )
            lines.append(
                f"| {row['model']} | {row.get('mode', '')} | {row['L']} | "
                f"{row['compile_seconds']:.2f} | {mem} | "
                f"{row['compile_seconds'] / ref1['compile_seconds']:.2f} | "
                f"{row['compile_seconds'] / ref2['compile_seconds']:.2f} | {mem_ratio} |"
            )
    if pooling:
        lines += [
            "",
            "## LeNet's layers on CPU, one gradient outside any loop",
            "",
            "`relaxjax.models.LeNet` pools with `max_pool_tiles` (non-overlapping windows as a "
            "reshape and a max) and, on CPU, convolves with `PatchConv` (patches times the "
            "kernel matrix), because XLA:CPU runs the select-and-scatter gradient of "
            "`nn.max_pool` and the transposed convolutions of LeNet's small convolutions "
            "slowly; values and gradients equal Flax's layers (tested).",
            "",
            "| layers | ms / gradient | ratio |",
            "| --- | ---: | ---: |",
        ]
        for row in pooling:
            lines.append(f"| {row['layers']} | {row['ms_per_gradient']:.1f} | {row['ratio']:.2f} |")
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mnistfc", "lenet", "allcnn"])
    parser.add_argument("--L", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-scaling", action="store_true", help="skip compile time vs L")
    parser.add_argument("--scaling-only", action="store_true", help="only compile time vs L")
    parser.add_argument(
        "--scaling-repeats", type=int, default=3, help="compilations per L (median)"
    )
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--smoke", action="store_true", help="tiny settings, for the test")
    parser.add_argument(
        "--stem", default=None, help="results file name (default inner_loop[_scaling])"
    )
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        metavar="PREFIX",
        help="time only the candidates whose names start with these prefixes [all]",
    )
    parser.add_argument(
        "--noise-work",
        nargs="+",
        default=None,
        metavar="PREFIX",
        help="time only the noise-table rows whose names start with these prefixes [all]",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.L, args.batch_size, args.rounds, args.repeats = ["mnistfc"], 2, 4, 1, 1
    command = command_line(__file__, argv)
    # The smoke run times the default candidate only (compilation dominates it).
    candidates = dict(list(CANDIDATES.items())[:1]) if args.smoke else None
    if args.candidates:
        candidates = {
            label: options
            for label, options in CANDIDATES.items()
            if any(label.startswith(prefix) for prefix in args.candidates)
        }
        if not candidates:
            parser.error(f"no candidate starts with {args.candidates}; see CANDIDATES")
    works = tuple(
        label
        for label in NOISE_WORK
        if args.noise_work is None or any(label.startswith(p) for p in args.noise_work)
    )
    if not works:
        parser.error(f"no noise-table row starts with {args.noise_work}; see NOISE_WORK")
    timing, scaling, noise = [], [], []
    for name in args.models:
        rows = (
            []
            if args.scaling_only
            else time_candidates(
                name, args.L, args.batch_size, args.rounds, args.repeats, candidates
            )
        )
        for row in rows:
            print(
                f"{name:8s} {row['candidate']:52s} {row['ms_per_gradient']:8.1f} ms/grad "
                f"ratio {row['ratio_to_baseline']:.2f}",
                flush=True,
            )
        timing += rows
        if not args.scaling_only:
            for row in time_noise(name, args.L, args.rounds, args.repeats, works):
                print(
                    f"{name:8s} {row['work']:52s} {row['ms_per_inner_step']:8.2f} ms/step",
                    flush=True,
                )
                noise.append(row)
        if not args.no_scaling:
            steps = (1, 2) if args.smoke else (1, 2, 5, 20, 50)
            repeats = 1 if args.smoke else args.scaling_repeats
            for row in scaling_in_L(name, args.batch_size, steps, repeats):
                print(
                    f"{name:8s} L={row['L']:3d} compile {row['compile_seconds']:.2f}s "
                    f"temp {row['temp_bytes']}",
                    flush=True,
                )
                scaling.append(row)
    pooling = []
    if "lenet" in args.models and not args.scaling_only:
        pooling = time_lenet_lowering(args.batch_size, args.rounds, args.repeats)
        for row in pooling:
            print(f"lenet    {row['layers']:52s} {row['ms_per_gradient']:8.1f} ms/grad")
    stem = args.stem or ("inner_loop_scaling" if args.scaling_only else "inner_loop")
    write_results(Path(args.out_dir), stem, command.strip(), timing, scaling, args, pooling, noise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
