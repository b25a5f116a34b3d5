//! Recording each request in the usage ledger: who asked, every upstream call the vendors may bill, the
//! tokens by category, the cost, how long it took. Recording never waits on the database: rows go to the
//! store's writer queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use sluice_api::{TokenUsage, UsageSource};
use sluice_budget::{Reservation, SpendReservation};
use sluice_router::{Attempt, AttemptOutcome as RouteOutcome};
use sluice_store::{
    AppliedPrice, AttemptOutcome, AttemptUsage, Charge, Price, PriceSource, Prices, UsageRow, UsageWriter,
};

use crate::caller::Caller;
use crate::failures::{Failure, FailureLog, FailureStage};
use crate::request_log::Capture;
use crate::spans::{self, Finished, TraceSink};

/// The price that applies to one deployment, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentPrice {
    /// The price.
    pub price: Price,
    /// Where it came from: the deployment's own, the list's, or free.
    pub source: PriceSource,
    /// The price list's date, for a list price.
    pub date: Option<NaiveDate>,
}

impl DeploymentPrice {
    /// The price `prices` gives a deployment of `vendor_model` whose own price is `own`.
    pub fn resolve(prices: Option<&Prices>, vendor_model: &str, own: Option<&Price>) -> Option<Self> {
        let applied = match (prices, own) {
            (Some(prices), own) => prices.applied(vendor_model, own)?,
            (None, Some(own)) => AppliedPrice::deployment(own),
            (None, None) => return None,
        };
        Some(Self {
            price: *applied.price,
            source: applied.source,
            date: applied.date,
        })
    }

    /// What `usage` costs here.
    pub fn charge(&self, usage: &TokenUsage) -> Charge {
        Charge {
            cost_micros: Some(self.price.cost(usage)),
            price_source: self.source,
            price_date: self.date,
        }
    }
}

/// Prices of every deployment of every model, by the deployment's position in the configuration: a
/// deployment's price applies to that deployment only.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    models: HashMap<Arc<str>, Vec<Option<DeploymentPrice>>>,
}

impl PriceBook {
    /// An empty book: nothing is priced.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prices of `model`'s deployments, in configuration order; `None` for an unpriced one.
    pub fn set(&mut self, model: &str, deployments: Vec<Option<DeploymentPrice>>) {
        self.models.insert(model.into(), deployments);
    }

    /// The price of deployment `ordinal` of `model`, if it has one.
    pub fn price(&self, model: &str, ordinal: usize) -> Option<&DeploymentPrice> {
        self.models
            .get(model)
            .and_then(|d| d.get(ordinal))
            .and_then(Option::as_ref)
    }
}

/// Where usage goes, and how it is priced.
pub struct Ledger {
    writer: UsageWriter,
    prices: PriceBook,
    /// The "queue full" warning's throttle: a database that cannot keep up would otherwise add a log line
    /// to every request while it lags. `/metrics` counts every spooled row.
    spool_warned: OncePerSecond,
}

/// The provider and vendor model a row names when no upstream was called: one shared empty string, not an
/// allocation per refused request.
static NONE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// A throttle: [`OncePerSecond::due`] is true for the first call in each second, false for the others.
struct OncePerSecond {
    started: Instant,
    /// The last second (since `started`) a call came in, plus one (zero: none yet).
    last: AtomicU64,
}

impl OncePerSecond {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Whether this call is the first of its second.
    fn due(&self) -> bool {
        self.due_at(self.started.elapsed().as_secs())
    }

    /// Whether a call in second `second` since `started` is the first of its second.
    fn due_at(&self, second: u64) -> bool {
        self.last.swap(second + 1, Ordering::Relaxed) != second + 1
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger writing through `writer`, pricing with `prices`.
    pub fn new(writer: UsageWriter, prices: PriceBook) -> Self {
        Self {
            writer,
            prices,
            spool_warned: OncePerSecond::new(),
        }
    }

    /// Queues `row`; rows the full queue sends to the spool are told in a warning, one a second at most.
    fn record(&self, row: UsageRow) {
        let Err(full) = self.writer.try_record(row) else { return };
        // A row the spool could not take is logged as an error by the writer itself.
        if full.spooled && self.spool_warned.due() {
            let stats = self.writer.stats();
            tracing::warn!(
                spooled = stats.spooled,
                spool_pending = stats.spool_pending,
                "the usage queue is full: rows go to the spool until the database catches up"
            );
        }
    }

    /// The writer, for its statistics and shutdown.
    pub fn writer(&self) -> &UsageWriter {
        &self.writer
    }

    /// The prices.
    pub fn prices(&self) -> &PriceBook {
        &self.prices
    }
}

/// Where an entry is written: the ledger when requests are recorded, and the failures to the log.
pub(crate) struct Sinks {
    pub(crate) ledger: Option<Arc<Ledger>>,
    pub(crate) failures: Arc<FailureLog>,
    pub(crate) traces: Option<TraceSink>,
}

/// One request's entry, written once: when the answer is complete, when a stream ends, or, if the
/// request is dropped first (the client went away), with what is known by then. It holds the tenant's
/// reservations, settled when it is written.
pub(crate) struct Entry {
    ledger: Option<Arc<Ledger>>,
    failures: Arc<FailureLog>,
    /// Why the request failed, when the pipeline knows better than its status.
    failure: Option<&'static str>,
    pub(crate) trail: Vec<Attempt>,
    caller: Caller,
    model: String,
    /// The prompt as the gateway counted it: the estimate of what a failed call the vendor may bill read.
    prompt_tokens: u64,
    started: Instant,
    created_at: chrono::DateTime<Utc>,
    rate: Option<Reservation>,
    spend: Option<SpendReservation>,
    /// The answering call's usage, and where it came from.
    usage: Option<(TokenUsage, UsageSource)>,
    written: bool,
    /// Where spans go, and the request's trace, when it is traced.
    traces: Option<(TraceSink, Arc<sluice_trace::RequestTrace>)>,
    /// The request's texts, when its tenant logs requests.
    log: Option<Capture>,
}

impl Entry {
    pub(crate) fn new(
        sinks: Sinks,
        caller: &Caller,
        model: &str,
        prompt_tokens: u64,
        rate: Option<Reservation>,
        spend: Option<SpendReservation>,
    ) -> Self {
        Self {
            ledger: sinks.ledger,
            failures: sinks.failures,
            failure: None,
            trail: Vec::new(),
            caller: caller.clone(),
            model: model.to_owned(),
            prompt_tokens,
            started: Instant::now(),
            created_at: Utc::now(),
            rate,
            spend,
            usage: None,
            written: false,
            // The entry is opened inside the request's task, where its trace is in scope. A client that
            // sent a trace it does not sample (flags 00) gets no span recorded, as W3C trace context asks.
            traces: sinks.traces.zip(sluice_trace::current().filter(|t| t.sampled())),
            log: None,
        }
    }

    /// Keeps the request's texts for its tenant's request log.
    pub(crate) fn capture(&mut self, log: Option<Capture>) {
        self.log = log;
    }

    /// A complete answer's body, for the request log.
    pub(crate) fn log_answer(&mut self, body: &[u8]) {
        if let Some(log) = &mut self.log {
            log.complete(body);
        }
    }

    /// A stream's chunk, for the request log.
    pub(crate) fn log_chunk(&mut self, data: &[u8]) {
        if let Some(log) = &mut self.log {
            log.chunk(data);
        }
    }

    /// Remembers the answering call's usage.
    pub(crate) fn observe(&mut self, usage: TokenUsage, source: UsageSource) {
        self.usage = Some((usage, source));
    }

    /// Says why the request failed, for the failure log.
    pub(crate) fn fail(&mut self, kind: &'static str) {
        self.failure = Some(kind);
    }

    /// Logs each failed upstream call and, when the client got an error, the answer. A client that went
    /// away (499) is not a failure.
    fn log_failures(&self, status: u16) {
        let answered_error = status >= 400 && status != 499;
        let failed_calls = self
            .trail
            .iter()
            .any(|a| matches!(a.outcome, RouteOutcome::Failed { .. }));
        if !answered_error && !failed_calls {
            return;
        }
        let at = Utc::now();
        let tenant = self.caller.principal.tenant_name();
        let failure = |stage, kind, status, attempt: Option<&Attempt>| Failure {
            at,
            stage,
            kind,
            status,
            model: self.model.clone(),
            provider: attempt.map(|a| a.provider.to_string()),
            vendor_model: attempt.map(|a| a.vendor_model.to_string()),
            upstream_key: attempt.map(|a| a.key_id.to_string()),
            tenant: tenant.to_owned(),
        };
        for attempt in &self.trail {
            if let RouteOutcome::Failed { kind, .. } = attempt.outcome {
                self.failures
                    .record(failure(FailureStage::Upstream, kind, None, Some(attempt)));
            }
        }
        if answered_error {
            let kind = self.failure.unwrap_or(match status {
                429 => "rate_limited",
                400..=499 => "client_error",
                _ => "server_error",
            });
            self.failures
                .record(failure(FailureStage::Answer, kind, Some(status), self.trail.last()));
        }
    }

    /// What every call the vendors may bill consumed, one log entry each, with the status the client got
    /// telling how the answering call ended.
    fn billed(&self, status: u16) -> Vec<(AttemptUsage, Option<Charge>)> {
        let prices = self.ledger.as_ref().map(|l| &l.prices);
        self.trail
            .iter()
            .filter(|attempt| attempt.outcome.may_be_billed())
            .map(|attempt| {
                let (usage, source) = match (attempt.outcome, self.usage) {
                    (RouteOutcome::Answered, Some(known)) => known,
                    // A call the vendor may bill without a report: its prompt as the gateway counted it.
                    _ => (TokenUsage::new(self.prompt_tokens, 0), UsageSource::Estimated),
                };
                let outcome = match (attempt.outcome, status) {
                    (RouteOutcome::Answered, 200) => AttemptOutcome::Answered,
                    (RouteOutcome::Answered, 499) | (RouteOutcome::Pending, _) => AttemptOutcome::Abandoned,
                    (RouteOutcome::Answered, _) => AttemptOutcome::Cut,
                    (RouteOutcome::Failed { .. }, _) => AttemptOutcome::Failed,
                };
                let charge = prices
                    .and_then(|p| p.price(&self.model, attempt.deployment))
                    .map(|price| price.charge(&usage));
                let log = AttemptUsage {
                    provider: Arc::clone(&attempt.provider),
                    vendor_model: Arc::clone(&attempt.vendor_model),
                    upstream_key: Some(Arc::clone(&attempt.key_id)),
                    outcome,
                    usage,
                    source,
                };
                (log, charge)
            })
            .collect()
    }

    /// Writes the entry with `status`, settling the tenant's reservations with what the request consumed.
    pub(crate) fn finish(&mut self, status: u16) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        self.log_failures(status);
        let billed = self.billed(status);
        let usage = billed
            .iter()
            .fold(TokenUsage::default(), |sum, (log, _)| sum.plus(&log.usage));
        let source = billed
            .iter()
            .fold(UsageSource::None, |source, (log, _)| match (source, log.source) {
                (UsageSource::Estimated, _) | (_, UsageSource::Estimated) => UsageSource::Estimated,
                (_, from) => from,
            });
        // The request's price is its answering (or last) call's; its cost, every billed call's: unknown when
        // one of them had no price, and zero (known) when no vendor saw the request.
        let charge = billed
            .iter()
            .try_fold(
                (Charge::UNPRICED, 0i64),
                |(_, sum), (_, charge)| -> Option<(Charge, i64)> {
                    let charge = (*charge)?;
                    Some((charge, sum.saturating_add(charge.cost_micros?)))
                },
            )
            .map_or(Charge::UNPRICED, |(charge, sum)| Charge {
                cost_micros: Some(sum),
                ..charge
            });
        if let Some(rate) = self.rate.take() {
            rate.settle(usage.total());
        }
        if let Some(spend) = self.spend.take() {
            spend.settle(charge.cost_micros.unwrap_or(0));
        }
        tracing::debug!(
            status,
            input = usage.prompt_tokens(),
            output = usage.output,
            source = source.as_str(),
            "usage"
        );
        if let Some((sink, trace)) = &self.traces {
            let done = Finished {
                model: &self.model,
                tenant: self.caller.principal.tenant_name(),
                key_id: self.caller.principal.key_id.as_deref(),
                trail: &self.trail,
                usage: &usage,
                cost_micros: charge.cost_micros,
                status,
                failure: self.failure,
            };
            spans::export(sink, trace, &done);
        }
        let id = UsageRow::new_id();
        if let Some(log) = self.log.take() {
            let tenant = self.caller.principal.tenant_name();
            log.finish(&id, tenant, &self.model, status, self.created_at);
        }
        let Some(ledger) = &self.ledger else { return };
        let last = self
            .trail
            .iter()
            .rev()
            .find(|a| a.outcome == RouteOutcome::Answered)
            .or(self.trail.last());
        let row = UsageRow {
            id,
            client_request_id: self.caller.client_request_id.clone(),
            tenant: self.caller.principal.shared_tenant_name(),
            key_id: self.caller.principal.key_id.clone(),
            model: std::mem::take(&mut self.model),
            // A request refused before any upstream call (a 429 under load, say) names none.
            provider: last.map_or_else(|| Arc::clone(&NONE), |a| Arc::clone(&a.provider)),
            vendor_model: last.map_or_else(|| Arc::clone(&NONE), |a| Arc::clone(&a.vendor_model)),
            upstream_key: last.map(|a| Arc::clone(&a.key_id)),
            usage,
            usage_source: source,
            cost_micros: charge.cost_micros,
            price_source: charge.price_source,
            price_date: charge.price_date,
            latency_ms: self.started.elapsed().as_millis() as u64,
            status,
            attempts: self.trail.len() as u32,
            attempt_log: billed.into_iter().map(|(log, _)| log).collect(),
            prompt_name: self.caller.prompt.as_ref().map(|(name, _)| name.clone()),
            prompt_version: self.caller.prompt.as_ref().map(|(_, version)| *version),
            created_at: self.created_at,
        };
        ledger.record(row);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // A request dropped before it finished: the client went away. 499 is nginx's "client closed".
        self.finish(499);
    }
}

#[cfg(test)]
mod tests {
    use super::OncePerSecond;

    #[test]
    fn the_throttle_lets_the_first_call_of_each_second_through() {
        let throttle = OncePerSecond::new();
        assert!(throttle.due_at(0), "the very first call, in second 0");
        assert!(!throttle.due_at(0));
        assert!(!throttle.due_at(0));
        assert!(throttle.due_at(1));
        assert!(!throttle.due_at(1));
        assert!(throttle.due_at(5), "seconds with no calls in between");
        assert!(!throttle.due_at(5));
    }
}
