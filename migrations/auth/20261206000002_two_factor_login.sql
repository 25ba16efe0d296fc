-- Two-factor login with TOTP (RFC 6238). A secret is pending until a code
-- from it confirms it; `last_step` is the last 30 s step a code was
-- accepted for, so no code is accepted twice.
create table totp_credentials (
    user_id bigint primary key references users (id) on delete cascade,
    secret bytea not null,
    confirmed_at timestamptz,
    last_step bigint not null default 0,
    created_at timestamptz not null default now()
);

-- Ten per user, shown once, stored as SHA-256 digests; each works once.
create table recovery_codes (
    user_id bigint not null references users (id) on delete cascade,
    code_hash bytea not null,
    used_at timestamptz,
    primary key (user_id, code_hash)
);

-- A login whose password was right and whose second factor is due. Stored
-- as a digest, single-use, short-lived; it remembers whom the login's
-- attempts count against.
create table login_challenges (
    digest bytea primary key,
    user_id bigint not null references users (id) on delete cascade,
    token_version bigint not null,
    -- The lockout scope of the login's password check (`name:…` or
    -- `device:…`), which its codes count against too.
    throttle_key text not null,
    device bytea,
    client text not null default '',
    address text not null default '',
    failures int not null default 0,
    expires_at timestamptz not null
);

create index login_challenges_expires_idx on login_challenges (expires_at);
create index login_challenges_user_idx on login_challenges (user_id);

insert into access_rules (endpoint, role) values
    ('/auth.v1.AuthService/CompleteLogin', 'anonymous'),
    ('/auth.v1.AuthService/CompleteLogin', 'user'),
    ('/auth.v1.AuthService/CompleteLogin', 'admin'),
    ('/auth.v1.AuthService/EnrollTotp', 'user'),
    ('/auth.v1.AuthService/EnrollTotp', 'admin'),
    ('/auth.v1.AuthService/ConfirmTotp', 'user'),
    ('/auth.v1.AuthService/ConfirmTotp', 'admin'),
    ('/auth.v1.AuthService/DisableTotp', 'user'),
    ('/auth.v1.AuthService/DisableTotp', 'admin')
on conflict do nothing;
