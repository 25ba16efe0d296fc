-- Which role may call which endpoint (a gRPC full method name). An endpoint
-- with no rule is denied to everyone. 'anonymous' lets calls without a
-- token through. Every auth replica keeps these rules in memory and reloads
-- them when the notification below says they changed.
create table access_rules (
    endpoint text not null check (endpoint ~ '^/[A-Za-z0-9_.]+/[A-Za-z0-9_]+$'),
    role text not null check (role in ('anonymous', 'user', 'admin')),
    primary key (endpoint, role)
);

create function notify_access_rules_changed() returns trigger as $$
begin
    perform pg_notify('access_rules_changed', '');
    return null;
end;
$$ language plpgsql;

create trigger access_rules_notify after insert or update or delete or truncate on access_rules
    for each statement execute function notify_access_rules_changed();

insert into access_rules (endpoint, role) values
    -- Registration is open; an admin's token may create admins.
    ('/auth.v1.UserService/Create', 'anonymous'),
    ('/auth.v1.UserService/Create', 'user'),
    ('/auth.v1.UserService/Create', 'admin'),
    -- Users act on themselves, admins on anyone (checked by the handlers).
    ('/auth.v1.UserService/Get', 'user'),
    ('/auth.v1.UserService/Get', 'admin'),
    ('/auth.v1.UserService/Update', 'user'),
    ('/auth.v1.UserService/Update', 'admin'),
    ('/auth.v1.UserService/Delete', 'user'),
    ('/auth.v1.UserService/Delete', 'admin'),
    ('/auth.v1.UserService/ChangePassword', 'user'),
    ('/auth.v1.UserService/ChangePassword', 'admin'),
    ('/auth.v1.UserService/LookupUsernames', 'user'),
    ('/auth.v1.UserService/LookupUsernames', 'admin'),
    ('/auth.v1.UserService/List', 'admin'),
    -- Sessions are reached with credentials or refresh tokens, not access tokens.
    ('/auth.v1.AuthService/Login', 'anonymous'),
    ('/auth.v1.AuthService/Login', 'user'),
    ('/auth.v1.AuthService/Login', 'admin'),
    ('/auth.v1.AuthService/GetRefreshToken', 'anonymous'),
    ('/auth.v1.AuthService/GetRefreshToken', 'user'),
    ('/auth.v1.AuthService/GetRefreshToken', 'admin'),
    ('/auth.v1.AuthService/GetAccessToken', 'anonymous'),
    ('/auth.v1.AuthService/GetAccessToken', 'user'),
    ('/auth.v1.AuthService/GetAccessToken', 'admin'),
    ('/auth.v1.AuthService/Logout', 'anonymous'),
    ('/auth.v1.AuthService/Logout', 'user'),
    ('/auth.v1.AuthService/Logout', 'admin'),
    -- The chat service. Deleting someone else's chat is for admins only,
    -- which the chat service decides, as it knows who created the chat.
    ('/chat.v1.ChatService/Create', 'user'),
    ('/chat.v1.ChatService/Create', 'admin'),
    ('/chat.v1.ChatService/Delete', 'user'),
    ('/chat.v1.ChatService/Delete', 'admin'),
    ('/chat.v1.ChatService/SendMessage', 'user'),
    ('/chat.v1.ChatService/SendMessage', 'admin'),
    ('/chat.v1.ChatService/ListMessages', 'user'),
    ('/chat.v1.ChatService/ListMessages', 'admin'),
    ('/chat.v1.ChatService/ConnectChat', 'user'),
    ('/chat.v1.ChatService/ConnectChat', 'admin');
