-- Chats and their members. Users belong to the auth service: they are
-- known here by id only, with no foreign key across the two databases.
create table chats (
    id bigint generated always as identity primary key,
    title text not null,
    created_by bigint not null,
    -- The sequence number of the chat's latest message. Sending a message
    -- takes the next one while holding this row's lock, so a chat's
    -- messages commit in the order of their ids and streams never see a
    -- later message before an earlier one.
    last_seq bigint not null default 0,
    created_at timestamptz not null default now()
);

create table chat_members (
    chat_id bigint not null references chats (id) on delete cascade,
    user_id bigint not null,
    primary key (chat_id, user_id)
);

create index chat_members_user_idx on chat_members (user_id);

create table messages (
    id bigint generated always as identity primary key,
    chat_id bigint not null references chats (id) on delete cascade,
    -- 1, 2, 3... within the chat, without gaps.
    seq bigint not null,
    from_user_id bigint not null,
    -- As it was when the message was sent.
    from_username text not null,
    text text not null,
    -- The sender's idempotency key, when given.
    client_message_id text,
    created_at timestamptz not null default now(),
    unique (chat_id, seq)
);

-- A retried send finds the first one instead of storing a second.
create unique index messages_client_message_id_key
    on messages (chat_id, from_user_id, client_message_id)
    where client_message_id is not null;

-- Every replica fans messages out to its own subscribers; PostgreSQL tells
-- all of them about each message and each deleted chat.
create function notify_chat_event() returns trigger as $$
begin
    if tg_op = 'INSERT' then
        perform pg_notify('chat_events', 'message:' || new.chat_id::text || ':' || new.id::text);
    else
        perform pg_notify('chat_events', 'deleted:' || old.id::text);
    end if;
    return null;
end;
$$ language plpgsql;

create trigger messages_notify after insert on messages
    for each row execute function notify_chat_event();

create trigger chats_notify after delete on chats
    for each row execute function notify_chat_event();
