//! List prices per million tokens, and the cost of a request in integer micro-dollars.
//!
//! `config/prices.toml` is read into raw serde structs (`deny_unknown_fields`), then each price is checked
//! and converted to micro-dollars per million tokens, errors naming the file and the key
//! (`models."gpt-4o".input`). From there everything is integer arithmetic:
//!
//! ```text
//! picodollars = uncached_prompt * input + cached * cached_input + completion * output   (u128)
//! micro-dollars = (picodollars + 500_000) / 1_000_000                                 (half up)
//! ```
//!
//! where prices are micro-dollars per million tokens, so `tokens * price` is in 10^-12 dollars. Rounding
//! happens once per request, to the nearest micro-dollar, halves up: a request's recorded cost is within
//! half a micro-dollar of the exact list-price cost, and sums of recorded costs are exact sums of those.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;
use sluice_api::chat::Usage;

/// Micro-dollars per million tokens in one dollar per million tokens.
const MICROS: f64 = 1_000_000.0;

/// The highest price accepted, in dollars per million tokens: a typo guard, well above any list price.
const MAX_USD_PER_MILLION: f64 = 100_000.0;

/// A price table loaded from `prices.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    taken: NaiveDate,
    models: HashMap<String, Price>,
}

/// One model's prices, in micro-dollars per million tokens (1 USD / 1M tokens = 1_000_000).
///
/// Deserializes from the same shape as a `prices.toml` entry (dollars per million tokens), so a
/// deployment's override in the gateway's configuration can be read with it:
/// `{ input = 2.5, output = 10.0, cached_input = 1.25 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPrice")]
pub struct Price {
    /// Uncached prompt tokens.
    pub input: u64,
    /// Completion tokens (reasoning tokens included, as vendors bill them).
    pub output: u64,
    /// Prompt tokens read from the vendor's cache; `None` bills them at `input`.
    pub cached_input: Option<u64>,
    /// Higher rates for the whole request when its prompt is longer than a threshold.
    pub long_context: Option<LongContext>,
}

/// Rates that apply to every token of a request whose prompt tokens (cached ones included) exceed `above`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongContext {
    /// The prompt length, in tokens, above which these rates apply.
    pub above: u64,
    /// Uncached prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Cached prompt tokens; `None` bills them at this tier's `input`.
    pub cached_input: Option<u64>,
}

/// `prices.toml` could not be used. The message names the file and, where it applies, the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct PricesError {
    /// The file (or other origin) read.
    pub file: String,
    /// What is wrong, with the key's path.
    pub message: String,
}

/// A price that does not make sense (negative, not finite, more than six decimals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct PriceError {
    /// The key at fault, relative to the price (`input`, `long_context.output`).
    pub key: String,
    /// Why.
    pub reason: String,
}

// === Raw, as written in TOML ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    taken: String,
    models: BTreeMap<String, RawModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    long_context: Option<RawLongContext>,
    /// Other ids with the same price (dated snapshots the date-suffix rule does not catch, old names).
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    long_context: Option<RawLongContext>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLongContext {
    above: u64,
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
}

// === impl Price ===

impl Price {
    /// A flat price from dollars per million tokens.
    pub fn from_usd_per_million(input: f64, output: f64, cached_input: Option<f64>) -> Result<Self, PriceError> {
        Ok(Self {
            input: micros_per_million("input", input)?,
            output: micros_per_million("output", output)?,
            cached_input: cached_input
                .map(|v| micros_per_million("cached_input", v))
                .transpose()?,
            long_context: None,
        })
    }

    /// The cost of `usage` in micro-dollars: see the module docs for the arithmetic and the rounding.
    /// Cached tokens beyond the prompt tokens are taken as all of the prompt cached.
    pub fn cost(&self, usage: &Usage) -> i64 {
        let prompt = usage.prompt_tokens;
        let cached = usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens).min(prompt);
        let (input, output, cached_input) = match self.long_context {
            Some(long) if prompt > long.above => (long.input, long.output, long.cached_input.unwrap_or(long.input)),
            _ => (self.input, self.output, self.cached_input.unwrap_or(self.input)),
        };
        let pico = mul(prompt - cached, input)
            .checked_add(mul(cached, cached_input))
            .and_then(|s| s.checked_add(mul(usage.completion_tokens, output)))
            .unwrap_or(u128::MAX);
        let micros = pico.saturating_add(500_000) / 1_000_000;
        i64::try_from(micros).unwrap_or(i64::MAX)
    }
}

fn mul(tokens: u64, price: u64) -> u128 {
    // Cannot overflow: both factors are below 2^64.
    u128::from(tokens) * u128::from(price)
}

impl TryFrom<RawPrice> for Price {
    type Error = PriceError;

    fn try_from(raw: RawPrice) -> Result<Self, Self::Error> {
        let mut price = Self::from_usd_per_million(raw.input, raw.output, raw.cached_input)?;
        price.long_context = raw
            .long_context
            .map(|long| {
                Ok::<_, PriceError>(LongContext {
                    above: long.above,
                    input: micros_per_million("long_context.input", long.input)?,
                    output: micros_per_million("long_context.output", long.output)?,
                    cached_input: long
                        .cached_input
                        .map(|v| micros_per_million("long_context.cached_input", v))
                        .transpose()?,
                })
            })
            .transpose()?;
        Ok(price)
    }
}

/// Dollars per million tokens to micro-dollars per million tokens, exactly: at most six decimals.
fn micros_per_million(key: &str, usd: f64) -> Result<u64, PriceError> {
    let error = |reason: &str| PriceError {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if !usd.is_finite() || usd < 0.0 {
        return Err(error("must be a non-negative number of dollars per million tokens"));
    }
    if usd > MAX_USD_PER_MILLION {
        return Err(error(
            "above 100000 dollars per million tokens; is it per token or per thousand?",
        ));
    }
    let scaled = usd * MICROS;
    let rounded = scaled.round();
    // A decimal with up to six places scales to within float noise of an integer.
    if (scaled - rounded).abs() > 1e-3 {
        return Err(error(
            "more than six decimal places (finer than a micro-dollar per million tokens)",
        ));
    }
    // In range (checked above) and integral, so the cast is exact.
    Ok(rounded as u64)
}

// === impl Prices ===

impl Prices {
    /// Loads and checks a price file.
    pub fn load(path: &Path) -> Result<Self, PricesError> {
        let text = std::fs::read_to_string(path).map_err(|e| PricesError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a price table; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PricesError> {
        let error = |message: String| PricesError {
            file: origin.to_owned(),
            message,
        };
        let raw: RawPrices = toml::from_str(text).map_err(|e| error(e.to_string().trim_end().to_owned()))?;
        let taken = NaiveDate::parse_from_str(&raw.taken, "%Y-%m-%d")
            .map_err(|e| error(format!("taken: {:?} is not a YYYY-MM-DD date ({e})", raw.taken)))?;
        let mut models = HashMap::new();
        for (name, model) in raw.models {
            let raw = RawPrice {
                input: model.input,
                output: model.output,
                cached_input: model.cached_input,
                long_context: model.long_context,
            };
            let price = Price::try_from(raw).map_err(|e| error(format!("models.{name:?}.{e}")))?;
            for id in std::iter::once(&name).chain(&model.aliases) {
                if models.insert(id.clone(), price).is_some() {
                    return Err(error(format!(
                        "models.{name:?}: {id:?} is priced twice (as a model or an alias)"
                    )));
                }
            }
        }
        Ok(Self { taken, models })
    }

    /// The date the list prices were taken.
    pub fn taken(&self) -> NaiveDate {
        self.taken
    }

    /// The price of a vendor model id: the exact id, else the id without a `models/` prefix (Gemini)
    /// or without a date suffix (`-2024-08-06`, `-20250929`), so that dated snapshots find their alias.
    pub fn get(&self, vendor_model: &str) -> Option<&Price> {
        let id = vendor_model.strip_prefix("models/").unwrap_or(vendor_model);
        self.models
            .get(vendor_model)
            .or_else(|| self.models.get(id))
            .or_else(|| strip_date(id).and_then(|base| self.models.get(base)))
    }

    /// The cost of `usage` on `vendor_model` in micro-dollars, the deployment's `override_price` winning
    /// over the table; `None` when neither knows the model.
    pub fn cost(&self, vendor_model: &str, usage: &Usage, override_price: Option<&Price>) -> Option<i64> {
        override_price.or_else(|| self.get(vendor_model)).map(|p| p.cost(usage))
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

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let usd = |micros: u64| micros as f64 / MICROS;
        write!(f, "${}/M in, ${}/M out", usd(self.input), usd(self.output))?;
        if let Some(cached) = self.cached_input {
            write!(f, ", ${}/M cached", usd(cached))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_api::chat::PromptTokensDetails;

    use super::*;

    fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: cached }),
            completion_tokens_details: None,
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
aliases = ["claude-sonnet-4-5-latest"]

[models."gemini-2.5-pro"]
input = 1.25
output = 10.00
cached_input = 0.125
long_context = { above = 200000, input = 2.50, output = 15.00, cached_input = 0.25 }
"#;

    #[test]
    fn cost_arithmetic_is_exact() {
        let prices = Prices::parse(SAMPLE, "sample").unwrap();
        assert_eq!(prices.taken(), NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        // 1M prompt + 1M completion on gpt-4o: $2.50 + $10.00.
        assert_eq!(
            prices.cost("gpt-4o", &usage(1_000_000, 1_000_000, 0), None),
            Some(12_500_000)
        );
        // 1000 prompt (400 cached) + 500 completion on gpt-4o:
        // 600 * 2_500_000 + 400 * 1_250_000 + 500 * 10_000_000 = 7_000_000_000 pico = 7000 micro.
        assert_eq!(prices.cost("gpt-4o", &usage(1000, 500, 400), None), Some(7000));
        // gpt-4o-mini, 1 prompt token: 150_000 pico = 0.15 micro -> 0.
        assert_eq!(prices.cost("gpt-4o-mini", &usage(1, 0, 0), None), Some(0));
        // 10 prompt tokens: 1_500_000 pico = 1.5 micro -> 2 (half up).
        assert_eq!(prices.cost("gpt-4o-mini", &usage(10, 0, 0), None), Some(2));
        // 3 prompt tokens: 450_000 pico = 0.45 micro -> 0.
        assert_eq!(prices.cost("gpt-4o-mini", &usage(3, 0, 0), None), Some(0));
        // 7 cached + 3 uncached: 7 * 75_000 + 3 * 150_000 = 975_000 pico -> 1 micro.
        assert_eq!(prices.cost("gpt-4o-mini", &usage(10, 0, 7), None), Some(1));
        // More cached than prompt: all prompt cached.
        assert_eq!(prices.cost("gpt-4o-mini", &usage(10, 0, 99), None), Some(1));
        // No usage details: no cached tokens.
        let plain = Usage::new(2_000_000, 0);
        assert_eq!(prices.cost("gpt-4o-mini", &plain, None), Some(300_000));
    }

    #[test]
    fn long_context_rates_apply_to_the_whole_request() {
        let prices = Prices::parse(SAMPLE, "sample").unwrap();
        // 200_000 prompt tokens: not above the threshold. 200_000 * 1.25 = $0.25.
        assert_eq!(
            prices.cost("gemini-2.5-pro", &usage(200_000, 0, 0), None),
            Some(250_000)
        );
        // 200_001 prompt + 1000 completion at $2.50 / $15.00: 500_002.5 + 15_000 micro -> 515_003.
        assert_eq!(
            prices.cost("gemini-2.5-pro", &usage(200_001, 1000, 0), None),
            Some(515_003)
        );
    }

    #[test]
    fn lookup_by_alias_snapshot_and_override() {
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
        let unknown = usage(100, 100, 0);
        assert_eq!(prices.cost("my-azure-deployment", &unknown, None), None);
        let custom = Price::from_usd_per_million(1.0, 2.0, None).unwrap();
        // 100 * 1_000_000 + 100 * 2_000_000 pico = 300 micro, override wins even over a known model.
        assert_eq!(prices.cost("my-azure-deployment", &unknown, Some(&custom)), Some(300));
        assert_eq!(prices.cost("gpt-4o", &unknown, Some(&custom)), Some(300));
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
    fn errors_name_the_file_and_key() {
        let bad = |text: &str| Prices::parse(text, "prices.toml").unwrap_err().to_string();
        let e = bad("taken = \"2026-12-01\"\n[models.\"x\"]\ninput = -1\noutput = 1\n");
        assert!(
            e.starts_with("prices.toml: ") && e.contains("models.\"x\".input"),
            "{e}"
        );
        let e = bad("taken = \"2026-12-01\"\n[models.\"x\"]\ninput = 1\noutput = 1\ncahced_input = 1\n");
        assert!(e.contains("cahced_input"), "{e}");
        let e = bad("taken = \"Dec 1\"\nmodels = {}\n");
        assert!(e.contains("taken"), "{e}");
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
    }

    #[test]
    fn override_deserializes_from_the_same_shape() {
        #[derive(Deserialize)]
        struct Deployment {
            price: Price,
        }
        let d: Deployment = toml::from_str("price = { input = 0.4, output = 1.6, cached_input = 0.1 }").unwrap();
        assert_eq!(d.price.input, 400_000);
        assert_eq!(d.price.cached_input, Some(100_000));
        assert!(toml::from_str::<Deployment>("price = { input = 0.4 }").is_err());
        assert!(toml::from_str::<Deployment>("price = { input = 0.4, output = 1, extra = 1 }").is_err());
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
            assert!(price.output > 0 && price.input > 0, "{id}: {price}");
            assert!(
                price.cached_input.is_none_or(|c| c <= price.input),
                "{id}: cached above input"
            );
            // A million prompt and a million completion tokens cost exactly input + output.
            let cost = price.cost(&usage(1_000_000, 1_000_000, 0));
            let expected = price.input + price.output;
            let long = price.long_context.is_some_and(|l| l.above < 1_000_000);
            if !long {
                assert_eq!(cost, i64::try_from(expected).unwrap(), "{id}");
            }
        }
        // Spot checks against the file.
        let gpt4o = prices.get("gpt-4o").unwrap();
        assert_eq!(
            (gpt4o.input, gpt4o.output, gpt4o.cached_input),
            (2_500_000, 10_000_000, Some(1_250_000))
        );
    }
}
