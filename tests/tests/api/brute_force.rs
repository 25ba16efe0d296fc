//! Brute-force protection that tells nothing about which names exist,
//! never refuses a right password for a wrong one, and a hashing bound
//! that holds when clients give up.

use std::time::Duration;

use api::auth::v1 as pb;
use tests::http::request;
use tests::services::TestAuth;
use tests::snapshot;
use tonic::Code;

fn login(username: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        username: username.into(),
        password: password.into(),
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
async fn guessing_the_current_password_counts_toward_the_lock() {
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
    let login_locked = auth
        .sessions()
        .login(login("ada", "ada-password"))
        .await
        .expect_err("the same lock");
    assert_eq!(login_locked.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn cancelled_logins_never_run_more_hashes_than_the_bound() {
    let auth = TestAuth::spawn_with(|config| {
        config.passwords.memory_kib = 19 * 1024;
        config.passwords.iterations = 4;
        config.passwords.max_concurrent_hashes = 2;
        config.lockout.max_failures = 1000;
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
