//! What truly differs between the two databases: how an instant and a day are stored, the SQL that turns
//! them back into `YYYY-MM-DD` text, and which migrations apply. Everything else is written once, in
//! [`super::queries`].
//!
//! - Postgres: `TIMESTAMPTZ` and `DATE`, bound as chrono values.
//! - SQLite: fixed-width UTC text (`2026-01-31T12:00:00.000000Z`), which sorts as time does, and days as
//!   `YYYY-MM-DD` text.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::Migrator;
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

use crate::error::StoreError;

/// Migrations embedded at build time; `Store::migrate` applies them.
static PG_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// A database the store speaks, and the few ways it differs from the other.
pub(crate) trait Dialect: sqlx::Database + sqlx::database::HasStatementCache {
    /// How an instant is bound and read back.
    type Time: for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self> + Type<Self> + Send + Sync + 'static;
    /// How a UTC day is bound and read back.
    type Day: for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self> + Type<Self> + Send + Sync + 'static;

    /// SQL for a rollup's `day` as `YYYY-MM-DD` text.
    const ROLLUP_DAY: &'static str;
    /// SQL for a ledger row's UTC day (of `created_at`) as `YYYY-MM-DD` text.
    const LEDGER_DAY: &'static str;

    /// The stored form of an instant (already truncated to microseconds).
    fn time(t: DateTime<Utc>) -> Self::Time;
    /// An instant read back.
    fn read_time(stored: Self::Time) -> Result<DateTime<Utc>, StoreError>;
    /// The stored form of a day.
    fn day(day: NaiveDate) -> Self::Day;
    /// A day read back.
    fn read_day(stored: Self::Day) -> Result<NaiveDate, StoreError>;
    /// This database's migrations.
    fn migrator() -> &'static Migrator;
}

impl Dialect for Postgres {
    type Time = DateTime<Utc>;
    type Day = NaiveDate;

    const ROLLUP_DAY: &'static str = "to_char(day, 'YYYY-MM-DD')";
    const LEDGER_DAY: &'static str = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')";

    fn time(t: DateTime<Utc>) -> Self::Time {
        t
    }

    fn read_time(stored: Self::Time) -> Result<DateTime<Utc>, StoreError> {
        Ok(stored)
    }

    fn day(day: NaiveDate) -> Self::Day {
        day
    }

    fn read_day(stored: Self::Day) -> Result<NaiveDate, StoreError> {
        Ok(stored)
    }

    fn migrator() -> &'static Migrator {
        &PG_MIGRATIONS
    }
}

impl Dialect for Sqlite {
    type Time = String;
    type Day = String;

    const ROLLUP_DAY: &'static str = "day";
    const LEDGER_DAY: &'static str = "substr(created_at, 1, 10)";

    fn time(t: DateTime<Utc>) -> Self::Time {
        ts(t)
    }

    fn read_time(stored: Self::Time) -> Result<DateTime<Utc>, StoreError> {
        DateTime::parse_from_rfc3339(&stored)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Corrupt(format!("timestamp {stored:?}: {e}")))
    }

    fn day(day: NaiveDate) -> Self::Day {
        day.format("%Y-%m-%d").to_string()
    }

    fn read_day(stored: Self::Day) -> Result<NaiveDate, StoreError> {
        NaiveDate::parse_from_str(&stored, "%Y-%m-%d").map_err(|e| StoreError::Corrupt(format!("day {stored:?}: {e}")))
    }

    fn migrator() -> &'static Migrator {
        &SQLITE_MIGRATIONS
    }
}

/// SQLite's stored form of a time: fixed-width UTC, microseconds, so that text order is time order.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_timestamps_are_fixed_width_and_round_trip() {
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Sqlite::time(t), "2026-03-04T05:06:07.500000Z");
        assert_eq!(Sqlite::read_time(Sqlite::time(t)).unwrap(), t);
        let whole = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(Sqlite::time(whole), "2026-03-04T05:06:07.000000Z");
        assert!(Sqlite::time(whole) < Sqlite::time(t));
        assert_eq!(Sqlite::day(t.date_naive()), "2026-03-04");
        assert_eq!(Sqlite::read_day(Sqlite::day(t.date_naive())).unwrap(), t.date_naive());
        assert!(Sqlite::read_day("March".to_owned()).is_err());
        assert!(Sqlite::read_time("yesterday".to_owned()).is_err());
    }
}
