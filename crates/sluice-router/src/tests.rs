//! The routing loop on paused time, against a scripted adapter: failover order, cooldowns and recovery,
//! queueing, the honest `retry-after`, the breaker's probe and refused keys' probes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use secrecy::SecretString;
use sluice_api::ChatCompletionRequest;
use sluice_budget::{BudgetBackend, Limits, LocalBudgets};
use sluice_providers::{
    BoxFuture, ChatCall, ChatProvider, ChatReply, ProviderError, RateLimitSnapshot, ReplyBody, UpstreamKey,
};
use tokio::time::Instant;

use crate::breaker::BreakerPolicy;
use crate::{
    Attempt, AttemptOutcome, Deployment, DeploymentSpec, ModelRoute, ProviderPool, RouteError, Router, RouterSettings,
};

/// Answers each key's calls from its script, then with success; counts the calls per key.
#[derive(Default)]
struct Scripted {
    scripts: Mutex<HashMap<String, VecDeque<Step>>>,
    calls: Mutex<Vec<(String, Instant)>>,
}

#[derive(Clone)]
enum Step {
    Fail(fn() -> ProviderError),
    /// Fails this way on every call.
    Always(fn() -> ProviderError),
    /// Never answers (once).
    Hang,
}

impl Scripted {
    fn script(self: &Arc<Self>, key: &str, steps: &[Step]) -> Arc<Self> {
        self.scripts
            .lock()
            .unwrap()
            .insert(key.to_owned(), steps.iter().cloned().collect());
        Arc::clone(self)
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().map(|(k, _)| k.clone()).collect()
    }
}

impl ChatProvider for Scripted {
    fn chat<'a>(&'a self, call: ChatCall<'a>) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        let key = call.key.id().to_owned();
        self.calls.lock().unwrap().push((key.clone(), Instant::now()));
        let (step, hang) = {
            let mut scripts = self.scripts.lock().unwrap();
            let queue = scripts.entry(key).or_default();
            match queue.front().cloned() {
                Some(Step::Always(err)) => (Some(err), false),
                Some(Step::Fail(err)) => {
                    queue.pop_front();
                    (Some(err), false)
                }
                Some(Step::Hang) => {
                    queue.pop_front();
                    (None, true)
                }
                None => (None, false),
            }
        };
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            match step {
                Some(err) => Err(err()),
                None => Ok(ChatReply {
                    body: ReplyBody::Complete {
                        body: Bytes::from_static(b"{}"),
                        usage: None,
                    },
                    limits: RateLimitSnapshot::default(),
                    dropped: Vec::new(),
                }),
            }
        })
    }
}

fn rate_limited(secs: u64) -> ProviderError {
    ProviderError::RateLimited {
        retry_after: Some(Duration::from_secs(secs)),
        message: "slow down".to_owned(),
    }
}

fn server_error() -> ProviderError {
    ProviderError::Server {
        status: 500,
        message: "boom".to_owned(),
    }
}

fn refused() -> ProviderError {
    ProviderError::Authentication {
        status: 401,
        detail: "invalid key".to_owned(),
    }
}

/// One deployment of `provider` per entry of `deployments` (priority, limits), its keys named `p#0`...
struct Setup {
    adapter: Arc<Scripted>,
    keys: usize,
    deployments: Vec<(u32, Limits)>,
    max_queue: Duration,
    breaker: BreakerPolicy,
}

impl Setup {
    fn new(adapter: &Arc<Scripted>, keys: usize) -> Self {
        Self {
            adapter: Arc::clone(adapter),
            keys,
            deployments: vec![(0, Limits::default())],
            max_queue: Duration::from_secs(5),
            breaker: BreakerPolicy::default(),
        }
    }

    fn router(&self) -> Router {
        self.router_on(&LocalBudgets::new())
    }

    /// A router whose budgets come from `budgets`, which another router (another replica) may share.
    fn router_on(&self, budgets: &dyn BudgetBackend) -> Router {
        let deployments = self
            .deployments
            .iter()
            .enumerate()
            .map(|(ordinal, (priority, limits))| {
                let name = format!("p{ordinal}");
                let keys = (0..self.keys)
                    .map(|k| UpstreamKey::new(format!("{name}#{k}"), SecretString::from(String::new())))
                    .collect();
                let adapter: Arc<dyn ChatProvider> = Arc::clone(&self.adapter) as Arc<dyn ChatProvider>;
                let pool = Arc::new(ProviderPool::new(name.as_str(), adapter, keys, Vec::new()));
                Deployment::new(
                    "m",
                    DeploymentSpec {
                        ordinal,
                        provider: pool,
                        model: "vendor-model".into(),
                        max_tokens: None,
                        priority: *priority,
                        weight: 1,
                        limits: *limits,
                        breaker: self.breaker,
                        drop_unsupported: false,
                    },
                    budgets,
                )
            })
            .collect();
        Router::new(
            vec![ModelRoute::new("m", deployments, self.max_queue)],
            RouterSettings::default(),
        )
    }
}

fn request(body: serde_json::Value) -> ChatCompletionRequest {
    let mut base = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), body.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(base).unwrap()
}

async fn chat(router: &Router) -> (Result<crate::Routed, RouteError>, Vec<Attempt>) {
    let mut trail = Vec::new();
    let result = router.chat(&request(serde_json::json!({})), 10, &mut trail).await;
    (result, trail)
}

fn outcomes(trail: &[Attempt]) -> Vec<(String, AttemptOutcome)> {
    trail.iter().map(|a| (a.key_id.to_string(), a.outcome)).collect()
}

#[tokio::test(start_paused = true)]
async fn fails_over_by_priority_and_records_every_call() {
    let adapter = Arc::new(Scripted::default()).script("p0#0", &[Step::Always(server_error)]);
    let mut setup = Setup::new(&adapter, 1);
    setup.deployments = vec![(0, Limits::default()), (1, Limits::default())];
    let router = setup.router();
    let (result, trail) = chat(&router).await;
    let routed = result.unwrap();
    assert_eq!((&*routed.provider, routed.attempts, routed.deployment), ("p1", 2, 1));
    assert_eq!(
        outcomes(&trail),
        vec![
            (
                "p0#0".to_owned(),
                AttemptOutcome::Failed {
                    kind: "server_error",
                    billable: false
                }
            ),
            ("p1#0".to_owned(), AttemptOutcome::Answered),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_only_key_is_retried_after_its_cooldown_within_the_queue_time() {
    let adapter = Arc::new(Scripted::default()).script("p0#0", &[Step::Fail(|| rate_limited(2))]);
    let router = Setup::new(&adapter, 1).router();
    let started = Instant::now();
    let (result, _) = chat(&router).await;
    assert_eq!(result.unwrap().attempts, 2);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "waited exactly the retry time"
    );
    assert_eq!(adapter.calls(), ["p0#0", "p0#0"]);
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_earliest_key_when_every_key_is_cooling() {
    // Key 0 always answers 429 for 7 s; key 1 once for 2 s: the request waits 2 s for key 1.
    let adapter = Arc::new(Scripted::default())
        .script("p0#0", &[Step::Always(|| rate_limited(7))])
        .script("p0#1", &[Step::Fail(|| rate_limited(2))]);
    let router = Setup::new(&adapter, 2).router();
    let started = Instant::now();
    let (result, trail) = chat(&router).await;
    let routed = result.unwrap();
    assert_eq!(&*routed.key_id, "p0#1");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(trail.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_final_retry_after_is_the_earliest_capacity_over_every_candidate() {
    let adapter = Arc::new(Scripted::default())
        .script("p0#0", &[Step::Always(|| rate_limited(7))])
        .script("p0#1", &[Step::Always(|| rate_limited(3))]);
    let mut setup = Setup::new(&adapter, 2);
    setup.max_queue = Duration::ZERO;
    let router = setup.router();
    let (result, _) = chat(&router).await;
    match result {
        Err(RouteError::Exhausted {
            retry_after, attempts, ..
        }) => {
            assert_eq!(retry_after, Duration::from_secs(3), "not the first candidate's 7 s");
            assert_eq!(attempts, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn requests_queue_in_turn_for_capacity_and_are_refused_honestly_past_the_queue_time() {
    let adapter = Arc::new(Scripted::default());
    let mut setup = Setup::new(&adapter, 1);
    setup.deployments = vec![(
        0,
        Limits {
            rpm: Some(60),
            ..Limits::default()
        },
    )];
    setup.max_queue = Duration::from_millis(1500);
    let router = setup.router();
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(chat(&router).await.0.unwrap());
    }
    assert_eq!(started.elapsed(), Duration::ZERO, "60 a minute, all at once");
    let (next, _) = chat(&router).await;
    assert!(next.is_ok());
    assert_eq!(started.elapsed(), Duration::from_secs(1), "one more after one refill");
    // Two more at once: the first waits a second for the next refill; the second's would be two seconds
    // away, past the 1.5 s queue time, so it is refused with the honest wait of the next refill.
    let (first, second) = tokio::join!(chat(&router), chat(&router));
    assert!(first.0.is_ok());
    match second.0 {
        Err(RouteError::Exhausted { retry_after, .. }) => {
            assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let counters = router.models()[0].counters();
    assert!(counters.queue_waits.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_sends_one_probe_after_its_cool_off() {
    let adapter = Arc::new(Scripted::default()).script("p0#0", &[Step::Fail(server_error), Step::Fail(server_error)]);
    let mut setup = Setup::new(&adapter, 1);
    setup.breaker = BreakerPolicy {
        failures: 2,
        cool_off: Duration::from_secs(10),
    };
    setup.max_queue = Duration::ZERO;
    let router = setup.router();
    assert!(matches!(chat(&router).await.0, Err(RouteError::Upstream { .. })));
    assert!(matches!(chat(&router).await.0, Err(RouteError::Upstream { .. })));
    match chat(&router).await.0 {
        Err(RouteError::Exhausted { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(10)),
        other => panic!("open breaker: {other:?}"),
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(
        chat(&router).await.0.is_ok(),
        "the probe goes through and closes the breaker"
    );
    assert!(chat(&router).await.0.is_ok());
    assert_eq!(adapter.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_sits_out_then_a_probe_brings_it_back() {
    let adapter = Arc::new(Scripted::default()).script("p0#0", &[Step::Fail(refused)]);
    let router = Setup::new(&adapter, 2).router();
    // Whichever key the rotation starts with, key 0 is refused once and key 1 serves.
    for _ in 0..4 {
        assert!(chat(&router).await.0.is_ok());
    }
    let calls_to_0 = adapter.calls().iter().filter(|k| *k == "p0#0").count();
    assert_eq!(calls_to_0, 1, "out after its refusal");
    let view = router.limits();
    assert!(!view[0].usable && view[0].probe_in_ms == Some(60_000), "{view:?}");
    assert_eq!(
        view[0].budget.cooldown_ms,
        Some(60_000),
        "its budget cools down as long"
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..4 {
        assert!(chat(&router).await.0.is_ok());
    }
    assert!(adapter.calls().iter().filter(|k| *k == "p0#0").count() >= 2, "probed");
    assert!(router.limits()[0].usable, "the probe answered: back in the pool");
}

#[tokio::test(start_paused = true)]
async fn a_key_refused_on_one_replica_is_skipped_by_another_sharing_its_budget() {
    let adapter = Arc::new(Scripted::default()).script("p0#0", &[Step::Fail(refused)]);
    let setup = Setup::new(&adapter, 2);
    let shared = LocalBudgets::new();
    let (first, second) = (setup.router_on(&shared), setup.router_on(&shared));
    // Requests on the first replica until key 0 is refused and out of its pool.
    while adapter.calls().iter().all(|k| k != "p0#0") {
        assert!(chat(&first).await.0.is_ok());
    }
    assert!(
        second.limits()[0].usable,
        "the second replica's pool knows nothing of it"
    );
    for _ in 0..6 {
        assert!(chat(&second).await.0.is_ok());
    }
    let calls_to_0 = adapter.calls().iter().filter(|k| *k == "p0#0").count();
    assert_eq!(calls_to_0, 1, "the shared budget kept the second replica off the key");
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..4 {
        assert!(chat(&second).await.0.is_ok());
    }
    assert!(
        adapter.calls().iter().filter(|k| *k == "p0#0").count() >= 2,
        "back after the probe wait"
    );
}

#[tokio::test(start_paused = true)]
async fn one_request_takes_out_at_most_one_key() {
    let adapter = Arc::new(Scripted::default())
        .script("p0#0", &[Step::Always(refused)])
        .script("p0#1", &[Step::Always(refused)])
        .script("p0#2", &[Step::Always(refused)]);
    let router = Setup::new(&adapter, 3).router();
    let (result, trail) = chat(&router).await;
    assert!(
        matches!(result, Err(RouteError::Upstream { attempts: 2, .. })),
        "{result:?}"
    );
    assert_eq!(trail.len(), 2);
    let out = router.limits().iter().filter(|v| !v.usable).count();
    assert_eq!(out, 1);
}

#[tokio::test(start_paused = true)]
async fn every_choice_is_reserved() {
    let adapter = Arc::new(Scripted::default());
    let mut setup = Setup::new(&adapter, 1);
    setup.deployments = vec![(
        0,
        Limits {
            tpm: Some(10_000),
            ..Limits::default()
        },
    )];
    let router = setup.router();
    let mut trail = Vec::new();
    let routed = router
        .chat(&request(serde_json::json!({"n": 3, "max_tokens": 100})), 10, &mut trail)
        .await
        .unwrap();
    assert_eq!(routed.settlement.reserved(), 310);
    assert_eq!(router.limits()[0].budget.remaining_tokens, Some(9_690));
}

#[tokio::test(start_paused = true)]
async fn a_breaker_probe_that_meets_a_429_closes_the_breaker() {
    let adapter = Arc::new(Scripted::default()).script(
        "p0#0",
        &[
            Step::Fail(server_error),
            Step::Fail(server_error),
            Step::Fail(|| rate_limited(1)),
        ],
    );
    let mut setup = Setup::new(&adapter, 1);
    setup.breaker = BreakerPolicy {
        failures: 2,
        cool_off: Duration::from_secs(10),
    };
    setup.max_queue = Duration::ZERO;
    let router = setup.router();
    chat(&router).await.0.unwrap_err();
    chat(&router).await.0.unwrap_err();
    tokio::time::advance(Duration::from_secs(10)).await;
    // The probe is answered with a 429: the deployment is up, so the breaker closes (the key cools down).
    chat(&router).await.0.unwrap_err();
    assert_eq!(router.limits()[0].breaker, crate::breaker::BreakerView::Closed);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(chat(&router).await.0.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_breaker_probe_whose_request_is_dropped_does_not_hold_the_breaker() {
    let adapter = Arc::new(Scripted::default()).script(
        "p0#0",
        &[Step::Fail(server_error), Step::Fail(server_error), Step::Hang],
    );
    let mut setup = Setup::new(&adapter, 1);
    setup.breaker = BreakerPolicy {
        failures: 2,
        cool_off: Duration::from_secs(10),
    };
    setup.max_queue = Duration::ZERO;
    let router = setup.router();
    chat(&router).await.0.unwrap_err();
    chat(&router).await.0.unwrap_err();
    tokio::time::advance(Duration::from_secs(10)).await;
    // The probe hangs and its client gives up.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), chat(&router))
            .await
            .is_err()
    );
    assert!(chat(&router).await.0.is_err(), "the probe is out: others wait");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(chat(&router).await.0.is_ok(), "a stale probe lets another through");
    assert_eq!(router.limits()[0].breaker, crate::breaker::BreakerView::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_whose_probe_meets_a_429_is_back() {
    let adapter = Arc::new(Scripted::default()).script("p0#0", &[Step::Fail(refused), Step::Fail(|| rate_limited(1))]);
    let mut setup = Setup::new(&adapter, 1);
    setup.max_queue = Duration::ZERO;
    let router = setup.router();
    chat(&router).await.0.unwrap_err();
    assert!(!router.limits()[0].usable);
    tokio::time::advance(Duration::from_secs(60)).await;
    // The vendor knows the key again (a 429 is an answer to an authenticated call).
    chat(&router).await.0.unwrap_err();
    assert!(router.limits()[0].usable, "{:?}", router.limits()[0]);
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_while_queued_is_no_longer_counted_as_waiting() {
    let adapter = Arc::new(Scripted::default());
    let mut setup = Setup::new(&adapter, 1);
    setup.deployments = vec![(
        0,
        Limits {
            rpm: Some(1),
            ..Limits::default()
        },
    )];
    let router = setup.router();
    let _held = chat(&router).await.0.unwrap();
    // The next waits for the refill (60 s, past the 5 s queue time it would be refused at once): make it
    // a wait within the queue time by asking after 56 s.
    tokio::time::advance(Duration::from_secs(56)).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), chat(&router))
            .await
            .is_err()
    );
    assert_eq!(
        router.models()[0].waiting.load(std::sync::atomic::Ordering::Acquire),
        0,
        "the dropped request left the queue"
    );
}
