//! What a migration cannot compute in SQL, filled in at start-up: the
//! skeletons of names made before names had one.

use sqlx::PgPool;

use crate::db;
use crate::domain::skeleton;
use crate::error::Result;

const BATCH: i64 = 1_000;

/// Gives every name without a skeleton its own, oldest first. A name that
/// looks like one already there keeps working under a skeleton suffixed
/// with a control character and its id, which no name's skeleton can be,
/// so it reserves nothing new; it is logged. Idempotent, and safe with
/// several replicas starting at once. How many were grandfathered.
pub async fn name_skeletons(pool: &PgPool) -> Result<u64> {
    let mut grandfathered = 0;
    let mut seen = std::collections::HashSet::new();
    loop {
        let names = db::users::without_skeleton(pool, BATCH).await?;
        if names.is_empty() {
            return Ok(grandfathered);
        }
        for (id, name) in names {
            // A row handed back again was not set: a bug, not a loop.
            if !seen.insert(id) {
                return Err(crate::error::Error::Unavailable(format!(
                    "the skeleton of user {id} cannot be stored"
                )));
            }
            let looks = skeleton(&name);
            if !db::users::set_skeleton(pool, id, &looks).await? {
                let own = format!("{looks}\u{1}{id}");
                if !db::users::set_skeleton(pool, id, &own).await? {
                    return Err(crate::error::Error::Unavailable(format!(
                        "the skeleton of user {id} cannot be stored"
                    )));
                }
                grandfathered += 1;
                tracing::warn!(
                    user_id = id,
                    "a name made before names were compared by looks resembles another; it keeps working"
                );
            }
        }
    }
}
