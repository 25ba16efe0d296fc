//! Renaming one's own account, changing its email and deleting it take
//! proof within the call, the password or a two-factor code, besides the
//! access token: a stolen five-minute token cannot take an account over or
//! end it. Admins acting on others need none; guessing the proof locks the
//! session, never the login.

use api::auth::v1 as pb;
use tests::services::{TestAuth, TestUser};
use tests::totp::{base32_decode, code_at, now};
use tonic::Code;

fn rename(
    user: &TestUser,
    name: &str,
    password: &str,
    code: &str,
) -> tonic::Request<pb::UpdateRequest> {
    user.request(pb::UpdateRequest {
        id: user.id,
        name: Some(name.into()),
        current_password: password.into(),
        code: code.into(),
        ..Default::default()
    })
}

fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(field), "{status:?}");
}

#[tokio::test]
async fn ones_own_name_email_and_account_change_only_with_the_password() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    for (password, why) in [("", "no proof"), ("not it", "a wrong password")] {
        let status = auth
            .users()
            .update(rename(&ada, "ada2", password, ""))
            .await
            .expect_err(why);
        assert_invalid(&status, "current_password");
        let status = auth
            .users()
            .update(ada.request(pb::UpdateRequest {
                id: ada.id,
                email: Some("thief@example.com".into()),
                current_password: password.into(),
                ..Default::default()
            }))
            .await
            .expect_err(why);
        assert_invalid(&status, "current_password");
        let status = auth
            .users()
            .delete(ada.request(pb::DeleteRequest {
                id: ada.id,
                current_password: password.into(),
                ..Default::default()
            }))
            .await
            .expect_err(why);
        assert_invalid(&status, "current_password");
    }
    let me = auth
        .users()
        .get(ada.request(pb::GetRequest { id: ada.id }))
        .await
        .expect("ada is still there")
        .into_inner()
        .user
        .expect("a user");
    assert_eq!(
        (me.name.as_str(), me.email.as_str()),
        ("ada", "ada@example.com")
    );

    let renamed = auth
        .users()
        .update(rename(&ada, "ada2", &ada.password, ""))
        .await
        .expect("renaming with the password")
        .into_inner()
        .user
        .expect("a user");
    assert_eq!(renamed.name, "ada2");
    auth.users()
        .delete(ada.request(pb::DeleteRequest {
            id: ada.id,
            current_password: ada.password.clone(),
            ..Default::default()
        }))
        .await
        .expect("deleting with the password");
}

#[tokio::test]
async fn a_two_factor_code_proves_it_once() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let enrolment = auth
        .sessions()
        .enroll_totp(ada.request(pb::EnrollTotpRequest {}))
        .await
        .expect("enrolling")
        .into_inner();
    let secret = base32_decode(&enrolment.secret);
    let recovery = auth
        .sessions()
        .confirm_totp(ada.request(pb::ConfirmTotpRequest {
            code: code_at(&secret, now(), 6),
            current_password: ada.password.clone(),
        }))
        .await
        .expect("confirming")
        .into_inner()
        .recovery_codes;
    let code = code_at(&secret, now() + 30, 6);
    auth.users()
        .update(rename(&ada, "ada2", "", &code))
        .await
        .expect("a code proves it");
    let status = auth
        .users()
        .update(rename(&ada, "ada3", "", &code))
        .await
        .expect_err("the same code again");
    assert_invalid(&status, "code");
    auth.users()
        .update(rename(&ada, "ada3", "", &recovery[0]))
        .await
        .expect("a recovery code proves it");
}

#[tokio::test]
async fn admins_change_others_without_proof_and_guessing_locks_the_session_only() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 3).await;
    let admin = auth.admin().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    auth.users()
        .update(admin.request(pb::UpdateRequest {
            id: grace.id,
            name: Some("grace-hopper".into()),
            ..Default::default()
        }))
        .await
        .expect("an admin renames another without proof");
    auth.users()
        .delete(admin.request(pb::DeleteRequest {
            id: grace.id,
            ..Default::default()
        }))
        .await
        .expect("an admin deletes another without proof");

    // A thief with ada's token guesses her password until the session
    // locks; ada still logs in and renames herself.
    for _ in 0..3 {
        let status = auth
            .users()
            .update(rename(&ada, "taken-over", "a guess", ""))
            .await
            .expect_err("a wrong guess");
        assert_invalid(&status, "current_password");
    }
    let locked = auth
        .users()
        .update(rename(&ada, "taken-over", &ada.password, ""))
        .await
        .expect_err("the session is locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    let again = auth.login_again(&ada).await;
    auth.users()
        .update(rename(&again, "ada2", &ada.password, ""))
        .await
        .expect("a new session of ada's renames her");
}
