//! Coding agents' protocols through the gateway over real HTTP: OpenAI's Responses API (`/v1/responses`)
//! and Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`, Anthropic's `/v1/models`),
//! against simulated OpenAI, Anthropic and Gemini vendors (`sluice-simulate` faces, which refuse what the
//! real APIs refuse). Complete answers and streams through every vendor kind; the Anthropic pass-through
//! keeps a thinking block's signature byte for byte (the simulated Anthropic refuses a signature it did
//! not issue for exactly that text); a cut stream ends with the protocol's error event; the ledger's rows
//! equal the simulators' bills; a WebSocket attempt gets 426 at once. Then the official `openai` and
//! `anthropic` Python SDKs run `tests/sdk/test_responses_sdk.py` and `tests/sdk/test_messages_sdk.py`
//! against the same three vendors (skipped, with a message, under `SLUICE_SKIP_SDK_TESTS=1`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_api::TokenUsage;
use sluice_simulate::{Fault, SimConfig, Simulator, WireFormat};
use sluice_store::ExportFilter;

const KEY: &str = "sk-agents-client";
const ADMIN: &str = "sk-agents-admin-0123456789abcdefghijklmn";

/// One simulated vendor served over HTTP, as `sluice simulate --vendor` serves it.
struct Vendor {
    sim: Arc<Simulator>,
    server: common::Running,
}

impl Vendor {
    async fn start(vendor: WireFormat, fault: Option<Fault>) -> Self {
        Self::with(vendor, fault, 0.0).await
    }

    /// A vendor that answers every request with its overload or server error.
    async fn down(vendor: WireFormat) -> Self {
        Self::with(vendor, None, 1.0).await
    }

    async fn with(vendor: WireFormat, fault: Option<Fault>, error_rate: f64) -> Self {
        let sim = Arc::new(Simulator::new(SimConfig {
            reply_tokens: 12,
            fault,
            error_rate,
            // A faulty vendor is paced, so the events before its fault reach the gateway before it: a
            // stream that fails before its first event is not broken but failed (a 502, or a failover).
            tokens_per_sec: fault.map(|_| 50.0),
            ..SimConfig::default()
        }));
        let server = common::serve(
            sluice_simulate::router(Arc::clone(&sim), vendor),
            Duration::from_secs(1),
        )
        .await;
        Self { sim, server }
    }

    /// The vendor's bill, summed over its keys.
    fn bill(&self) -> TokenUsage {
        self.sim
            .stats()
            .keys
            .values()
            .fold(TokenUsage::default(), |sum, key| sum.plus(&key.bill))
    }
}

/// The three vendors, and the gateway with one model routed to each (the Anthropic one also under an
/// Anthropic model id), plus `prefix-cut-*` models whose vendors reset the connection mid-stream.
struct Setup {
    openai: Vendor,
    anthropic: Vendor,
    gemini: Vendor,
    gateway: common::GatewayServer,
    _cut: [Vendor; 3],
    _down: [Vendor; 2],
}

fn provider(name: &str, kind: &str, url: &str, key: &str) -> String {
    format!("[[providers]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\nkeys = [\"{key}\"]\n")
}

fn model(name: &str, provider: &str, vendor_model: &str, extra: &str) -> String {
    format!(
        "[[models]]\nname = \"{name}\"\n{extra}\n[[models.deployments]]\nprovider = \"{provider}\"\nmodel = \"{vendor_model}\"\n"
    )
}

impl Setup {
    async fn start() -> Self {
        let openai = Vendor::start(WireFormat::OpenAi, None).await;
        let anthropic = Vendor::start(WireFormat::Anthropic, None).await;
        let gemini = Vendor::start(WireFormat::Gemini, None).await;
        let cut = [
            Vendor::start(WireFormat::OpenAi, Some(Fault::ResetAfter(3))).await,
            Vendor::start(WireFormat::Anthropic, Some(Fault::ResetAfter(3))).await,
            Vendor::start(WireFormat::Gemini, Some(Fault::ResetAfter(3))).await,
        ];
        let down = [
            Vendor::down(WireFormat::OpenAi).await,
            Vendor::down(WireFormat::Anthropic).await,
        ];
        let mut config = format!(
            "[auth]\nkeys = [\"{KEY}\"]\nadmin_key = \"{ADMIN}\"\n\n[upstream]\nconnect_timeout_ms = 1000\nfirst_byte_timeout_ms = 10000\n\
             idle_timeout_ms = 10000\n\n"
        );
        let vendors = [
            (
                "openai",
                "openai",
                format!("{}/v1", openai.server.url()),
                "sk-sim-openai",
                "gpt-sim",
            ),
            (
                "anthropic",
                "anthropic",
                anthropic.server.url(),
                "sk-ant-sim",
                "claude-sim",
            ),
            (
                "gemini",
                "gemini",
                gemini.server.url(),
                "AIza-sim",
                "gemini-3-flash-sim",
            ),
        ];
        for (name, kind, url, key, vendor_model) in &vendors {
            config.push_str(&provider(&format!("sim-{name}"), kind, url, key));
            let extra = if *name == "anthropic" {
                "aliases = [\"claude-sonnet-4-5\"]"
            } else {
                ""
            };
            config.push_str(&model(
                &format!("via-{name}"),
                &format!("sim-{name}"),
                vendor_model,
                extra,
            ));
        }
        for ((name, kind, _, key, vendor_model), vendor) in vendors.iter().zip(&cut) {
            let url = match *name {
                "openai" => format!("{}/v1", vendor.server.url()),
                _ => vendor.server.url(),
            };
            config.push_str(&provider(&format!("cut-{name}"), kind, &url, key));
            config.push_str(&model(&format!("cut-{name}"), &format!("cut-{name}"), vendor_model, ""));
        }
        // Failover between a pass-through and a translated deployment: the first is down.
        config.push_str(&provider(
            "down-openai",
            "openai",
            &format!("{}/v1", down[0].server.url()),
            "sk-sim-down",
        ));
        config.push_str(&provider(
            "down-anthropic",
            "anthropic",
            &down[1].server.url(),
            "sk-ant-down",
        ));
        for (name, first, then, first_model, then_model) in [
            (
                "fail-to-anthropic",
                "down-openai",
                "sim-anthropic",
                "gpt-sim",
                "claude-sim",
            ),
            (
                "fail-to-openai",
                "down-anthropic",
                "sim-openai",
                "claude-sim",
                "gpt-sim",
            ),
        ] {
            config.push_str(&format!(
                "[[models]]\nname = \"{name}\"\n[[models.deployments]]\nprovider = \"{first}\"\nmodel = \"{first_model}\"\n\
                 priority = 0\n[[models.deployments]]\nprovider = \"{then}\"\nmodel = \"{then_model}\"\npriority = 1\n"
            ));
        }
        let gateway = common::GatewayServer::start(&config).await;
        assert!(gateway.warnings.is_empty(), "{:?}", gateway.warnings);
        Self {
            openai,
            anthropic,
            gemini,
            gateway,
            _cut: cut,
            _down: down,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        common::client()
            .post(self.gateway.url(path))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A Messages API call as the Anthropic SDK makes it: `x-api-key` and `anthropic-version`.
    async fn anthropic(&self, path: &str, body: &Value) -> reqwest::Response {
        common::client()
            .post(self.gateway.url(path))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

/// The events of an SSE body: `(event name, data)`, the name empty when the frame has none.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

const MODELS: [&str; 3] = ["via-openai", "via-anthropic", "via-gemini"];

async fn responses_complete_and_streamed(setup: &Setup) {
    for model in MODELS {
        let answer = setup
            .post(
                "/v1/responses",
                &json!({"model": model, "input": "Tell me about rivers.", "max_output_tokens": 256}),
            )
            .await;
        assert_eq!(answer.status(), 200, "{model}");
        let response: Value = answer.json().await.unwrap();
        assert_eq!(response["object"], "response", "{model}: {response}");
        assert_eq!(response["status"], "completed", "{model}: {response}");
        let text = response["output"][0]["content"][0]["text"].as_str().unwrap();
        assert!(!text.is_empty(), "{model}: {response}");
        assert!(response["usage"]["input_tokens"].as_u64().unwrap() > 0, "{model}");
        assert!(response["usage"]["output_tokens"].as_u64().unwrap() > 0, "{model}");

        let answer = setup
            .post(
                "/v1/responses",
                &json!({"model": model, "input": "Tell me about rivers.", "stream": true}),
            )
            .await;
        assert_eq!(answer.status(), 200, "{model}");
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let events = sse_events(&answer.text().await.unwrap());
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names[..2],
            ["response.created", "response.in_progress"],
            "{model}: {names:?}"
        );
        assert_eq!(names.last(), Some(&"response.completed"), "{model}: {names:?}");
        let deltas: String = events
            .iter()
            .filter(|(name, _)| name == "response.output_text.delta")
            .map(|(_, data)| data["delta"].as_str().unwrap())
            .collect();
        let done = events
            .iter()
            .find(|(name, _)| name == "response.output_text.done")
            .unwrap();
        assert_eq!(deltas, done.1["text"].as_str().unwrap(), "{model}");
        assert_eq!(text, deltas, "{model}: the stream says what the complete answer said");
        let completed = &events.last().unwrap().1["response"];
        assert!(
            completed["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{model}: {completed}"
        );
    }
}

async fn messages_complete_and_streamed(setup: &Setup) {
    for model in MODELS {
        let ask = json!({"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": "Tell me about rivers."}]});
        let answer = setup.anthropic("/v1/messages", &ask).await;
        assert_eq!(answer.status(), 200, "{model}");
        let message: Value = answer.json().await.unwrap();
        assert_eq!(message["type"], "message", "{model}: {message}");
        assert_eq!(message["stop_reason"], "end_turn", "{model}: {message}");
        let text = message["content"][0]["text"].as_str().unwrap().to_owned();
        assert!(!text.is_empty(), "{model}");
        assert!(message["usage"]["output_tokens"].as_u64().unwrap() > 0, "{model}");

        let mut streamed = ask.clone();
        streamed["stream"] = json!(true);
        let answer = setup.anthropic("/v1/messages", &streamed).await;
        assert_eq!(answer.status(), 200, "{model}");
        let events = sse_events(&answer.text().await.unwrap());
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}: {names:?}");
        assert_eq!(names.last(), Some(&"message_stop"), "{model}: {names:?}");
        let deltas: String = events
            .iter()
            .filter(|(name, data)| name == "content_block_delta" && data["delta"]["type"] == "text_delta")
            .map(|(_, data)| data["delta"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, text, "{model}");
        let last_delta = events.iter().rfind(|(name, _)| name == "message_delta").unwrap();
        assert!(last_delta.1["usage"]["output_tokens"].as_u64().unwrap() > 0, "{model}");
    }
    // The Anthropic model id configured as an alias, with Claude Code's `Authorization: Bearer`.
    let answer = common::client()
        .post(setup.gateway.url("/v1/messages"))
        .bearer_auth(KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-sluice-provider"], "sim-anthropic");
}

/// The pass-through keeps a thinking block byte for byte: the signature the client gets is the vendor's,
/// and sent back with the next turn it is accepted (the simulated Anthropic checks it against the text).
async fn thinking_signatures_survive(setup: &Setup) {
    let question = json!([{"role": "user", "content": "Are there infinitely many primes?"}]);
    let ask = json!({"model": "via-anthropic", "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": question});
    let answer = setup.anthropic("/v1/messages", &ask).await;
    assert_eq!(answer.status(), 200);
    let raw = answer.text().await.unwrap();
    let message: Value = serde_json::from_str(&raw).unwrap();
    let block = &message["content"][0];
    assert_eq!(block["type"], "thinking", "{message}");
    let (thinking, signature) = (
        block["thinking"].as_str().unwrap(),
        block["signature"].as_str().unwrap(),
    );
    assert_eq!(signature, sluice_simulate::anthropic::thinking_signature(thinking));
    // The vendor's body, not a re-serialisation: its signature's `+/` and `==` as the vendor wrote them.
    assert!(raw.contains(&format!("\"signature\":\"{signature}\"")), "{raw}");

    let conversation = json!([question[0], {"role": "assistant", "content": message["content"]},
        {"role": "user", "content": "Go on."}]);
    let next = json!({"model": "via-anthropic", "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": conversation});
    let answer = setup.anthropic("/v1/messages", &next).await;
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    // A changed signature is refused by the vendor, and the client hears why in Anthropic's shape.
    let mut forged = next.clone();
    forged["messages"][1]["content"][0]["signature"] = json!(format!("{signature}x"));
    let answer = setup.anthropic("/v1/messages", &forged).await;
    assert_eq!(answer.status(), 400);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("signature"),
        "{error}"
    );

    // Streamed: the signature arrives in its own delta, byte for byte.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let answer = setup.anthropic("/v1/messages", &streamed).await;
    let events = sse_events(&answer.text().await.unwrap());
    let thinking: String = events
        .iter()
        .filter(|(_, data)| data["delta"]["type"] == "thinking_delta")
        .map(|(_, data)| data["delta"]["thinking"].as_str().unwrap())
        .collect();
    let signature = events
        .iter()
        .find(|(_, data)| data["delta"]["type"] == "signature_delta")
        .map(|(_, data)| data["delta"]["signature"].as_str().unwrap())
        .unwrap();
    assert_eq!(signature, sluice_simulate::anthropic::thinking_signature(&thinking));
}

/// A Messages call fails over between a pass-through and a translated deployment as chat does: the
/// answer is in Anthropic's format either way, passed through or translated.
async fn messages_fail_over_between_kinds(setup: &Setup) {
    for (model, answered_by) in [("fail-to-anthropic", "sim-anthropic"), ("fail-to-openai", "sim-openai")] {
        for stream in [false, true] {
            let answer = setup
                .anthropic(
                    "/v1/messages",
                    &json!({"model": model, "max_tokens": 128, "stream": stream,
                        "messages": [{"role": "user", "content": "Tell me about rivers."}]}),
                )
                .await;
            assert_eq!(answer.status(), 200, "{model}");
            assert_eq!(answer.headers()["x-sluice-provider"], answered_by, "{model}");
            assert_eq!(answer.headers()["x-sluice-attempts"], "2", "{model}");
            let body = answer.text().await.unwrap();
            if stream {
                let events = sse_events(&body);
                assert_eq!(events.last().unwrap().0, "message_stop", "{model}: {body}");
            } else {
                let message: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(message["type"], "message", "{model}: {message}");
                assert!(!message["content"][0]["text"].as_str().unwrap().is_empty(), "{model}");
            }
        }
    }
}

/// A stream the vendor cuts ends with the protocol's error event, never with its clean end.
async fn cut_streams_end_with_the_protocols_error(setup: &Setup) {
    for model in ["cut-openai", "cut-anthropic", "cut-gemini"] {
        let answer = setup
            .post(
                "/v1/responses",
                &json!({"model": model, "input": "Tell me about rivers.", "stream": true}),
            )
            .await;
        assert_eq!(answer.status(), 200, "{model}");
        let events = sse_events(&answer.text().await.unwrap());
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.last(), Some(&"response.failed"), "{model}: {names:?}");
        assert!(!names.contains(&"response.completed"), "{model}: {names:?}");
        assert_eq!(events.last().unwrap().1["response"]["status"], "failed", "{model}");

        let answer = setup
            .anthropic(
                "/v1/messages",
                &json!({"model": model, "max_tokens": 256, "stream": true,
                    "messages": [{"role": "user", "content": "Tell me about rivers."}]}),
            )
            .await;
        assert_eq!(answer.status(), 200, "{model}");
        let events = sse_events(&answer.text().await.unwrap());
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.last(), Some(&"error"), "{model}: {names:?}");
        assert!(!names.contains(&"message_stop"), "{model}: {names:?}");
        assert_eq!(events.last().unwrap().1["type"], "error", "{model}");
        assert_eq!(events.last().unwrap().1["error"]["type"], "api_error", "{model}");
    }
}

async fn refusals_and_the_websocket(setup: &Setup) {
    for (field, value) in [("previous_response_id", json!("resp_123")), ("store", json!(true))] {
        let mut body = json!({"model": "via-openai", "input": "Hi"});
        body[field] = value;
        let answer = setup.post("/v1/responses", &body).await;
        assert_eq!(answer.status(), 400, "{field}");
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert_eq!(error["error"]["param"], field, "{error}");
    }
    // Codex tries a WebSocket first; a 426 at once sends it to HTTP.
    let started = std::time::Instant::now();
    let answer = common::client()
        .get(setup.gateway.url("/v1/responses"))
        .bearer_auth(KEY)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 426);
    assert!(started.elapsed() < Duration::from_secs(5));
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["code"], "websocket_not_supported", "{error}");

    // Messages errors are in Anthropic's shape: a wrong method, a bad key, an unknown model, a bad body.
    let answer = common::client()
        .get(setup.gateway.url("/v1/messages"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(
        (&error["type"], &error["error"]["type"]),
        (&json!("error"), &json!("invalid_request_error"))
    );
    let answer = common::client()
        .post(setup.gateway.url("/v1/messages"))
        .header("x-api-key", "sk-wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error", "{error}");
    let answer = setup
        .anthropic(
            "/v1/messages",
            &json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(answer.status(), 404);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(
        (&error["type"], &error["error"]["type"]),
        (&json!("error"), &json!("not_found_error"))
    );
    let answer = setup
        .anthropic("/v1/messages", &json!({"model": "via-openai", "messages": []}))
        .await;
    assert_eq!(answer.status(), 400);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("max_tokens"),
        "{error}"
    );
}

async fn counts_and_models(setup: &Setup) {
    let count = |model: &str, text: &str| json!({"model": model, "system": "You are a scientist", "messages": [{"role": "user", "content": text}]});
    for (model, counted) in [
        ("via-anthropic", "vendor"),
        ("via-openai", "estimated"),
        ("via-gemini", "estimated"),
    ] {
        let short = setup
            .anthropic("/v1/messages/count_tokens", &count(model, "Hello, Claude"))
            .await;
        assert_eq!(short.status(), 200, "{model}");
        assert_eq!(short.headers()["x-sluice-token-count"], counted, "{model}");
        let short: Value = short.json().await.unwrap();
        let long: Value = setup
            .anthropic(
                "/v1/messages/count_tokens",
                &count(model, &"Hello, Claude. ".repeat(20)),
            )
            .await
            .json()
            .await
            .unwrap();
        let (short, long) = (
            short["input_tokens"].as_u64().unwrap(),
            long["input_tokens"].as_u64().unwrap(),
        );
        assert!(0 < short && short < long, "{model}: {short} {long}");
    }
    let page: Value = common::client()
        .get(setup.gateway.url("/v1/models"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(MODELS.iter().all(|m| ids.contains(m)), "{page}");
    assert_eq!(page["data"][0]["type"], "model");
    assert_eq!(page["has_more"], false);
    // Without `anthropic-version`, OpenAI's list.
    let list = common::get_json(&setup.gateway, "/v1/models", KEY).await;
    assert_eq!(list["object"], "list", "{list}");
}

/// A tenant's virtual key works on both protocols (as `x-api-key` too), its allow-list and rate limits
/// apply, and refusals come in each protocol's shape.
async fn tenants_apply(setup: &Setup) -> String {
    let admin = |path: &str, body: Value| {
        common::client()
            .post(setup.gateway.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let tenant = json!({"name": "agents", "rpm": 1000, "models": ["via-anthropic", "via-openai"]});
    assert_eq!(admin("/admin/tenants", tenant).await.unwrap().status(), 201);
    let key: Value = admin("/admin/tenants/agents/keys", json!({"name": "claude"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let call = |path: &str, body: Value| {
        common::client()
            .post(setup.gateway.url(path))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let ask = |model: &str| json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]});
    let answer = call("/v1/messages", ask("via-anthropic")).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-ratelimit-limit-requests"], "1000");
    let answer = call("/v1/messages", ask("via-gemini")).await.unwrap();
    assert_eq!(answer.status(), 403);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["type"], "permission_error", "{error}");
    let answer = call(
        "/v1/messages/count_tokens",
        json!({"model": "via-gemini", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 403);

    let respond = |model: &str| {
        common::client()
            .post(setup.gateway.url("/v1/responses"))
            .bearer_auth(&key)
            .json(&json!({"model": model, "input": "Hi"}))
            .send()
    };
    assert_eq!(respond("via-openai").await.unwrap().status(), 200);
    let answer = respond("via-gemini").await.unwrap();
    assert_eq!(answer.status(), 403);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_allowed", "{error}");

    let page: Value = common::client()
        .get(setup.gateway.url("/v1/models"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["via-openai", "via-anthropic"], "{page}");
    "agents".to_owned()
}

/// Every call above is in the ledger, and its rows add up to exactly what each vendor billed. Returns the
/// rows per tenant.
async fn the_ledger_equals_the_bills(setup: &Setup) -> std::collections::HashMap<String, usize> {
    // Every answer has ended, so every row is queued: flushing writes them all.
    setup.gateway.gateway.flush(Duration::from_secs(10)).await;
    let mut billed = std::collections::HashMap::<String, TokenUsage>::new();
    let mut tenants = std::collections::HashMap::<String, usize>::new();
    let mut export = setup.gateway.store().export(ExportFilter::default());
    while let Some(rows) = export.next_page().await.unwrap() {
        for row in rows {
            *tenants.entry(row.tenant.to_string()).or_default() += 1;
            // A cut stream is recorded as the 502 its client got, its usage as far as it went.
            if row.provider.starts_with("cut-") {
                *tenants.entry("(cut streams)".to_owned()).or_default() += 1;
                assert_eq!(row.status, 502, "{row:?}");
                assert!(row.usage.input > 0, "{row:?}");
            }
            let sum = billed.entry(row.provider.to_string()).or_default();
            *sum = sum.plus(&row.usage);
        }
    }
    for (name, vendor) in [
        ("sim-openai", &setup.openai),
        ("sim-anthropic", &setup.anthropic),
        ("sim-gemini", &setup.gemini),
    ] {
        let bill = vendor.bill();
        assert!(bill.output > 0, "{name}: {bill:?}");
        assert_eq!(billed.get(name).copied().unwrap_or_default(), bill, "{name}");
        let stats = vendor.sim.stats();
        assert_eq!(stats.streams_started, stats.streams_completed, "{name}: {stats:?}");
    }
    tenants
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_messages_through_every_vendor() {
    let setup = Setup::start().await;
    responses_complete_and_streamed(&setup).await;
    messages_complete_and_streamed(&setup).await;
    thinking_signatures_survive(&setup).await;
    refusals_and_the_websocket(&setup).await;
    counts_and_models(&setup).await;
    messages_fail_over_between_kinds(&setup).await;
    let tenant = tenants_apply(&setup).await;
    cut_streams_end_with_the_protocols_error(&setup).await;
    let rows = the_ledger_equals_the_bills(&setup).await;
    // The tenant's two answered calls are its rows; its refusals cost nothing and are not rows.
    assert_eq!(rows.get(&tenant), Some(&2), "{rows:?}");
    // Three vendors, two protocols.
    assert_eq!(rows.get("(cut streams)"), Some(&6), "{rows:?}");
    // Only the forged signature tripped a vendor check.
    assert_eq!(setup.anthropic.sim.stats().invalid_requests, 1);
    assert_eq!(setup.openai.sim.stats().invalid_requests, 0);
    assert_eq!(setup.gemini.sim.stats().invalid_requests, 0);
}

// === The official SDKs ===

fn skip_sdk(name: &str) -> bool {
    if std::env::var("SLUICE_SKIP_SDK_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: the {name} SDK test (SLUICE_SKIP_SDK_TESTS=1)");
        return true;
    }
    false
}

/// Runs an SDK script against `setup`'s gateway; every one of its `checks` must pass.
async fn run_script(setup: &Setup, script: &str, checks: usize, env: &[(&str, String)]) {
    let python = tokio::task::spawn_blocking(common::sdk_python).await.unwrap();
    let sims = json!({
        "via-openai": setup.openai.server.url(),
        "via-anthropic": setup.anthropic.server.url(),
        "via-gemini": setup.gemini.server.url(),
    });
    let mut command = tokio::process::Command::new(python);
    command
        .arg(common::repo_root().join("tests/sdk").join(script))
        .env("SLUICE_GATEWAY_URL", setup.gateway.url(""))
        .env("SLUICE_API_KEY", KEY)
        .env("SLUICE_MODELS", MODELS.join(","))
        .env("SLUICE_SIM_URLS", sims.to_string())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env_remove("ANTHROPIC_BASE_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the SDK checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("{checks} passed, 0 failed")), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_responses_api_through_every_vendor() {
    if skip_sdk("Responses API") {
        return;
    }
    let setup = Setup::start().await;
    run_script(&setup, "test_responses_sdk.py", 28, &[]).await;
    the_ledger_equals_the_bills(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_messages_api_through_every_vendor() {
    if skip_sdk("Messages API") {
        return;
    }
    let setup = Setup::start().await;
    let aliases = json!({"claude-sonnet-4-5": "via-anthropic"}).to_string();
    run_script(
        &setup,
        "test_messages_sdk.py",
        30,
        &[
            ("SLUICE_ANTHROPIC_MODELS", "via-anthropic".to_owned()),
            ("SLUICE_MODEL_ALIASES", aliases),
        ],
    )
    .await;
    the_ledger_equals_the_bills(&setup).await;
}

// === The pass-through, byte for byte ===

/// What the raw upstream saw: each request's headers and body bytes.
type Seen = Arc<std::sync::Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>;

/// An Anthropic answer written as no serialiser would write it (spacing, key order, escapes), so any
/// re-serialisation on the way back shows.
const MESSAGE: &str = "{\"id\":\"msg_raw\", \"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-raw\",\
\"content\":[{\"type\":\"thinking\",\"thinking\":\"caf\\u00e9\",\"signature\":\"Zm9v+/ba==\"},\
{\"text\":\"Hi \\ud83d\\ude00\",\"type\":\"text\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\
\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":7}}";

const STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_raw\",\
\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-raw\",\"content\":[],\"stop_reason\":null,\
\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"Zm9v+/ba==\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pass_through_sends_and_returns_bytes_untouched() {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let upstream = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
            let record = Arc::clone(&record);
            async move {
                let stream = body.windows(14).any(|w| w == b"\"stream\": true");
                record.lock().unwrap().push((headers, body));
                let (kind, answer) = if stream {
                    ("text/event-stream", STREAM)
                } else {
                    ("application/json", MESSAGE)
                };
                ([(http::header::CONTENT_TYPE, kind)], answer)
            }
        }),
    );
    let upstream = common::serve(upstream, Duration::from_secs(1)).await;
    let simulated = Vendor::start(WireFormat::OpenAi, None).await;
    let config = format!(
        "[auth]\nkeys = [\"{KEY}\"]\n\n{}{}{}{}",
        provider("raw", "anthropic", &upstream.url(), "sk-ant-raw"),
        model(
            "claude",
            "raw",
            "claude-raw-vendor-id",
            "aliases = [\"claude-opus-4-1\"]"
        ),
        provider(
            "sim-openai",
            "openai",
            &format!("{}/v1", simulated.server.url()),
            "sk-sim"
        ),
        model("gpt", "sim-openai", "gpt-sim", ""),
    );
    let gateway = common::GatewayServer::start(&config).await;

    // A body with what only Anthropic serves (a server tool, a document, a field Sluice does not know),
    // written with odd spacing and escapes.
    let body = |model: &str, stream: bool| {
        format!(
            "{{ \"model\" : \"{model}\",\"max_tokens\":64, \"stream\": {stream},\n \"context_management\": {{\"edits\": []}},\
             \"tools\":[{{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}}],\
             \"messages\":[{{\"role\":\"user\",\"content\":[{{\"type\":\"document\",\"source\":{{\"type\":\"text\",\
             \"media_type\":\"text/plain\",\"data\":\"Rivers.\"}}}},{{\"type\":\"text\",\"text\":\"caf\\u00e9 1.50\",\
             \"cache_control\":{{\"type\":\"ephemeral\"}}}}]}}] }}"
        )
    };
    let send = |body: String| {
        common::client()
            .post(gateway.url("/v1/messages"))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "context-management-2025-06-27")
            .header("anthropic-beta", "interleaved-thinking-2025-05-14")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for stream in [false, true] {
        let sent = body("claude-opus-4-1-20250805", stream);
        let answer = send(sent.clone()).await.unwrap();
        assert_eq!(answer.status(), 200, "stream {stream}");
        let got = answer.text().await.unwrap();
        assert_eq!(
            got,
            if stream { STREAM } else { MESSAGE },
            "the vendor's bytes, untouched"
        );

        let (headers, received) = seen.lock().unwrap().last().cloned().unwrap();
        // Only the model changed, and nothing else of the body.
        let expected = sent.replacen("\"claude-opus-4-1-20250805\"", "\"claude-raw-vendor-id\"", 1);
        assert_eq!(std::str::from_utf8(&received).unwrap(), expected);
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        let betas: Vec<&str> = headers
            .get_all("anthropic-beta")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            betas,
            ["context-management-2025-06-27", "interleaved-thinking-2025-05-14"]
        );
        assert_eq!(
            headers["x-api-key"], "sk-ant-raw",
            "the gateway's upstream key, not the client's"
        );
        assert!(headers.get("authorization").is_none());
    }
    // The same body to a model no Anthropic upstream serves: refused before any vendor sees it, in
    // Anthropic's shape, naming what cannot be served.
    let answer = send(body("gpt", false)).await.unwrap();
    assert_eq!(answer.status(), 400);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("context_management"),
        "{error}"
    );
    assert_eq!(simulated.sim.stats().requests, 0);

    // The ledger has the vendor's usage of both calls, read from the body and from the frames.
    gateway.gateway.flush(Duration::from_secs(10)).await;
    let mut usage = Vec::new();
    let mut export = gateway.store().export(ExportFilter::default());
    while let Some(rows) = export.next_page().await.unwrap() {
        usage.extend(
            rows.into_iter()
                .map(|row| (row.usage.input, row.usage.output, row.status)),
        );
    }
    assert_eq!(usage, [(12, 7, 200), (12, 7, 200)]);
}
