"""The ``llmdsdb`` command-line tool: a thin layer over the library.

Errors from :mod:`llmdsdb.errors` (and operating-system errors such as a missing or
unreadable file) become one line on stderr and exit code 1 in one place
(:class:`LlmdsdbGroup`); usage errors exit with 2 (click's convention). No user error prints
a traceback.

Commands: ``ingest``, ``query``, ``stats``, ``verify``, ``export``, ``backup``, ``restore``,
``reembed``, ``demo`` (each ``--help`` ends with an example; the README's "Command line" section
documents them all).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import click

from llmdsdb._native import kernel_info
from llmdsdb._version import __version__
from llmdsdb.errors import (
    InvalidPathError,
    LlmdsdbError,
    MissingSideWarning,
    NetworkFilesystemWarning,
)

__all__ = ["cli", "main"]

#: Exit code for a problem found by ``verify`` or a failed command (click uses 2 for usage).
EXIT_FAILURE = 1


class LlmdsdbGroup(click.Group):
    """Turns every :class:`LlmdsdbError` (and ``OSError``) into ``Error: <message>`` on one
    line and exit code 1; the only place in the tool that handles errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except LlmdsdbError as exc:
            click.echo(f"Error: {_one_line(str(exc))}", err=True)
            ctx.exit(EXIT_FAILURE)
        except BrokenPipeError:
            # The reader of our output went away (``llmdsdb export db | head``): not an error.
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
            except OSError:
                pass
            ctx.exit(0)
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            click.echo(f"Error: {where}{exc.strerror or exc}", err=True)
            ctx.exit(EXIT_FAILURE)
        except KeyboardInterrupt as exc:
            click.echo(f"Interrupted: {exc}" if str(exc) else "Interrupted.", err=True)
            ctx.exit(130)


_default_showwarning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    """A storage warning (a database on a network filesystem) as one ``Warning:`` line."""
    if issubclass(category, NetworkFilesystemWarning):
        click.echo(f"Warning: {_one_line(str(message))}", err=True)
    else:
        _default_showwarning(message, category, *args, **kw)


def _one_line(msg: str) -> str:
    return " ".join(msg.split()) if "\n" in msg else msg


@click.group(cls=LlmdsdbGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nExample:\n  llmdsdb demo")
@click.version_option(__version__, prog_name="llmdsdb", message=(
    "%(prog)s, version %(version)s (compiled kernels: {isa}; {kernels})".format(
        isa=kernel_info()["isa"], kernels=", ".join(kernel_info()["kernels"]))))
def cli() -> None:
    """llmdsdb: BM25, vector and hybrid search over one crash-safe file.
    """


# --- helpers -----------------------------------------------------------------------------------


def _open_existing(path: str, *, readonly: bool = True) -> Any:
    """Open a database that must already exist (never create one by accident)."""
    import llmdsdb.db as dbmod

    p = Path(path)
    if p.is_symlink():
        raise InvalidPathError(f"{path}: is a symlink; give the real path")
    if not p.exists():
        raise InvalidPathError(f"{path}: no such database")
    if not p.is_dir():
        raise InvalidPathError(f"{path}: not a database directory")
    if not (p / "data.mdb").exists():
        raise InvalidPathError(f"{path}: no database here (no data.mdb)")
    return dbmod.open(path, readonly=readonly)


class _Progress:
    """A one-line ``\\r`` progress display on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False

    def update(self, p: Any) -> None:
        """Show an :class:`llmdsdb.ingest.IngestProgress`."""
        if not self.enabled:
            return
        rate = p.read / max(p.elapsed_s, 1e-9)
        bad_s = f", {p.bad:,} bad" if p.bad else ""
        if p.total:
            left = max(p.total - p.read, 0) / rate if rate > 0 else 0.0
            head = (f"{p.read:,}/{p.total:,} docs read ({100 * p.read / p.total:.0f}%)"
                    f", {p.written:,} written{bad_s}  {rate:,.0f} docs/s, "
                    f"ETA {_duration(left)}")
        elif p.fraction:  # estimated from the bytes read: say so with "~"
            left = p.elapsed_s * (1 - p.fraction) / p.fraction
            head = (f"{p.read:,} docs read (~{100 * p.fraction:.0f}% of the input), "
                    f"{p.written:,} written{bad_s}  {rate:,.0f} docs/s, "
                    f"ETA ~{_duration(left)}")
        else:
            head = f"{p.read:,} docs read, {p.written:,} written{bad_s}  {rate:,.0f} docs/s"
        sys.stderr.write(f"\r  {head} ")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# --- ingest ------------------------------------------------------------------------------------


@cli.command(epilog="\b\nExample:\n"
             "  llmdsdb ingest ./db corpus.jsonl.gz --text-field title --text-field text \\\n"
             "      --embeddings corpus_emb.npy")
@click.argument("path", type=click.Path(dir_okay=True, file_okay=False, path_type=str))
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--id-field", metavar="NAME", help="Field holding the id (default: 'id', then "
              "'_id'). Integer ids become strings.")
@click.option("--text-field", "text_fields", multiple=True, metavar="NAME",
              help="Field holding the text (default: 'text'). Give it more than once to join "
              "fields with a space, e.g. --text-field title --text-field text.")
@click.option("--text-template", metavar="TEMPLATE",
              help="Build the text from fields instead, e.g. '{title}: {text}'.")
@click.option("--text-separator", default=" ", show_default="a space",
              help="Separator between several --text-field values.")
@click.option("--embedding-field", metavar="NAME", help="Field holding the vector as a list "
              "of numbers (default: 'embedding' when present).")
@click.option("--metadata-field", "metadata_fields", multiple=True, metavar="NAME",
              help="Top-level field to copy into the metadata (repeatable). JSONL: added to "
              "the 'metadata' object; CSV: replaces the default of all other columns.")
@click.option("--embeddings", "embeddings_file", metavar="FILE.npy",
              help="Vectors from a 2-D .npy file: row i belongs to the i-th record.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Documents per write transaction (each batch commits atomically).")
@click.option("--skip-bad", is_flag=True, help="Skip and count bad lines instead of stopping.")
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]),
              help="Vector metric when the database is created (default cosine).")
@click.option("--embedder", metavar="NAME",
              help="Embed records that bring no vector with this embedder ('minilm' needs "
              "the [embed] extra; 'hashing' needs nothing). The database remembers it: "
              "'llmdsdb query' then runs hybrid search from text alone.")
@click.option("--progress/--no-progress", default=None,
              help="Show the progress line (default: only when stderr is a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="No progress line and no summary.")
def ingest(path: str, files: tuple[str, ...], id_field: str | None,
           text_fields: tuple[str, ...], text_template: str | None, text_separator: str,
           embedding_field: str | None, metadata_fields: tuple[str, ...],
           embeddings_file: str | None, batch_size: int, skip_bad: bool, metric: str | None,
           embedder: str | None, progress: bool | None, quiet: bool) -> None:
    """Add or update documents in the database at PATH from FILE... (JSONL, CSV/TSV,
    .txt/.md files or directories of them; .gz is read too).

    Upsert semantics: a document whose text, embedding and metadata are unchanged is
    skipped, so re-running an interrupted ingest resumes it. Each batch commits atomically.
    A bad line stops the run with "file:line: reason" before anything of its batch is
    written (earlier batches stay); --skip-bad skips such lines and counts them.
    """
    from llmdsdb.ingest import ingest as run_ingest
    from llmdsdb.ingest_io import FieldSpec

    if text_template is not None and text_fields:
        raise click.UsageError("give --text-field or --text-template, not both")
    if embeddings_file is not None and embedding_field is not None:
        raise click.UsageError("give --embeddings or --embedding-field, not both")
    spec = FieldSpec(id_field=id_field, text_fields=tuple(text_fields),
                     text_template=text_template, text_separator=text_separator,
                     embedding_field=embedding_field, metadata_fields=tuple(metadata_fields))
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(show and not quiet)
    try:
        result = run_ingest(path, files, spec=spec, embeddings_file=embeddings_file,
                            batch_size=batch_size, bad_rows="skip" if skip_bad else "raise",
                            metric=metric, embedder=embedder, on_progress=bar.update)
    finally:
        bar.done()
    if not quiet:
        for line in result.bad_examples:
            click.echo(f"skipped: {line}", err=True)
        if result.bad > len(result.bad_examples):
            click.echo(f"skipped: ... and {result.bad - len(result.bad_examples)} more bad "
                       "lines", err=True)
        click.echo(
            f"ingested {_n(result.read, 'record')} into {path}: {result.written:,} written, "
            f"{result.unchanged:,} unchanged, {_n(result.bad, 'bad line')} skipped; "
            f"{_n(result.count, 'document')}, generation {result.generation}"
        )


def _n(count: int, noun: str) -> str:
    """``"1 document"``, ``"2,000 documents"``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


# --- query -------------------------------------------------------------------------------------


def _similarity(distance: float, metric: str) -> float:
    """A vector distance as the similarity a vector-only query scores by."""
    return 1.0 - distance if metric == "cosine" else -distance


def _explain_dict(ex: Any, mode: str = "hybrid", metric: str = "cosine"
                  ) -> dict[str, Any] | None:
    """The explain record as JSON, plus ``vector_score`` (the similarity a vector-only
    query scores by); a one-sided query has no fusion parts (``*_norm``) and no fields of
    the side that did not run."""
    if ex is None:
        return None
    out = {k: (None if v is None else (int(v) if "rank" in k else float(v)))
           for k, v in ex._asdict().items()}
    dist = out.get("vector_distance")
    out["vector_score"] = None if dist is None else _similarity(dist, metric)
    if mode != "hybrid":
        keep = "bm25_" if mode == "bm25" else "vector_"
        out = {k: v for k, v in out.items() if k.startswith(keep) and not k.endswith("_norm")}
    return out


def _filter_arg(text: str | None) -> Any:
    """The parsed ``--filter`` JSON (None when not given)."""
    if text is None:
        return None
    from llmdsdb.errors import FilterError
    from llmdsdb.filters import parse_filter

    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise FilterError(f"--filter: not valid JSON ({exc})") from None
    except RecursionError:  # json nests by recursion: a bracket bomb must not escape
        raise FilterError("--filter: nested too deeply to read") from None
    return parse_filter(spec)


def _plan_dict(plan: Any) -> dict[str, Any] | None:
    return None if plan is None else dict(plan._asdict())


def _plan_line(plan: Any) -> str:
    """How the query ran, in one line."""
    sides = [f"{name}: {s}" for name, s in (("text", plan.text), ("vector", plan.vector))
             if s is not None]
    head = "no filter" if plan.allowed is None else f"filter allows {plan.allowed:,}"
    return (f"plan: {head}; " + ", ".join(sides) + ("; exact" if plan.exact
                                                   else "; approximate"))


def _score_name(mode: str, fusion: str, metric: str) -> str:
    """What the score column holds: the BM25 score, the vector similarity of the metric, or
    the fused score."""
    if mode == "bm25":
        return "bm25"
    if mode == "vector":
        return {"cosine": "cosine", "ip": "dot", "l2": "-l2sq"}.get(metric, "similarity")
    return "fused" if fusion == "convex" else "rrf"


@cli.command(epilog="\b\nExample:\n"
             "  llmdsdb query ./db 'does vitamin D prevent fractures' --top-k 5 --explain")
@click.argument("path", type=click.Path(path_type=str))
@click.argument("text", required=False)
@click.option("--vector-file", metavar="FILE", help="Query vector: .npy holding one vector, "
              "or a JSON list of numbers.")
@click.option("-k", "--top-k", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0, 9_999),
              help="Skip this many hits first (paging).")
@click.option("--mode", type=click.Choice(["bm25", "vector", "hybrid"]),
              help="Default: hybrid with TEXT and --vector-file, else the side given.")
@click.option("--fusion-weight", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Weight of the vector side in hybrid mode (0 = BM25 only, 1 = vector only).")
@click.option("--fusion", type=click.Choice(["convex", "rrf"]), default="convex",
              show_default=True, help="Convex combination of normalised scores, or RRF.")
@click.option("--normalization", type=click.Choice(["minmax", "zscore"]), default="minmax",
              show_default=True, help="Score normalisation for convex fusion.")
@click.option("--filter", "filter_json", metavar="JSON", help="Metadata filter as JSON, e.g. "
              "'{\"year\": {\"$gte\": 2020}, \"lang\": \"en\"}' (operators: $eq $ne $in $nin "
              "$gt $gte $lt $lte $exists $and $or $not).")
@click.option("--explain", is_flag=True, help="Show each side's score, rank and normalised "
              "score, and how the query ran (the filter's strategy, whether exact).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON "
              "object).")
def query(path: str, text: str | None, vector_file: str | None, top_k: int, offset: int,
          mode: str | None,
          fusion_weight: float, fusion: str, normalization: str, filter_json: str | None,
          explain: bool, as_json: bool) -> None:
    """Search the database at PATH for TEXT (BM25), a vector (--vector-file) or both.

    The score column says what the score is: "bm25" (the BM25 score) for text alone,
    "cosine" / "dot" / "-l2sq" (the similarity of the database's metric) for a vector
    alone, "fused" (or "rrf") when both sides ran.

    --json prints {"query", "mode", "score", "top_k", "results": [{"rank", "id", "score",
    "text", "metadata", "explain"}]}, plus "fusion", "fusion_weight" and "normalization"
    in hybrid mode; "explain" is null unless --explain is given, and --explain adds "plan"
    (the filter's allowed count, each side's strategy, whether exact).

    --filter restricts the hits to documents whose metadata passes the filter; the top-k
    is taken among them (never a post-filter), so it returns --top-k hits whenever that
    many allowed documents match.
    """
    from llmdsdb.ingest_io import read_query_vector

    flt = _filter_arg(filter_json)
    with _open_existing(path) as db:
        # a database with an embedder embeds TEXT itself: hybrid from text alone
        embeds = db.config.get("embedder") is not None
        given_mode = mode
        if mode is None:
            mode = "hybrid" if text is not None and (vector_file or embeds) else (
                "vector" if vector_file or (embeds and text is not None) else "bm25")
        if mode in ("bm25", "hybrid") and text is None:
            raise click.UsageError(
                "give the query TEXT, --vector-file, or both" if given_mode is None
                else f"--mode {mode} needs the query TEXT")
        if mode in ("vector", "hybrid") and not vector_file and not embeds:
            raise click.UsageError(f"--mode {mode} needs --vector-file (this database has "
                                   "no embedder to embed TEXT)")
        vec = read_query_vector(vector_file) if vector_file and mode != "bm25" else None
        q = text if mode != "vector" or vec is None else None
        weight = fusion_weight if mode == "hybrid" else (1.0 if mode == "vector" else 0.0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MissingSideWarning)
            hits = db.search(query=q, vector=vec, top_k=top_k, fusion_weight=weight,
                             fusion=fusion, normalization=normalization, explain=explain,
                             offset=offset, filter=flt)
        for w in caught:
            click.echo(f"warning: {w.message}", err=True)
        if any(issubclass(w.category, MissingSideWarning) for w in caught):
            mode = "bm25" if vec is not None else "vector"  # the side that actually ran
        elif mode == "hybrid" and weight in (0.0, 1.0):  # one side's own list and score
            mode = "bm25" if weight == 0.0 else "vector"
        metric = db.config.get("metric") or "cosine"
        score_name = _score_name(mode, fusion, metric)
    if as_json:
        out: dict[str, Any] = {"query": q, "mode": mode, "top_k": top_k, "score": score_name}
        if mode == "hybrid":
            out.update(fusion=fusion, fusion_weight=weight, normalization=normalization)
        if explain:
            out["plan"] = _plan_dict(hits[0].plan) if hits else None
        out["results"] = [{"rank": i, "id": h.id, "score": float(h.score), "text": h.text,
                           "metadata": h.metadata,
                           "explain": _explain_dict(h.explain, mode, metric) if explain else None}
                          for i, h in enumerate(hits, offset + 1)]
        click.echo(json.dumps(out, ensure_ascii=False, sort_keys=True))
        return
    if not hits:
        click.echo("no results")
        return
    if explain and hits[0].plan is not None:
        click.echo(_plan_line(hits[0].plan))
    id_w = min(max(len(h.id) for h in hits), 24)
    click.echo(f"{'rank':>4}  {score_name:>{max(9, len(score_name))}}  {'id':<{id_w}}  text")
    for i, h in enumerate(hits, offset + 1):
        snippet = " ".join(h.text.split())
        if len(snippet) > 80:
            snippet = snippet[:79] + "…"
        click.echo(f"{i:>4}  {h.score:>{max(9, len(score_name))}.4f}  {h.id:<{id_w}}  {snippet}")
        if explain and h.explain is not None:
            e = h.explain
            parts = []
            if e.bm25_score is not None:
                norm = "" if e.bm25_norm is None else f", normalised {e.bm25_norm:.4f}"
                parts.append(f"bm25 {e.bm25_score:.4f} (rank {e.bm25_rank}{norm})")
            if e.vector_distance is not None:
                norm = "" if e.vector_norm is None else f", normalised {e.vector_norm:.4f}"
                parts.append(f"{_score_name('vector', fusion, metric)} "
                             f"{_similarity(e.vector_distance, metric):.4f} (rank "
                             f"{e.vector_rank}{norm})")
            click.echo("      " + ("; ".join(parts) if parts else "(no side scores)"))


# --- stats / verify / export -------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """Statistics as plain JSON-able values (records and dataclasses become dicts)."""
    import dataclasses

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if hasattr(obj, "_asdict"):
        return _plain(obj._asdict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()  # numpy scalar
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


#: Keys of ``Database.stats()`` that repeat another key; left out of ``stats --json``.
_STATS_DUPLICATES = (("bytes_on_disk",), ("terms",), ("storage", "generation"),
                     ("storage", "path"), ("storage", "readonly"))


def _size(n: Any) -> str:
    """``51544064`` -> ``"49.2 MiB"``."""
    if not isinstance(n, (int, float)):
        return "?"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)  # unreachable


def _stats_report(st: dict[str, Any]) -> list[str]:
    """The statistics as a short report in sections (no internals)."""
    cfg, bm, hn, sto = (st.get(k) or {} for k in ("config", "bm25", "hnsw", "storage"))
    fresh, graph = int(st.get("fresh_vectors") or 0), int(hn.get("count") or 0)
    vectors = fresh + graph
    docs = int(st.get("documents") or 0)
    lines = [f"Database {st.get('path')}  (generation {st.get('generation')})", "",
             "Documents", f"  documents          {docs:,}"]
    if vectors:
        lines.append(f"  with a vector      {vectors:,} ({cfg.get('dim')}-d, "
                     f"{cfg.get('metric')})")
        lines.append(f"    in the graph     {graph:,} (approximate search, HNSW)")
        lines.append(f"    not yet indexed  {fresh:,} (searched exactly until merged into the "
                     "graph)" if fresh else
                     "    not yet indexed  0")
    else:
        lines.append("  with a vector      0 (vector queries need embeddings)")
    if cfg.get("embedder"):
        lines.append(f"  embedder           {cfg['embedder']}")
    an = cfg.get("analyzer") or {}
    lines += ["", "Text index (BM25)",
              f"  terms              {int(bm.get('num_terms') or 0):,}",
              f"  mean length        {float(bm.get('avgdl') or 0):,.1f} tokens per document",
              (f"  analyzer           {an.get('language', '?')}"
               f"{', stemming' if an.get('stem') else ''}"
               f"{', stop words' if an.get('stopwords') else ''}")]
    if vectors:
        lines += ["", "Vector index",
                  f"  metric, dimension  {cfg.get('metric')}, {cfg.get('dim')}",
                  (f"  HNSW               M={cfg.get('hnsw_M')}, "
                   f"ef_construction={cfg.get('hnsw_ef_construction')}")]
    lines += ["", "Storage",
              (f"  on disk            {_size(sto.get('bytes_on_disk'))} "
               f"(map {_size(sto.get('map_size_bytes'))})"),
              f"  durability         {sto.get('durability')}"]
    cp = st.get("compaction") or {}
    if cp:
        lines.append(f"  deleted, not yet   {_size(cp.get('dead_bytes'))} of "
                     f"{_size((cp.get('dead_bytes') or 0) + (cp.get('live_bytes') or 0))} "
                     f"(debt {float(cp.get('debt') or 0):.0%}"
                     + (f", compaction stopped in {cp['in_progress']!r}: run `llmdsdb "
                        "compact`" if cp.get("in_progress") else "") + ")")
    return lines


@cli.command(epilog="\b\nExample:\n  llmdsdb stats ./db --json")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the full statistics as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Also list every figure, internals "
              "included, one dotted key per line.")
def stats(path: str, as_json: bool, verbose: bool) -> None:
    """Print a short report on the database at PATH: documents and vectors (indexed and not
    yet indexed), the text and vector indexes, storage. --verbose adds every figure.
    """
    with _open_existing(path) as db:
        st = _plain(db.stats())
    for key in _STATS_DUPLICATES:
        parent = st
        for k in key[:-1]:
            parent = parent.get(k) or {}
        parent.pop(key[-1], None)
    if as_json:
        click.echo(json.dumps(st, sort_keys=True))
        return
    for line in _stats_report(st):
        click.echo(line)
    if verbose:
        click.echo("\nAll figures")
        for key, value in _flatten(st):
            if isinstance(value, (list, tuple)) and len(value) > 8:
                value = f"[{len(value)} items]"
            click.echo(f"  {key}: {value}")


@cli.command(epilog="\b\nExample:\n  llmdsdb verify ./db")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--structural", is_flag=True, help="Also run LMDB's offline structural verifier "
              "on data.mdb first (use when no process is writing).")
def verify(path: str, structural: bool) -> None:
    """Check the whole database at PATH (checksums, records, id map, indexes, pages) in a
    separate process, so a corrupt file cannot crash this one. Exits 1 and lists every
    problem when there is one.
    """
    from llmdsdb.backup import check_in_subprocess

    report = check_in_subprocess(path, structural=structural)
    if report.ok:
        click.echo(f"ok: {path}: {report.count} documents, generation {report.generation}, "
                   "no problems")
        return
    for problem in report.problems:
        click.echo(f"problem: {_one_line(problem)}")
    click.echo(f"Error: {path}: {len(report.problems)} problem(s) found", err=True)
    click.get_current_context().exit(EXIT_FAILURE)


@cli.command(epilog="\b\nExample:\n"
             "  llmdsdb export ./db -o docs.jsonl.gz && llmdsdb ingest ./copy docs.jsonl.gz")
@click.argument("path", type=click.Path(path_type=str))
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (.gz compresses) instead "
              "of standard output.")
def export(path: str, output: str | None) -> None:
    """Write every document of the database at PATH as JSONL ({"id", "text", "metadata",
    "embedding"}), in insertion order; `llmdsdb ingest` reads it back identically.
    """
    from llmdsdb.ingest_io import write_jsonl_record

    with _open_existing(path) as db:
        if output is None:
            n = _export_to(db, sys.stdout, write_jsonl_record)
        else:
            out_path = Path(output)
            tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
            try:
                if output.lower().endswith(".gz"):
                    import gzip

                    f: TextIO = gzip.open(tmp, "wt", encoding="utf-8")  # type: ignore[assignment]
                else:
                    f = open(tmp, "w", encoding="utf-8")  # noqa: SIM115
                with f:
                    n = _export_to(db, f, write_jsonl_record)
                os.replace(tmp, out_path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            click.echo(f"exported {n} documents to {output}", err=True)


def _export_to(db: Any, out: TextIO, writer: Any) -> int:
    n = 0
    for doc in db.iter_documents():
        writer(out, doc.id, doc.text, doc.metadata, doc.embedding)
        n += 1
    out.flush()
    return n


# --- backup / restore / demo -------------------------------------------------------------------


@cli.command("backup", epilog="\b\nExample:\n  llmdsdb backup ./db ./backups/db-2026-11-27")
@click.argument("path", type=click.Path(path_type=str))
@click.argument("dest", type=click.Path(path_type=str))
def backup_cmd(path: str, dest: str) -> None:
    """Back up the database at PATH into the new directory DEST while it stays in use: a
    compacted LMDB copy of one committed batch (data.mdb) plus manifest.json (format
    version, generation, document count, size and sha256). Never an archive.
    """
    from llmdsdb.backup import backup

    if not Path(path).exists():
        raise InvalidPathError(f"{path}: no such database")
    info = backup(path, dest)
    click.echo(f"backup of {path} written to {info.dest}: {info.count} documents, generation "
               f"{info.generation}, {info.size_bytes} bytes, sha256 {info.sha256}")


@cli.command("restore", epilog="\b\nExample:\n  llmdsdb restore ./backups/db-2026-11-27 ./db --force")
@click.argument("backup_dir", metavar="BACKUP", type=click.Path(path_type=str))
@click.argument("path", type=click.Path(path_type=str))
@click.option("--force", is_flag=True, help="Replace the database already at PATH.")
def restore_cmd(backup_dir: str, path: str, force: bool) -> None:
    """Restore BACKUP into PATH: check the manifest and sha256, verify the copy in a
    temporary directory beside PATH (in a separate process), then move it into place
    atomically. Refuses a non-empty PATH without --force, and a symlink.
    """
    from llmdsdb.backup import restore
    from llmdsdb.errors import BackupError

    try:
        info = restore(backup_dir, path, force=force)
    except BackupError as exc:  # the command line's name for force=True is --force
        raise BackupError(str(exc).replace("pass force=True", "use --force")) from None
    what = "replaced the database at" if info.replaced else "restored into"
    click.echo(f"{what} {info.path}: {info.count} documents, generation {info.generation}")


@cli.command(epilog="\b\nExample:\n  llmdsdb compact ./db")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--max-batch", default=2000, show_default=True, type=click.IntRange(1, 10_000_000),
              help="Work items (terms, graph nodes, pages) per write transaction.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines and no summary.")
def compact(path: str, max_batch: int, quiet: bool) -> None:
    """Give back the space of deleted documents in the database at PATH: postings rewritten
    without them, graph neighbourhoods repaired and deleted nodes dropped, pages freed and
    renumbered. Runs in bounded write transactions (searches and writes go on); interrupted,
    it resumes: re-run the same command. Progress goes to stderr.
    """
    with _open_existing(path, readonly=False) as db:

        def update(p: dict) -> None:
            if not quiet:
                sys.stderr.write(f"  step {p['step']}: {p['phase']}, {p['done']:,} done, "
                                 f"{p['todo']:,} left\n")

        r = db.compact(max_batch=max_batch, progress=update)
    if quiet:
        return
    b, a = r["before"], r["after"]
    if not r["steps"]:
        click.echo(f"{path}: nothing to compact")
        return
    click.echo(f"compacted {path} in {r['steps']} steps{' (resumed)' if r['resumed'] else ''}: "
               f"dead {_size(b['dead_bytes'])} -> {_size(a['dead_bytes'])}, debt "
               f"{b['debt']:.0%} -> {a['debt']:.0%}")


@cli.command(epilog="\b\nExample:\n  llmdsdb reembed ./db --embedder minilm")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--embedder", metavar="NAME", help="The new embedder (e.g. 'minilm', "
              "'hashing'); required unless --abort.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Documents embedded per write transaction.")
@click.option("--abort", "abort", is_flag=True, help="Drop an unfinished re-embed instead "
              "(the database stays as it was).")
@click.option("--progress/--no-progress", default=None,
              help="Show the progress line (default: only when stderr is a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="No progress line and no summary.")
def reembed(path: str, embedder: str | None, batch_size: int, abort: bool,
            progress: bool | None, quiet: bool) -> None:
    """Re-embed every document of the database at PATH with another embedder and rebuild
    the graph. Runs in batches; searches keep using the old vectors until the last step
    switches to the new ones in one transaction. Interrupted, it resumes: re-run the same
    command.
    """
    if abort == (embedder is not None):
        raise click.UsageError("give --embedder NAME, or --abort")
    with _open_existing(path, readonly=False) as db:
        if abort:
            found = db.abort_reembed()
            if not quiet:
                click.echo(f"aborted the unfinished re-embed of {path}" if found
                           else f"{path}: no unfinished re-embed to abort")
            return
        show = (sys.stderr.isatty() if progress is None else progress) and not quiet
        shown = []

        def update(p: Any) -> None:
            if not show or p.phase != "staging":
                return
            rate = p.embedded_now / max(p.elapsed_s, 1e-9)
            pct = f" ({100 * p.staged / p.total:.0f}%)" if p.total else ""
            left = max(p.total - p.staged, 0) / rate if rate > 0 else 0.0
            sys.stderr.write(f"\r  {p.staged:,}/{p.total:,} docs embedded{pct}  "
                             f"{rate:,.0f} docs/s, ETA {_duration(left)} ")
            sys.stderr.flush()
            shown.append(1)

        try:
            r = db.reembed(embedder, batch_size=batch_size, progress=update)
        finally:
            if shown:
                sys.stderr.write("\n")
        if quiet:
            return
        name = r.embedder["name"]
        if not r.switched:
            click.echo(f"{path}: already embedded by {name!r} ({r.embedder['model']}); "
                       "nothing to do")
            return
        rate = r.embedded / r.seconds if r.seconds > 0 else 0.0
        click.echo(f"re-embedded {_n(r.documents, 'document')} of {path} with {name!r} "
                   f"({r.embedder['model']}, {r.embedder['dim']} dimensions): "
                   f"{r.embedded:,} embedded now{' (resumed)' if r.resumed else ''}, "
                   f"{r.seconds:.1f} s, {rate:,.0f} docs/s"
                   + (f"; {_n(r.without_vector, 'document')} without a vector (nothing "
                      "to embed)" if r.without_vector else ""))


@cli.command(epilog="\b\nExample:\n  llmdsdb demo --path ./llmdsdb-demo")
@click.option("--path", "db_path", metavar="DIR", help="Keep the demo database in DIR "
              "(default: a temporary directory, removed afterwards).")
@click.option("-k", "--top-k", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--embedder", metavar="NAME", help="The embedder (default: 'minilm' when the "
              "[embed] extra is installed, else 'hashing'); the output says which it used.")
def demo(db_path: str | None, top_k: int, embedder: str | None) -> None:
    """Build a small database from the sample shipped with llmdsdb (200 short paragraphs)
    and run example BM25, vector and hybrid queries on it.
    """
    from llmdsdb.demo import run_demo

    run_demo(db_path, echo=click.echo, top_k=top_k, embedder=embedder)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="llmdsdb")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
