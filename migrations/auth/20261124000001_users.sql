-- Keeps updated_at current on every update of a table that has one.
create or replace function set_updated_at() returns trigger as $$
begin
    new.updated_at = now();
    return new;
end;
$$ language plpgsql;

create table users (
    id bigint generated always as identity primary key,
    name text not null,
    email text not null,
    -- argon2id, as a PHC string.
    password_hash text not null,
    role text not null check (role in ('user', 'admin')),
    -- Access tokens carry the version current when they were issued; a
    -- change of role or password bumps it, which revokes them.
    token_version bigint not null default 0,
    -- Brute-force protection: consecutive failed logins and the lock they led to.
    failed_logins integer not null default 0,
    last_failed_login_at timestamptz,
    locked_until timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- Names and emails are unique regardless of case.
create unique index users_name_key on users (lower(name));
create unique index users_email_key on users (lower(email));

create trigger users_set_updated_at before update on users
    for each row execute function set_updated_at();
