//! `sluice catalog`, `sluice subscriptions`, `sluice grants` and `sluice audit`: the catalog and its
//! access from the command line, over the store. A decision or a grant made here reaches every running
//! gateway at its next access poll (a quarter of a second); each is written to the audit log as done by
//! `cli:<user>`.

use clap::Subcommand;
use serde_json::json;
use sluice_pipeline::{Access, Permission, Service, TenantAccess};
use sluice_prompts::PromptRegistry;
use sluice_store::{AuditQuery, Store, SubscriptionStatus};

use crate::{Align, table_text};

/// `sluice catalog`.
#[derive(Debug, clap::Args)]
pub(crate) struct CatalogArgs {
    /// Show what this tenant may do with each service (call, request, pending, none).
    #[arg(long)]
    tenant: Option<String>,
}

/// `sluice subscriptions ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum SubscriptionsCommand {
    /// List subscription requests, oldest first.
    List {
        /// Only pending, approved or rejected ones.
        #[arg(long)]
        status: Option<String>,
    },
    /// Approve a pending request: the tenant is granted the service.
    Approve {
        /// The request's id.
        id: String,
    },
    /// Reject a pending request.
    Reject {
        /// The request's id.
        id: String,
    },
}

/// `sluice grants ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum GrantsCommand {
    /// Grant a service (`model:NAME` or `prompt:NAME`) to a tenant, whatever its access.
    Add {
        /// The tenant.
        tenant: String,
        /// `model:NAME` or `prompt:NAME`.
        service: String,
    },
    /// Take a grant back.
    Revoke {
        /// The tenant.
        tenant: String,
        /// `model:NAME` or `prompt:NAME`.
        service: String,
    },
    /// List every grant.
    List,
}

/// `sluice audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// How many entries, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

/// Who acts from the command line, for the audit log.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    format!("cli:{user}")
}

/// Records an action done from the command line; the action stands if the log cannot be written.
pub(crate) async fn audit(store: &Store, action: &str, target: &str, detail: serde_json::Value) {
    if let Err(err) = store.record_audit(&actor(), action, target, &detail).await {
        eprintln!("warning: could not write the audit log: {err}");
    }
}

/// Prints every model and prompt with its access, and with `--tenant`, what that tenant may do.
pub(crate) async fn catalog(
    store: &Store,
    models: &[sluice::config::ModelConfig],
    prompts: &PromptRegistry,
    args: CatalogArgs,
) -> anyhow::Result<()> {
    let tenant = match &args.tenant {
        Some(name) => Some(
            store
                .tenant(name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no tenant named `{name}`"))?,
        ),
        None => None,
    };
    let access: TenantAccess = match &tenant {
        Some(t) => {
            let grants = store.list_grants().await?;
            let pending = store.list_subscriptions(Some(SubscriptionStatus::Pending)).await?;
            sluice_pipeline::access::by_tenant(grants, pending)
                .remove(&t.name)
                .unwrap_or_default()
        }
        None => TenantAccess::default(),
    };
    let permission = |service: &Service, level: Access| match &tenant {
        None => "-".to_owned(),
        Some(t) => match access.permission(t, service, level) {
            Permission::Call => "call".to_owned(),
            Permission::Request => "request".to_owned(),
            Permission::Pending { subscription } => format!("pending ({subscription})"),
            Permission::None => "none".to_owned(),
        },
    };
    let mut rows = Vec::new();
    for model in models {
        let service = Service::model(&model.name);
        rows.push(vec![
            service.to_string(),
            model.access.as_str().to_owned(),
            "-".to_owned(),
            permission(&service, model.access),
            model.description.clone().unwrap_or_default(),
        ]);
    }
    for summary in prompts.list() {
        let service = Service::prompt(&summary.name);
        let level = match summary.access {
            sluice_prompts::Access::Open => Access::Open,
            sluice_prompts::Access::Approval => Access::Approval,
            sluice_prompts::Access::Private => Access::Private,
        };
        let versions: Vec<String> = prompts
            .versions(&summary.name)
            .map(|p| format!("v{} {}", p.version(), p.status()))
            .collect();
        rows.push(vec![
            service.to_string(),
            level.as_str().to_owned(),
            versions.join(", "),
            permission(&service, level),
            summary.description,
        ]);
    }
    print!(
        "{}",
        table_text(
            &[
                ("service", Align::Left),
                ("access", Align::Left),
                ("versions", Align::Left),
                ("permission", Align::Left),
                ("description", Align::Left),
            ],
            &rows
        )
    );
    Ok(())
}

pub(crate) async fn subscriptions(store: &Store, command: SubscriptionsCommand) -> anyhow::Result<()> {
    match command {
        SubscriptionsCommand::List { status } => {
            let status = status.map(|s| s.parse::<SubscriptionStatus>()).transpose()?;
            let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let rows: Vec<Vec<String>> = store
                .list_subscriptions(status)
                .await?
                .into_iter()
                .map(|s| {
                    vec![
                        s.id,
                        s.tenant,
                        s.service.to_string(),
                        s.status.as_str().to_owned(),
                        time(s.created_at),
                        s.decided_by.unwrap_or_else(|| "-".to_owned()),
                        s.reason,
                    ]
                })
                .collect();
            print!(
                "{}",
                table_text(
                    &[
                        ("id", Align::Left),
                        ("tenant", Align::Left),
                        ("service", Align::Left),
                        ("status", Align::Left),
                        ("requested", Align::Left),
                        ("decided_by", Align::Left),
                        ("reason", Align::Left),
                    ],
                    &rows
                )
            );
        }
        SubscriptionsCommand::Approve { id } => decide(store, &id, true).await?,
        SubscriptionsCommand::Reject { id } => decide(store, &id, false).await?,
    }
    Ok(())
}

async fn decide(store: &Store, id: &str, approve: bool) -> anyhow::Result<()> {
    let decided = store.decide_subscription(id, approve, &actor()).await?;
    let action = if approve {
        "subscription.approve"
    } else {
        "subscription.reject"
    };
    let detail = json!({"tenant": decided.tenant, "service": decided.service, "reason": decided.reason});
    audit(store, action, id, detail).await;
    println!(
        "{} {} for {} ({})",
        decided.status.as_str(),
        decided.service,
        decided.tenant,
        decided.id
    );
    Ok(())
}

pub(crate) async fn grants(store: &Store, command: GrantsCommand) -> anyhow::Result<()> {
    match command {
        GrantsCommand::Add { tenant, service } => {
            let service: Service = service.parse()?;
            let added = store.grant(&tenant, &service, &actor()).await?;
            audit(
                store,
                "grant.create",
                &format!("{tenant}/{service}"),
                json!({"new": added}),
            )
            .await;
            println!("granted {service} to {tenant}");
        }
        GrantsCommand::Revoke { tenant, service } => {
            let service: Service = service.parse()?;
            if !store.revoke_grant(&tenant, &service).await? {
                anyhow::bail!("{tenant} holds no grant of {service}");
            }
            audit(store, "grant.revoke", &format!("{tenant}/{service}"), json!({})).await;
            println!("revoked {service} from {tenant}");
        }
        GrantsCommand::List => {
            let rows: Vec<Vec<String>> = store
                .list_grants()
                .await?
                .into_iter()
                .map(|g| vec![g.tenant, g.service.to_string(), g.granted_by])
                .collect();
            print!(
                "{}",
                table_text(
                    &[
                        ("tenant", Align::Left),
                        ("service", Align::Left),
                        ("granted_by", Align::Left)
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

pub(crate) async fn audit_log(store: &Store, args: AuditArgs) -> anyhow::Result<()> {
    let entries = store
        .audit_log(AuditQuery {
            limit: args.limit,
            before: None,
        })
        .await?;
    let rows: Vec<Vec<String>> = entries
        .into_iter()
        .map(|e| {
            vec![
                e.at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                e.actor,
                e.action,
                e.target,
                e.detail.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table_text(
            &[
                ("at", Align::Left),
                ("actor", Align::Left),
                ("action", Align::Left),
                ("target", Align::Left),
                ("detail", Align::Left),
            ],
            &rows
        )
    );
    Ok(())
}
