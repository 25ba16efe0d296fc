-- Brute-force protection per login name, known to the service or not, so
-- that locking out tells nothing about which names exist. Keyed by
-- lower(name), the same folding as the unique index on users.
--
-- An attempt reserves a slot (pending) before its password is checked and
-- settles it after: a wrong password becomes a failure, a right one clears
-- the row. Failures and pending attempts together never exceed the limit,
-- so concurrent wrong guesses cannot overshoot it; an attempt that finds
-- every slot taken waits for one rather than being refused, so concurrent
-- right ones all get through.
create table login_throttle (
    name_key text primary key,
    -- Consecutive failures, forgotten after the configured reset time.
    failures integer not null default 0 check (failures >= 0),
    -- Attempts reserved and not yet settled.
    pending integer not null default 0 check (pending >= 0),
    -- When the last slot was reserved: pending attempts of a replica that
    -- died are forgotten a minute after the last reservation.
    pending_since timestamptz,
    last_failed_at timestamptz,
    locked_until timestamptz
);

create index login_throttle_last_failed_idx on login_throttle (last_failed_at);

-- The columns this table replaces.
alter table users drop column failed_logins;
alter table users drop column last_failed_login_at;
alter table users drop column locked_until;
