-- A login starts a family; its refresh tokens rotate within it. Whether a
-- refresh token may be used is decided by its family, in the statement
-- that uses it: the family must not be revoked (logout, reuse), must be
-- within its absolute lifetime, and must have been started at the user's
-- current token version. A password change, role change or deletion bumps
-- the version (or removes the user), which ends every family started
-- before it, including one whose login or rotation was in flight then:
-- no lock and no race decides it.
create table refresh_families (
    id uuid primary key,
    user_id bigint not null references users (id) on delete cascade,
    -- The user's token version when the family started.
    token_version bigint not null,
    created_at timestamptz not null default now(),
    -- Rotation never extends a family past this.
    expires_at timestamptz not null,
    revoked_at timestamptz
);

create index refresh_families_user_idx on refresh_families (user_id);

insert into refresh_families (id, user_id, token_version, created_at, expires_at, revoked_at)
select t.family_id, t.user_id, u.token_version, min(t.created_at),
       min(t.created_at) + interval '30 days', max(t.revoked_at)
from refresh_tokens t join users u on u.id = t.user_id
group by t.family_id, t.user_id, u.token_version;

-- Revocation is the family's, not the token's.
alter table refresh_tokens drop column revoked_at;
alter table refresh_tokens drop column user_id;
alter table refresh_tokens
    add constraint refresh_tokens_family_fkey
    foreign key (family_id) references refresh_families (id) on delete cascade;

-- Pruning finds expired tokens by this.
create index refresh_tokens_expires_idx on refresh_tokens (expires_at);
