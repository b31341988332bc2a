"""The `openai` SDK against Lexora in front of a REAL llama-server.

The engine runs a tiny generated GGUF model (make_tiny_gguf.py: embedding
size 64, gibberish output that never stops on its own, so every request sets
max_tokens). The gateway's backend has no models list: it learns the models
from llama-server's /v1/models.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import openai
import pytest

from conftest import LLAMA_CTX, LLAMA_MODEL, LLAMA_SLOTS, Gateway

N_EMBD = 64  # make_tiny_gguf.py's embedding size
MAX_TOKENS = 8


def user_stats(stats: dict[str, Any], user: str) -> dict[str, Any]:
    return stats.get("users", {}).get(user, {})


def unique_user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_models_come_from_the_engine(llama_client: openai.OpenAI) -> None:
    ids = [model.id for model in llama_client.models.list()]
    assert LLAMA_MODEL in ids, ids


def test_health_shows_backend_reachable(llama_gateway: Gateway) -> None:
    health = llama_gateway.health()
    backend = health["backends"]["llama"]
    assert backend["status"] == "reachable", health
    assert not backend.get("error"), health
    assert LLAMA_MODEL in backend.get("models", []), health
    ready = llama_gateway.get("/health/ready")
    assert ready.status_code == 200, ready.text


def test_chat_non_stream(llama_client: openai.OpenAI) -> None:
    completion = llama_client.chat.completions.create(
        model=LLAMA_MODEL,
        messages=[{"role": "user", "content": "Tell me about the weather today."}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == MAX_TOKENS
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_stream_without_include_usage(llama_client: openai.OpenAI, llama_gateway: Gateway) -> None:
    user = unique_user("llama-streamer")
    chunks = list(
        llama_client.chat.completions.create(
            model=LLAMA_MODEL,
            messages=[{"role": "user", "content": "Write a short poem."}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            extra_body={"x_user_id": user},
        )
    )
    assert chunks, "no chunks arrived"
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.usage is None, f"usage chunk leaked to a client that did not ask: {chunk}"
        assert chunk.choices, f"chunk without choices (usage chunk?) leaked: {chunk}"
    content_chunks = [chunk for chunk in chunks if chunk.choices[0].delta.content]
    assert content_chunks, chunks
    assert chunks[-1].choices[0].finish_reason == "length"

    # The gateway still learned the engine's usage for its accounting.
    stats = llama_gateway.wait_for_stats(
        lambda s: user_stats(s, user).get("completion_tokens") == MAX_TOKENS,
        f"user {user} with completion_tokens == {MAX_TOKENS}",
    )
    assert user_stats(stats, user)["prompt_tokens"] > 0


def test_chat_stream_with_include_usage(llama_client: openai.OpenAI) -> None:
    chunks = list(
        llama_client.chat.completions.create(
            model=LLAMA_MODEL,
            messages=[{"role": "user", "content": "Write a short poem."}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(usage_chunks) == 1, chunks
    final = chunks[-1]
    assert final is usage_chunks[0], "the usage chunk must be the last one"
    assert final.choices == []
    assert final.usage.completion_tokens == MAX_TOKENS
    assert final.usage.prompt_tokens > 0
    assert final.usage.total_tokens == final.usage.prompt_tokens + MAX_TOKENS
    assert any(chunk.choices and chunk.choices[0].delta.content for chunk in chunks)


def test_completions_non_stream(llama_client: openai.OpenAI) -> None:
    completion = llama_client.completions.create(
        model=LLAMA_MODEL, prompt="The quick brown fox", max_tokens=MAX_TOKENS, temperature=0
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert isinstance(choice.text, str) and choice.text
    assert completion.usage is not None
    assert completion.usage.completion_tokens == MAX_TOKENS
    assert completion.usage.prompt_tokens > 0


def test_completions_stream(llama_client: openai.OpenAI, llama_gateway: Gateway) -> None:
    user = unique_user("llama-completer")
    chunks = list(
        llama_client.completions.create(
            model=LLAMA_MODEL,
            prompt="The quick brown fox",
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            extra_body={"x_user_id": user},
        )
    )
    assert chunks
    # No usage-only chunk (empty choices) reaches a client that did not ask.
    # (llama-server's /v1/completions natively puts `usage` on its final
    # finish_reason chunk whether asked or not; that is the engine's own
    # output and may pass through, but only on that chunk.)
    for chunk in chunks:
        assert chunk.choices, f"usage-only chunk leaked to a client that did not ask: {chunk}"
    assert all(chunk.usage is None for chunk in chunks[:-1]), chunks
    assert "".join(chunk.choices[0].text for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    stats = llama_gateway.wait_for_stats(
        lambda s: user_stats(s, user).get("completion_tokens") == MAX_TOKENS,
        f"user {user} with completion_tokens == {MAX_TOKENS}",
    )
    assert user_stats(stats, user)["prompt_tokens"] > 0

    chunks = list(
        llama_client.completions.create(
            model=LLAMA_MODEL,
            prompt="The quick brown fox",
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None, chunks
    assert chunks[-1].usage.completion_tokens == MAX_TOKENS
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + MAX_TOKENS
    assert sum(1 for chunk in chunks if chunk.usage is not None) == 1, chunks


def test_embeddings(llama_client: openai.OpenAI) -> None:
    inputs = ["hello world", "the time is now", "good people"]
    result = llama_client.embeddings.create(model=LLAMA_MODEL, input=inputs, encoding_format="float")
    assert [item.index for item in result.data] == [0, 1, 2]
    for item in result.data:
        assert len(item.embedding) == N_EMBD
        assert all(math.isfinite(x) for x in item.embedding)
        assert any(x != 0 for x in item.embedding)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0

    # The SDK's default asks for base64; the decoded vectors must match.
    default = llama_client.embeddings.create(model=LLAMA_MODEL, input=inputs)
    for plain, decoded in zip(result.data, default.data):
        assert decoded.embedding == pytest.approx(plain.embedding, rel=1e-4, abs=1e-6)


def test_prompt_longer_than_context_is_bad_request(llama_client: openai.OpenAI) -> None:
    per_slot = LLAMA_CTX // LLAMA_SLOTS
    prompt = " ".join(["hello"] * 3000)
    assert len(prompt.split()) > per_slot
    with pytest.raises(openai.BadRequestError) as excinfo:
        llama_client.chat.completions.create(
            model=LLAMA_MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS
        )
    error = excinfo.value
    assert error.status_code == 400
    assert "context" in error.message.lower(), error.message
    assert error.response.headers.get("x-request-id")


def test_stats_count_engine_usage(llama_client: openai.OpenAI, llama_gateway: Gateway) -> None:
    before = llama_gateway.stats()
    user = unique_user("llama-accounting")
    completion = llama_client.chat.completions.create(
        model=LLAMA_MODEL,
        messages=[{"role": "user", "content": "Count these tokens for me, please."}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"x_user_id": user},
    )
    usage = completion.usage
    assert usage is not None
    stats = llama_gateway.wait_for_stats(
        lambda s: user_stats(s, user).get("requests") == 1, f"user {user} counted"
    )
    mine = user_stats(stats, user)
    assert mine["prompt_tokens"] == usage.prompt_tokens
    assert mine["completion_tokens"] == usage.completion_tokens
    assert mine["total_tokens"] == usage.total_tokens
    # Tests run one at a time, so the global counter moved by exactly this.
    assert stats["total_tokens"] - before["total_tokens"] == usage.total_tokens
    assert stats["total_requests"] - before["total_requests"] == 1
    assert LLAMA_MODEL in stats["models"]
