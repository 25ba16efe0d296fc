-- Access tokens older than a user's last revocation are rejected at once.
-- Every auth replica keeps this table in memory, kept current by the
-- notifications below, so checking a token needs no query. Rows outlive
-- their user on purpose: a deleted user's tokens stay revoked.
create table token_revocations (
    user_id bigint primary key,
    -- Tokens issued with a lower version are revoked.
    min_token_version bigint not null,
    revoked_at timestamptz not null default now()
);

create function notify_token_revocation() returns trigger as $$
begin
    perform pg_notify('token_revocations', new.user_id::text || ':' || new.min_token_version::text);
    return null;
end;
$$ language plpgsql;

create trigger token_revocations_notify after insert or update on token_revocations
    for each row execute function notify_token_revocation();
