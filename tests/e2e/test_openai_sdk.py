"""The official `openai` Python SDK against Lexora in front of `lexora mock`.

The mock engine is deterministic: its answer is the first N words of
"Lexora keeps the engines reachable, fair and observable; it never invents
answers. Tokens flow through unchanged." (N = --chunks, or max_tokens if
smaller), prompt_tokens = whitespace words of the prompt, and it records every
body it receives (GET /mock/requests), so these tests can check exactly what
Lexora forwarded upstream.
"""

from __future__ import annotations

import math
import signal
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import (
    MOCK_CHUNKS,
    MOCK_EMBEDDING_DIM,
    MOCK_MODELS,
    Gateway,
    MockEngine,
    start_gateway,
    write_gateway_config,
)

MOCK_WORDS = (
    "Lexora keeps the engines reachable, fair and observable; it never invents "
    "answers. Tokens flow through unchanged."
).split()

EXTENSION_FIELDS = ("x_priority", "x_user_id", "x_timeout")


def mock_text(n: int) -> str:
    return " ".join(MOCK_WORDS[:n])


def words(text: str) -> int:
    return len(text.split())


def user_stats(stats: dict[str, Any], user: str) -> dict[str, Any]:
    return stats.get("users", {}).get(user, {})


def unique_user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def only_request(mock_engine: MockEngine, marker: str) -> dict[str, Any]:
    bodies = mock_engine.requests_containing(marker)
    assert len(bodies) == 1, f"expected exactly one upstream request with {marker}, got {bodies}"
    return bodies[0]


# --------------------------------------------------------------------------
# Happy paths
# --------------------------------------------------------------------------


def test_models_list(mock_client: openai.OpenAI) -> None:
    models = mock_client.models.list()
    ids = [model.id for model in models]
    for name in MOCK_MODELS:
        assert name in ids, ids
    assert all(model.object == "model" for model in models)


def test_chat_non_stream(mock_client: openai.OpenAI, marker: str) -> None:
    prompt = f"Please say something about gateways {marker}"
    completion = mock_client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": prompt}],
    )
    assert completion.object == "chat.completion"
    assert completion.model == "tiny"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == mock_text(MOCK_CHUNKS)
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == words(prompt)
    assert completion.usage.completion_tokens == MOCK_CHUNKS
    assert completion.usage.total_tokens == words(prompt) + MOCK_CHUNKS


def test_chat_non_stream_max_tokens(mock_client: openai.OpenAI) -> None:
    completion = mock_client.chat.completions.create(
        model="small",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
        max_tokens=4,
    )
    assert completion.model == "small"
    assert completion.choices[0].message.content == mock_text(4)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 4)


def test_chat_stream_without_include_usage(
    mock_client: openai.OpenAI, mock_gateway: Gateway, mock_engine: MockEngine, marker: str
) -> None:
    user = unique_user("streamer")
    prompt = f"stream me a sentence {marker}"
    non_stream = mock_client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}])

    stream = mock_client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        extra_body={"x_user_id": user},
    )
    chunks = list(stream)
    assert len(chunks) >= MOCK_CHUNKS, chunks
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.usage is None, f"usage chunk leaked to a client that did not ask: {chunk}"
        assert len(chunk.choices) == 1, f"chunk without choices (usage chunk?) leaked: {chunk}"
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert content == non_stream.choices[0].message.content == mock_text(MOCK_CHUNKS)
    assert chunks[-1].choices[0].finish_reason == "stop"

    # Lexora asked the engine for usage anyway, for its own accounting ...
    bodies = mock_engine.requests_containing(marker)
    streamed = [body for body in bodies if body.get("stream")]
    assert len(streamed) == 1, bodies
    assert streamed[0].get("stream_options", {}).get("include_usage") is True, streamed[0]
    # ... and counted it for the user.
    expected = words(prompt) + MOCK_CHUNKS
    stats = mock_gateway.wait_for_stats(
        lambda s: user_stats(s, user).get("total_tokens") == expected,
        f"user {user} with total_tokens == {expected}",
    )
    assert user_stats(stats, user)["requests"] == 1
    assert user_stats(stats, user)["completion_tokens"] == MOCK_CHUNKS


def test_chat_stream_with_include_usage(mock_client: openai.OpenAI) -> None:
    prompt = "count my words please"
    stream = mock_client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(usage_chunks) == 1, chunks
    final = chunks[-1]
    assert final is usage_chunks[0], "the usage chunk must be the last one"
    assert final.choices == []
    assert final.usage.prompt_tokens == words(prompt)
    assert final.usage.completion_tokens == MOCK_CHUNKS
    assert final.usage.total_tokens == words(prompt) + MOCK_CHUNKS
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert content == mock_text(MOCK_CHUNKS)


def test_completions_non_stream(mock_client: openai.OpenAI) -> None:
    completion = mock_client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == mock_text(5)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == 9


def test_completions_stream(mock_client: openai.OpenAI) -> None:
    chunks = list(mock_client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=6, stream=True))
    assert all(chunk.usage is None for chunk in chunks), chunks
    assert "".join(chunk.choices[0].text for chunk in chunks) == mock_text(6)
    assert chunks[-1].choices[0].finish_reason == "length"

    chunks = list(
        mock_client.completions.create(
            model="tiny",
            prompt="Once upon a time",
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None, chunks
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 6)
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == mock_text(6)


def test_embeddings(mock_client: openai.OpenAI) -> None:
    inputs = ["the first input", "second", "and the third one"]
    # Default: the SDK asks for base64 and decodes whatever comes back.
    result = mock_client.embeddings.create(model="tiny", input=inputs)
    assert [item.index for item in result.data] == [0, 1, 2]
    for item in result.data:
        assert len(item.embedding) == MOCK_EMBEDDING_DIM
        assert math.isclose(math.fsum(x * x for x in item.embedding), 1.0, rel_tol=1e-3)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens == sum(words(text) for text in inputs)

    floats = mock_client.embeddings.create(model="tiny", input=inputs, encoding_format="float")
    assert len(floats.data) == len(result.data)
    for plain, default in zip(floats.data, result.data):
        assert plain.embedding == pytest.approx(default.embedding, rel=1e-5)

    single = mock_client.embeddings.create(model="tiny", input="second", encoding_format="float")
    assert len(single.data) == 1
    assert single.data[0].embedding == pytest.approx(result.data[1].embedding, rel=1e-5)


def test_extension_fields_stripped_unknown_fields_forwarded(
    mock_client: openai.OpenAI, mock_gateway: Gateway, mock_engine: MockEngine, marker: str
) -> None:
    before = user_stats(mock_gateway.stats(), "alice")
    prompt = f"hello from alice {marker}"
    completion = mock_client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": prompt}],
        extra_body={
            "x_priority": "high",
            "x_user_id": "alice",
            "x_timeout": 30,
            "top_k": 7,
            "repetition_penalty": 1.05,
            "chat_template_kwargs": {"enable_thinking": False, "nested": [1, "two", None]},
        },
    )
    assert completion.choices[0].message.content == mock_text(MOCK_CHUNKS)

    body = only_request(mock_engine, marker)
    for field in EXTENSION_FIELDS:
        assert field not in body, f"{field} reached the engine: {body}"
    assert body["top_k"] == 7
    assert body["repetition_penalty"] == 1.05
    assert body["chat_template_kwargs"] == {"enable_thinking": False, "nested": [1, "two", None]}
    assert body["model"] == "tiny"
    assert body["messages"] == [{"role": "user", "content": prompt}]

    usage = completion.usage
    assert usage is not None
    expected_requests = before.get("requests", 0) + 1
    stats = mock_gateway.wait_for_stats(
        lambda s: user_stats(s, "alice").get("requests") == expected_requests,
        f"alice with {expected_requests} requests",
    )
    alice = user_stats(stats, "alice")
    assert alice["total_tokens"] == before.get("total_tokens", 0) + usage.total_tokens
    assert "tiny" in stats["models"]


def test_extension_headers(
    mock_client: openai.OpenAI, mock_gateway: Gateway, mock_engine: MockEngine, marker: str
) -> None:
    user = unique_user("bob")
    mock_client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": f"headers only {marker}"}],
        extra_headers={"x-lexora-user": user, "x-lexora-priority": "low", "x-lexora-timeout": "20"},
    )
    body = only_request(mock_engine, marker)
    for field in EXTENSION_FIELDS:
        assert field not in body, body
    stats = mock_gateway.wait_for_stats(lambda s: user_stats(s, user).get("requests") == 1, f"user {user}")
    assert user_stats(stats, user)["total_tokens"] == 3 + MOCK_CHUNKS


def test_openai_user_field_identifies_user(
    mock_client: openai.OpenAI, mock_gateway: Gateway, mock_engine: MockEngine, marker: str
) -> None:
    user = unique_user("carol")
    mock_client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": f"who am i {marker}"}], user=user
    )
    # `user` is a standard OpenAI field: it goes upstream unchanged ...
    assert only_request(mock_engine, marker).get("user") == user
    # ... and identifies the user when x_user_id is absent.
    mock_gateway.wait_for_stats(lambda s: user_stats(s, user).get("requests") == 1, f"user {user}")


def test_request_id_header(mock_client: openai.OpenAI) -> None:
    raw = mock_client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    first_id = raw.headers.get("x-request-id")
    assert first_id, dict(raw.headers)
    completion = raw.parse()
    assert completion.choices[0].message.content == mock_text(2)

    raw_stream = mock_client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
    )
    second_id = raw_stream.headers.get("x-request-id")
    assert second_id and second_id != first_id
    content = "".join(chunk.choices[0].delta.content or "" for chunk in raw_stream.parse() if chunk.choices)
    assert content == mock_text(2)


def test_health_and_metrics(mock_gateway: Gateway) -> None:
    health = mock_gateway.health()
    backend = health["backends"]["engine"]
    assert backend["status"] == "reachable", health
    assert set(MOCK_MODELS) <= set(backend.get("models", [])), health
    assert mock_gateway.get("/health/ready").status_code == 200

    metrics = mock_gateway.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in metrics.text


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def test_unknown_model_is_not_found(mock_client: openai.OpenAI, mock_engine: MockEngine, marker: str) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        mock_client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": f"hello {marker}"}]
        )
    error = excinfo.value
    assert error.status_code == 404
    assert "no-such-model" in error.message
    assert isinstance(error.body, dict)
    assert {"message", "type", "param", "code"} <= set(error.body), error.body
    assert error.response.headers.get("x-request-id")
    assert mock_engine.requests_containing(marker) == [], "an unknown model must not reach the engine"


def test_engine_rate_limit_passes_through(mock_client: openai.OpenAI, marker: str) -> None:
    message = f"engine is busy, slow down {marker}"
    with pytest.raises(openai.RateLimitError) as excinfo:
        mock_client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            extra_body={"mock": {"status": 429, "message": message, "retry_after": 2}},
        )
    error = excinfo.value
    assert error.status_code == 429
    assert message in error.message
    assert error.response.headers.get("retry-after") == "2"
    assert error.response.headers.get("x-request-id")


def test_mid_stream_reset_raises_while_iterating(mock_client: openai.OpenAI) -> None:
    # Paced so the first chunks are surely flushed before the engine's reset:
    # Lexora has then already answered 200 and must end the stream with an
    # SSE error event.
    stream = mock_client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        extra_body={"mock": {"reset_after": 3, "tokens_per_second": 20}},
    )
    received: list[Any] = []
    with pytest.raises(openai.APIError) as excinfo:
        for chunk in stream:
            received.append(chunk)
    error = excinfo.value
    assert not isinstance(error, openai.APIConnectionError), (
        "expected an SSE error event from Lexora, not a broken connection"
    )
    assert error.message
    assert isinstance(error.body, dict) and "message" in error.body, error.body
    assert 1 <= len(received) <= 3, received
    content = "".join(chunk.choices[0].delta.content or "" for chunk in received if chunk.choices)
    assert mock_text(MOCK_CHUNKS).startswith(content)


def test_invalid_priority_is_bad_request(mock_client: openai.OpenAI, mock_engine: MockEngine, marker: str) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        mock_client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"hello {marker}"}],
            extra_body={"x_priority": "urgent"},
        )
    error = excinfo.value
    assert error.status_code == 400
    assert "x_priority" in error.message
    assert isinstance(error.body, dict) and error.body.get("param") == "x_priority", error.body
    assert mock_engine.requests_containing(marker) == []


def test_errors_are_counted(mock_client: openai.OpenAI, mock_gateway: Gateway) -> None:
    user = unique_user("erin")
    with pytest.raises(openai.InternalServerError):
        mock_client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            extra_body={"x_user_id": user, "mock": {"status": 500, "message": "engine exploded"}},
        )
    stats = mock_gateway.wait_for_stats(lambda s: user_stats(s, user).get("errors") == 1, f"an error for {user}")
    assert stats["errors_last_hour"] >= 1


# --------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------


def test_sigterm_finishes_inflight_stream_and_exits_zero(
    lexora_bin: Path, mock_engine: MockEngine, tmp_path: Path
) -> None:
    config = write_gateway_config(tmp_path, "engine", mock_engine.url, list(MOCK_MODELS))
    gateway = start_gateway(lexora_bin, tmp_path, "lexora-gateway-sigterm", config)
    try:
        client = gateway.client()
        stream = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            stream=True,
            extra_body={"mock": {"tokens_per_second": 20}},
        )
        iterator = iter(stream)
        chunks = [next(iterator)]  # the stream is in flight now (~350 ms to go)
        gateway.proc.proc.send_signal(signal.SIGTERM)
        chunks.extend(iterator)
        content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert content == mock_text(8), "an in-flight stream must finish during graceful shutdown"
        returncode = gateway.proc.proc.wait(timeout=10)
        assert returncode == 0, f"exit status {returncode} after SIGTERM"
    finally:
        gateway.proc.stop()
