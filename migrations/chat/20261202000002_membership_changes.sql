-- Members come and go after a chat is created.
--
-- joined_at orders a chat's members: when the creator leaves, the member
-- who joined first becomes the creator. The clock, not the transaction's
-- start: a chat's creator is added by a statement before the others'.
alter table chat_members add column joined_at timestamptz not null default clock_timestamp();

-- Members so far joined when their chat was created, its creator first.
update chat_members m
set joined_at = c.created_at - case when m.user_id = c.created_by then interval '1 microsecond' else interval '0' end
from chats c
where c.id = m.chat_id;

-- last_activity_at orders a user's chats, most recent first: the last
-- message's time, set by the send that takes the chat's next sequence
-- number, or the chat's creation.
--
-- members_version goes up with every removal. Each replica's poll compares
-- it for the chats it streams, so a removed member's streams end even when
-- the announcement of the removal is lost.
alter table chats
    add column last_activity_at timestamptz not null default now(),
    add column members_version bigint not null default 0;

update chats c
set last_activity_at = coalesce(
    (select m.created_at from messages m where m.chat_id = c.id and m.seq = c.last_seq),
    c.created_at
);
