-- Who may call the chat service's membership endpoints, and auth's lookup
-- of names by id that chat uses to show a chat's members. Which member may
-- do what within a chat (creator, member, admin) the chat service decides.
insert into access_rules (endpoint, role) values
    ('/auth.v1.UserService/LookupUserIds', 'user'),
    ('/auth.v1.UserService/LookupUserIds', 'admin'),
    ('/chat.v1.ChatService/ListChats', 'user'),
    ('/chat.v1.ChatService/ListChats', 'admin'),
    ('/chat.v1.ChatService/GetChat', 'user'),
    ('/chat.v1.ChatService/GetChat', 'admin'),
    ('/chat.v1.ChatService/AddMembers', 'user'),
    ('/chat.v1.ChatService/AddMembers', 'admin'),
    ('/chat.v1.ChatService/RemoveMember', 'user'),
    ('/chat.v1.ChatService/RemoveMember', 'admin'),
    ('/chat.v1.ChatService/UpdateChat', 'user'),
    ('/chat.v1.ChatService/UpdateChat', 'admin')
on conflict do nothing;
