//! What the simulated vendor bills a request, by category ([`TokenUsage`]), and the deterministic rules
//! that make its answers exercise every category:
//!
//! - **Automatic prompt caching** ([`SimCaching::Automatic`]: OpenAI, Gemini's implicit caching). A key
//!   remembers the prompts it sent, by prefixes of whole turns. A prompt of at least [`CACHE_MIN_TOKENS`]
//!   tokens reads from the cache the longest run of leading turns an earlier accepted request of the same
//!   key and model sent, counted as OpenAI counts it: the first 1024 tokens and then whole steps of
//!   [`CACHE_STEP_TOKENS`]; a prefix shorter than 1024 tokens reads nothing. So a conversation that
//!   resends its history past 1024 tokens has `cached_tokens` (`cachedContentTokenCount`) on its next
//!   turn, and a first request has none.
//! - **Explicit breakpoints** ([`SimCaching::Breakpoints`]: Anthropic's `cache_control`). The prompt up to
//!   the last breakpoint whose prefix the key sent before is read from the cache; each later breakpoint's
//!   part is written, with its breakpoint's lifetime (5-minute or 1-hour writes); the rest is uncached
//!   input. There is no minimum length and entries never expire, so the rule needs no clock.
//! - **Reasoning** ([`SimRequest::reasoning`]: OpenAI's o-series model names, Gemini with thinking asked
//!   for): the model reasons twice as many tokens as it answers ([`REASONING_PER_TOKEN`]), before its first
//!   visible token. Reasoning is output; it is never sent and does not count against the client's cap.
//!
//! The input of an accepted request is billed when it is accepted. Its output is billed whole at once for
//! a complete answer; for a stream, the reasoning and the visible tokens actually sent (a stream the client
//! left, or that a fault cut, is billed for what went out before that), when the stream ends or is dropped.

use std::collections::HashSet;

use sluice_api::TokenUsage;

use crate::conversation::{SimCacheTtl, SimCaching, SimRequest};

/// The shortest prompt automatic caching reads from the cache, in tokens.
pub const CACHE_MIN_TOKENS: u64 = 1024;
/// Past the first [`CACHE_MIN_TOKENS`], cached prefixes count in steps of this many tokens.
pub const CACHE_STEP_TOKENS: u64 = 128;
/// Reasoning tokens per visible token, for a model that reasons.
pub const REASONING_PER_TOKEN: u64 = 2;
/// Prefixes a key remembers; past this the memory starts over (a vendor's cache evicts too).
const REMEMBERED_PREFIXES: usize = 1 << 16;

/// The prompt prefixes one key sent, by hash.
#[derive(Debug, Default)]
pub(crate) struct PromptCache {
    seen: HashSet<u64>,
}

/// How a request's prompt splits into categories, and what accepting it teaches the cache.
#[derive(Debug)]
pub(crate) struct PromptBill {
    /// The input categories (`output` and `reasoning` are zero).
    pub(crate) input: TokenUsage,
    remember: Vec<u64>,
}

impl PromptCache {
    /// How `request`'s prompt would be billed now. Nothing is remembered until [`PromptCache::accept`].
    pub(crate) fn bill(&self, request: &SimRequest) -> PromptBill {
        let prompt = request.prompt_tokens();
        let mut input = TokenUsage::new(prompt, 0);
        let mut remember = Vec::new();
        match &request.caching {
            SimCaching::Off => {}
            SimCaching::Automatic => {
                let turns = request.turns.len();
                remember.extend((1..=turns).map(|n| request.prefix_hash(n)));
                let seen = (1..=turns).rev().find(|&n| self.seen.contains(&remember[n - 1]));
                let cached = seen.map_or(0, |n| request.prefix_tokens(n));
                if cached >= CACHE_MIN_TOKENS {
                    let read = CACHE_MIN_TOKENS + (cached - CACHE_MIN_TOKENS) / CACHE_STEP_TOKENS * CACHE_STEP_TOKENS;
                    input.cache_read = read;
                }
            }
            SimCaching::Breakpoints(breakpoints) => {
                let mut breakpoints = breakpoints.clone();
                breakpoints.sort_by_key(|b| b.turns);
                breakpoints.dedup_by_key(|b| b.turns);
                let hashes: Vec<u64> = breakpoints.iter().map(|b| request.prefix_hash(b.turns)).collect();
                let hit = hashes.iter().rposition(|h| self.seen.contains(h));
                let mut cached = hit.map_or(0, |at| request.prefix_tokens(breakpoints[at].turns));
                input.cache_read = cached;
                for breakpoint in &breakpoints[hit.map_or(0, |at| at + 1)..] {
                    let through = request.prefix_tokens(breakpoint.turns).max(cached);
                    let written = through - cached;
                    match breakpoint.ttl {
                        SimCacheTtl::FiveMinutes => input.cache_write_5m += written,
                        SimCacheTtl::OneHour => input.cache_write_1h += written,
                    }
                    cached = through;
                }
                remember = hashes;
            }
        }
        // What is neither read nor written is plain input.
        input.input = prompt.saturating_sub(input.cache_read + input.cache_write());
        PromptBill { input, remember }
    }

    /// Remembers the prefixes of an accepted request.
    pub(crate) fn accept(&mut self, bill: PromptBill) {
        if self.seen.len() + bill.remember.len() > REMEMBERED_PREFIXES {
            self.seen.clear();
        }
        self.seen.extend(bill.remember);
    }
}

/// The reasoning a model that reasons spends on an answer of `visible` tokens.
pub(crate) fn reasoning(request: &SimRequest, visible: u64) -> u64 {
    if request.reasoning {
        visible.saturating_mul(REASONING_PER_TOKEN)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{SimBreakpoint, SimRole, SimTurn};

    fn request(turns: &[(SimRole, usize)], caching: SimCaching) -> SimRequest {
        SimRequest {
            model: "m".to_owned(),
            turns: turns
                .iter()
                .enumerate()
                .map(|(i, (role, chars))| SimTurn::text(*role, format!("{i}{}", "x".repeat(chars - 1))))
                .collect(),
            caching,
            ..SimRequest::default()
        }
    }

    fn seen(cache: &mut PromptCache, request: &SimRequest) -> TokenUsage {
        let bill = cache.bill(request);
        let input = bill.input;
        cache.accept(bill);
        assert_eq!(input.prompt_tokens(), request.prompt_tokens(), "{input:?}");
        input
    }

    #[test]
    fn automatic_caching_reads_repeated_prefixes_past_1024_tokens() {
        let mut cache = PromptCache::default();
        // A 4000-character system prompt (1004 tokens with its turn) and a question.
        let first = request(&[(SimRole::System, 4000), (SimRole::User, 40)], SimCaching::Automatic);
        assert_eq!(seen(&mut cache, &first).cache_read, 0, "nothing was sent before");
        // The same prompt again: the whole prompt is a repeat, 1018 tokens, under the minimum.
        assert_eq!(seen(&mut cache, &first).cache_read, 0);
        // A longer conversation repeating both turns: 1018 tokens of repeated prefix, still under 1024.
        let mut longer = first.clone();
        longer.turns.push(SimTurn::text(SimRole::Assistant, "y".repeat(2010)));
        longer.turns.push(SimTurn::text(SimRole::User, "z".repeat(40)));
        assert_eq!(seen(&mut cache, &longer).cache_read, 0);
        // The next turn repeats four turns, 1539 tokens: read as 1024 + 4 * 128.
        let mut next = longer.clone();
        next.turns.push(SimTurn::text(SimRole::User, "w".repeat(40)));
        let input = seen(&mut cache, &next);
        assert_eq!(next.prefix_tokens(4), 1539);
        assert_eq!(input.cache_read, 1024 + 4 * 128);
        assert_eq!(input.input, next.prompt_tokens() - 1536);
        // Another model shares nothing.
        let other = SimRequest {
            model: "n".to_owned(),
            ..next.clone()
        };
        assert_eq!(seen(&mut cache, &other).cache_read, 0);
        // Caching off reads nothing.
        let off = SimRequest {
            caching: SimCaching::Off,
            ..next
        };
        assert_eq!(seen(&mut cache, &off), TokenUsage::new(off.prompt_tokens(), 0));
    }

    #[test]
    fn breakpoints_write_then_read_by_lifetime() {
        let mut cache = PromptCache::default();
        let breakpoints = vec![
            SimBreakpoint {
                turns: 1,
                ttl: SimCacheTtl::OneHour,
            },
            SimBreakpoint {
                turns: 2,
                ttl: SimCacheTtl::FiveMinutes,
            },
        ];
        let first = request(
            &[(SimRole::System, 400), (SimRole::User, 200), (SimRole::User, 40)],
            SimCaching::Breakpoints(breakpoints.clone()),
        );
        // 104 tokens written for an hour, 54 for five minutes, 14 + 3 uncached.
        let input = seen(&mut cache, &first);
        assert_eq!(
            (
                input.cache_write_1h,
                input.cache_write_5m,
                input.cache_read,
                input.input
            ),
            (104, 54, 0, 17)
        );
        // Again: both prefixes are read.
        let input = seen(&mut cache, &first);
        assert_eq!((input.cache_read, input.cache_write()), (158, 0));
        // A new second turn: the first breakpoint is read, the second written again.
        let mut changed = first.clone();
        changed.turns[1].text.push('!');
        let input = seen(&mut cache, &changed);
        assert_eq!(
            (input.cache_read, input.cache_write_1h, input.cache_write_5m),
            (104, 0, 55)
        );
        // No breakpoints: nothing cached.
        let none = SimRequest {
            caching: SimCaching::Breakpoints(Vec::new()),
            ..first
        };
        assert_eq!(seen(&mut cache, &none).prompt_tokens(), none.prompt_tokens());
        assert_eq!(seen(&mut cache, &none).input, none.prompt_tokens());
    }
}
