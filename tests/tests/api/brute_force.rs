//! Brute-force protection that tells nothing about which names exist,
//! never refuses a right password for a wrong one, and a hashing bound
//! that holds when clients give up.

use std::time::Duration;

use api::auth::v1 as pb;
use tests::http::request;
use tests::services::TestAuth;
use tests::snapshot::{self, retry_after};
use tonic::Code;

fn login(username: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        username: username.into(),
        password: password.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn unknown_names_lock_exactly_like_known_ones() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 3).await;
    auth.register("ada").await;

    let mut answers = Vec::new();
    for name in ["ada", "nobody"] {
        for _ in 0..3 {
            let failed = auth
                .sessions()
                .login(login(name, "wrong password"))
                .await
                .expect_err("wrong");
            assert_eq!(failed.code(), Code::Unauthenticated);
        }
        let locked = auth
            .sessions()
            .login(login(name, "wrong password"))
            .await
            .expect_err("locked");
        let mut answer = snapshot::status(&locked);
        answer["retry_after_seconds"] = serde_json::Value::Null;
        answers.push(answer);
    }
    assert_eq!(answers[0]["code"], "ResourceExhausted", "{answers:?}");
    assert_eq!(answers[0], answers[1], "a known name locks differently");
}

#[tokio::test]
async fn concurrent_right_logins_to_one_account_all_succeed() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 5).await;
    auth.register("worker").await;

    let logins = (0..96).map(|_| {
        let mut sessions = auth.sessions();
        tokio::spawn(async move { sessions.login(login("worker", "worker-password")).await })
    });
    let codes: Vec<Code> = futures::future::join_all(logins)
        .await
        .into_iter()
        .map(|joined| match joined.expect("a task") {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        })
        .collect();
    assert!(codes.iter().all(|code| *code == Code::Ok), "{codes:?}");
}

#[tokio::test]
async fn guessing_the_current_password_locks_the_session_not_the_login() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 3).await;
    let ada = auth.register("ada").await;
    let change = |current: &str| {
        ada.request(pb::ChangePasswordRequest {
            id: ada.id,
            current_password: current.into(),
            new_password: "a new password".into(),
            new_password_confirm: "a new password".into(),
        })
    };
    for _ in 0..3 {
        let wrong = auth
            .users()
            .change_password(change("a guess"))
            .await
            .expect_err("a wrong current password");
        assert_eq!(wrong.code(), Code::InvalidArgument);
    }
    let locked = auth
        .users()
        .change_password(change("ada-password"))
        .await
        .expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert!(retry_after(&locked).is_some(), "{locked:?}");
    // Whoever holds a stolen access token cannot lock its owner out.
    auth.sessions()
        .login(login("ada", "ada-password"))
        .await
        .expect("the owner still logs in");
}

/// Logs in with a device token; the answer or the status.
async fn login_on(
    auth: &TestAuth,
    name: &str,
    password: &str,
    device_token: &str,
) -> Result<pb::LoginResponse, tonic::Status> {
    auth.sessions()
        .login(pb::LoginRequest {
            username: name.into(),
            password: password.into(),
            device_token: device_token.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn strangers_locking_a_name_leave_its_owner_on_a_known_device_in() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 3).await;
    auth.register("ada").await;
    let laptop = login_on(&auth, "ada", "ada-password", "")
        .await
        .expect("a first login")
        .device_token;
    assert!(!laptop.is_empty(), "a login hands out a device token");

    for _ in 0..3 {
        let wrong = login_on(&auth, "ada", "a guess", "")
            .await
            .expect_err("wrong");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let locked = login_on(&auth, "ada", "ada-password", "")
        .await
        .expect_err("the name is locked for unknown clients");
    assert_eq!(locked.code(), Code::ResourceExhausted);

    let next = login_on(&auth, "ada", "ada-password", &laptop)
        .await
        .expect("the owner's device gets in")
        .device_token;
    assert_ne!(next, laptop, "each login replaces the device token");
    // The replaced token is spent: it counts as an unknown client again.
    let spent = login_on(&auth, "ada", "ada-password", &laptop)
        .await
        .expect_err("a replaced token");
    assert_eq!(spent.code(), Code::ResourceExhausted);
    login_on(&auth, "ada", "ada-password", &next)
        .await
        .expect("the new token works");
}

#[tokio::test]
async fn a_device_token_gets_a_few_guesses_and_binds_to_its_own_user() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 3).await;
    auth.register("ada").await;
    auth.register("grace").await;
    let ada_device = login_on(&auth, "ada", "ada-password", "")
        .await
        .expect("ada logs in")
        .device_token;
    let grace_device = login_on(&auth, "grace", "grace-password", "")
        .await
        .expect("grace logs in")
        .device_token;

    // A thief holding ada's device token guesses: locked per device.
    for _ in 0..3 {
        let wrong = login_on(&auth, "ada", "a guess", &ada_device)
            .await
            .expect_err("wrong");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let device_locked = login_on(&auth, "ada", "ada-password", &ada_device)
        .await
        .expect_err("the device is locked");
    assert_eq!(device_locked.code(), Code::ResourceExhausted);
    assert!(retry_after(&device_locked).is_some(), "{device_locked:?}");

    // Grace's token says nothing about ada: those guesses count against
    // ada's name, and lock it for every client without ada's token.
    for _ in 0..3 {
        let wrong = login_on(&auth, "ada", "a guess", &grace_device)
            .await
            .expect_err("wrong");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let name_locked = login_on(&auth, "ada", "ada-password", &grace_device)
        .await
        .expect_err("ada's name is locked");
    assert_eq!(name_locked.code(), Code::ResourceExhausted);
    login_on(&auth, "grace", "grace-password", &grace_device)
        .await
        .expect("grace's own device is untouched");
}

#[tokio::test]
async fn one_address_guessing_across_names_is_locked_out() {
    let auth = TestAuth::spawn_with(|config| {
        config.lockout.max_failures = 100;
        config.lockout.address_max_failures = 4;
    })
    .await;
    auth.register("ada").await;
    let device = login_on(&auth, "ada", "ada-password", "")
        .await
        .expect("ada logs in")
        .device_token;

    for n in 0..4 {
        let wrong = login_on(&auth, &format!("victim{n}"), "password1", "")
            .await
            .expect_err("wrong");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let locked = login_on(&auth, "ada", "ada-password", "")
        .await
        .expect_err("this address is locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert!(locked.message().contains("address"), "{locked:?}");
    assert!(retry_after(&locked).is_some(), "{locked:?}");
    // A client with a device token is not counted by address.
    login_on(&auth, "ada", "ada-password", &device)
        .await
        .expect("a known device gets in");

    // Through the REST gateway the HTTP client is the one counted.
    let rest = request(
        auth.http_addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(&serde_json::json!({"username": "ada", "password": "ada-password"})),
    )
    .await;
    assert_eq!(rest.status, 429, "{}", rest.body);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    let guess = |forwarded_for: &str| {
        let mut request = tonic::Request::new(login("nobody", "password1"));
        request
            .metadata_mut()
            .insert("x-forwarded-for", forwarded_for.parse().expect("ascii"));
        request
    };

    // Untrusted: what the client claims is ignored.
    let auth = TestAuth::spawn_with(|config| config.lockout.address_max_failures = 3).await;
    for n in 0..3 {
        let _ = auth
            .sessions()
            .login(guess(&format!("198.51.100.{n}")))
            .await;
    }
    let locked = auth
        .sessions()
        .login(guess("198.51.100.99"))
        .await
        .expect_err("the peer is locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    auth.stop().await;

    // Trusted (the tests connect from loopback): each forwarded client
    // counts on its own.
    let auth = TestAuth::spawn_with(|config| {
        config.lockout.address_max_failures = 3;
        config.edge.trusted_proxies =
            host::client_address::TrustedProxies::parse("127.0.0.1, ::1").expect("a list");
    })
    .await;
    for _ in 0..3 {
        let _ = auth.sessions().login(guess("198.51.100.1")).await;
    }
    let locked = auth
        .sessions()
        .login(guess("198.51.100.1"))
        .await
        .expect_err("that client is locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    let other = auth
        .sessions()
        .login(guess("198.51.100.2"))
        .await
        .expect_err("a wrong password");
    assert_eq!(other.code(), Code::Unauthenticated, "{other:?}");
}

#[tokio::test]
async fn cancelled_logins_never_run_more_hashes_than_the_bound() {
    let auth = TestAuth::spawn_with(|config| {
        config.passwords.memory_kib = 19 * 1024;
        config.passwords.iterations = 4;
        config.passwords.max_concurrent_hashes = 2;
        config.lockout.max_failures = 1000;
        config.lockout.address_max_failures = 1000;
    })
    .await;
    auth.register("ada").await;
    let in_flight = || async {
        let scrape = request(auth.metrics_addr, "GET", "/metrics", None, None)
            .await
            .body;
        scrape
            .lines()
            .find_map(|line| line.strip_prefix("auth_password_hashes_in_flight "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .expect("the gauge")
    };

    let mut most: f64 = 0.0;
    for _ in 0..40 {
        let mut sessions = auth.sessions();
        let mut attempt = tonic::Request::new(login("ada", "a guess"));
        attempt.set_timeout(Duration::from_millis(3));
        let _ = sessions.login(attempt).await;
        most = most.max(in_flight().await);
    }
    // Registrations hash outside any lockout: the client leaving must not
    // free their turn either.
    for n in 0..40 {
        let mut users = auth.users();
        let name = format!("cancelled{n}");
        let mut attempt = tonic::Request::new(pb::CreateRequest {
            email: format!("{name}@example.com"),
            name,
            password: "a password".into(),
            password_confirm: "a password".into(),
            role: pb::Role::Unspecified.into(),
        });
        attempt.set_timeout(Duration::from_millis(3));
        let _ = users.create(attempt).await;
        most = most.max(in_flight().await);
    }
    while in_flight().await > 0.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        most <= 2.0,
        "{most} hashes ran at once, above the bound of 2"
    );
}
