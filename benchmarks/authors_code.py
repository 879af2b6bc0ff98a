"""relaxjax against the authors' own PyTorch Entropy-SGD, on their networks, side by side.

The authors' code is the ``python/`` folder of https://github.com/ucla-vision/entropy-sgd
(``optim.py``: ``EntropySGD``; ``models.py``: ``mnistfc``, ``mnistconv`` = their PyTorch LeNet;
``train.py``, ``loader.py``, ``utils.py``). It is not part of relaxjax: get it with ::

    git clone https://github.com/ucla-vision/entropy-sgd /path/to/entropy-sgd

and pass the checkout (or its ``python/`` folder) as ``--authors-code`` or in the
``RELAXJAX_AUTHORS_CODE`` environment variable. The script copies it to a temporary
folder and applies ``benchmarks/patches/entropy-sgd-python.patch`` there, the smallest
change current PyTorch needs (``patch -p1``, or ``git apply`` without ``patch``); the
checkout itself is never modified. Their ``train.py`` then runs as a script with
``-B 0`` (no epochs): its own argument defaults, seed, ``th.set_num_threads(2)``, data
loader, model and optimizer. Their loader reads MNIST through
``torchvision.datasets.MNIST``; this script gives it a stand-in serving the IDX files
that ``relaxjax.data.load_mnist`` reads (``--data-dir``), since nothing is downloaded
here (torchvision is not needed). Each outer step is ``optimizer.step(helper(), model,
criterion)`` with ``helper`` the closure factory of their ``train()`` (its code object,
run unchanged), exactly their training loop's step.

relaxjax trains the same networks (``relaxjax.models`` ``mnistfc`` and ``lenet-pytorch``, from
the same initial weights, copied from their freshly built model) with the same
hyper-parameters, read from their ``train.py`` options and ``EntropySGD`` state at run
time, through the library API (``relaxjax.local_entropy`` chained with
``optax.sgd``, stepped by ``relaxjax.train.make_train_step``) on the same data arrays.

Two measurements, for each network:

* **time per outer step and per effective epoch**: rounds of ``--steps`` outer steps of
  each implementation in turn (the order alternating between rounds), medians. Their
  outer step evaluates L + 1 gradients (one at x for logging, L inner ones); relaxjax's
  L (and one forward pass at x). An effective epoch is N/B gradient evaluations, so
  per effective epoch theirs is (outer step)·N/(B·(L + 1)), relaxjax's
  (outer step)·N/(B·L). The per-outer-step ratio equals the ratio per effective epoch
  counting only the L gradients that move the weights. In the same rounds, L bare
  mini-batch gradients of each per outer step: their ``feval`` closure called alone, and
  relaxjax's plain jitted SGD step; relaxjax's SGD step over their Entropy-SGD time per
  gradient is the ratio a relaxation step costing its L gradients would reach (not a
  strict bound: a separately jitted step also pays per-call costs that a relaxation's
  loop pays once per outer step, docs/cpu.md §7).
* **time to a test error** (mnistfc 1.5 %, LeNet 0.8 %): each implementation trains
  from the same start, the implementations in turn (order alternating between
  repeats), and is evaluated every ``--eval-every`` effective epochs: BatchNorm
  statistics re-estimated by a pass over the training set with dropout off (their
  ``dry_feed``; relaxjax's ``make_statistics_refresh`` over as many batches), then the
  error on all 10,000 test images. The clock counts training steps only (evaluation
  excluded; relaxjax's compilation is reported apart). A run stops at the target or
  at the cap (``--max-epochs``), and one that did not reach it is reported so.

Results go to ``<out-dir>/authors_code.{md,json}`` with the command line, machine,
versions and date; ``--report-only`` writes the page again from the JSON (no PyTorch,
no checkout needed).

Run from the repository root::

    python benchmarks/authors_code.py --authors-code /path/to/entropy-sgd
    python benchmarks/authors_code.py --smoke --out-dir /tmp/bench   # tiny synthetic data
    python benchmarks/authors_code.py --report-only                  # the page from its JSON
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import runpy
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402  (applies relaxjax's XLA:CPU settings before JAX starts)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

try:  # --report-only needs neither PyTorch nor their code
    import torch
except ImportError:  # pragma: no cover - checked in main()
    torch = None

import relaxjax  # noqa: E402
from relaxjax import data as data_lib  # noqa: E402
from relaxjax import models as models_lib  # noqa: E402
from relaxjax import train as train_lib  # noqa: E402
from relaxjax.cpu.xla_flags import backend_started  # noqa: E402

HERE = Path(__file__).resolve().parent
PATCH = HERE / "patches" / "entropy-sgd-python.patch"
AUTHORS_CODE_ENV = "RELAXJAX_AUTHORS_CODE"
DEFAULT_OUT_DIR = HERE / "results"
STEM = "authors_code"
TARGET_RATIO = 0.5  # the target: relaxjax <= 0.5 x their time, both measures
# relaxjax name -> theirs. Their PyTorch mnistconv is relaxjax's lenet-pytorch (BatchNorm
# before the pooling, on the 500 units too); relaxjax's lenet is the Lua code's mnistconv.
THEIR_MODEL = {"mnistfc": "mnistfc", "lenet-pytorch": "mnistconv"}
TARGET_ERROR = {"mnistfc": 0.015, "lenet-pytorch": 0.008}
MAX_EPOCHS = {"mnistfc": 5.0, "lenet-pytorch": 3.0}
THEIR_MODULES = ("models", "loader", "optim", "utils")
# Their Langevin state (optim.py, created at the first step): inner rate and average weight.
THEIR_INNER = {"lr": 0.1, "beta1": 0.75}
QUIET = ("This overload of add", "volatile was removed", "train_data has been renamed")

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 NHWC images, labels)


# --------------------------------------------------------------------------- their code


def find_authors_code(path: str | os.PathLike | None) -> Path | None:
    """The folder holding their ``train.py`` and ``optim.py``: ``path`` (a checkout or its
    ``python/`` folder), else ``$RELAXJAX_AUTHORS_CODE``; None when neither has it."""
    path = path or os.environ.get(AUTHORS_CODE_ENV)
    if not path:
        return None
    for candidate in (Path(path) / "python", Path(path)):
        if (candidate / "train.py").is_file() and (candidate / "optim.py").is_file():
            return candidate
    return None


def apply_patch(root: Path, patch: Path = PATCH) -> str:
    """Applies ``patch`` (paths ``python/...``) inside ``root``; returns the tool used."""
    if shutil.which("patch"):
        command = ["patch", "-p1", "--forward", "--batch", "-i", str(patch)]
    elif shutil.which("git"):
        command = ["git", "apply", str(patch)]
    else:
        raise RuntimeError("neither `patch` nor `git` is installed: cannot apply " + str(patch))
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed in {root}:\n{done.stdout}{done.stderr}")
    return command[0]


def prepare_authors_code(source: Path, workdir: Path) -> Path:
    """A patched copy of their ``python/`` folder under ``workdir``; returns its path."""
    root = workdir / "entropy-sgd"
    shutil.copytree(source, root / "python", ignore=shutil.ignore_patterns("__pycache__"))
    apply_patch(root)
    return root / "python"


def code_version(source: Path) -> str:
    """The git commit of the checkout holding ``source``, or 'unknown'."""
    done = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def torchvision_standin(arrays: Arrays) -> dict[str, types.ModuleType]:
    """``torchvision`` modules whose ``datasets.MNIST`` serves ``arrays``, for their loader.

    Their ``loader.mnist`` reads ``train_data``/``train_labels`` (``test_data``/
    ``test_labels``): uint8 (N, 28, 28) images and int64 labels, as old torchvision had.
    """

    class MNIST:
        def __init__(self, root: str, train: bool = True, download: bool = False, **_: Any):
            images, labels = arrays["train" if train else "test"]
            prefix = "train" if train else "test"
            setattr(self, f"{prefix}_data", torch.from_numpy(np.ascontiguousarray(images[..., 0])))
            setattr(self, f"{prefix}_labels", torch.from_numpy(labels.astype(np.int64)))

    datasets = types.ModuleType("torchvision.datasets")
    datasets.MNIST = MNIST
    transforms = types.ModuleType("torchvision.transforms")
    package = types.ModuleType("torchvision")
    package.datasets, package.transforms = datasets, transforms
    return {
        "torchvision": package,
        "torchvision.datasets": datasets,
        "torchvision.transforms": transforms,
    }


@contextlib.contextmanager
def _their_import_context(code_dir: Path, arrays: Arrays, argv: list[str]):
    """sys.path, sys.argv and sys.modules as their ``train.py`` expects, restored after."""
    names = (*THEIR_MODULES, "torchvision", "torchvision.datasets", "torchvision.transforms")
    saved_modules = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.modules.update(torchvision_standin(arrays))
    sys.path.insert(0, str(code_dir))
    sys.argv = argv
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved_modules)
        sys.argv, sys.path[:] = saved_argv, saved_path


def load_their_run(
    code_dir: Path, model: str, *, num_steps: int, batch_size: int, seed: int, arrays: Arrays
) -> tuple[dict[str, Any], str]:
    """Runs their ``train.py -m <model> -L <L> -b <B> -s <seed> -B 0``; returns its globals
    (model, optimizer, loaders, functions) and what it printed."""
    argv = ["train.py", "-m", THEIR_MODEL[model], "-L", str(num_steps), "-b", str(batch_size)]
    argv += ["-s", str(seed), "-B", "0"]
    printed = io.StringIO()
    with _their_import_context(code_dir, arrays, argv), contextlib.redirect_stdout(printed):
        namespace = runpy.run_path(str(code_dir / "train.py"), run_name="authors_train")
    # The functions' own globals: the live namespace (run_path returns a copy).
    return namespace["train"].__globals__, printed.getvalue()


def their_helper(namespace: dict[str, Any]) -> Callable[[], Callable]:
    """``helper`` of their ``train()``: the closure factory their loop passes to ``step``.

    It is a nested function of ``train`` without free variables, so its code object,
    run with ``train``'s globals, is their closure exactly.
    """
    train_code = namespace["train"].__code__
    for const in train_code.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == "helper":
            if const.co_freevars:
                raise RuntimeError(f"their helper() closes over {const.co_freevars}")
            return types.FunctionType(const, namespace, "helper")
    raise RuntimeError("their train() has no nested helper(): not the expected train.py")


# --------------------------------------------------------------------------- the settings


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Their Entropy-SGD settings in relaxjax's terms (``docs/conventions.md``)."""

    num_steps: int  # L
    lr: float  # outer rate on x - mu
    momentum: float  # outer Nesterov momentum (their config's momentum, nesterov=True)
    gamma: float  # scope = 1 / their coupling g0
    scoping: float  # per-outer-step growth of the coupling that takes effect
    step_size: float  # inner rate (their Langevin lr)
    noise: float  # epsilon
    alpha: float  # their beta1
    weight_decay: float
    inner_momentum: float  # their inner loop applies the same Nesterov momentum
    their_scoping: float  # their --scoping option


def their_hyper(namespace: dict[str, Any]) -> Hyper:
    """The settings of their run, from its ``EntropySGD`` config (their train.py's options).

    Their ``step`` computes the coupling g0·(1 + g1)^t with ``state['t']``, which it sets to
    0 and never increments, so the coupling stays g0 whatever ``--scoping`` says;
    :func:`check_their_state` verifies that after the first steps.
    """
    c = namespace["optimizer"].config
    if not c["nesterov"] or c["damp"]:
        raise RuntimeError(f"expected Nesterov momentum without dampening, got {c}")
    return Hyper(
        num_steps=int(c["L"]),
        lr=float(c["lr"]),
        momentum=float(c["momentum"]),
        gamma=1.0 / float(c["g0"]),
        scoping=0.0,
        step_size=THEIR_INNER["lr"],
        noise=float(c["eps"]),
        alpha=THEIR_INNER["beta1"],
        weight_decay=float(c["weight_decay"]),
        inner_momentum=float(c["momentum"]),
        their_scoping=float(c["g1"]),
    )


def check_their_state(namespace: dict[str, Any]) -> None:
    """After at least one step: their Langevin rate and average weight are the assumed
    ones, and their step counter (of the scoping) has not moved."""
    state = namespace["optimizer"].state
    langevin = state["langevin"]
    found = {"lr": langevin["lr"], "beta1": langevin["beta1"]}
    if found != THEIR_INNER or state["t"] != 0:
        raise RuntimeError(f"their optimizer's state differs: {found}, t = {state['t']}")


def relaxjax_optimizer(h: Hyper, seed: int) -> optax.GradientTransformationExtraArgs:
    """Their Entropy-SGD with relaxjax: the relaxation, then Nesterov SGD on x - mu."""
    inner = None
    if h.inner_momentum:
        # Their inner buffer is zeroed at every outer step: a fresh inner state per step.
        inner = optax.sgd(h.step_size, momentum=h.inner_momentum, nesterov=True)
    gamma = relaxjax.scoping(h.gamma, h.scoping) if h.scoping else h.gamma
    relaxation = relaxjax.local_entropy(
        gamma=gamma,
        num_steps=h.num_steps,
        step_size=h.step_size,
        noise=h.noise,
        alpha=h.alpha,
        weight_decay=h.weight_decay,
        inner_optimizer=inner,
        keep_inner_state=False,
        reuse_gradient=False,
        output="displacement",
        seed=seed,
    )
    outer = optax.sgd(h.lr, momentum=h.momentum or None, nesterov=bool(h.momentum))
    return optax.chain(relaxation, outer)


def flax_variables_from_torch(net: torch.nn.Module, template: Any) -> tuple[Any, Any]:
    """relaxjax's (params, model_state) holding ``net``'s weights and BatchNorm statistics.

    PyTorch's layers in module order are Flax's ``Conv_i``, ``Dense_i``, ``BatchNorm_i`` in
    call order. Kernels are transposed (Conv OIHW -> HWIO, Linear (out, in) -> (in, out));
    the first Linear after a convolution reads PyTorch's NCHW flattening, so its input
    rows are reordered to Flax's NHWC one.
    """
    params_t, state_t = template
    params = {name: dict(layer) for name, layer in params_t.items()}
    stats = {name: dict(layer) for name, layer in state_t["batch_stats"].items()}
    counts = {"Conv": 0, "Dense": 0, "BatchNorm": 0}
    conv_channels = None
    kinds = {
        torch.nn.Conv2d: "Conv",
        torch.nn.Linear: "Dense",
        torch.nn.BatchNorm1d: "BatchNorm",
        torch.nn.BatchNorm2d: "BatchNorm",
    }
    for module in net.modules():
        kind = kinds.get(type(module))
        if kind is None:
            continue
        name = f"{kind}_{counts[kind]}"
        counts[kind] += 1
        weight = module.weight.detach().cpu().numpy()
        bias = module.bias.detach().cpu().numpy()
        if kind == "Conv":
            params[name]["kernel"] = weight.transpose(2, 3, 1, 0)
            conv_channels = weight.shape[0]
        elif kind == "Dense":
            kernel = weight.T  # (in, out), rows in PyTorch's (c, h, w) order after convs
            if conv_channels is not None:
                c, out = conv_channels, kernel.shape[1]
                kernel = kernel.reshape(c, -1, out).transpose(1, 0, 2).reshape(-1, out)
                conv_channels = None
            params[name]["kernel"] = kernel
        else:
            params[name]["scale"] = weight
            stats[name]["mean"] = module.running_mean.detach().cpu().numpy()
            stats[name]["var"] = module.running_var.detach().cpu().numpy()
        params[name]["bias"] = bias
    expected = {k: sum(1 for n in params_t if n.startswith(k + "_")) for k in counts}
    if counts != expected:
        raise ValueError(f"layers differ: PyTorch {counts}, relaxjax {expected}")
    as_jax = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.ascontiguousarray(a)), tree)  # noqa: E731
    for name, layer in params.items():
        for key, value in layer.items():
            if np.shape(value) != params_t[name][key].shape:
                raise ValueError(f"{name}/{key}: {np.shape(value)} != {params_t[name][key].shape}")
    return as_jax(params), {"batch_stats": as_jax(stats)}


# --------------------------------------------------------------------------- trainers


class TheirTrainer:
    """Their training loop's step, and their evaluation protocol: ``dry_feed`` (all
    training batches), or their ``set_dropout`` around ``refresh_batches`` of them."""

    impl = "authors"

    def __init__(self, namespace: dict[str, Any], refresh_batches: int | None = None):
        self.ns = namespace
        self.helper = their_helper(namespace)
        self.grads_per_step = int(namespace["optimizer"].config["L"]) + 1
        self.refresh_batches = refresh_batches
        self.steps = 0

    def refresh(self) -> None:
        """Their dry_feed, over ``refresh_batches`` random training batches if set."""
        ns = self.ns
        if self.refresh_batches is None:
            ns["dry_feed"]()
            return
        cache = ns["set_dropout"]()  # every dropout probability to 0, as dry_feed does
        for _ in range(self.refresh_batches):
            x, _ = next(ns["train_loader"])
            ns["model"](x)
        ns["set_dropout"](cache)

    def run(self, n: int) -> None:
        ns = self.ns
        ns["model"].train()
        for _ in range(n):
            ns["optimizer"].step(self.helper(), ns["model"], ns["criterion"])
        self.steps += n

    def test_error(self, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
        model = self.ns["model"]
        with torch.no_grad():
            self.refresh()  # BatchNorm statistics re-estimated in train mode, dropout off
            model.eval()
            wrong = sum(
                int((model(images[i : i + batch]).argmax(1) != labels[i : i + batch]).sum())
                for i in range(0, len(labels), batch)
            )
        model.train()
        return wrong / len(labels)


class RelaxjaxStep:
    """relaxjax's compiled outer step and evaluation for a network, shared by its runs."""

    def __init__(self, model_name: str, h: Hyper, batch_size: int, refresh_batches: int):
        self.model = models_lib.get_model(model_name)
        self.h, self.batch_size = h, batch_size
        tx = relaxjax_optimizer(h, seed=0)  # its update does not depend on the seed
        self.step = train_lib.make_train_step(self.model, tx, h.num_steps, batch_size)
        self.refresh = train_lib.make_statistics_refresh(self.model, batch_size, refresh_batches)
        self.evaluate = train_lib.make_eval_fn(self.model, 1000)
        self.compile_s: float | None = None

    def warm(self, state: Any, images: jax.Array, labels: jax.Array, perm: jax.Array) -> float:
        """Compiles the step once (running it on a copy of ``state``); returns the seconds."""
        if self.compile_s is None:
            start = time.perf_counter()
            jax.block_until_ready(self.step(jax.tree.map(jnp.copy, state), images, labels, perm, 0))
            self.compile_s = time.perf_counter() - start
        return self.compile_s


def initial_state(tx: optax.GradientTransformation, variables: tuple, seed: int) -> Any:
    """A training state at ``variables``, copied: the step donates its state, and the
    variables stay the shared start."""
    params, model_state = jax.tree.map(jnp.copy, variables)
    return train_lib.TrainState(
        jnp.zeros([], jnp.int32),
        params,
        model_state,
        tx.init(params),
        jax.random.PRNGKey(seed),
        jnp.zeros([2], jnp.float32),
    )


class RelaxjaxTrainer:
    """relaxjax's step on its epoch permutations, and the evaluation protocol."""

    impl = "relaxjax"

    def __init__(self, shared: RelaxjaxStep, variables: tuple[Any, Any], seed: int, data: Any):
        self.shared, self.seed, self.data = shared, seed, data
        self.state = initial_state(relaxjax_optimizer(shared.h, seed=seed), variables, seed)
        self.grads_per_step = shared.h.num_steps
        self.num_train = len(data["train_labels"])
        self.steps_per_epoch = self.num_train // (shared.batch_size * shared.h.num_steps)
        self.steps, self.perm, self.perm_epoch = 0, None, None

    def permutation(self, epoch: int) -> jax.Array:
        if epoch != self.perm_epoch:
            self.perm = jnp.asarray(data_lib.epoch_permutation(self.seed, epoch, self.num_train))
            self.perm_epoch = epoch
        return self.perm

    def run(self, n: int) -> None:
        state, d, step = self.state, self.data, self.shared.step
        for _ in range(n):
            epoch, s = divmod(self.steps, self.steps_per_epoch)
            state, _ = step(state, d["train_images"], d["train_labels"], self.permutation(epoch), s)
            self.steps += 1
        self.state = jax.block_until_ready(state)

    def test_error(self, images: jax.Array, labels: jax.Array) -> float:
        s, shared = self.state, self.shared
        model_state = shared.refresh(
            s.params, s.model_state, self.data["train_images"], self.seed, self.steps
        )
        return shared.evaluate(s.params, model_state, images, labels)[1]


class TheirGradients:
    """Their bare mini-batch gradient: the ``feval`` closure their loop hands to ``step``
    (next batch of their loader, ``zero_grad``, forward, loss, ``backward``), called alone.
    """

    impl = "authors"

    def __init__(self, namespace: dict[str, Any], per_round: int):
        self.ns, self.per_round = namespace, per_round
        self.feval = their_helper(namespace)()

    def run(self, n: int) -> None:
        self.ns["model"].train()
        for _ in range(n * self.per_round):
            self.feval()


class RelaxjaxGradients:
    """relaxjax's plain SGD step (one mini-batch gradient and its update, jitted, the
    batch gathered from the epoch permutation on the device) on the same network."""

    impl = "relaxjax"

    def __init__(self, shared: RelaxjaxStep, variables: tuple[Any, Any], seed: int, data: Any):
        h = shared.h
        tx = optax.sgd(h.lr, momentum=h.momentum or None, nesterov=bool(h.momentum))
        self.step = train_lib.make_train_step(shared.model, tx, 1, shared.batch_size)
        self.state = initial_state(tx, variables, seed)
        self.data, self.per_round = data, h.num_steps
        n = len(data["train_labels"])
        self.perm = jnp.asarray(data_lib.epoch_permutation(seed, 0, n))
        self.batches, self.steps = n // shared.batch_size, 0

    def run(self, n: int) -> None:
        state, d = self.state, self.data
        for _ in range(n * self.per_round):
            s = self.steps % self.batches
            state, _ = self.step(state, d["train_images"], d["train_labels"], self.perm, s)
            self.steps += 1
        self.state = jax.block_until_ready(state)


# --------------------------------------------------------------------------- data


def load_arrays(args: argparse.Namespace) -> Arrays:
    """MNIST from ``--data-dir`` (relaxjax's loader), or the benchmarks' generated digits
    (``--smoke-examples`` of each split) for ``--smoke``."""
    if args.smoke:
        train, test = _env.smoke_mnist(2 * args.smoke_examples)
        return {"train": train, "test": test}
    return {
        split: data_lib.load_mnist(split, data_dir=args.data_dir, download=False, progress=False)
        for split in ("train", "test")
    }


def device_arrays(arrays: Arrays) -> tuple[dict[str, jax.Array], dict[str, torch.Tensor]]:
    """The same float32 pixels (0-255, as their loader feeds them) for both implementations:
    NHWC for relaxjax, NCHW for PyTorch."""
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    ours = {
        "train_images": jnp.asarray(xtr, jnp.float32),
        "train_labels": jnp.asarray(ytr, jnp.int32),
        "test_images": jnp.asarray(xte, jnp.float32),
        "test_labels": jnp.asarray(yte, jnp.int32),
    }
    theirs = {
        "test_images": torch.from_numpy(xte.transpose(0, 3, 1, 2).astype(np.float32)),
        "test_labels": torch.from_numpy(yte.astype(np.int64)),
    }
    return ours, theirs


# --------------------------------------------------------------------------- measurements


@dataclasses.dataclass
class Setup:
    """One network: their code loaded, relaxjax's step compiled, from the same start."""

    model: str
    namespace: dict[str, Any]
    printed: str
    hyper: Hyper
    shared: RelaxjaxStep
    variables: tuple[Any, Any]
    start_logit_gap: float
    refresh_batches: int | None  # None: their dry_feed, a pass over the training set


def make_setup(args: argparse.Namespace, model: str, seed: int, ours: dict, theirs: dict) -> Setup:
    """Loads their run for ``seed`` and builds relaxjax's at their initial weights."""
    ns, printed = load_their_run(
        args.code_dir,
        model,
        num_steps=args.L,
        batch_size=args.batch_size,
        seed=seed,
        arrays=args.arrays,
    )
    torch.set_num_threads(args.threads)  # after their train.py's th.set_num_threads(2)
    hyper = their_hyper(ns)
    module = models_lib.get_model(model)
    template = jax.eval_shape(module.init, jax.random.PRNGKey(0), ours["train_images"][:1])
    variables = flax_variables_from_torch(ns["model"], template)
    shared = args.shared.get(model)
    if shared is None:
        batches = args.refresh_batches or len(ours["train_labels"]) // args.batch_size
        shared = args.shared[model] = RelaxjaxStep(model, hyper, args.batch_size, batches)
    if shared.h != hyper:
        raise RuntimeError(f"their settings changed between seeds: {shared.h} != {hyper}")
    gap = start_logit_gap(ns["model"], module, variables, theirs["test_images"][:64])
    return Setup(model, ns, printed, hyper, shared, variables, gap, args.refresh_batches)


def start_logit_gap(net: torch.nn.Module, module: Any, variables: tuple, images: torch.Tensor):
    """max |logits| difference of the two networks at the start, evaluation mode (a check
    that they are the same function of the same weights)."""
    net.eval()
    with torch.no_grad():
        theirs = net(images).numpy()
    net.train()
    params, model_state = variables
    x = jnp.asarray(images.numpy().transpose(0, 2, 3, 1))
    ours = np.asarray(module.apply(params, model_state, x, train=False, dropout_key=None)[0])
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))


def warm_trainers(setup: Setup, ours: dict, seed: int) -> tuple[TheirTrainer, RelaxjaxTrainer]:
    """Both trainers from the setup's start; relaxjax's step compiled (not run on them)."""
    theirs = TheirTrainer(setup.namespace, setup.refresh_batches)
    mine = RelaxjaxTrainer(setup.shared, setup.variables, seed, ours)
    setup.shared.warm(mine.state, ours["train_images"], ours["train_labels"], mine.permutation(0))
    return theirs, mine


def time_steps(args: argparse.Namespace, setup: Setup, ours: dict) -> dict[str, Any]:
    """Interleaved rounds of outer steps of both; medians, per step and per effective epoch."""
    theirs, mine = warm_trainers(setup, ours, args.seed)
    theirs.run(1)  # their first step builds their state
    check_their_state(setup.namespace)
    mine.run(1)
    # The bare gradients, L per outer step, in the same rounds: what a step of L gradients
    # costs without Entropy-SGD's own work (theirs after their step built its state, so the
    # two share their model; its weights are not changed by a bare gradient).
    bare = [TheirGradients(setup.namespace, setup.hyper.num_steps)]
    bare.append(RelaxjaxGradients(setup.shared, setup.variables, args.seed, ours))
    for b in bare:
        b.run(1)  # relaxjax's SGD step compiles here
    times: dict[str, list[float]] = {"authors": [], "relaxjax": []}
    bare_times: dict[str, list[float]] = {"authors": [], "relaxjax": []}
    for r in range(args.rounds):
        pairs = [(t, times) for t in (theirs, mine)] + [(b, bare_times) for b in bare]
        for trainer, into in pairs if r % 2 == 0 else pairs[::-1]:
            start = time.perf_counter()
            trainer.run(args.steps)
            into[trainer.impl].append((time.perf_counter() - start) / args.steps)
        print(f"  [{setup.model}] round {r + 1}/{args.rounds}", flush=True)
    rows = {}
    per_epoch = args.epoch_size / args.batch_size  # gradient evaluations per effective epoch
    for trainer in (theirs, mine):
        step_s = statistics.median(times[trainer.impl])
        rows[trainer.impl] = {
            "outer_step_ms_median": 1e3 * step_s,
            "outer_step_ms_min": 1e3 * min(times[trainer.impl]),
            "outer_step_ms_max": 1e3 * max(times[trainer.impl]),
            "outer_step_ms_per_round": [1e3 * t for t in times[trainer.impl]],
            "gradients_per_outer_step": trainer.grads_per_step,
            "ms_per_gradient": 1e3 * step_s / trainer.grads_per_step,
            "effective_epoch_s": step_s * per_epoch / trainer.grads_per_step,
            # counting only the L gradients that move the weights (= per outer step)
            "effective_epoch_s_L_gradients": step_s * per_epoch / setup.hyper.num_steps,
        }
    a, r_ = rows["authors"], rows["relaxjax"]
    gradients = {}
    for impl, ts in bare_times.items():
        per_gradient = [1e3 * t / setup.hyper.num_steps for t in ts]
        gradients[impl] = {
            "ms_median": statistics.median(per_gradient),
            "ms_min": min(per_gradient),
            "ms_max": max(per_gradient),
            "ms_per_round": per_gradient,
        }
    return {
        "model": setup.model,
        "their_model": THEIR_MODEL[setup.model],
        "rows": rows,
        "ratio_per_outer_step": r_["outer_step_ms_median"] / a["outer_step_ms_median"],
        "ratio_per_effective_epoch": r_["effective_epoch_s"] / a["effective_epoch_s"],
        "relaxjax_compile_s": setup.shared.compile_s,
        "gradients": gradients,
        # A relaxation step that cost its L separately jitted SGD steps, against theirs per
        # effective epoch (not a strict bound: a jitted step's per-call costs are in it).
        "jitted_sgd_ratio_per_effective_epoch": gradients["relaxjax"]["ms_median"]
        / a["ms_per_gradient"],
    }


def train_to_target(
    trainer: Any,
    images: Any,
    labels: Any,
    *,
    target: float,
    cap: float,
    every: float,
    n: int,
    B: int,
) -> dict[str, Any]:
    """Trains in chunks of ``every`` effective epochs until the test error is at most
    ``target`` or ``cap`` effective epochs are done; only the steps are timed."""
    grads_per_epoch = n / B
    seconds, curve = 0.0, []
    reached = None
    while True:
        goal = (len(curve) + 1) * every * grads_per_epoch  # gradients by the next evaluation
        todo = max(1, int(np.ceil(goal / trainer.grads_per_step)) - trainer.steps)
        start = time.perf_counter()
        trainer.run(todo)
        seconds += time.perf_counter() - start
        epochs = trainer.steps * trainer.grads_per_step / grads_per_epoch
        error = float(trainer.test_error(images, labels))
        curve.append({"effective_epochs": epochs, "train_seconds": seconds, "test_error": error})
        if error <= target:
            reached = curve[-1]
            break
        if epochs >= cap - 1e-9:
            break
    return {
        "reached": reached is not None,
        "seconds_to_target": reached["train_seconds"] if reached else None,
        "effective_epochs_to_target": reached["effective_epochs"] if reached else None,
        "best_test_error": min(c["test_error"] for c in curve),
        "final_effective_epochs": curve[-1]["effective_epochs"],
        "train_seconds": seconds,
        "outer_steps": trainer.steps,
        "curve": curve,
    }


def time_to_target(args: argparse.Namespace, model: str, ours: dict, theirs_data: dict):
    """Repeats of both implementations from a shared start each, order alternating."""
    runs = []
    for rep in range(args.repeats):
        seed = args.seed + rep
        setup = make_setup(args, model, seed, ours, theirs_data)
        theirs, mine = warm_trainers(setup, ours, seed)
        order = (theirs, mine) if rep % 2 == 0 else (mine, theirs)
        for trainer in order:
            test = (
                (theirs_data["test_images"], theirs_data["test_labels"])
                if trainer is theirs
                else (ours["test_images"], ours["test_labels"])
            )
            result = train_to_target(
                trainer,
                *test,
                target=args.target[model],
                cap=args.max_epochs[model],
                every=args.eval_every,
                n=len(ours["train_labels"]),
                B=args.batch_size,
            )
            if trainer is theirs:
                check_their_state(setup.namespace)
            run = {"model": model, "impl": trainer.impl, "seed": seed, "repeat": rep}
            runs.append({**run, "start_logit_gap": setup.start_logit_gap, **result})
            reached = result["seconds_to_target"]
            status = "not reached" if reached is None else f"reached in {reached:.1f} s"
            best = 100 * result["best_test_error"]
            print(f"  [{model}] repeat {rep + 1}: {trainer.impl} best {best:.2f}%, {status}")
    return runs


def common_error(pair: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """For one repeat: the lowest test error both runs reached (the larger of their best),
    each run's training seconds to first reach it, and the ratio relaxjax / theirs."""
    level = max(run["best_test_error"] for run in pair.values())
    first = {
        impl: next(c for c in run["curve"] if c["test_error"] <= level)
        for impl, run in pair.items()
    }
    return {
        "error": level,
        "seconds": {impl: c["train_seconds"] for impl, c in first.items()},
        "effective_epochs": {impl: c["effective_epochs"] for impl, c in first.items()},
        "ratio": first["relaxjax"]["train_seconds"] / first["authors"]["train_seconds"],
    }


def summarize_targets(runs: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """Per network: each implementation's median time to target, and the ratio of repeats
    where both reached it (the same start)."""
    out = []
    for model in models:
        mine = [r for r in runs if r["model"] == model]
        pairs = {}
        for r in mine:
            pairs.setdefault(r["repeat"], {})[r["impl"]] = r
        ratios = [
            p["relaxjax"]["seconds_to_target"] / p["authors"]["seconds_to_target"]
            for p in pairs.values()
            if len(p) == 2 and p["relaxjax"]["reached"] and p["authors"]["reached"]
        ]
        row: dict[str, Any] = {"model": model, "paired_ratios": ratios}
        row["common_error"] = [common_error(p) for p in pairs.values() if len(p) == 2]
        for impl in ("authors", "relaxjax"):
            these = [r for r in mine if r["impl"] == impl]
            reached = [r["seconds_to_target"] for r in these if r["reached"]]
            row[impl] = {
                "runs": len(these),
                "reached": len(reached),
                "median_seconds_to_target": statistics.median(reached) if reached else None,
                "median_epochs_to_target": statistics.median(
                    [r["effective_epochs_to_target"] for r in these if r["reached"]]
                )
                if reached
                else None,
                "best_test_error": min(r["best_test_error"] for r in these) if these else None,
                "median_train_seconds": statistics.median([r["train_seconds"] for r in these])
                if these
                else None,
                "median_final_effective_epochs": statistics.median(
                    [r["final_effective_epochs"] for r in these]
                )
                if these
                else None,
            }
        row["ratio_median"] = statistics.median(ratios) if ratios else None
        row["meets_target"] = (row["ratio_median"] <= TARGET_RATIO) if ratios else None
        out.append(row)
    return out


# --------------------------------------------------------------------------- reporting


def environment(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Command line, machine, versions, threads, their code's version and the settings."""
    env = _env.environment()
    return {
        "command": _env.command_line(__file__, list(argv)),
        **env,
        "torch": torch.__version__,
        "threads": {
            "torch": torch.get_num_threads(),
            "xla_cpu": len(os.sched_getaffinity(0)),
            "cores": os.cpu_count(),
        },
        "authors_code": {"commit": args.code_commit, "patch": str(PATCH.relative_to(HERE.parent))},
        "settings": {
            "models": args.models,
            "L": args.L,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "steps": args.steps,
            "repeats": args.repeats,
            "eval_every": args.eval_every,
            "refresh_batches": args.refresh_batches,
            "max_epochs": args.max_epochs,
            "target_error": args.target,
            "epoch_size": args.epoch_size,
            "seed": args.seed,
            "threads": args.threads,
            "smoke": args.smoke,
        },
        "note": args.note,
    }


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "" if x is None else format(x, fmt)


def _verdict(ratio: float | None) -> str:
    if ratio is None:
        return "not measured"
    return "met" if ratio <= TARGET_RATIO else "not met"


def settings_lines(hyper: Hyper, batch_size: int, epoch_size: int) -> list[str]:
    """The table of their settings beside relaxjax's."""
    h = hyper
    steps = epoch_size // (batch_size * h.num_steps)
    return [
        "| setting | their code | relaxjax |",
        "| --- | --- | --- |",
        f"| L, batch | -L {h.num_steps}, -b {batch_size} "
        f"| num_steps={h.num_steps}, batch {batch_size} |",
        f"| outer step | lr {h.lr} on x - mu, Nesterov momentum {h.momentum} "
        f"| optax.sgd({h.lr}, momentum={h.momentum}, nesterov=True) on x - mu |",
        f"| coupling | g0 = --gamma {1 / h.gamma:g}, --scoping {h.their_scoping:g} "
        "(no effect: their step counter stays 0) "
        f"| gamma = {h.gamma:g} (scope = 1/g0), constant |",
        f"| inner steps | rate {h.step_size}, Nesterov momentum {h.inner_momentum} on the "
        "loss gradient, buffer zeroed every outer step, then coupling and noise "
        f"| inner_optimizer=optax.sgd({h.step_size}, momentum={h.inner_momentum}, "
        "nesterov=True) on gradient + coupling, fresh state every outer step "
        "(keep_inner_state=False), then noise |",
        f"| noise | eps {h.noise:g}: eps/sqrt(0.5 lr) in the inner gradient "
        f"| noise={h.noise:g}: eps*sqrt(2 step_size) per step (the same) |",
        f"| average | beta1 {h.alpha} | alpha={h.alpha} |",
        f"| weight decay | --l2 {h.weight_decay:g} | {h.weight_decay:g} |",
        "| gradients per outer step | L + 1 (one at x, only logged) "
        "| L (plus one forward pass at x for the logged loss) |",
        "| mini-batches | 128 indices drawn with replacement for every gradient "
        f"| an epoch permutation, {steps} outer steps of {h.num_steps} disjoint batches per "
        "effective epoch |",
    ]


DIFFERENCES = [
    "Same networks, same start: relaxjax's `mnistfc` and `lenet-pytorch` receive their model's "
    "initial weights; the 'start gap' column is max |logit difference| / max |logit| of "
    "the two at the start in evaluation mode (float32 round-off when they are the same "
    "function).",
    "Inputs: both get the same float32 pixels 0-255, their loader's scale (no "
    "normalisation in their code; every first layer is followed by BatchNorm).",
    "The inner momentum acts on the loss gradient alone in their code and on the "
    "gradient plus the coupling (y - x)/gamma in relaxjax's; with gamma = 1e4 the "
    "coupling is 1e-4 of the displacement, so the steps differ by that much.",
    "Their outer momentum buffer starts as a copy of the first mini-batch's loss gradient "
    "(state['mdw'] = deepcopy(w.grad)), relaxjax's at zero: a difference in the first "
    "outer steps only.",
    "Randomness: different streams for dropout masks, Langevin noise and mini-batches "
    "(theirs with replacement, relaxjax's without), and Flax's BatchNorm running "
    "variance is the biased batch variance (PyTorch: unbiased); the curves are "
    "statistically, not numerically, comparable.",
    "Evaluation (outside the clock), the same protocol for both: BatchNorm statistics "
    "re-estimated from training batches in train mode with dropout off (their dry_feed "
    "feeds the whole training set; with --refresh-batches N both feed N random batches, "
    "theirs through their set_dropout, relaxjax's through make_statistics_refresh; with "
    "BatchNorm's momentum 0.1, batches older than the last 50 weigh 0.9^50 = 0.5% in "
    "either), then the error on all 10,000 test images (their val() reads 127 of every "
    "128, 9,922 images).",
]


def gradient_lines(timing: list[dict], s: dict[str, Any]) -> list[str]:
    """The bare-gradient table and the ratio it gives (runs that measured it)."""
    measured = [m for m in timing if "gradients" in m]
    if not measured:
        return []
    lines = [
        "",
        "## What one gradient costs",
        "",
        f"In the same rounds, {s['steps']} x L bare mini-batch gradients of each: theirs, "
        "the `feval` closure their loop hands to `EntropySGD.step` (their loader's next "
        "batch, `zero_grad`, forward, loss, `backward`) called alone; relaxjax's, its plain "
        "SGD training step (`make_train_step` with `optax.sgd`, the same outer rate and "
        "momentum: the gradient and its update, jitted, the batch gathered on the "
        "device). A relaxation step evaluates L such gradients and does more, so relaxjax's "
        "SGD step over their Entropy-SGD time per gradient is the ratio per effective epoch "
        "a relaxation step costing its L gradients would reach. It is not a strict bound: "
        "a separately jitted step also pays per-call costs (its buffers' page faults, "
        "docs/cpu.md §7) that a relaxation's loop pays once per outer step.",
        "",
        "| network | their bare gradient ms (min-max) | their Entropy-SGD ms / gradient | "
        "relaxjax SGD step ms (min-max) | relaxjax Entropy-SGD ms / gradient | "
        "relaxjax / their bare gradient | ratio per effective epoch at L SGD steps |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in measured:
        g, rows = m["gradients"], m["rows"]
        a, r = g["authors"], g["relaxjax"]
        lines.append(
            f"| {m['model']} | {a['ms_median']:.2f} ({a['ms_min']:.2f}-{a['ms_max']:.2f}) "
            f"| {rows['authors']['ms_per_gradient']:.2f} "
            f"| {r['ms_median']:.2f} ({r['ms_min']:.2f}-{r['ms_max']:.2f}) "
            f"| {rows['relaxjax']['ms_per_gradient']:.2f} "
            f"| {r['ms_median'] / a['ms_median']:.2f} "
            f"| {m['jitted_sgd_ratio_per_effective_epoch']:.2f} |"
        )
    return lines


def summary(timing: list[dict], targets: list[dict], settings: dict[str, Any]) -> str:
    """One paragraph: the ratios against the issue's target, and what was not reached."""
    parts = []
    for m in timing:
        ratio = m["ratio_per_effective_epoch"]
        parts.append(
            f"{m['model']}: relaxjax takes {ratio:.2f}x their time per effective epoch "
            f"({m['ratio_per_outer_step']:.2f}x per outer step), target <= {TARGET_RATIO} "
            f"{_verdict(ratio)}."
        )
        if "gradients" in m:
            sgd_ratio = m["jitted_sgd_ratio_per_effective_epoch"]
            parts.append(
                f"Its separately jitted SGD step costs {sgd_ratio:.2f}x their Entropy-SGD time "
                "per gradient"
                + (
                    ": a relaxation step costing its L gradients at that rate would not "
                    f"reach {TARGET_RATIO}x."
                    if sgd_ratio > TARGET_RATIO
                    else "."
                )
            )
    for row in targets:
        model, target = row["model"], _pct(settings["target_error"][row["model"]])
        cap = settings["max_epochs"][model]
        if row["ratio_median"] is not None:
            parts.append(
                f"{model}, time to {target}% test error: {row['ratio_median']:.2f}x theirs "
                f"(median of {len(row['paired_ratios'])} paired run(s)), target <= "
                f"{TARGET_RATIO} {_verdict(row['ratio_median'])}."
            )
            continue
        reached = ", ".join(
            f"{impl} {row[impl]['reached']}/{row[impl]['runs']} (best "
            f"{_pct(row[impl]['best_test_error'])}%)"
            for impl in ("authors", "relaxjax")
        )
        common = (
            " At the lowest error both runs of a repeat reached, relaxjax took "
            + ", ".join(
                f"{c['ratio']:.2f}x their training time (repeat {i + 1}, {_pct(c['error'])}%)"
                for i, c in enumerate(row["common_error"])
            )
            + "."
            if row["common_error"]
            else ""
        )
        parts.append(
            f"{model}, time to {target}% test error: not measured, the error was not reached "
            f"by both within the cap of {cap:g} effective epochs ({reached}).{common}"
        )
    return "**Summary.** " + " ".join(parts) if parts else "**Summary.** Nothing measured."


def markdown(
    env: dict[str, Any],
    timing: list[dict],
    targets: list[dict],
    runs: list[dict],
    hyper: Hyper | None,
    printed: str,
) -> str:
    """The results page."""
    s, t = env["settings"], env["threads"]
    refreshed = s["refresh_batches"] or "all"
    lines = [
        "# relaxjax against the authors' own Entropy-SGD code",
        "",
        f"- command: `{env['command']}`",
        f"- machine: {env['machine']}",
        f"- versions: {env['versions']}, torch {env['torch']}",
        f"- date: {env['date']}",
        f"- threads: PyTorch {t['torch']} (their train.py sets 2), XLA:CPU one per usable "
        f"core ({t['xla_cpu']} usable of {t['cores']})",
        "- their code: github.com/ucla-vision/entropy-sgd `python/` at commit "
        f"`{env['authors_code']['commit']}`, patched at run time with "
        f"`{env['authors_code']['patch']}`",
        f"- L = {s['L']}, batch {s['batch_size']}; effective epoch = {s['epoch_size']}/"
        f"{s['batch_size']} gradient evaluations",
        f"- load average (1, 5, 15 min) before: {env['load_average']['before']}, after: "
        f"{env['load_average']['after']} (this run's own threads keep it near "
        f"{t['cores']}: above that, other work shared the machine)",
    ]
    if env["note"]:
        lines.append(f"- note: {env['note']}")
    lines += ["", summary(timing, targets, s)]
    if hyper is not None:
        lines += ["", "## Settings (their defaults, read from their run)", ""]
        lines += settings_lines(hyper, s["batch_size"], s["epoch_size"])
    lines += [
        "",
        "## Time per outer step and per effective epoch",
        "",
        f"{s['rounds']} rounds x {s['steps']} outer steps of each implementation in turn "
        "(order alternating), medians, after a warm-up step (relaxjax: after compiling). "
        "'per effective epoch' counts every gradient evaluated (theirs L + 1 per outer "
        "step, relaxjax L); 'L gradients' counts only the L that move the weights, for "
        "both (= the per-outer-step ratio).",
        "",
        "| network (theirs) | implementation | ms / outer step (median, min-max) | "
        "gradients / step | ms / gradient | s / effective epoch | s / effective epoch "
        "(L gradients) | relaxjax compile s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in timing:
        for impl, r in m["rows"].items():
            compile_s = _num(m["relaxjax_compile_s"], ".1f") if impl == "relaxjax" else ""
            lines.append(
                f"| {m['model']} ({m['their_model']}) | {impl} "
                f"| {r['outer_step_ms_median']:.1f} ({r['outer_step_ms_min']:.1f}-"
                f"{r['outer_step_ms_max']:.1f}) | {r['gradients_per_outer_step']} "
                f"| {r['ms_per_gradient']:.2f} | {r['effective_epoch_s']:.2f} "
                f"| {r['effective_epoch_s_L_gradients']:.2f} | {compile_s} |"
            )
    lines += [
        "",
        "| network | relaxjax / theirs per effective epoch | per outer step | "
        f"target <= {TARGET_RATIO} per effective epoch |",
        "| --- | ---: | ---: | --- |",
    ]
    for m in timing:
        lines.append(
            f"| {m['model']} | {m['ratio_per_effective_epoch']:.2f} "
            f"| {m['ratio_per_outer_step']:.2f} | {_verdict(m['ratio_per_effective_epoch'])} |"
        )
    lines += gradient_lines(timing, s)
    lines += [
        "",
        "## Time to a test error",
        "",
        f"{s['repeats']} repeat(s) per network; in each, both implementations start from the "
        f"same weights (seed {s['seed']} + repeat of their train.py) and train in turn (order "
        f"alternating between repeats), evaluated every {s['eval_every']} effective epochs "
        f"(BatchNorm statistics re-estimated from {refreshed} training batches first), "
        "capped at "
        + ", ".join(f"{m} {e:g}" for m, e in s["max_epochs"].items() if m in s["models"])
        + " effective epochs. Seconds: training steps only (evaluation excluded; relaxjax's "
        "compilation is the 'compile' column above, once per network). Ratio: median over "
        "repeats where both reached the target of relaxjax's seconds / theirs.",
        "",
        "| network | target error % | implementation | reached | median s to target | "
        "median effective epochs to target | best error % | median s trained | "
        "median effective epochs trained |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in targets:
        for impl in ("authors", "relaxjax"):
            r = row[impl]
            lines.append(
                f"| {row['model']} | {_pct(s['target_error'][row['model']])} | {impl} "
                f"| {r['reached']}/{r['runs']} | {_num(r['median_seconds_to_target'], '.1f')} "
                f"| {_num(r['median_epochs_to_target'])} | {_pct(r['best_test_error'])} "
                f"| {_num(r['median_train_seconds'], '.1f')} "
                f"| {_num(r['median_final_effective_epochs'])} |"
            )
    lines += [
        "",
        "| network | relaxjax / theirs, time to target (median; per repeat) | "
        f"target <= {TARGET_RATIO} |",
        "| --- | ---: | --- |",
    ]
    for row in targets:
        each = ", ".join(f"{x:.2f}" for x in row["paired_ratios"])
        median = _num(row["ratio_median"])
        reason = "" if row["ratio_median"] is not None else " (target error not reached by both)"
        lines.append(
            f"| {row['model']} | {median} ({each}) | {_verdict(row['ratio_median'])}{reason} |"
        )
    lines += [
        "",
        "Where the target was not reached by both, the same comparison at the lowest error "
        "both runs of a repeat reached (the larger of their best errors), at the first "
        "evaluation that showed it:",
        "",
        "| network | repeat | error % | theirs s (effective epochs) | relaxjax s (effective "
        "epochs) | relaxjax / theirs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in targets:
        for rep, c in enumerate(row["common_error"]):
            sec, ep = c["seconds"], c["effective_epochs"]
            lines.append(
                f"| {row['model']} | {rep} | {_pct(c['error'])} | {sec['authors']:.1f} "
                f"({ep['authors']:.2f}) | {sec['relaxjax']:.1f} ({ep['relaxjax']:.2f}) "
                f"| {c['ratio']:.2f} |"
            )
    lines += [
        "",
        "Test error (%) at each evaluation, per run (effective epochs: error):",
        "",
        "| network | repeat | implementation | start gap | curve |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for r in runs:
        curve = ", ".join(
            f"{c['effective_epochs']:.2f}: {100 * c['test_error']:.2f}" for c in r["curve"]
        )
        lines.append(
            f"| {r['model']} | {r['repeat']} | {r['impl']} | {r['start_logit_gap']:.1e} | {curve} |"
        )
    lines += ["", "## Remaining differences", ""]
    lines += [f"- {d}" for d in DIFFERENCES]
    if printed:
        lines += ["", "What their train.py printed (last network):", "", "```"]
        lines += [line for line in printed.strip().splitlines()]
        lines += ["```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def limit_threads(threads: int) -> None:
    """Lets the process use ``threads`` cores, so that XLA:CPU sizes its thread pool to
    them (when JAX has not started yet; otherwise they must already be that many)."""
    cores = sorted(os.sched_getaffinity(0))
    if threads == len(cores):
        return
    if threads > len(cores) or backend_started():
        raise SystemExit(
            f"--threads {threads}: this process has {len(cores)} usable cores"
            + (" and JAX has started" if backend_started() else "")
        )
    os.sched_setaffinity(0, cores[:threads])


def _per_model(items: Sequence[str], default: dict[str, float], name: str) -> dict[str, float]:
    values = dict(default)
    for item in items or ():
        model, sep, value = item.partition("=")
        if not sep or model not in THEIR_MODEL:
            raise SystemExit(f"{name}: expected MODEL=VALUE with MODEL in {list(THEIR_MODEL)}")
        values[model] = float(value)
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--authors-code",
        default=None,
        help=f"their checkout or its python/ folder (default: ${AUTHORS_CODE_ENV})",
    )
    p.add_argument("--data-dir", default=None, help="where MNIST's IDX files are")
    p.add_argument("--models", nargs="+", choices=list(THEIR_MODEL), default=list(THEIR_MODEL))
    p.add_argument("--L", type=int, default=20, help="inner steps (their -L)")
    p.add_argument("--batch-size", type=int, default=128, help="their -b")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds per network")
    p.add_argument("--steps", type=int, default=5, help="outer steps per round")
    p.add_argument("--repeats", type=int, default=2, help="time-to-target repeats per network")
    p.add_argument("--eval-every", type=float, default=0.5, help="effective epochs")
    p.add_argument(
        "--refresh-batches",
        type=int,
        default=50,
        help="training batches that re-estimate BatchNorm before each evaluation, in both "
        "(relaxjax train's default; 0: a whole pass, their dry_feed)",
    )
    p.add_argument("--max-epochs", nargs="*", metavar="MODEL=E", help="caps, effective epochs")
    p.add_argument("--target", nargs="*", metavar="MODEL=ERR", help="target test errors")
    p.add_argument("--no-timing", action="store_true", help="skip the per-step timing")
    p.add_argument("--no-target", action="store_true", help="skip the time to target")
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads of both: torch.set_num_threads (their train.py sets 2) and the cores "
        "the process may use, so XLA:CPU's pool has as many (default 2)",
    )
    p.add_argument("--seed", type=int, default=42, help="their -s (their default 42)")
    p.add_argument("--epoch-size", type=int, default=60000)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    p.add_argument("--stem", default=STEM)
    p.add_argument("--note", default="")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny synthetic data: L=2, batch 16, 1 round of 2 steps, one evaluation",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite OUT_DIR/STEM.md from the measurements in OUT_DIR/STEM.json; runs nothing",
    )
    args = p.parse_args(argv)
    args.max_epochs = _per_model(args.max_epochs, MAX_EPOCHS, "--max-epochs")
    args.refresh_batches = args.refresh_batches or None
    args.target = _per_model(args.target, TARGET_ERROR, "--target")
    args.smoke_examples = 0
    if args.smoke:
        args.L, args.batch_size, args.rounds, args.steps, args.repeats = 2, 16, 1, 2, 1
        args.smoke_examples = 8 * args.L * args.batch_size
        args.epoch_size = args.smoke_examples
        args.eval_every = 0.5
        args.max_epochs = {m: 0.5 for m in THEIR_MODEL}
        args.target = {m: 1.0 for m in THEIR_MODEL}  # any error: one evaluation
        args.refresh_batches = 2
    return args


def write_report(out_dir: Path, stem: str, out: dict[str, Any]) -> str:
    """Writes ``stem.md`` from the measurements ``out`` (what ``stem.json`` holds)."""
    used = out["settings_used"]
    text = markdown(
        out["environment"],
        out["timing"],
        out["time_to_target"],
        out["runs"],
        Hyper(**used) if used else None,
        out.get("printed", ""),
    )
    (out_dir / f"{stem}.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.report_only:
        out = json.loads((args.out_dir / f"{args.stem}.json").read_text())
        print(write_report(args.out_dir, args.stem, out))
        return 0
    if torch is None:
        print("this benchmark needs PyTorch: pip install '.[bench]'", file=sys.stderr)
        return 2
    source = find_authors_code(args.authors_code)
    if source is None:
        print(
            "the authors' code was not found: pass --authors-code DIR or set "
            f"{AUTHORS_CODE_ENV} to a checkout of github.com/ucla-vision/entropy-sgd "
            "(git clone https://github.com/ucla-vision/entropy-sgd)",
            file=sys.stderr,
        )
        return 2
    args.code_commit = code_version(source)
    limit_threads(args.threads)
    args.arrays = load_arrays(args)
    ours, theirs_data = device_arrays(args.arrays)
    args.shared = {}
    timing, targets, runs = [], [], []
    hyper, printed = None, ""
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="entropy-sgd-") as workdir, warnings.catch_warnings():
        for message in QUIET:  # their code's deprecated calls, once per run
            warnings.filterwarnings("ignore", message=message)
        args.code_dir = prepare_authors_code(source, Path(workdir))
        for model in args.models:
            if not args.no_timing:
                setup = make_setup(args, model, args.seed, ours, theirs_data)
                hyper, printed = setup.hyper, setup.printed
                timing.append(time_steps(args, setup, ours))
            if not args.no_target:
                model_runs = time_to_target(args, model, ours, theirs_data)
                runs += model_runs
                hyper = hyper or args.shared[model].h
    if not args.no_target:
        targets = summarize_targets(runs, args.models)
    env = environment(args, argv)
    env["load_average"] = {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]}
    out = {"environment": env, "timing": timing, "time_to_target": targets, "runs": runs}
    out["settings_used"] = dataclasses.asdict(hyper) if hyper else None
    out["printed"] = printed
    _env.write_json(args.out_dir / f"{args.stem}.json", out)
    print(write_report(args.out_dir, args.stem, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
