"""Communication per outer step of data-parallel Entropy-SGD and of Parle, from compiled HLO,
and what it predicts on 8, 64 and 512 GPUs or TPU chips.

For each model this script compiles ``relaxjax train``'s outer step on ``--devices``
simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count``), exactly as
the command lays it out, and counts every collective of the compiled program with its
payload (``parle_benchmark.communication``: loop bodies times their trip count):

* ``entropy-sgd`` data parallel: the mesh 1 × d, every mini-batch split over d devices;
* ``parle``, one replica per device: the mesh d × 1;
* ``parle``, d/2 replicas of 2 devices each: the mesh (d/2) × 2.

It also compiles the unsharded step once to read its floating-point operations (XLA's
cost analysis), the computation of one replica's outer step. Nothing is trained: the
data are zeros of the data set's shape. The projection then applies a ring all-reduce's
bandwidth term and a tree's latency term to the measured collectives at the interconnect
figures of ``SYSTEMS`` (assumptions, stated in the results file).

    python benchmarks/scaling.py                  # mnistfc, lenet, allcnn; writes results/
    python benchmarks/scaling.py --smoke          # mnistfc, 2 devices, L = 2; for the test
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHAPES = {"mnistfc": ("mnist", (28, 28, 1)), "lenet": ("mnist", (28, 28, 1))}
SHAPES["allcnn"] = ("cifar10", (32, 32, 3))
PROJECTED_DEVICES = (8, 64, 512)

# (name, devices per node, in-node GB/s per device per direction, in-node latency s,
#  across-node GB/s per device per direction, across-node latency s, sustained FLOP/s)
SYSTEMS = (
    (
        "GPU: 8 per node on NVLink/NVSwitch (H100 SXM: 900 GB/s both directions), nodes on "
        "InfiniBand NDR (one 400 Gb/s port per GPU)",
        8,
        450e9,
        5e-6,
        50e9,
        10e-6,
        100e12,
    ),
    (
        "TPU v5p: 3D-torus ICI of 4,800 Gb/s per chip",
        None,
        600e9,
        5e-6,
        600e9,
        5e-6,
        100e12,
    ),
)
"""The interconnects of the projection: assumed figures (vendors' peak link rates; a
collective reaches less), and an assumed sustained compute rate (about a fifth of the
peak of an H100 in TF32 or of a v5p in bfloat16; small networks reach less)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--devices", type=int, default=4, help="simulated CPU devices (even)")
    p.add_argument("-L", "--num-steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--smoke", action="store_true", help="mnistfc, 2 devices, L = 2, batch 16")
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.devices, args.num_steps, args.batch_size = ["mnistfc"], 2, 2, 16
    if args.devices < 2 or args.devices % 2:
        p.error("--devices must be an even number >= 2")
    return args


# --------------------------------------------------------------------------- measuring


def _data(model: str, examples: int):
    import jax.numpy as jnp

    from relaxjax.train import DataArrays

    shape = SHAPES[model][1]
    images, labels = jnp.zeros((examples, *shape)), jnp.zeros((examples,), jnp.int32)
    return DataArrays(images, labels, images[:10], labels[:10], num_classes=10)


def measure(args, model: str) -> dict[str, Any]:
    """The compiled layouts' collectives, the unsharded step's FLOPs and the parameters."""
    import jax
    import parle_benchmark as parle

    settings = argparse.Namespace(
        model=model,
        num_steps=args.num_steps,
        batch_size=args.batch_size,
        replicas=args.devices,
        train_limit=None,
        test_limit=None,
        data_dir=None,
    )
    dataset = SHAPES[model][0]
    d = args.devices
    layouts = [
        ("entropy-sgd", "data parallel", d, 1),
        ("parle", "one replica per device", d, d),
        ("parle", "replicas of 2 devices", d, d // 2),
    ]
    if d == 2:
        layouts = layouts[:2]
    rows = []
    for method, layout, devices, replicas in layouts:
        config = parle._config(settings, method, devices, replicas, dataset=dataset)
        examples = config.batch_size * config.optimizer.inner_steps * replicas
        try:
            run = parle._Run(config, _data(model, examples))
        except Exception as error:  # a layout the library cannot compile: say so
            message = str(error).strip().splitlines()[0][:300]
            rows.append({"method": method, "layout": layout, "error": message})
            print(f"{model:8s} {method:12s} {layout:24s} does not compile: {message}", flush=True)
            continue
        rows.append(
            {
                "method": method,
                "layout": layout,
                "mesh": dict(run.mesh.shape),
                "replicas": replicas,
                **{k: run.comm[k] for k in ("collectives", "bytes_per_outer_step")},
                "ring_bytes_per_device": run.comm["ring_bytes_per_device"],
                "unknown_trip_counts": run.comm["unknown_trip_counts"],
                "ops": run.comm["ops"],
                "compile_seconds": run.compile_seconds,
            }
        )
        print(
            f"{model:8s} {method:12s} {layout:24s} mesh {rows[-1]['mesh']}: "
            f"{rows[-1]['collectives']} collectives, "
            f"{rows[-1]['bytes_per_outer_step'] / 1e6:.3f} MB per outer step",
            flush=True,
        )
    single = parle._Run(
        parle._config(settings, "entropy-sgd", None, 1, dataset=dataset),
        _data(model, args.batch_size * args.num_steps),
    )
    # XLA's cost analysis counts a loop body once, whatever its trip count: the step's
    # count holds one of its L gradient evaluations. One SGD step's count (one gradient
    # and its update, no loop) supplies the other L - 1.
    sgd_config = parle._config(settings, "sgd", None, 1, dataset=dataset)
    sgd = parle._Run(sgd_config, _data(model, args.batch_size))
    counted, per_gradient = _flops(single.step), _flops(sgd.step)
    params = single.state.params
    return {
        "model": model,
        "parameters": sum(x.size for x in jax.tree.leaves(params)),
        "parameter_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)),
        "flops_per_outer_step": counted + (args.num_steps - 1) * per_gradient,
        "flops_counted_by_xla": counted,
        "flops_per_sgd_step": per_gradient,
        "layouts": rows,
    }


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


# --------------------------------------------------------------------------- projecting


def collective_seconds(op: dict[str, Any], group: int, system: tuple) -> float:
    """One collective of ``op``'s kind and payload over ``group`` devices on ``system``:
    a ring's bandwidth term (2(g−1)/g of the payload for an all-reduce, (g−1)/g for the
    others) at the slowest link the group crosses, and a tree's latency term 2·log₂ g·α."""
    if group < 2:
        return 0.0
    _, per_node, fast, fast_latency, slow, slow_latency, _ = system
    across = per_node is not None and group > per_node
    bandwidth, latency = (slow, slow_latency) if across else (fast, fast_latency)
    share = 2 * (group - 1) / group if op["kind"] == "all-reduce" else (group - 1) / group
    return share * op["bytes"] / bandwidth + 2 * math.log2(group) * latency


def project(result: dict[str, Any], devices: int, system: tuple) -> dict[str, Any]:
    """Communication and compute per outer step on ``devices`` devices of ``system``.

    The measured collectives keep their payload and multiplicity; a group that spanned
    the measured mesh's ``'data'`` axis spans the projected one's, likewise for the
    replicas. Data parallel: at the fixed batch (compute split g ways; impossible when
    the batch has fewer examples than devices) and at the batch per device fixed
    (global batch B·g). Parle: one replica per device (a replica's full batch each)."""
    rate = system[-1]
    flops = result["flops_per_outer_step"]
    out = {"devices": devices, "entropy-sgd": None, "parle": None}
    for row in result["layouts"]:
        if row["layout"] == "replicas of 2 devices" or "error" in row:
            continue
        measured = row["mesh"]
        axis = "data" if row["method"] == "entropy-sgd" else "replica"
        seconds = 0.0
        for op in row["ops"]:
            group = devices if op["group"] == measured[axis] else op["group"] or 1
            seconds += op["times"] * collective_seconds(op, group, system)
        out[row["method"]] = seconds
    out["compute_seconds"] = flops / rate
    out["dp_fixed_batch_compute_seconds"] = (
        flops / devices / rate if devices <= result["batch_size"] else None
    )
    return out


# --------------------------------------------------------------------------- report


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{1e3 * seconds:.3g}"


def _share(comm: float | None, compute: float | None) -> str:
    if comm is None:
        return "—"
    return "batch < devices" if compute is None else f"{100 * comm / (comm + compute):.0f}%"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Communication per outer step: data-parallel Entropy-SGD and Parle",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}",
        f"- versions: {result['versions']}",
        f"- date: {result['date']}",
        f"- batch {result['batch_size']} per replica, L = {result['L']}; compiled for "
        f"{result['devices']} simulated CPU devices (`relaxjax train`'s step and layout)",
        "",
        "## Measured: the collectives of the compiled outer step",
        "",
        "Every collective of the compiled program, loop bodies counted by their trip count. "
        "Payload = the result shape of each collective; ring bytes = what each device sends "
        "in a ring implementation.",
        "",
        "| model | parameters (MB) | GFLOP / outer step, one replica | method | layout | mesh "
        "(replica × data) | collectives | payload (MB) | ring bytes / device (MB) |",
        "| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in result["models"]:
        for row in r["layouts"]:
            if "error" in row:
                lines.append(
                    f"| {r['model']} | {r['parameter_bytes'] / 1e6:.3f} | "
                    f"{r['flops_per_outer_step'] / 1e9:.2f} | {row['method']} | {row['layout']} "
                    f"| does not compile: `{row['error']}` | | | |"
                )
                continue
            mesh = "×".join(str(v) for v in row["mesh"].values())
            lines.append(
                f"| {r['model']} | {r['parameter_bytes'] / 1e6:.3f} | "
                f"{r['flops_per_outer_step'] / 1e9:.2f} | {row['method']} | {row['layout']} | "
                f"{mesh} | {row['collectives']} | {row['bytes_per_outer_step'] / 1e6:.3f} | "
                f"{row['ring_bytes_per_device'] / 1e6:.3f} |"
            )
    lines += [
        "",
        "## Projected: 8, 64 and 512 devices",
        "",
        "Assumed interconnects (peak link rates; collectives reach less) and compute:",
        "",
    ]
    for system in SYSTEMS:
        name, per_node, fast, fast_lat, slow, slow_lat, rate = system
        where = (
            f"{fast / 1e9:.0f} GB/s per device and α = {fast_lat * 1e6:.0f} µs within a node "
            f"of {per_node}, {slow / 1e9:.0f} GB/s and α = {slow_lat * 1e6:.0f} µs across nodes"
            if per_node
            else f"{fast / 1e9:.0f} GB/s per chip, α = {fast_lat * 1e6:.0f} µs"
        )
        lines.append(f"- {name}: {where}; {rate / 1e12:.0f} TFLOP/s sustained.")
    lines += [
        "",
        "Time of one collective: 2(g−1)/g × payload / bandwidth (ring) + 2 log₂ g × α "
        "(tree latency), summed over the measured collectives. Compute: the outer step's "
        "FLOPs (XLA's count of the compiled step, which counts its loop body once, plus "
        "L − 1 plain SGD steps' count for the other gradient evaluations) at the sustained "
        "rate, no overlap of communication and computation. 'share' = "
        "communication / (communication + compute). Data parallel at the fixed batch splits "
        "one outer step's computation over the devices; at a fixed batch per device "
        "(global batch B·g) each device computes a full replica's step, as Parle's "
        "replicas do.",
        "",
        "| model | system | devices | compute (ms) | data parallel: comm (ms) | share, "
        "fixed batch | share, batch per device | Parle: comm (ms) | share |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["models"]:
        for system, rows in zip(SYSTEMS, r["projection"], strict=True):
            for p in rows:
                lines.append(
                    f"| {r['model']} | {system[0].split(':')[0]} | {p['devices']} | "
                    f"{_ms(p['compute_seconds'])} | {_ms(p['entropy-sgd'])} | "
                    f"{_share(p['entropy-sgd'], p['dp_fixed_batch_compute_seconds'])} | "
                    f"{_share(p['entropy-sgd'], p['compute_seconds'])} | {_ms(p['parle'])} | "
                    f"{_share(p['parle'], p['compute_seconds'])} |"
                )
    lines += ["", _reading(result), ""]
    path.write_text("\n".join(lines) + "\n")


def _reading(result: dict[str, Any]) -> str:
    parts = []
    for r in result["models"]:
        rows = {row["layout"]: row for row in r["layouts"] if "error" not in row}
        if not {"data parallel", "one replica per device"} <= set(rows):
            failed = [row["layout"] for row in r["layouts"] if "error" in row]
            parts.append(f"{r['model']}: {', '.join(failed)} does not compile (see above)")
            continue
        dp, parle = rows["data parallel"], rows["one replica per device"]
        ratio = dp["bytes_per_outer_step"] / max(parle["bytes_per_outer_step"], 1)
        shares = []
        for system, projected in zip(SYSTEMS, r["projection"], strict=True):
            at = {p["devices"]: p for p in projected}[max(PROJECTED_DEVICES)]
            shares.append(
                f"{system[0].split(':')[0]} {_share(at['entropy-sgd'], at['compute_seconds'])} "
                f"vs {_share(at['parle'], at['compute_seconds'])}"
            )
        parts.append(
            f"{r['model']}: data parallel moves {dp['bytes_per_outer_step'] / 1e6:.2f} MB in "
            f"{dp['collectives']} collectives per outer step, Parle "
            f"{parle['bytes_per_outer_step'] / 1e6:.2f} MB in {parle['collectives']} "
            f"({ratio:.0f}× less); communication's share of an outer step on "
            f"{max(PROJECTED_DEVICES)} devices, data parallel with the batch per device fixed "
            f"vs Parle: {', '.join(shares)}"
        )
    return (
        "**Reading.** "
        + "; ".join(parts)
        + f". Data-parallel Entropy-SGD all-reduces the gradient at every one of the L = "
        f"{result['L']} inner steps (and BatchNorm's statistics), so its traffic per outer "
        "step is about L times the parameters whatever the number of devices; at a fixed "
        "batch its computation per device also shrinks as 1/g, and the batch cannot be split "
        "over more devices than it has examples. Parle all-reduces the reference x̄ once per "
        "outer step, the parameters' size, while every replica computes a full batch's L "
        "gradients. The shares scale with the assumed compute rate: a network that sustains "
        "less than it computes more slowly, and communication's share falls."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "jax" in sys.modules:
        raise RuntimeError("run this script in a fresh process: it sets the simulated devices")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    sys.path.insert(0, str(HERE))
    from _env import command_line, environment, write_json

    result = {
        "command": command_line(__file__, argv),
        **environment(),
        "devices": args.devices,
        "L": args.num_steps,
        "batch_size": args.batch_size,
        "systems": [list(s) for s in SYSTEMS],
        "models": [],
    }
    for model in args.models:
        measured = measure(args, model)
        measured["batch_size"] = args.batch_size
        measured["projection"] = [
            [project(measured, n, system) for n in PROJECTED_DEVICES] for system in SYSTEMS
        ]
        result["models"].append(measured)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "scaling.json", result)
    write_markdown(result, out / "scaling.md")
    print(f"wrote {out / 'scaling.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
