"""The ``llmdsdb`` command-line tool: a thin layer over the library.

Errors from :mod:`llmdsdb.errors` become one line on stderr and exit code 1 in one place
(:class:`LlmdsdbGroup`); usage errors exit with 2 (click's convention).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from llmdsdb._version import __version__
from llmdsdb.errors import LlmdsdbError

__all__ = ["cli", "main"]


class LlmdsdbGroup(click.Group):
    """Turns every :class:`LlmdsdbError` into ``Error: <message>`` and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LlmdsdbError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=LlmdsdbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmdsdb")
def cli() -> None:
    """llmdsdb: BM25, vector and hybrid search over one crash-safe file.

    \b
    Example:
      llmdsdb --version
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    cli.main(args=argv, prog_name="llmdsdb")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
