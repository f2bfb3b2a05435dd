"""Every command ends its --help with an example and is documented in the README."""

from __future__ import annotations

import re

import pytest
from cli_helpers import REPO, run_cli
from click.testing import CliRunner

from llmdsdb.cli import cli

COMMANDS = sorted(cli.commands)
SETUP_COMMANDS = [
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && llmdsdb demo",
    ("python3 -m venv .venv && . .venv/bin/activate && pip install 'torch==2.13.0' "
     "-e '.[test,embed]' && python -m pytest -n 2"),
]


def _readme_cli_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Command line\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert m, "README.md has no '## Command line' section"
    return m.group(1)


def test_the_expected_commands_exist() -> None:
    assert set(COMMANDS) >= {"ingest", "query", "stats", "verify", "export", "backup",
                             "restore", "demo"}


@pytest.mark.parametrize("name", COMMANDS)
def test_help_ends_with_an_example(name: str) -> None:
    out = CliRunner().invoke(cli, [name, "--help"])
    assert out.exit_code == 0, out.output
    lines = out.output.rstrip().splitlines()
    idx = max(i for i, line in enumerate(lines) if line.strip() == "Example:")
    example = " ".join(line.strip() for line in lines[idx + 1:])
    assert example.startswith(f"llmdsdb {name}"), example


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_documented_in_the_readme(name: str) -> None:
    section = _readme_cli_section()
    assert f"### `llmdsdb {name}" in section, f"README 'Command line' lacks llmdsdb {name}"
    assert re.search(rf"```bash\n(?:.*\n)*?llmdsdb {name}\b", section), \
        f"README has no example for llmdsdb {name}"


def test_readme_setup_commands_are_unchanged_and_first() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.DOTALL)
    assert blocks[:2] == SETUP_COMMANDS


def test_installed_script_version_and_usage_error_exit_code() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0 and "llmdsdb" in proc.stdout
    proc = run_cli("query")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
