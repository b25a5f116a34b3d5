//! One store suite, run against SQLite (a temporary file) and Postgres (a throwaway database on
//! 127.0.0.1:5432). The Postgres half fails when Postgres is unreachable, unless
//! `SLUICE_SKIP_POSTGRES_TESTS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[macro_use]
mod support;

suite!(
    migrate_twice,
    tenants,
    tenant_updates,
    keys,
    ledger_is_idempotent,
    spend_groups_and_ranges,
    tenant_spend_since,
    budget_alerts_fire_once,
    request_logs,
    writer_batches_and_flushes_on_shutdown,
    writer_flushes_on_interval,
    writer_spools_while_down_and_replays_once,
    writer_shutdown_while_down_spools_for_next_start,
    writer_rejects_what_it_cannot_write,
    grants_and_subscriptions,
    audit_log,
    allow_lists_become_grants,
);

mod cases {
    use std::time::Duration;

    use chrono::Utc;
    use secrecy::ExposeSecret;
    use sluice_store::{
        BudgetPeriod, FiredAlert, GroupBy, KeyHash, KeyState, LogMode, LogSettings, NO_KEY, NewTenant, RequestLog,
        SpendFilter, Store, StoreError, TenantChange, TokenUsage, UsageRow, UsageWriter, WriterConfig, looks_like_key,
    };

    use crate::support::{Harness, Kind, Outage, at, day, eventually, ledger_total, row, totals};

    /// Rows numbered `from..to`, spread over tenants, models, keys and two days.
    fn rows(prefix: &str, from: u64, to: u64) -> Vec<UsageRow> {
        (from..to)
            .map(|i| {
                let tenant = if i % 3 == 0 { "acme" } else { "globex" };
                let model = if i % 2 == 0 { "gpt-4o" } else { "gpt-4o-mini" };
                let key = if i % 5 == 0 { None } else { Some("key-a") };
                let when = if i % 4 == 0 {
                    "2026-03-01T10:00:00.123456Z"
                } else {
                    "2026-03-02T23:59:59.999999Z"
                };
                row(
                    &format!("{prefix}-{i}"),
                    tenant,
                    key,
                    model,
                    when,
                    100 + i,
                    10 + i,
                    Some(1_000 + i as i64),
                )
            })
            .collect()
    }

    // === Migrations ===

    pub async fn migrate_twice(h: &Harness) {
        let store = h.store().await;
        store.migrate().await.unwrap();
        // A second process opening the same database and migrating is fine too.
        let other = Store::open(&h.url).await.unwrap();
        other.migrate().await.unwrap();
        other.ping().await.unwrap();
        assert!(store.list_tenants().await.unwrap().is_empty());
        if h.kind == Kind::Sqlite {
            assert!(
                h.dir.join("db/store.db").exists(),
                "the SQLite file and its folder are created"
            );
        }
    }

    // === Tenants ===

    pub async fn tenants(h: &Harness) {
        let store = h.store().await;
        let alpha = store
            .create_tenant(&NewTenant {
                name: "alpha".into(),
                rpm: Some(600),
                tpm: Some(100_000),
                budget_micros: Some(25_500_000),
                budget_period: BudgetPeriod::Day,
                models: Some(vec!["gpt-4o".into(), "gpt-4o-mini".into()]),
                prompts: Some(vec![]),
            })
            .await
            .unwrap();
        let beta = store.create_tenant(&NewTenant::new("beta")).await.unwrap();
        assert_eq!(beta.budget_period, BudgetPeriod::Month);
        assert!(beta.models.is_none() && beta.allows_model("anything"));
        assert!(alpha.allows_model("gpt-4o") && !alpha.allows_model("o3") && !alpha.allows_prompt("x"));

        match store.create_tenant(&NewTenant::new("alpha")).await {
            Err(StoreError::DuplicateTenant(name)) => assert_eq!(name, "alpha"),
            other => panic!("expected a duplicate error, got {other:?}"),
        }
        assert!(matches!(
            store.create_tenant(&NewTenant::new("")).await,
            Err(StoreError::Invalid { .. })
        ));

        let listed = store.list_tenants().await.unwrap();
        assert_eq!(listed, vec![alpha.clone(), beta.clone()]);
        assert_eq!(store.tenant("alpha").await.unwrap(), Some(alpha));
        assert_eq!(store.tenant("gamma").await.unwrap(), None);
    }

    pub async fn tenant_updates(h: &Harness) {
        let store = h.store().await;
        let created = store
            .create_tenant(&NewTenant {
                rpm: Some(60),
                budget_micros: Some(5_000_000),
                models: Some(vec!["gpt-4o".into()]),
                ..NewTenant::new("alpha")
            })
            .await
            .unwrap();

        // Only what the change names changes; `Some(None)` lifts a limit.
        let changed = store
            .update_tenant(
                "alpha",
                &TenantChange {
                    tpm: Some(Some(40_000)),
                    budget_micros: Some(None),
                    budget_period: Some(BudgetPeriod::Day),
                    prompts: Some(Some(vec!["summarize".into()])),
                    ..TenantChange::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(changed.rpm, Some(60));
        assert_eq!(changed.tpm, Some(40_000));
        assert_eq!(changed.budget_micros, None);
        assert_eq!(changed.budget_period, BudgetPeriod::Day);
        assert_eq!(changed.models.as_deref(), Some(&["gpt-4o".to_owned()][..]));
        assert_eq!(changed.prompts.as_deref(), Some(&["summarize".to_owned()][..]));
        assert_eq!((changed.id, changed.created_at), (created.id, created.created_at));
        assert_eq!(store.tenant("alpha").await.unwrap(), Some(changed.clone()));

        let lifted = store
            .update_tenant(
                "alpha",
                &TenantChange {
                    rpm: Some(None),
                    models: Some(None),
                    ..TenantChange::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((lifted.rpm, lifted.models), (None, None));
        assert_eq!(lifted.tpm, Some(40_000));

        // Nothing to change reads the tenant back; bad values and unknown tenants are refused.
        assert_eq!(
            store.update_tenant("alpha", &TenantChange::default()).await.unwrap(),
            store.tenant("alpha").await.unwrap().unwrap()
        );
        let negative = TenantChange {
            budget_micros: Some(Some(-1)),
            ..TenantChange::default()
        };
        match store.update_tenant("alpha", &negative).await {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "budget_usd"),
            other => panic!("expected an invalid budget, got {other:?}"),
        }
        assert!(matches!(
            store.update_tenant("nobody", &TenantChange::default()).await,
            Err(StoreError::TenantNotFound(name)) if name == "nobody"
        ));
    }

    // === Keys ===

    pub async fn keys(h: &Harness) {
        let store = h.store().await;
        store.create_tenant(&NewTenant::new("alpha")).await.unwrap();
        store.create_tenant(&NewTenant::new("beta")).await.unwrap();

        let created = store.create_key("alpha", Some("ci"), None).await.unwrap();
        let plaintext = created.key.expose_secret().to_owned();
        assert!(looks_like_key(&plaintext));
        assert!(plaintext.starts_with(created.prefix.trim_end_matches('…')));
        assert!(
            !format!("{created:?}").contains(&plaintext),
            "the key must not show in Debug"
        );

        let found = store.lookup_key(&KeyHash::of(&plaintext)).await.unwrap().unwrap();
        assert_eq!(found.state, KeyState::Active);
        assert_eq!(found.key.id, created.id);
        assert_eq!(found.key.name.as_deref(), Some("ci"));
        assert_eq!(found.tenant.name, "alpha");
        assert_eq!(found.key.created_at, created.created_at);
        assert!(
            store
                .lookup_key(&KeyHash::of("sk-sluice-nope"))
                .await
                .unwrap()
                .is_none()
        );

        let expired = store
            .create_key("alpha", None, Some(Utc::now() - chrono::Duration::hours(1)))
            .await
            .unwrap();
        let expired_lookup = store
            .lookup_key(&KeyHash::of(expired.key.expose_secret()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(expired_lookup.state, KeyState::Expired);
        let later = store
            .create_key("beta", None, Some(Utc::now() + chrono::Duration::days(30)))
            .await
            .unwrap();

        assert!(matches!(
            store.create_key("gamma", None, None).await,
            Err(StoreError::TenantNotFound(_))
        ));

        let active = store.list_active_keys().await.unwrap();
        let mut ids: Vec<&str> = active.iter().map(|k| k.key.id.as_str()).collect();
        ids.sort_unstable();
        let mut expected = vec![created.id.as_str(), later.id.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        let alpha_key = active.iter().find(|k| k.key.id == created.id).unwrap();
        assert_eq!(alpha_key.hash, KeyHash::of(&plaintext));
        assert_eq!(alpha_key.key.tenant, "alpha");

        let listed = store.list_keys("alpha").await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].id, created.id);
        assert_eq!(listed[0].prefix, created.prefix);
        assert_eq!(listed[1].expires_at, expired.expires_at);
        assert!(matches!(
            store.list_keys("gamma").await,
            Err(StoreError::TenantNotFound(_))
        ));

        store.revoke_key(&created.id).await.unwrap();
        let revoked = store.lookup_key(&KeyHash::of(&plaintext)).await.unwrap().unwrap();
        assert_eq!(revoked.state, KeyState::Revoked);
        let first_revocation = revoked.key.revoked_at.unwrap();
        store.revoke_key(&created.id).await.unwrap();
        let again = store.lookup_key(&KeyHash::of(&plaintext)).await.unwrap().unwrap();
        assert_eq!(
            again.key.revoked_at,
            Some(first_revocation),
            "a second revoke keeps the first time"
        );
        assert!(matches!(
            store.revoke_key("no-such-key").await,
            Err(StoreError::KeyNotFound(_))
        ));

        let active: Vec<String> = store
            .list_active_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.key.id)
            .collect();
        assert_eq!(active, vec![later.id.clone()]);
    }

    // === Ledger ===

    pub async fn ledger_is_idempotent(h: &Harness) {
        let store = h.store().await;
        let r1 = row(
            "req-1",
            "acme",
            Some("k1"),
            "gpt-4o",
            "2026-03-01T12:00:00Z",
            100,
            20,
            Some(700),
        );
        let r2 = row(
            "req-2",
            "acme",
            Some("k1"),
            "gpt-4o",
            "2026-03-01T13:00:00Z",
            50,
            5,
            None,
        );
        let r3 = row(
            "req-3",
            "acme",
            None,
            "gpt-4o-mini",
            "2026-03-02T00:00:00Z",
            10,
            1,
            Some(3),
        );

        let first = store.insert_usage(&[r1.clone(), r2.clone()]).await.unwrap();
        assert_eq!((first.inserted, first.duplicates), (2, 0));
        // The same id again, even with other numbers, is ignored.
        let changed = UsageRow {
            usage: TokenUsage::new(9_999, 0),
            ..r1.clone()
        };
        let again = store.insert_usage(&[changed]).await.unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 1));
        // Repeated inside one batch: counted once.
        let twice = store.insert_usage(&[r3.clone(), r3.clone(), r2.clone()]).await.unwrap();
        assert_eq!((twice.inserted, twice.duplicates), (1, 2));
        assert_eq!(store.insert_usage(&[]).await.unwrap().inserted, 0);

        assert_eq!(ledger_total(&store).await, totals("all", &[r1, r2, r3]));
    }

    pub async fn spend_groups_and_ranges(h: &Harness) {
        let store = h.store().await;
        let data = [
            row(
                "a1",
                "acme",
                Some("k1"),
                "gpt-4o",
                "2026-03-01T00:00:00Z",
                100,
                10,
                Some(1_000),
            ),
            row(
                "a2",
                "acme",
                Some("k2"),
                "gpt-4o-mini",
                "2026-03-01T23:59:59.999999Z",
                200,
                20,
                Some(2_000),
            ),
            row(
                "a3",
                "acme",
                None,
                "gpt-4o",
                "2026-03-02T08:00:00Z",
                300,
                30,
                Some(3_000),
            ),
            row(
                "g1",
                "globex",
                Some("k3"),
                "gpt-4o",
                "2026-03-02T09:00:00Z",
                400,
                40,
                Some(4_000),
            ),
            row("g2", "globex", Some("k3"), "o3", "2026-03-03T10:00:00Z", 500, 50, None),
        ];
        // Written in two batches, as the writer would.
        store.insert_usage(&data[..2]).await.unwrap();
        store.insert_usage(&data[2..]).await.unwrap();
        let pick =
            |ids: &[&str]| -> Vec<UsageRow> { data.iter().filter(|r| ids.contains(&r.id.as_str())).cloned().collect() };

        let by_tenant = store.spend(&SpendFilter::new(GroupBy::Tenant)).await.unwrap();
        assert_eq!(
            by_tenant,
            vec![
                totals("acme", &pick(&["a1", "a2", "a3"])),
                totals("globex", &pick(&["g1", "g2"]))
            ]
        );

        let acme_models = store
            .spend(&SpendFilter::new(GroupBy::Model).tenant("acme"))
            .await
            .unwrap();
        assert_eq!(
            acme_models,
            vec![
                totals("gpt-4o", &pick(&["a1", "a3"])),
                totals("gpt-4o-mini", &pick(&["a2"]))
            ]
        );

        let by_day = store.spend(&SpendFilter::new(GroupBy::Day)).await.unwrap();
        assert_eq!(
            by_day,
            vec![
                totals("2026-03-01", &pick(&["a1", "a2"])),
                totals("2026-03-02", &pick(&["a3", "g1"])),
                totals("2026-03-03", &pick(&["g2"])),
            ]
        );

        let by_key = store
            .spend(&SpendFilter::new(GroupBy::Key).tenant("acme"))
            .await
            .unwrap();
        assert_eq!(
            by_key,
            vec![
                totals("k1", &pick(&["a1"])),
                totals("k2", &pick(&["a2"])),
                totals(NO_KEY, &pick(&["a3"]))
            ]
        );

        // Inclusive day ranges, open at either end.
        let middle = SpendFilter::new(GroupBy::Tenant).days(Some(day("2026-03-02")), Some(day("2026-03-02")));
        assert_eq!(
            store.spend(&middle).await.unwrap(),
            vec![totals("acme", &pick(&["a3"])), totals("globex", &pick(&["g1"]))]
        );
        let from = SpendFilter::new(GroupBy::Model).days(Some(day("2026-03-02")), None);
        assert_eq!(
            store.spend(&from).await.unwrap(),
            vec![totals("gpt-4o", &pick(&["a3", "g1"])), totals("o3", &pick(&["g2"]))]
        );
        let to = SpendFilter::new(GroupBy::Day)
            .tenant("acme")
            .days(None, Some(day("2026-03-01")));
        assert_eq!(
            store.spend(&to).await.unwrap(),
            vec![totals("2026-03-01", &pick(&["a1", "a2"]))]
        );
        let empty = SpendFilter::new(GroupBy::Day).days(Some(day("2026-04-01")), None);
        assert!(store.spend(&empty).await.unwrap().is_empty());
        assert!(
            store
                .spend(&SpendFilter::new(GroupBy::Tenant).tenant("nobody"))
                .await
                .unwrap()
                .is_empty()
        );

        // The rollups agree with the raw ledger under every grouping and range.
        for group_by in [GroupBy::Tenant, GroupBy::Model, GroupBy::Day, GroupBy::Key] {
            for (from, to) in [
                (None, None),
                (Some(day("2026-03-02")), None),
                (None, Some(day("2026-03-02"))),
                (Some(day("2026-03-01")), Some(day("2026-03-01"))),
            ] {
                for tenant in [None, Some("acme")] {
                    let mut filter = SpendFilter::new(group_by).days(from, to);
                    filter.tenant = tenant.map(str::to_owned);
                    assert_eq!(
                        store.spend(&filter).await.unwrap(),
                        store.spend_from_ledger(&filter).await.unwrap(),
                        "{filter:?}"
                    );
                }
            }
        }
    }

    // === Alerts ===

    pub async fn budget_alerts_fire_once(h: &Harness) {
        let store = h.store().await;
        let fired = |tenant: &str, period: &str, threshold_bp: u32, spend_micros: i64| FiredAlert {
            tenant: tenant.to_owned(),
            period: period.to_owned(),
            threshold_bp,
            spend_micros,
            fired_at: at("2026-03-20T10:00:00.1234567Z"),
        };
        assert!(store.record_alert(&fired("acme", "2026-03", 8000, 21)).await.unwrap());
        // The same threshold of the same period again, from another replica or after a restart: not sent.
        assert!(!store.record_alert(&fired("acme", "2026-03", 8000, 22)).await.unwrap());
        let other = Store::open(&h.url).await.unwrap();
        assert!(!other.record_alert(&fired("acme", "2026-03", 8000, 23)).await.unwrap());
        // Another threshold, period or tenant is its own alert.
        assert!(store.record_alert(&fired("acme", "2026-03", 10_000, 30)).await.unwrap());
        assert!(store.record_alert(&fired("acme", "2026-04", 8000, 21)).await.unwrap());
        assert!(
            store
                .record_alert(&fired("acme", "2026-03-21", 8000, 21))
                .await
                .unwrap()
        );
        assert!(store.record_alert(&fired("globex", "2026-03", 8000, 21)).await.unwrap());
        // Replicas racing on one threshold: exactly one is told to send.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let alert = fired("initech", "2026-03", 5000, i);
                tokio::spawn(async move { store.record_alert(&alert).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            winners += usize::from(racer.await.unwrap());
        }
        assert_eq!(winners, 1);

        let acme = store.fired_alerts("acme").await.unwrap();
        let keys: Vec<_> = acme.iter().map(|a| (a.period.as_str(), a.threshold_bp)).collect();
        assert_eq!(
            keys,
            [
                ("2026-03", 8000),
                ("2026-03", 10_000),
                ("2026-03-21", 8000),
                ("2026-04", 8000)
            ]
        );
        // The first record stays, with its spend; times are kept to the microsecond.
        assert_eq!(acme[0].spend_micros, 21);
        assert_eq!(acme[0].fired_at, at("2026-03-20T10:00:00.123456Z"));
        assert!(store.fired_alerts("nobody").await.unwrap().is_empty());
        assert_eq!(
            sluice_store::period_key(BudgetPeriod::Month, at("2026-03-20T10:00:00Z")),
            "2026-03"
        );
        assert_eq!(
            sluice_store::period_key(BudgetPeriod::Day, at("2026-03-20T23:59:59Z")),
            "2026-03-20"
        );
    }

    // === Request logs ===

    pub async fn request_logs(h: &Harness) {
        let store = h.store().await;
        store.create_tenant(&NewTenant::new("acme")).await.unwrap();
        assert!(store.log_settings().await.unwrap().is_empty(), "off by default");
        let redacted = LogSettings {
            mode: LogMode::Redacted,
            retention_days: 7,
        };
        store.set_log_settings("acme", redacted).await.unwrap();
        store
            .set_log_settings(
                "acme",
                LogSettings {
                    retention_days: 3,
                    ..redacted
                },
            )
            .await
            .unwrap();
        assert_eq!(
            store.log_settings().await.unwrap(),
            [(
                "acme".to_owned(),
                LogSettings {
                    retention_days: 3,
                    ..redacted
                }
            )]
        );
        assert!(matches!(
            store.set_log_settings("nobody", redacted).await,
            Err(StoreError::TenantNotFound(_))
        ));
        assert!(matches!(
            store
                .set_log_settings(
                    "acme",
                    LogSettings {
                        retention_days: 0,
                        ..redacted
                    }
                )
                .await,
            Err(StoreError::Invalid { .. })
        ));

        let log = |id: &str, when: &str, request: Option<&str>| RequestLog {
            id: id.to_owned(),
            tenant: "acme".to_owned(),
            model: "m".to_owned(),
            status: 200,
            mode: if request.is_some() {
                LogMode::Redacted
            } else {
                LogMode::Hashed
            },
            request: request.map(str::to_owned),
            response: request.map(|_| "an answer with [REDACTED]".to_owned()),
            request_sha256: "ab".repeat(32),
            request_bytes: 120,
            response_sha256: "cd".repeat(32),
            response_bytes: 3_000_000_000,
            created_at: at(when),
        };
        let logs = [
            log("old", "2026-03-01T10:00:00Z", Some("a prompt with [REDACTED]")),
            log("new", "2026-03-20T10:00:00.5Z", None),
        ];
        assert_eq!(store.insert_request_logs(&logs).await.unwrap(), 2);
        assert_eq!(store.insert_request_logs(&logs).await.unwrap(), 0, "idempotent by id");
        let read = store.request_logs("acme", 10).await.unwrap();
        assert_eq!(
            read,
            [logs[1].clone(), logs[0].clone()],
            "newest first, every field kept"
        );
        assert_eq!(store.request_logs("acme", 1).await.unwrap().len(), 1);
        assert_eq!(store.logged_tenants().await.unwrap(), ["acme"]);

        assert_eq!(
            store
                .purge_request_logs("acme", at("2026-03-17T10:00:00Z"))
                .await
                .unwrap(),
            1
        );
        let kept: Vec<String> = store
            .request_logs("acme", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(kept, ["new"]);
    }

    pub async fn tenant_spend_since(h: &Harness) {
        let store = h.store().await;
        store
            .insert_usage(&[
                row("s1", "acme", None, "m", "2026-02-28T23:00:00Z", 1, 1, Some(1)),
                row("s2", "acme", None, "m", "2026-03-01T00:00:00Z", 1, 1, Some(10)),
                row("s3", "acme", None, "m", "2026-03-01T11:59:59.999999Z", 1, 1, Some(100)),
                row("s4", "acme", None, "m", "2026-03-01T12:00:00Z", 1, 1, Some(1_000)),
                row("s5", "acme", None, "m", "2026-03-15T08:00:00Z", 1, 1, Some(10_000)),
                row("s6", "acme", None, "m", "2026-03-16T08:00:00Z", 1, 1, None),
                row("o1", "other", None, "m", "2026-03-15T08:00:00Z", 1, 1, Some(100_000)),
            ])
            .await
            .unwrap();
        let spent = |since: &'static str| {
            let store = store.clone();
            async move { store.tenant_spend_since("acme", at(since)).await.unwrap() }
        };
        assert_eq!(spent("2026-03-01T00:00:00Z").await, 11_110);
        assert_eq!(spent("2026-03-01T12:00:00Z").await, 11_000);
        assert_eq!(spent("2026-03-01T11:59:59.999999Z").await, 11_100);
        assert_eq!(spent("2026-02-01T00:00:00Z").await, 11_111);
        assert_eq!(spent("2026-03-16T00:00:00Z").await, 0);
        assert_eq!(spent("2026-04-01T00:00:00Z").await, 0);
        // Seeding a monthly budget.
        let now = at("2026-03-20T10:00:00Z");
        assert_eq!(
            store
                .tenant_spend_since("acme", BudgetPeriod::Month.start(now))
                .await
                .unwrap(),
            11_110
        );
        assert_eq!(
            store
                .tenant_spend_since("nobody", at("2026-01-01T00:00:00Z"))
                .await
                .unwrap(),
            0
        );
    }

    // === The writer ===

    fn config(h: &Harness) -> WriterConfig {
        WriterConfig {
            queue_capacity: 1_000,
            batch_size: 10,
            flush_interval: Duration::from_secs(60),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
            ..WriterConfig::new(h.spool_path())
        }
    }

    pub async fn writer_batches_and_flushes_on_shutdown(h: &Harness) {
        let store = h.store().await;
        let writer = UsageWriter::start(store.clone(), config(h)).unwrap();
        let data = rows("b", 0, 25);
        for r in &data {
            writer.try_record(r.clone()).unwrap();
        }
        // Two full batches go at once; the other five wait for the (long) interval.
        eventually(
            "two full batches",
            Duration::from_secs(10),
            || writer.stats(),
            |s| s.written == 20,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(writer.stats().written, 20);
        assert_eq!(ledger_total(&store).await.requests, 20);

        let stats = writer.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            (stats.written, stats.spooled, stats.queue_depth),
            (25, 0, 0),
            "{stats:?}"
        );
        assert_eq!(ledger_total(&store).await, totals("all", &data));
        // A second shutdown returns at once; a row recorded after shutdown is spooled, not lost.
        writer.shutdown(Duration::from_secs(5)).await;
        let late = row("late", "acme", None, "m", "2026-03-01T00:00:00Z", 1, 1, None);
        assert_eq!(writer.try_record(late), Err(sluice_store::Full { spooled: true }));
        assert_eq!(writer.stats().spool_pending, 1);
    }

    pub async fn writer_flushes_on_interval(h: &Harness) {
        let store = h.store().await;
        let writer = UsageWriter::start(
            store.clone(),
            WriterConfig {
                batch_size: 500,
                flush_interval: Duration::from_millis(50),
                ..config(h)
            },
        )
        .unwrap();
        let data = rows("i", 0, 3);
        for r in &data {
            writer.try_record(r.clone()).unwrap();
        }
        eventually(
            "the interval flush",
            Duration::from_secs(10),
            || writer.stats(),
            |s| s.written == 3,
        )
        .await;
        assert_eq!(ledger_total(&store).await, totals("all", &data));
        writer.shutdown(Duration::from_secs(5)).await;
    }

    pub async fn writer_spools_while_down_and_replays_once(h: &Harness) {
        let direct = h.store().await;
        let mut outage = h.outage().await;
        let store = Store::open_with(&outage.url, &Outage::options()).await.unwrap();
        let writer = UsageWriter::start(
            store,
            WriterConfig {
                queue_capacity: 8,
                batch_size: 5,
                flush_interval: Duration::from_millis(50),
                ..config(h)
            },
        )
        .unwrap();

        // The queue is small: some of these may go to the spool from the request path, and get replayed.
        let before = rows("o", 0, 10);
        for r in &before {
            if let Err(e) = writer.try_record(r.clone()) {
                assert!(e.spooled, "{e}");
            }
        }
        eventually(
            "rows before the outage",
            Duration::from_secs(10),
            || writer.stats(),
            |s| s.written == 10,
        )
        .await;

        outage.cut().await;
        let during = rows("o", 10, 60);
        let mut full = 0;
        for (i, r) in during.iter().enumerate() {
            match writer.try_record(r.clone()) {
                Ok(()) => {}
                Err(e) => {
                    assert!(e.spooled, "{e}");
                    full += 1;
                }
            }
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        // A duplicate of a row the ledger already has: must not count twice.
        let _ = writer.try_record(before[3].clone());
        eventually(
            "everything spooled while down",
            Duration::from_secs(20),
            || writer.stats(),
            |s| !s.database_up && s.queue_depth == 0 && s.spool_pending >= 51,
        )
        .await;
        let down = writer.stats();
        assert_eq!(down.written, 10, "{down:?}");
        assert!(down.write_errors > 0, "{down:?}");
        assert_eq!(
            ledger_total(&direct).await.requests,
            10,
            "nothing reached the database while it was down"
        );
        eprintln!("{full} rows spooled from the request path while the queue was full; stats while down: {down:?}");

        outage.restore().await;
        eventually(
            "the spool replayed",
            Duration::from_secs(30),
            || writer.stats(),
            |s| s.database_up && s.spool_pending == 0 && s.written == 60,
        )
        .await;
        let up = writer.stats();
        assert!(up.replayed >= 50, "{up:?}");
        assert!(up.duplicates >= 1, "{up:?}");
        let everything: Vec<UsageRow> = before.iter().chain(&during).cloned().collect();
        assert_eq!(ledger_total(&direct).await, totals("all", &everything));
        assert!(!h.spool_path().exists() || std::fs::metadata(h.spool_path()).unwrap().len() == 0);

        let last = writer.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            (last.written, last.spool_pending, last.dropped, last.rejected),
            (60, 0, 0, 0),
            "{last:?}"
        );
        assert_eq!(ledger_total(&direct).await.requests, 60);
    }

    pub async fn writer_shutdown_while_down_spools_for_next_start(h: &Harness) {
        let direct = h.store().await;
        let mut outage = h.outage().await;
        let store = Store::open_with(&outage.url, &Outage::options()).await.unwrap();
        let writer = UsageWriter::start(store.clone(), config(h)).unwrap();
        outage.cut().await;
        let data = rows("sd", 0, 7);
        for r in &data {
            writer.try_record(r.clone()).unwrap();
        }
        let started = std::time::Instant::now();
        let stats = writer.shutdown(Duration::from_secs(2)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "shutdown took {:?}",
            started.elapsed()
        );
        assert_eq!(
            (stats.written, stats.spool_pending, stats.dropped),
            (0, 7, 0),
            "{stats:?}"
        );
        assert_eq!(ledger_total(&direct).await.requests, 0);

        // The next start replays what the last one spooled.
        outage.restore().await;
        let next = UsageWriter::start(
            store,
            WriterConfig {
                flush_interval: Duration::from_millis(50),
                ..config(h)
            },
        )
        .unwrap();
        eventually(
            "the leftovers replayed",
            Duration::from_secs(20),
            || next.stats(),
            |s| s.written == 7 && s.spool_pending == 0,
        )
        .await;
        assert_eq!(next.stats().replayed, 7);
        assert_eq!(ledger_total(&direct).await, totals("all", &data));
        next.shutdown(Duration::from_secs(5)).await;
    }

    pub async fn writer_rejects_what_it_cannot_write(h: &Harness) {
        let store = h.store().await;
        // A torn line in the spool, as a crash mid-append would leave, beside good rows.
        let good = rows("r", 0, 3);
        let spool = h.spool_path();
        std::fs::create_dir_all(spool.parent().unwrap()).unwrap();
        let mut text = String::new();
        for r in &good {
            text.push_str(&serde_json::to_string(r).unwrap());
            text.push('\n');
        }
        text.push_str("{\"request_id\": \"torn\", \"tena");
        std::fs::write(&spool, text).unwrap();

        let writer = UsageWriter::start(
            store.clone(),
            WriterConfig {
                flush_interval: Duration::from_millis(50),
                ..config(h)
            },
        )
        .unwrap();
        // Postgres refuses NUL bytes in text; SQLite takes them. Either way nothing else is held back.
        let nul = row(
            "nul",
            "acme",
            None,
            "bad\u{0}model",
            "2026-03-01T00:00:00Z",
            1,
            1,
            Some(1),
        );
        let after = rows("r", 3, 6);
        writer.try_record(nul.clone()).unwrap();
        for r in &after {
            writer.try_record(r.clone()).unwrap();
        }
        let (rejected, written) = match h.kind {
            Kind::Postgres => (2, 6),
            Kind::Sqlite => (1, 7),
        };
        eventually(
            "good rows written, bad ones rejected",
            Duration::from_secs(20),
            || writer.stats(),
            |s| s.written == written && s.rejected == rejected && s.spool_pending == 0,
        )
        .await;
        let kept = std::fs::read_to_string(spool.with_file_name("usage.spool.rejected")).unwrap();
        assert!(kept.contains("torn"), "{kept}");
        assert_eq!(writer.stats().corrupt_lines, 1, "only the torn line was unreadable");
        let mut expected: Vec<UsageRow> = good.iter().chain(&after).cloned().collect();
        if h.kind == Kind::Sqlite {
            expected.push(nul);
        } else {
            assert!(kept.contains("\"nul\""), "{kept}");
        }
        assert_eq!(ledger_total(&store).await, totals("all", &expected));
        writer.shutdown(Duration::from_secs(5)).await;
    }

    // === Catalog access ===

    pub async fn grants_and_subscriptions(h: &Harness) {
        use sluice_store::{Service, ServiceKind, SubscriptionStatus};
        let store = h.store().await;
        store.create_tenant(&NewTenant::new("alpha")).await.unwrap();
        store.create_tenant(&NewTenant::new("beta")).await.unwrap();
        let v0 = store.access_version().await.unwrap();

        // Service names parse and print as `kind:name`.
        let summarize: Service = "prompt:summarize".parse().unwrap();
        assert_eq!(summarize.kind, ServiceKind::Prompt);
        assert_eq!(summarize.to_string(), "prompt:summarize");
        assert!(matches!(
            "summarize".parse::<Service>(),
            Err(StoreError::Invalid { field: "service", .. })
        ));

        // Grants: idempotent, by tenant, revocable; each change moves the version.
        let gpt = Service::model("gpt-4o");
        assert!(store.grant("alpha", &gpt, "admin#1").await.unwrap());
        assert!(!store.grant("alpha", &gpt, "admin#2").await.unwrap());
        let grants = store.list_grants().await.unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(
            (grants[0].tenant.as_str(), grants[0].granted_by.as_str()),
            ("alpha", "admin#1")
        );
        assert!(store.access_version().await.unwrap() > v0);
        assert!(matches!(
            store.grant("nobody", &gpt, "admin#1").await,
            Err(StoreError::TenantNotFound(_))
        ));
        assert!(store.revoke_grant("alpha", &gpt).await.unwrap());
        assert!(!store.revoke_grant("alpha", &gpt).await.unwrap());
        assert!(store.list_grants().await.unwrap().is_empty());

        // A request: one pending per tenant and service, a blank reason refused.
        assert!(matches!(
            store.request_subscription("alpha", &summarize, "  ").await,
            Err(StoreError::Invalid { field: "reason", .. })
        ));
        let asked = store
            .request_subscription("alpha", &summarize, "weekly reports")
            .await
            .unwrap();
        assert_eq!(asked.status, SubscriptionStatus::Pending);
        assert_eq!(asked.tenant, "alpha");
        let again = store.request_subscription("alpha", &summarize, "again").await.unwrap();
        assert_eq!(again.id, asked.id, "a pending request is returned, not doubled");
        assert_eq!(again.reason, "weekly reports");
        let other = store.request_subscription("beta", &summarize, "me too").await.unwrap();
        let pending = store
            .list_subscriptions(Some(SubscriptionStatus::Pending))
            .await
            .unwrap();
        assert_eq!(
            pending.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            [asked.id.as_str(), other.id.as_str()]
        );

        // Approval grants in the same step; a decided request cannot be decided again.
        let before = store.access_version().await.unwrap();
        let approved = store.decide_subscription(&asked.id, true, "admin#1").await.unwrap();
        assert_eq!(approved.status, SubscriptionStatus::Approved);
        assert_eq!(approved.decided_by.as_deref(), Some("admin#1"));
        assert!(approved.decided_at.is_some());
        assert!(store.access_version().await.unwrap() > before);
        let grants = store.list_grants().await.unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].service, summarize);
        assert_eq!(grants[0].granted_by, format!("subscription:{}", asked.id));
        match store.decide_subscription(&asked.id, false, "admin#1").await {
            Err(StoreError::SubscriptionDecided { status, .. }) => assert_eq!(status, "approved"),
            other => panic!("expected already decided, got {other:?}"),
        }
        assert!(matches!(
            store.decide_subscription("nope", true, "admin#1").await,
            Err(StoreError::SubscriptionNotFound(_))
        ));

        // A rejection grants nothing, and the tenant may ask again.
        let rejected = store.decide_subscription(&other.id, false, "admin#1").await.unwrap();
        assert_eq!(rejected.status, SubscriptionStatus::Rejected);
        assert_eq!(store.list_grants().await.unwrap().len(), 1);
        let anew = store.request_subscription("beta", &summarize, "please").await.unwrap();
        assert_ne!(anew.id, other.id);
        assert_eq!(store.list_subscriptions(None).await.unwrap().len(), 3);
    }

    pub async fn audit_log(h: &Harness) {
        use sluice_store::AuditQuery;
        let store = h.store().await;
        for i in 0..5 {
            store
                .record_audit(
                    "admin#1",
                    "tenant.create",
                    &format!("t{i}"),
                    &serde_json::json!({"rpm": i}),
                )
                .await
                .unwrap();
        }
        let newest = store.audit_log(AuditQuery { limit: 2, before: None }).await.unwrap();
        assert_eq!(
            newest.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
            ["t4", "t3"]
        );
        assert_eq!(newest[0].actor, "admin#1");
        assert_eq!(newest[0].action, "tenant.create");
        assert_eq!(newest[0].detail, serde_json::json!({"rpm": 4}));
        assert!(newest[0].at >= newest[1].at && newest[0].at <= Utc::now());
        let older = store
            .audit_log(AuditQuery {
                limit: 10,
                before: Some(newest[1].id),
            })
            .await
            .unwrap();
        assert_eq!(
            older.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
            ["t2", "t1", "t0"]
        );
    }

    pub async fn allow_lists_become_grants(h: &Harness) {
        use crate::support::Kind;
        use sluice_store::Service;
        // A database as the versions before 0004 left it, with tenants' allow-lists.
        Store::open(&h.url).await.unwrap().close().await;
        let before_catalog = |kind: &'static str| async move {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../migrations")
                .join(kind);
            let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
            migrator.migrations = migrator.migrations.iter().filter(|m| m.version < 4).cloned().collect();
            migrator
        };
        let tenants = "INSERT INTO tenants (name, models, prompts, created_at) VALUES \
             ('listed', '[\"gpt-4o\",\"o3\"]', '[\"summarize\"]', '2026-03-01T12:00:00.000000Z'), \
             ('empty', '[]', NULL, '2026-03-01T12:00:00.000000Z'), \
             ('all', NULL, NULL, '2026-03-01T12:00:00.000000Z')";
        match h.kind {
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&h.url).await.unwrap();
                before_catalog("postgres").await.run(&pool).await.unwrap();
                sqlx::query(tenants).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&h.url).await.unwrap();
                before_catalog("sqlite").await.run(&pool).await.unwrap();
                sqlx::query(tenants).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
        let store = h.store().await;
        let grants: Vec<(String, Service, String)> = store
            .list_grants()
            .await
            .unwrap()
            .into_iter()
            .map(|g| (g.tenant, g.service, g.granted_by))
            .collect();
        let migrated = |service: Service| ("listed".to_owned(), service, "migration".to_owned());
        assert_eq!(
            grants,
            vec![
                migrated(Service::model("gpt-4o")),
                migrated(Service::model("o3")),
                migrated(Service::prompt("summarize")),
            ]
        );
        // The lists still restrict what is open.
        let listed = store.tenant("listed").await.unwrap().unwrap();
        assert!(listed.allows_model("gpt-4o") && !listed.allows_model("gpt-4o-mini"));
    }
}
