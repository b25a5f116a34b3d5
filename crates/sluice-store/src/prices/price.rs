//! One model's price by billing category, and the integer arithmetic of a request's cost.

use std::fmt;

use serde::Deserialize;
use sluice_api::TokenUsage;

/// Micro-dollars per million tokens in one dollar per million tokens.
const MICROS: f64 = 1_000_000.0;

/// The highest price accepted, in dollars per million tokens: a typo guard, well above any list price.
const MAX_USD_PER_MILLION: f64 = 100_000.0;

/// One model's prices, in micro-dollars per million tokens (1 USD / 1M tokens = 1_000_000).
///
/// Deserializes from the same shape as a `prices.toml` entry (dollars per million tokens), so a
/// deployment's override in the gateway's configuration can be read with it:
/// `{ input = 2.5, output = 10.0, cached_input = 1.25 }`, or `{ free = true }` for a model the operator
/// does not charge for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPrice")]
pub struct Price {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens (reasoning tokens included, as vendors bill them).
    pub output: u64,
    /// Input tokens read from the vendor's prompt cache; `None` bills them at `input`.
    pub cached_input: Option<u64>,
    /// Input tokens written to the prompt cache for 5 minutes (Anthropic: 1.25 times `input`); `None`
    /// bills them at `input`.
    pub cache_write_5m: Option<u64>,
    /// Input tokens written to the prompt cache for an hour (Anthropic: 2 times `input`); `None` bills
    /// them at `input`.
    pub cache_write_1h: Option<u64>,
    /// Higher rates for the whole request when its prompt is longer than a threshold.
    pub long_context: Option<LongContext>,
    /// The operator marked the model free: every rate is zero, by decision.
    pub free: bool,
}

/// Rates that apply to every token of a request whose input tokens (every category) exceed `above`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongContext {
    /// The prompt length, in tokens, above which these rates apply.
    pub above: u64,
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Cache reads; `None` bills them at this tier's `input`.
    pub cached_input: Option<u64>,
    /// 5-minute cache writes; `None` bills them at this tier's `input`.
    pub cache_write_5m: Option<u64>,
    /// 1-hour cache writes; `None` bills them at this tier's `input`.
    pub cache_write_1h: Option<u64>,
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

/// The rates of one tier, every category resolved.
#[derive(Debug, Clone, Copy)]
struct Rates {
    input: u64,
    cache_read: u64,
    cache_write_5m: u64,
    cache_write_1h: u64,
    output: u64,
}

impl Rates {
    fn dearest_input(&self) -> u64 {
        self.input
            .max(self.cache_read)
            .max(self.cache_write_5m)
            .max(self.cache_write_1h)
    }
}

// === Raw, as written in TOML ===

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrice {
    #[serde(default)]
    pub(super) input: Option<f64>,
    #[serde(default)]
    pub(super) output: Option<f64>,
    #[serde(default)]
    pub(super) cached_input: Option<f64>,
    #[serde(default)]
    pub(super) cache_write_5m: Option<f64>,
    #[serde(default)]
    pub(super) cache_write_1h: Option<f64>,
    #[serde(default)]
    pub(super) long_context: Option<RawLongContext>,
    #[serde(default)]
    pub(super) free: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLongContext {
    above: u64,
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write_5m: Option<f64>,
    #[serde(default)]
    cache_write_1h: Option<f64>,
}

// === impl Price ===

impl Price {
    /// A model the operator does not charge for.
    pub const FREE: Self = Self {
        input: 0,
        output: 0,
        cached_input: None,
        cache_write_5m: None,
        cache_write_1h: None,
        long_context: None,
        free: true,
    };

    /// A flat price from dollars per million tokens; cache writes are billed at `input`.
    pub fn from_usd_per_million(input: f64, output: f64, cached_input: Option<f64>) -> Result<Self, PriceError> {
        Ok(Self {
            input: micros_per_million("input", input)?,
            output: micros_per_million("output", output)?,
            cached_input: optional("cached_input", cached_input)?,
            cache_write_5m: None,
            cache_write_1h: None,
            long_context: None,
            free: false,
        })
    }

    /// The cost of `usage` in micro-dollars, rounded once to the nearest micro-dollar (halves up):
    /// each category's tokens times its rate, summed in picodollars (`u128`); reasoning is inside
    /// `output` and billed there. Saturates, never wraps. Zero for a free model.
    pub fn cost(&self, usage: &TokenUsage) -> i64 {
        if self.free {
            return 0;
        }
        let rates = self.rates(usage.prompt_tokens());
        let pico = [
            (usage.input, rates.input),
            (usage.cache_read, rates.cache_read),
            (usage.cache_write_5m, rates.cache_write_5m),
            (usage.cache_write_1h, rates.cache_write_1h),
            (usage.output, rates.output),
        ]
        .into_iter()
        .try_fold(0u128, |sum, (tokens, rate)| sum.checked_add(mul(tokens, rate)))
        .unwrap_or(u128::MAX);
        let micros = pico.saturating_add(500_000) / 1_000_000;
        i64::try_from(micros).unwrap_or(i64::MAX)
    }

    /// The dearest rate any input token can be billed at, over every category and tier, in micro-dollars
    /// per million tokens: what admission reserves per prompt token.
    pub fn max_input_micros_per_million(&self) -> u64 {
        self.tiers().map(|r| r.dearest_input()).max().unwrap_or(0)
    }

    /// The dearest rate an output token can be billed at, over every tier.
    pub fn max_output_micros_per_million(&self) -> u64 {
        self.tiers().map(|r| r.output).max().unwrap_or(0)
    }

    /// The most a request of `prompt_tokens` input and at most `max_output_tokens` output can cost, in
    /// micro-dollars, rounded up: every prompt token at the dearest input rate, every output token at the
    /// dearest output rate. Never below [`Price::cost`] of such a request. Saturates.
    pub fn worst_case_micros(&self, prompt_tokens: u64, max_output_tokens: u64) -> i64 {
        let pico = mul(prompt_tokens, self.max_input_micros_per_million())
            .saturating_add(mul(max_output_tokens, self.max_output_micros_per_million()));
        let micros = pico.div_ceil(1_000_000);
        i64::try_from(micros).unwrap_or(i64::MAX)
    }

    /// The rates for a request of `prompt` input tokens.
    fn rates(&self, prompt: u64) -> Rates {
        match self.long_context {
            Some(long) if prompt > long.above => long.rates(),
            _ => self.base_rates(),
        }
    }

    fn base_rates(&self) -> Rates {
        Rates {
            input: self.input,
            cache_read: self.cached_input.unwrap_or(self.input),
            cache_write_5m: self.cache_write_5m.unwrap_or(self.input),
            cache_write_1h: self.cache_write_1h.unwrap_or(self.input),
            output: self.output,
        }
    }

    fn tiers(&self) -> impl Iterator<Item = Rates> {
        std::iter::once(self.base_rates()).chain(self.long_context.map(|l| l.rates()))
    }
}

impl LongContext {
    fn rates(&self) -> Rates {
        Rates {
            input: self.input,
            cache_read: self.cached_input.unwrap_or(self.input),
            cache_write_5m: self.cache_write_5m.unwrap_or(self.input),
            cache_write_1h: self.cache_write_1h.unwrap_or(self.input),
            output: self.output,
        }
    }
}

fn mul(tokens: u64, price: u64) -> u128 {
    // Cannot overflow: both factors are below 2^64.
    u128::from(tokens) * u128::from(price)
}

impl TryFrom<RawPrice> for Price {
    type Error = PriceError;

    fn try_from(raw: RawPrice) -> Result<Self, Self::Error> {
        let error = |key: &str, reason: &str| PriceError {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if raw.free {
            let priced = [
                raw.input,
                raw.output,
                raw.cached_input,
                raw.cache_write_5m,
                raw.cache_write_1h,
            ]
            .iter()
            .any(Option::is_some)
                || raw.long_context.is_some();
            if priced {
                return Err(error("free", "a free model has no prices; remove them or `free`"));
            }
            return Ok(Self::FREE);
        }
        let input = raw
            .input
            .ok_or_else(|| error("input", "missing (or set `free = true`)"))?;
        let output = raw
            .output
            .ok_or_else(|| error("output", "missing (or set `free = true`)"))?;
        let long_context = raw
            .long_context
            .map(|long| {
                Ok::<_, PriceError>(LongContext {
                    above: long.above,
                    input: micros_per_million("long_context.input", long.input)?,
                    output: micros_per_million("long_context.output", long.output)?,
                    cached_input: optional("long_context.cached_input", long.cached_input)?,
                    cache_write_5m: optional("long_context.cache_write_5m", long.cache_write_5m)?,
                    cache_write_1h: optional("long_context.cache_write_1h", long.cache_write_1h)?,
                })
            })
            .transpose()?;
        Ok(Self {
            cache_write_5m: optional("cache_write_5m", raw.cache_write_5m)?,
            cache_write_1h: optional("cache_write_1h", raw.cache_write_1h)?,
            long_context,
            ..Self::from_usd_per_million(input, output, raw.cached_input)?
        })
    }
}

fn optional(key: &str, usd: Option<f64>) -> Result<Option<u64>, PriceError> {
    usd.map(|v| micros_per_million(key, v)).transpose()
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

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.free {
            return f.write_str("free");
        }
        let usd = |micros: u64| micros as f64 / MICROS;
        write!(f, "${}/M in, ${}/M out", usd(self.input), usd(self.output))?;
        for (name, rate) in [
            ("cached", self.cached_input),
            ("5m cache write", self.cache_write_5m),
            ("1h cache write", self.cache_write_1h),
        ] {
            if let Some(rate) = rate {
                write!(f, ", ${}/M {name}", usd(rate))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, cache_read: u64, cache_write_5m: u64, cache_write_1h: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input,
            cache_read,
            cache_write_5m,
            cache_write_1h,
            output,
            reasoning: 0,
        }
    }

    fn sonnet() -> Price {
        // $3 in, $15 out, $0.30 cache reads, $3.75 5-minute writes, $6 1-hour writes; over 200K prompt
        // tokens $6 / $22.50 with $0.60 reads, $7.50 and $12 writes.
        toml::from_str::<Price>(
            "input = 3\noutput = 15\ncached_input = 0.3\ncache_write_5m = 3.75\ncache_write_1h = 6\n\
             long_context = { above = 200000, input = 6, output = 22.5, cached_input = 0.6, \
             cache_write_5m = 7.5, cache_write_1h = 12 }",
        )
        .unwrap()
    }

    #[test]
    fn every_category_at_its_own_rate() {
        let price = sonnet();
        // 1000 uncached, 2000 read, 3000 5m writes, 4000 1h writes, 500 output:
        // 1000*3 + 2000*0.3 + 3000*3.75 + 4000*6 + 500*15 = 3000 + 600 + 11250 + 24000 + 7500 micro.
        assert_eq!(price.cost(&usage(1000, 2000, 3000, 4000, 500)), 46_350);
        // Reasoning is inside output: it adds nothing on its own.
        let with_reasoning = TokenUsage {
            reasoning: 400,
            ..usage(0, 0, 0, 0, 500)
        };
        assert_eq!(price.cost(&with_reasoning), 7_500);
        // Over 200K input tokens (every category counts), the whole request at the long rates.
        assert_eq!(
            price.cost(&usage(100_000, 50_000, 50_001, 0, 0)),
            600_000 + 30_000 + 375_008
        );
    }

    #[test]
    fn categories_without_a_rate_are_billed_as_input() {
        let price = Price::from_usd_per_million(2.0, 8.0, None).unwrap();
        assert_eq!(price.cost(&usage(1, 2, 3, 4, 0)), 20);
        assert_eq!(price.max_input_micros_per_million(), 2_000_000);
    }

    #[test]
    fn rounding_is_once_per_request_and_saturates() {
        let mini = Price::from_usd_per_million(0.15, 0.6, Some(0.075)).unwrap();
        // 10 input tokens: 1.5 micro -> 2 (half up); 3: 0.45 -> 0; 7 read + 3 input: 0.975 -> 1.
        assert_eq!(mini.cost(&usage(10, 0, 0, 0, 0)), 2);
        assert_eq!(mini.cost(&usage(3, 0, 0, 0, 0)), 0);
        assert_eq!(mini.cost(&usage(3, 7, 0, 0, 0)), 1);
        let huge = usage(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(sonnet().cost(&huge), i64::MAX);
        assert_eq!(sonnet().worst_case_micros(u64::MAX, u64::MAX), i64::MAX);
    }

    #[test]
    fn the_worst_case_takes_the_dearest_rates_and_rounds_up() {
        let price = sonnet();
        assert_eq!(price.max_input_micros_per_million(), 12_000_000);
        assert_eq!(price.max_output_micros_per_million(), 22_500_000);
        // 1000 prompt tokens at $12/M and 100 output at $22.50/M: 12_000 + 2_250 micro.
        assert_eq!(price.worst_case_micros(1000, 100), 14_250);
        // A fraction of a micro-dollar rounds up: a reservation never falls short.
        let mini = Price::from_usd_per_million(0.15, 0.6, None).unwrap();
        assert_eq!(mini.worst_case_micros(1, 0), 1);
        assert_eq!(mini.worst_case_micros(0, 0), 0);
        // Never below the real cost of any split of the same request.
        for split in [
            usage(1000, 0, 0, 0, 100),
            usage(0, 0, 0, 1000, 100),
            usage(250, 250, 250, 250, 100),
        ] {
            assert!(price.cost(&split) <= price.worst_case_micros(1000, 100), "{split:?}");
        }
    }

    #[test]
    fn free_models() {
        let free: Price = toml::from_str("free = true").unwrap();
        assert_eq!(free, Price::FREE);
        assert_eq!(free.cost(&usage(1_000_000, 0, 0, 0, 1_000_000)), 0);
        assert_eq!(free.worst_case_micros(1_000_000, 1_000_000), 0);
        assert_eq!(free.to_string(), "free");
        let both = toml::from_str::<Price>("free = true\ninput = 1\noutput = 1").unwrap_err();
        assert!(both.to_string().contains("free"), "{both}");
        let missing = toml::from_str::<Price>("output = 1").unwrap_err();
        assert!(missing.to_string().contains("input"), "{missing}");
    }

    #[test]
    fn deserializes_from_the_override_shape() {
        #[derive(Debug, Deserialize)]
        struct Deployment {
            price: Price,
        }
        let d: Deployment = toml::from_str("price = { input = 0.4, output = 1.6, cached_input = 0.1 }").unwrap();
        assert_eq!(d.price.input, 400_000);
        assert_eq!(d.price.cached_input, Some(100_000));
        assert_eq!((d.price.cache_write_5m, d.price.free), (None, false));
        assert!(toml::from_str::<Deployment>("price = { input = 0.4 }").is_err());
        assert!(toml::from_str::<Deployment>("price = { input = 0.4, output = 1, extra = 1 }").is_err());
        let e = toml::from_str::<Deployment>("price = { input = 1, output = 1, cache_write_1h = -2 }").unwrap_err();
        assert!(e.to_string().contains("cache_write_1h"), "{e}");
        assert!(sonnet().to_string().contains("$6/M 1h cache write"), "{}", sonnet());
    }
}
