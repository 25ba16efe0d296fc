//! `access_rules`: which role may call which endpoint.

use sqlx::PgExecutor;

use crate::error::Result;

pub struct AccessRuleRow {
    pub endpoint: String,
    pub role: String,
}

pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<AccessRuleRow>> {
    Ok(sqlx::query_as!(
        AccessRuleRow,
        "select endpoint, role from access_rules order by endpoint, role"
    )
    .fetch_all(db)
    .await?)
}
