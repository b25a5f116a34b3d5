//! Budget reservation: `RateBudget::reserve` then `RateBudget::settle` on an in-memory budget, the two
//! locked steps every request takes on its key. Single-threaded, then two threads hammering one budget (the contended case)
//! beside two threads on two budgets (the same work without contention). Results: `docs/benchmarks.md`.
//!
//! `cargo bench -p sluice-budget --bench budget -- --warm-up-time 1 --measurement-time 2`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant as StdInstant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_budget::{BudgetBackend, End, Limits, LocalBudgets, RateBudget};

/// Budgets high enough never to refuse, so every call takes the full path (refill, check, take).
const LIMITS: Limits = Limits {
    rpm: Some(1_000_000_000),
    tpm: Some(1_000_000_000_000),
    max_in_flight: None,
};

/// One request's budget work: reserve a ~500-token prompt plus a 64-token cap, settle with what was used.
fn reserve_and_settle(budget: &Arc<dyn RateBudget>) {
    budget.reserve(black_box(564)).now().unwrap().unwrap();
    budget.settle(564, End::Used(black_box(520)));
}

/// Runs `iters` operations split over two threads, on `budgets` (one shared, or one each), and returns
/// the wall time: per operation, that is half the single-thread cost if nothing is shared.
fn two_threads(iters: u64, budgets: [&Arc<dyn RateBudget>; 2]) -> Duration {
    let start = Barrier::new(3);
    std::thread::scope(|scope| {
        for (i, budget) in budgets.into_iter().enumerate() {
            let start = &start;
            let share = iters / 2 + if i == 0 { iters % 2 } else { 0 };
            scope.spawn(move || {
                start.wait();
                for _ in 0..share {
                    reserve_and_settle(budget);
                }
            });
        }
        start.wait();
        let began = StdInstant::now();
        // The scope joins both threads before returning.
        began
    })
    .elapsed()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget");
    let backend = LocalBudgets::new();
    let limited = backend.rate("limited", LIMITS);
    group.bench_function("reserve_settle/single_thread", |b| {
        b.iter(|| reserve_and_settle(&limited))
    });
    let unlimited = backend.rate("unlimited", Limits::default());
    group.bench_function("reserve_settle/single_thread_no_limits", |b| {
        b.iter(|| reserve_and_settle(&unlimited))
    });
    let shared = backend.rate("shared", LIMITS);
    group.bench_function("reserve_settle/2_threads_one_budget", |b| {
        b.iter_custom(|iters| two_threads(iters, [&shared, &shared]))
    });
    let other = backend.rate("other", LIMITS);
    group.bench_function("reserve_settle/2_threads_two_budgets", |b| {
        b.iter_custom(|iters| two_threads(iters, [&shared, &other]))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
