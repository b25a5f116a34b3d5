//! The ledger's row: one request as the gateway records it, billable to the micro-dollar.
//!
//! - **Identity.** [`UsageRow::id`] is made by the gateway ([`UsageRow::new_id`], a UUIDv7) and is the
//!   ledger's unique key: inserting a row twice (a replayed spool, a retried batch) counts it once. The
//!   client's `x-request-id` is kept beside it in [`UsageRow::client_request_id`], not unique.
//! - **Usage** by billing category ([`TokenUsage`]) and where the counts came from ([`UsageSource`]):
//!   the sum over the attempts the vendors may bill, each of which is listed in
//!   [`UsageRow::attempt_log`].
//! - **Price**: the cost, which price gave it ([`PriceSource`]) and, for a list price, the date of the
//!   list.
//! - **Bounds.** Strings a client chose (model name, request id, prompt name) reach the database capped
//!   at a few hundred bytes, cut on a character boundary ([`cap`]), so that a billable row is never
//!   refused, nor an index broken, for a long string. The caps apply when a row is written; a row keeps
//!   its full strings until then (in the queue and the spool).

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sluice_api::{TokenUsage, UsageSource};

/// Most bytes of a row's id and of the client's request id the ledger keeps.
pub const MAX_ID_BYTES: usize = 128;
/// Most bytes of a model name (the client's, or the vendor's) the ledger keeps.
pub const MAX_MODEL_BYTES: usize = 256;
/// Most bytes of other names the ledger keeps: provider, upstream key, virtual key id, prompt name.
pub const MAX_NAME_BYTES: usize = 256;
/// Most bytes of a tenant name the ledger keeps: more than any valid tenant name (128 characters).
pub const MAX_TENANT_BYTES: usize = 512;

/// Where the price of a row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    /// The deployment's own price, from the gateway's configuration.
    Override,
    /// The list price from `prices.toml`, taken on [`UsageRow::price_date`].
    List,
    /// The operator marked the model free: the cost is zero by decision, not for want of a price.
    Free,
    /// No price was known: the cost is unknown (`NULL`), not zero.
    #[default]
    None,
}

impl PriceSource {
    /// The stored and displayed name: `override`, `list`, `free` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Override => "override",
            Self::List => "list",
            Self::Free => "free",
            Self::None => "none",
        }
    }

    /// The source named `name`, as [`PriceSource::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "override" => Some(Self::Override),
            "list" => Some(Self::List),
            "free" => Some(Self::Free),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// How one upstream attempt ended, for the attempts a vendor may bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Its answer reached the client whole.
    Answered,
    /// The vendor accepted the request, then failed it (an error status, a timeout) before the client
    /// saw anything; the gateway failed over or gave up.
    Failed,
    /// Its stream broke after the client had seen part of it.
    Cut,
    /// The client went away while it was answering.
    Abandoned,
}

impl AttemptOutcome {
    /// The stored name, as serde writes it: `answered`, `failed`, `cut` or `abandoned`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Failed => "failed",
            Self::Cut => "cut",
            Self::Abandoned => "abandoned",
        }
    }
}

/// One upstream attempt the vendor may bill: who was asked, how it ended, and what it consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptUsage {
    /// The provider asked.
    pub provider: Arc<str>,
    /// The vendor's model id.
    pub vendor_model: Arc<str>,
    /// The upstream key's id (`openai#0`), when known.
    pub upstream_key: Option<Arc<str>>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// What it consumed, by billing category.
    pub usage: TokenUsage,
    /// Where those counts came from.
    pub source: UsageSource,
}

/// One request's usage, as the gateway records it. Serialized as one JSON line in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The gateway's id for the request ([`UsageRow::new_id`]); unique in the ledger, which makes every
    /// write idempotent.
    pub id: String,
    /// The client's `x-request-id`, capped at [`MAX_ID_BYTES`] when written; not unique.
    pub client_request_id: Option<String>,
    /// The tenant's name.
    pub tenant: Arc<str>,
    /// The virtual key's id, `None` when the request came with no virtual key.
    pub key_id: Option<Arc<str>>,
    /// The model name the client sent (capped at [`MAX_MODEL_BYTES`] when written).
    pub model: String,
    /// The provider that answered (or was last tried).
    pub provider: Arc<str>,
    /// The vendor's model id.
    pub vendor_model: Arc<str>,
    /// The upstream key that answered or was last tried (`openai#0`).
    pub upstream_key: Option<Arc<str>>,
    /// Tokens by billing category: the sum over the billable attempts in `attempt_log`.
    pub usage: TokenUsage,
    /// Where the counts came from: the vendor, the gateway's estimate, or nowhere (nothing was consumed).
    pub usage_source: UsageSource,
    /// Cost in micro-dollars; `None` when no price was known ([`PriceSource::None`]).
    pub cost_micros: Option<i64>,
    /// Which price gave `cost_micros`.
    pub price_source: PriceSource,
    /// The date of the price list, for [`PriceSource::List`].
    pub price_date: Option<NaiveDate>,
    /// Time to the end of the answer, in milliseconds.
    pub latency_ms: u64,
    /// The HTTP status the client got.
    pub status: u16,
    /// Upstream attempts, failovers included.
    pub attempts: u32,
    /// Each upstream attempt the vendor may bill, in order.
    pub attempt_log: Vec<AttemptUsage>,
    /// The prompt template's name, for `/v1/prompts/{name}` calls.
    pub prompt_name: Option<String>,
    /// The prompt template's version.
    pub prompt_version: Option<u32>,
    /// When the request arrived (UTC). Stored at microsecond precision; its UTC date is the rollup's day.
    pub created_at: DateTime<Utc>,
}

impl UsageRow {
    /// A new row id: a UUIDv7, so ids sort roughly by time. Its random bits come from a per-thread
    /// generator: `Uuid::now_v7` asked the kernel for them (a `getrandom` system call per request), and an
    /// id must be unique, not secret.
    pub fn new_id() -> String {
        let millis = chrono::Utc::now().timestamp_millis().max(0).unsigned_abs();
        let mut random = [0u8; 10];
        fastrand::fill(&mut random);
        uuid::Builder::from_unix_timestamp_millis(millis, &random)
            .into_uuid()
            .to_string()
    }

    /// The prompt tokens OpenAI's usage object would show: every input category.
    pub fn prompt_tokens(&self) -> u64 {
        self.usage.prompt_tokens()
    }

    /// The completion tokens OpenAI's usage object would show: the output, reasoning included.
    pub fn completion_tokens(&self) -> u64 {
        self.usage.output
    }
}

/// `value` cut to at most `max` bytes, on a character boundary.
pub fn cap(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A row as versions before the ledger's 0002 migration spooled it: OpenAI-shaped counts, the client's
/// request id as the key. Read from an old spool so that an upgrade loses nothing; mapped as the
/// migration maps the rows already in the ledger.
#[derive(Debug, Deserialize)]
pub(crate) struct LegacyUsageRow {
    request_id: String,
    tenant: Arc<str>,
    #[serde(default)]
    key_id: Option<Arc<str>>,
    model: String,
    provider: Arc<str>,
    vendor_model: Arc<str>,
    prompt_tokens: u64,
    completion_tokens: u64,
    #[serde(default)]
    cached_tokens: u64,
    #[serde(default)]
    estimated: bool,
    #[serde(default)]
    cost_micros: Option<i64>,
    latency_ms: u64,
    status: u16,
    attempts: u32,
    #[serde(default)]
    prompt_name: Option<String>,
    #[serde(default)]
    prompt_version: Option<u32>,
    created_at: DateTime<Utc>,
}

impl From<LegacyUsageRow> for UsageRow {
    fn from(old: LegacyUsageRow) -> Self {
        let cached = old.cached_tokens.min(old.prompt_tokens);
        let usage_source = if old.estimated {
            UsageSource::Estimated
        } else if old.prompt_tokens == 0 && old.completion_tokens == 0 {
            UsageSource::None
        } else {
            UsageSource::Vendor
        };
        Self {
            client_request_id: Some(cap(&old.request_id, MAX_ID_BYTES).to_owned()),
            id: old.request_id,
            tenant: old.tenant,
            key_id: old.key_id,
            model: old.model,
            provider: old.provider,
            vendor_model: old.vendor_model,
            upstream_key: None,
            usage: TokenUsage {
                input: old.prompt_tokens - cached,
                cache_read: cached,
                output: old.completion_tokens,
                ..TokenUsage::default()
            },
            usage_source,
            price_source: if old.cost_micros.is_some() {
                PriceSource::List
            } else {
                PriceSource::None
            },
            cost_micros: old.cost_micros,
            price_date: None,
            latency_ms: old.latency_ms,
            status: old.status,
            attempts: old.attempts,
            attempt_log: Vec::new(),
            prompt_name: old.prompt_name,
            prompt_version: old.prompt_version,
            created_at: old.created_at,
        }
    }
}

/// `attempts` as a JSON list, the very text `serde_json::to_string` writes for it (the `attempt_log`
/// column, read back with serde). Written by hand: serde's writer went through every field of every
/// attempt one call at a time, about 4,300 instructions for the one attempt of a usual row, a third of
/// the row's share of a PostgreSQL insert.
pub(crate) fn attempt_log_json(attempts: &[AttemptUsage]) -> String {
    fn string(out: &mut String, text: &str) {
        // Writing into a `String` cannot fail.
        let _ = sluice_api::json_text::write_quoted(out, text);
    }
    fn number(out: &mut String, name: &str, value: u64) {
        out.push_str(name);
        out.push_str(itoa::Buffer::new().format(value));
    }
    let mut out = String::with_capacity(2 + attempts.len() * 256);
    out.push('[');
    for (i, a) in attempts.iter().enumerate() {
        out.push_str(if i == 0 { "{\"provider\":" } else { ",{\"provider\":" });
        string(&mut out, &a.provider);
        out.push_str(",\"vendor_model\":");
        string(&mut out, &a.vendor_model);
        out.push_str(",\"upstream_key\":");
        match &a.upstream_key {
            Some(key) => string(&mut out, key),
            None => out.push_str("null"),
        }
        out.push_str(",\"outcome\":\"");
        out.push_str(a.outcome.as_str());
        let u = &a.usage;
        number(&mut out, "\",\"usage\":{\"input\":", u.input);
        number(&mut out, ",\"cache_read\":", u.cache_read);
        number(&mut out, ",\"cache_write_5m\":", u.cache_write_5m);
        number(&mut out, ",\"cache_write_1h\":", u.cache_write_1h);
        number(&mut out, ",\"output\":", u.output);
        number(&mut out, ",\"reasoning\":", u.reasoning);
        out.push_str("},\"source\":\"");
        out.push_str(a.source.as_str());
        out.push_str("\"}");
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_log_is_the_json_serde_writes() {
        let outcomes = [
            AttemptOutcome::Answered,
            AttemptOutcome::Failed,
            AttemptOutcome::Cut,
            AttemptOutcome::Abandoned,
        ];
        let sources = [UsageSource::Vendor, UsageSource::Estimated, UsageSource::None];
        let long = "x".repeat(300);
        let names = [
            "openai",
            "",
            "a \"quoted\" \\ name\n\t\u{1}\u{1f}",
            "é€😀",
            long.as_str(),
        ];
        let mut attempts = Vec::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            for (j, source) in sources.into_iter().enumerate() {
                let name = names[(i + j) % names.len()];
                attempts.push(AttemptUsage {
                    provider: Arc::from(name),
                    vendor_model: Arc::from(names[(i + 2 * j + 1) % names.len()]),
                    upstream_key: (j != 1).then(|| Arc::from(format!("{name}#{i}"))),
                    outcome,
                    usage: TokenUsage {
                        input: u64::MAX,
                        cache_read: i as u64,
                        cache_write_5m: 0,
                        cache_write_1h: 10u64.pow(j as u32 * 6),
                        output: 1_234_567,
                        reasoning: 7,
                    },
                    source,
                });
            }
        }
        for n in 0..=attempts.len() {
            let slice = &attempts[..n];
            let json = attempt_log_json(slice);
            assert_eq!(json, serde_json::to_string(slice).unwrap());
            let back: Vec<AttemptUsage> = serde_json::from_str(&json).unwrap();
            assert_eq!(back, slice);
        }
    }

    #[test]
    fn caps_cut_on_character_boundaries() {
        assert_eq!(cap("short", 10), "short");
        assert_eq!(cap("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it keeps the character out.
        assert_eq!(cap("aé", 2), "a");
        assert_eq!(cap("aé", 3), "aé");
        let long = "€".repeat(100);
        let capped = cap(&long, MAX_ID_BYTES);
        assert!(capped.len() <= MAX_ID_BYTES && capped.len() > MAX_ID_BYTES - 3);
        assert!(capped.chars().all(|c| c == '€'));
        assert_eq!(cap("", 0), "");
    }

    #[test]
    fn sources_round_trip_by_name() {
        for source in [
            PriceSource::Override,
            PriceSource::List,
            PriceSource::Free,
            PriceSource::None,
        ] {
            assert_eq!(PriceSource::parse(source.as_str()), Some(source));
            let json = serde_json::to_string(&source).unwrap();
            assert_eq!(json, format!("\"{}\"", source.as_str()));
        }
        assert_eq!(PriceSource::parse("guess"), None);
        assert_eq!(
            serde_json::to_string(&AttemptOutcome::Abandoned).unwrap(),
            "\"abandoned\""
        );
    }

    #[test]
    fn new_ids_are_unique_uuids() {
        let before = chrono::Utc::now().timestamp_millis().unsigned_abs();
        let (a, b) = (UsageRow::new_id(), UsageRow::new_id());
        let after = chrono::Utc::now().timestamp_millis().unsigned_abs();
        assert_ne!(a, b);
        let a = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        let (seconds, nanos) = a.get_timestamp().unwrap().to_unix();
        let millis = seconds * 1000 + u64::from(nanos / 1_000_000);
        assert!((before..=after).contains(&millis), "{before} <= {millis} <= {after}");
    }

    #[test]
    fn legacy_spool_lines_map_as_the_migration_does() {
        let line = r#"{"request_id":"req-1","tenant":"acme","key_id":"k1","model":"gpt-4o","provider":"openai",
            "vendor_model":"gpt-4o-2024-08-06","prompt_tokens":100,"completion_tokens":20,"cached_tokens":30,
            "estimated":false,"cost_micros":700,"latency_ms":120,"status":200,"attempts":1,"prompt_name":null,
            "prompt_version":null,"created_at":"2026-03-01T12:00:00Z"}"#;
        let row = UsageRow::from(serde_json::from_str::<LegacyUsageRow>(line).unwrap());
        assert_eq!(
            (row.id.as_str(), row.client_request_id.as_deref()),
            ("req-1", Some("req-1"))
        );
        assert_eq!(
            row.usage,
            TokenUsage {
                input: 70,
                cache_read: 30,
                output: 20,
                ..TokenUsage::default()
            }
        );
        assert_eq!((row.prompt_tokens(), row.completion_tokens()), (100, 20));
        assert_eq!(row.usage_source, UsageSource::Vendor);
        assert_eq!((row.cost_micros, row.price_source), (Some(700), PriceSource::List));
        // A new-format line is not a legacy one, and the other way round.
        assert!(serde_json::from_str::<UsageRow>(line).is_err());
        let json = serde_json::to_string(&row).unwrap();
        assert!(serde_json::from_str::<LegacyUsageRow>(&json).is_err());
        assert_eq!(serde_json::from_str::<UsageRow>(&json).unwrap(), row);
    }
}
