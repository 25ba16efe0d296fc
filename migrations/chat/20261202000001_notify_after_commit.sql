-- A message no longer notifies from inside its own transaction: a
-- transaction with a pending notification takes a database-wide lock at
-- commit, so every send in every chat committed one at a time. The
-- replica that stored a message fans it out to its own streams at once and
-- announces it to the others after the commit, batched
-- (`pg_notify('chat_events', 'message:<chat_id>:<message_id>')`). Deleting
-- a chat, which is rare, still notifies from its transaction.
drop trigger messages_notify on messages;
