-- ListMessages pages a chat's messages newest first by id
-- (chat_id = $1 and id < $2 order by id desc): without this index each page
-- scanned other chats' rows or sorted the whole chat.
create index messages_chat_page_idx on messages (chat_id, id);
