"""Embeddings through lmgate: the request gets the active model and nothing else, and the
vectors are the server's own."""

from __future__ import annotations

import openai
import pytest

from tests.real_model.conftest import Activate
from tests.real_model.engine import ALIAS
from tests.real_model.shared import OPENAI_ABSENT

TEXTS = ["the tide comes in", "a quiet mountain village"]


def test_embeddings_through_lmgate_match_the_server(
    activate: Activate, gate_openai: openai.OpenAI, direct_openai: openai.OpenAI
) -> None:
    # generation defaults active: lmgate adds only the model to an embeddings request
    activate(temperature=0, maxTokens=5, stopStrings=["."])
    via = gate_openai.embeddings.create(model=OPENAI_ABSENT, input=TEXTS, encoding_format="float")
    direct = direct_openai.embeddings.create(model=ALIAS, input=TEXTS, encoding_format="float")
    assert [item.index for item in via.data] == [0, 1]
    assert via.usage.prompt_tokens == direct.usage.prompt_tokens > 0
    for got, want in zip(via.data, direct.data, strict=True):
        assert len(got.embedding) == len(want.embedding) > 0
        assert got.embedding == pytest.approx(want.embedding, abs=1e-6)
    assert via.data[0].embedding != via.data[1].embedding


def test_embeddings_in_the_sdks_default_encoding(
    activate: Activate, gate_openai: openai.OpenAI, direct_openai: openai.OpenAI
) -> None:
    """The SDK asks for base64 unless told otherwise; those bytes pass through unchanged."""
    activate()
    via = gate_openai.embeddings.create(model=OPENAI_ABSENT, input=TEXTS[0])
    direct = direct_openai.embeddings.create(model=ALIAS, input=TEXTS[0], encoding_format="float")
    assert via.data[0].embedding == pytest.approx(direct.data[0].embedding, abs=1e-6)
