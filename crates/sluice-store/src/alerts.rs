//! Budget alerts already sent: the store's record that makes each threshold of a tenant's budget fire once
//! per period, whichever replica sees it first and across restarts.

use chrono::{DateTime, Utc};

use crate::model::BudgetPeriod;

/// One budget alert sent: a tenant's spend was seen at or past `threshold_bp` of its budget in `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredAlert {
    /// The tenant's name.
    pub tenant: String,
    /// The budget period, as [`period_key`] writes it; for a subscription request announced,
    /// `subscription:<request id>` (with `threshold_bp` and `spend_micros` 0).
    pub period: String,
    /// The threshold in basis points of the budget (8000 = 80%).
    pub threshold_bp: u32,
    /// The tenant's spend in micro-dollars when the threshold was seen crossed.
    pub spend_micros: i64,
    /// When (microsecond precision, as stored).
    pub fired_at: DateTime<Utc>,
}

/// The stored name of the budget period containing `now`: `YYYY-MM` for a monthly budget, `YYYY-MM-DD`
/// for a daily one (UTC), so a tenant whose period changes never meets an old period's records.
pub fn period_key(period: BudgetPeriod, now: DateTime<Utc>) -> String {
    match period {
        BudgetPeriod::Month => now.format("%Y-%m").to_string(),
        BudgetPeriod::Day => now.format("%Y-%m-%d").to_string(),
    }
}
