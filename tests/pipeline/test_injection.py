"""Model and default-parameter injection, per endpoint's wire names."""

from __future__ import annotations

from typing import Any

from lmgate.pipeline.injection import compile_injection, inject

DEFAULTS = {
    "temperature": 0.2,
    "maxTokens": 64,
    "topP": 0.9,
    "topK": 40,
    "repeatPenalty": 1.1,
    "stopStrings": ["END"],
    "stream": False,
}
INJ = compile_injection("qwen/qwen3-4b", DEFAULTS)


def _run(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    inject(body, kind, INJ)
    return body


def test_chat_gets_model_and_openai_names() -> None:
    assert _run("chat", {"messages": []}) == {
        "messages": [],
        "model": "qwen/qwen3-4b",
        "temperature": 0.2,
        "max_tokens": 64,
        "top_p": 0.9,
        "top_k": 40,
        "repeat_penalty": 1.1,
        "stop": ["END"],
        "stream": False,
    }


def test_request_fields_win_and_null_counts_as_present() -> None:
    body = _run("chat", {"model": "other", "temperature": None, "max_tokens": 3})
    assert body["model"] == "other"
    assert body["temperature"] is None
    assert body["max_tokens"] == 3
    assert body["top_p"] == 0.9


def test_responses_messages_and_embeddings_names() -> None:
    responses = _run("responses", {"input": "hi"})
    assert responses["max_output_tokens"] == 64
    assert "top_k" not in responses and "stop" not in responses
    messages = _run("messages", {"messages": []})
    assert messages["max_tokens"] == 64
    assert messages["stop_sequences"] == ["END"]
    assert "repeat_penalty" not in messages
    # no chat model, no sampling defaults: embeddings get only an embedding model
    assert _run("embeddings", {"input": "x"}) == {"input": "x"}


def test_unlimited_max_tokens_only_where_the_wire_accepts_it() -> None:
    inj = compile_injection(None, {"maxTokens": -1})
    chat: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    inject(chat, "chat", inj)
    inject(messages, "messages", inj)
    assert chat == {"max_tokens": -1}
    assert messages == {}


def test_nothing_active_changes_nothing() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert inject(body, "chat", compile_injection(None, None)) is False
    assert body == {"messages": [{"role": "user", "content": "hi"}]}


def test_injected_lists_are_copies() -> None:
    first = _run("chat", {})
    first["stop"].append("X")
    assert _run("chat", {})["stop"] == ["END"]


def test_embeddings_get_the_embedding_model_or_none() -> None:
    chat_only = compile_injection("qwen/qwen3-4b", {"temperature": 0.2})
    body: dict[str, object] = {"input": "x"}
    assert inject(body, "embeddings", chat_only) is False and "model" not in body
    both = compile_injection("qwen/qwen3-4b", {}, embedding_model="nomic-embed")
    added: dict[str, object] = {}
    assert inject(body, "embeddings", both, added) is True
    assert body["model"] == "nomic-embed" and added == {"model": "nomic-embed"}
    chat: dict[str, object] = {"messages": []}
    inject(chat, "chat", both)
    assert chat["model"] == "qwen/qwen3-4b"


def test_added_names_what_was_filled_in() -> None:
    inj = compile_injection("m", {"temperature": 0.2, "maxTokens": 5, "stopStrings": ["END"]})
    body: dict[str, object] = {"messages": [], "temperature": 1.0}
    added: dict[str, object] = {}
    inject(body, "chat", inj, added)
    assert added == {"model": "m", "max_tokens": 5, "stop": ["END"]}
