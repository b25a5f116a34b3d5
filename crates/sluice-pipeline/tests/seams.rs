//! The pipeline's two seams, each exercised with a stand-in written in a few lines: an operation of its
//! own, and a budget backend of its own.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use secrecy::SecretString;
use sluice_api::{ChatCompletionRequest, TokenUsage};
use sluice_budget::{BudgetBackend, End, Limits, LocalBudgets, RateBudget, Refusal, Reserve, SpendBudget};
use sluice_pipeline::{AnswerBody, Caller, Operation, Pipeline, PipelineError, Principal};
use sluice_providers::{
    BoxFuture, ChatCall, ChatProvider, ChatReply, ProviderError, RateLimitSnapshot, ReplyBody, UpstreamKey,
};
use sluice_router::{
    Attempt, Completion, Deployment, DeploymentSpec, ModelRoute, ProviderPool, RouteError, Routed, Router,
    RouterSettings,
};
use sluice_tokens::Encoding;

/// An upstream that answers every call with 7 prompt and 3 completion tokens.
struct Answers;

impl ChatProvider for Answers {
    fn chat<'a>(&'a self, _call: ChatCall<'a>) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        Box::pin(async {
            Ok(ChatReply {
                body: ReplyBody::Complete {
                    body: Bytes::from_static(br#"{"choices":[]}"#),
                    usage: Some(TokenUsage::new(7, 3)),
                },
                limits: RateLimitSnapshot::default(),
                dropped: Vec::new(),
            })
        })
    }
}

fn router(budgets: &dyn BudgetBackend) -> Arc<Router> {
    let key = UpstreamKey::new("up#0", SecretString::from(String::new()));
    let pool = Arc::new(ProviderPool::new("up", Arc::new(Answers), vec![key], Vec::new()));
    let spec = DeploymentSpec {
        ordinal: 0,
        provider: pool,
        model: "vendor-model".into(),
        max_tokens: None,
        priority: 0,
        weight: 1,
        limits: Limits::default(),
        breaker: Default::default(),
        drop_unsupported: false,
    };
    let deployment = Deployment::new("m", spec, budgets);
    Arc::new(Router::new(
        vec![ModelRoute::new("m", vec![deployment], Duration::ZERO)],
        RouterSettings::default(),
    ))
}

fn caller() -> Caller {
    let principal = Principal {
        name: "test".into(),
        admin: false,
        key_id: None,
        tenant: None,
    };
    Caller::new(principal, Some("client-id"))
}

/// A new operation: a fixed question, counted as 5 tokens, refused when its model is empty.
struct Ping {
    model: String,
    request: ChatCompletionRequest,
}

impl Ping {
    fn new(model: &str) -> Self {
        let request = serde_json::from_value(serde_json::json!({
            "model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "ping"}]
        }))
        .unwrap();
        Self {
            model: model.to_owned(),
            request,
        }
    }
}

impl Operation for Ping {
    fn model(&self) -> &str {
        &self.model
    }
    fn validate(&self) -> Result<(), PipelineError> {
        if self.model.is_empty() {
            return Err(PipelineError::invalid("no model", "model"));
        }
        Ok(())
    }
    fn count(&self, _encoding: Encoding) -> BoxFuture<'_, u64> {
        Box::pin(async { 5 })
    }
    fn completion(&self) -> Completion {
        Completion {
            cap: Some(10),
            choices: 1,
        }
    }
    fn route<'a>(
        &'a self,
        router: &'a Router,
        prompt: u64,
        trail: &'a mut Vec<Attempt>,
    ) -> BoxFuture<'a, Result<Routed<ChatReply>, RouteError>> {
        Box::pin(router.chat(&self.request, prompt, trail))
    }
}

#[tokio::test]
async fn a_new_operation_is_one_impl() {
    let pipeline = Pipeline::new(router(&LocalBudgets::new()), None);
    let answer = pipeline.run(&caller(), &Ping::new("m")).await.unwrap();
    assert_eq!((&*answer.provider, answer.attempts), ("up", 1));
    match answer.body {
        AnswerBody::Complete { usage, .. } => assert_eq!((usage.input, usage.output), (7, 3)),
        AnswerBody::Stream(_) => panic!("a complete answer"),
    }
    let refused = pipeline.run(&caller(), &Ping::new("")).await.unwrap_err();
    assert!(matches!(
        refused.record(400),
        PipelineError::Invalid { param: "model", .. }
    ));
    let refused = pipeline.run(&caller(), &Ping::new("nope")).await.unwrap_err();
    assert!(
        matches!(refused.record(404), PipelineError::Route(err) if matches!(*err, RouteError::UnknownModel { .. }))
    );
}

/// A new budget backend: every rate budget takes requests until `left` runs out, and remembers what it
/// was told at settlement.
#[derive(Debug, Default)]
struct Countdown {
    left: AtomicU64,
    settled: Mutex<Vec<(u64, End)>>,
}

impl RateBudget for Countdown {
    fn reserve(&self, _tokens: u64) -> Reserve<'_, Result<(), Refusal>> {
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        Reserve::ready(taken.map(drop).map_err(|_| Refusal::Wait(Duration::from_secs(9))))
    }
    fn settle(&self, reserved: u64, end: End) {
        self.settled.lock().unwrap().push((reserved, end));
    }
    fn available_in(&self, _tokens: u64) -> Result<Duration, Refusal> {
        match self.left.load(Ordering::SeqCst) {
            0 => Ok(Duration::from_secs(9)),
            _ => Ok(Duration::ZERO),
        }
    }
}

#[derive(Debug)]
struct Shared(Arc<Countdown>);

impl BudgetBackend for Shared {
    fn rate(&self, _name: &str, _limits: Limits) -> Arc<dyn RateBudget> {
        Arc::clone(&self.0) as Arc<dyn RateBudget>
    }
    fn spend(&self, name: &str) -> Arc<dyn SpendBudget> {
        LocalBudgets::new().spend(name)
    }
}

#[tokio::test]
async fn a_new_budget_backend_is_one_impl() {
    let countdown = Arc::new(Countdown::default());
    countdown.left.store(1, Ordering::SeqCst);
    let pipeline = Pipeline::new(router(&Shared(Arc::clone(&countdown))), None);
    pipeline.run(&caller(), &Ping::new("m")).await.unwrap();
    assert_eq!(
        *countdown.settled.lock().unwrap(),
        [(15, End::Used(10))],
        "reserved the prompt and the cap, settled with the vendor's 7 + 3"
    );
    let refused = pipeline.run(&caller(), &Ping::new("m")).await.unwrap_err();
    match refused.record(429) {
        PipelineError::Route(err) => match *err {
            RouteError::Exhausted { retry_after, .. } => assert_eq!(retry_after, Duration::from_secs(9)),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}
