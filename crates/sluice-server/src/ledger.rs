//! Recording each request in the usage ledger: who asked, what answered, the tokens, the cost, how long
//! it took. Recording never waits on the database: rows go to the store's writer queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use sluice_api::Usage;
use sluice_router::budget::Reservation;
use sluice_store::{AppliedPrice, Charge, Price, Prices, TokenUsage, UsageRow, UsageSource, UsageWriter};

use crate::auth::Principal;
use crate::tenancy::TenantState;

/// Where usage goes, and how it is priced.
pub struct Ledger {
    writer: UsageWriter,
    prices: Option<Prices>,
    /// Per (provider, vendor model) price overrides from the configuration.
    overrides: HashMap<(String, String), Price>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger writing through `writer`, pricing with `prices` and the deployments' `overrides`.
    pub fn new(writer: UsageWriter, prices: Option<Prices>, overrides: HashMap<(String, String), Price>) -> Self {
        Self {
            writer,
            prices,
            overrides,
        }
    }

    /// The writer, for its statistics and shutdown.
    pub fn writer(&self) -> &UsageWriter {
        &self.writer
    }

    fn charge(&self, provider: &str, vendor_model: &str, usage: &TokenUsage) -> Charge {
        let key = (provider.to_owned(), vendor_model.to_owned());
        let override_price = self.overrides.get(&key);
        match (&self.prices, override_price) {
            (Some(prices), _) => prices.charge(vendor_model, usage, override_price),
            (None, Some(price)) => AppliedPrice::deployment(price).charge(usage),
            (None, None) => Charge::UNPRICED,
        }
    }
}

/// One request's entry, written once: when the answer is complete, when a stream ends, or, if the
/// request is dropped first (the client went away), with what is known by then.
pub(crate) struct Entry {
    ledger: Option<Arc<Ledger>>,
    /// The ledger row's id, made when the request arrives.
    id: String,
    request_id: String,
    tenant: Option<Arc<TenantState>>,
    tenant_name: String,
    key_id: Option<String>,
    model: String,
    provider: String,
    vendor_model: String,
    attempts: u32,
    prompt: Option<(String, u32)>,
    started: Instant,
    reservation: Option<Reservation>,
    usage: Option<Usage>,
    /// The usage was counted by the gateway, not reported by the vendor.
    estimated: bool,
    written: bool,
}

impl Entry {
    pub(crate) fn new(
        ledger: Option<Arc<Ledger>>,
        principal: &Principal,
        request_id: &str,
        model: &str,
        prompt: Option<(String, u32)>,
        reservation: Option<Reservation>,
    ) -> Self {
        Self {
            ledger,
            id: UsageRow::new_id(),
            request_id: request_id.to_owned(),
            tenant: principal.tenant.clone(),
            tenant_name: principal.tenant_name().to_owned(),
            key_id: principal.key_id.as_deref().map(str::to_owned),
            model: model.to_owned(),
            provider: String::new(),
            vendor_model: String::new(),
            attempts: 0,
            prompt,
            started: Instant::now(),
            reservation,
            usage: None,
            estimated: false,
            written: false,
        }
    }

    /// Notes which deployment answered.
    pub(crate) fn routed(&mut self, provider: &str, vendor_model: &str, attempts: u32) {
        provider.clone_into(&mut self.provider);
        vendor_model.clone_into(&mut self.vendor_model);
        self.attempts = attempts;
    }

    /// Notes the attempts of a failed request.
    pub(crate) fn attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    /// Remembers the latest usage reported: by the vendor, or `estimated` by the gateway's count.
    pub(crate) fn observe(&mut self, usage: Usage, estimated: bool) {
        self.usage = Some(usage);
        self.estimated = estimated;
    }

    /// The usage reported so far.
    pub(crate) fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Writes the entry with `status` and the usage known so far.
    pub(crate) fn finish(&mut self, status: u16) {
        if self.written {
            return;
        }
        self.written = true;
        let usage = self.usage;
        let tokens = usage.map_or(0, |u| u.prompt_tokens + u.completion_tokens);
        if let Some(reservation) = self.reservation.take() {
            let used = if usage.is_some() { tokens } else { reservation.tokens() };
            reservation.settle(used, tokio::time::Instant::now());
        }
        let Some(ledger) = &self.ledger else { return };
        let tokens = usage.as_ref().map(TokenUsage::from_openai).unwrap_or_default();
        let usage_source = match usage {
            None => UsageSource::None,
            Some(_) if self.estimated => UsageSource::Estimated,
            Some(_) => UsageSource::Vendor,
        };
        let charge = match usage {
            Some(_) => ledger.charge(&self.provider, &self.vendor_model, &tokens),
            None => Charge::UNPRICED,
        };
        if let (Some(cost), Some(tenant)) = (charge.cost_micros, &self.tenant) {
            tenant.add_spend(cost);
        }
        let row = UsageRow {
            id: std::mem::take(&mut self.id),
            client_request_id: Some(std::mem::take(&mut self.request_id)),
            tenant: std::mem::take(&mut self.tenant_name),
            key_id: self.key_id.take(),
            model: std::mem::take(&mut self.model),
            provider: std::mem::take(&mut self.provider),
            vendor_model: std::mem::take(&mut self.vendor_model),
            upstream_key: None,
            usage: tokens,
            usage_source,
            cost_micros: charge.cost_micros,
            price_source: charge.price_source,
            price_date: charge.price_date,
            latency_ms: self.started.elapsed().as_millis() as u64,
            status,
            attempts: self.attempts,
            attempt_log: Vec::new(),
            prompt_name: self.prompt.as_ref().map(|(name, _)| name.clone()),
            prompt_version: self.prompt.as_ref().map(|(_, version)| *version),
            created_at: Utc::now(),
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
