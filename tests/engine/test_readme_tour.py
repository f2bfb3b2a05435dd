"""The README's Python example runs as written and does what its comments say."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_tour_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no Python example"
    script = tmp_path / "tour.py"
    script.write_text(blocks[0], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out.split("\n")
    ids = [line.split()[0] for line in printed if line.strip()]
    assert ids and "b" not in ids, "a deleted document was returned"
    assert set(ids) <= {"a", "c"}
    assert oct((tmp_path / "my-db").stat().st_mode & 0o777) == "0o700"
