-- A member added by a replica that predates read markers (while a rolling
-- deploy runs old and new replicas side by side) names no marker; like
-- every member added, they start with the chat's history read, not all of
-- it unread. The chat's row is locked by every change of members, so its
-- last message stays the last until the insert commits.
create function chat_members_start_read() returns trigger
language plpgsql as $$
declare
    last bigint;
    last_id bigint;
begin
    select c.last_seq,
           coalesce((select s.id from messages s where s.chat_id = c.id and s.seq = c.last_seq), 0)
    into last, last_id
    from chats c
    where c.id = new.chat_id;
    if found then
        new.read_seq := last;
        new.read_message_id := last_id;
    end if;
    return new;
end
$$;

create trigger chat_members_start_read
    before insert on chat_members
    for each row
    when (new.read_seq = 0)
    execute function chat_members_start_read();
