"""relaxjax.xla_cpu: the XLA:CPU scheduler flag the command and benchmarks set."""

import os

from relaxjax import cli, xla_cpu


def test_adds_the_flag_when_absent(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert xla_cpu.prefer_sequential_cpu_scheduler() is True
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == [
        "--xla_force_host_platform_device_count=4",
        f"{xla_cpu.SCHEDULER_FLAG}=false",
    ]


def test_respects_a_user_choice(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"{xla_cpu.SCHEDULER_FLAG}=true")
    assert xla_cpu.prefer_sequential_cpu_scheduler() is False
    assert os.environ["XLA_FLAGS"] == f"{xla_cpu.SCHEDULER_FLAG}=true"


def test_without_xla_flags(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_cpu.prefer_sequential_cpu_scheduler() is True
    assert os.environ["XLA_FLAGS"] == f"{xla_cpu.SCHEDULER_FLAG}=false"


def test_the_command_sets_it_before_parsing(monkeypatch, capsys):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert cli.main([]) == 2  # no sub-command: help, exit status 2
    assert f"{xla_cpu.SCHEDULER_FLAG}=false" in os.environ["XLA_FLAGS"]
    assert "train" in capsys.readouterr().out
