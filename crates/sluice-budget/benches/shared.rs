//! What sharing budgets through Redis costs one request, next to keeping them in memory: the budget work
//! of the full path (a tenant's rate and dollar budget, the upstream key's rate: reserve, then settle) at a
//! steady 1,000 requests a second for 10 s, on `LocalBudgets` and on `RedisBudgets` (the Redis at
//! 127.0.0.1:6379, or `SLUICE_BENCH_REDIS`). Reported: the process's CPU per request (background writes,
//! heartbeat and subscription included) and the latency of each request's budget work (p50, p99, max).
//! Results: `docs/benchmarks.md`, "Shared budgets (Redis)".
//!
//! `cargo bench -p sluice-budget --bench shared`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, reason = "benchmark")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_budget::{
    BudgetBackend, Limits, LocalBudgets, Period, RedisBudgets, RedisSettings, Reservation, SpendReservation,
};

const RATE: u32 = 1_000;
const SECONDS: u32 = 10;

/// Limits high enough never to refuse, as in the end-to-end full path.
const KEY: Limits = Limits {
    rpm: Some(1_000_000_000),
    tpm: Some(1_000_000_000_000),
    max_in_flight: None,
};

struct Figures {
    cpu_per_request: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// One request's budget work, as the pipeline and the router do it.
async fn request(backend: &dyn BudgetBackend, period: Period) {
    let tenant_rate = backend.rate("tenant/bench", KEY);
    let spend = backend.spend("tenant/bench");
    let key = backend.rate("key/bench/0/simulator#0", KEY);
    let rate = Reservation::take(&tenant_rate, 564).await.unwrap();
    let held = SpendReservation::take(&spend, period, Some(1_000_000_000_000), 2_000)
        .await
        .unwrap();
    let on_key = Reservation::take(&key, 564).await.unwrap();
    on_key.settle(520);
    rate.settle(520);
    held.settle(1_800);
}

async fn run(backend: Arc<dyn BudgetBackend>) -> Figures {
    let period = Period(1_780_272_000);
    // Warm: connections, leases, scripts loaded.
    for _ in 0..2_000 {
        request(backend.as_ref(), period).await;
    }
    let mut latencies = Vec::with_capacity((RATE * SECONDS) as usize);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu = cpu_time::ProcessTime::now();
    for _ in 0..RATE * SECONDS {
        tick.tick().await;
        let began = Instant::now();
        request(backend.as_ref(), period).await;
        latencies.push(began.elapsed());
    }
    // The writes a request leaves behind are part of its cost.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let spent = cpu.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        cpu_per_request: spent / (RATE * SECONDS),
        p50: at(0.50),
        p99: at(0.99),
        max: latencies[latencies.len() - 1],
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("SLUICE_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    runtime.block_on(async {
        let idle = {
            // The process's CPU doing nothing for as long, so it can be told apart from the requests'.
            let cpu = cpu_time::ProcessTime::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            cpu.elapsed()
        };
        let local = run(Arc::new(LocalBudgets::new())).await;
        let redis = RedisBudgets::start(RedisSettings {
            url,
            prefix: format!("sluice-bench-budget-{}", std::process::id()),
            ..RedisSettings::default()
        })
        .unwrap();
        assert!(redis.wait_connected(Duration::from_secs(5)).await, "Redis answers");
        let redis = run(Arc::new(redis)).await;
        println!(
            "budget work of one full-path request at {RATE} req/s for {SECONDS} s (idle process: {idle:?} CPU per s)"
        );
        println!("| budgets | CPU/req µs | p50 µs | p99 µs | max µs |");
        println!("|---|--:|--:|--:|--:|");
        for (name, f) in [("in memory", &local), ("Redis", &redis)] {
            println!(
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
                f.cpu_per_request.as_secs_f64() * 1e6,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6,
                f.max.as_secs_f64() * 1e6
            );
        }
        println!(
            "Redis - memory: CPU/req {:+.1} µs, p99 {:+.1} µs",
            (redis.cpu_per_request.as_secs_f64() - local.cpu_per_request.as_secs_f64()) * 1e6,
            (redis.p99.as_secs_f64() - local.p99.as_secs_f64()) * 1e6
        );
    });
}
