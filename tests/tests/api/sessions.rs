//! `auth.v1.AuthService`: logins, rotation, reuse detection, logout and
//! brute-force protection.

use std::time::Duration;

use api::auth::v1 as pb;
use serde_json::json;
use tests::services::TestAuth;
use tests::snapshot;
use tonic::Code;

fn login(username: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        username: username.into(),
        password: password.into(),
        ..Default::default()
    }
}

fn refresh(token: &str) -> pb::GetRefreshTokenRequest {
    pb::GetRefreshTokenRequest {
        refresh_token: token.into(),
    }
}

async fn check_as(auth: &TestAuth, access_token: &str) -> Result<pb::CheckResponse, tonic::Status> {
    auth.access()
        .check(tests::services::with_token(
            pb::CheckRequest {
                endpoint_address: "/chat.v1.ChatService/Create".into(),
            },
            access_token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn login_answers_with_tokens_that_name_the_user() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    let me = check_as(&auth, &ada.access_token)
        .await
        .expect("the access token works");

    assert_eq!(
        (me.user_id, me.username.as_str(), me.role()),
        (ada.id, "ada", pb::Role::User)
    );
    assert!(ada.refresh_token.starts_with("rt_"));
}

#[tokio::test]
async fn unknown_names_and_wrong_passwords_get_the_same_answer() {
    let auth = TestAuth::spawn().await;
    auth.register("ada").await;

    let wrong_password = auth
        .sessions()
        .login(login("ada", "not the password"))
        .await
        .expect_err("wrong password");
    let unknown_user = auth
        .sessions()
        .login(login("nobody", "ada-password"))
        .await
        .expect_err("unknown user");

    assert_eq!(wrong_password.code(), Code::Unauthenticated);
    assert_eq!(
        snapshot::status(&wrong_password),
        snapshot::status(&unknown_user)
    );
    insta::assert_json_snapshot!(snapshot::status(&unknown_user));
}

#[tokio::test]
async fn login_names_are_case_insensitive() {
    let auth = TestAuth::spawn().await;
    auth.register("ada").await;
    auth.sessions()
        .login(login("ADA", "ada-password"))
        .await
        .expect("any case");
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_digests() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("select token_hash from refresh_tokens")
        .fetch_all(&auth.db)
        .await
        .expect("the tokens");
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], ada.refresh_token.as_bytes());
    assert_eq!(stored[0].len(), 32);
}

#[tokio::test]
async fn a_refresh_token_is_traded_for_a_new_one_once() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    let next = auth
        .sessions()
        .get_refresh_token(refresh(&ada.refresh_token))
        .await
        .expect("rotation")
        .into_inner()
        .refresh_token;
    assert_ne!(next, ada.refresh_token);

    let access = auth
        .sessions()
        .get_access_token(pb::GetAccessTokenRequest {
            refresh_token: next.clone(),
        })
        .await
        .expect("the new token works")
        .into_inner()
        .access_token;
    check_as(&auth, &access)
        .await
        .expect("its access token works");
}

#[tokio::test]
async fn presenting_a_retired_token_again_revokes_the_whole_family() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let next = auth
        .sessions()
        .get_refresh_token(refresh(&ada.refresh_token))
        .await
        .expect("rotation")
        .into_inner()
        .refresh_token;

    let reuse = auth
        .sessions()
        .get_refresh_token(refresh(&ada.refresh_token))
        .await
        .expect_err("reuse");
    let successor = auth
        .sessions()
        .get_refresh_token(refresh(&next))
        .await
        .expect_err("the successor");

    insta::assert_json_snapshot!(json!({
        "reuse": snapshot::status(&reuse),
        "successor": snapshot::status(&successor),
    }));
    let other_login = auth.login(ada.id, "ada", "ada-password").await;
    auth.sessions()
        .get_refresh_token(refresh(&other_login.refresh_token))
        .await
        .expect("another family is untouched");
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_yield_at_most_one_new_token() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    let attempts = (0..8).map(|_| {
        let mut sessions = auth.sessions();
        let token = ada.refresh_token.clone();
        tokio::spawn(async move { sessions.get_refresh_token(refresh(&token)).await })
    });
    let results = futures::future::join_all(attempts).await;

    let issued: Vec<String> = results
        .into_iter()
        .filter_map(|joined| joined.expect("a task").ok())
        .map(|response| response.into_inner().refresh_token)
        .collect();
    assert!(issued.len() <= 1, "{} tokens issued for one", issued.len());
    let rows: i64 = sqlx::query_scalar("select count(*) from refresh_tokens")
        .fetch_one(&auth.db)
        .await
        .expect("counting tokens");
    assert!(
        rows <= 2,
        "{rows} tokens stored for one login and one rotation"
    );
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let next = auth
        .sessions()
        .get_refresh_token(refresh(&ada.refresh_token))
        .await
        .expect("rotation")
        .into_inner()
        .refresh_token;

    auth.sessions()
        .logout(pb::LogoutRequest {
            refresh_token: next.clone(),
        })
        .await
        .expect("logging out");

    let after = auth
        .sessions()
        .get_access_token(pb::GetAccessTokenRequest {
            refresh_token: next,
        })
        .await
        .expect_err("a logged-out token");
    assert_eq!(after.code(), Code::Unauthenticated);
    assert_eq!(after.message(), "refresh token has been revoked");
    let unknown = auth
        .sessions()
        .logout(pb::LogoutRequest {
            refresh_token: "rt_never-issued".into(),
        })
        .await
        .expect_err("an unknown token");
    assert_eq!(unknown.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn empty_and_oversized_tokens_are_invalid_arguments() {
    let auth = TestAuth::spawn().await;
    let empty = auth
        .sessions()
        .get_refresh_token(refresh(""))
        .await
        .expect_err("empty");
    let huge = auth
        .sessions()
        .get_refresh_token(refresh(&"x".repeat(513)))
        .await
        .expect_err("huge");
    let no_name = auth
        .sessions()
        .login(login("", "password"))
        .await
        .expect_err("no name");
    insta::assert_json_snapshot!(json!({
        "empty": snapshot::status(&empty),
        "huge": snapshot::status(&huge),
        "no_name": snapshot::status(&no_name),
    }));
}

#[tokio::test]
async fn repeated_failures_lock_the_account_with_a_retry_delay() {
    let auth = TestAuth::spawn_with(|config| {
        config.lockout.max_failures = 3;
        config.lockout.wait_increment = Duration::from_secs(30);
    })
    .await;
    auth.register("ada").await;

    for _ in 0..3 {
        let failed = auth
            .sessions()
            .login(login("ada", "wrong password"))
            .await
            .expect_err("wrong");
        assert_eq!(failed.code(), Code::Unauthenticated);
    }
    let locked = auth
        .sessions()
        .login(login("ada", "ada-password"))
        .await
        .expect_err("locked");

    insta::assert_json_snapshot!(snapshot::status(&locked), { ".retry_after_seconds" => "[seconds]", ".message" => "[message]" });
    let retry = snapshot::status(&locked)["retry_after_seconds"]
        .as_u64()
        .expect("retry info");
    assert!((1..=30).contains(&retry), "retry after {retry} s");
    assert!(locked.message().starts_with("too many failed logins"));
}

#[tokio::test]
async fn waits_grow_with_each_failure_after_the_lock() {
    let auth = TestAuth::spawn_with(|config| {
        config.lockout.max_failures = 2;
        config.lockout.wait_increment = Duration::from_secs(60);
    })
    .await;
    auth.register("ada").await;
    for _ in 0..2 {
        auth.sessions()
            .login(login("ada", "wrong password"))
            .await
            .expect_err("wrong");
    }
    let first_wait: f64 = sqlx::query_scalar(
        "select extract(epoch from locked_until - now())::float8 from login_throttle where throttle_key = 'name:ada'",
    )
    .fetch_one(&auth.db)
    .await
    .expect("the lock");
    // Let the lock pass, then fail once more: the next lock is longer.
    sqlx::query("update login_throttle set locked_until = now() where throttle_key = 'name:ada'")
        .execute(&auth.db)
        .await
        .expect("ending the lock");
    auth.sessions()
        .login(login("ada", "wrong password"))
        .await
        .expect_err("wrong");
    let second_wait: f64 = sqlx::query_scalar(
        "select extract(epoch from locked_until - now())::float8 from login_throttle where throttle_key = 'name:ada'",
    )
    .fetch_one(&auth.db)
    .await
    .expect("the lock");

    assert!(
        (50.0..=60.0).contains(&first_wait),
        "first wait {first_wait}"
    );
    assert!(
        (110.0..=120.0).contains(&second_wait),
        "second wait {second_wait}"
    );
}

#[tokio::test]
async fn concurrent_wrong_passwords_cannot_exceed_the_limit() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 3).await;
    auth.register("ada").await;

    let attempts = (0..20).map(|_| {
        let mut sessions = auth.sessions();
        tokio::spawn(async move { sessions.login(login("ada", "wrong password")).await })
    });
    let codes: Vec<Code> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|joined| {
            joined
                .expect("a task")
                .expect_err("a wrong password")
                .code()
        })
        .collect();

    let checked = codes
        .iter()
        .filter(|code| **code == Code::Unauthenticated)
        .count();
    let refused = codes
        .iter()
        .filter(|code| **code == Code::ResourceExhausted)
        .count();
    assert_eq!(checked, 3, "{codes:?}");
    assert_eq!(refused, 17, "{codes:?}");
}

#[tokio::test]
async fn a_right_password_clears_earlier_failures() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 3).await;
    auth.register("ada").await;
    for _ in 0..2 {
        auth.sessions()
            .login(login("ada", "wrong password"))
            .await
            .expect_err("wrong");
    }
    auth.sessions()
        .login(login("ada", "ada-password"))
        .await
        .expect("right");
    for _ in 0..2 {
        let failed = auth
            .sessions()
            .login(login("ada", "wrong password"))
            .await
            .expect_err("wrong");
        assert_eq!(failed.code(), Code::Unauthenticated, "locked too early");
    }
}
