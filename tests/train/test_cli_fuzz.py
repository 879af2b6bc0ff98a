"""Every numeric option of ``relaxjax train`` given 0, a negative, nan, inf or a
non-number: a valid value parses; any other ends in one ``relaxjax train: error:`` line,
exit status 2, before anything is written. Also options the optimizer would ignore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relaxjax.train import cli

VALUES = ["0", "-1", "nan", "inf", "abc"]
ROOT = Path(__file__).resolve().parents[2]


def _numeric_options():
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    return [
        (a.option_strings[-1], a.dest, a.type)
        for a in train._actions
        if isinstance(a.type, cli.Number)
    ]


NUMERIC = _numeric_options()


def test_every_numeric_option_is_validated():
    assert len(NUMERIC) >= 25  # all of them, not a few
    assert {"--epochs", "--lr", "--num-steps", "--batch-size", "--seed"} <= {o for o, *_ in NUMERIC}


@pytest.mark.parametrize("option, dest, kind", NUMERIC, ids=[o for o, *_ in NUMERIC])
def test_bad_values_end_in_one_line_and_write_nothing(option, dest, kind, tmp_path, capsys):
    run_dir = tmp_path / "run"
    for value in VALUES:
        argv = ["train", "--run-dir", str(run_dir), f"{option}={value}"]
        if kind.accepts(value):  # e.g. --momentum 0: parses to the number
            value = getattr(cli.build_parser().parse_args(argv), dest)
            assert value in (0, [0]), (option, value)
            continue
        assert cli.main(argv) == 2, (option, value)
        out, err = capsys.readouterr()
        assert not out and err.count("\n") == 1, (option, value, err)
        assert err.startswith("relaxjax train: error: argument ") and option in err, err
        assert f"got '{value}'" in err and kind.description in err
        assert not run_dir.exists()
    assert not kind.accepts("-1") and not kind.accepts("nan") and not kind.accepts("inf")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--inner-steps", "3"], "--inner-steps applies to --optimizer emsa only"),
        (["--optimizer", "hj", "--noise", "0.1"], "--noise applies to --optimizer"),
        (["--optimizer", "adam", "--momentum", "0.5"], "adam would ignore it"),
        (["--optimizer", "sgd", "-L", "5"], "--num-steps applies to --optimizer"),
        (["--replicas", "2"], "--replicas applies to --optimizer parle only"),
    ],
)
def test_options_the_optimizer_ignores_are_refused(argv, message, tmp_path, capsys):
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.subprocess
def test_the_command_exits_2_without_a_traceback(tmp_path, cpu_subprocess_env):
    done = subprocess.run(
        [sys.executable, "-m", "relaxjax", "train", "-L", "0", "--run-dir", str(tmp_path / "r")],
        env={**cpu_subprocess_env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "argument -L/--num-steps: expected an integer >= 1, got '0'" in done.stderr
    assert not (tmp_path / "r").exists()
