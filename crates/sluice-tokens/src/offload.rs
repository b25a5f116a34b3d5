//! Counting from async code without stalling the executor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sluice_api::ChatCompletionRequest;
use tokio::sync::Semaphore;

use crate::chat::{count_chat, upper_bound};
use crate::encoding::{Encoding, Exactness, TokenCount};

/// Prompts whose [`upper_bound`] is at most this many tokens (about this many bytes of text) are counted
/// inline: about 15 us for English, 0.3 ms for the slowest input measured (random Unicode, 0.07 s of CPU
/// per MB; see `docs/benchmarks.md`), about what an async task may hold its thread. Larger prompts are
/// worth the hand-off to the blocking pool (about 75 us of latency on a busy 2-core machine).
pub const INLINE_MAX: u64 = 4 * 1024;

/// Blocking threads counting at once: one fewer than the machine's cores, at least one. Counting is pure CPU
/// work: as many counts as cores would take every core from the executor, and `/healthz` and every other
/// request would wait on the OS scheduler. Requests beyond them wait their turn without a thread.
pub fn blocking_permits() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Counts made inline and on the blocking pool since the process started.
static INLINE: AtomicU64 = AtomicU64::new(0);
static OFFLOADED: AtomicU64 = AtomicU64::new(0);

/// How many counts ran inline and how many on the blocking pool, for `/metrics`.
pub fn counting_stats() -> (u64, u64) {
    (INLINE.load(Ordering::Relaxed), OFFLOADED.load(Ordering::Relaxed))
}

fn blocking() -> &'static Semaphore {
    static BLOCKING: OnceLock<Semaphore> = OnceLock::new();
    BLOCKING.get_or_init(|| Semaphore::new(blocking_permits()))
}

/// [`count_chat`] for async callers: a small prompt (see [`INLINE_MAX`]) is counted inline, a larger one on
/// tokio's blocking pool, at most [`blocking_permits`] at a time, so that one huge or hostile request cannot
/// hold an executor thread. A prompt whose encoding is not loaded yet also goes to the pool, since loading
/// takes tens of milliseconds.
///
/// Should the blocking task not complete (the runtime shutting down), the answer is [`upper_bound`] as an
/// estimate: never less than the real count.
pub async fn count_chat_offloaded(request: Arc<ChatCompletionRequest>, encoding: impl Into<Encoding>) -> TokenCount {
    let encoding = encoding.into();
    let bound = upper_bound(&request, encoding);
    count_offloaded(bound, encoding, move || count_chat(&request, encoding)).await
}

/// Runs `count`, whose answer is at most `bound` tokens, as [`count_chat_offloaded`] counts a prompt: inline
/// when it is small and its encoding is loaded, else on the bounded blocking pool; `bound` as an estimate if
/// the pool cannot finish it.
pub async fn count_offloaded(
    bound: u64,
    encoding: Encoding,
    count: impl FnOnce() -> TokenCount + Send + 'static,
) -> TokenCount {
    if bound <= INLINE_MAX && encoding.name.is_loaded() {
        INLINE.fetch_add(1, Ordering::Relaxed);
        return count();
    }
    OFFLOADED.fetch_add(1, Ordering::Relaxed);
    let fallback = TokenCount {
        tokens: bound,
        exactness: Exactness::Estimate,
    };
    // The semaphore is never closed.
    let Ok(permit) = blocking().acquire().await else {
        return fallback;
    };
    // The permit moves into the task: should this future be dropped, the count still holds its permit
    // until it ends, so no more than `blocking_permits()` counts ever run.
    let task = tokio::task::spawn_blocking(move || {
        let counted = count();
        drop(permit);
        counted
    });
    task.await.unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::EncodingName;
    use serde_json::json;

    fn request(content: &str) -> Arc<ChatCompletionRequest> {
        Arc::new(
            serde_json::from_value(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}))
                .unwrap(),
        )
    }

    #[test]
    fn the_future_can_move_between_threads() {
        fn assert_send<T: Send>(_: &T) {}
        let future = count_chat_offloaded(request("hi"), EncodingName::O200kBase);
        assert_send(&future);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn small_and_large_prompts_count_as_inline() {
        for content in ["hello there".to_owned(), "lorem ipsum dolor ".repeat(5000)] {
            let request = request(&content);
            for name in EncodingName::ALL {
                let offloaded = count_chat_offloaded(request.clone(), name).await;
                assert_eq!(offloaded, count_chat(&request, name));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_prompts_leave_the_executor_responsive() {
        // Large prompts queue for two blocking permits while a timer on the executor keeps ticking.
        let hostile = request(&"\u{10ffff}a\u{300} ".repeat(60_000));
        let counts: Vec<_> = (0..6)
            .map(|_| tokio::spawn(count_chat_offloaded(hostile.clone(), EncodingName::O200kBase)))
            .collect();
        let ticker = tokio::spawn(async {
            let mut ticks = 0;
            for _ in 0..5 {
                tokio::task::yield_now().await;
                ticks += 1;
            }
            ticks
        });
        assert_eq!(ticker.await.unwrap(), 5);
        let expected = count_chat(&hostile, EncodingName::O200kBase);
        for count in counts {
            assert_eq!(count.await.unwrap(), expected);
        }
    }
}
