"""The official Anthropic Python SDK (`client.messages.create`, `client.messages.stream`,
`client.messages.count_tokens`, `client.models.list`) through a Sluice gateway, for each model given (one per
simulated vendor: OpenAI, Anthropic, Gemini).

Environment:
- SLUICE_GATEWAY_URL: the gateway's root URL, such as http://127.0.0.1:8080 (the SDK adds `/v1/messages`);
- SLUICE_API_KEY: a tenant key of the gateway, sent as `x-api-key` (and once as `Authorization: Bearer`,
  as Claude Code sends ANTHROPIC_AUTH_TOKEN);
- SLUICE_MODELS: the model names to run every check against, comma-separated;
- SLUICE_ANTHROPIC_MODELS: those of SLUICE_MODELS served by an Anthropic upstream (the pass-through):
  thinking blocks and their signatures are checked on these, and refusals of what only Anthropic can do on
  the others;
- SLUICE_MODEL_ALIASES (optional): a JSON object, Anthropic model id -> model name, as configured; each id
  must be served as its model;
- SLUICE_SIM_URLS (optional): a JSON object, model name -> the simulated vendor's base URL (GET /sim/stats);
  when given, the usage the client sees must be exactly what the vendor reported.

For each model: text, a stream (the events and the final message agree), tools with a tool-result round
trip (complete and streamed), count_tokens, an image, and on Anthropic upstreams a thinking block whose
signature reaches the client and goes back unchanged with the next request: the simulated Anthropic vendor
refuses a thinking block whose signature it did not issue, as Anthropic does, so the second call succeeding
is the proof. The simulated vendors answer tool results and images by fixed rules ("Tool said: ...",
"I see an image.").
"""

import json
import os
import sys
import urllib.request

import anthropic

GATEWAY = os.environ["SLUICE_GATEWAY_URL"].rstrip("/")
API_KEY = os.environ["SLUICE_API_KEY"]
MODELS = [m.strip() for m in os.environ["SLUICE_MODELS"].split(",") if m.strip()]
ANTHROPIC_MODELS = {m.strip() for m in os.environ.get("SLUICE_ANTHROPIC_MODELS", "").split(",") if m.strip()}
ALIASES = json.loads(os.environ.get("SLUICE_MODEL_ALIASES", "{}"))
SIMS = json.loads(os.environ.get("SLUICE_SIM_URLS", "{}"))
client = anthropic.Anthropic(base_url=GATEWAY, api_key=API_KEY, max_retries=0, timeout=30)

MESSAGES = [{"role": "user", "content": "Tell me about rivers."}]
TOOLS = [
    {
        "name": "get_weather",
        "description": "The current weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    }
]
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]
# A 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def served(model):
    """What the simulated vendor behind `model` has served so far, summed over its keys, or None."""
    if model not in SIMS:
        return None
    with urllib.request.urlopen(SIMS[model] + "/sim/stats", timeout=10) as response:
        stats = json.load(response)
    keys = stats["keys"].values()
    return {
        "requests": sum(k["requests"] for k in keys),
        "prompt_tokens": sum(k["prompt_tokens"] for k in keys),
        "completion_tokens": sum(k["completion_tokens"] for k in keys),
        "invalid_requests": stats["invalid_requests"],
    }


class Vendor:
    """Measures what the vendor served during a `with` block, when its simulator is known."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.before = served(self.model)
        return self

    def __exit__(self, *exc):
        after = served(self.model)
        self.delta = None if after is None else {k: after[k] - self.before[k] for k in after}
        return False

    def assert_usage(self, usage):
        """The usage the client saw is Anthropic's shape, and what the vendor reported for its one call:
        Anthropic's `input_tokens` leaves out cache reads and writes, which have their own counts."""
        assert usage is not None, "no usage reached the client"
        assert usage.input_tokens > 0 and usage.output_tokens > 0, usage
        cache_read = usage.cache_read_input_tokens or 0
        cache_write = usage.cache_creation_input_tokens or 0
        if self.delta is not None:
            assert self.delta["requests"] == 1, self.delta
            assert usage.input_tokens + cache_read + cache_write == self.delta["prompt_tokens"], (usage, self.delta)
            assert usage.output_tokens == self.delta["completion_tokens"], (usage, self.delta)
            assert self.delta["invalid_requests"] == 0, self.delta


def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


def text(model):
    with Vendor(model) as vendor:
        message = client.messages.create(model=model, max_tokens=512, messages=MESSAGES)
    assert message.type == "message" and message.role == "assistant", message
    assert message.content and message.content[0].type == "text", message.content
    assert text_of(message).strip(), message
    assert message.stop_reason == "end_turn", message.stop_reason
    vendor.assert_usage(message.usage)


def system_and_settings(model):
    message = client.messages.create(
        model=model,
        max_tokens=256,
        system=[{"type": "text", "text": "Answer in one sentence.", "cache_control": {"type": "ephemeral"}}],
        messages=MESSAGES,
        stop_sequences=["\n\nHuman:"],
        metadata={"user_id": "sdk-tests"},
    )
    assert text_of(message).strip(), message


def bearer_auth(model):
    # Claude Code with ANTHROPIC_AUTH_TOKEN sends `Authorization: Bearer` instead of `x-api-key`.
    bearer = anthropic.Anthropic(base_url=GATEWAY, auth_token=API_KEY, api_key=None, max_retries=0, timeout=30)
    message = bearer.messages.create(model=model, max_tokens=64, messages=MESSAGES)
    assert text_of(message).strip(), message


def stream(model):
    full = text_of(client.messages.create(model=model, max_tokens=512, messages=MESSAGES))
    with Vendor(model) as vendor:
        with client.messages.stream(model=model, max_tokens=512, messages=MESSAGES) as events:
            seen = list(events)
            final = events.get_final_message()
    types = [e.type for e in seen]
    assert types[0] == "message_start", types[:3]
    assert types[-1] == "message_stop", types[-3:]
    streamed = "".join(e.delta.text for e in seen if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert streamed == text_of(final) == full, (streamed, text_of(final), full)
    assert final.stop_reason == "end_turn", final.stop_reason
    vendor.assert_usage(final.usage)


def tool_round_trip(model):
    with Vendor(model) as vendor:
        first = client.messages.create(model=model, max_tokens=512, messages=ASK_WEATHER, tools=TOOLS)
    assert first.stop_reason == "tool_use", first.stop_reason
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1, first.content
    use = uses[0]
    assert use.name == "get_weather" and use.id, use
    assert isinstance(use.input.get("city"), str) and use.input["city"], use.input
    vendor.assert_usage(first.usage)

    conversation = ASK_WEATHER + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}]},
    ]
    with Vendor(model) as vendor:
        second = client.messages.create(model=model, max_tokens=512, messages=conversation, tools=TOOLS)
    assert text_of(second).startswith("Tool said: 18C and sunny"), text_of(second)
    assert second.stop_reason == "end_turn", second.stop_reason
    vendor.assert_usage(second.usage)


def streamed_tool_use(model):
    expected = [b for b in client.messages.create(model=model, max_tokens=512, messages=ASK_WEATHER, tools=TOOLS).content
                if b.type == "tool_use"][0]
    with Vendor(model) as vendor:
        with client.messages.stream(model=model, max_tokens=512, messages=ASK_WEATHER, tools=TOOLS) as events:
            seen = list(events)
            final = events.get_final_message()
    partial = "".join(
        e.delta.partial_json for e in seen if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )
    use = [b for b in final.content if b.type == "tool_use"][0]
    assert json.loads(partial) == use.input == expected.input, (partial, use.input, expected.input)
    assert final.stop_reason == "tool_use", final.stop_reason
    vendor.assert_usage(final.usage)


def count_tokens(model):
    count = client.messages.count_tokens(
        model=model, system="You are a scientist", messages=[{"role": "user", "content": "Hello, Claude"}]
    )
    assert count.input_tokens > 0, count
    # A count is what the model would be sent: a longer prompt counts more.
    longer = client.messages.count_tokens(
        model=model,
        system="You are a scientist",
        messages=[{"role": "user", "content": "Hello, Claude. " * 20}],
    )
    assert longer.input_tokens > count.input_tokens, (count, longer)


def image(model):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is in this picture?"},
    ]
    with Vendor(model) as vendor:
        message = client.messages.create(model=model, max_tokens=256, messages=[{"role": "user", "content": content}])
    assert text_of(message).startswith("I see an image."), text_of(message)
    vendor.assert_usage(message.usage)


def thinking_signature_round_trip(model):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    question = [{"role": "user", "content": "Are there infinitely many primes p with p mod 4 == 3?"}]
    first = client.messages.create(model=model, max_tokens=2048, thinking=thinking, messages=question)
    blocks = [block for block in first.content if block.type == "thinking"]
    assert blocks, first.content
    signature = blocks[0].signature
    assert isinstance(signature, str) and signature, blocks[0]
    # The blocks go back exactly as received; the vendor refuses a signature it did not issue.
    conversation = question + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": "Go on."},
    ]
    assert conversation[1]["content"][0]["signature"] == signature
    second = client.messages.create(model=model, max_tokens=2048, thinking=thinking, messages=conversation)
    assert text_of(second).strip(), second.content

    # Streamed, the signature arrives in its own delta and the final message carries it whole.
    with client.messages.stream(model=model, max_tokens=2048, thinking=thinking, messages=question) as events:
        seen = list(events)
        final = events.get_final_message()
    deltas = [e.delta.signature for e in seen if e.type == "content_block_delta" and e.delta.type == "signature_delta"]
    streamed = [block for block in final.content if block.type == "thinking"]
    assert deltas and streamed and streamed[0].signature == deltas[-1], (deltas, streamed)


def anthropic_only_features_are_refused(model):
    # Served by a non-Anthropic upstream, a server tool cannot run: a 400 in Anthropic's shape.
    before = served(model)
    try:
        client.messages.create(
            model=model,
            max_tokens=64,
            messages=MESSAGES,
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
        )
    except anthropic.BadRequestError as err:
        assert err.status_code == 400, err
        assert err.body["type"] == "error", err.body
        assert err.body["error"]["type"] == "invalid_request_error", err.body
        assert "web_search_20250305" in err.body["error"]["message"], err.body
    else:
        raise AssertionError("expected a 400")
    assert served(model) == before, "a refused request reaches no vendor"


def models_in_anthropics_format():
    page = client.models.list()
    ids = [m.id for m in page.data]
    for model in MODELS:
        assert model in ids, (model, ids)
    assert all(m.type == "model" and m.display_name for m in page.data), page.data
    assert page.first_id == ids[0] and page.last_id == ids[-1], page


def aliases_are_served():
    for alias, model in ALIASES.items():
        message = client.messages.create(model=alias, max_tokens=64, messages=MESSAGES)
        assert text_of(message).strip(), (alias, model, message)


def no_translation_tripped_a_vendor_check():
    for model in MODELS:
        stats = served(model)
        if stats is not None:
            assert stats["invalid_requests"] == 0, (model, stats)


checks = []
for model in MODELS:
    fns = [text, system_and_settings, bearer_auth, stream, tool_round_trip, streamed_tool_use, count_tokens, image]
    fns.append(thinking_signature_round_trip if model in ANTHROPIC_MODELS else anthropic_only_features_are_refused)
    for fn in fns:
        checks.append((f"{fn.__name__}[{model}]", lambda fn=fn, model=model: fn(model)))
checks.append(("models_in_anthropics_format", models_in_anthropics_format))
checks.append(("aliases_are_served", aliases_are_served))
checks.append(("no_translation_tripped_a_vendor_check", no_translation_tripped_a_vendor_check))

failed = 0
for name, fn in checks:
    try:
        fn()
        print(f"ok {name}")
    except Exception as err:  # noqa: BLE001 - report every failing check, not only the first
        failed += 1
        print(f"FAILED {name}: {type(err).__name__}: {err}")
print(f"{len(checks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
