//! The REST/JSON gateways on auth's and chat's HTTP ports: routes from the protos'
//! `google.api.http` annotations, proto3 JSON, grpc-gateway's status mapping.

use serde_json::json;
use tests::http::request;
use tests::services::{TestAuth, TestChat};

#[tokio::test]
async fn users_are_created_read_updated_and_deleted_over_rest() {
    let auth = TestAuth::spawn().await;
    let http = auth.http_addr;

    let created = request(
        http,
        "POST",
        "/v1/users",
        None,
        Some(&json!({ "name": "ada", "email": "ada@example.com", "password": "correct horse", "passwordConfirm": "correct horse" })),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.json()["id"]
        .as_str()
        .expect("int64 ids are JSON strings")
        .to_owned();

    let login = request(
        http,
        "POST",
        "/v1/auth/login",
        None,
        Some(&json!({ "username": "ada", "password": "correct horse" })),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.json()["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned();
    assert!(
        login.json()["refreshToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("rt_"))
    );

    let read = request(http, "GET", &format!("/v1/users/{id}"), Some(&token), None).await;
    assert_eq!(read.status, 200, "{}", read.body);
    let user = &read.json()["user"];
    assert_eq!(
        (user["name"].as_str(), user["role"].as_str()),
        (Some("ada"), Some("ROLE_USER"))
    );
    assert!(
        user["createdAt"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "RFC 3339: {user}"
    );

    let updated = request(
        http,
        "PATCH",
        &format!("/v1/users/{id}"),
        Some(&token),
        Some(&json!({ "email": "ada@lovelace.org" })),
    )
    .await;
    // One's own email changes only with proof.
    assert_eq!(updated.status, 400, "{}", updated.body);
    let updated = request(
        http,
        "PATCH",
        &format!("/v1/users/{id}"),
        Some(&token),
        Some(&json!({ "email": "ada@lovelace.org", "currentPassword": "correct horse" })),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.json()["user"]["email"], "ada@lovelace.org");
    assert_eq!(updated.json()["user"]["name"], "ada");

    let deleted = request(
        http,
        "DELETE",
        &format!("/v1/users/{id}"),
        Some(&token),
        Some(&json!({ "currentPassword": "correct horse" })),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let gone = request(http, "GET", &format!("/v1/users/{id}"), Some(&token), None).await;
    assert_eq!(gone.status, 401, "a deleted user's token: {}", gone.body);
}

#[tokio::test]
async fn errors_map_to_http_statuses_with_a_json_body() {
    let auth = TestAuth::spawn().await;
    let http = auth.http_addr;
    let ada = auth.register("ada").await;
    let admin = auth.admin().await;

    let invalid = request(http, "POST", "/v1/users", None, Some(&json!({ "name": "", "email": "x@example.com", "password": "long enough", "passwordConfirm": "long enough" }))).await;
    let unauthenticated = request(http, "GET", &format!("/v1/users/{}", ada.id), None, None).await;
    let forbidden = request(http, "GET", "/v1/users", Some(&ada.access_token), None).await;
    let not_found = request(
        http,
        "GET",
        "/v1/users/999999",
        Some(&admin.access_token),
        None,
    )
    .await;
    let conflict = request(http, "POST", "/v1/users", None, Some(&json!({ "name": "ada", "email": "other@example.com", "password": "long enough", "passwordConfirm": "long enough" }))).await;
    let bad_json = request(
        http,
        "POST",
        "/v1/auth/login",
        None,
        Some(&json!({ "username": 42 })),
    )
    .await;
    let bad_path = request(
        http,
        "GET",
        "/v1/users/abc",
        Some(&admin.access_token),
        None,
    )
    .await;
    let no_route = request(http, "GET", "/v1/nothing", None, None).await;
    let wrong_method = request(http, "PUT", "/v1/users", None, None).await;

    let outcome = |response: &tests::http::HttpResponse| json!({ "status": response.status, "body": response.json() });
    insta::assert_json_snapshot!(json!({
        "invalid": outcome(&invalid),
        "unauthenticated": outcome(&unauthenticated),
        "forbidden": outcome(&forbidden),
        "not_found": outcome(&not_found),
        "conflict": outcome(&conflict),
        "bad_json": outcome(&bad_json),
        "bad_path": outcome(&bad_path),
        "no_route": outcome(&no_route),
        "wrong_method": outcome(&wrong_method),
    }));
}

#[tokio::test]
async fn list_takes_its_page_from_the_query_string() {
    let auth = TestAuth::spawn().await;
    auth.register("ada").await;
    auth.register("grace").await;
    let admin = auth.admin().await;

    let first = request(
        auth.http_addr,
        "GET",
        "/v1/users?pageSize=2",
        Some(&admin.access_token),
        None,
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let page = first.json();
    assert_eq!(page["users"].as_array().map(Vec::len), Some(2));
    let token = page["nextPageToken"].as_str().expect("a next page");
    let second = request(
        auth.http_addr,
        "GET",
        &format!("/v1/users?page_size=2&page_token={token}"),
        Some(&admin.access_token),
        None,
    )
    .await;
    assert_eq!(second.json()["users"][0]["name"], "grace");
}

#[tokio::test]
async fn a_locked_login_says_when_to_retry() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 1).await;
    auth.register("ada").await;
    let wrong = json!({ "username": "ada", "password": "wrong password" });
    request(auth.http_addr, "POST", "/v1/auth/login", None, Some(&wrong)).await;
    let locked = request(auth.http_addr, "POST", "/v1/auth/login", None, Some(&wrong)).await;
    assert_eq!(locked.status, 429);
    assert!(
        locked
            .header("retry-after")
            .is_some_and(|seconds| seconds.parse::<u64>().is_ok())
    );
    assert_eq!(
        locked.json()["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_annotated_rpc() {
    let auth = TestAuth::spawn().await;
    let document = request(auth.http_addr, "GET", "/openapi.json", None, None)
        .await
        .json();

    let mut operations: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .as_object()
                .expect("methods")
                .iter()
                .map(move |(method, spec)| {
                    format!(
                        "{} {path} {}",
                        method.to_uppercase(),
                        spec["operationId"].as_str().unwrap_or("?")
                    )
                })
        })
        .collect();
    operations.sort();
    insta::assert_json_snapshot!(operations);
    assert_eq!(
        document["components"]["schemas"]["auth.v1.User"]["properties"]["createdAt"]["format"],
        "date-time"
    );
}

/// Chat's own gateway, on its own port: the same guarded routes as gRPC,
/// so the access check and membership rules apply to REST calls too.
#[tokio::test]
async fn chats_are_listed_read_changed_and_left_over_chats_own_rest_port() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let http = chat.http_addr;

    let created = request(
        http,
        "POST",
        "/v1/chats",
        Some(&ada.access_token),
        Some(&json!({ "usernames": ["grace"], "title": "Engines" })),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.json()["id"].as_str().expect("an id").to_owned();

    let sent = request(
        http,
        "POST",
        &format!("/v1/chats/{id}/messages"),
        Some(&grace.access_token),
        Some(&json!({ "text": "hello", "clientMessageId": "m-1" })),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);

    let listed = request(
        http,
        "GET",
        "/v1/chats?pageSize=10",
        Some(&ada.access_token),
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let first = &listed.json()["chats"][0];
    assert_eq!(first["id"].as_str(), Some(id.as_str()));
    assert_eq!(first["role"], "CHAT_ROLE_CREATOR");
    assert_eq!(first["lastMessage"]["text"], "hello");
    assert_eq!(first["unreadCount"], "1", "uint64 counts are JSON strings");
    let message_id = sent.json()["message"]["id"]
        .as_str()
        .expect("a message id")
        .to_owned();
    let marked = request(
        http,
        "POST",
        &format!("/v1/chats/{id}/read"),
        Some(&ada.access_token),
        Some(&json!({ "messageId": message_id })),
    )
    .await;
    assert_eq!(marked.status, 200, "{}", marked.body);
    assert_eq!(marked.json()["readMessageId"], message_id.as_str());
    assert_eq!(marked.json().get("unreadCount"), None, "zero, left out");
    let relisted = request(http, "GET", "/v1/chats", Some(&ada.access_token), None).await;
    let first = &relisted.json()["chats"][0];
    assert_eq!(first["readMessageId"], message_id.as_str());
    assert_eq!(
        first.get("unreadCount"),
        None,
        "proto3 JSON leaves a zero count out"
    );
    let typing = request(
        http,
        "POST",
        &format!("/v1/chats/{id}/typing"),
        Some(&grace.access_token),
        Some(&json!({})),
    )
    .await;
    assert_eq!(typing.status, 200, "{}", typing.body);

    let renamed = request(
        http,
        "PATCH",
        &format!("/v1/chats/{id}"),
        Some(&ada.access_token),
        Some(&json!({ "title": "Analytical" })),
    )
    .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    let read = request(
        http,
        "GET",
        &format!("/v1/chats/{id}"),
        Some(&grace.access_token),
        None,
    )
    .await;
    assert_eq!(read.json()["chat"]["title"], "Analytical");

    let refused = request(
        http,
        "PATCH",
        &format!("/v1/chats/{id}"),
        Some(&grace.access_token),
        Some(&json!({ "title": "Mine" })),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let anonymous = request(http, "GET", "/v1/chats", None, None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    let left = request(
        http,
        "DELETE",
        &format!("/v1/chats/{id}/members/{}", grace.id),
        Some(&grace.access_token),
        None,
    )
    .await;
    assert_eq!(left.status, 200, "{}", left.body);
    assert_eq!(left.json()["removed"], true);
    let gone = request(
        http,
        "GET",
        &format!("/v1/chats/{id}"),
        Some(&grace.access_token),
        None,
    )
    .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
}

#[tokio::test]
async fn a_path_variable_cannot_be_overridden_from_the_query_string() {
    let auth = TestAuth::spawn().await;
    let chat = TestChat::spawn(&auth).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let linus = auth.register("linus").await;
    let adas = chat.create_chat(&ada, &[&linus]).await;
    let graces = chat.create_chat(&grace, &[&linus]).await;
    chat.send(&grace, graces, "grace's words").await;

    // The path names ada's chat, which grace is not in; a query parameter
    // naming grace's own chat, by either of its names, changes nothing.
    for field in ["chatId", "chat_id"] {
        let read = request(
            chat.http_addr,
            "GET",
            &format!("/v1/chats/{adas}/messages?{field}={graces}"),
            Some(&grace.access_token),
            None,
        )
        .await;
        assert_eq!(read.status, 404, "{field}: {}", read.body);
    }
    // And a removal removes whom the path names, or nobody.
    let removed = request(
        chat.http_addr,
        "DELETE",
        &format!(
            "/v1/chats/{graces}/members/{}?userId={}",
            grace.id, linus.id
        ),
        Some(&grace.access_token),
        None,
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    let members: Vec<i64> = chat
        .chats()
        .get_chat(linus.request(api::chat::v1::GetChatRequest { id: graces }))
        .await
        .expect("grace's chat, as linus")
        .into_inner()
        .chat
        .expect("a chat")
        .members
        .iter()
        .map(|member| member.user_id)
        .collect();
    assert_eq!(members, vec![linus.id], "the query string chose who left");
}

#[tokio::test]
async fn sessions_are_listed_and_ended_over_rest_with_the_browsers_own_words() {
    let auth = TestAuth::spawn().await;
    let http = auth.http_addr;
    let ada = auth.register("ada").await;
    let login = tests::http::request_with(
        http,
        "POST",
        "/v1/auth/login",
        &[
            ("Content-Type", "application/json"),
            (
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
            ),
        ],
        &json!({ "username": "ada", "password": "ada-password" }).to_string(),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let browser = login.json()["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned();

    let listed = request(
        http,
        "GET",
        "/v1/auth/sessions",
        Some(&ada.access_token),
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let sessions = listed.json()["sessions"]
        .as_array()
        .expect("sessions")
        .clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let from_browser = sessions
        .iter()
        .find(|s| s["client"] == "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
        .expect("the browser's session, in its own words");
    assert_ne!(from_browser["current"], json!(true));
    let id = from_browser["id"].as_str().expect("an id");

    let ended = request(
        http,
        "DELETE",
        &format!("/v1/auth/sessions/{id}"),
        Some(&ada.access_token),
        None,
    )
    .await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    let refused = request(http, "GET", "/v1/auth/sessions", Some(&browser), None).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let unknown = request(
        http,
        "DELETE",
        "/v1/auth/sessions/not-a-session",
        Some(&ada.access_token),
        None,
    )
    .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let others = request(
        http,
        "POST",
        "/v1/auth/sessions:revoke-others",
        Some(&ada.access_token),
        Some(&json!({})),
    )
    .await;
    assert_eq!(others.status, 200, "{}", others.body);
}

#[tokio::test]
async fn two_factor_login_is_set_up_and_completed_over_rest() {
    let auth = TestAuth::spawn().await;
    let http = auth.http_addr;
    let ada = auth.register("ada").await;
    let enrolled = request(
        http,
        "POST",
        "/v1/auth/totp:enroll",
        Some(&ada.access_token),
        Some(&json!({})),
    )
    .await;
    assert_eq!(enrolled.status, 200, "{}", enrolled.body);
    let secret = tests::totp::base32_decode(enrolled.json()["secret"].as_str().expect("a secret"));
    let now = tests::totp::now();
    let confirmed = request(
        http,
        "POST",
        "/v1/auth/totp:confirm",
        Some(&ada.access_token),
        Some(&json!({ "code": tests::totp::code_at(&secret, now, 6), "currentPassword": "ada-password" })),
    )
    .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(
        confirmed.json()["recoveryCodes"].as_array().map(Vec::len),
        Some(10)
    );

    let old_client = request(
        http,
        "POST",
        "/v1/auth/login",
        None,
        Some(&json!({ "username": "ada", "password": "ada-password" })),
    )
    .await;
    assert_eq!(old_client.status, 400, "{}", old_client.body);
    let login = request(
        http,
        "POST",
        "/v1/auth/login",
        None,
        Some(
            &json!({ "username": "ada", "password": "ada-password", "acceptsSecondFactor": true }),
        ),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let challenge = login.json()["secondFactorChallenge"]
        .as_str()
        .expect("a challenge")
        .to_owned();
    let done = request(
        http,
        "POST",
        "/v1/auth/login:complete",
        None,
        Some(
            &json!({ "challenge": challenge, "code": tests::totp::code_at(&secret, now + 30, 6) }),
        ),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.json()["accessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}

#[tokio::test]
async fn an_address_is_verified_and_a_password_reset_over_rest() {
    let server = tests::mail::MailServer::start();
    let smtp = server.smtp_config(None);
    let auth = TestAuth::spawn_with(|config| config.mail.smtp = Some(smtp)).await;
    let http = auth.http_addr;
    let ada = auth.register("ada").await;
    let within = std::time::Duration::from_secs(60);

    let mail = server
        .wait_for("ada@example.com", "Confirm", 1, within)
        .await;
    let verified = request(
        http,
        "POST",
        "/v1/auth/email:verify",
        None,
        Some(&json!({ "token": mail.link_token("verify") })),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.json()["email"], "ada@example.com");
    let resend = request(
        http,
        "POST",
        "/v1/auth/email:resend-verification",
        Some(&ada.access_token),
        Some(&json!({})),
    )
    .await;
    assert_eq!(resend.status, 400, "verified already: {}", resend.body);

    for email in ["ada@example.com", "nobody@example.com"] {
        let asked = request(
            http,
            "POST",
            "/v1/auth/password:request-reset",
            None,
            Some(&json!({ "email": email })),
        )
        .await;
        assert_eq!((asked.status, asked.body.as_str()), (200, "{}"), "{email}");
    }
    let mail = server.wait_for("ada@example.com", "Reset", 1, within).await;
    let reset = |token: String| async move {
        request(
            http,
            "POST",
            "/v1/auth/password:reset",
            None,
            Some(&json!({
                "token": token,
                "newPassword": "a-new-password",
                "newPasswordConfirm": "a-new-password",
            })),
        )
        .await
    };
    let done = reset(mail.link_token("reset")).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let again = reset(mail.link_token("reset")).await;
    assert_eq!(again.status, 401, "a used token: {}", again.body);
    auth.login(ada.id, "ada", "a-new-password").await;
}
