"""The README's first screen and CI agree: one install, one main job, one test command."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _first_code_block(text: str) -> list[str]:
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no bash code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_first_screen_has_install_main_job_and_tests():
    install, main_job, tests = _first_code_block((REPO / "README.md").read_text())
    assert install.startswith("pip install")
    assert main_job == "relaxjax train"  # no arguments beyond the command itself
    assert tests == "python -m pytest -q"


def test_ci_runs_the_readme_test_command():
    tests = _first_code_block((REPO / "README.md").read_text())[2]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for line in ci if line.strip() and not line.startswith("#")]
    assert commands[-1] == tests
    assert any("pip install" in line and '".[test]"' in line for line in commands)
    assert any("python3 -m venv" in line for line in commands)  # a fresh environment
