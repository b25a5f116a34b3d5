use std::sync::Arc;
use std::time::Duration;

use super::*;

fn budget(rpm: Option<u64>, tpm: Option<u64>) -> Arc<dyn RateBudget> {
    LocalBudgets::new().rate(
        "key",
        Limits {
            rpm,
            tpm,
            max_in_flight: None,
        },
    )
}

async fn take(budget: &Arc<dyn RateBudget>, tokens: u64) -> Result<Reservation, Refusal> {
    Reservation::take(budget, tokens).await
}

#[tokio::test(start_paused = true)]
async fn tokens_refill_continuously_and_waits_are_exact() {
    let budget = budget(None, Some(600));
    let held = take(&budget, 600).await.unwrap();
    assert_eq!(
        take(&budget, 100).await.unwrap_err(),
        Refusal::Wait(Duration::from_secs(10)),
        "600 per minute refills 10 per second"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let second = take(&budget, 100).await.unwrap();
    assert_eq!(take(&budget, 700).await.unwrap_err(), Refusal::TooLarge);
    held.settle(600);
    second.settle(100);
}

#[tokio::test(start_paused = true)]
async fn settling_gives_back_the_unused_part_and_charges_overruns() {
    let budget = budget(None, Some(1000));
    take(&budget, 800).await.unwrap().settle(300);
    assert_eq!(budget.view().remaining_tokens, Some(700));
    take(&budget, 700).await.unwrap().settle(900);
    assert_eq!(budget.view().remaining_tokens, Some(0), "in debt, shown as zero");
    // 1,000 a minute refills 16.7 a second: the 200 of debt and one more token take 12.06 s.
    assert_eq!(
        take(&budget, 1).await.unwrap_err(),
        Refusal::Wait(Duration::from_secs_f64(201.0 * 60.0 / 1000.0))
    );
    tokio::time::advance(Duration::from_secs_f64(12.06)).await;
    assert!(take(&budget, 1).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_absurd_overrun_is_at_most_an_hour_of_debt() {
    let budget = budget(None, Some(1000));
    take(&budget, 10).await.unwrap().settle(u64::MAX);
    // An hour of refill, and the token asked for.
    let Refusal::Wait(wait) = take(&budget, 1).await.unwrap_err() else {
        panic!("a wait");
    };
    assert!(
        wait > Duration::from_secs(3599) && wait <= Duration::from_secs(3661),
        "{wait:?}"
    );
    tokio::time::advance(wait).await;
    assert!(take(&budget, 1).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn cancelling_gives_everything_back() {
    let budget = budget(Some(1), Some(100));
    take(&budget, 100).await.unwrap().cancel();
    assert!(take(&budget, 100).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_reservation_frees_its_slot_but_keeps_its_tokens() {
    let budget = LocalBudgets::new().rate(
        "key",
        Limits {
            rpm: None,
            tpm: Some(100),
            max_in_flight: Some(1),
        },
    );
    let reservation = take(&budget, 60).await.unwrap();
    assert!(
        matches!(take(&budget, 10).await, Err(Refusal::Wait(_))),
        "one in flight"
    );
    drop(reservation);
    assert_eq!(budget.view().in_flight, 0);
    assert_eq!(budget.view().remaining_tokens, Some(40));
}

#[tokio::test(start_paused = true)]
async fn a_cooldown_blocks_until_the_retry_time_then_lifts_by_itself() {
    let budget = budget(None, None);
    budget.cool_down(Some(Duration::from_secs(3)), Backoff::default());
    assert_eq!(
        take(&budget, 1).await.unwrap_err(),
        Refusal::Wait(Duration::from_secs(3))
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(take(&budget, 1).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_time_is_clamped_to_an_hour() {
    let budget = budget(None, None);
    let pause = budget.cool_down(Some(Duration::from_secs(u64::MAX / 2)), Backoff::default());
    assert_eq!(pause, MAX_COOLDOWN);
    assert_eq!(budget.view().cooldown_ms, Some(3_600_000));
}

#[tokio::test(start_paused = true)]
async fn backoff_without_a_retry_time_grows_and_stays_capped() {
    let budget = budget(None, None);
    let backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };
    for strike in 0..10u32 {
        let pause = budget.cool_down(None, backoff);
        let ceiling = Duration::from_secs(1u64 << strike.min(3));
        assert!(pause <= ceiling, "strike {strike}: {pause:?} > {ceiling:?}");
    }
    budget.succeeded();
}

#[tokio::test(start_paused = true)]
async fn the_vendors_headers_tighten_but_never_loosen() {
    let budget = budget(Some(100), Some(10_000));
    budget.learn_remaining(Some(3), Some(50_000));
    let view = budget.view();
    assert_eq!(view.remaining_requests, Some(3));
    assert_eq!(view.remaining_tokens, Some(10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_overrun() {
    let budget = budget(Some(1_000), Some(10_000));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { Reservation::take(&budget, 100).await.ok() })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        if let Some(reservation) = task.await.unwrap() {
            granted.push(reservation);
        }
    }
    // 10,000 tokens hold exactly 100 reservations of 100 (refill over the test is a few tokens).
    assert!((100..=101).contains(&granted.len()), "{}", granted.len());
}

#[tokio::test(start_paused = true)]
async fn one_name_is_one_budget_until_its_limits_change() {
    let backend = LocalBudgets::new();
    let limits = Limits {
        rpm: Some(2),
        ..Limits::default()
    };
    let first = backend.rate("tenant/a", limits);
    let _held = take(&first, 0).await.unwrap();
    let again = backend.rate("tenant/a", limits);
    assert_eq!(again.view().remaining_requests, Some(1), "shared");
    let changed = backend.rate(
        "tenant/a",
        Limits {
            rpm: Some(5),
            ..Limits::default()
        },
    );
    assert_eq!(changed.view().remaining_requests, Some(5), "new limits start afresh");
}

// === Spend ===

const MAY: Period = Period(1_777_593_600);
const JUNE: Period = Period(1_780_272_000);

#[tokio::test]
async fn spend_holds_the_worst_case_until_settled() {
    let backend = LocalBudgets::new();
    let spend = backend.spend("tenant/a");
    let cap = Some(10_000);
    let first = SpendReservation::take(&spend, MAY, cap, 6_000).await.unwrap();
    assert_eq!(
        SpendReservation::take(&spend, MAY, cap, 6_000).await.unwrap_err(),
        OverBudget { committed: 6_000 },
        "the first request's worst case is held"
    );
    first.settle(1_000);
    assert_eq!(spend.spent(MAY), 1_000);
    let second = SpendReservation::take(&spend, MAY, cap, 9_000).await.unwrap();
    assert_eq!(second.micros(), 9_000);
    drop(second);
    assert_eq!(spend.spent(MAY), 10_000, "dropped unsettled: what was held is charged");
    assert!(
        SpendReservation::take(&spend, MAY, cap, 0).await.is_ok(),
        "a free request is never refused"
    );
    assert!(SpendReservation::take(&spend, MAY, cap, 1).await.is_err());
}

#[tokio::test]
async fn a_new_period_starts_at_zero_and_late_settlements_stay_in_theirs() {
    let backend = LocalBudgets::new();
    let spend = backend.spend("tenant/a");
    assert!(spend.seed(MAY, 7_000).await);
    assert!(!spend.seed(MAY, 1).await, "seeded once per period");
    let late = SpendReservation::take(&spend, MAY, Some(10_000), 2_000).await.unwrap();
    let june = SpendReservation::take(&spend, JUNE, Some(10_000), 9_000).await.unwrap();
    late.settle(2_000);
    june.settle(500);
    assert_eq!(spend.spent(JUNE), 500, "May's cost does not count in June");
    assert_eq!(spend.spent(MAY), 0, "May is over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spend_never_exceeds_the_cap() {
    let backend = LocalBudgets::new();
    let spend = backend.spend("tenant/a");
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let spend = Arc::clone(&spend);
            tokio::spawn(async move {
                let held = SpendReservation::take(&spend, MAY, Some(10_000), 900).await.ok()?;
                tokio::task::yield_now().await;
                held.settle(900);
                Some(())
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += u32::from(task.await.unwrap().is_some());
    }
    assert_eq!(granted, 11);
    assert_eq!(spend.spent(MAY), 9_900);
}

/// A fake budget: the three required methods.
#[derive(Debug, Default)]
struct Unlimited;

impl RateBudget for Unlimited {
    fn reserve(&self, _tokens: u64) -> Reserve<'_, Result<(), Refusal>> {
        Reserve::ready(Ok(()))
    }

    fn settle(&self, _reserved: u64, _end: End) {}

    fn available_in(&self, _tokens: u64) -> Result<Duration, Refusal> {
        Ok(Duration::ZERO)
    }
}

#[tokio::test]
async fn a_budget_needs_three_methods() {
    let budget: Arc<dyn RateBudget> = Arc::new(Unlimited);
    take(&budget, u64::MAX).await.unwrap().settle(1);
    assert_eq!(budget.view(), BudgetView::default());
}
