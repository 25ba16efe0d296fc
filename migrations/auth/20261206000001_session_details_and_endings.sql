-- What a person needs to tell their sessions apart: when each was last
-- used, from which client and from where.
alter table refresh_families
    add column last_used_at timestamptz,
    add column client text not null default '',
    add column address text not null default '';

update refresh_families set last_used_at = created_at;

alter table refresh_families
    alter column last_used_at set not null,
    alter column last_used_at set default now();

create index refresh_families_user_used_idx on refresh_families (user_id, last_used_at desc);

-- A session ended (logout, revoked by its owner, a refresh token reused)
-- ends its access tokens too: every replica hears of it at once, and
-- reloads the ones ended within the tokens' lifetime.
create index refresh_families_revoked_idx on refresh_families (revoked_at)
    where revoked_at is not null;

create function notify_session_ended() returns trigger as $$
begin
    perform pg_notify('sessions_ended', new.user_id::text || ':' || new.id::text);
    return null;
end;
$$ language plpgsql;

create trigger refresh_families_ended after update of revoked_at on refresh_families
    for each row when (old.revoked_at is null and new.revoked_at is not null)
    execute function notify_session_ended();

-- Any signed-in user may list and end their own sessions.
insert into access_rules (endpoint, role) values
    ('/auth.v1.AuthService/ListSessions', 'user'),
    ('/auth.v1.AuthService/ListSessions', 'admin'),
    ('/auth.v1.AuthService/RevokeSession', 'user'),
    ('/auth.v1.AuthService/RevokeSession', 'admin'),
    ('/auth.v1.AuthService/RevokeOtherSessions', 'user'),
    ('/auth.v1.AuthService/RevokeOtherSessions', 'admin')
on conflict do nothing;
