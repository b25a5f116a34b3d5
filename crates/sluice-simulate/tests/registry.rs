//! Every vendor of the registry against the simulated face of its wire format, over real loopback HTTP:
//! the adapter the registry builds is answered by the face, complete and streamed, with no request the
//! face refuses as invalid. A vendor added to `sluice_providers::VENDORS` is tested here by that alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::SecretString;
use sluice_api::{ChatCompletionRequest, ChatCompletionResponse};
use sluice_providers::{ChatCall, ProviderSettings, ReplyBody, Timeouts, UpstreamKey, VENDORS};
use sluice_simulate::{SimConfig, Simulator, router};

/// Serves `app` on a loopback port; the server stops when the returned handle is aborted.
async fn serve(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

#[tokio::test]
async fn every_registered_vendor_is_answered_by_its_simulated_face() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(5),
        idle: Duration::from_secs(5),
    };
    let key = UpstreamKey::new("sim#0", SecretString::from("sk-sim-registry".to_owned()));
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
            timeouts,
        );
        for stream in [false, true] {
            let request: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
                "model": "sim-model", "stream": stream,
                "messages": [{"role": "user", "content": "Say something about rivers."}]
            }))
            .unwrap();
            let call = ChatCall {
                request: &request,
                model: "sim-model",
                key: &key,
                default_max_tokens: Some(64),
                drop_unsupported: false,
            };
            let reply = adapter
                .chat(call)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", spec.kind));
            let usage = match reply.body {
                ReplyBody::Complete { body, usage } => {
                    let completion: ChatCompletionResponse = serde_json::from_slice(&body).unwrap();
                    let text = completion.choices[0].message.content.clone().unwrap_or_default();
                    assert!(!text.is_empty(), "{}: {completion:?}", spec.kind);
                    usage
                }
                ReplyBody::Stream(mut events) => {
                    let mut usage = None;
                    while let Some(event) = events.next().await {
                        let event = event.unwrap_or_else(|e| panic!("{}: {e:?}", spec.kind));
                        usage = event.usage.or(usage);
                    }
                    usage
                }
            };
            let usage = usage.unwrap_or_else(|| panic!("{} (stream: {stream}) reported no usage", spec.kind));
            assert!(
                usage.prompt_tokens() > 0 && usage.output > 0,
                "{}: {usage:?}",
                spec.kind
            );
        }
        let stats = sim.stats();
        assert_eq!(stats.requests, 2, "{}", spec.kind);
        assert_eq!(
            stats.invalid_requests, 0,
            "{}: the face refused a translation",
            spec.kind
        );
        server.abort();
    }
}
