//! `login_challenges`: logins whose password was right, waiting for their
//! second factor.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::error::Result;

/// What a challenge remembers of its login.
pub struct Challenge {
    pub user_id: i64,
    pub token_version: i64,
    pub throttle_key: String,
    pub device: Option<Vec<u8>>,
    pub client: String,
    pub address: String,
}

/// The most challenges one user may have waiting: older ones give way.
pub const PER_USER: i64 = 10;

pub async fn insert(
    db: impl PgExecutor<'_>,
    digest: &[u8],
    challenge: &Challenge,
    expires_at: OffsetDateTime,
) -> Result<()> {
    sqlx::query!(
        "with dropped as (
             delete from login_challenges
             where digest in (select digest from login_challenges where user_id = $2
                              order by expires_at desc offset $9)
         )
         insert into login_challenges
             (digest, user_id, token_version, throttle_key, device, client, address, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
        digest,
        challenge.user_id,
        challenge.token_version,
        challenge.throttle_key,
        challenge.device,
        challenge.client,
        challenge.address,
        expires_at,
        PER_USER - 1
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The challenge with this digest, if it has not expired.
pub async fn find(db: impl PgExecutor<'_>, digest: &[u8]) -> Result<Option<Challenge>> {
    Ok(sqlx::query_as!(
        Challenge,
        "select user_id, token_version, throttle_key, device, client, address
         from login_challenges where digest = $1 and expires_at > now()",
        digest
    )
    .fetch_optional(db)
    .await?)
}

/// Takes the challenge, once: whether this call did.
pub async fn take(db: impl PgExecutor<'_>, digest: &[u8]) -> Result<bool> {
    let taken = sqlx::query!(
        "delete from login_challenges where digest = $1 and expires_at > now()",
        digest
    )
    .execute(db)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// Counts a wrong code; the challenge ends (expires now) at `limit` of
/// them.
pub async fn count_failure(db: impl PgExecutor<'_>, digest: &[u8], limit: i32) -> Result<()> {
    sqlx::query!(
        "update login_challenges
         set failures = failures + 1,
             expires_at = case when failures + 1 >= $2 then now() else expires_at end
         where digest = $1",
        digest,
        limit
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes expired challenges; how many went.
pub async fn prune(db: impl PgExecutor<'_>, batch: i64) -> Result<u64> {
    let pruned = sqlx::query!(
        "delete from login_challenges where digest in
             (select digest from login_challenges where expires_at <= now() limit $1)",
        batch
    )
    .execute(db)
    .await?;
    Ok(pruned.rows_affected())
}
