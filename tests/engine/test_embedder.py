"""The built-in hashing embedder: deterministic across processes, meaningful enough to rank text."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from memspace.engine.embedder import Embedder, HashingEmbedder, get_embedder
from memspace.errors import InvalidArgument

TEXTS = [
    "I met Ana at the lab yesterday to discuss the results",
    "Ünïcödé café — naïve résumé",
    "the quick brown fox jumps over the lazy dog",
]


def cos(e: HashingEmbedder, a: str, b: str) -> float:
    va, vb = e.embed([a, b])
    return float(va @ vb)


def test_rows_are_unit_float32_of_the_dimension() -> None:
    out = HashingEmbedder(384).embed(TEXTS)
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert isinstance(HashingEmbedder(16), Embedder)


def test_deterministic_across_processes_with_different_hash_seeds() -> None:
    here = HashingEmbedder(384).embed(TEXTS)
    code = (
        "import sys, numpy as np\n"
        "from memspace.engine.embedder import HashingEmbedder\n"
        f"sys.stdout.write(HashingEmbedder(384).embed({TEXTS!r}).tobytes().hex())\n"
    )
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                             check=True).stdout
        there = np.frombuffer(bytes.fromhex(out), dtype=np.float32).reshape(here.shape)
        assert np.array_equal(here, there)


def test_normalisation_case_and_unicode_forms() -> None:
    e = HashingEmbedder(128)
    a, b, c = e.embed(["Met ANA  at the lab", "met ana at the lab", "ｍｅｔ ａｎａ at the lab"])
    assert np.array_equal(a, b) and np.array_equal(b, c)


def test_near_duplicates_are_close_and_unrelated_texts_are_not() -> None:
    e = HashingEmbedder(384)
    assert cos(e, "I met Ana at the lab yesterday to discuss the results",
               "I met Ana at the lab yesterday to discuss the result") > 0.8
    assert cos(e, "The meeting with the vendor is moved to Thursday afternoon",
               "the meeting with the vendor is moved to thursday afternoon!") > 0.8
    assert cos(e, "I met Ana at the lab yesterday to discuss the results",
               "Recipe: mix flour, eggs and sugar; bake for twenty minutes") < 0.3
    assert cos(e, "quarterly revenue grew by twelve percent",
               "my cat sleeps on the windowsill every morning") < 0.3


def test_a_paraphrase_sharing_words_ranks_above_unrelated_text() -> None:
    e = HashingEmbedder(384)
    q = "Ana presented her protein folding results at the lab meeting"
    para = "At the lab meeting, Ana showed results on protein folding"
    for other in ("The train to Berlin leaves at nine from platform four",
                  "Remember to water the plants on the balcony"):
        assert cos(e, q, para) > cos(e, q, other) + 0.2


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_text_without_features_is_rejected_not_a_constant_vector(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        HashingEmbedder(32).embed(["fine", text])
    assert err.value.code == "INVALID_ARGUMENT"
    assert "texts[1]" in err.value.message and err.value.details["index"] == 1


def test_punctuation_only_text_still_embeds_distinctly() -> None:
    e = HashingEmbedder(64)
    a, b = e.embed(["!!!", "???"])
    assert np.isfinite(a).all() and float(a @ b) < 0.9


def test_bad_dimension_is_rejected() -> None:
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidArgument, match="dimension"):
            HashingEmbedder(bad)  # type: ignore[arg-type]


def test_get_embedder() -> None:
    e = get_embedder("hashing", 48)
    assert isinstance(e, HashingEmbedder) and e.dimension == 48 and e.name == "hashing"
    with pytest.raises(InvalidArgument, match="unknown embedder 'word2vec'"):
        get_embedder("word2vec", 48)


def test_model2vec_missing_extra_names_the_pip_command() -> None:
    try:
        import model2vec  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("model2vec is installed here")
    with pytest.raises(InvalidArgument) as err:
        get_embedder("model2vec", 256)
    assert "pip install 'memspace[model]'" in err.value.message
