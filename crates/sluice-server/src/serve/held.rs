//! Flush consolidation for a client connection: the writes of one answer that follow each other within a
//! scheduler round leave in one system call.
//!
//! A stream's events reach the gateway one read at a time when the vendor is slow and several to a read
//! when it is fast, and hyper flushes whenever the answer's body has nothing more ready. Events that
//! arrive one per poll would each leave in a `writev` of their own, each waking the client, about 5 us of
//! kernel time apiece on loopback. Here a flush after fresh data is deferred by one scheduler round
//! (the task wakes itself and yields), so the events that arrive meanwhile join the same write; a round
//! with nothing new writes at once. The first write after a request arrives (an answer's head, or a whole
//! complete answer) is never held, so only a stream's later chunks wait, for one round each at most.
//! Bounded: at most [`HOLD_MAX_BYTES`] held and [`HOLD_MAX_ROUNDS`] rounds deferred in a row.

use std::io::IoSlice;
use std::task::Context;

/// The most bytes held before they are written regardless.
pub(super) const HOLD_MAX_BYTES: usize = 64 * 1024;

/// The most flushes deferred in a row while fresh data keeps coming.
pub(super) const HOLD_MAX_ROUNDS: u8 = 32;

/// A held buffer's capacity kept between answers; a larger one is let go once written.
const KEPT_CAPACITY: usize = 16 * 1024;

/// Bytes accepted from hyper and not yet written to the socket.
#[derive(Debug, Default)]
pub(super) struct HeldWrites {
    buf: Vec<u8>,
    /// How much of `buf` the socket has taken.
    sent: usize,
    /// Data arrived since the last deferred flush.
    fresh: bool,
    /// Flushes deferred in a row.
    rounds: u8,
    /// Something was written since the last bytes were read: later writes belong to the same answer.
    wrote_since_read: bool,
}

impl HeldWrites {
    /// Request bytes arrived: the next write starts an answer and goes out at once.
    pub(super) fn read_some(&mut self) {
        self.wrote_since_read = false;
    }

    /// Whether `len` more bytes are held rather than written now.
    pub(super) fn holds(&self, len: usize) -> bool {
        self.wrote_since_read && self.pending().len() + len <= HOLD_MAX_BYTES
    }

    /// Takes `bufs` into the held buffer; returns how many bytes that is.
    pub(super) fn hold(&mut self, bufs: &[IoSlice<'_>]) -> usize {
        let before = self.buf.len();
        for buf in bufs {
            self.buf.extend_from_slice(buf);
        }
        let added = self.buf.len() - before;
        self.fresh |= added > 0;
        added
    }

    /// Whether a flush should wait one round; if so, `cx`'s task is woken to come back after it.
    pub(super) fn defer_flush(&mut self, cx: &Context<'_>) -> bool {
        if self.pending().is_empty() || !self.fresh || self.rounds >= HOLD_MAX_ROUNDS {
            return false;
        }
        self.fresh = false;
        self.rounds += 1;
        cx.waker().wake_by_ref();
        true
    }

    /// The bytes still to write.
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// The socket took `n` bytes of [`Self::pending`].
    pub(super) fn sent(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.buf.len() {
            if self.buf.capacity() > KEPT_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.sent = 0;
            self.fresh = false;
            self.rounds = 0;
        }
    }

    /// Something reached the socket.
    pub(super) fn wrote(&mut self) {
        self.wrote_since_read = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (Arc::clone(&counter), Waker::from(Arc::clone(&counter)))
    }

    #[test]
    fn an_answers_first_write_is_not_held_and_its_later_ones_are() {
        let mut held = HeldWrites::default();
        assert!(
            !held.holds(100),
            "nothing written since the request: the head goes out at once"
        );
        held.wrote();
        assert!(held.holds(100));
        held.read_some();
        assert!(!held.holds(100), "the next request's answer starts afresh");
    }

    #[test]
    fn a_flush_waits_one_round_per_fresh_write_and_no_longer() {
        let (count, waker) = waker();
        let cx = Context::from_waker(&waker);
        let mut held = HeldWrites::default();
        held.wrote();
        assert_eq!(held.hold(&[IoSlice::new(b"data: 1\n\n")]), 9);
        assert!(held.defer_flush(&cx), "fresh data: wait a round for more");
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "and come back after it");
        assert!(!held.defer_flush(&cx), "nothing new in that round: write now");
        held.hold(&[IoSlice::new(b"data: 2\n\n"), IoSlice::new(b"data: 3\n\n")]);
        assert!(held.defer_flush(&cx));
        assert_eq!(held.pending(), b"data: 1\n\ndata: 2\n\ndata: 3\n\n");
        held.sent(8);
        assert_eq!(held.pending(), b"\ndata: 2\n\ndata: 3\n\n");
        held.sent(19);
        assert!(held.pending().is_empty());
        assert!(!held.defer_flush(&cx), "nothing held: nothing to wait for");
    }

    #[test]
    fn fresh_data_defers_at_most_the_round_limit_and_the_byte_limit() {
        let (_, waker) = waker();
        let cx = Context::from_waker(&waker);
        let mut held = HeldWrites::default();
        held.wrote();
        let mut deferred = 0;
        for _ in 0..100 {
            held.hold(&[IoSlice::new(b"x")]);
            if !held.defer_flush(&cx) {
                break;
            }
            deferred += 1;
        }
        assert_eq!(deferred, usize::from(HOLD_MAX_ROUNDS));
        assert!(!held.holds(HOLD_MAX_BYTES), "past the byte limit a write is not held");
    }
}
