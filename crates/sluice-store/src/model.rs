//! The values the store reads and writes: tenants, keys, usage rows, spend rows.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::keys::KeyHash;

/// Micro-dollars in one US dollar: every amount of money in the store is an `i64` of micro-dollars.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// Converts a dollar amount from the edge (a JSON number, a CLI flag) to micro-dollars, rounding to the
/// nearest micro-dollar. `None` for negative, non-finite or absurdly large amounts.
pub fn usd_to_micros(usd: f64) -> Option<i64> {
    if !usd.is_finite() || !(0.0..=1e12).contains(&usd) {
        return None;
    }
    // At most 1e18 after scaling: fits in i64 and the f64 -> i64 cast is exact for integral values.
    Some((usd * MICROS_PER_USD as f64).round() as i64)
}

/// Micro-dollars as a float of dollars, for display and JSON at the edge only; never sum these.
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD as f64
}

/// Micro-dollars as an exact decimal string of dollars, six places: `12.500000`, `-0.000001`.
pub fn format_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let per = MICROS_PER_USD.unsigned_abs();
    format!("{sign}{}.{:06}", abs / per, abs % per)
}

// === Tenants ===

/// The period a tenant's spend budget covers. Periods are calendar days or months in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month (the default).
    #[default]
    Month,
}

impl BudgetPeriod {
    /// The stored and displayed name: `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// When the period containing `now` began (UTC midnight of the day, or of the first of the month).
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let day = now.date_naive();
        let first = match self {
            Self::Day => day,
            Self::Month => day.with_day(1).unwrap_or(day),
        };
        midnight(first)
    }

    /// When the period containing `now` ends and the budget resets.
    pub fn next_reset(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.start(now);
        let next = match self {
            Self::Day => start.checked_add_days(Days::new(1)),
            Self::Month => start.checked_add_months(Months::new(1)),
        };
        next.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BudgetPeriod {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            other => Err(StoreError::invalid(
                "budget_period",
                format!("{other:?} is neither \"day\" nor \"month\""),
            )),
        }
    }
}

/// UTC midnight at the start of `day`.
pub(crate) fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// What a new tenant is created with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewTenant {
    /// Unique name, 1 to 128 characters, no surrounding whitespace; not `default` ([`DEFAULT_TENANT`]).
    pub name: String,
    /// Requests per minute, `None` for unlimited.
    pub rpm: Option<u64>,
    /// Tokens per minute, `None` for unlimited.
    pub tpm: Option<u64>,
    /// Spend budget per period in micro-dollars (see [`usd_to_micros`]), `None` for unlimited.
    pub budget_micros: Option<i64>,
    /// The period the budget covers.
    pub budget_period: BudgetPeriod,
    /// Model names the tenant may call, `None` for all.
    pub models: Option<Vec<String>>,
    /// Prompt names the tenant may call, `None` for all.
    pub prompts: Option<Vec<String>>,
}

/// Most characters in a tenant's or a key's name.
pub const MAX_NAME_CHARS: usize = 128;

/// The tenant the ledger records requests made with the configured (non-virtual) keys under; no tenant
/// may be created with this name.
pub const DEFAULT_TENANT: &str = "default";

impl NewTenant {
    /// A tenant with no limits, budget or restrictions.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        validate_name("name", &self.name)?;
        if self.name == DEFAULT_TENANT {
            return Err(StoreError::invalid(
                "name",
                format!("{DEFAULT_TENANT:?} is reserved: the ledger records the configured keys' requests under it"),
            ));
        }
        if self.budget_micros.is_some_and(|b| b < 0) {
            return Err(StoreError::invalid("budget_usd", "must not be negative"));
        }
        for (field, value) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if value.is_some_and(|v| i64::try_from(v).is_err()) {
                return Err(StoreError::invalid(field, "too large"));
            }
        }
        for (field, list) in [("models", &self.models), ("prompts", &self.prompts)] {
            for item in list.iter().flatten() {
                if item.is_empty() || item.len() > crate::ledger::MAX_MODEL_BYTES {
                    return Err(StoreError::invalid(
                        field,
                        format!("names must be 1 to {} bytes", crate::ledger::MAX_MODEL_BYTES),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn validate_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    let chars = name.chars().count();
    if name.is_empty() || chars > MAX_NAME_CHARS {
        return Err(StoreError::invalid(
            field,
            format!("must be 1 to {MAX_NAME_CHARS} characters, not {chars}"),
        ));
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            "must not have surrounding whitespace or control characters",
        ));
    }
    Ok(())
}

/// A stored tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Internal id.
    pub id: i64,
    /// Unique name; what the ledger and spend queries use.
    pub name: String,
    /// Requests per minute, `None` for unlimited.
    pub rpm: Option<u64>,
    /// Tokens per minute, `None` for unlimited.
    pub tpm: Option<u64>,
    /// Spend budget per period in micro-dollars, `None` for unlimited.
    pub budget_micros: Option<i64>,
    /// The period the budget covers.
    pub budget_period: BudgetPeriod,
    /// Model names the tenant may call, `None` for all.
    pub models: Option<Vec<String>>,
    /// Prompt names the tenant may call, `None` for all.
    pub prompts: Option<Vec<String>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Tenant {
    /// Whether the tenant may call the model named `model` (a client-facing model name).
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// Whether the tenant may call the prompt named `prompt`.
    pub fn allows_prompt(&self, prompt: &str) -> bool {
        self.prompts.as_ref().is_none_or(|p| p.iter().any(|x| x == prompt))
    }
}

/// A change to a tenant's limits. Each field is `None` to keep it as it is, `Some(None)` to lift it
/// (unlimited, every model, every prompt) and `Some(Some(value))` to set it. The name never changes: the
/// ledger records tenants by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantChange {
    /// Requests per minute.
    pub rpm: Option<Option<u64>>,
    /// Tokens per minute.
    pub tpm: Option<Option<u64>>,
    /// Spend budget per period in micro-dollars.
    pub budget_micros: Option<Option<i64>>,
    /// The period the budget covers.
    pub budget_period: Option<BudgetPeriod>,
    /// Model names the tenant may call.
    pub models: Option<Option<Vec<String>>>,
    /// Prompt names the tenant may call.
    pub prompts: Option<Option<Vec<String>>>,
}

impl TenantChange {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `tenant` with this change applied.
    pub fn apply(&self, tenant: &Tenant) -> Tenant {
        Tenant {
            rpm: self.rpm.unwrap_or(tenant.rpm),
            tpm: self.tpm.unwrap_or(tenant.tpm),
            budget_micros: self.budget_micros.unwrap_or(tenant.budget_micros),
            budget_period: self.budget_period.unwrap_or(tenant.budget_period),
            models: self.models.clone().unwrap_or_else(|| tenant.models.clone()),
            prompts: self.prompts.clone().unwrap_or_else(|| tenant.prompts.clone()),
            ..tenant.clone()
        }
    }

    /// Checks the values it sets as a new tenant's are checked.
    pub(crate) fn validate(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let changed = self.apply(tenant);
        NewTenant {
            name: changed.name,
            rpm: changed.rpm,
            tpm: changed.tpm,
            budget_micros: changed.budget_micros,
            budget_period: changed.budget_period,
            models: changed.models,
            prompts: changed.prompts,
        }
        .validate()
    }
}

// === Virtual keys ===

/// A key as created: the plaintext is here once and never again.
#[derive(Debug)]
pub struct CreatedKey {
    /// The key's id, for listing and revoking.
    pub id: String,
    /// The whole key, to hand to the client once.
    pub key: SecretString,
    /// Display prefix, `sk-sluice-AbCd…`.
    pub prefix: String,
    /// The owning tenant's name.
    pub tenant: String,
    /// Optional label.
    pub name: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// The owning tenant's id.
    pub tenant_id: i64,
    /// The owning tenant's name.
    pub tenant: String,
    /// Optional label.
    pub name: Option<String>,
    /// Display prefix, `sk-sluice-AbCd…`.
    pub prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Whether a key works at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// It authenticates.
    Active,
    /// It was revoked.
    Revoked,
    /// Its expiry has passed.
    Expired,
}

impl KeyInfo {
    /// The key's state at `now`. Revocation wins over expiry. A key expires at the instant `expires_at`.
    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }
}

/// A key found by its hash, with its tenant and its state when it was looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    /// The key.
    pub key: KeyInfo,
    /// Its tenant.
    pub tenant: Tenant,
    /// Its state at the time of the lookup.
    pub state: KeyState,
}

/// A key that was active when listed, with the hash an auth cache maps from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveKey {
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// The key. Check [`KeyInfo::state`] at use: it may expire after the listing.
    pub key: KeyInfo,
}

// === Usage ===

/// What a batched ledger insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertOutcome {
    /// Rows new to the ledger (and added to the rollups).
    pub inserted: u64,
    /// Rows whose id was already in the ledger (or repeated in the batch), ignored.
    pub duplicates: u64,
}

/// How spend rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By tenant name.
    Tenant,
    /// By client model name.
    Model,
    /// By UTC day, `YYYY-MM-DD`.
    Day,
    /// By virtual key id ([`NO_KEY`] for requests without one).
    Key,
}

/// The group of requests made without a virtual key, when grouping by key.
pub const NO_KEY: &str = "none";

impl GroupBy {
    /// The query-string name: `tenant`, `model`, `day`, `key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Model => "model",
            Self::Day => "day",
            Self::Key => "key",
        }
    }
}

impl FromStr for GroupBy {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tenant" => Ok(Self::Tenant),
            "model" => Ok(Self::Model),
            "day" => Ok(Self::Day),
            "key" => Ok(Self::Key),
            other => Err(StoreError::invalid(
                "group_by",
                format!("{other:?} is none of tenant, model, day, key"),
            )),
        }
    }
}

/// Which spend to sum and how to group it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendFilter {
    /// Only this tenant, by name.
    pub tenant: Option<String>,
    /// From this UTC day, inclusive.
    pub from: Option<NaiveDate>,
    /// To this UTC day, inclusive.
    pub to: Option<NaiveDate>,
    /// The grouping.
    pub group_by: GroupBy,
}

impl SpendFilter {
    /// Every tenant, every day, grouped as asked.
    pub fn new(group_by: GroupBy) -> Self {
        Self {
            tenant: None,
            from: None,
            to: None,
            group_by,
        }
    }

    /// Only `tenant`.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Days `from..=to` (either end optional).
    pub fn days(mut self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Self {
        self.from = from;
        self.to = to;
        self
    }

    /// The first instant after the range, for queries on the ledger's timestamps.
    pub(crate) fn end_instant(&self) -> Option<DateTime<Utc>> {
        self.to.and_then(|d| d.checked_add_days(Days::new(1))).map(midnight)
    }
}

/// One group's totals, by billing category.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpendRow {
    /// The group: a tenant name, a model name, a `YYYY-MM-DD` day or a key id.
    pub group: String,
    /// Requests recorded (failed ones included).
    pub requests: i64,
    /// Input tokens billed at the full input price.
    pub input_tokens: i64,
    /// Input tokens read from a prompt cache.
    pub cache_read_tokens: i64,
    /// Input tokens written to a prompt cache with a 5-minute lifetime.
    pub cache_write_5m_tokens: i64,
    /// Input tokens written to a prompt cache with a 1-hour lifetime.
    pub cache_write_1h_tokens: i64,
    /// Generated tokens, reasoning included.
    pub output_tokens: i64,
    /// Reasoning tokens (a part of `output_tokens`).
    pub reasoning_tokens: i64,
    /// Exact cost in micro-dollars (requests with no known price count as zero).
    pub cost_micros: i64,
}

impl SpendRow {
    /// Every input token, as OpenAI counts `prompt_tokens`: uncached, cache reads and cache writes.
    pub fn prompt_tokens(&self) -> i64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens())
    }

    /// Completion tokens, as OpenAI counts them: the output, reasoning included.
    pub fn completion_tokens(&self) -> i64 {
        self.output_tokens
    }

    /// Cache writes of either lifetime.
    pub fn cache_write_tokens(&self) -> i64 {
        self.cache_write_5m_tokens.saturating_add(self.cache_write_1h_tokens)
    }

    /// The cost in dollars as a float, derived from the exact micro-dollars for display.
    pub fn cost_usd(&self) -> f64 {
        micros_to_usd(self.cost_micros)
    }
}

impl Serialize for SpendRow {
    /// `{"group", "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd",
    /// "cost_micros"}` as before the categories (`cached_tokens` is the cache reads), then each category:
    /// `input_tokens`, `cache_read_tokens`, `cache_write_tokens` (with its split `cache_write_5m_tokens`
    /// and `cache_write_1h_tokens`), `output_tokens`, `reasoning_tokens`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("SpendRow", 14)?;
        s.serialize_field("group", &self.group)?;
        s.serialize_field("requests", &self.requests)?;
        s.serialize_field("prompt_tokens", &self.prompt_tokens())?;
        s.serialize_field("completion_tokens", &self.completion_tokens())?;
        s.serialize_field("cached_tokens", &self.cache_read_tokens)?;
        s.serialize_field("cost_usd", &self.cost_usd())?;
        s.serialize_field("cost_micros", &self.cost_micros)?;
        s.serialize_field("input_tokens", &self.input_tokens)?;
        s.serialize_field("cache_read_tokens", &self.cache_read_tokens)?;
        s.serialize_field("cache_write_tokens", &self.cache_write_tokens())?;
        s.serialize_field("cache_write_5m_tokens", &self.cache_write_5m_tokens)?;
        s.serialize_field("cache_write_1h_tokens", &self.cache_write_1h_tokens)?;
        s.serialize_field("output_tokens", &self.output_tokens)?;
        s.serialize_field("reasoning_tokens", &self.reasoning_tokens)?;
        s.end()
    }
}

/// Which ledger rows an export returns: UTC days `from..=to` (either end optional), one tenant or all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportFilter {
    /// Only this tenant, by name.
    pub tenant: Option<String>,
    /// From this UTC day, inclusive.
    pub from: Option<NaiveDate>,
    /// To this UTC day, inclusive.
    pub to: Option<NaiveDate>,
}

impl ExportFilter {
    /// The first instant after the range.
    pub(crate) fn end_instant(&self) -> Option<DateTime<Utc>> {
        self.to.and_then(|d| d.checked_add_days(Days::new(1))).map(midnight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn money_conversions() {
        assert_eq!(usd_to_micros(12.5), Some(12_500_000));
        assert_eq!(usd_to_micros(0.000_000_4), Some(0));
        assert_eq!(usd_to_micros(0.1 + 0.2), Some(300_000));
        assert_eq!(usd_to_micros(-1.0), None);
        assert_eq!(usd_to_micros(f64::NAN), None);
        assert_eq!(format_usd(12_500_000), "12.500000");
        assert_eq!(format_usd(1), "0.000001");
        assert_eq!(format_usd(-1), "-0.000001");
        assert_eq!(micros_to_usd(2_500_000), 2.5);
    }

    #[test]
    fn periods() {
        let now = at("2026-02-14T15:30:00Z");
        assert_eq!(BudgetPeriod::Day.start(now), at("2026-02-14T00:00:00Z"));
        assert_eq!(BudgetPeriod::Day.next_reset(now), at("2026-02-15T00:00:00Z"));
        assert_eq!(BudgetPeriod::Month.start(now), at("2026-02-01T00:00:00Z"));
        assert_eq!(BudgetPeriod::Month.next_reset(now), at("2026-03-01T00:00:00Z"));
        assert_eq!(
            BudgetPeriod::Month.next_reset(at("2026-12-31T23:59:59Z")),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!("day".parse::<BudgetPeriod>().unwrap(), BudgetPeriod::Day);
        assert!("week".parse::<BudgetPeriod>().is_err());
    }

    #[test]
    fn key_state() {
        let key = KeyInfo {
            id: "k".into(),
            tenant_id: 1,
            tenant: "t".into(),
            name: None,
            prefix: "sk-sluice-abcd…".into(),
            created_at: at("2026-01-01T00:00:00Z"),
            expires_at: Some(at("2026-01-02T00:00:00Z")),
            revoked_at: None,
        };
        assert_eq!(key.state(at("2026-01-01T23:59:59Z")), KeyState::Active);
        assert_eq!(key.state(at("2026-01-02T00:00:00Z")), KeyState::Expired);
        let revoked = KeyInfo {
            revoked_at: Some(at("2026-01-01T01:00:00Z")),
            ..key
        };
        assert_eq!(revoked.state(at("2026-01-01T02:00:00Z")), KeyState::Revoked);
    }

    #[test]
    fn tenant_validation_and_access() {
        assert!(NewTenant::new("team-a").validate().is_ok());
        assert!(NewTenant::new("").validate().is_err());
        assert!(NewTenant::new(" padded").validate().is_err());
        let long = NewTenant::new("x".repeat(129)).validate().unwrap_err().to_string();
        assert!(
            long.contains("name") && long.contains("128") && long.contains("129"),
            "{long}"
        );
        assert!(NewTenant::new("é".repeat(128)).validate().is_ok());
        let reserved = NewTenant::new("default").validate().unwrap_err().to_string();
        assert!(reserved.contains("reserved"), "{reserved}");
        let models = NewTenant {
            models: Some(vec!["m".repeat(300)]),
            ..NewTenant::new("x")
        };
        assert!(models.validate().unwrap_err().to_string().contains("models"));
        let negative = NewTenant {
            budget_micros: Some(-1),
            ..NewTenant::new("x")
        };
        assert!(negative.validate().is_err());
        let tenant = Tenant {
            id: 1,
            name: "t".into(),
            rpm: None,
            tpm: None,
            budget_micros: None,
            budget_period: BudgetPeriod::Month,
            models: Some(vec!["gpt-4o".into()]),
            prompts: None,
            created_at: Utc::now(),
        };
        assert!(tenant.allows_model("gpt-4o"));
        assert!(!tenant.allows_model("gpt-4o-mini"));
        assert!(tenant.allows_prompt("anything"));
    }

    #[test]
    fn spend_row_json() {
        let row = SpendRow {
            group: "gpt-4o".into(),
            requests: 2,
            input_tokens: 4,
            cache_read_tokens: 3,
            cache_write_5m_tokens: 2,
            cache_write_1h_tokens: 1,
            output_tokens: 5,
            reasoning_tokens: 2,
            cost_micros: 1_500_000,
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["cost_usd"], 1.5);
        assert_eq!(json["cost_micros"], 1_500_000);
        assert_eq!(json["group"], "gpt-4o");
        assert_eq!(
            (json["prompt_tokens"].as_i64(), json["completion_tokens"].as_i64()),
            (Some(10), Some(5))
        );
        assert_eq!(json["cached_tokens"], 3);
        assert_eq!(json["cache_write_tokens"], 3);
        assert_eq!(json["reasoning_tokens"], 2);
        for field in [
            "input_tokens",
            "cache_read_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "output_tokens",
        ] {
            assert!(json[field].is_i64(), "{field}: {json}");
        }
    }
}
