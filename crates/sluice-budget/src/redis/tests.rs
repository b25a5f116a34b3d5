//! The scripts and the backend against the real Redis at 127.0.0.1:6379 (each test under its own key
//! prefix), and a private `redis-server` for the outage.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::scripts::Scripts;
use super::*;
use crate::{End, Period, Refusal, Reservation, SpendReservation};

const URL: &str = "redis://127.0.0.1:6379";

fn prefix(test: &str) -> String {
    format!("sluice-test:{}:{test}:{}", std::process::id(), fastrand::u32(..))
}

fn settings(test_prefix: &str) -> RedisSettings {
    RedisSettings {
        url: URL.to_owned(),
        prefix: test_prefix.to_owned(),
        timeout: Duration::from_millis(200),
        heartbeat: Duration::from_millis(200),
        lease: Duration::from_millis(300),
        ..RedisSettings::default()
    }
}

async fn connection() -> MultiplexedConnection {
    redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis at 127.0.0.1:6379 is needed for these tests")
}

async fn connected(settings: RedisSettings) -> RedisBudgets {
    let budgets = RedisBudgets::start(settings).unwrap();
    assert!(budgets.wait_connected(Duration::from_secs(5)).await, "Redis answers");
    budgets
}

type RateReply = (i64, i64, i64, i64, String, String);

/// Runs the rate script: rpm, tpm, give, want, need, learnt, cooldown.
#[allow(clippy::too_many_arguments, reason = "the script's arguments")]
async fn rate(
    c: &mut MultiplexedConnection,
    key: &str,
    limits: (i64, i64),
    give: (f64, f64),
    want: (u64, u64),
    need: (u64, u64),
    learnt: (i64, i64),
    cool_ms: u64,
) -> RateReply {
    Scripts::new()
        .rate
        .key(key)
        .arg(limits.0)
        .arg(limits.1)
        .arg(give.0)
        .arg(give.1)
        .arg(want.0)
        .arg(want.1)
        .arg(need.0)
        .arg(need.1)
        .arg(learnt.0)
        .arg(learnt.1)
        .arg(cool_ms)
        .arg(60_000)
        .arg(format!("{key}:channel"))
        .arg("message")
        .arg("test")
        .arg(1_500)
        .arg(0)
        .arg(0)
        .invoke_async(c)
        .await
        .unwrap()
}

fn level(text: &str) -> f64 {
    text.parse().unwrap()
}

#[tokio::test]
async fn the_rate_script_grants_leases_takes_back_debt_and_waits_exactly() {
    let mut c = connection().await;
    let key = format!("{}:rate", prefix("rate-script"));
    let limits = (60, 6_000);
    // A fresh bucket is full; a lease of 5 requests and 500 tokens for a need of 1 and 100.
    let (r, t, wait, cool, left_r, left_t) =
        rate(&mut c, &key, limits, (0.0, 0.0), (5, 500), (1, 100), (-1, -1), 0).await;
    assert_eq!((r, t, wait, cool), (5, 500, 0, 0));
    assert!((55.0..55.1).contains(&level(&left_r)), "{left_r}");
    assert!((5_500.0..5_510.0).contains(&level(&left_t)), "{left_t}");
    // The lease comes back with 5,000 tokens of debt: 500 held plus an overrun.
    let (.., left_t) = rate(&mut c, &key, limits, (0.0, -5_000.0), (0, 0), (0, 0), (-1, -1), 0).await;
    assert!((500.0..520.0).contains(&level(&left_t)), "{left_t}");
    // 6,000 a minute refills 100 a second: 1,000 tokens need about 5 s more.
    let (r, t, wait, ..) = rate(&mut c, &key, limits, (0.0, 0.0), (1, 1_000), (1, 1_000), (-1, -1), 0).await;
    assert_eq!((r, t), (0, 0), "nothing granted");
    assert!((4_700..=5_000).contains(&wait), "{wait} ms");
    // Giving back never fills past the limit.
    let (.., left_r, left_t) = rate(&mut c, &key, limits, (100.0, 100_000.0), (0, 0), (0, 0), (-1, -1), 0).await;
    assert_eq!((level(&left_r), level(&left_t)), (60.0, 6_000.0));
    // The vendor's remaining tightens; other limits start the bucket afresh.
    let (.., left_r, _) = rate(&mut c, &key, limits, (0.0, 0.0), (0, 0), (0, 0), (3, -1), 0).await;
    assert_eq!(level(&left_r), 3.0);
    let (.., left_r, left_t) = rate(&mut c, &key, (10, -1), (0.0, 0.0), (0, 0), (0, 0), (-1, -1), 0).await;
    assert_eq!(
        (level(&left_r), level(&left_t)),
        (10.0, 0.0),
        "new limits; tokens unlimited"
    );
}

/// Runs the rate script as `replica` for requests only (rpm 60, one a second): `give` back, say it then
/// holds `held` outside the bucket (counted for `counts_ms`), and want that many. Returns what was granted
/// and the requests left.
async fn rate_as(
    c: &mut MultiplexedConnection,
    key: &str,
    replica: &str,
    (give, held, want): (f64, f64, u64),
    counts_ms: u64,
) -> (i64, f64) {
    let reply: RateReply = Scripts::new()
        .rate
        .key(key)
        .arg(60)
        .arg(-1)
        .arg(give)
        .arg(0)
        .arg(want)
        .arg(0)
        .arg(u64::from(want > 0))
        .arg(0)
        .arg(-1)
        .arg(-1)
        .arg(0)
        .arg(60_000)
        .arg(format!("{key}:channel"))
        .arg("message")
        .arg(replica)
        .arg(counts_ms)
        .arg(held)
        .arg(0)
        .invoke_async(c)
        .await
        .unwrap();
    (reply.0, level(&reply.4))
}

#[tokio::test]
async fn the_bucket_does_not_refill_into_the_room_a_lease_left() {
    let mut c = connection().await;
    let key = format!("{}:rate", prefix("lease-room"));
    // Replica a leases 10 of a full bucket of 60 (refilled at 1 a second).
    assert_eq!(rate_as(&mut c, &key, "a", (0.0, 0.0, 10), 10_000).await, (10, 50.0));
    // A vendor that saw none of the lease is still full, at 60: the bucket may not refill past 60 - 10
    // while the lease is out, or the lease and the refill could both be spent.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (_, left) = rate_as(&mut c, &key, "b", (0.0, 0.0, 0), 10_000).await;
    assert_eq!(left, 50.0, "refilled into the lease's room");
    // Replica a closes its lease with 9 unused, its one request answered: the bucket holds them again, up
    // to the limit.
    let (_, left) = rate_as(&mut c, &key, "a", (9.0, 0.0, 0), 10_000).await;
    assert!((59.0..=60.0).contains(&left), "{left}");
}

/// What `replicas.rs` met as one vendor 429 in about four runs with every core busy: a replica spends its
/// lease, and before the vendor has counted those requests (a first connection, a loaded machine) it
/// asks for the next lease. Its first lease's room must stay out of the bucket until the requests were
/// answered, or the bucket refills from the grant while the vendor, which has seen nothing, stands full.
#[tokio::test]
async fn requests_on_their_way_to_the_vendor_keep_their_room_out_of_the_bucket() {
    let mut c = connection().await;
    let key = format!("{}:rate", prefix("in-transit"));
    assert_eq!(rate_as(&mut c, &key, "a", (0.0, 0.0, 10), 10_000).await, (10, 50.0));
    // All 10 were sent and none answered yet: a holds them, and 5 more.
    assert_eq!(rate_as(&mut c, &key, "a", (0.0, 10.0, 5), 10_000).await, (5, 45.0));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (_, left) = rate_as(&mut c, &key, "b", (0.0, 0.0, 0), 10_000).await;
    assert_eq!(left, 45.0, "refilled while the vendor had counted nothing");
    // The 10 were answered (the vendor counted them) and the 5 unused go back: from now on it refills.
    let (_, left) = rate_as(&mut c, &key, "a", (5.0, 0.0, 0), 10_000).await;
    assert!((50.0..50.1).contains(&left), "{left}");
}

/// What a replica holds caps the refill until its holding lapses, not only at the next call: the refill
/// between two calls is capped piece by piece.
#[tokio::test]
async fn a_holding_that_lapses_between_calls_caps_the_refill_until_it_lapsed() {
    let mut c = connection().await;
    let key = format!("{}:rate", prefix("lapse"));
    let before = std::time::Instant::now();
    // a holds 10 for 1 s (and is then gone); b calls 1.5 s later.
    assert_eq!(rate_as(&mut c, &key, "a", (0.0, 0.0, 10), 1_000).await, (10, 50.0));
    let held = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let called = std::time::Instant::now();
    let (_, left) = rate_as(&mut c, &key, "b", (0.0, 0.0, 0), 1_000).await;
    // Refilled only after a's holding lapsed: at most the time between the calls less that second, where
    // refilling the whole time between them would give at least 1.5 more.
    let most = (std::time::Instant::now() - before).as_secs_f64() - 1.0;
    let least = (called - held).as_secs_f64() - 1.0;
    assert!(
        (50.0 + least - 0.01..=50.0 + most + 0.01).contains(&left),
        "{left} left, {least:.3} to {most:.3} s of refill"
    );
}

#[tokio::test]
async fn the_rate_script_keeps_a_cooldown_and_announces_it() {
    let mut c = connection().await;
    let key = format!("{}:rate", prefix("cool-script"));
    let mut pubsub = redis::Client::open(URL).unwrap().get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{key}:channel")).await.unwrap();
    let (.., cool, _, _) = rate(&mut c, &key, (60, -1), (0.0, 0.0), (0, 0), (0, 0), (-1, -1), 2_000).await;
    assert!((1_990..=2_000).contains(&cool), "{cool}");
    let (r, _, wait, cool, ..) = rate(&mut c, &key, (60, -1), (0.0, 0.0), (1, 0), (1, 0), (-1, -1), 0).await;
    assert_eq!(r, 0, "nothing granted while cooling");
    assert!(wait > 1_900 && wait == cool, "{wait} {cool}");
    let message = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::StreamExt::next(&mut pubsub.on_message()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "message");
}

#[tokio::test]
async fn the_spend_scripts_hold_within_the_cap_and_drop_a_dead_replicas_holds() {
    let c = connection().await;
    let base = prefix("spend-script");
    let (key, replicas) = (format!("{base}:spend"), format!("{base}:replicas"));
    let scripts = Scripts::new();
    let beat = |id: &'static str| {
        let (scripts, replicas) = (&scripts, replicas.clone());
        let mut c = c.clone();
        async move {
            scripts
                .heartbeat
                .key(replicas)
                .arg(id)
                .arg(10_000_000)
                .invoke_async::<u32>(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(beat("a").await, 1);
    assert_eq!(beat("b").await, 2);
    let seed = |micros: i64| {
        let (scripts, key) = (&scripts, key.clone());
        let mut c = c.clone();
        async move {
            scripts
                .spend_seed
                .key(key)
                .arg(micros)
                .arg(3_600)
                .invoke_async::<(i64, i64)>(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(seed(100).await, (1, 100));
    assert_eq!(seed(999).await, (0, 100), "seeded once");
    let hold = |replica: &'static str, micros: i64, want: i64| {
        let (scripts, key, replicas) = (&scripts, key.clone(), replicas.clone());
        let mut c = c.clone();
        async move {
            scripts
                .spend_reserve
                .key(key)
                .key(replicas)
                .arg(1_000)
                .arg(micros)
                .arg(replica)
                .arg(0)
                .arg(3_600)
                .arg(10_000_000)
                .arg(want)
                .invoke_async::<(i64, i64, i64)>(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(hold("a", 500, 500).await, (500, 600, 100));
    assert_eq!(
        hold("b", 500, 900).await,
        (0, 600, 100),
        "100 spent and 500 held: 500 more is over"
    );
    assert_eq!(
        hold("b", 100, 250).await,
        (250, 850, 100),
        "an allowance: what was wanted"
    );
    assert_eq!(
        hold("b", 100, 900).await,
        (150, 1_000, 100),
        "what was left, more than the need"
    );
    let settle = |replica: &'static str, release: i64, add: i64| {
        let (scripts, key) = (&scripts, key.clone());
        let mut c = c.clone();
        async move {
            scripts
                .spend_settle
                .key(key)
                .arg(release)
                .arg(add)
                .arg(replica)
                .arg(0)
                .arg(3_600)
                .invoke_async::<i64>(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(settle("a", 500, 120).await, 220);
    assert_eq!(hold("a", 380, 380).await, (380, 1_000, 220), "220 spent, 400 held by b");
    // A replica that stopped beating: its holds no longer count.
    redis::cmd("ZADD")
        .arg(&replicas)
        .arg(0)
        .arg("b")
        .query_async::<i64>(&mut c.clone())
        .await
        .unwrap();
    assert_eq!(hold("a", 0, 0).await, (0, 600, 220), "b's 400 dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_grant_more_than_the_limit_together() {
    let prefix = prefix("two-replicas");
    let (a, b) = (connected(settings(&prefix)).await, connected(settings(&prefix)).await);
    let limits = Limits {
        rpm: Some(40),
        tpm: Some(4_000),
        max_in_flight: None,
    };
    let budgets = [a.rate("key/m/0/k", limits), b.rate("key/m/0/k", limits)];
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let budget = Arc::clone(&budgets[i % 2]);
            tokio::spawn(async move { Reservation::take(&budget, 50).await.ok().map(|r| r.settle(50)) })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += u32::from(task.await.unwrap().is_some());
    }
    // 40 requests a minute, refilled by well under one over the test.
    assert!((39..=41).contains(&granted), "{granted}");
    assert!(budgets[0].view().in_flight == 0 && budgets[1].view().in_flight == 0);
    // The refusals name an honest wait: one request every 1.5 s.
    match budgets[0].reserve(1).await {
        Err(Refusal::Wait(wait)) => assert!(wait <= Duration::from_millis(1_500), "{wait:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_leases_go_back_and_overruns_are_charged() {
    let prefix = prefix("leases-back");
    let (a, b) = (connected(settings(&prefix)).await, connected(settings(&prefix)).await);
    let limits = Limits {
        rpm: None,
        tpm: Some(6_000),
        max_in_flight: None,
    };
    let (on_a, on_b) = (a.rate("t", limits), b.rate("t", limits));
    // A takes a lease and uses 100 of it, then 2,000 more than it reserved.
    on_a.reserve(100).await.unwrap();
    on_a.reached(100);
    on_a.settle(100, End::Used(2_100));
    // After A's lease expires and goes back, B sees what A used: about 3,900 left.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(on_b.reserve(3_800).await.is_ok());
    assert!(
        matches!(on_b.reserve(400).await, Err(Refusal::Wait(_))),
        "the overrun was charged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_on_one_replica_holds_the_key_on_the_other_at_once() {
    let prefix = prefix("cooldown");
    let (a, b) = (connected(settings(&prefix)).await, connected(settings(&prefix)).await);
    let limits = Limits {
        rpm: Some(1_000),
        ..Limits::default()
    };
    let (on_a, on_b) = (a.rate("key/m/0/k", limits), b.rate("key/m/0/k", limits));
    Reservation::take(&on_b, 0).await.unwrap().settle(0);
    let started = tokio::time::Instant::now();
    on_a.cool_down(Some(Duration::from_secs(3)), crate::Backoff::default());
    let mut cooled = false;
    while started.elapsed() < Duration::from_secs(1) {
        if on_b.view().cooldown_ms.is_some() {
            cooled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cooled, "B heard of it within a second");
    assert!(matches!(on_b.reserve(0).await, Err(Refusal::Wait(w)) if w > Duration::from_secs(2)));
    // A replica that starts later reads it from the shared bucket with its first lease.
    let c = connected(settings(&prefix)).await;
    let on_c = c.rate("key/m/0/k", limits);
    assert!(matches!(on_c.reserve(0).await, Err(Refusal::Wait(w)) if w > Duration::from_secs(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_through_two_replicas_stays_within_the_cap_and_is_seeded_once() {
    let prefix = prefix("spend");
    let (a, b) = (connected(settings(&prefix)).await, connected(settings(&prefix)).await);
    let period = Period(1_780_272_000);
    let (on_a, on_b) = (a.spend("tenant/t"), b.spend("tenant/t"));
    assert!(on_a.seed(period, 1_000).await);
    assert!(!on_b.seed(period, 5_000).await, "seeded once for the cluster");
    assert_eq!(on_b.spent(period), 1_000);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let spend = Arc::clone(if i % 2 == 0 { &on_a } else { &on_b });
            tokio::spawn(async move {
                let held = SpendReservation::take(&spend, period, Some(10_000), 900).await.ok()?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                held.settle(800);
                Some(())
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += u32::from(task.await.unwrap().is_some());
    }
    assert!((10..=11).contains(&granted), "{granted}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spent = 1_000 + 800 * i64::from(granted);
    assert!(spent <= 10_000);
    let key = format!("{prefix}:spend:tenant/t:{}", period.0);
    let stored: i64 = redis::cmd("HGET")
        .arg(&key)
        .arg("spent")
        .query_async(&mut connection().await)
        .await
        .unwrap();
    assert_eq!(stored, spent, "every settlement written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_reach_the_other_replicas_not_the_sender() {
    let prefix = prefix("announce");
    let (a, b) = (connected(settings(&prefix)).await, connected(settings(&prefix)).await);
    let (mut heard_a, mut heard_b) = (a.announcements().unwrap(), b.announcements().unwrap());
    // The subscription is made beside the connection: wait for it before announcing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.announce(Announcement::KeyRevoked(Arc::from("key_1")));
    let heard = tokio::time::timeout(Duration::from_secs(2), heard_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard, Announcement::KeyRevoked(Arc::from("key_1")));
    assert!(heard_a.try_recv().is_err(), "not back to the sender");
    RedisBudgets::announce_once(&settings(&prefix), Announcement::TenantsChanged)
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(2), heard_a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard, Announcement::TenantsChanged);
}

#[tokio::test]
async fn an_unreachable_redis_never_fails_a_reservation() {
    let budgets = RedisBudgets::start(RedisSettings {
        url: "redis://127.0.0.1:1".to_owned(),
        ..settings(&prefix("unreachable"))
    })
    .unwrap();
    assert!(!budgets.wait_connected(Duration::from_millis(300)).await);
    let status = budgets.status();
    assert!(!status.shared && status.backend == "redis", "{status:?}");
    let rate = budgets.rate(
        "k",
        Limits {
            rpm: Some(2),
            ..Limits::default()
        },
    );
    // Nobody was ever seen: this replica has the whole limit.
    assert!(rate.reserve(0).now().unwrap().is_ok(), "answered without waiting");
    assert!(rate.reserve(0).now().unwrap().is_ok());
    assert!(matches!(rate.reserve(0).now().unwrap(), Err(Refusal::Wait(_))));
    let spend = budgets.spend("tenant/t");
    assert!(spend.seed(Period(0), 10).await);
    assert!(spend.reserve(Period(0), Some(100), 50).now().unwrap().is_ok());
    assert!(spend.reserve(Period(0), Some(100), 50).now().unwrap().is_err());
}

/// A `redis-server` of this test's own on a free port, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for the outage tests");
        Self {
            port,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_divides_the_limits_by_the_replicas_then_shares_again() {
    let port = free_port();
    let mut server = PrivateRedis::start(port);
    let settings = RedisSettings {
        url: format!("redis://127.0.0.1:{}", server.port),
        ..settings(&prefix("outage"))
    };
    let (a, b) = (connected(settings.clone()).await, connected(settings.clone()).await);
    // Both heartbeats seen by both.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.status().replicas, 2);
    let limits = Limits {
        rpm: Some(60),
        ..Limits::default()
    };
    let rate = a.rate("k", limits);
    for _ in 0..10 {
        Reservation::take(&rate, 0).await.unwrap().settle(0);
    }
    server.stop();
    // The first call after the outage notices it, within the bounded wait, and still answers.
    let started = tokio::time::Instant::now();
    let mut served = 0;
    loop {
        match rate.reserve(0).await {
            Ok(()) => {
                served += 1;
                rate.reached(0);
                rate.settle(0, End::Used(0));
            }
            Err(Refusal::Wait(_)) => break,
            Err(Refusal::TooLarge) => panic!("never too large"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let status = a.status();
    assert!(!status.shared && status.fallbacks == 1, "{status:?}");
    // Its share: half of what was left (about 50), plus what was left of its lease.
    assert!((24..=33).contains(&served), "{served}");
    assert_eq!(rate.view().rpm, Some(60));
    let _restarted = PrivateRedis::start(port);
    let mut shared = false;
    for _ in 0..50 {
        if a.status().shared {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shared, "shared again once Redis is back");
    // The restarted Redis lost the bucket: it starts full, less what this replica used over its share.
    assert!(Reservation::take(&rate, 0).await.is_ok());
    drop(b);
}
