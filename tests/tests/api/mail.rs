//! Email verification and password reset through a real SMTP server
//! (`aiosmtpd`, over STARTTLS with a certificate the test issues): the
//! tests read each mail, follow its token, and check single use, expiry,
//! the same answer for unknown addresses, revocation after a reset, the
//! notice of an email change, and mail held while the server is down.

use std::time::Duration;

use api::auth::v1 as pb;
use tests::certificates::TestCa;
use tests::mail::MailServer;
use tests::services::{TestAuth, TestUser, eventually, with_token};
use tests::snapshot::retry_after;
use tonic::Code;

const WITHIN: Duration = Duration::from_secs(60);
const VERIFY: &str = "Confirm your email address";
const RESET: &str = "Reset your password";
const CHANGED: &str = "Your email address was changed";
const NEW_PASSWORD: &str = "Your password was changed";

fn email_of(name: &str) -> String {
    format!("{name}@example.com")
}

/// An auth sending to `server`, trusting `ca` for its certificate.
async fn auth_mailing_to(server: &MailServer, ca: Option<&TestCa>) -> TestAuth {
    let smtp = server.smtp_config(ca.map(TestCa::ca_file).as_deref());
    TestAuth::spawn_with(|config| {
        config.mail.smtp = Some(smtp);
        config.mail.link_base = "https://chat.example/app/".into();
        config.mail.retry_max = Duration::from_secs(1);
    })
    .await
}

async fn user_record(auth: &TestAuth, user: &TestUser) -> pb::User {
    auth.users()
        .get(user.request(pb::GetRequest { id: user.id }))
        .await
        .expect("reading one's account")
        .into_inner()
        .user
        .expect("a user")
}

async fn verify(auth: &TestAuth, token: &str) -> Result<pb::VerifyEmailResponse, tonic::Status> {
    auth.sessions()
        .verify_email(pb::VerifyEmailRequest {
            token: token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn request_reset(auth: &TestAuth, email: &str) -> Result<(), tonic::Status> {
    auth.sessions()
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: email.into(),
        })
        .await
        .map(drop)
}

async fn reset(auth: &TestAuth, token: &str, password: &str) -> Result<(), tonic::Status> {
    auth.sessions()
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: password.into(),
            new_password_confirm: password.into(),
        })
        .await
        .map(drop)
}

/// Registers `name` and verifies its address with the mail it gets.
async fn verified(auth: &TestAuth, server: &MailServer, name: &str) -> TestUser {
    let user = auth.register(name).await;
    let mail = server.wait_for(&email_of(name), VERIFY, 1, WITHIN).await;
    verify(auth, &mail.link_token("verify"))
        .await
        .expect("verifying with the mailed token");
    user
}

/// Rows of `table` for `user_id` (mail waiting, tokens live).
async fn rows(auth: &TestAuth, table: &str, user_id: i64) -> i64 {
    let query = match table {
        "mail_outbox" => "select count(*) from mail_outbox where user_id = $1",
        "email_tokens" => "select count(*) from email_tokens where user_id = $1",
        _ => panic!("no table {table}"),
    };
    sqlx::query_scalar(query)
        .bind(user_id)
        .fetch_one(&auth.db)
        .await
        .expect("counting")
}

#[tokio::test]
async fn a_registration_is_verified_by_the_mailed_token_once() {
    let ca = TestCa::generate();
    let server = MailServer::start_with_starttls(&ca.server("smtp"));
    let auth = auth_mailing_to(&server, Some(&ca)).await;
    let ada = auth.register("ada").await;
    assert!(!user_record(&auth, &ada).await.email_verified);

    let mail = server.wait_for(&email_of("ada"), VERIFY, 1, WITHIN).await;
    assert!(
        mail.body.contains("https://chat.example/app/#verify=ev_"),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("for 24 hours"), "{}", mail.body);
    let token = mail.link_token("verify");
    let verified = verify(&auth, &token).await.expect("verifying");
    assert_eq!(
        (verified.user_id, verified.email.as_str()),
        (ada.id, "ada@example.com")
    );
    assert!(user_record(&auth, &ada).await.email_verified);

    let again = verify(&auth, &token).await.expect_err("a used token");
    assert_eq!(again.code(), Code::Unauthenticated, "{again:?}");
    let forged = verify(&auth, "ev_not-a-token")
        .await
        .expect_err("an unknown token");
    assert_eq!(forged.code(), Code::Unauthenticated, "{forged:?}");

    // Verified already: nothing to resend.
    let status = auth
        .sessions()
        .resend_email_verification(ada.request(pb::ResendEmailVerificationRequest {}))
        .await
        .expect_err("verified already");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // The outbox is empty once the mail is sent.
    assert!(
        eventually(|| async { rows(&auth, "mail_outbox", ada.id).await == 0 }).await,
        "a sent mail stays in the outbox"
    );
}

#[tokio::test]
async fn a_reset_takes_the_mailed_token_once_and_ends_every_session() {
    let ca = TestCa::generate();
    let server = MailServer::start_with_starttls(&ca.server("smtp"));
    let auth = auth_mailing_to(&server, Some(&ca)).await;
    let ada = verified(&auth, &server, "ada").await;
    let other_session = auth.login_again(&ada).await;

    // Addresses compare regardless of case.
    request_reset(&auth, "ADA@Example.com")
        .await
        .expect("asking for a reset");
    let mail = server.wait_for("ada@example.com", RESET, 1, WITHIN).await;
    assert!(mail.body.contains("for 30 minutes"), "{}", mail.body);
    let token = mail.link_token("reset");
    assert!(token.starts_with("pr_"), "{token}");

    // A mismatched confirmation names its field and uses nothing up.
    let status = auth
        .sessions()
        .reset_password(pb::ResetPasswordRequest {
            token: token.clone(),
            new_password: "a-new-password".into(),
            new_password_confirm: "another-password".into(),
        })
        .await
        .expect_err("mismatched");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("new_password_confirm"),
        "{status:?}"
    );

    reset(&auth, &token, "a-new-password")
        .await
        .expect("resetting");
    // The owner is told, in case it was not them.
    let notice = server
        .wait_for("ada@example.com", NEW_PASSWORD, 1, WITHIN)
        .await;
    assert!(notice.body.contains("every\nsession"), "{}", notice.body);
    let status = reset(&auth, &token, "yet-another-one")
        .await
        .expect_err("a used token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Every session and access token of the account has ended.
    for user in [&ada, &other_session] {
        let status = auth
            .sessions()
            .get_access_token(pb::GetAccessTokenRequest {
                refresh_token: user.refresh_token.clone(),
            })
            .await
            .expect_err("a session from before the reset");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status = auth
            .users()
            .get(with_token(
                pb::GetRequest { id: ada.id },
                &user.access_token,
            ))
            .await
            .expect_err("an access token from before the reset");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // The old password is gone, the new one works.
    let status = auth
        .sessions()
        .login(pb::LoginRequest {
            username: "ada".into(),
            password: ada.password.clone(),
            ..Default::default()
        })
        .await
        .expect_err("the old password");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    auth.login(ada.id, "ada", "a-new-password").await;
}

#[tokio::test]
async fn unknown_and_unverified_addresses_get_the_same_answer_and_no_mail() {
    let server = MailServer::start();
    let auth = auth_mailing_to(&server, None).await;
    let ada = auth.register("ada").await; // never verified
    let bob = verified(&auth, &server, "bob").await;

    let unknown = request_reset(&auth, "nobody@example.com").await;
    let unverified = request_reset(&auth, "ada@example.com").await;
    let known = request_reset(&auth, "bob@example.com").await;
    assert!(unknown.is_ok() && unverified.is_ok() && known.is_ok());

    // The mail for the known address is written in the call; nothing is
    // written for the others.
    assert_eq!(
        rows(&auth, "email_tokens", bob.id).await,
        1,
        "bob's reset token"
    );
    let reset_tokens: i64 =
        sqlx::query_scalar("select count(*) from email_tokens where purpose = 'reset_password'")
            .fetch_one(&auth.db)
            .await
            .expect("counting");
    assert_eq!(reset_tokens, 1, "only bob has a reset token");
    let reset_mails: i64 = sqlx::query_scalar(
        "select count(*) from mail_outbox where kind = 'reset_password' and user_id <> $1",
    )
    .bind(bob.id)
    .fetch_one(&auth.db)
    .await
    .expect("counting");
    assert_eq!(reset_mails, 0, "a reset mail for ada or nobody");
    server.wait_for("bob@example.com", RESET, 1, WITHIN).await;
    assert!(
        server
            .received()
            .iter()
            .all(|mail| !mail.subject.contains(RESET) || mail.to == "bob@example.com"),
        "{:?}",
        server.received()
    );
    assert!(!user_record(&auth, &ada).await.email_verified);
}

#[tokio::test]
async fn tokens_expire_and_a_new_one_replaces_the_last() {
    let server = MailServer::start();
    let auth = auth_mailing_to(&server, None).await;
    let ada = verified(&auth, &server, "ada").await;

    // Their lifetimes are the configured ones (30 minutes for resets).
    request_reset(&auth, "ada@example.com")
        .await
        .expect("asking");
    let first = server.wait_for("ada@example.com", RESET, 1, WITHIN).await;
    let lifetime: f64 = sqlx::query_scalar(
        "select extract(epoch from expires_at - created_at)::float8 from email_tokens
         where user_id = $1 and purpose = 'reset_password'",
    )
    .bind(ada.id)
    .fetch_one(&auth.db)
    .await
    .expect("the token's lifetime");
    assert!((lifetime - 1800.0).abs() < 5.0, "{lifetime}");

    // A second request replaces the first token.
    request_reset(&auth, "ada@example.com")
        .await
        .expect("asking again");
    let second = server.wait_for("ada@example.com", RESET, 2, WITHIN).await;
    let status = reset(&auth, &first.link_token("reset"), "a-new-password")
        .await
        .expect_err("a replaced token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Time passes: the token's end is moved to the past.
    sqlx::query(
        "update email_tokens set expires_at = now() - interval '1 second' where user_id = $1",
    )
    .bind(ada.id)
    .execute(&auth.db)
    .await
    .expect("ageing the token");
    let status = reset(&auth, &second.link_token("reset"), "a-new-password")
        .await
        .expect_err("an expired token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    auth.login(ada.id, "ada", &ada.password).await;
}

#[tokio::test]
async fn an_email_change_tells_the_old_address_and_asks_the_new_one() {
    let server = MailServer::start();
    let auth = auth_mailing_to(&server, None).await;
    let ada = verified(&auth, &server, "ada").await;
    assert!(user_record(&auth, &ada).await.email_verified);

    auth.users()
        .update(ada.request(pb::UpdateRequest {
            id: ada.id,
            email: Some("ada@elsewhere.example".into()),
            current_password: ada.password.clone(),
            ..Default::default()
        }))
        .await
        .expect("changing the email with the password");
    let notice = server.wait_for("ada@example.com", CHANGED, 1, WITHIN).await;
    assert!(
        notice.body.contains("ada@elsewhere.example"),
        "{}",
        notice.body
    );
    let record = user_record(&auth, &ada).await;
    assert_eq!(record.email, "ada@elsewhere.example");
    assert!(
        !record.email_verified,
        "the new address is not verified yet"
    );
    // Resets go to verified addresses only: neither old nor new for now.
    request_reset(&auth, "ada@elsewhere.example")
        .await
        .expect("asking");
    request_reset(&auth, "ada@example.com")
        .await
        .expect("asking");
    assert_eq!(
        rows(&auth, "email_tokens", ada.id).await,
        1,
        "only the new verification token"
    );

    let mail = server
        .wait_for("ada@elsewhere.example", VERIFY, 1, WITHIN)
        .await;
    verify(&auth, &mail.link_token("verify"))
        .await
        .expect("verifying the new address");
    assert!(user_record(&auth, &ada).await.email_verified);
}

#[tokio::test]
async fn verification_can_be_resent_once_a_minute_and_the_last_token_works() {
    let server = MailServer::start();
    let auth = auth_mailing_to(&server, None).await;
    let ada = auth.register("ada").await;
    let first = server.wait_for("ada@example.com", VERIFY, 1, WITHIN).await;

    let resend = || {
        let mut sessions = auth.sessions();
        let request = ada.request(pb::ResendEmailVerificationRequest {});
        async move { sessions.resend_email_verification(request).await }
    };
    let status = resend().await.expect_err("too soon");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let wait = retry_after(&status).expect("RetryInfo");
    assert!(wait <= Duration::from_secs(60), "{wait:?}");

    // A minute passes.
    sqlx::query(
        "update email_tokens set created_at = now() - interval '61 seconds' where user_id = $1",
    )
    .bind(ada.id)
    .execute(&auth.db)
    .await
    .expect("ageing the token");
    let answer = resend().await.expect("resending").into_inner();
    assert_eq!(answer.email, "ada@example.com");
    let second = server.wait_for("ada@example.com", VERIFY, 2, WITHIN).await;
    let status = verify(&auth, &first.link_token("verify"))
        .await
        .expect_err("the replaced token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    verify(&auth, &second.link_token("verify"))
        .await
        .expect("the last token");

    // Anonymous callers have no address to resend to.
    let status = auth
        .sessions()
        .resend_email_verification(pb::ResendEmailVerificationRequest {})
        .await
        .expect_err("anonymous");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn a_mail_server_that_is_down_delays_mail_and_loses_none() {
    let mut server = MailServer::stopped();
    let auth = auth_mailing_to(&server, None).await;
    // The call that writes the mail does not wait for the server.
    let ada = auth.register("ada").await;
    assert!(
        eventually(|| async {
            auth.metric("auth_mails_total{outcome=\"retried\"}")
                .await
                .is_some_and(|tries| tries >= 2.0)
        })
        .await,
        "the sender did not try while the server was down"
    );
    assert_eq!(
        rows(&auth, "mail_outbox", ada.id).await,
        1,
        "the mail waits"
    );

    server.restart();
    let mail = server.wait_for("ada@example.com", VERIFY, 1, WITHIN).await;
    verify(&auth, &mail.link_token("verify"))
        .await
        .expect("the delayed token works");
    assert!(
        eventually(|| async { rows(&auth, "mail_outbox", ada.id).await == 0 }).await,
        "a sent mail stays in the outbox"
    );
    assert_eq!(server.received_by("ada@example.com").len(), 1, "sent once");
}

#[tokio::test]
async fn reset_requests_are_limited_per_address_alike_for_known_and_unknown() {
    let server = MailServer::start();
    let smtp = server.smtp_config(None);
    let auth = TestAuth::spawn_with(|config| {
        config.mail.smtp = Some(smtp);
        config.quotas.password_resets_per_email = Some(host::quota::Rate::new(2, 1.0 / 3600.0));
        config.quotas.password_resets = Some(host::quota::Rate::new(7, 1.0 / 3600.0));
    })
    .await;
    verified(&auth, &server, "ada").await;
    for email in ["ada@example.com", "nobody@example.com"] {
        for _ in 0..2 {
            request_reset(&auth, email).await.expect("within the limit");
        }
        let status = request_reset(&auth, email)
            .await
            .expect_err("past the limit");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{email}: {status:?}"
        );
        assert!(retry_after(&status).is_some(), "{status:?}");
    }
    // Per client: the seventh request from this address was its last.
    request_reset(&auth, "carol@example.com")
        .await
        .expect("the seventh");
    let status = request_reset(&auth, "dave@example.com")
        .await
        .expect_err("past the client's limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn a_password_change_ends_the_reset_tokens_asked_for_before_it() {
    let server = MailServer::start();
    let auth = auth_mailing_to(&server, None).await;
    let ada = verified(&auth, &server, "ada").await;
    request_reset(&auth, "ada@example.com")
        .await
        .expect("asking");
    let mail = server.wait_for("ada@example.com", RESET, 1, WITHIN).await;
    auth.users()
        .change_password(ada.request(pb::ChangePasswordRequest {
            id: ada.id,
            current_password: ada.password.clone(),
            new_password: "changed-in-between".into(),
            new_password_confirm: "changed-in-between".into(),
        }))
        .await
        .expect("changing the password");
    server
        .wait_for("ada@example.com", NEW_PASSWORD, 1, WITHIN)
        .await;
    let status = reset(&auth, &mail.link_token("reset"), "a-new-password")
        .await
        .expect_err("a token from before the change");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    auth.login(ada.id, "ada", "changed-in-between").await;
}

#[tokio::test]
async fn email_changes_are_limited_per_account() {
    let server = MailServer::start();
    let smtp = server.smtp_config(None);
    let auth = TestAuth::spawn_with(|config| {
        config.mail.smtp = Some(smtp);
        config.quotas.email_changes = Some(host::quota::Rate::new(2, 1.0 / 3600.0));
    })
    .await;
    let ada = auth.register("ada").await;
    let change = |to: &str| {
        let mut users = auth.users();
        let request = ada.request(pb::UpdateRequest {
            id: ada.id,
            email: Some(to.into()),
            current_password: ada.password.clone(),
            ..Default::default()
        });
        async move { users.update(request).await }
    };
    change("ada@one.example").await.expect("the first change");
    change("ada@two.example").await.expect("the second change");
    let status = change("ada@three.example")
        .await
        .expect_err("past the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(retry_after(&status).is_some(), "{status:?}");
    // An admin changing it is not counted.
    let admin = auth.admin().await;
    auth.users()
        .update(admin.request(pb::UpdateRequest {
            id: ada.id,
            email: Some("ada@four.example".into()),
            ..Default::default()
        }))
        .await
        .expect("an admin's change");
}
