//! The store's error type and how the usage writer classifies failures.

use std::io;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend this store speaks. Only the scheme is kept: the rest may hold a password.
    #[error("unsupported database URL scheme {scheme:?}: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl {
        /// What came before `:` in the URL.
        scheme: String,
    },
    /// A tenant of that name exists already.
    #[error("tenant {0:?} already exists")]
    DuplicateTenant(String),
    /// No tenant of that name.
    #[error("tenant {0:?} not found")]
    TenantNotFound(String),
    /// No virtual key with that id.
    #[error("key {0:?} not found")]
    KeyNotFound(String),
    /// No subscription request with that id.
    #[error("subscription {0:?} not found")]
    SubscriptionNotFound(String),
    /// The subscription request was decided already.
    #[error("subscription {id:?} is already {status}")]
    SubscriptionDecided {
        /// The request.
        id: String,
        /// Its decision.
        status: &'static str,
    },
    /// A value the store refuses (empty name, negative budget...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Preparing a local file (the SQLite file's folder, the spool) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// The operating system's random source failed while generating a key.
    #[error("random source failed: {0}")]
    Random(String),
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A database operation took longer than its bound (the usage writer's `write_timeout`).
    #[error("database operation timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A stored value the code cannot read back (a bad timestamp, a malformed JSON list).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// What a failed write says about what to do next, used by the usage writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database is down, unreachable, locked or out of resources: keep the rows and retry later.
    Transient,
    /// The database refused these rows' values: retrying will not help.
    Data,
    /// Not known: the writer pings the database to tell the two apart.
    Unknown,
}

impl StoreError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Classifies a failed write for the usage writer.
    ///
    /// Postgres: SQLSTATE classes 22 (data exception) and 23 (integrity) are the rows' fault; 08
    /// (connection), 40 (rollback), 53 (resources), 57 (operator intervention), 55P03 (lock) and 25006
    /// (read-only) are transient. SQLite: CONSTRAINT, MISMATCH, TOOBIG and RANGE are the rows' fault; BUSY,
    /// LOCKED, READONLY, IOERR, FULL, CANTOPEN, NOMEM, INTERRUPT and PROTOCOL are transient. Connection and
    /// pool errors and timeouts are transient. Anything else is [`Failure::Unknown`].
    pub fn classify(&self) -> Failure {
        let Self::Database(error) = self else {
            return match self {
                Self::Io { .. } | Self::Timeout(_) => Failure::Transient,
                _ => Failure::Unknown,
            };
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Failure::Transient,
            sqlx::Error::Encode(_) => Failure::Data,
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let backend = if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
                    Backend::Postgres
                } else {
                    Backend::Sqlite
                };
                classify_code(backend, &code)
            }
            _ => Failure::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Postgres,
    Sqlite,
}

/// Classifies a Postgres SQLSTATE (five characters) or a SQLite result code (a number, possibly extended).
fn classify_code(backend: Backend, code: &str) -> Failure {
    if let Backend::Sqlite = backend {
        // Extended result codes carry the primary code in their low byte.
        return match code.parse::<i32>().map(|c| c & 0xff) {
            Ok(18 | 19 | 20 | 25) => Failure::Data,
            Ok(5 | 6 | 7 | 8 | 9 | 10 | 13 | 14 | 15) => Failure::Transient,
            _ => Failure::Unknown,
        };
    }
    match code.get(..2) {
        Some("22" | "23") => Failure::Data,
        Some("08" | "40" | "53" | "57") => Failure::Transient,
        _ if code == "55P03" || code == "25006" => Failure::Transient,
        _ => Failure::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify() {
        let pg = |c| classify_code(Backend::Postgres, c);
        let sqlite = |c| classify_code(Backend::Sqlite, c);
        assert_eq!(pg("23505"), Failure::Data);
        assert_eq!(pg("22021"), Failure::Data);
        assert_eq!(pg("08006"), Failure::Transient);
        assert_eq!(pg("57P01"), Failure::Transient);
        assert_eq!(pg("55P03"), Failure::Transient);
        assert_eq!(pg("42P01"), Failure::Unknown);
        assert_eq!(sqlite("5"), Failure::Transient);
        assert_eq!(sqlite("2067"), Failure::Data); // SQLITE_CONSTRAINT_UNIQUE
        assert_eq!(sqlite("517"), Failure::Transient); // SQLITE_BUSY_SNAPSHOT
        assert_eq!(sqlite("1"), Failure::Unknown);
    }
}
