"""Runs the doctest examples of every module in the package.

Collected here rather than with ``--doctest-modules`` so that pytest never imports the test
directories' own modules (conftest.py files with equal names) as doctest modules.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import llmdsdb

MODULES = sorted(m.name for m in pkgutil.iter_modules(llmdsdb.__path__, "llmdsdb."))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"
