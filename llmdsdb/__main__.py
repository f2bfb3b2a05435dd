"""``python -m llmdsdb`` runs the command-line tool."""

from llmdsdb.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
