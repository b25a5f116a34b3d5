//! `sluice spend`: totals from the ledger's rollups, by category; `sluice spend export`: the ledger's rows
//! for finance, streamed a page at a time.

use std::io::Write;

use anyhow::Context;
use chrono::{NaiveDate, SecondsFormat};
use clap::Subcommand;
use sluice_store::{ExportFilter, SpendFilter, Store, UsageRow, format_usd};

use crate::{Align, table_text};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SpendArgs {
    #[command(subcommand)]
    command: Option<SpendCommand>,
    #[command(flatten)]
    totals: TotalsArgs,
}

#[derive(Debug, Subcommand)]
enum SpendCommand {
    /// Every ledger row of a range of UTC days, one line per request, oldest first: JSON lines, or CSV
    /// with a header (`--csv`). Costs are exact decimals of dollars.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
struct TotalsArgs {
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// tenant, model, day or key.
    #[arg(long, default_value = "tenant")]
    group_by: String,
    /// From this UTC day (YYYY-MM-DD), inclusive.
    #[arg(long)]
    from: Option<NaiveDate>,
    /// To this UTC day (YYYY-MM-DD), inclusive.
    #[arg(long)]
    to: Option<NaiveDate>,
    /// Print JSON (`{"data": [...]}`, as `GET /admin/spend` answers) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// From this UTC day (YYYY-MM-DD), inclusive.
    #[arg(long)]
    from: NaiveDate,
    /// To this UTC day (YYYY-MM-DD), inclusive.
    #[arg(long)]
    to: NaiveDate,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// CSV with a header line instead of JSON lines.
    #[arg(long)]
    csv: bool,
}

/// The CSV export's columns, in order.
const CSV_HEADER: [&str; 21] = [
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
];

pub(crate) async fn run(store: &Store, args: SpendArgs) -> anyhow::Result<()> {
    match args.command {
        Some(SpendCommand::Export(export)) => run_export(store, export).await,
        None => totals(store, args.totals).await,
    }
}

async fn totals(store: &Store, args: TotalsArgs) -> anyhow::Result<()> {
    let filter = SpendFilter {
        tenant: args.tenant,
        from: args.from,
        to: args.to,
        group_by: args.group_by.parse()?,
    };
    let rows = store.spend(&filter).await?;
    if args.json {
        println!("{}", serde_json::json!({ "data": rows }));
        return Ok(());
    }
    let table = rows
        .iter()
        .map(|row| {
            vec![
                row.group.clone(),
                row.requests.to_string(),
                row.prompt_tokens().to_string(),
                row.completion_tokens().to_string(),
                row.input_tokens.to_string(),
                row.cache_read_tokens.to_string(),
                row.cache_write_tokens().to_string(),
                row.output_tokens.to_string(),
                row.reasoning_tokens.to_string(),
                format_usd(row.cost_micros),
            ]
        })
        .collect::<Vec<_>>();
    let right = |name| (name, Align::Right);
    print!(
        "{}",
        table_text(
            &[
                ("group", Align::Left),
                right("requests"),
                right("prompt"),
                right("completion"),
                right("input"),
                right("cache_read"),
                right("cache_write"),
                right("output"),
                right("reasoning"),
                right("cost_usd"),
            ],
            &table
        )
    );
    Ok(())
}

async fn run_export(store: &Store, args: ExportArgs) -> anyhow::Result<()> {
    if args.to < args.from {
        anyhow::bail!("--to {} is before --from {}", args.to, args.from);
    }
    let mut pages = store.export(ExportFilter {
        tenant: args.tenant,
        from: Some(args.from),
        to: Some(args.to),
    });
    let stdout = std::io::stdout().lock();
    if args.csv {
        let mut out = csv::Writer::from_writer(stdout);
        out.write_record(CSV_HEADER)?;
        while let Some(rows) = pages.next_page().await? {
            for row in &rows {
                out.write_record(csv_record(row))?;
            }
        }
        out.flush().context("writing the export")?;
    } else {
        let mut out = std::io::BufWriter::new(stdout);
        while let Some(rows) = pages.next_page().await? {
            for row in &rows {
                serde_json::to_writer(&mut out, row)?;
                out.write_all(b"\n")?;
            }
        }
        out.flush().context("writing the export")?;
    }
    Ok(())
}

/// One ledger row as the CSV export's cells, in [`CSV_HEADER`] order; absent values are empty.
fn csv_record(row: &UsageRow) -> [String; 21] {
    fn text<S: AsRef<str>>(value: &Option<S>) -> String {
        value.as_ref().map(|v| v.as_ref().to_owned()).unwrap_or_default()
    }
    let u = &row.usage;
    [
        row.id.clone(),
        text(&row.client_request_id),
        row.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        row.tenant.to_string(),
        text(&row.key_id),
        row.model.clone(),
        row.provider.to_string(),
        row.vendor_model.to_string(),
        text(&row.upstream_key),
        row.status.to_string(),
        row.attempts.to_string(),
        u.input.to_string(),
        u.cache_read.to_string(),
        u.cache_write_5m.to_string(),
        u.cache_write_1h.to_string(),
        u.output.to_string(),
        u.reasoning.to_string(),
        row.usage_source.as_str().to_owned(),
        row.cost_micros.map(format_usd).unwrap_or_default(),
        row.price_source.as_str().to_owned(),
        row.price_date.map(|d| d.to_string()).unwrap_or_default(),
    ]
}
