-- Device tokens (OWASP's "device cookies"): a successful login hands the
-- client one, bound to the user and kept here only as its SHA-256 digest.
-- A login that presents a valid one for the user it names is throttled
-- per device, not per name, so that strangers guessing a name cannot lock
-- its owner out of the devices they used before.
create table device_tokens (
    token_hash bytea primary key,
    user_id bigint not null references users (id) on delete cascade,
    issued_at timestamptz not null default now(),
    expires_at timestamptz not null
);

-- The newest per user are kept (a bound per user); expired ones pruned.
create index device_tokens_user_idx on device_tokens (user_id, issued_at desc);
create index device_tokens_expires_idx on device_tokens (expires_at);

-- The throttle now counts more than names: a name for unknown clients
-- ('name:<name>'), a device ('device:<digest>'), a session changing its
-- password ('session:<family>'), a client address ('address:<ip>').
alter table login_throttle rename column name_key to throttle_key;
update login_throttle set throttle_key = 'name:' || throttle_key;
