//! The ledger you can invoice from, on SQLite and on a throwaway Postgres: the gateway's id is the key and
//! the client's is not, usage and prices by category round-trip, long strings are capped and never refused,
//! text with tabs, newlines and backslashes and instants before 2000 come back as written (first written
//! or replayed), names are bounded, exports page through time, the 0002 migration keeps every row, and a
//! torn spool line stops neither the start nor the replay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[macro_use]
mod support;

suite!(
    the_key_is_the_gateways_id_not_the_clients,
    batches_of_any_size_are_written_whole,
    long_strings_are_capped_never_refused,
    categories_prices_and_attempts_round_trip,
    awkward_text_and_instants_round_trip_new_or_replayed,
    exports_page_in_time_order_with_filters,
    names_are_bounded_and_default_is_reserved,
    migrating_keeps_every_row,
    a_torn_spool_stops_neither_the_start_nor_the_replay,
);

mod cases {
    use std::time::Duration;

    use sluice_store::{
        AttemptOutcome, AttemptUsage, ExportFilter, GroupBy, MAX_ID_BYTES, MAX_MODEL_BYTES, MAX_NAME_BYTES,
        MAX_TENANT_BYTES, NewTenant, PriceSource, SpendFilter, Store, StoreError, TokenUsage, UsageRow, UsageSource,
        UsageWriter, WriterConfig,
    };

    use crate::support::{
        Harness, Kind, Outage, assert_rollups_match_ledger, at, day, eventually, export_all, ledger_total, row, totals,
    };

    fn writer_config(h: &Harness) -> WriterConfig {
        WriterConfig {
            batch_size: 10,
            flush_interval: Duration::from_millis(50),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
            ..WriterConfig::new(h.spool_path())
        }
    }

    // === Identity ===

    pub async fn the_key_is_the_gateways_id_not_the_clients(h: &Harness) {
        let store = h.store().await;
        // Five requests that all sent `x-request-id: same-1`, and another tenant's with the same id.
        let mut rows: Vec<UsageRow> = (0..5)
            .map(|i| UsageRow {
                client_request_id: Some("same-1".to_owned()),
                ..row(
                    &UsageRow::new_id(),
                    "acme",
                    None,
                    "m",
                    "2026-03-01T10:00:00Z",
                    10 + i,
                    2,
                    Some(5),
                )
            })
            .collect();
        rows.push(UsageRow {
            client_request_id: Some("same-1".to_owned()),
            ..row(
                &UsageRow::new_id(),
                "globex",
                None,
                "m",
                "2026-03-01T11:00:00Z",
                7,
                1,
                Some(3),
            )
        });
        let first = store.insert_usage(&rows).await.unwrap();
        assert_eq!((first.inserted, first.duplicates), (6, 0));
        let acme = store
            .spend(&SpendFilter::new(GroupBy::Tenant).tenant("acme"))
            .await
            .unwrap();
        assert_eq!(acme, vec![totals("acme", &rows[..5])]);
        assert_eq!(acme[0].requests, 5, "no request erased another");
        // The batch again (a retried write, a replayed spool): nothing counts twice.
        let again = store.insert_usage(&rows).await.unwrap();
        assert_eq!((again.inserted, again.duplicates), (0, 6));
        let exported = export_all(&store, ExportFilter::default(), 100).await;
        assert_eq!(exported.len(), 6);
        assert!(
            exported
                .iter()
                .all(|r| r.client_request_id.as_deref() == Some("same-1"))
        );
        assert_eq!(ledger_total(&store).await, totals("all", &rows));
    }

    /// Batches cut into statements of several sizes (77 rows: 32 + 32 + 8 + 4 + 1) and rollups of 41
    /// groups (32 + 8 + 1) are written whole, and a repeat of the batch adds nothing.
    pub async fn batches_of_any_size_are_written_whole(h: &Harness) {
        let store = h.store().await;
        let tenants = [
            "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
        ];
        let rows: Vec<UsageRow> = (0..77u64)
            .map(|i| {
                let tenant = tenants[(i % 8) as usize];
                let model = if i < 41 { format!("m{i}") } else { "m0".to_owned() };
                row(
                    &UsageRow::new_id(),
                    tenant,
                    None,
                    &model,
                    "2026-03-01T10:00:00Z",
                    10 + i,
                    2,
                    Some(1),
                )
            })
            .collect();
        for size in [77u64, 1, 3] {
            let batch: Vec<UsageRow> = rows
                .iter()
                .take(usize::try_from(size).unwrap())
                .map(|r| UsageRow {
                    id: UsageRow::new_id(),
                    ..r.clone()
                })
                .collect();
            let outcome = store.insert_usage(&batch).await.unwrap();
            assert_eq!((outcome.inserted, outcome.duplicates), (size, 0), "a batch of {size}");
            let again = store.insert_usage(&batch).await.unwrap();
            assert_eq!(
                (again.inserted, again.duplicates),
                (0, size),
                "the batch of {size} again"
            );
        }
        let exported = export_all(&store, ExportFilter::default(), 1000).await;
        assert_eq!(exported.len(), 81);
        assert_rollups_match_ledger(&store).await;
    }

    // === Bounds ===

    pub async fn long_strings_are_capped_never_refused(h: &Harness) {
        let store = h.store().await;
        // A 1 MB model name, a 60 KB request id, and every other name far beyond its cap, in multi-byte
        // characters so that a cut could fall inside one.
        let huge = |unit: &str, bytes: usize| unit.repeat(bytes / unit.len());
        let long = UsageRow {
            id: format!("{}-tail", huge("i", 200)),
            client_request_id: Some(huge("é", 60_000)),
            tenant: huge("t€", 3_000).into(),
            key_id: Some(huge("k", 3_000).into()),
            model: huge("模", 1_000_000),
            provider: huge("p", 3_000).into(),
            vendor_model: huge("v€", 3_000).into(),
            upstream_key: Some(huge("u", 3_000).into()),
            prompt_name: Some(huge("ñ", 3_000)),
            ..row("x", "x", None, "x", "2026-03-01T10:00:00Z", 40, 4, Some(9))
        };
        // Through the writer, as the gateway records it: written, not refused row by row.
        let writer = UsageWriter::start(store.clone(), writer_config(h)).unwrap();
        writer.try_record(long.clone()).unwrap();
        eventually(
            "the long row written",
            Duration::from_secs(20),
            || writer.stats(),
            |s| s.written == 1,
        )
        .await;
        let stats = writer.shutdown(Duration::from_secs(5)).await;
        assert_eq!((stats.rejected, stats.write_errors), (0, 0), "{stats:?}");

        let stored = export_all(&store, ExportFilter::default(), 10).await;
        assert_eq!(stored.len(), 1);
        let stored = &stored[0];
        let capped = |kept: &str, full: &str, max: usize| {
            assert!(
                kept.len() <= max && kept.len() + 4 > max,
                "{} bytes kept of a {max}-byte cap",
                kept.len()
            );
            assert!(full.starts_with(kept), "a prefix of the original");
        };
        capped(&stored.id, &long.id, MAX_ID_BYTES);
        capped(
            stored.client_request_id.as_deref().unwrap(),
            long.client_request_id.as_deref().unwrap(),
            MAX_ID_BYTES,
        );
        capped(&stored.tenant, &long.tenant, MAX_TENANT_BYTES);
        capped(
            stored.key_id.as_deref().unwrap(),
            long.key_id.as_deref().unwrap(),
            MAX_NAME_BYTES,
        );
        capped(&stored.model, &long.model, MAX_MODEL_BYTES);
        capped(&stored.provider, &long.provider, MAX_NAME_BYTES);
        capped(&stored.vendor_model, &long.vendor_model, MAX_MODEL_BYTES);
        capped(
            stored.upstream_key.as_deref().unwrap(),
            long.upstream_key.as_deref().unwrap(),
            MAX_NAME_BYTES,
        );
        capped(
            stored.prompt_name.as_deref().unwrap(),
            long.prompt_name.as_deref().unwrap(),
            MAX_NAME_BYTES,
        );
        assert_eq!((stored.usage, stored.cost_micros), (long.usage, long.cost_micros));
        // The rollups group by the capped model, and agree with the ledger.
        let by_model = store.spend(&SpendFilter::new(GroupBy::Model)).await.unwrap();
        assert_eq!(by_model[0].group, stored.model);
        assert_rollups_match_ledger(&store).await;
        // Ids that differ only past the cap are one row: the cap is the ledger's key.
        let twin = UsageRow {
            id: format!("{}-other-tail", huge("i", 200)),
            ..long.clone()
        };
        assert_eq!(store.insert_usage(&[twin]).await.unwrap().duplicates, 1);
    }

    pub async fn names_are_bounded_and_default_is_reserved(h: &Harness) {
        let store = h.store().await;
        match store.create_tenant(&NewTenant::new("default")).await {
            Err(StoreError::Invalid { field: "name", reason }) => assert!(reason.contains("reserved"), "{reason}"),
            other => panic!("`default` must be refused, got {other:?}"),
        }
        match store.create_tenant(&NewTenant::new("n".repeat(129))).await {
            Err(error @ StoreError::Invalid { field: "name", .. }) => {
                let text = error.to_string();
                assert!(text.contains("128") && text.contains("129"), "{text}");
            }
            other => panic!("a 129-character name must be refused, got {other:?}"),
        }
        // 128 characters of four bytes each: long in bytes, valid by the rule.
        let wide = "😀".repeat(128);
        store.create_tenant(&NewTenant::new(wide.clone())).await.unwrap();
        assert_eq!(store.tenant(&wide).await.unwrap().unwrap().name, wide);
        match store.create_key(&wide, Some(&"k".repeat(129)), None).await {
            Err(StoreError::Invalid { field: "key name", .. }) => {}
            other => panic!("a 129-character key name must be refused, got {other:?}"),
        }
        store.create_key(&wide, Some(&"k".repeat(128)), None).await.unwrap();
        assert!(store.tenant("default").await.unwrap().is_none());
    }

    // === Categories, prices, attempts ===

    pub async fn categories_prices_and_attempts_round_trip(h: &Harness) {
        let store = h.store().await;
        let anthropic = TokenUsage {
            input: 12,
            cache_read: 3_000,
            cache_write_5m: 1_500,
            cache_write_1h: 700,
            output: 450,
            reasoning: 200,
        };
        let failed_attempt = AttemptUsage {
            provider: "anthropic".into(),
            vendor_model: "claude-sonnet-4-5".into(),
            upstream_key: Some("anthropic#1".into()),
            outcome: AttemptOutcome::Failed,
            usage: TokenUsage::new(5_212, 30),
            source: UsageSource::Estimated,
        };
        let rows = vec![
            // Two attempts: one the vendor failed after accepting it, then the answer.
            UsageRow {
                upstream_key: Some("anthropic#0".into()),
                usage: anthropic.plus(&failed_attempt.usage),
                usage_source: UsageSource::Estimated,
                cost_micros: Some(123_456),
                price_source: PriceSource::List,
                price_date: Some(day("2026-12-01")),
                attempts: 2,
                attempt_log: vec![
                    failed_attempt.clone(),
                    AttemptUsage {
                        upstream_key: Some("anthropic#0".into()),
                        outcome: AttemptOutcome::Answered,
                        usage: anthropic,
                        source: UsageSource::Vendor,
                        ..failed_attempt.clone()
                    },
                ],
                prompt_name: Some("summarize".to_owned()),
                prompt_version: Some(3),
                ..row(
                    "c1",
                    "acme",
                    Some("k1"),
                    "sonnet",
                    "2026-03-01T10:00:00.123456Z",
                    0,
                    0,
                    None,
                )
            },
            // A deployment's own price; a model marked free; no price at all.
            UsageRow {
                price_source: PriceSource::Override,
                price_date: None,
                ..row(
                    "c2",
                    "acme",
                    Some("k1"),
                    "gpt",
                    "2026-03-01T11:00:00Z",
                    1_000,
                    100,
                    Some(2_000),
                )
            },
            UsageRow {
                price_source: PriceSource::Free,
                price_date: None,
                ..row("c3", "acme", None, "local", "2026-03-02T00:00:00Z", 500, 50, Some(0))
            },
            row("c4", "globex", None, "mystery", "2026-03-02T01:00:00Z", 80, 8, None),
            // Refused before any vendor saw it: nothing consumed, and it says so.
            UsageRow {
                usage: TokenUsage::default(),
                usage_source: UsageSource::None,
                status: 429,
                attempts: 0,
                attempt_log: Vec::new(),
                upstream_key: None,
                client_request_id: None,
                ..row("c5", "globex", None, "gpt", "2026-03-02T02:00:00Z", 0, 0, Some(0))
            },
            // Abandoned by the client mid-stream.
            UsageRow {
                status: 499,
                usage_source: UsageSource::Estimated,
                attempt_log: vec![AttemptUsage {
                    outcome: AttemptOutcome::Abandoned,
                    source: UsageSource::Estimated,
                    ..failed_attempt.clone()
                }],
                ..row("c6", "globex", None, "gpt", "2026-03-02T03:00:00Z", 60, 6, Some(77))
            },
        ];
        store.insert_usage(&rows).await.unwrap();
        // Every field comes back as written.
        assert_eq!(export_all(&store, ExportFilter::default(), 4).await, rows);
        // Spend by category, from the rollups and the ledger alike.
        let by_tenant = store.spend(&SpendFilter::new(GroupBy::Tenant)).await.unwrap();
        assert_eq!(
            by_tenant,
            vec![totals("acme", &rows[..3]), totals("globex", &rows[3..])]
        );
        let acme = &by_tenant[0];
        assert_eq!(acme.cache_write_5m_tokens, 1_500 + 100 + 50);
        assert_eq!(acme.cache_write_1h_tokens, 700 + 50 + 25);
        assert_eq!(
            acme.prompt_tokens(),
            rows[..3].iter().map(|r| r.prompt_tokens() as i64).sum::<i64>()
        );
        assert_eq!(acme.completion_tokens(), acme.output_tokens);
        assert_eq!(acme.reasoning_tokens, 200 + 33 + 16);
        assert_rollups_match_ledger(&store).await;
        assert_eq!(
            store
                .tenant_spend_since("acme", at("2026-03-01T00:00:00Z"))
                .await
                .unwrap(),
            123_456 + 2_000
        );
    }

    /// Postgres takes a batch of new rows by `COPY` and a batch with an id it holds already by an insert
    /// that skips it: both must store every byte and instant as given, whatever a client put in a name.
    pub async fn awkward_text_and_instants_round_trip_new_or_replayed(h: &Harness) {
        let store = h.store().await;
        let awkward = |id: &str, when: &str| UsageRow {
            client_request_id: Some(format!("{id}\t\\N\n\r\"q\"")),
            tenant: "te\tn\\ant".into(),
            key_id: Some("k\n1".into()),
            model: "模型 \\. 🚀".to_owned(),
            provider: "p\r\n".into(),
            vendor_model: "v\\N".into(),
            upstream_key: Some("\\.".into()),
            prompt_name: Some("line\nbreak\t\\".to_owned()),
            prompt_version: Some(i32::MAX as u32),
            price_date: Some(day("1999-12-31")),
            cost_micros: Some(-1),
            latency_ms: u64::from(u32::MAX),
            ..row(id, "x", None, "x", when, 7, 3, Some(1))
        };
        let first = vec![
            awkward("a1", "1999-12-31T23:59:59.999999Z"),
            awkward("a2", "2000-01-01T00:00:00Z"),
            awkward("a3", "1970-01-01T00:00:00.000001Z"),
        ];
        assert_eq!(store.insert_usage(&first).await.unwrap().inserted, 3);
        // a2 again beside a new row: the batch is replayed, a2 skipped, a4 written.
        let replay = vec![first[1].clone(), awkward("a4", "2262-04-11T23:47:16.854775Z")];
        let outcome = store.insert_usage(&replay).await.unwrap();
        assert_eq!((outcome.inserted, outcome.duplicates), (1, 1));
        let mut expected = first.clone();
        expected.push(replay[1].clone());
        expected.sort_by_key(|r| r.created_at);
        assert_eq!(export_all(&store, ExportFilter::default(), 10).await, expected);
        assert_rollups_match_ledger(&store).await;
    }

    // === Export ===

    pub async fn exports_page_in_time_order_with_filters(h: &Harness) {
        let store = h.store().await;
        let mut rows: Vec<UsageRow> = (0..25)
            .map(|i| {
                let tenant = if i % 3 == 0 { "acme" } else { "globex" };
                // Five rows share each instant: pages must break ties by id.
                let when = match i / 5 {
                    0 => "2026-02-28T23:59:59.999999Z",
                    1 => "2026-03-01T00:00:00Z",
                    2 => "2026-03-01T12:00:00Z",
                    3 => "2026-03-02T23:59:59.999999Z",
                    _ => "2026-03-03T00:00:00Z",
                };
                row(
                    &format!("e{:02}", 24 - i),
                    tenant,
                    None,
                    "m",
                    when,
                    10 + i,
                    1,
                    Some(i as i64),
                )
            })
            .collect();
        // Written out of order, in three batches.
        rows.reverse();
        for chunk in rows.chunks(9) {
            store.insert_usage(chunk).await.unwrap();
        }
        let mut ordered = rows.clone();
        ordered.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        for page in [1, 2, 7, 25, 1000] {
            assert_eq!(
                export_all(&store, ExportFilter::default(), page).await,
                ordered,
                "pages of {page}"
            );
        }
        // Inclusive UTC days, a tenant, both.
        let march = |from: &str, to: &str, tenant: Option<&str>| ExportFilter {
            tenant: tenant.map(str::to_owned),
            from: Some(day(from)),
            to: Some(day(to)),
        };
        let expect = |keep: &dyn Fn(&UsageRow) -> bool| -> Vec<UsageRow> {
            ordered.iter().filter(|r| keep(r)).cloned().collect()
        };
        let first_two =
            expect(&|r| r.created_at >= at("2026-03-01T00:00:00Z") && r.created_at < at("2026-03-03T00:00:00Z"));
        assert_eq!(first_two.len(), 15);
        assert_eq!(
            export_all(&store, march("2026-03-01", "2026-03-02", None), 4).await,
            first_two
        );
        let acme: Vec<UsageRow> = first_two.iter().filter(|r| &*r.tenant == "acme").cloned().collect();
        assert_eq!(
            export_all(&store, march("2026-03-01", "2026-03-02", Some("acme")), 2).await,
            acme
        );
        let open_start = ExportFilter {
            to: Some(day("2026-02-28")),
            ..ExportFilter::default()
        };
        assert_eq!(export_all(&store, open_start, 3).await, ordered[..5].to_vec());
        assert!(
            export_all(&store, march("2026-04-01", "2026-04-30", None), 3)
                .await
                .is_empty()
        );
        // A page exactly as long as what is left ends with an empty page, then nothing.
        let mut export = store.export(ExportFilter::default()).page_size(25);
        assert_eq!(export.next_page().await.unwrap().unwrap().len(), 25);
        assert!(export.next_page().await.unwrap().is_none());
        assert!(export.next_page().await.unwrap().is_none());
    }

    // === Migration ===

    pub async fn migrating_keeps_every_row(h: &Harness) {
        // A database as the version before 0002 left it: only the first migration, old-shaped rows.
        Store::open(&h.url).await.unwrap().close().await;
        let first_only = |kind: &'static str| async move {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../migrations")
                .join(kind);
            let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
            migrator.migrations = migrator.migrations.iter().filter(|m| m.version == 1).cloned().collect();
            migrator
        };
        let long_id = "r".repeat(300);
        let old_rows = format!(
            "INSERT INTO usage_ledger (request_id, tenant, key_id, model, provider, vendor_model, prompt_tokens, \
             completion_tokens, cached_tokens, estimated, cost_micros, latency_ms, status, attempts, prompt_name, \
             prompt_version, created_at) VALUES \
             ('old-1', 'acme', 'k1', 'gpt-4o', 'openai', 'gpt-4o', 100, 20, 30, FALSE, 700, 120, 200, 1, 'p', 2, \
              '2026-03-01T12:00:00.000000Z'), \
             ('old-2', 'acme', NULL, 'gpt-4o-mini', 'openai', 'gpt-4o-mini', 0, 0, 0, FALSE, NULL, 5, 499, 1, NULL, \
              NULL, '2026-03-01T13:00:00.000000Z'), \
             ('old-3', 'globex', 'k2', 'm', 'sim', 'm', 50, 5, 0, TRUE, 3, 9, 200, 2, NULL, NULL, \
              '2026-03-02T08:00:00.000000Z'), \
             ('{long_id}', 'globex', 'k2', 'm', 'sim', 'm', 8, 2, 9, FALSE, 1, 9, 200, 1, NULL, NULL, \
              '2026-03-02T09:00:00.000000Z')"
        );
        let old_rollups = "INSERT INTO usage_daily (day, tenant, key_id, model, requests, prompt_tokens, \
             completion_tokens, cached_tokens, cost_micros) VALUES \
             ('2026-03-01', 'acme', 'k1', 'gpt-4o', 1, 100, 20, 30, 700), \
             ('2026-03-01', 'acme', '', 'gpt-4o-mini', 1, 0, 0, 0, 0), \
             ('2026-03-02', 'globex', 'k2', 'm', 2, 58, 7, 9, 4)";
        match h.kind {
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&h.url).await.unwrap();
                first_only("postgres").await.run(&pool).await.unwrap();
                sqlx::query(&old_rows).execute(&pool).await.unwrap();
                sqlx::query(old_rollups).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&h.url).await.unwrap();
                first_only("sqlite").await.run(&pool).await.unwrap();
                sqlx::query(&old_rows).execute(&pool).await.unwrap();
                sqlx::query(old_rollups).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }

        let store = h.store().await;
        let rows = export_all(&store, ExportFilter::default(), 3).await;
        assert_eq!(rows.len(), 4, "{rows:#?}");
        let old1 = &rows[0];
        assert_eq!(
            (old1.id.as_str(), old1.client_request_id.as_deref()),
            ("old-1", Some("old-1"))
        );
        assert_eq!(
            old1.usage,
            TokenUsage {
                input: 70,
                cache_read: 30,
                output: 20,
                ..TokenUsage::default()
            }
        );
        assert_eq!(
            (old1.usage_source, old1.cost_micros, old1.price_source, old1.price_date),
            (UsageSource::Vendor, Some(700), PriceSource::List, None)
        );
        assert_eq!((old1.prompt_name.as_deref(), old1.prompt_version), (Some("p"), Some(2)));
        assert_eq!((old1.status, old1.attempts, old1.latency_ms), (200, 1, 120));
        assert_eq!(old1.created_at, at("2026-03-01T12:00:00Z"));
        assert!(old1.attempt_log.is_empty() && old1.upstream_key.is_none());
        let old2 = &rows[1];
        assert_eq!(
            (old2.usage_source, old2.cost_micros, old2.price_source),
            (UsageSource::None, None, PriceSource::None)
        );
        assert_eq!(rows[2].usage_source, UsageSource::Estimated);
        // More cached than prompt tokens (a vendor's inconsistency) is clamped, never negative.
        assert_eq!((rows[3].usage.input, rows[3].usage.cache_read), (0, 8));
        assert_eq!(
            (rows[3].id.as_str(), rows[3].client_request_id.as_deref()),
            (long_id.as_str(), Some(&long_id[..128]))
        );
        // The rollups agree with the migrated ledger; the totals are the old ones.
        assert_rollups_match_ledger(&store).await;
        let by_tenant = store.spend(&SpendFilter::new(GroupBy::Tenant)).await.unwrap();
        assert_eq!(
            by_tenant
                .iter()
                .map(|r| (
                    r.group.as_str(),
                    r.requests,
                    r.prompt_tokens(),
                    r.completion_tokens(),
                    r.cost_micros
                ))
                .collect::<Vec<_>>(),
            vec![("acme", 2, 100, 20, 700), ("globex", 2, 58, 7, 4)]
        );
        // Old ids still make writes idempotent; new rows go in beside the old.
        let replayed = UsageRow {
            id: "old-1".to_owned(),
            ..row("old-1", "acme", None, "gpt-4o", "2026-03-01T12:00:00Z", 1, 1, Some(1))
        };
        assert_eq!(store.insert_usage(&[replayed]).await.unwrap().duplicates, 1);
        let new = row(
            &UsageRow::new_id(),
            "acme",
            None,
            "gpt-4o",
            "2026-03-03T00:00:00Z",
            10,
            1,
            Some(1),
        );
        assert_eq!(store.insert_usage(&[new]).await.unwrap().inserted, 1);
        assert_eq!(ledger_total(&store).await.requests, 5);
        store.migrate().await.unwrap();
    }

    // === The spool ===

    pub async fn a_torn_spool_stops_neither_the_start_nor_the_replay(h: &Harness) {
        let direct = h.store().await;
        let mut outage = h.outage().await;
        let store = Store::open_with(&outage.url, &Outage::options()).await.unwrap();
        let good: Vec<UsageRow> = (0..3)
            .map(|i| {
                row(
                    &format!("s{i}"),
                    "acme",
                    None,
                    "m",
                    "2026-03-01T10:00:00Z",
                    10,
                    1,
                    Some(1),
                )
            })
            .collect();
        // What a crash mid-append leaves: good rows, a line from the version before 0002, and a last line
        // cut inside a multi-byte character ("é" is 0xC3 0xA9), with no newline.
        let legacy = r#"{"request_id":"legacy-1","tenant":"acme","key_id":null,"model":"m","provider":"openai","vendor_model":"m","prompt_tokens":12,"completion_tokens":3,"cached_tokens":2,"estimated":false,"cost_micros":4,"latency_ms":1,"status":200,"attempts":1,"prompt_name":null,"prompt_version":null,"created_at":"2026-03-01T10:00:00Z"}"#;
        let mut text = Vec::new();
        for r in &good {
            text.extend(serde_json::to_vec(r).unwrap());
            text.push(b'\n');
        }
        text.extend(legacy.as_bytes());
        text.push(b'\n');
        let mut torn = serde_json::to_vec(&row(
            "torn",
            "acme",
            None,
            "caf\u{e9}",
            "2026-03-01T10:00:00Z",
            1,
            1,
            None,
        ))
        .unwrap();
        let cut = torn.iter().position(|b| *b == 0xC3).unwrap() + 1;
        torn.truncate(cut);
        text.extend(&torn);
        let spool = h.spool_path();
        std::fs::create_dir_all(spool.parent().unwrap()).unwrap();
        std::fs::write(&spool, &text).unwrap();

        // The start: the database is down, and the writer starts anyway, counting five waiting lines.
        outage.cut().await;
        let writer = UsageWriter::start(store, writer_config(h)).unwrap();
        assert_eq!(writer.stats().spool_pending, 5);
        // Rows recorded now are spooled after the torn line, on lines of their own.
        let during: Vec<UsageRow> = (0..4)
            .map(|i| {
                row(
                    &format!("d{i}"),
                    "acme",
                    None,
                    "m",
                    "2026-03-01T11:00:00Z",
                    20,
                    2,
                    Some(2),
                )
            })
            .collect();
        for r in &during {
            writer.try_record(r.clone()).unwrap();
        }
        eventually(
            "rows spooled while down",
            Duration::from_secs(20),
            || writer.stats(),
            |s| s.spool_pending >= 9 && s.queue_depth == 0,
        )
        .await;
        // At run time, a line that is not UTF-8 lands in the middle of the spool.
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&spool).unwrap();
        file.write_all(b"{\"id\":\"\xFF\xFE\"}\n").unwrap();
        drop(file);
        let late = row("late", "acme", None, "m", "2026-03-01T12:00:00Z", 30, 3, Some(3));
        writer.try_record(late.clone()).unwrap();
        eventually(
            "the late row spooled",
            Duration::from_secs(20),
            || writer.stats(),
            |s| s.spool_pending >= 10 && s.queue_depth == 0,
        )
        .await;

        // The replay: every row written, the two bad lines rejected and counted, the replay done.
        outage.restore().await;
        eventually(
            "the spool replayed",
            Duration::from_secs(30),
            || writer.stats(),
            |s| s.database_up && s.written == 9 && s.corrupt_lines == 2 && s.spool_pending == 0,
        )
        .await;
        let stats = writer.shutdown(Duration::from_secs(5)).await;
        assert_eq!(
            (stats.rejected, stats.dropped, stats.duplicates),
            (2, 0, 0),
            "{stats:?}"
        );
        let rejected = std::fs::read(spool.with_file_name("usage.spool.rejected")).unwrap();
        assert!(rejected.starts_with(&torn), "the torn line kept byte for byte");
        assert!(rejected.windows(2).any(|w| w == b"\xFF\xFE"));
        let mut expected: Vec<UsageRow> = good.iter().chain(&during).cloned().collect();
        expected.push(late);
        let stored = export_all(&direct, ExportFilter::default(), 100).await;
        let legacy_row = stored.iter().find(|r| r.id == "legacy-1").unwrap();
        assert_eq!((legacy_row.prompt_tokens(), legacy_row.usage.cache_read), (12, 2));
        expected.push(legacy_row.clone());
        assert_eq!(ledger_total(&direct).await, totals("all", &expected));
        assert_eq!(stored.len(), 9);
        // Nothing is left to replay at the next start.
        assert!(!spool.exists() || std::fs::metadata(&spool).unwrap().len() == 0);
    }
}
