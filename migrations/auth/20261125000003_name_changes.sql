-- Access tokens carry the user's name. After a rename, `Check` answers the
-- new name for tokens issued before it, from this column, held in memory
-- by every replica like the revocations. An entry can go once every token
-- issued before it has expired (the access token lifetime, plus a margin).
alter table token_revocations add column current_name text;

create or replace function notify_token_revocation() returns trigger as $$
begin
    perform pg_notify('token_revocations',
        new.user_id::text || ':' || new.min_token_version::text
        || coalesce(':' || new.current_name, ''));
    return null;
end;
$$ language plpgsql;

create index token_revocations_revoked_at_idx on token_revocations (revoked_at);
