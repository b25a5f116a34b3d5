//! Token and request budgets, failover on 429s and honest retry times, end to end over HTTP against
//! simulated vendors that enforce their own limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_simulate::SimConfig;

const ADMIN_KEY: &str = "sk-test-admin-0123456789abcdefghijklmn";

fn provider(name: &str, base_url: &str, keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"openai_compatible\"\nbase_url = \"{base_url}\"\nkeys = [{}]\n",
        keys.join(", ")
    )
}

fn gateway_config(providers: &[String], model: &str) -> String {
    format!(
        "[auth]\nkeys = [\"{CLIENT_KEY}\"]\nadmin_key = \"{ADMIN_KEY}\"\n[upstream]\nbackoff_base_ms = 200\nbackoff_max_ms = 1000\n{}\n{model}",
        providers.join("\n")
    )
}

fn small_request() -> Value {
    json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello there"}]})
}

async fn limits(gateway: &GatewayServer) -> Vec<Value> {
    let body: Value = get_json(gateway, "/admin/limits", ADMIN_KEY).await;
    body["data"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_spreads_over_three_keys_of_two_providers_and_no_key_goes_over() {
    let sim_config = SimConfig {
        rpm: Some(70),
        reply_tokens: 8,
        ..SimConfig::default()
    };
    let first = SimServer::start(sim_config.clone()).await;
    let second = SimServer::start(sim_config).await;
    let config = gateway_config(
        &[
            provider("first", &first.base_url(), &["key-a", "key-b"]),
            provider("second", &second.base_url(), &["key-c"]),
        ],
        r#"
[[models]]
name = "m"
max_queue_ms = 0
[[models.deployments]]
provider = "first"
model = "sim"
rpm = 70
[[models.deployments]]
provider = "second"
model = "sim"
rpm = 70
"#,
    );
    let gateway = GatewayServer::start(&config).await;
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let url = gateway.url("/v1/chat/completions");
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(CLIENT_KEY)
                    .json(&small_request())
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for sim in [&first, &second] {
        let stats = sim.stats();
        // The vendor enforces the same continuously refilled limit, so any overrun shows as its 429.
        assert_eq!(stats.rate_limited, 0, "no key went over its limit: {stats:?}");
        assert!(stats.keys.values().all(|k| k.rate_limited == 0), "{stats:?}");
    }
    let served: u64 = [&first, &second].iter().map(|s| s.stats().requests).sum();
    assert_eq!(served, 200);
    assert_eq!(second.stats().requests.min(1), 1, "the second provider took part");
}

#[tokio::test]
async fn a_key_answering_429_loses_traffic_and_gets_it_back_after_its_cooldown() {
    // The gateway is not told this key's limit; it learns it from the vendor's 429 and retry time.
    // 30 a minute: one request back every 2 s, slow enough that the burst below cannot earn a refill.
    let limited = SimServer::start(SimConfig {
        rpm: Some(30),
        reply_tokens: 4,
        ..SimConfig::default()
    })
    .await;
    let spare = SimServer::start(SimConfig {
        reply_tokens: 4,
        ..SimConfig::default()
    })
    .await;
    let config = gateway_config(
        &[
            provider("limited", &limited.base_url(), &["key-l"]),
            provider("spare", &spare.base_url(), &["key-s"]),
        ],
        r#"
[[models]]
name = "m"
[[models.deployments]]
provider = "limited"
model = "sim"
priority = 0
[[models.deployments]]
provider = "spare"
model = "sim"
priority = 1
"#,
    );
    let gateway = GatewayServer::start(&config).await;
    let mut providers = Vec::new();
    for _ in 0..35 {
        let response = post_chat(&gateway, &small_request()).await;
        assert_eq!(
            response.status(),
            200,
            "no client-visible error while another key has capacity"
        );
        providers.push(response.headers()["x-sluice-provider"].to_str().unwrap().to_owned());
    }
    // The key served its 30 (one more if the burst was slow enough to earn a refill), then the spare
    // took over for the rest of the cooldown.
    let switch = providers.iter().position(|p| p == "spare").unwrap();
    assert!((30..=31).contains(&switch), "{providers:?}");
    assert!(providers[switch..].iter().all(|p| p == "spare"), "{providers:?}");
    assert_eq!(limited.stats().rate_limited, 1, "one 429, then the key cooled down");
    let limits = limits(&gateway).await;
    assert!(limits[0]["budget"]["cooldown_ms"].as_u64().is_some(), "{limits:?}");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = post_chat(&gateway, &small_request()).await;
    assert_eq!(
        response.headers()["x-sluice-provider"],
        "limited",
        "back after the cooldown"
    );

    let metrics = metrics_text(&gateway.url("/metrics")).await;
    assert!(
        metrics.contains("sluice_upstream_rate_limited_total{model=\"m\",provider=\"limited\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_failovers_total{model=\"m\",provider=\"limited\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_every_key_exhausted_the_429_carries_an_honest_retry_after() {
    let upstream = SimServer::start(SimConfig {
        rpm: Some(20),
        reply_tokens: 4,
        ..SimConfig::default()
    })
    .await;
    let config = gateway_config(
        &[provider("only", &upstream.base_url(), &["key-1"])],
        "[[models]]\nname = \"m\"\nmax_queue_ms = 0\n[[models.deployments]]\nprovider = \"only\"\nmodel = \"sim\"\nrpm = 20\n",
    );
    let gateway = GatewayServer::start(&config).await;
    for _ in 0..20 {
        assert_eq!(post_chat(&gateway, &small_request()).await.status(), 200);
    }
    let response = post_chat(&gateway, &small_request()).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    // 20 a minute frees one every 3 s, counted from the first request.
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        upstream.stats().requests,
        20,
        "the refused request never reached the vendor"
    );

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        post_chat(&gateway, &small_request()).await.status(),
        200,
        "a retry at that time succeeds"
    );
    assert_eq!(
        upstream.stats().rate_limited,
        0,
        "the gateway never sent the vendor more than its limit"
    );
    let metrics = metrics_text(&gateway.url("/metrics")).await;
    assert!(metrics.contains("sluice_rejections_total{model=\"m\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_request_waits_in_the_queue_for_the_next_refill_instead_of_failing() {
    let upstream = SimServer::start(SimConfig {
        reply_tokens: 4,
        ..SimConfig::default()
    })
    .await;
    // 30 a minute is one every 2 s: of 31 requests sent at once, the last must wait for the refill.
    let config = gateway_config(
        &[provider("only", &upstream.base_url(), &["key-1"])],
        "[[models]]\nname = \"m\"\nmax_queue_ms = 5000\n[[models.deployments]]\nprovider = \"only\"\nmodel = \"sim\"\nrpm = 30\n",
    );
    let gateway = GatewayServer::start(&config).await;
    let requests: Vec<_> = (0..31)
        .map(|_| {
            let url = gateway.url("/v1/chat/completions");
            tokio::spawn(async move {
                let response = client()
                    .post(url)
                    .bearer_auth(CLIENT_KEY)
                    .json(&small_request())
                    .send()
                    .await;
                response.unwrap().status().as_u16()
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200, "no request failed: the last one waited");
    }
    let metrics = metrics_text(&gateway.url("/metrics")).await;
    assert!(
        !metrics.contains("sluice_queue_waits_total{model=\"m\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_rejections_total{model=\"m\"} 0"), "{metrics}");
}

#[tokio::test]
async fn reservations_are_settled_with_the_real_usage() {
    let upstream = SimServer::start(SimConfig {
        reply_tokens: 10,
        ..SimConfig::default()
    })
    .await;
    let config = gateway_config(
        &[provider("only", &upstream.base_url(), &["key-1"])],
        "[[models]]\nname = \"m\"\n[[models.deployments]]\nprovider = \"only\"\nmodel = \"sim\"\ntpm = 12000\n",
    );
    let gateway = GatewayServer::start(&config).await;
    let mut request = small_request();
    request["max_tokens"] = json!(5000);
    let body: Value = post_chat(&gateway, &request).await.json().await.unwrap();
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let text = post_chat(&gateway, &streamed).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let limits = limits(&gateway).await;
    let remaining = limits[0]["budget"]["remaining_tokens"].as_u64().unwrap();
    // Both requests reserved 5,000+ tokens; had they stayed reserved, under 2,000 would be left. What
    // stays counted is what they used (refill since then only raises the figure).
    assert!(remaining >= 12_000 - 2 * used, "{remaining}");
    assert_eq!(limits[0]["key"], "only#0");
    assert_eq!(limits[0]["budget"]["tpm"], 12_000);
}

#[tokio::test]
async fn the_limits_view_is_for_the_admin_only() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let config = gateway_config(
        &[provider("only", &upstream.base_url(), &["sk-secret-upstream"])],
        "[[models]]\nname = \"m\"\n[[models.deployments]]\nprovider = \"only\"\nmodel = \"sim\"\n",
    );
    let gateway = GatewayServer::start(&config).await;
    let response = client()
        .get(gateway.url("/admin/limits"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = client().get(gateway.url("/admin/limits")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let text = client()
        .get(gateway.url("/admin/limits"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("only#0") && !text.contains("sk-secret-upstream"),
        "{text}"
    );
}

#[tokio::test]
async fn a_stream_without_usage_is_counted_by_the_gateway_and_recorded() {
    let (_capture, upstream) = Capture::start(|_| {
        sse_response(&[
            r#"{"id":"c9","object":"chat.completion.chunk","created":7,"model":"v","choices":[{"index":0,"delta":{"role":"assistant","content":"Rivers run"},"finish_reason":null}]}"#,
            r#"{"id":"c9","object":"chat.completion.chunk","created":7,"model":"v","choices":[{"index":0,"delta":{"content":" to the sea."},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ])
    })
    .await;
    let config = gateway_config(
        &[provider("quiet", &format!("{}/v1", upstream.url()), &["key-q"])],
        "[[models]]\nname = \"m\"\n[[models.deployments]]\nprovider = \"quiet\"\nmodel = \"gpt-4o\"\ntpm = 100000\n",
    );
    let gateway = GatewayServer::start(&config).await;
    let mut request = small_request();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let text = post_chat(&gateway, &request).await.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    let expected = sluice_tokens::count_text("Rivers run to the sea.", sluice_tokens::EncodingName::O200kBase).tokens;
    assert_eq!(usage["usage"]["completion_tokens"], expected, "{usage}");
    assert_eq!(usage["id"], "c9");
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    // The ledger has the gateway's count.
    for _ in 0..100 {
        let rows: Value = get_json(&gateway, "/admin/spend?group_by=model", ADMIN_KEY).await;
        if rows["data"][0]["completion_tokens"] == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the ledger never recorded the counted completion");
}
