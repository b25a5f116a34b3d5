//! Queries of the request logs (tenants' opt-in prompts and answers), written once over any
//! [`Dialect`] like the rest of the store.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::dialect::Dialect;
use super::queries::Db;
use crate::error::StoreError;
use crate::request_log::{LogMode, LogSettings, RequestLog};

const LOG_COLUMNS: &str = "id, tenant, model, status, mode, request, response, request_sha256, request_bytes, \
     response_sha256, response_bytes, created_at";

impl<DB> Db<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    pub(super) async fn set_log_settings(
        &self,
        tenant: &str,
        settings: LogSettings,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query::<DB>(
            "INSERT INTO request_log_settings (tenant, mode, retention_days, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant) DO UPDATE SET mode = excluded.mode, retention_days = excluded.retention_days, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(settings.mode.as_str())
        .bind(i32::try_from(settings.retention_days).unwrap_or(i32::MAX))
        .bind(DB::time(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn log_settings(&self) -> Result<Vec<(String, LogSettings)>, StoreError> {
        let rows = sqlx::query::<DB>("SELECT tenant, mode, retention_days FROM request_log_settings ORDER BY tenant")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let mode: String = row.try_get("mode")?;
                let days: i32 = row.try_get("retention_days")?;
                Ok((
                    row.try_get("tenant")?,
                    LogSettings {
                        mode: mode
                            .parse()
                            .map_err(|_| StoreError::Corrupt(format!("log mode {mode:?}")))?,
                        retention_days: u32::try_from(days).unwrap_or(1),
                    },
                ))
            })
            .collect()
    }

    pub(super) async fn insert_logs(&self, logs: &[RequestLog]) -> Result<u64, StoreError> {
        let mut inserted = 0;
        for log in logs {
            let done = sqlx::query::<DB>(
                "INSERT INTO request_logs (id, tenant, model, status, mode, request, response, request_sha256, \
                 request_bytes, response_sha256, response_bytes, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING RETURNING id",
            )
            .bind(log.id.as_str())
            .bind(log.tenant.as_str())
            .bind(log.model.as_str())
            .bind(i32::from(log.status))
            .bind(log.mode.as_str())
            .bind(log.request.as_deref())
            .bind(log.response.as_deref())
            .bind(log.request_sha256.as_str())
            .bind(i64::try_from(log.request_bytes).unwrap_or(i64::MAX))
            .bind(log.response_sha256.as_str())
            .bind(i64::try_from(log.response_bytes).unwrap_or(i64::MAX))
            .bind(DB::time(log.created_at))
            .fetch_optional(&self.pool)
            .await?;
            inserted += u64::from(done.is_some());
        }
        Ok(inserted)
    }

    pub(super) async fn logs(&self, tenant: &str, limit: i64) -> Result<Vec<RequestLog>, StoreError> {
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM request_logs WHERE tenant = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query::<DB>(&sql)
            .bind(tenant)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::log_from_row).collect()
    }

    fn log_from_row(row: &DB::Row) -> Result<RequestLog, StoreError> {
        let mode: String = row.try_get("mode")?;
        let status: i32 = row.try_get("status")?;
        let count = |column: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
        };
        Ok(RequestLog {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            model: row.try_get("model")?,
            status: u16::try_from(status).unwrap_or(0),
            mode: mode
                .parse::<LogMode>()
                .map_err(|_| StoreError::Corrupt(format!("log mode {mode:?}")))?,
            request: row.try_get("request")?,
            response: row.try_get("response")?,
            request_sha256: row.try_get("request_sha256")?,
            request_bytes: count("request_bytes")?,
            response_sha256: row.try_get("response_sha256")?,
            response_bytes: count("response_bytes")?,
            created_at: DB::read_time(row.try_get("created_at")?)?,
        })
    }

    pub(super) async fn purge_logs(&self, tenant: &str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let gone = sqlx::query::<DB>("DELETE FROM request_logs WHERE tenant = $1 AND created_at < $2 RETURNING id")
            .bind(tenant)
            .bind(DB::time(before))
            .fetch_all(&self.pool)
            .await?;
        Ok(gone.len() as u64)
    }

    pub(super) async fn logged_tenants(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query::<DB>("SELECT DISTINCT tenant FROM request_logs ORDER BY tenant")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("tenant")?)).collect()
    }
}
