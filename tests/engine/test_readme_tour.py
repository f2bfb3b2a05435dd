"""The README's Python example runs as written and does what its comments say."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_tour_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "README.md has no Python example"
    script = tmp_path / "tour.py"
    script.write_text(blocks[0], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runs = []
    for _ in range(2):  # a new user runs it again: no error, the same answers (issue 16)
        runpy.run_path(str(script), run_name="__main__")
        runs.append([line.split() for line in capsys.readouterr().out.split("\n")
                     if line.strip()])
    assert runs[0] == runs[1]
    ids = [parts[1] for parts in runs[0]]
    assert ids and "b" not in ids, "a deleted document was returned"
    assert set(ids) <= {"a", "c", "d"}
    by_label: dict[str, list[float]] = {}
    for label, _id, score, *_ in runs[0]:
        by_label.setdefault(label, []).append(float(score))
    for scores in by_label.values():  # no ties that illustrate nothing
        assert len(set(scores)) == len(scores)
    assert max(by_label["bm25"]) < 1.0  # BM25 scores, not normalised ones
    assert all(-1.0 <= x <= 1.0 for x in by_label["vector"])  # cosine similarities
    assert oct((tmp_path / "my-db").stat().st_mode & 0o777) == "0o700"
