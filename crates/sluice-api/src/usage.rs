//! The gateway's one record of what an upstream call consumed: tokens by the category vendors bill them
//! in, and where the counts came from.
//!
//! OpenAI's `usage` object (the [`Usage`] wire type) has no counter for cache writes, which Anthropic bills
//! at 1.25 times (5-minute lifetime) or 2 times (1-hour lifetime) the input price, and folds cached reads
//! into `prompt_tokens`. Adapters therefore map each vendor's usage into [`TokenUsage`] once; budgets,
//! prices and the ledger read it, and clients still get usage in the shape their protocol uses
//! ([`TokenUsage::to_openai`]).

use serde::{Deserialize, Serialize};

use crate::chat::{CompletionTokensDetails, PromptTokensDetails, Usage};

/// Tokens of one upstream call by billing category. Every field is a count the vendor bills at its own
/// price, except `reasoning`, which is already inside `output` (vendors bill reasoning as output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Input tokens billed at the full input price: neither read from nor written to a prompt cache.
    #[serde(default)]
    pub input: u64,
    /// Input tokens read from the vendor's prompt cache.
    #[serde(default)]
    pub cache_read: u64,
    /// Input tokens written to the prompt cache with a 5-minute lifetime.
    #[serde(default)]
    pub cache_write_5m: u64,
    /// Input tokens written to the prompt cache with a 1-hour lifetime.
    #[serde(default)]
    pub cache_write_1h: u64,
    /// Generated tokens, reasoning included.
    #[serde(default)]
    pub output: u64,
    /// Reasoning ("thinking") tokens, a part of `output`.
    #[serde(default)]
    pub reasoning: u64,
}

/// Where a usage record's counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// The vendor reported them.
    Vendor,
    /// The gateway counted them: the prompt with its tokenizer, the completion from what passed through.
    Estimated,
    /// Nothing was consumed: the request never reached a vendor.
    #[default]
    None,
}

impl UsageSource {
    /// The stored and displayed name: `vendor`, `estimated` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vendor => "vendor",
            Self::Estimated => "estimated",
            Self::None => "none",
        }
    }

    /// The source named `name`, as [`UsageSource::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "vendor" => Some(Self::Vendor),
            "estimated" => Some(Self::Estimated),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// The most tokens of one category one request is recorded with: about a thousand times the largest
/// context window a vendor sells. A vendor (or whatever answers in its place) reporting more is not
/// believed: past this, sums, budgets' debts and waits, costs and the ledger's 64-bit columns and rollups
/// could overflow.
pub const MAX_REQUEST_TOKENS: u64 = 1 << 32;

impl TokenUsage {
    /// Every category at most [`MAX_REQUEST_TOKENS`]: how a vendor's report is taken, so no later
    /// arithmetic on it can overflow.
    pub fn clamped(&self) -> Self {
        let at_most = |n: u64| n.min(MAX_REQUEST_TOKENS);
        Self {
            input: at_most(self.input),
            cache_read: at_most(self.cache_read),
            cache_write_5m: at_most(self.cache_write_5m),
            cache_write_1h: at_most(self.cache_write_1h),
            output: at_most(self.output),
            reasoning: at_most(self.reasoning).min(at_most(self.output)),
        }
    }

    /// Usage of `input` uncached prompt tokens and `output` generated tokens.
    pub fn new(input: u64, output: u64) -> Self {
        Self {
            input,
            output,
            ..Self::default()
        }
    }

    /// Every input token, whatever its cache status: what OpenAI calls `prompt_tokens`.
    pub fn prompt_tokens(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write_5m)
            .saturating_add(self.cache_write_1h)
    }

    /// Input and output together: what a tokens-per-minute budget counts.
    pub fn total(&self) -> u64 {
        self.prompt_tokens().saturating_add(self.output)
    }

    /// Cache writes of either lifetime.
    pub fn cache_write(&self) -> u64 {
        self.cache_write_5m.saturating_add(self.cache_write_1h)
    }

    /// The sum of two records, category by category (attempts of one request, say). Saturating: counts
    /// come from vendors.
    pub fn plus(&self, other: &Self) -> Self {
        Self {
            input: self.input.saturating_add(other.input),
            cache_read: self.cache_read.saturating_add(other.cache_read),
            cache_write_5m: self.cache_write_5m.saturating_add(other.cache_write_5m),
            cache_write_1h: self.cache_write_1h.saturating_add(other.cache_write_1h),
            output: self.output.saturating_add(other.output),
            reasoning: self.reasoning.saturating_add(other.reasoning),
        }
    }

    /// OpenAI's usage object read as categories: `prompt_tokens` includes the cached reads that
    /// `prompt_tokens_details.cached_tokens` reports, and `completion_tokens` includes the reasoning that
    /// `completion_tokens_details.reasoning_tokens` reports. Inconsistent details (more cached than prompt)
    /// are clamped, never wrapped.
    pub fn from_openai(usage: &Usage) -> Self {
        let cached = usage
            .prompt_tokens_details
            .map_or(0, |d| d.cached_tokens)
            .min(usage.prompt_tokens);
        let reasoning = usage
            .completion_tokens_details
            .map_or(0, |d| d.reasoning_tokens)
            .min(usage.completion_tokens);
        Self {
            input: usage.prompt_tokens - cached,
            cache_read: cached,
            cache_write_5m: 0,
            cache_write_1h: 0,
            output: usage.completion_tokens,
            reasoning,
        }
    }

    /// The usage object an OpenAI client expects: cache writes count as prompt tokens, cached reads and
    /// reasoning appear in the details when there are any.
    pub fn to_openai(&self) -> Usage {
        let mut usage = Usage::new(self.prompt_tokens(), self.output);
        if self.cache_read > 0 {
            usage.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: self.cache_read,
            });
        }
        if self.reasoning > 0 {
            usage.completion_tokens_details = Some(CompletionTokensDetails {
                reasoning_tokens: self.reasoning,
            });
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_usage_splits_cached_reads_and_reasoning() {
        // OpenAI's documented example: 2006 prompt tokens of which 1920 cached; 300 completion tokens of
        // which 256 reasoning.
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}"#,
        )
        .unwrap();
        let record = TokenUsage::from_openai(&usage);
        assert_eq!(
            record,
            TokenUsage {
                input: 86,
                cache_read: 1920,
                cache_write_5m: 0,
                cache_write_1h: 0,
                output: 300,
                reasoning: 256,
            }
        );
        assert_eq!(record.prompt_tokens(), 2006);
        assert_eq!(record.total(), 2306);
        assert_eq!(record.to_openai(), usage_without_audio(&usage));
    }

    fn usage_without_audio(usage: &Usage) -> Usage {
        let mut plain = Usage::new(usage.prompt_tokens, usage.completion_tokens);
        plain.prompt_tokens_details = usage.prompt_tokens_details;
        plain.completion_tokens_details = usage.completion_tokens_details;
        plain
    }

    #[test]
    fn inconsistent_details_are_clamped_and_sums_saturate() {
        let mut usage = Usage::new(10, 5);
        usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: 50 });
        usage.completion_tokens_details = Some(CompletionTokensDetails { reasoning_tokens: 9 });
        let record = TokenUsage::from_openai(&usage);
        assert_eq!((record.input, record.cache_read, record.reasoning), (0, 10, 5));
        let huge = TokenUsage::new(u64::MAX, u64::MAX);
        assert_eq!(huge.total(), u64::MAX);
        assert_eq!(huge.plus(&huge).input, u64::MAX);
    }

    #[test]
    fn cache_writes_are_prompt_tokens_for_openai_clients() {
        let record = TokenUsage {
            input: 3,
            cache_read: 100,
            cache_write_5m: 200,
            cache_write_1h: 400,
            output: 7,
            reasoning: 0,
        };
        let usage = record.to_openai();
        assert_eq!(usage.prompt_tokens, 703);
        assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, 100);
        assert!(usage.completion_tokens_details.is_none());
        assert_eq!(record.cache_write(), 600);
    }

    #[test]
    fn sources_round_trip_by_name() {
        for source in [UsageSource::Vendor, UsageSource::Estimated, UsageSource::None] {
            assert_eq!(UsageSource::parse(source.as_str()), Some(source));
        }
        assert_eq!(UsageSource::parse("guessed"), None);
    }
}
