"""relaxjax.xla_cpu: the XLA:CPU flags the command and benchmarks set."""

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


def test_the_command_sets_them_before_parsing(monkeypatch, capsys):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(xla_cpu, "has_avx512", lambda: True)
    assert cli.main([]) == 2  # no sub-command: help, exit status 2
    assert os.environ["XLA_FLAGS"].split() == [
        f"{xla_cpu.SCHEDULER_FLAG}=false",
        f"{xla_cpu.VECTOR_WIDTH_FLAG}=512",
    ]
    assert "train" in capsys.readouterr().out


CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 {extra}fma
"""


def test_avx512_is_read_from_the_cpu_flags():
    assert xla_cpu.has_avx512(CPUINFO.format(extra="avx512f avx512bw "))
    assert not xla_cpu.has_avx512(CPUINFO.format(extra=""))
    assert not xla_cpu.has_avx512(CPUINFO.format(extra="avx512_bf16 "))  # not AVX-512F itself
    assert not xla_cpu.has_avx512("")


def test_wide_vectors_only_on_avx512_and_only_if_unset(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(xla_cpu, "has_avx512", lambda: False)
    assert xla_cpu.apply_cpu_settings() == [xla_cpu.SCHEDULER_FLAG]
    assert xla_cpu.VECTOR_WIDTH_FLAG not in os.environ["XLA_FLAGS"]
    monkeypatch.setattr(xla_cpu, "has_avx512", lambda: True)
    assert xla_cpu.apply_cpu_settings() == [xla_cpu.VECTOR_WIDTH_FLAG]  # scheduler already set
    monkeypatch.setenv("XLA_FLAGS", f"{xla_cpu.VECTOR_WIDTH_FLAG}=256")
    assert xla_cpu.prefer_wide_vectors() is False
    assert os.environ["XLA_FLAGS"] == f"{xla_cpu.VECTOR_WIDTH_FLAG}=256"
