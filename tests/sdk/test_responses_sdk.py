"""The official OpenAI Python SDK's Responses API (`client.responses.create`, `client.responses.stream`)
through a Sluice gateway, for each model given (one per simulated vendor: OpenAI, Anthropic, Gemini).

Environment:
- SLUICE_GATEWAY_URL: the gateway's root URL, such as http://127.0.0.1:8080 (the SDK is given `<root>/v1`);
- SLUICE_API_KEY: a tenant key of the gateway;
- SLUICE_MODELS: the model names to run every check against, comma-separated;
- SLUICE_SIM_URLS (optional): a JSON object, model name -> the simulated vendor's base URL, whose
  GET /sim/stats is its own account of what it served; when given, the usage the client sees must be
  exactly what the vendor reported and no request may have tripped a vendor check.

For each model: text, a stream (the events and the final response agree), a function-call round trip
(complete and streamed), JSON-schema output, an image input, and the refusals of what Sluice does not
serve (stored conversation state, built-in tools) as 400s naming the field. The simulated vendors answer
tool calls, tool results and images by fixed rules ("Tool said: ...", "I see an image."), and must answer a
JSON-schema request with JSON that follows the schema.
"""

import json
import os
import sys
import urllib.request

import openai
from openai import OpenAI

GATEWAY = os.environ["SLUICE_GATEWAY_URL"].rstrip("/")
API_KEY = os.environ["SLUICE_API_KEY"]
MODELS = [m.strip() for m in os.environ["SLUICE_MODELS"].split(",") if m.strip()]
SIMS = json.loads(os.environ.get("SLUICE_SIM_URLS", "{}"))
client = OpenAI(base_url=GATEWAY + "/v1", api_key=API_KEY, max_retries=0, timeout=30)

PROMPT = "Tell me about rivers."
TOOLS = [
    {
        "type": "function",
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
    }
]
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]
CALENDAR_EVENT = {
    "type": "json_schema",
    "name": "calendar_event",
    "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "date": {"type": "string"},
            "participants": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "date", "participants"],
        "additionalProperties": False,
    },
    "strict": True,
}
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
        """The usage the client saw is consistent, and exactly what the vendor reported for its one call."""
        assert usage is not None, "no usage reached the client"
        assert usage.input_tokens > 0 and usage.output_tokens > 0, usage
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens, usage
        assert usage.input_tokens_details.cached_tokens >= 0, usage
        assert usage.output_tokens_details.reasoning_tokens >= 0, usage
        if self.delta is not None:
            assert self.delta["requests"] == 1, self.delta
            assert usage.input_tokens == self.delta["prompt_tokens"], (usage, self.delta)
            assert usage.output_tokens == self.delta["completion_tokens"], (usage, self.delta)
            assert self.delta["invalid_requests"] == 0, self.delta


def text(model):
    with Vendor(model) as vendor:
        response = client.responses.create(model=model, input=PROMPT)
    assert response.object == "response", response
    assert response.status == "completed", response.status
    assert response.error is None and response.incomplete_details is None, response
    assert response.output[0].type == "message", response.output
    assert response.output[0].role == "assistant", response.output[0]
    assert isinstance(response.output_text, str) and response.output_text.strip(), response
    assert response.id.startswith("resp_"), response.id
    vendor.assert_usage(response.usage)


def instructions_and_settings(model):
    response = client.responses.create(
        model=model,
        instructions="Answer in one sentence.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
        max_output_tokens=200,
        temperature=0.2,
        metadata={"team": "sdk-tests"},
        store=False,
    )
    assert response.status == "completed", response.status
    assert response.instructions == "Answer in one sentence.", response.instructions
    assert response.max_output_tokens == 200, response.max_output_tokens
    assert response.metadata == {"team": "sdk-tests"}, response.metadata
    assert response.output_text.strip(), response


def stream(model):
    full = client.responses.create(model=model, input=PROMPT).output_text
    with Vendor(model) as vendor:
        with client.responses.stream(model=model, input=PROMPT) as events:
            seen = list(events)
            final = events.get_final_response()
    types = [e.type for e in seen]
    assert types[:2] == ["response.created", "response.in_progress"], types[:4]
    assert types[-1] == "response.completed", types[-3:]
    assert [e.sequence_number for e in seen] == list(range(len(seen))), "sequence numbers count from 0"
    streamed = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert streamed == final.output_text == full, (streamed, final.output_text, full)
    done = [e for e in seen if e.type == "response.output_text.done"]
    assert len(done) == 1 and done[0].text == full, done
    assert final.status == "completed", final.status
    vendor.assert_usage(final.usage)
    # The same through `create(stream=True)`.
    raw = list(client.responses.create(model=model, input=PROMPT, stream=True))
    assert raw[-1].type == "response.completed", raw[-1].type
    assert raw[-1].response.output_text == full


def function_call_round_trip(model):
    with Vendor(model) as vendor:
        first = client.responses.create(model=model, input=ASK_WEATHER, tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id, call
    arguments = json.loads(call.arguments)
    assert isinstance(arguments.get("city"), str) and arguments["city"], arguments
    vendor.assert_usage(first.usage)

    # What the function calling guide does: the output items go back as input, then the result.
    conversation = ASK_WEATHER + [item.model_dump(exclude_none=True) for item in first.output]
    conversation.append({"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"})
    with Vendor(model) as vendor:
        second = client.responses.create(model=model, input=conversation, tools=TOOLS, store=False)
    assert second.output_text.startswith("Tool said: 18C and sunny"), second.output_text
    assert not [item for item in second.output if item.type == "function_call"], second.output
    vendor.assert_usage(second.usage)


def streamed_function_call(model):
    expected = [i for i in client.responses.create(model=model, input=ASK_WEATHER, tools=TOOLS).output
                if i.type == "function_call"][0]
    with Vendor(model) as vendor:
        with client.responses.stream(model=model, input=ASK_WEATHER, tools=TOOLS) as events:
            seen = list(events)
            final = events.get_final_response()
    deltas = "".join(e.delta for e in seen if e.type == "response.function_call_arguments.delta")
    done = [e for e in seen if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == deltas, (done, deltas)
    call = [i for i in final.output if i.type == "function_call"][0]
    assert call.name == "get_weather", call
    assert json.loads(call.arguments) == json.loads(expected.arguments), (call, expected)
    added = [e.item for e in seen if e.type == "response.output_item.added"]
    assert any(item.type == "function_call" and item.call_id == call.call_id for item in added), added
    vendor.assert_usage(final.usage)


def json_schema_output(model):
    response = client.responses.create(
        model=model,
        input=[
            {"role": "system", "content": "Extract the event information."},
            {"role": "user", "content": "Alice and Bob are going to a science fair on Friday."},
        ],
        text={"format": CALENDAR_EVENT},
    )
    assert response.text.format.type == "json_schema", response.text
    event = json.loads(response.output_text)
    assert set(event) == {"name", "date", "participants"}, event
    assert isinstance(event["name"], str) and isinstance(event["date"], str), event
    assert isinstance(event["participants"], list), event
    assert all(isinstance(p, str) for p in event["participants"]), event


def image(model):
    content = [
        {"type": "input_text", "text": "What is in this picture?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
    ]
    with Vendor(model) as vendor:
        response = client.responses.create(model=model, input=[{"role": "user", "content": content}])
    assert response.output_text.startswith("I see an image."), response.output_text
    vendor.assert_usage(response.usage)


def refused(call, param, mention):
    before = [served(m) for m in MODELS]
    try:
        call()
    except openai.BadRequestError as err:
        assert err.status_code == 400, err
        assert err.param == param, (err.param, err.body)
        assert mention in err.message, err.message
    else:
        raise AssertionError(f"expected a 400 naming {param}")
    assert [served(m) for m in MODELS] == before, "a refused request reaches no vendor"


def stored_state_is_refused(model):
    refused(
        lambda: client.responses.create(model=model, input="Tell me more.", previous_response_id="resp_abc123"),
        "previous_response_id",
        "no conversation state",
    )
    refused(lambda: client.responses.create(model=model, input=PROMPT, store=True), "store", "no conversation state")


def built_in_tools_are_refused(model):
    refused(
        lambda: client.responses.create(model=model, input="News today?", tools=[{"type": "web_search"}]),
        "tools[0].type",
        "web_search",
    )


def no_translation_tripped_a_vendor_check():
    for model in MODELS:
        stats = served(model)
        if stats is not None:
            assert stats["invalid_requests"] == 0, (model, stats)


checks = []
for model in MODELS:
    for fn in [
        text,
        instructions_and_settings,
        stream,
        function_call_round_trip,
        streamed_function_call,
        json_schema_output,
        image,
        stored_state_is_refused,
        built_in_tools_are_refused,
    ]:
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
