//! What a migration cannot compute in SQL, filled in at start-up: the
//! skeletons of names made before names had one.

use sqlx::PgPool;

use crate::db;
use crate::domain::skeleton;
use crate::error::Result;

const BATCH: i64 = 1_000;

/// Gives every name without a skeleton its own, oldest first. A name that
/// looks like one already there keeps working under a skeleton suffixed
/// with its id, so it reserves nothing new; it is logged. Idempotent, and
/// safe with several replicas starting at once. How many were grandfathered.
pub async fn name_skeletons(pool: &PgPool) -> Result<u64> {
    let mut grandfathered = 0;
    loop {
        let names = db::users::without_skeleton(pool, BATCH).await?;
        if names.is_empty() {
            return Ok(grandfathered);
        }
        for (id, name) in names {
            let looks = skeleton(&name);
            if !db::users::set_skeleton(pool, id, &looks).await? {
                db::users::set_skeleton(pool, id, &format!("{looks}#{id}")).await?;
                grandfathered += 1;
                tracing::warn!(
                    user_id = id,
                    "a name made before names were compared by looks resembles another; it keeps working"
                );
            }
        }
    }
}
