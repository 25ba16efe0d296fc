-- Who may move their read marker and say they are typing: any member, as
-- the chat service decides; users and admins may call.
insert into access_rules (endpoint, role) values
    ('/chat.v1.ChatService/MarkRead', 'user'),
    ('/chat.v1.ChatService/MarkRead', 'admin'),
    ('/chat.v1.ChatService/SetTyping', 'user'),
    ('/chat.v1.ChatService/SetTyping', 'admin')
on conflict do nothing;
