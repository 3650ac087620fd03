"""Embedders: text in, unit float32 rows out, for memories and cues sent without an embedding.

:class:`Embedder` is the whole interface. :class:`HashingEmbedder` is the
built-in default: no model, no download, the same vector for the same text in
every process and on every machine (features are hashed with BLAKE2b, never
with Python's per-process salted ``hash()``). A real model (model2vec) is an
optional extra, loaded only when a space asks for it (:func:`get_embedder`).

Failure semantics: a text with nothing to embed (empty or whitespace only) is
an :class:`~memspace.errors.InvalidArgument` naming its index in the batch; an
embedder never returns a constant or zero vector for it.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from memspace.errors import InvalidArgument

Matrix = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to an ``len(texts) x dimension`` float32 matrix of unit rows."""

    name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed every text; raise InvalidArgument naming ``texts[i]`` if one has no content."""
        ...


_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_CHAR_NGRAMS = (3, 4, 5)
# Each feature family is normalised on its own and mixed with these weights (squares sum to 1), so
# the cosine of two texts is roughly the weighted mean of the per-family cosines. Words carry the
# meaning; character n-grams make inflections and typos ("remember"/"remembered") still match, but
# weigh less because unrelated English shares many of them ("the", "ing").
_W_WORDS = math.sqrt(0.5)
_W_BIGRAMS = math.sqrt(0.2)
_W_CHARS = math.sqrt(0.3)


@lru_cache(maxsize=1 << 17)
def _feature_hash(feature: str) -> int:
    """Stable 64-bit hash of a feature; cached because words and n-grams repeat across texts."""
    return int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")


def _normalise(text: str) -> str:
    """NFKC + case folding + collapsed whitespace: "Ａna  MET" and "ana met" are the same text."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


class HashingEmbedder:
    """Feature hashing of word unigrams, word bigrams and character 3-5-grams.

    Each feature goes to bucket ``h % dimension`` with sign ``+-1`` from the top bit of
    ``h`` (the sign hash keeps colliding features from only ever adding up); counts are
    sublinear (``1 + ln tf``). Deterministic across processes and platforms.
    """

    def __init__(self, dimension: int) -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise InvalidArgument(f"embedder dimension must be a positive integer, got {dimension!r}",
                                  {"field": "dimension"})
        self.name = "hashing"
        self.dimension = dimension

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self.dimension})"

    def embed(self, texts: Sequence[str]) -> Matrix:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._embed_one(text, i)
        return out

    def _embed_one(self, text: str, index: int) -> npt.NDArray[np.float64]:
        if not isinstance(text, str):
            raise InvalidArgument(f"texts[{index}] must be a string, got {type(text).__name__}",
                                  {"field": f"texts[{index}]", "index": index})
        clean = _normalise(text)
        if not clean:
            raise InvalidArgument(f"texts[{index}] is empty or whitespace: there is nothing to embed",
                                  {"field": f"texts[{index}]", "index": index})
        words = _WORD.findall(clean)
        padded = f" {clean} "
        vec = np.zeros(self.dimension, dtype=np.float64)
        self._add_family(vec, ["w:" + w for w in words], _W_WORDS)
        self._add_family(vec, [f"b:{a} {b}" for a, b in pairwise(words)], _W_BIGRAMS)
        self._add_family(
            vec, ["c:" + padded[i:i + n] for n in _CHAR_NGRAMS for i in range(len(padded) - n + 1)], _W_CHARS
        )
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:  # only if every feature cancelled out; refuse rather than return zeros
            raise InvalidArgument(f"texts[{index}] has no usable features to embed",
                                  {"field": f"texts[{index}]", "index": index})
        vec /= norm
        return vec

    def _add_family(self, vec: npt.NDArray[np.float64], features: list[str], weight: float) -> None:
        if not features:
            return
        counts = Counter(features)
        hashes = np.fromiter((_feature_hash(f) for f in counts), dtype=np.uint64, count=len(counts))
        values = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
        signs = np.where(hashes >> np.uint64(63), -1.0, 1.0)
        block = np.zeros(self.dimension, dtype=np.float64)
        np.add.at(block, (hashes % np.uint64(self.dimension)).astype(np.intp), signs * values)
        norm = float(np.linalg.norm(block))
        if norm > 0.0:
            vec += block * (weight / norm)


class Model2VecEmbedder:
    """A model2vec static model (extra ``model``). Loading may download the model once."""

    def __init__(self, model: str, dimension: int) -> None:
        try:
            from model2vec import StaticModel
        except ImportError:
            raise InvalidArgument(
                "the model2vec embedder is not installed; install it with: pip install 'memspace[model]'",
                {"field": "embedder"},
            ) from None
        self._model: Any = StaticModel.from_pretrained(model)
        probe = np.asarray(self._model.encode(["probe"]))
        if probe.shape[-1] != dimension:
            raise InvalidArgument(
                f"model2vec model {model!r} produces {probe.shape[-1]}-dimensional embeddings, "
                f"but the space has dimension {dimension}",
                {"field": "dimension"},
            )
        self.name = f"model2vec:{model}"
        self.dimension = dimension

    def embed(self, texts: Sequence[str]) -> Matrix:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidArgument(f"texts[{i}] is empty or not a string: there is nothing to embed",
                                      {"field": f"texts[{i}]", "index": i})
        out = np.asarray(self._model.encode(list(texts)), dtype=np.float32).reshape(len(texts), self.dimension)
        norms = np.linalg.norm(out, axis=1)
        empty = np.flatnonzero(norms == 0)
        if empty.size:
            i = int(empty[0])
            raise InvalidArgument(f"texts[{i}] has no known tokens: the model gives it no embedding",
                                  {"field": f"texts[{i}]", "index": i})
        unit: Matrix = (out / norms[:, None]).astype(np.float32)
        return unit


DEFAULT_MODEL2VEC = "minishlab/potion-base-8M"


def get_embedder(name: str, dimension: int) -> Embedder:
    """The embedder a space's settings name: ``"hashing"``, ``"model2vec"`` or ``"model2vec:<model>"``.

    Raises InvalidArgument for an unknown name, a missing optional extra (with the pip
    command that installs it) or a model whose dimension differs from the space's.
    """
    if name == "hashing":
        return HashingEmbedder(dimension)
    if name == "model2vec" or name.startswith("model2vec:"):
        model = name.partition(":")[2] or DEFAULT_MODEL2VEC
        return Model2VecEmbedder(model, dimension)
    raise InvalidArgument(
        f"unknown embedder {name!r}: use 'hashing' (built in) or 'model2vec' (extra 'model')",
        {"field": "embedder"},
    )
