-- Each member's read marker: the last message they have read, by its
-- sequence number (which counts what is unread: chats.last_seq - read_seq)
-- and its id (which clients name). It only moves forward.
--
-- Members so far have read their chats up to now: nothing they had before
-- markers existed shows as unread.
alter table chat_members
    add column read_seq bigint not null default 0,
    add column read_message_id bigint not null default 0;

update chat_members m
set read_seq = c.last_seq,
    read_message_id = coalesce(
        (select id from messages s where s.chat_id = c.id and s.seq = c.last_seq), 0)
from chats c
where c.id = m.chat_id and c.last_seq > 0;
