-- Opaque refresh tokens, stored by their SHA-256 digest. Each login starts
-- a family; each rotation retires one token and adds the next to the
-- family. Presenting a retired token again revokes the whole family.
create table refresh_tokens (
    id bigint generated always as identity primary key,
    token_hash bytea not null unique,
    family_id uuid not null,
    user_id bigint not null references users (id) on delete cascade,
    expires_at timestamptz not null,
    created_at timestamptz not null default now(),
    -- Set when the token was traded for its successor.
    retired_at timestamptz,
    -- Set when the family was revoked (logout, reuse, user changes).
    revoked_at timestamptz
);

create index refresh_tokens_family_idx on refresh_tokens (family_id);
create index refresh_tokens_user_idx on refresh_tokens (user_id);
