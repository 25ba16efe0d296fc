-- Mail, and the tokens mails carry.
--
-- `email_verified_at` is when the owner showed the address to be theirs;
-- an email change clears it.
alter table users add column email_verified_at timestamptz;

-- Tokens sent by mail: one live per user and purpose (a new one replaces
-- the last), stored as SHA-256 digests, single-use, short-lived. `email`
-- is the address the token was sent to: a token for an address the
-- account no longer has is refused.
create table email_tokens (
    digest bytea primary key,
    user_id bigint not null references users (id) on delete cascade,
    purpose text not null check (purpose in ('verify_email', 'reset_password')),
    email text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    unique (user_id, purpose)
);

create index email_tokens_expires_idx on email_tokens (expires_at);

-- Mail waiting to be sent, written in the transaction that makes it due.
-- A sender claims a mail by moving `next_attempt_at` past the time a send
-- may take, sends it, and deletes it; a mail that could not be sent waits
-- longer each time, until `deliver_by`, after which it is dropped. A mail
-- about a token (`user_id`, `kind`) replaces that user's unsent mail of
-- the same kind.
create table mail_outbox (
    id bigserial primary key,
    user_id bigint references users (id) on delete cascade,
    kind text not null,
    recipient text not null,
    subject text not null,
    body text not null,
    attempts int not null default 0,
    last_error text,
    created_at timestamptz not null default now(),
    next_attempt_at timestamptz not null default now(),
    deliver_by timestamptz not null
);

create index mail_outbox_due_idx on mail_outbox (next_attempt_at);
create index mail_outbox_user_idx on mail_outbox (user_id, kind);

insert into access_rules (endpoint, role) values
    ('/auth.v1.AuthService/VerifyEmail', 'anonymous'),
    ('/auth.v1.AuthService/VerifyEmail', 'user'),
    ('/auth.v1.AuthService/VerifyEmail', 'admin'),
    ('/auth.v1.AuthService/ResendEmailVerification', 'user'),
    ('/auth.v1.AuthService/ResendEmailVerification', 'admin'),
    ('/auth.v1.AuthService/RequestPasswordReset', 'anonymous'),
    ('/auth.v1.AuthService/RequestPasswordReset', 'user'),
    ('/auth.v1.AuthService/RequestPasswordReset', 'admin'),
    ('/auth.v1.AuthService/ResetPassword', 'anonymous'),
    ('/auth.v1.AuthService/ResetPassword', 'user'),
    ('/auth.v1.AuthService/ResetPassword', 'admin')
on conflict do nothing;
