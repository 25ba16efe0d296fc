//! What a failed database call means for the client, by cause: PostgreSQL's
//! SQLSTATE classes (`08` connection, `23` integrity, `40` transaction
//! rollback, `53` resources, `57` operator intervention) and sqlx's own
//! errors. Each service maps these onto its error enum, so that an outage
//! is `UNAVAILABLE`, a lost race is `ABORTED` or `NOT_FOUND`, and only a
//! bug is `INTERNAL`.

/// The cause of a failed database call, as far as a client is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached or is shutting down, or the pool had
    /// no connection in time: try again later.
    Unavailable,
    /// A deadlock or serialization failure: the transaction may be retried.
    Aborted,
    /// A unique constraint, named when PostgreSQL names it.
    UniqueViolation(Option<String>),
    /// A row that a statement refers to is gone (deleted meanwhile).
    Gone,
    /// A query expected a row and found none.
    RowNotFound,
    /// Anything else: a bug.
    Other,
}

impl Failure {
    /// What the client is told (a bug, [`Failure::Other`], is told nothing
    /// here: the service logs it and answers an opaque `INTERNAL`).
    pub fn message(&self) -> String {
        match self {
            Failure::Unavailable => "the database is unavailable; try again".into(),
            Failure::Aborted => "a concurrent change got in the way; try again".into(),
            Failure::UniqueViolation(constraint) => format!(
                "already exists ({})",
                constraint.as_deref().unwrap_or("a unique constraint")
            ),
            Failure::Gone | Failure::RowNotFound => {
                "what the request refers to no longer exists".into()
            }
            Failure::Other => "internal error".into(),
        }
    }
}

/// Why `error` happened; an outage and a lost race are logged here.
pub fn classify(error: &sqlx::Error) -> Failure {
    let failure = cause(error);
    match failure {
        Failure::Unavailable => tracing::warn!(%error, "the database is unavailable"),
        Failure::Aborted => tracing::info!(%error, "a transaction lost a race"),
        _ => {}
    }
    failure
}

fn cause(error: &sqlx::Error) -> Failure {
    match error {
        // A connection that ends mid-message (a server going down during
        // the handshake, say) shows as a protocol error.
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Unavailable,
        sqlx::Error::RowNotFound => Failure::RowNotFound,
        sqlx::Error::Database(database) => {
            let code = database.code();
            let code = code.as_deref().unwrap_or_default();
            match code {
                "23505" => Failure::UniqueViolation(database.constraint().map(str::to_owned)),
                "23503" => Failure::Gone,
                "40001" | "40P01" => Failure::Aborted,
                // query_canceled (57014) is a statement timeout or a cancel
                // request: the database did not answer in time.
                _ if ["08", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class)) =>
                {
                    Failure::Unavailable
                }
                _ => Failure::Other,
            }
        }
        _ => Failure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_connection_failures_are_unavailability() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Unavailable);
        assert_eq!(classify(&sqlx::Error::PoolClosed), Failure::Unavailable);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&sqlx::Error::Io(reset)), Failure::Unavailable);
    }

    #[test]
    fn a_missing_row_and_a_connection_cut_mid_message_are_told_apart() {
        assert_eq!(classify(&sqlx::Error::RowNotFound), Failure::RowNotFound);
        assert_eq!(
            classify(&sqlx::Error::Protocol(
                "unexpected response from SSLRequest".into()
            )),
            Failure::Unavailable
        );
        assert_eq!(
            classify(&sqlx::Error::ColumnNotFound("id".into())),
            Failure::Other
        );
    }
}
