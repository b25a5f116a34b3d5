"""The official OpenAI Python SDK against a running Sluice gateway.

Run by crates/sluice/tests/openai_sdk.rs, which starts the gateway and sets SLUICE_BASE_URL and
SLUICE_API_KEY. Each check asserts what a user of the SDK would rely on.
"""

import os
import sys

import openai
from openai import OpenAI

BASE_URL = os.environ["SLUICE_BASE_URL"]
API_KEY = os.environ["SLUICE_API_KEY"]
client = OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=20)
MESSAGES = [{"role": "user", "content": "Tell me about rivers."}]
checks = []


def check(fn):
    checks.append(fn)
    return fn


@check
def completion():
    response = client.chat.completions.create(model="sluice-demo", messages=MESSAGES, max_tokens=12)
    assert response.object == "chat.completion", response
    text = response.choices[0].message.content
    assert isinstance(text, str) and len(text.split()) == 12, text
    assert response.choices[0].finish_reason == "length", response.choices[0].finish_reason
    assert response.usage.completion_tokens == 12, response.usage
    raw = client.chat.completions.with_raw_response.create(model="sluice-demo", messages=MESSAGES)
    assert raw.headers["x-sluice-provider"] == "demo", dict(raw.headers)
    assert raw.headers["x-sluice-attempts"] == "1"
    assert raw.headers["x-request-id"]
    return text


@check
def stream():
    full = client.chat.completions.create(model="sluice-demo", messages=MESSAGES).choices[0].message.content
    chunks = list(client.chat.completions.create(model="sluice-demo", messages=MESSAGES, stream=True))
    assert len(chunks) > 3, chunks
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full, (streamed, full)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "no usage chunk unless asked"


@check
def stream_with_usage():
    chunks = list(
        client.chat.completions.create(
            model="sluice-demo", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == [], last
    assert last.usage.completion_tokens > 0 and last.usage.total_tokens > last.usage.completion_tokens, last.usage


@check
def unknown_model():
    try:
        client.chat.completions.create(model="gpt-7", messages=MESSAGES)
    except openai.NotFoundError as err:
        assert err.status_code == 404
        assert err.code == "model_not_found", err.body
        assert "sluice-demo" in err.message, err.message
    else:
        raise AssertionError("expected NotFoundError")


@check
def bad_request_names_the_field():
    try:
        client.chat.completions.create(model="sluice-demo", messages=[{"role": "wizard", "content": "x"}])
    except openai.BadRequestError as err:
        assert err.param == "messages[0].role", err.body
    else:
        raise AssertionError("expected BadRequestError")


@check
def wrong_key():
    bad = OpenAI(base_url=BASE_URL, api_key="sk-wrong", max_retries=0)
    try:
        bad.chat.completions.create(model="sluice-demo", messages=MESSAGES)
    except openai.AuthenticationError as err:
        assert err.status_code == 401
        assert err.code == "invalid_api_key", err.body
    else:
        raise AssertionError("expected AuthenticationError")


@check
def rate_limited():
    # `limited` is served by a simulated vendor allowing one request per minute per key.
    client.chat.completions.create(model="limited", messages=MESSAGES)
    try:
        client.chat.completions.create(model="limited", messages=MESSAGES)
    except openai.RateLimitError as err:
        assert err.status_code == 429
        assert err.code == "rate_limit_exceeded", err.body
        assert int(err.response.headers["retry-after"]) >= 1
    else:
        raise AssertionError("expected RateLimitError")


@check
def broken_stream_raises():
    # `broken` resets its stream after a few chunks: the SDK must raise, not end quietly.
    stream = client.chat.completions.create(model="broken", messages=MESSAGES, stream=True)
    received = []
    try:
        for chunk in stream:
            received.append(chunk)
    except openai.APIError as err:
        assert "incomplete" in err.message, err.message
        assert len(received) >= 2, received
    else:
        raise AssertionError(f"a cut stream ended quietly after {len(received)} chunks")


@check
def models():
    ids = [m.id for m in client.models.list()]
    assert ids == ["sluice-demo", "limited", "broken"], ids


failed = 0
for fn in checks:
    try:
        fn()
        print(f"ok {fn.__name__}")
    except Exception as err:  # noqa: BLE001 - report every failing check, not only the first
        failed += 1
        print(f"FAILED {fn.__name__}: {type(err).__name__}: {err}")
print(f"{len(checks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
