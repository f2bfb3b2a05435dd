"""A folder named ``llmdsdb`` in the working directory - a database created as
``./llmdsdb``, say - and the installed package (issue 16).

Python puts the working directory first on ``sys.path``, and a folder without
``__init__.py`` there is a namespace-package *portion*: it becomes ``llmdsdb`` only when no
regular package of that name is found on ``sys.path``. A regular install (``pip install .``,
the README's command for users) is on ``sys.path`` and wins. setuptools' default editable
install is not: it adds a finder *after* the path-based one, so the folder wins and
``llmdsdb.open`` is missing; ``--config-settings editable_mode=compat`` puts the checkout
on ``sys.path`` and fixes it. Each case is installed for real, from a copy of the sources
(so that no build touches the checkout the suite runs from), and imported in a subprocess
whose working directory holds an empty ``llmdsdb/`` folder.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from cli_helpers import REPO

pytestmark = pytest.mark.slow
#: no PYTHONPATH: it would put a checkout on sys.path ahead of what is installed
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

PROBE = "import llmdsdb; print(getattr(llmdsdb, '__file__', None), hasattr(llmdsdb, 'open'))"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "llmdsdb", src / "llmdsdb", ignore=shutil.ignore_patterns(
        "__pycache__", "*.so", "*.pyc"))
    return src


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "work" / "llmdsdb").mkdir(parents=True)  # e.g. a database called llmdsdb
    return tmp_path / "work"


def _pip(*args: object) -> None:
    # --ignore-installed: with --prefix, pip would otherwise first uninstall the llmdsdb of
    # the environment running this suite (and every later test would lose the package)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--no-index", "--ignore-installed",
                           *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=ENV, check=False)
    if proc.returncode != 0:
        pytest.skip(f"pip cannot build the package offline here: {proc.stderr[-300:]}")


def _probe_with_site(site_dir: Path, cwd: Path) -> list[str]:
    """Import llmdsdb with ``site_dir`` processed as a site directory (its .pth files run,
    as in a virtual environment), then this interpreter's own site directories for the
    dependencies; the working directory first on sys.path, as for ``python -c``."""
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    code = ("import site\n"
            f"site.addsitedir({str(site_dir)!r})\n"
            + "".join(f"site.addsitedir({p!r})\n" for p in deps) + PROBE)
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, capture_output=True,
                         text=True, timeout=120, env=ENV, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_regular_install_wins_over_a_llmdsdb_folder(sources: Path, workdir: Path,
                                                      tmp_path: Path) -> None:
    target = tmp_path / "site"
    _pip("--target", target, sources)  # what `pip install .` puts in site-packages
    where, has_open = _probe_with_site(target, workdir)
    assert has_open == "True" and where == str(target / "llmdsdb" / "__init__.py")


def test_the_default_editable_install_is_shadowed_and_compat_mode_is_not(
        sources: Path, workdir: Path, tmp_path: Path) -> None:
    rel = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    results = {}
    for mode in ("lenient", "compat"):
        prefix = tmp_path / mode
        _pip("--prefix", prefix, "--config-settings", f"editable_mode={mode}", "-e", sources)
        results[mode] = _probe_with_site(prefix / rel, workdir)
    assert results["lenient"] == ["None", "False"]  # the folder became the package
    assert results["compat"] == [str(sources / "llmdsdb" / "__init__.py"), "True"]


def test_the_readme_installs_users_without_editable_mode() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    first = setup.split("```bash\n", 1)[1].split("```", 1)[0]
    assert "pip install . " in first and "-e" not in first
    assert "editable_mode=compat" in setup
