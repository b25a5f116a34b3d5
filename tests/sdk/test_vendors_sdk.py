"""The official OpenAI Python SDK through a Sluice gateway to three simulated vendors.

Run by crates/sluice/tests/vendors_sdk.rs, which starts a simulated OpenAI, Anthropic and Gemini server
(`sluice-simulate`), a gateway with one model routed to each (`via-openai`, `via-anthropic`, `via-gemini`),
and sets SLUICE_BASE_URL, SLUICE_API_KEY and SLUICE_SIM_URLS (a JSON object: model name -> the simulated
vendor's base URL, whose GET /sim/stats is its own account of what it served).

For each model the same client code must get equivalent answers: text, streams, a tool-call round trip and
an image input, with the finish reasons the vendor meant and exactly the usage the vendor reported. The
simulated vendors check requests as the real ones do, so a translation bug shows as a vendor 400 here.
"""

import json
import os
import sys
import urllib.request

import openai
from openai import OpenAI

BASE_URL = os.environ["SLUICE_BASE_URL"]
API_KEY = os.environ["SLUICE_API_KEY"]
SIMS = json.loads(os.environ["SLUICE_SIM_URLS"])
PROVIDERS = {"via-openai": "sim-openai", "via-anthropic": "sim-anthropic", "via-gemini": "sim-gemini"}
client = OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=20)

MESSAGES = [{"role": "user", "content": "Tell me about rivers."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]
# A 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def stats(model):
    with urllib.request.urlopen(SIMS[model] + "/sim/stats", timeout=10) as response:
        return json.load(response)


def served(model):
    """What the simulated vendor behind `model` has served so far, summed over its keys."""
    s = stats(model)
    keys = s["keys"].values()
    return {
        "requests": sum(k["requests"] for k in keys),
        "prompt_tokens": sum(k["prompt_tokens"] for k in keys),
        "completion_tokens": sum(k["completion_tokens"] for k in keys),
        "invalid_requests": s["invalid_requests"],
    }


class Vendor:
    """Measures what the vendor served during a `with` block."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.before = served(self.model)
        return self

    def __exit__(self, *exc):
        after = served(self.model)
        self.delta = {k: after[k] - self.before[k] for k in after}
        return False

    def assert_usage(self, usage):
        """The usage the client saw is exactly what the vendor reported for its one call."""
        assert self.delta["requests"] == 1, self.delta
        assert usage is not None, "no usage reached the client"
        assert usage.prompt_tokens == self.delta["prompt_tokens"], (usage, self.delta)
        assert usage.completion_tokens == self.delta["completion_tokens"], (usage, self.delta)
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
        assert self.delta["invalid_requests"] == 0, self.delta


def text(model):
    with Vendor(model) as vendor:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        response = raw.parse()
    assert raw.headers["x-sluice-provider"] == PROVIDERS[model], dict(raw.headers)
    choice = response.choices[0]
    assert isinstance(choice.message.content, str) and choice.message.content.strip(), choice
    assert choice.message.role == "assistant"
    assert not choice.message.tool_calls, choice.message
    assert choice.finish_reason == "stop", choice.finish_reason
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    vendor.assert_usage(usage)


def stream(model):
    full = client.chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content
    with Vendor(model) as vendor:
        chunks = list(
            client.chat.completions.create(
                model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full, (streamed, full)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert all(c.usage is None for c in chunks[:-1]), "usage only on the last chunk"
    vendor.assert_usage(last.usage)
    # Without include_usage the client gets no usage chunk.
    plain = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in plain), plain[-1]
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == full


def tool_round_trip(model):
    with Vendor(model) as vendor:
        first = client.chat.completions.create(model=model, messages=ASK_WEATHER, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice.finish_reason
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1, choice.message
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather", call
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str) and arguments["city"], arguments
    vendor.assert_usage(first.usage)

    conversation = ASK_WEATHER + [
        {
            "role": "assistant",
            "content": choice.message.content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    with Vendor(model) as vendor:
        final = client.chat.completions.create(model=model, messages=conversation, tools=TOOLS)
    answer = final.choices[0]
    assert answer.message.content.startswith("Tool said: 18C and sunny"), answer.message
    assert not answer.message.tool_calls, answer.message
    assert answer.finish_reason == "stop", answer.finish_reason
    vendor.assert_usage(final.usage)


def streamed_tool_call(model):
    complete = client.chat.completions.create(model=model, messages=ASK_WEATHER, tools=TOOLS)
    expected = complete.choices[0].message.tool_calls[0]
    with Vendor(model) as vendor:
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=ASK_WEATHER,
                tools=TOOLS,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    calls = {}
    for chunk in chunks:
        for c in chunk.choices:
            for delta in c.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    assert list(calls) == [0], calls
    assert calls[0]["id"], calls
    assert calls[0]["name"] == "get_weather", calls
    assert json.loads(calls[0]["arguments"]) == json.loads(expected.function.arguments), calls
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"], finishes
    vendor.assert_usage(chunks[-1].usage)


def image(model):
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    with Vendor(model) as vendor:
        response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
    choice = response.choices[0]
    assert choice.message.content.startswith("I see an image."), choice.message.content
    assert choice.finish_reason == "stop", choice.finish_reason
    vendor.assert_usage(response.usage)


# What each vendor says about a tool result that answers no call of the turn before.
REFUSALS = {
    "via-openai": "not found in 'tool_calls'",
    "via-anthropic": "tool_use_id",
    "via-gemini": "function response",
}


def vendor_refusal_reaches_the_client(model):
    # The adapters translate this faithfully; the vendor itself must refuse it, and the client must get
    # the vendor's reason as an OpenAI 400.
    messages = ASK_WEATHER + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_b", "name": "ghost", "content": "18C and sunny"},
    ]
    before = served(model)
    try:
        client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    except openai.BadRequestError as err:
        assert err.status_code == 400, err
        assert REFUSALS[model] in err.message, err.message
        assert err.body and err.type == "invalid_request_error", err.body
    else:
        raise AssertionError("expected the vendor to refuse the request")
    after = served(model)
    assert after["invalid_requests"] == before["invalid_requests"] + 1, (before, after)
    assert after["requests"] == before["requests"], "a refused request is not served"


def no_translation_tripped_a_vendor_check():
    # Every other request of this run was valid for its vendor: one refusal each, the deliberate one.
    counts = {model: served(model)["invalid_requests"] for model in SIMS}
    assert counts == {model: 1 for model in SIMS}, counts


checks = []
for model in ["via-openai", "via-anthropic", "via-gemini"]:
    for fn in [text, stream, tool_round_trip, streamed_tool_call, image, vendor_refusal_reaches_the_client]:
        checks.append((f"{fn.__name__}[{model}]", lambda fn=fn, model=model: fn(model)))
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
