//! Revocation holds at the edges: once a password change, role change,
//! deletion, logout or rename has returned, no token anyone holds answers
//! otherwise, whatever was in flight; and the state every replica keeps in
//! memory is never silently stale.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::v1 as pb;
use sqlx::Connection as _;
use tests::services::{TestAuth, TestUser, eventually};
use tonic::Code;

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

async fn rotate(auth: &TestAuth, token: &str) -> Result<String, tonic::Status> {
    auth.sessions()
        .get_refresh_token(pb::GetRefreshTokenRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|response| response.into_inner().refresh_token)
}

async fn access_token_for(auth: &TestAuth, refresh_token: &str) -> Result<String, tonic::Status> {
    auth.sessions()
        .get_access_token(pb::GetAccessTokenRequest {
            refresh_token: refresh_token.into(),
        })
        .await
        .map(|response| response.into_inner().access_token)
}

/// Rotates `token` in a tight loop until a rotation fails or two seconds
/// pass, recording every token it is given.
fn rotate_in_a_loop(
    auth: &TestAuth,
    mut token: String,
    issued: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    let mut sessions = auth.sessions();
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < until {
            match sessions
                .get_refresh_token(pb::GetRefreshTokenRequest {
                    refresh_token: token.clone(),
                })
                .await
            {
                Ok(response) => {
                    token = response.into_inner().refresh_token;
                    issued.lock().expect("the list").push(token.clone());
                }
                Err(_) => return,
            }
        }
    })
}

/// Every token in `issued` is dead: it buys neither an access token nor a
/// successor.
async fn assert_all_dead(auth: &TestAuth, issued: &[String]) {
    // Newest first: each family's live token is tried before any token it
    // retired, whose reuse would revoke the family by itself.
    for token in issued.iter().rev() {
        let access = access_token_for(auth, token).await;
        assert_eq!(
            access.as_ref().map_err(tonic::Status::code).err(),
            Some(Code::Unauthenticated),
            "a refresh token outlived the revocation: {access:?}"
        );
        let next = rotate(auth, token).await;
        assert_eq!(
            next.map_err(|status| status.code()).err(),
            Some(Code::Unauthenticated)
        );
    }
}

#[tokio::test]
async fn a_password_change_ends_families_rotated_in_a_tight_loop() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let issued = Arc::new(Mutex::new(Vec::new()));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let login = auth.login(ada.id, "ada", "ada-password").await;
        issued
            .lock()
            .expect("the list")
            .push(login.refresh_token.clone());
        loops.push(rotate_in_a_loop(&auth, login.refresh_token, issued.clone()));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;

    auth.users()
        .change_password(ada.request(pb::ChangePasswordRequest {
            id: ada.id,
            current_password: "ada-password".into(),
            new_password: "a new password".into(),
            new_password_confirm: "a new password".into(),
        }))
        .await
        .expect("changing the password");
    for rotating in loops {
        rotating.await.expect("a rotation loop");
    }

    let issued = issued.lock().expect("the list").clone();
    assert!(issued.len() > 8, "the loops hardly ran: {}", issued.len());
    assert_all_dead(&auth, &issued).await;
}

#[tokio::test]
async fn a_logout_ends_a_family_a_thief_rotates_in_a_tight_loop() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let issued = Arc::new(Mutex::new(vec![ada.refresh_token.clone()]));
    let stolen = rotate(&auth, &ada.refresh_token).await.expect("a rotation");
    let thief = rotate_in_a_loop(&auth, stolen.clone(), issued.clone());
    issued.lock().expect("the list").push(stolen);
    tokio::time::sleep(Duration::from_millis(150)).await;

    auth.sessions()
        .logout(pb::LogoutRequest {
            refresh_token: ada.refresh_token.clone(),
        })
        .await
        .expect("logging out");
    thief.await.expect("the thief's loop");

    let issued = issued.lock().expect("the list").clone();
    assert!(issued.len() > 3, "the loop hardly ran: {}", issued.len());
    assert_all_dead(&auth, &issued).await;
}

#[tokio::test]
async fn a_login_whose_hash_check_straddles_a_password_change_gets_no_usable_token() {
    // A user's hash is made slow to check; a second replica with cheap
    // parameters changes the password while the first is checking it. A
    // change that lands before the hash is even read is no straddle (the
    // login is simply wrong): then the next user tries again.
    let slow = TestAuth::spawn_with(|config| {
        config.passwords.memory_kib = 64 * 1024;
        config.passwords.iterations = 6;
    })
    .await;
    let fast = TestAuth::spawn_on(slow.database_url.clone(), |_| {}).await;
    let admin = fast.admin().await;

    for attempt in 0..4 {
        let name = format!("ada{attempt}");
        let user = slow.register(&name).await;
        let login = tokio::spawn({
            let mut sessions = slow.sessions();
            let password = format!("{name}-password");
            async move {
                let answer = sessions
                    .login(pb::LoginRequest {
                        username: name,
                        password,
                        ..Default::default()
                    })
                    .await;
                (answer, tokio::time::Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        fast.users()
            .change_password(admin.request(pb::ChangePasswordRequest {
                id: user.id,
                current_password: String::new(),
                new_password: "a new password".into(),
                new_password_confirm: "a new password".into(),
            }))
            .await
            .expect("changing the password");
        let changed = tokio::time::Instant::now();
        let (answer, answered) = login.await.expect("the login");
        assert!(
            changed < answered,
            "the change did not happen during the login"
        );
        match answer {
            Err(status) if status.message().contains("wrong user name or password") => {
                eprintln!("attempt {attempt}: the change came before the hash was read");
                continue;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert!(
                    status.message().contains("changed while logging in"),
                    "{status:?}"
                );
            }
            Ok(tokens) => {
                let tokens = tokens.into_inner();
                assert_all_dead(&slow, &[tokens.refresh_token]).await;
                assert!(
                    eventually(|| async { check_as(&slow, &tokens.access_token).await.is_err() })
                        .await,
                    "the access token of the straddling login still works"
                );
            }
        }
        return;
    }
    panic!("no password change landed during a hash check");
}

#[tokio::test]
async fn a_concurrent_promotion_and_demotion_each_revoke() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin().await;
    let ada = auth.register("ada").await;
    let version = |db: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("select token_version from users where name = 'ada'")
            .fetch_one(&db)
            .await
            .expect("ada's version")
    };
    let before = version(auth.db.clone()).await;

    // Both changes start while the row is held, so both read it before
    // either writes, unless reading waits for the lock.
    let mut holder = sqlx::PgConnection::connect(&auth.database_url)
        .await
        .expect("a connection");
    let mut held = holder.begin().await.expect("a transaction");
    sqlx::query("select 1 from users where id = $1 for update")
        .bind(ada.id)
        .execute(&mut *held)
        .await
        .expect("holding ada's row");
    let change = |role: pb::Role| {
        let mut users = auth.users();
        let request = admin.request(pb::UpdateRequest {
            id: ada.id,
            name: None,
            email: None,
            role: Some(role.into()),
            ..Default::default()
        });
        tokio::spawn(async move { users.update(request).await })
    };
    // The promotion queues for the row first, the demotion behind it.
    let promote = change(pb::Role::Admin);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let demote = change(pb::Role::User);
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.commit().await.expect("releasing the row");
    let promoted = promote.await.expect("a task").expect("promoting");
    let demoted = demote.await.expect("a task").expect("demoting");

    // The demotion changed the role the promotion left, so both revoked.
    let roles = [promoted, demoted].map(|r| r.into_inner().user.expect("a user").role());
    assert_eq!(roles, [pb::Role::Admin, pb::Role::User]);
    assert_eq!(
        version(auth.db.clone()).await,
        before + 2,
        "a role change did not revoke the tokens issued before it"
    );
}

#[tokio::test]
async fn check_answers_the_current_name_after_a_rename_on_every_replica() {
    let auth = TestAuth::spawn().await;
    let replica = TestAuth::spawn_on(auth.database_url.clone(), |_| {}).await;
    let ada = auth.register("ada").await;

    auth.users()
        .update(ada.request(pb::UpdateRequest {
            id: ada.id,
            current_password: ada.password.clone(),
            name: Some("ada-lovelace".into()),
            email: None,
            role: None,
            ..Default::default()
        }))
        .await
        .expect("renaming");

    let here = check_as(&auth, &ada.access_token)
        .await
        .expect("still valid");
    assert_eq!(here.username, "ada-lovelace");
    assert!(
        eventually(|| async {
            check_as(&replica, &ada.access_token)
                .await
                .is_ok_and(|me| me.username == "ada-lovelace")
        })
        .await,
        "the other replica still answers the old name"
    );
}

#[tokio::test]
async fn a_name_given_up_by_a_rename_is_nobody_elses_until_its_tokens_expire() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let rename = |who: &TestUser, name: &str| {
        let mut users = auth.users();
        let request = who.request(pb::UpdateRequest {
            id: who.id,
            current_password: who.password.clone(),
            name: Some(name.into()),
            email: None,
            role: None,
            ..Default::default()
        });
        async move { users.update(request).await }
    };
    rename(&ada, "ada-lovelace").await.expect("renaming ada");

    // Ada's old tokens still say "ada": nobody else may be "ada" meanwhile.
    let taken = auth
        .users()
        .create(pb::CreateRequest {
            name: "Ada".into(),
            email: "other@example.com".into(),
            password: "a password".into(),
            password_confirm: "a password".into(),
            role: pb::Role::Unspecified.into(),
        })
        .await
        .expect_err("registering a name just given up");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(taken.message().contains("name"), "{taken:?}");
    let taken = rename(&grace, "ADA")
        .await
        .expect_err("taking a name just given up");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert_eq!(
        check_as(&auth, &ada.access_token)
            .await
            .expect("still valid")
            .username,
        "ada-lovelace"
    );

    // Its last holder may have it back; once the hold ends, anyone may.
    rename(&ada, "ada").await.expect("ada takes her name back");
    rename(&ada, "countess").await.expect("renaming ada again");
    sqlx::query("update released_names set reserved_until = now() - interval '1 second'")
        .execute(&auth.db)
        .await
        .expect("ending the holds");
    rename(&grace, "ada").await.expect("the hold is over");
}

#[tokio::test]
async fn a_stale_token_never_blocks_the_open_endpoints() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    auth.users()
        .change_password(ada.request(pb::ChangePasswordRequest {
            id: ada.id,
            current_password: "ada-password".into(),
            new_password: "a new password".into(),
            new_password_confirm: "a new password".into(),
        }))
        .await
        .expect("changing the password");
    let revoked = ada.access_token.clone();

    for stale in [revoked.as_str(), "junk"] {
        let tokens = auth
            .sessions()
            .login(tests::services::with_token(
                pb::LoginRequest {
                    username: "ada".into(),
                    password: "a new password".into(),
                    ..Default::default()
                },
                stale,
            ))
            .await
            .expect("logging in with a stale token attached")
            .into_inner();
        auth.sessions()
            .get_access_token(tests::services::with_token(
                pb::GetAccessTokenRequest {
                    refresh_token: tokens.refresh_token.clone(),
                },
                stale,
            ))
            .await
            .expect("an access token with a stale token attached");
        let next = auth
            .sessions()
            .get_refresh_token(tests::services::with_token(
                pb::GetRefreshTokenRequest {
                    refresh_token: tokens.refresh_token,
                },
                stale,
            ))
            .await
            .expect("rotating with a stale token attached")
            .into_inner()
            .refresh_token;
        auth.sessions()
            .logout(tests::services::with_token(
                pb::LogoutRequest {
                    refresh_token: next,
                },
                stale,
            ))
            .await
            .expect("logging out with a stale token attached");
    }
    let name = "grace";
    auth.users()
        .create(tests::services::with_token(
            pb::CreateRequest {
                name: name.into(),
                email: "grace@example.com".into(),
                password: "grace-password".into(),
                password_confirm: "grace-password".into(),
                role: pb::Role::Unspecified.into(),
            },
            &revoked,
        ))
        .await
        .expect("registering with a stale token attached");
}

#[tokio::test]
async fn a_revocation_made_while_the_listener_is_away_is_enforced_once_it_is_back() {
    let auth = TestAuth::spawn_with(|config| {
        config.policy_max_staleness = Duration::from_secs(4);
    })
    .await;
    let ada: TestUser = auth.register("ada").await;
    check_as(&auth, &ada.access_token)
        .await
        .expect("valid at first");

    // A connection of the test's own, made before the database refuses
    // new ones, and one to the server's own database, to refuse them.
    let mut own = sqlx::PgConnection::connect(&auth.database_url)
        .await
        .expect("a connection");
    let mut server = sqlx::PgConnection::connect(&tests::postgres::admin_url())
        .await
        .expect("a connection to the server");
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&mut own)
        .await
        .expect("the database's name");
    let allow = |yes: bool| {
        sqlx::AssertSqlSafe(format!(
            r#"alter database "{database}" allow_connections {yes}"#
        ))
    };
    sqlx::query(allow(false))
        .execute(&mut server)
        .await
        .expect("refusing connections");
    let terminated: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid() and query ilike 'listen%'",
    )
    .fetch_all(&mut own)
    .await
    .expect("terminating the listener");
    assert_eq!(terminated, [true], "one listener to terminate");
    sqlx::query("update token_revocations set min_token_version = 1 where user_id = $1")
        .bind(ada.id)
        .execute(&mut own)
        .await
        .expect("revoking during the gap");
    sqlx::query(
        "insert into token_revocations (user_id, min_token_version) values ($1, 1) on conflict do nothing",
    )
    .bind(ada.id)
    .execute(&mut own)
    .await
    .expect("revoking during the gap");

    // While the listener cannot come back, checks fail closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = check_as(&auth, &ada.access_token).await;
        match answer.as_ref().map_err(tonic::Status::code) {
            Err(Code::Unavailable) => break,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected UNAVAILABLE while the policy is stale, got {other:?}"),
        }
    }

    sqlx::query(allow(true))
        .execute(&mut server)
        .await
        .expect("allowing connections");
    let back = tokio::time::Instant::now();
    let deadline = back + Duration::from_secs(5);
    loop {
        let code = check_as(&auth, &ada.access_token)
            .await
            .map_err(|s| s.code())
            .err();
        if code == Some(Code::Unauthenticated) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation was not enforced after the listener came back ({code:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "revocation enforced {:?} after connections were allowed again",
        back.elapsed()
    );
}

#[tokio::test]
async fn pruning_deletes_expired_tokens_dead_families_old_revocations_and_idle_throttles() {
    let auth =
        TestAuth::spawn_with(|config| config.prune_interval = Duration::from_millis(200)).await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let count = |sql: &'static str| {
        let db = auth.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .expect("a count")
        }
    };
    sqlx::query(
        "update refresh_tokens set expires_at = now() - interval '1 second'
                 where family_id in (select id from refresh_families where user_id = $1)",
    )
    .bind(ada.id)
    .execute(&auth.db)
    .await
    .expect("expiring ada's tokens");
    sqlx::query(
        "insert into token_revocations (user_id, min_token_version, revoked_at)
                 values (424242, 3, now() - interval '1 day')",
    )
    .execute(&auth.db)
    .await
    .expect("an old revocation");
    sqlx::query(
        "insert into login_throttle (throttle_key, failures, last_failed_at)
                 values ('name:someone', 2, now() - interval '2 days')",
    )
    .execute(&auth.db)
    .await
    .expect("an old throttle");
    sqlx::query(
        "insert into released_names (name, user_id, reserved_until)
                 values ('gone', 424242, now() - interval '1 second'),
                        ('held', 424242, now() + interval '1 hour')",
    )
    .execute(&auth.db)
    .await
    .expect("names given up");
    sqlx::query(
        "insert into device_tokens (token_hash, user_id, expires_at)
         select '\\x00'::bytea, id, now() - interval '1 second' from users where name = 'grace'",
    )
    .execute(&auth.db)
    .await
    .expect("an expired device token");
    // A session ended just now, with no usable token, is kept while its
    // access tokens may live: a replica starting now must load its ending.
    sqlx::query(
        "insert into refresh_families (id, user_id, token_version, expires_at, revoked_at)
         select $1, id, token_version, now() + interval '1 day', now() from users where name = 'grace'",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&auth.db)
    .await
    .expect("a session just ended");
    sqlx::query(
        "insert into login_challenges (digest, user_id, token_version, throttle_key, expires_at)
         select '\\x01'::bytea, id, token_version, 'name:grace', now() - interval '1 second'
         from users where name = 'grace'",
    )
    .execute(&auth.db)
    .await
    .expect("an expired login challenge");
    let live_devices = count("select count(*) from device_tokens where expires_at > now()").await;
    assert!(live_devices >= 1, "logins hand out device tokens");

    assert!(
        eventually(|| async {
            count("select count(*) from refresh_families").await == 2
                && count("select count(*) from login_challenges").await == 0
                && count("select count(*) from token_revocations where user_id = 424242").await == 0
                && count("select count(*) from login_throttle").await == 0
                && count("select count(*) from released_names where name = 'gone'").await == 0
                && count("select count(*) from device_tokens where token_hash = '\\x00'").await == 0
        })
        .await,
        "nothing was pruned"
    );
    // Grace's live session and the admin's are untouched, and so is a
    // name still held.
    assert_eq!(count("select count(*) from released_names").await, 1);
    assert_eq!(
        count("select count(*) from refresh_families where revoked_at is not null").await,
        1,
        "the session ended just now is kept"
    );
    assert_eq!(
        count("select count(*) from device_tokens").await,
        live_devices,
        "only the expired device token goes"
    );
    access_token_for(&auth, &grace.refresh_token)
        .await
        .expect("a live session survives pruning");
}

#[tokio::test]
async fn a_family_ends_at_its_absolute_lifetime_however_often_it_rotates() {
    let auth =
        TestAuth::spawn_with(|config| config.tokens.family_ttl = Duration::from_secs(2)).await;
    let ada = auth.register("ada").await;
    let mut token = ada.refresh_token.clone();
    for _ in 0..3 {
        token = rotate(&auth, &token)
            .await
            .expect("rotating within the lifetime");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = rotate(&auth, &token)
        .await
        .expect_err("past the family's lifetime");
    assert_eq!(late.code(), Code::Unauthenticated);
}
