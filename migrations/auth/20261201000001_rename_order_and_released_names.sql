-- Renames are ordered by a number of their own, taken from one sequence,
-- so that every replica keeps the latest name whatever the clocks say and
-- however the notices and reloads interleave. It never restarts, even
-- after a pruned entry comes back.
create sequence name_versions;
alter table token_revocations add column name_version bigint not null default 0;

create or replace function notify_token_revocation() returns trigger as $$
begin
    perform pg_notify('token_revocations',
        new.user_id::text || ':' || new.min_token_version::text || ':' || new.name_version::text
        || coalesce(':' || new.current_name, ''));
    return null;
end;
$$ language plpgsql;

-- A name given up by a rename stays its last holder's until every access
-- token that carries it has expired: no one else's calls can be answered
-- with it meanwhile, on any replica. Keyed by the folded name, as the
-- unique index on users folds it.
create table released_names (
    name text primary key,
    user_id bigint not null,
    reserved_until timestamptz not null
);

create index released_names_reserved_until_idx on released_names (reserved_until);
