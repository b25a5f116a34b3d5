//! The path of one request, between the HTTP edge and the router, the same for every operation.
//!
//! [`Pipeline::run`] takes a [`Caller`] (who is calling, already authenticated by an [`Authenticator`])
//! and an [`Operation`] (a chat completion, embeddings, a prompt run, an inbound protocol translated to
//! chat), and goes, cheapest check first:
//!
//! 1. **Validate**: what parsing cannot check, and bounds on the work a request may ask for.
//! 2. **Route exists**: an unknown model is refused (and recorded under a fixed label) before any work.
//! 3. **Tenant precheck**: the tenant may call the model (its access, the tenant's grants and
//!    allow-list: [`access`]), the request rate and the spend budget have room now. A prompt is admitted
//!    the same way before it is rendered ([`Pipeline::admit_prompt`]).
//! 4. **Count** the input's tokens with the model's encoding, large inputs off the executor.
//! 5. **Reserve** the tenant's rate (one request, the prompt and the expected completion) and its spend
//!    (the worst-case cost), each one atomic step on the [`sluice_budget::BudgetBackend`].
//! 6. **Open the ledger entry**, which holds those reservations.
//! 7. **Route** through the [`sluice_router::Router`], which reserves a key's budget, calls the vendor
//!    and fails over; every call it makes lands in the entry's trail as it is made.
//! 8. **Settle and record**: a complete answer at once; a stream as it ends, breaks or is dropped, through
//!    [`Metered`], where its usage is read once for the key, the tenant and the ledger.
//!
//! A refusal comes back as [`Refused`], which the edge records with the status it answers. Every failed
//! upstream call and every error answer also lands in the [`FailureLog`], the operators' recent view.
//! A cache, a new endpoint or a new inbound protocol is one more [`Operation`] or one more step here.

pub mod access;
mod caller;
mod directory;
mod error;
mod failures;
mod ledger;
mod meter;
mod operation;
mod request_log;
mod spans;
mod tally;
pub mod tenancy;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use sluice_api::{TokenUsage, UsageSource};
use sluice_budget::{Reservation, SpendReservation};
use sluice_providers::ReplyBody;
use sluice_router::{ModelRoute, Router};

pub use crate::access::{Access, ModelPolicy, Permission, Service, ServiceKind, TenantAccess};
pub use crate::caller::{Authenticator, Caller, DEFAULT_TENANT, Principal, StaticKeys, admin_key_id};
pub use crate::directory::Directory;
pub use crate::error::PipelineError;
pub use crate::failures::{DEFAULT_FAILURE_CAPACITY, Failure, FailureLog, FailureStage};
pub use crate::ledger::{DeploymentPrice, Ledger, PriceBook};
pub use crate::meter::Metered;
pub use crate::operation::{Chat, Embeddings, MAX_EMBEDDING_INPUTS, MAX_MESSAGES, Messages, Operation};
pub use crate::request_log::{REDACTED, RequestLogs};
pub use crate::spans::TraceSink;
pub use crate::tenancy::{TenantRefusal, TenantState};

use crate::ledger::Entry;
use crate::tally::estimate_complete;

/// The label the ledger records for a model name no configured model has.
pub const UNKNOWN_MODEL: &str = "(unknown model)";

/// Runs requests: see the crate docs for the steps.
#[derive(Debug)]
pub struct Pipeline {
    router: Arc<Router>,
    ledger: Option<Arc<Ledger>>,
    failures: Arc<FailureLog>,
    /// Each model's access and description; a model not in it is open.
    model_policies: HashMap<String, ModelPolicy>,
    traces: Option<TraceSink>,
    request_logs: Option<Arc<RequestLogs>>,
}

/// A request served.
#[derive(Debug)]
pub struct Answer {
    /// The answer's body.
    pub body: AnswerBody,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// Upstream calls made, the answering one included.
    pub attempts: u32,
    /// Client parameters dropped because the vendor cannot honour them.
    pub dropped: Vec<String>,
    /// The body is in the client's own protocol, passed through from the vendor
    /// ([`Operation::answered_natively`]), not in chat completions.
    pub native: bool,
    /// The prompt's tokens as the gateway counted them before sending (the vendor's count arrives with
    /// the usage, at a stream's end).
    pub prompt_tokens: u64,
}

/// An answer's body.
#[derive(Debug)]
pub enum AnswerBody {
    /// A complete body (OpenAI's format for OpenAI-format operations), already settled and recorded.
    Complete {
        /// The body.
        body: Bytes,
        /// Its usage, as recorded.
        usage: TokenUsage,
    },
    /// A stream of chunks, settled and recorded when it ends or is dropped.
    Stream(Box<Metered>),
}

/// A request the pipeline did not serve. The edge answers `error` in the caller's protocol and records
/// the request with the status it answers ([`Refused::record`]).
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: PipelineError,
    record: Record,
}

/// Where a refusal is recorded.
#[derive(Debug)]
enum Record {
    /// In the ledger (and the failure log), through its entry.
    Entry(Box<Entry>),
    /// Refused before any work was done: in the failure log only.
    Failure {
        failures: Arc<FailureLog>,
        model: String,
        tenant: String,
    },
}

impl Refused {
    fn recorded(error: impl Into<PipelineError>, entry: Entry) -> Self {
        Self {
            error: error.into(),
            record: Record::Entry(Box::new(entry)),
        }
    }

    /// Records the request with the HTTP `status` its caller got (in the ledger when it is one the ledger
    /// keeps, and in the failure log), and hands back why it failed.
    pub fn record(self, status: u16) -> PipelineError {
        let kind = self.error.kind();
        match self.record {
            Record::Entry(mut entry) => {
                entry.fail(kind);
                entry.finish(status);
            }
            Record::Failure {
                failures,
                model,
                tenant,
            } => failures.record(Failure {
                at: chrono::Utc::now(),
                stage: FailureStage::Answer,
                kind,
                status: Some(status),
                model,
                provider: None,
                vendor_model: None,
                upstream_key: None,
                tenant,
            }),
        }
        self.error
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline routing through `router` and recording in `ledger` when there is one.
    pub fn new(router: Arc<Router>, ledger: Option<Arc<Ledger>>) -> Self {
        Self {
            router,
            ledger,
            failures: Arc::new(FailureLog::default()),
            model_policies: HashMap::new(),
            traces: None,
            request_logs: None,
        }
    }

    /// The same pipeline, keeping the prompts and answers of tenants that asked for request logs.
    pub fn with_request_logs(mut self, logs: Arc<RequestLogs>) -> Self {
        self.request_logs = Some(logs);
        self
    }

    /// The request logs, when kept.
    pub fn request_logs(&self) -> Option<&Arc<RequestLogs>> {
        self.request_logs.as_ref()
    }

    /// The same pipeline, exporting a span per request (and per upstream attempt) to `traces`.
    pub fn with_traces(mut self, traces: TraceSink) -> Self {
        self.traces = Some(traces);
        self
    }

    /// Whether requests are traced: the edge then opens each request's trace.
    pub fn traces(&self) -> bool {
        self.traces.is_some()
    }

    /// Where spans go, when requests are traced.
    pub fn trace_sink(&self) -> Option<&TraceSink> {
        self.traces.as_ref()
    }

    /// The same pipeline with each model's access and description (a model not named is open).
    pub fn with_model_policies(mut self, policies: HashMap<String, ModelPolicy>) -> Self {
        self.model_policies = policies;
        self
    }

    /// Who may call `model`.
    pub fn model_access(&self, model: &str) -> Access {
        self.model_policies.get(model).map(|p| p.access).unwrap_or_default()
    }

    /// What the catalog says of `model`: its access and description.
    pub fn model_policy(&self, model: &str) -> ModelPolicy {
        self.model_policies.get(model).cloned().unwrap_or_default()
    }

    /// Admits `caller` to the prompt `name`, whose access is `access`, before it is rendered: a tenant
    /// needs a grant or an open prompt its allow-list does not exclude; a configured key may call every
    /// prompt. The model the prompt calls is checked by [`Pipeline::run`].
    pub fn admit_prompt(&self, caller: &Caller, name: &str, model: &str, access: Access) -> Result<(), Box<Refused>> {
        let Some(tenant) = caller.principal.tenant.as_ref() else {
            return Ok(());
        };
        tenant.admit(&Service::prompt(name), access).map_err(|refusal| {
            let error = PipelineError::Tenant {
                refusal,
                tenant: Arc::from(tenant.name()),
                model: model.to_owned(),
            };
            Box::new(self.refuse(caller, model, error))
        })
    }

    /// The last failures, for operators.
    pub fn failures(&self) -> &FailureLog {
        &self.failures
    }

    /// A refusal before any work, logged as a failure only.
    fn refuse(&self, caller: &Caller, model: &str, error: impl Into<PipelineError>) -> Refused {
        Refused {
            error: error.into(),
            record: Record::Failure {
                failures: Arc::clone(&self.failures),
                model: model.to_owned(),
                tenant: caller.principal.tenant_name().to_owned(),
            },
        }
    }

    fn entry(
        &self,
        caller: &Caller,
        model: &str,
        prompt_tokens: u64,
        rate: Option<Reservation>,
        spend: Option<SpendReservation>,
    ) -> Entry {
        let sinks = ledger::Sinks {
            ledger: self.ledger.clone(),
            failures: Arc::clone(&self.failures),
            traces: self.traces.clone(),
        };
        Entry::new(sinks, caller, model, prompt_tokens, rate, spend)
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The ledger, when requests are recorded.
    pub fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.ledger.as_ref()
    }

    /// Serves `operation` for `caller`: see the crate docs for the steps.
    pub async fn run<O: Operation>(&self, caller: &Caller, operation: &O) -> Result<Answer, Refused> {
        let model = operation.model();
        operation.validate().map_err(|e| self.refuse(caller, model, e))?;
        let route = match self.router.route(model) {
            Ok(route) => route,
            Err(err) => {
                let entry = self.entry(caller, UNKNOWN_MODEL, 0, None, None);
                return Err(Refused::recorded(err, entry));
            }
        };
        operation.admits(route).map_err(|e| self.refuse(caller, model, e))?;
        let tenant = caller.principal.tenant.as_ref();
        let refusal = |refusal: TenantRefusal| {
            let error = PipelineError::Tenant {
                refusal,
                tenant: caller.principal.shared_tenant_name(),
                model: model.to_owned(),
            };
            self.refuse(caller, model, error)
        };
        if let Some(tenant) = tenant {
            tenant.precheck(model, self.model_access(model)).map_err(refusal)?;
        }
        let prompt_tokens = operation.count(route.encoding()).await;
        let (rate, spend) = match tenant {
            Some(tenant) => self
                .reserve(tenant, route, operation, prompt_tokens)
                .await
                .map_err(refusal)?,
            None => (None, None),
        };
        let mut entry = self.entry(caller, model, prompt_tokens, rate, spend);
        if let (Some(logs), Some(tenant)) = (&self.request_logs, tenant) {
            entry.capture(logs.capture(tenant.name(), || operation.log_input()));
        }
        let routed = match operation.route(&self.router, prompt_tokens, &mut entry.trail).await {
            Ok(routed) => routed,
            Err(err) => return Err(Refused::recorded(err, entry)),
        };
        let provider = Arc::clone(&routed.provider);
        let attempts = routed.attempts;
        let reply = routed.reply;
        let body = match reply.body {
            ReplyBody::Complete { body, usage } => {
                let (usage, source) = match usage {
                    Some(usage) => (usage.clamped(), UsageSource::Vendor),
                    None => (
                        TokenUsage::new(prompt_tokens, estimate_complete(&body, routed.encoding)),
                        UsageSource::Estimated,
                    ),
                };
                routed.settlement.settle(Some(&usage), source == UsageSource::Vendor);
                entry.observe(usage, source);
                entry.log_answer(&body);
                entry.finish(200);
                AnswerBody::Complete { body, usage }
            }
            ReplyBody::Stream(events) => AnswerBody::Stream(Box::new(Metered::new(
                events,
                routed.settlement,
                entry,
                routed.encoding,
                prompt_tokens,
            ))),
        };
        Ok(Answer {
            body,
            provider,
            attempts,
            dropped: reply.dropped,
            native: operation.answered_natively(),
            prompt_tokens,
        })
    }

    /// Reserves the tenant's rate (one request, the prompt and the completion the most generous
    /// deployment expects) and its spend (the request's worst-case cost over the deployments it may go to).
    async fn reserve<O: Operation>(
        &self,
        tenant: &TenantState,
        route: &ModelRoute,
        operation: &O,
        prompt_tokens: u64,
    ) -> Result<(Option<Reservation>, Option<SpendReservation>), TenantRefusal> {
        let completion = operation.completion();
        let expected = route
            .deployments()
            .iter()
            .map(|d| d.expected_completion(completion))
            .max()
            .unwrap_or(0);
        let worst = self.worst_case(route, prompt_tokens, expected);
        if worst.is_none() && tenant.has_budget() {
            return Err(TenantRefusal::NotPriced);
        }
        let rate = tenant.reserve_rate(prompt_tokens.saturating_add(expected)).await?;
        match tenant.reserve_spend(worst.unwrap_or(0)).await {
            Ok(spend) => Ok((rate, Some(spend))),
            Err(refusal) => {
                // Refused before any vendor saw it: the request costs nothing, its rate slot included.
                if let Some(rate) = rate {
                    rate.cancel();
                }
                Err(refusal)
            }
        }
    }

    /// The most the request can cost on any deployment of `route`; `None` when one has no price.
    fn worst_case(&self, route: &ModelRoute, prompt_tokens: u64, completion_tokens: u64) -> Option<i64> {
        let prices = self.ledger.as_ref()?.prices();
        route
            .deployments()
            .iter()
            .map(|d| {
                prices
                    .price(route.name(), d.ordinal())
                    .map(|p| p.price.worst_case_micros(prompt_tokens, completion_tokens))
            })
            .try_fold(0i64, |worst, cost| cost.map(|c| worst.max(c)))
    }
}
