//! Recording each request in the usage ledger: who asked, every upstream call the vendors may bill, the
//! tokens by category, the cost, how long it took. Recording never waits on the database: rows go to the
//! store's writer queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use sluice_api::{TokenUsage, UsageSource};
use sluice_budget::{Reservation, SpendReservation};
use sluice_router::{Attempt, AttemptOutcome};
use sluice_store::{Price, UsageRow, UsageWriter};

use crate::caller::{Caller, truncate};

/// The longest model name the ledger keeps; longer names (which no configured model has) are cut.
pub const MAX_MODEL_NAME: usize = 256;

/// How one deployment's calls are priced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PriceChoice {
    /// The deployment's own price from the configuration.
    Override(Price),
    /// The vendor model's list price from `prices.toml`, taken on that date.
    List(Price, NaiveDate),
    /// The operator marked the deployment free.
    Free,
    /// No price is known: the cost is not counted.
    Unknown,
}

impl PriceChoice {
    /// The cost of `usage`, in micro-dollars; `None` when no price is known.
    pub fn cost(&self, usage: &TokenUsage) -> Option<i64> {
        match self {
            Self::Override(price) | Self::List(price, _) => Some(price.cost(&usage.to_openai())),
            Self::Free => Some(0),
            Self::Unknown => None,
        }
    }

    /// The most a call of `prompt_tokens` and `completion_tokens` can cost: the prompt at the dearest input
    /// category (a cache write can cost more than plain input), the completion as output.
    pub fn worst_case(&self, prompt_tokens: u64, completion_tokens: u64) -> Option<i64> {
        let plain = TokenUsage::new(prompt_tokens, completion_tokens);
        let written_5m = TokenUsage {
            cache_write_5m: prompt_tokens,
            output: completion_tokens,
            ..TokenUsage::default()
        };
        let written_1h = TokenUsage {
            cache_write_1h: prompt_tokens,
            output: completion_tokens,
            ..TokenUsage::default()
        };
        [plain, written_5m, written_1h]
            .iter()
            .map(|usage| self.cost(usage))
            .try_fold(0i64, |worst, cost| cost.map(|c| worst.max(c)))
    }
}

/// Prices of every deployment of every model, by the deployment's position in the configuration: a
/// deployment's price applies to that deployment only.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    models: HashMap<Arc<str>, Vec<PriceChoice>>,
}

impl PriceBook {
    /// An empty book: nothing is priced.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prices of `model`'s deployments, in configuration order.
    pub fn set(&mut self, model: &str, deployments: Vec<PriceChoice>) {
        self.models.insert(model.into(), deployments);
    }

    /// The price of deployment `ordinal` of `model`.
    pub fn price(&self, model: &str, ordinal: usize) -> PriceChoice {
        self.models
            .get(model)
            .and_then(|d| d.get(ordinal))
            .copied()
            .unwrap_or(PriceChoice::Unknown)
    }

    /// The prices of every deployment of `model`.
    pub fn deployments(&self, model: &str) -> &[PriceChoice] {
        self.models.get(model).map_or(&[], Vec::as_slice)
    }
}

/// Where usage goes, and how it is priced.
pub struct Ledger {
    writer: UsageWriter,
    prices: PriceBook,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger writing through `writer`, pricing with `prices`.
    pub fn new(writer: UsageWriter, prices: PriceBook) -> Self {
        Self { writer, prices }
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

/// One request's entry, written once: when the answer is complete, when a stream ends, or, if the
/// request is dropped first (the client went away), with what is known by then. It holds the tenant's
/// reservations, settled when it is written.
pub(crate) struct Entry {
    ledger: Option<Arc<Ledger>>,
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
}

impl Entry {
    pub(crate) fn new(
        ledger: Option<Arc<Ledger>>,
        caller: &Caller,
        model: &str,
        prompt_tokens: u64,
        rate: Option<Reservation>,
        spend: Option<SpendReservation>,
    ) -> Self {
        Self {
            ledger,
            trail: Vec::new(),
            caller: caller.clone(),
            model: truncate(model, MAX_MODEL_NAME).to_owned(),
            prompt_tokens,
            started: Instant::now(),
            created_at: Utc::now(),
            rate,
            spend,
            usage: None,
            written: false,
        }
    }

    /// Remembers the answering call's usage.
    pub(crate) fn observe(&mut self, usage: TokenUsage, source: UsageSource) {
        self.usage = Some((usage, source));
    }

    /// What every call the vendors may bill consumed, summed, its source, and its cost (`None` when a
    /// billed call had no price).
    fn bill(&self) -> (TokenUsage, UsageSource, Option<i64>) {
        let prices = self.ledger.as_ref().map(|l| &l.prices);
        let mut total = TokenUsage::default();
        let mut source = UsageSource::None;
        let mut cost = Some(0i64);
        for attempt in &self.trail {
            if !attempt.outcome.may_be_billed() {
                continue;
            }
            let (usage, from) = match (attempt.outcome, self.usage) {
                (AttemptOutcome::Answered, Some(known)) => known,
                // A call the vendor may bill without a report: its prompt as the gateway counted it.
                _ => (TokenUsage::new(self.prompt_tokens, 0), UsageSource::Estimated),
            };
            total = total.plus(&usage);
            source = match (source, from) {
                (UsageSource::Estimated, _) | (_, UsageSource::Estimated) => UsageSource::Estimated,
                _ => from,
            };
            let price = prices.map_or(PriceChoice::Unknown, |p| p.price(&self.model, attempt.deployment));
            cost = cost.zip(price.cost(&usage)).map(|(sum, c)| sum.saturating_add(c));
        }
        if source == UsageSource::None {
            cost = None;
        }
        (total, source, cost)
    }

    /// Writes the entry with `status`, settling the tenant's reservations with what the request consumed.
    pub(crate) fn finish(&mut self, status: u16) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        let (usage, source, cost) = self.bill();
        if let Some(rate) = self.rate.take() {
            rate.settle(usage.total());
        }
        if let Some(spend) = self.spend.take() {
            spend.settle(cost.unwrap_or(0));
        }
        let Some(ledger) = &self.ledger else { return };
        let answered = self
            .trail
            .iter()
            .rev()
            .find(|a| a.outcome == AttemptOutcome::Answered)
            .or(self.trail.last());
        let row = UsageRow {
            request_id: uuid::Uuid::now_v7().to_string(),
            tenant: self.caller.principal.tenant_name().to_owned(),
            key_id: self.caller.principal.key_id.as_deref().map(str::to_owned),
            model: std::mem::take(&mut self.model),
            provider: answered.map(|a| a.provider.to_string()).unwrap_or_default(),
            vendor_model: answered.map(|a| a.vendor_model.to_string()).unwrap_or_default(),
            prompt_tokens: usage.prompt_tokens(),
            completion_tokens: usage.output,
            cached_tokens: usage.cache_read,
            estimated: source == UsageSource::Estimated,
            cost_micros: cost,
            latency_ms: self.started.elapsed().as_millis() as u64,
            status,
            attempts: self.trail.len() as u32,
            prompt_name: self.caller.prompt.as_ref().map(|(name, _)| name.clone()),
            prompt_version: self.caller.prompt.as_ref().map(|(_, version)| *version),
            created_at: self.created_at,
        };
        if let Err(err) = ledger.writer.try_record(row) {
            tracing::warn!(?err, "the usage queue is full; the row went to the spool");
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // A request dropped before it finished: the client went away. 499 is nginx's "client closed".
        self.finish(499);
    }
}
