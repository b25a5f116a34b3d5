//! The simulator's bill against what every registered vendor's adapter reads from its face, over real
//! loopback HTTP: the usage categories the faces report (cache reads, 5-minute and 1-hour cache writes,
//! reasoning) reach the adapters, the bill of every answer the adapter got whole equals the usage it read,
//! category by category, and a stream the client leaves is billed its input and what went out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use sluice_api::{ChatCompletionRequest, TokenUsage};
use sluice_providers::{
    ChatCall, ChatProvider, ProviderSettings, ReplyBody, Timeouts, UpstreamKey, VENDORS, WireFormat,
};
use sluice_simulate::{SimConfig, Simulator, router};

async fn serve(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(5),
        idle: Duration::from_secs(5),
    }
}

/// A model of `wire` that reasons: an o-series name for OpenAI, a thinking model for Gemini. (Anthropic
/// reports no reasoning count of its own.)
fn reasoning_model(wire: WireFormat) -> &'static str {
    match wire {
        WireFormat::OpenAi => "o3-mini",
        WireFormat::Anthropic => "claude-sonnet-4-5",
        WireFormat::Gemini => "gemini-2.5-flash-thinking",
    }
}

/// A conversation with a 6000-character system prompt (about 1500 tokens) marked for an hour's caching
/// (Anthropic's `cache_control`, passed through by the gateway; the other vendors cache by themselves),
/// then `turns` more turns.
fn conversation(model: &str, turns: usize, stream: bool) -> ChatCompletionRequest {
    let manual = "The river carries water from the mountains to the sea. ".repeat(110);
    let mut messages = vec![json!({"role": "system", "content": [
        {"type": "text", "text": manual, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]})];
    for turn in 0..turns {
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": format!("Turn {turn}: tell me about rivers.")}));
    }
    serde_json::from_value(json!({"model": model, "messages": messages, "stream": stream})).unwrap()
}

/// Calls `adapter` and reads the whole answer; the usage it reported.
async fn call(adapter: &dyn ChatProvider, request: &ChatCompletionRequest, key: &UpstreamKey) -> TokenUsage {
    let call = ChatCall {
        request,
        model: &request.model,
        key,
        default_max_tokens: Some(64),
        drop_unsupported: false,
    };
    match adapter.chat(call).await.unwrap().body {
        ReplyBody::Complete { usage, .. } => usage.unwrap(),
        ReplyBody::Stream(mut events) => {
            let mut usage = None;
            while let Some(event) = events.next().await {
                usage = event.unwrap().usage.or(usage);
            }
            usage.unwrap()
        }
    }
}

#[tokio::test]
async fn every_vendor_s_reported_usage_is_the_simulators_bill() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = UpstreamKey::new("sim#0", SecretString::from("sk-sim-bill".to_owned()));
    for spec in VENDORS {
        let sim = Arc::new(Simulator::new(SimConfig::default()));
        let (url, server) = serve(router(Arc::clone(&sim), spec.wire)).await;
        let settings = ProviderSettings {
            base_url: url,
            api_version: spec.current_api_version.map(str::to_owned),
            stream_usage: true,
        };
        let adapter = spec.adapter(
            sluice_providers::UpstreamClient::new(sluice_providers::ClientSettings::default()).unwrap(),
            &settings,
            timeouts(),
        );
        let model = reasoning_model(spec.wire);
        // The first turn writes (or, for automatic caching, reads nothing); the next ones repeat its prefix.
        let first = call(adapter.as_ref(), &conversation(model, 1, false), &key).await;
        let second = call(adapter.as_ref(), &conversation(model, 3, true), &key).await;
        let third = call(adapter.as_ref(), &conversation(model, 3, false), &key).await;
        let reported = first.plus(&second).plus(&third);
        let bill = sim.stats().bill();
        assert_eq!(bill, reported, "{}: the bill is what the adapter read", spec.kind);
        assert_eq!(first.cache_read, 0, "{}: {first:?}", spec.kind);
        assert!(second.cache_read > 0, "{}: {second:?}", spec.kind);
        match spec.wire {
            WireFormat::Anthropic => {
                assert_eq!(first.cache_write_1h, first.prompt_tokens() - first.input, "{first:?}");
                assert!(first.cache_write_1h > 1400, "{first:?}");
                assert_eq!(second.cache_read, first.cache_write_1h, "{second:?}");
                assert_eq!(bill.reasoning, 0);
            }
            WireFormat::OpenAi | WireFormat::Gemini => {
                assert_eq!(first.cache_write(), 0, "{}: {first:?}", spec.kind);
                // 1024 tokens and whole steps of 128.
                assert_eq!((second.cache_read - 1024) % 128, 0, "{}: {second:?}", spec.kind);
                assert!(third.cache_read > second.cache_read, "{}: {third:?}", spec.kind);
                assert_eq!(
                    first.reasoning,
                    2 * (first.output - first.reasoning),
                    "{}: {first:?}",
                    spec.kind
                );
            }
        }
        assert_eq!(sim.stats().invalid_requests, 0, "{}", spec.kind);
        server.abort();
    }
}

#[tokio::test]
async fn a_stream_the_client_leaves_is_billed_its_input_and_what_went_out() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = UpstreamKey::new("sim#0", SecretString::from("sk-sim-leaves".to_owned()));
    for spec in VENDORS {
        // 50 tokens a second, so the stream is still going when the client leaves.
        let sim = Arc::new(Simulator::new(SimConfig {
            tokens_per_sec: Some(50.0),
            reply_tokens: 40,
            ..SimConfig::default()
        }));
        let (url, server) = serve(router(Arc::clone(&sim), spec.wire)).await;
        let settings = ProviderSettings {
            base_url: url,
            api_version: spec.current_api_version.map(str::to_owned),
            stream_usage: true,
        };
        let adapter = spec.adapter(
            sluice_providers::UpstreamClient::new(sluice_providers::ClientSettings::default()).unwrap(),
            &settings,
            timeouts(),
        );
        let request = conversation(reasoning_model(spec.wire), 1, true);
        let call = ChatCall {
            request: &request,
            model: &request.model,
            key: &key,
            default_max_tokens: Some(64),
            drop_unsupported: false,
        };
        let ReplyBody::Stream(mut events) = adapter.chat(call).await.unwrap().body else {
            panic!("{}: not a stream", spec.kind)
        };
        let mut read = 0;
        while read < 5 {
            let event = events.next().await.unwrap().unwrap();
            let chunk: Value = serde_json::from_slice(&event.data).unwrap();
            if chunk["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                read += 1;
            }
        }
        drop(events);
        // The simulator notices at its next write, and bills then.
        let mut stats = sim.stats();
        for _ in 0..100 {
            if stats.streams_cancelled == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            stats = sim.stats();
        }
        assert_eq!(
            (stats.streams_started, stats.streams_cancelled),
            (1, 1),
            "{}",
            spec.kind
        );
        let bill = stats.bill();
        let reasoning = bill.reasoning;
        let visible = bill.output - reasoning;
        assert!(
            bill.prompt_tokens() > 1400,
            "{}: the whole input is billed: {bill:?}",
            spec.kind
        );
        assert!(
            (5..40).contains(&visible),
            "{}: the tokens read, and at most a few in flight, not the 40 of the answer: {bill:?}",
            spec.kind
        );
        if spec.wire != WireFormat::Anthropic {
            assert_eq!(reasoning, 80, "{}: all the reasoning came first: {bill:?}", spec.kind);
        }
        server.abort();
    }
}
