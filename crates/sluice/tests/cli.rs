//! The `sluice` binary as users run it: real processes, real signals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use common::{BIN, FreshDatabase, free_port, scratch_dir};
use sluice_store::{PriceSource, TokenUsage, UsageRow, UsageSource};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(&format!("cli-{name}"))
}

/// A simulated model `m`: what the commands below need configured besides the store.
const DEMO_MODEL: &str = "[[providers]]\nname = \"demo\"\nkind = \"simulated\"\n[[models]]\nname = \"m\"\n[[models.deployments]]\nprovider = \"demo\"\nmodel = \"m\"\n";

/// Runs the binary's commands with `config` written to `path` and `SLUICE_DATABASE_URL` set to `database`
/// when given, without `RUST_LOG` (the commands log as a user's would): each call asserts success and
/// returns standard output and standard error.
fn cli(path: PathBuf, config: &str, database: Option<String>) -> impl Fn(&[&str]) -> (String, String) + use<> {
    std::fs::write(&path, config).unwrap();
    move |args: &[&str]| {
        let mut command = Command::new(BIN);
        command.args(args).arg("--config").arg(&path).env_remove("RUST_LOG");
        if let Some(url) = &database {
            command.env("SLUICE_DATABASE_URL", url);
        }
        let output = command.output().unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        assert!(output.status.success(), "{args:?}: {out}{err}");
        (out, err)
    }
}

/// Runs the binary's commands against a fresh SQLite store at `database` (its configuration written
/// beside it) and a simulated model: each call asserts success and returns standard output.
fn sqlite_cli(database: &std::path::Path) -> impl Fn(&[&str]) -> String + use<> {
    let _ = std::fs::remove_file(database);
    let config = format!("[store]\nurl = \"sqlite://{}\"\n{DEMO_MODEL}", database.display());
    let run = cli(database.with_file_name("sluice.toml"), &config, None);
    move |args: &[&str]| run(args).0
}

/// A child process killed when dropped, so a failing test leaves nothing running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_healthy(port: u16) {
    let client = common::client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing became healthy on port {port}");
}

#[test]
fn an_invalid_configuration_exits_with_the_file_key_and_problem() {
    let dir = scratch("invalid");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\ncolour = \"blue\"\n").unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{}:3: server.colour: unknown field `colour`", path.display())),
        "{stderr}"
    );
    let output = Command::new(BIN)
        .args(["serve", "--config", "/does/not/exist.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/does/not/exist.toml: cannot read the configuration"));
}

#[test]
fn check_config_accepts_the_shipped_configuration() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(BIN)
        .current_dir(&root)
        .args(["check-config"])
        .env_remove("OPENAI_API_KEY")
        // Set but empty, as docker compose passes a variable it was not given.
        .env("OPENAI_API_KEY_2", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("model sluice-demo -> demo"), "{stdout}");
    assert!(stdout.contains("OPENAI_API_KEY is not set"), "{stdout}");
    assert!(stdout.contains("OPENAI_API_KEY_2 is set but empty"), "{stdout}");
}

#[tokio::test]
async fn serve_and_simulate_as_processes_with_json_logs_and_a_graceful_sigterm() {
    let sim_port = free_port();
    let _sim = Proc(
        Command::new(BIN)
            .args([
                "simulate",
                "--listen",
                &format!("127.0.0.1:{sim_port}"),
                "--tokens-per-sec",
                "20",
            ])
            .args(["--reply-tokens", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(sim_port).await;

    let port = free_port();
    let dir = scratch("serve");
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_ms = 10000
[auth]
keys = ["env:CLI_TEST_CLIENT_KEY"]
[[providers]]
name = "sim"
kind = "openai"
base_url = "http://127.0.0.1:{sim_port}/v1"
keys = ["env:CLI_TEST_UPSTREAM_KEY"]
[[models]]
name = "m"
[[models.deployments]]
provider = "sim"
model = "vendor-m"
"#
        ),
    )
    .unwrap();
    let mut gateway = Proc(
        Command::new(BIN)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config)
            .env("CLI_TEST_CLIENT_KEY", "sk-cli-client-secret")
            .env("CLI_TEST_UPSTREAM_KEY", "sk-cli-upstream-secret")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = gateway.0.stderr.take().unwrap();
    let log_lines =
        std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    wait_healthy(port).await;

    // A slow stream is in flight when SIGTERM arrives: it finishes, then the process exits.
    let response = common::client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth("sk-cli-client-secret")
        .header("x-request-id", "cli-test-request")
        .json(&serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the in-flight stream finished: {text}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = gateway.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");

    let lines = log_lines.join().unwrap();
    assert!(!lines.is_empty());
    for line in &lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed.get("level").is_some(), "{line}");
        assert!(
            !line.contains("sk-cli-client-secret") && !line.contains("sk-cli-upstream-secret"),
            "a secret reached the logs: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("cli-test-request")),
        "request logs carry the request id: {lines:#?}"
    );
}

#[tokio::test]
async fn tenants_keys_and_spend_from_the_command_line() {
    let run = sqlite_cli(&scratch("tenants").join("cli.db"));
    run(&["migrate"]);
    assert!(run(&["tenants", "create", "team-x", "--rpm", "10", "--budget-usd", "2.5"]).contains("team-x"));
    let listed = run(&["tenants", "list"]);
    let row = listed.lines().find(|l| l.starts_with("team-x")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["team-x", "10", "-", "2.500000", "month"]
    );
    let created = run(&["keys", "create", "team-x", "--name", "laptop"]);
    let key = created
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap()
        .to_owned();
    let id = created
        .lines()
        .find_map(|l| l.strip_prefix("id:  "))
        .unwrap()
        .to_owned();
    assert!(key.starts_with("sk-sluice-"));
    let listed = run(&["keys", "list", "team-x"]);
    assert!(listed.contains(&id) && !listed.contains(&key), "{listed}");
    run(&["keys", "revoke", &id]);
    assert!(run(&["keys", "list", "team-x"]).contains("Revoked"));
    assert!(run(&["spend", "--group-by", "model"]).contains("cost_usd"));
    let json: serde_json::Value = serde_json::from_str(&run(&["spend", "--json"])).unwrap();
    assert!(json["data"].is_array(), "{json}");
}

#[test]
fn commands_on_postgres_print_their_output_without_the_servers_notices() {
    let Some(database) = FreshDatabase::create("sluice_cli_notices") else {
        return;
    };
    let run = cli(
        scratch("notices").join("sluice.toml"),
        DEMO_MODEL,
        Some(database.url("127.0.0.1:5432")),
    );
    run(&["migrate"]);
    // Every command checks the migrations first: PostgreSQL answers that their table exists, a notice that
    // was printed before the command's own output.
    let (out, err) = run(&["tenants", "create", "team"]);
    assert!(out.contains("created tenant team"), "{out}");
    assert!(!err.contains("notice") && !err.contains("already exists"), "{err}");
}

#[test]
fn tokens_count_prints_the_prompt_tokens_of_a_request() {
    let dir = scratch("tokens");
    let body = dir.join("request.json");
    std::fs::write(
        &body,
        r#"{"model": "gpt-4o", "messages": [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "How many tokens is this?"}]}"#,
    )
    .unwrap();
    let request: sluice_api::ChatCompletionRequest = serde_json::from_slice(&std::fs::read(&body).unwrap()).unwrap();
    let expected = sluice_tokens::count_chat(&request, sluice_tokens::EncodingName::O200kBase).tokens;
    let output = Command::new(BIN)
        .args(["tokens", "count", "--model", "gpt-4o", "--config", "/nonexistent.toml"])
        .arg(&body)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), format!("{expected} prompt tokens (o200k_base, exact)"));
    let output = Command::new(BIN)
        .args([
            "tokens",
            "count",
            "--model",
            "claude-sonnet-4-5",
            "--config",
            "/nonexistent.toml",
        ])
        .arg(&body)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("estimate"));
}

/// The cells of `table` by line, after checking that each sits in its header's column: a left-aligned
/// column's cells start where its header starts, a right-aligned one's end where its header ends. Cells
/// must hold no spaces.
fn aligned_cells(table: &str, right: &[bool]) -> Vec<Vec<String>> {
    let cells = |line: &str| -> Vec<(usize, usize, String)> {
        let mut found = Vec::new();
        let mut start = None;
        for (i, c) in line.chars().chain(std::iter::once(' ')).enumerate() {
            match (c == ' ', start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    found.push((s, i, line.chars().skip(s).take(i - s).collect()));
                    start = None;
                }
                _ => {}
            }
        }
        found
    };
    let mut lines = table.lines();
    let header = cells(lines.next().expect("a header line"));
    assert_eq!(header.len(), right.len(), "{table}");
    lines
        .map(|line| {
            assert_eq!(line.trim_end(), line, "no trailing spaces:\n{table}");
            let row = cells(line);
            assert_eq!(row.len(), header.len(), "{line:?} in\n{table}");
            for ((cell, head), right) in row.iter().zip(&header).zip(right) {
                if *right {
                    assert_eq!(cell.1, head.1, "{:?} ends under {:?}:\n{table}", cell.2, head.2);
                } else {
                    assert_eq!(cell.0, head.0, "{:?} starts under {:?}:\n{table}", cell.2, head.2);
                }
            }
            row.into_iter().map(|(_, _, text)| text).collect()
        })
        .collect()
}

#[tokio::test]
async fn tenants_keys_and_spend_print_tables_aligned_to_their_widest_cells() {
    let database = scratch("tables").join("tables.db");
    let run = sqlite_cli(&database);
    run(&["migrate"]);
    // Names and numbers wider than any fixed column width would be.
    let long = "a-tenant-whose-name-is-much-longer-than-the-others";
    run(&["tenants", "create", "a"]);
    run(&[
        "tenants",
        "create",
        long,
        "--rpm",
        "1234567890",
        "--tpm",
        "5",
        "--budget-usd",
        "123456789.5",
    ]);
    run(&["tenants", "create", "team-x", "--rpm", "10", "--budget-period", "day"]);
    let tenants = aligned_cells(&run(&["tenants", "list"]), &[false, true, true, true, false]);
    assert_eq!(
        tenants,
        [
            ["a", "-", "-", "-", "month"],
            [long, "1234567890", "5", "123456789.500000", "month"],
            ["team-x", "10", "-", "-", "day"],
        ]
    );

    let id = |created: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix("id:  "))
            .unwrap()
            .to_owned()
    };
    let first = id(&run(&[
        "keys",
        "create",
        long,
        "--name",
        "a-rather-long-key-label-for-the-build-server",
    ]));
    let second = id(&run(&["keys", "create", long]));
    run(&["keys", "revoke", &second]);
    let keys = aligned_cells(
        &run(&["keys", "list", long]),
        &[false, false, false, false, false, false],
    );
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(
        (
            keys[0][0].as_str(),
            keys[0][2].as_str(),
            keys[0][3].as_str(),
            keys[0][5].as_str()
        ),
        (
            first.as_str(),
            "a-rather-long-key-label-for-the-build-server",
            "Active",
            "-"
        )
    );
    assert_eq!(
        (keys[1][0].as_str(), keys[1][2].as_str(), keys[1][3].as_str()),
        (second.as_str(), "-", "Revoked")
    );
    assert!(keys[0][1].starts_with("sk-sluice-"), "{keys:?}");

    // Usage from two tenants, one with very large counts, written as the gateway's writer does.
    let store = sluice_store::Store::open(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    let row = |id: &str, tenant: &str, usage: TokenUsage, cost: i64| UsageRow {
        cost_micros: Some(cost),
        ..usage_row(id, tenant, "m", "2026-03-01T10:00:00Z", usage)
    };
    // Row r1 has a token of every input category: 3 prompt tokens, 4 output of which 2 reasoning.
    let every = TokenUsage {
        input: 1,
        cache_read: 1,
        cache_write_5m: 1,
        cache_write_1h: 0,
        output: 4,
        reasoning: 2,
    };
    store
        .insert_usage(&[
            row("r1", "a", every, 7),
            row(
                "r2",
                long,
                TokenUsage::new(123_456_789_012_345, 9_876_543_210_987),
                1_234_567_890_123,
            ),
            row("r3", long, TokenUsage::new(5, 6), 0),
        ])
        .await
        .unwrap();
    store.close().await;
    let spend = aligned_cells(
        &run(&["spend"]),
        &[false, true, true, true, true, true, true, true, true, true],
    );
    assert_eq!(
        spend,
        [
            ["a", "1", "3", "4", "1", "1", "1", "4", "2", "0.000007"],
            [
                long,
                "2",
                "123456789012350",
                "9876543210993",
                "123456789012350",
                "0",
                "0",
                "9876543210993",
                "0",
                "1234567.890123"
            ],
        ]
    );
}

/// A ledger row as the gateway records it, for the CLI to read.
fn usage_row(id: &str, tenant: &str, model: &str, when: &str, usage: TokenUsage) -> UsageRow {
    UsageRow {
        id: id.to_owned(),
        client_request_id: Some(format!("client-{id}")),
        tenant: tenant.into(),
        key_id: None,
        model: model.to_owned(),
        provider: "demo".into(),
        vendor_model: "m".into(),
        upstream_key: Some("demo#0".into()),
        usage,
        usage_source: UsageSource::Vendor,
        cost_micros: None,
        price_source: PriceSource::None,
        price_date: None,
        latency_ms: 1,
        status: 200,
        attempts: 1,
        attempt_log: Vec::new(),
        prompt_name: None,
        prompt_version: None,
        created_at: chrono::DateTime::parse_from_rfc3339(when).unwrap().to_utc(),
    }
}

#[tokio::test]
async fn spend_export_prints_every_ledger_row_of_a_range_for_finance() {
    let database = scratch("export").join("export.db");
    let run = sqlite_cli(&database);
    run(&["migrate"]);
    let store = sluice_store::Store::open(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    let cached = TokenUsage {
        input: 10,
        cache_read: 200,
        cache_write_5m: 30,
        cache_write_1h: 40,
        output: 50,
        reasoning: 20,
    };
    let rows = vec![
        UsageRow {
            cost_micros: Some(1_234_567),
            price_source: PriceSource::List,
            price_date: Some(chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()),
            key_id: Some("key-1".into()),
            ..usage_row("x1", "acme", "gpt-4o", "2026-03-01T00:00:00.000001Z", cached)
        },
        // A client's model name with everything CSV must quote, a cost nobody knew.
        UsageRow {
            status: 499,
            usage_source: UsageSource::Estimated,
            client_request_id: Some("id, \"quoted\"".to_owned()),
            ..usage_row(
                "x2",
                "globex",
                "a,b \"c\"\nd",
                "2026-03-02T23:59:59.999999Z",
                TokenUsage::new(7, 1),
            )
        },
        UsageRow {
            cost_micros: Some(0),
            price_source: PriceSource::Free,
            ..usage_row("x3", "acme", "local", "2026-03-02T12:00:00Z", TokenUsage::new(1, 1))
        },
        // Outside the range, on either side.
        usage_row("x0", "acme", "m", "2026-02-28T23:59:59.999999Z", TokenUsage::new(1, 1)),
        usage_row("x4", "acme", "m", "2026-03-03T00:00:00Z", TokenUsage::new(1, 1)),
    ];
    store.insert_usage(&rows).await.unwrap();
    store.close().await;

    let text = run(&["spend", "export", "--from", "2026-03-01", "--to", "2026-03-02", "--csv"]);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "id",
            "client_request_id",
            "created_at",
            "tenant",
            "key_id",
            "model",
            "provider",
            "vendor_model",
            "upstream_key",
            "status",
            "attempts",
            "input_tokens",
            "cache_read_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "output_tokens",
            "reasoning_tokens",
            "usage_source",
            "cost_usd",
            "price_source",
            "price_date",
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let ids: Vec<&str> = records.iter().map(|r| &r[0]).collect();
    assert_eq!(ids, ["x1", "x3", "x2"], "one line per row in the range, oldest first");
    assert_eq!(
        records[0].iter().collect::<Vec<_>>(),
        [
            "x1",
            "client-x1",
            "2026-03-01T00:00:00.000001Z",
            "acme",
            "key-1",
            "gpt-4o",
            "demo",
            "m",
            "demo#0",
            "200",
            "1",
            "10",
            "200",
            "30",
            "40",
            "50",
            "20",
            "vendor",
            "1.234567",
            "list",
            "2026-12-01",
        ]
    );
    assert_eq!((&records[1][18], &records[1][19]), ("0.000000", "free"));
    let quoted = &records[2];
    assert_eq!((&quoted[1], &quoted[5]), ("id, \"quoted\"", "a,b \"c\"\nd"));
    assert_eq!(
        (&quoted[9], &quoted[17], &quoted[18], &quoted[19], &quoted[20]),
        ("499", "estimated", "", "none", "")
    );

    // One tenant; and JSON lines, which read back as the rows themselves.
    let acme = run(&[
        "spend",
        "export",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-02",
        "--tenant",
        "acme",
        "--csv",
    ]);
    assert_eq!(acme.lines().count(), 3, "{acme}");
    let json = run(&["spend", "export", "--from", "2026-03-01", "--to", "2026-03-02"]);
    let read: Vec<UsageRow> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(read, vec![rows[0].clone(), rows[2].clone(), rows[1].clone()]);

    let backwards = Command::new(BIN)
        .args([
            "spend",
            "export",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-01",
            "--config",
        ])
        .arg(database.with_file_name("sluice.toml"))
        .output()
        .unwrap();
    assert_eq!(backwards.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&backwards.stderr).contains("--to 2026-03-01 is before --from 2026-03-02"));
}
