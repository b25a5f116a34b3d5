//! List prices per million tokens by billing category, and the cost of a request in integer micro-dollars.
//!
//! `config/prices.toml` is read into raw serde structs (`deny_unknown_fields`), each price checked and
//! converted to micro-dollars per million tokens as it is read, so that an error names the file, the line
//! and the key (`config/prices.toml:41: models."gpt-4o".input: ...`). A price file that does not load is
//! an error for the caller to stop on: with no prices, costs would be unknown and dollar budgets blind.
//!
//! From there everything is integer arithmetic ([`Price::cost`]):
//!
//! ```text
//! picodollars = input * input_rate + cache_read * cached_input + cache_write_5m * cache_write_5m_rate
//!             + cache_write_1h * cache_write_1h_rate + output * output_rate                  (u128)
//! micro-dollars = (picodollars + 500_000) / 1_000_000                                       (half up)
//! ```
//!
//! where rates are micro-dollars per million tokens, so `tokens * rate` is in 10^-12 dollars. Reasoning
//! tokens are part of the output and billed at its rate. A category without its own rate is billed at the
//! input rate. Rounding happens once per request, to the nearest micro-dollar, halves up: a request's
//! recorded cost is within half a micro-dollar of the exact cost, and sums of recorded costs are exact
//! sums of those.
//!
//! Which price applies to a request ([`Prices::applied`]): the deployment's own price when it has one
//! ([`PriceSource::Override`]), else the list price with the list's date ([`PriceSource::List`]); a price
//! marked free is [`PriceSource::Free`]; no price at all is [`PriceSource::None`] and an unknown cost.

mod price;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer};
use sluice_api::TokenUsage;

pub use self::price::{LongContext, Price, PriceError};
use self::price::{RawLongContext, RawPrice};
use crate::ledger::PriceSource;

/// A price table loaded from `prices.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    taken: NaiveDate,
    models: HashMap<String, Price>,
}

/// `prices.toml` could not be used. Displayed as `FILE:LINE: KEY: PROBLEM`.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PricesError {
    /// The file (or other origin) read.
    pub file: String,
    /// The 1-based line of the problem, when it is in the text.
    pub line: Option<usize>,
    /// What is wrong, after the key's path.
    pub message: String,
}

/// The price that applies to one deployment, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedPrice<'a> {
    /// The price.
    pub price: &'a Price,
    /// Where it came from.
    pub source: PriceSource,
    /// The list's date, for [`PriceSource::List`].
    pub date: Option<NaiveDate>,
}

/// What a request cost and which price gave it: a ledger row's `cost_micros`, `price_source` and
/// `price_date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// Micro-dollars; `None` when no price was known.
    pub cost_micros: Option<i64>,
    /// Which price gave it.
    pub price_source: PriceSource,
    /// The price list's date, for [`PriceSource::List`].
    pub price_date: Option<NaiveDate>,
}

// === Raw, as written in TOML ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    #[serde(deserialize_with = "day")]
    taken: NaiveDate,
    models: BTreeMap<String, toml::Spanned<ModelEntry>>,
}

/// One `[models."id"]` table, checked as it is read.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawModel")]
struct ModelEntry {
    price: Price,
    aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default)]
    input: Option<f64>,
    #[serde(default)]
    output: Option<f64>,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write_5m: Option<f64>,
    #[serde(default)]
    cache_write_1h: Option<f64>,
    #[serde(default)]
    long_context: Option<RawLongContext>,
    #[serde(default)]
    free: bool,
    /// Other ids with the same price (dated snapshots the date-suffix rule does not catch, old names).
    #[serde(default)]
    aliases: Vec<String>,
}

impl TryFrom<RawModel> for ModelEntry {
    type Error = PriceError;

    fn try_from(raw: RawModel) -> Result<Self, Self::Error> {
        let price = Price::try_from(RawPrice {
            input: raw.input,
            output: raw.output,
            cached_input: raw.cached_input,
            cache_write_5m: raw.cache_write_5m,
            cache_write_1h: raw.cache_write_1h,
            long_context: raw.long_context,
            free: raw.free,
        })?;
        Ok(Self {
            price,
            aliases: raw.aliases,
        })
    }
}

fn day<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDate, D::Error> {
    let text = String::deserialize(deserializer)?;
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a YYYY-MM-DD date ({e})")))
}

// === impl Prices ===

impl Prices {
    /// Loads and checks a price file.
    pub fn load(path: &Path) -> Result<Self, PricesError> {
        let text = std::fs::read_to_string(path).map_err(|e| PricesError {
            file: path.display().to_string(),
            line: None,
            message: format!("cannot read the price list: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a price table; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PricesError> {
        let error = |span: Option<std::ops::Range<usize>>, message: String| PricesError {
            file: origin.to_owned(),
            line: Some(span.map_or(1, |s| line_of(text, s.start))),
            message,
        };
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| error(e.span(), format!("(syntax): {}", e.message().trim_end())))?;
        let raw: RawPrices = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = key_path(err.path());
            let inner = err.into_inner();
            let message = inner.message().trim_end();
            // A price's own error names its key within the model (`input: ...`): join the two paths.
            let message = if key.starts_with("models.") && message.contains(": ") {
                format!("{key}.{message}")
            } else {
                format!("{key}: {message}")
            };
            error(inner.span(), message)
        })?;
        let mut models = HashMap::new();
        for (name, entry) in raw.models {
            let span = entry.span();
            let entry = entry.into_inner();
            for id in std::iter::once(&name).chain(&entry.aliases) {
                if models.insert(id.clone(), entry.price).is_some() {
                    return Err(error(
                        Some(span.clone()),
                        format!("models.{name:?}: {id:?} is priced twice (as a model or an alias)"),
                    ));
                }
            }
        }
        Ok(Self {
            taken: raw.taken,
            models,
        })
    }

    /// The date the list prices were taken.
    pub fn taken(&self) -> NaiveDate {
        self.taken
    }

    /// The list price of a vendor model id: the exact id, else the id without a `models/` prefix (Gemini)
    /// or without a date suffix (`-2024-08-06`, `-20250929`), so that dated snapshots find their alias.
    pub fn get(&self, vendor_model: &str) -> Option<&Price> {
        let id = vendor_model.strip_prefix("models/").unwrap_or(vendor_model);
        self.models
            .get(vendor_model)
            .or_else(|| self.models.get(id))
            .or_else(|| strip_date(id).and_then(|base| self.models.get(base)))
    }

    /// The price that applies to a deployment of `vendor_model`: its own `deployment` price if it has
    /// one, else the list price; `None` when neither is known.
    pub fn applied<'a>(&'a self, vendor_model: &str, deployment: Option<&'a Price>) -> Option<AppliedPrice<'a>> {
        match deployment {
            Some(price) => Some(AppliedPrice::deployment(price)),
            None => self.get(vendor_model).map(|price| AppliedPrice {
                price,
                source: if price.free {
                    PriceSource::Free
                } else {
                    PriceSource::List
                },
                date: (!price.free).then_some(self.taken),
            }),
        }
    }

    /// What `usage` on a deployment of `vendor_model` costs, and which price says so (see
    /// [`Prices::applied`]).
    pub fn charge(&self, vendor_model: &str, usage: &TokenUsage, deployment: Option<&Price>) -> Charge {
        self.applied(vendor_model, deployment)
            .map_or(Charge::UNPRICED, |applied| applied.charge(usage))
    }

    /// Every priced id (aliases included) and its price, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Price)> {
        self.models.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many ids are priced (aliases included).
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

impl<'a> AppliedPrice<'a> {
    /// A deployment's own price: [`PriceSource::Override`], or [`PriceSource::Free`] when it marks the
    /// model free.
    pub fn deployment(price: &'a Price) -> Self {
        Self {
            price,
            source: if price.free {
                PriceSource::Free
            } else {
                PriceSource::Override
            },
            date: None,
        }
    }

    /// What `usage` costs at this price.
    pub fn charge(&self, usage: &TokenUsage) -> Charge {
        Charge {
            cost_micros: Some(self.price.cost(usage)),
            price_source: self.source,
            price_date: self.date,
        }
    }
}

impl Charge {
    /// No price known: the cost is unknown, not zero.
    pub const UNPRICED: Self = Self {
        cost_micros: None,
        price_source: PriceSource::None,
        price_date: None,
    };
}

/// A serde path as a TOML key path, model ids quoted: `models."gpt-4.1".input`.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut joined = String::new();
    let mut under_models = false;
    for segment in path.iter() {
        let part = match segment {
            Segment::Seq { index } => format!("[{index}]"),
            // `toml::Spanned`'s own wrapping is not a key of the file.
            Segment::Map { key } if key.starts_with("$__serde_spanned") => continue,
            Segment::Map { key } if under_models => format!("{key:?}"),
            Segment::Map { key } | Segment::Enum { variant: key } => key.clone(),
            Segment::Unknown => continue,
        };
        under_models = joined.is_empty() && part == "models";
        if !joined.is_empty() && !part.starts_with('[') {
            joined.push('.');
        }
        joined.push_str(&part);
    }
    if joined.is_empty() {
        "(top level)".to_owned()
    } else {
        joined
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// `gpt-4o-2024-08-06` -> `gpt-4o`, `claude-sonnet-4-5-20250929` -> `claude-sonnet-4-5`.
fn strip_date(id: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // -YYYY-MM-DD
    if id.len() > 11 {
        let (base, tail) = id.split_at(id.len() - 11);
        let parts: Vec<&str> = tail.split('-').collect();
        if let ["", y, m, d] = parts.as_slice()
            && y.len() == 4
            && m.len() == 2
            && d.len() == 2
            && digits(y)
            && digits(m)
            && digits(d)
        {
            return Some(base);
        }
    }
    // -YYYYMMDD
    if id.len() > 9 {
        let (base, tail) = id.split_at(id.len() - 9);
        if let Some(date) = tail.strip_prefix('-')
            && digits(date)
            && date.starts_with("20")
        {
            return Some(base);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, cache_read: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input,
            cache_read,
            output,
            ..TokenUsage::default()
        }
    }

    const SAMPLE: &str = r#"
taken = "2026-12-01"

[models."gpt-4o"]
input = 2.50
output = 10.00
cached_input = 1.25

[models."gpt-4o-mini"]
input = 0.15
output = 0.60
cached_input = 0.075

[models."claude-sonnet-4-5"]
input = 3
output = 15
cached_input = 0.30
cache_write_5m = 3.75
cache_write_1h = 6
aliases = ["claude-sonnet-4-5-latest"]

[models."gemini-2.5-pro"]
input = 1.25
output = 10.00
cached_input = 0.125
long_context = { above = 200000, input = 2.50, output = 15.00, cached_input = 0.25 }

[models."local-llama"]
free = true
"#;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn list_prices_say_their_date() {
        let prices = Prices::parse(SAMPLE, "sample").unwrap();
        assert_eq!(prices.taken(), day("2026-12-01"));
        // 1000 input (400 read from cache) + 500 output on gpt-4o:
        // 600 * 2.5 + 400 * 1.25 + 500 * 10 = 1500 + 500 + 5000 micro.
        assert_eq!(
            prices.charge("gpt-4o", &usage(600, 400, 500), None),
            Charge {
                cost_micros: Some(7000),
                price_source: PriceSource::List,
                price_date: Some(day("2026-12-01")),
            }
        );
        // Cache writes at Anthropic's rates: 1000 5m writes at $3.75, 1000 1h writes at $6.
        let writes = TokenUsage {
            cache_write_5m: 1000,
            cache_write_1h: 1000,
            ..TokenUsage::default()
        };
        assert_eq!(
            prices.charge("claude-sonnet-4-5", &writes, None).cost_micros,
            Some(9_750)
        );
        // Over 200K prompt tokens, Gemini 2.5 Pro's whole request at the long rates:
        // 200_001 * 2.5 + 1000 * 15 = 500_002.5 + 15_000 micro -> 515_003.
        assert_eq!(
            prices
                .charge("gemini-2.5-pro", &usage(200_001, 0, 1000), None)
                .cost_micros,
            Some(515_003)
        );
    }

    #[test]
    fn a_deployments_price_wins_and_says_so() {
        let prices = Prices::parse(SAMPLE, "sample").unwrap();
        let unknown = usage(100, 0, 100);
        assert_eq!(prices.charge("my-azure-deployment", &unknown, None), Charge::UNPRICED);
        let custom = Price::from_usd_per_million(1.0, 2.0, None).unwrap();
        let charged = prices.charge("gpt-4o", &unknown, Some(&custom));
        // 100 * 1 + 100 * 2 = 300 micro: the override, even over a listed model, with no list date.
        assert_eq!(
            charged,
            Charge {
                cost_micros: Some(300),
                price_source: PriceSource::Override,
                price_date: None,
            }
        );
        let free = prices.charge("gpt-4o", &unknown, Some(&Price::FREE));
        assert_eq!((free.cost_micros, free.price_source), (Some(0), PriceSource::Free));
        let listed_free = prices.charge("local-llama", &unknown, None);
        assert_eq!(
            (
                listed_free.cost_micros,
                listed_free.price_source,
                listed_free.price_date
            ),
            (Some(0), PriceSource::Free, None)
        );
        let applied = prices.applied("gpt-4o-2024-08-06", None).unwrap();
        assert_eq!((applied.price.input, applied.source), (2_500_000, PriceSource::List));
        assert!(prices.applied("nothing", None).is_none());
    }

    #[test]
    fn lookup_by_alias_snapshot_and_prefix() {
        let prices = Prices::parse(SAMPLE, "sample").unwrap();
        assert!(prices.get("gpt-4o-2024-08-06").is_some());
        assert_eq!(prices.get("gpt-4o-mini-2024-07-18"), prices.get("gpt-4o-mini"));
        assert_eq!(
            prices.get("claude-sonnet-4-5-20250929"),
            prices.get("claude-sonnet-4-5")
        );
        assert_eq!(prices.get("claude-sonnet-4-5-latest"), prices.get("claude-sonnet-4-5"));
        assert_eq!(prices.get("models/gemini-2.5-pro"), prices.get("gemini-2.5-pro"));
        assert!(prices.get("gpt-4o-minix").is_none());
        assert!(prices.get("gpt-4.1").is_none());
    }

    #[test]
    fn date_suffixes() {
        assert_eq!(strip_date("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(strip_date("claude-opus-4-5-20251101"), Some("claude-opus-4-5"));
        assert_eq!(strip_date("gpt-4.1"), None);
        assert_eq!(strip_date("mistral-medium-2508"), None);
        assert_eq!(strip_date("-2024-08-06"), None);
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let bad = |text: &str| Prices::parse(text, "prices.toml").unwrap_err().to_string();
        let e = bad("taken = \"2026-12-01\"\n[models.\"x\"]\ninput = -1\noutput = 1\n");
        // The line of the model's table, the key within it.
        assert!(
            e.starts_with("prices.toml:2: models.\"x\".input: must be a non-negative"),
            "{e}"
        );
        let e = bad("taken = \"2026-12-01\"\n\n[models.\"x\"]\ninput = 1\noutput = 1\ncahced_input = 1\n");
        assert!(e.starts_with("prices.toml:6: ") && e.contains("cahced_input"), "{e}");
        let e = bad("taken = \"Dec 1\"\nmodels = {}\n");
        assert!(
            e.starts_with("prices.toml:1: taken: \"Dec 1\" is not a YYYY-MM-DD date"),
            "{e}"
        );
        let e = bad("taken = \"2026-12-01\"\n[models.\"x\"]\ninput = 0.0000001\noutput = 1\n");
        assert!(e.contains("six decimal places"), "{e}");
        let e = bad(
            "taken = \"2026-12-01\"\n[models.\"x\"]\ninput = 1\noutput = 1\n[models.\"y\"]\ninput = 1\noutput = 1\naliases = [\"x\"]\n",
        );
        assert!(e.contains("priced twice"), "{e}");
        let e = bad(
            "taken = \"2026-12-01\"\n[models.\"x\"]\ninput = 1\noutput = 1\nlong_context = { above = 5, input = 1, output = -2 }\n",
        );
        assert!(e.contains("models.\"x\".long_context.output"), "{e}");
        let e = bad("taken = \"2026-12-01\"\n[models.\"x\"]\ninput = 1\noutput = 1\n[models.\"x\"]\n");
        assert!(e.starts_with("prices.toml:5: (syntax)"), "{e}");
        let e = Prices::load(Path::new("/no/such/prices.toml")).unwrap_err().to_string();
        assert!(e.starts_with("/no/such/prices.toml: cannot read"), "{e}");
    }

    #[test]
    fn the_shipped_table_parses_and_prices_every_model() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/prices.toml");
        let prices = Prices::load(&path).unwrap();
        assert!(prices.len() >= 20, "{} priced ids", prices.len());
        for id in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o3",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "claude-opus-4-5",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gpt-4o-2024-08-06",
            "claude-haiku-4-5-20251001",
        ] {
            assert!(prices.get(id).is_some(), "{id} has no price");
        }
        for (id, price) in prices.iter() {
            assert!(price.output > 0 && price.input > 0 && !price.free, "{id}: {price}");
            assert!(
                price.cached_input.is_none_or(|c| c <= price.input),
                "{id}: cached above input"
            );
            // A million input and a million output tokens cost exactly input + output.
            let cost = price.cost(&usage(1_000_000, 0, 1_000_000));
            let long = price.long_context.is_some_and(|l| l.above < 1_000_000);
            if !long {
                assert_eq!(cost, i64::try_from(price.input + price.output).unwrap(), "{id}");
            }
            // Anthropic's cache writes: 1.25 and 2 times the input price, in every tier.
            if id.starts_with("claude-") {
                assert_eq!(price.cache_write_5m, Some(price.input * 5 / 4), "{id}");
                assert_eq!(price.cache_write_1h, Some(price.input * 2), "{id}");
                if let Some(long) = price.long_context {
                    assert_eq!(long.cache_write_5m, Some(long.input * 5 / 4), "{id}");
                    assert_eq!(long.cache_write_1h, Some(long.input * 2), "{id}");
                }
            } else {
                assert_eq!((price.cache_write_5m, price.cache_write_1h), (None, None), "{id}");
            }
        }
        // Spot checks against the file.
        let gpt4o = prices.get("gpt-4o").unwrap();
        assert_eq!(
            (gpt4o.input, gpt4o.output, gpt4o.cached_input),
            (2_500_000, 10_000_000, Some(1_250_000))
        );
        let sonnet = prices.get("claude-sonnet-4-5").unwrap();
        assert_eq!(
            (sonnet.cache_write_5m, sonnet.cache_write_1h),
            (Some(3_750_000), Some(6_000_000))
        );
    }
}
