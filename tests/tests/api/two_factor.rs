//! Two-factor login with TOTP: enrolling, confirming, logging in with a
//! code (never the same one twice) or a recovery code (each once), wrong
//! codes counted toward the lockout, and turning it off. The codes are
//! computed from the secret auth hands out by the tests' own RFC 6238
//! (`tests::totp`), itself checked here against the RFC's test vectors.

use api::auth::v1 as pb;
use tests::services::{TestAuth, TestUser};
use tests::totp::{base32_decode, code_at, now};
use tonic::Code;
use tonic_types::StatusExt as _;

#[test]
fn the_codes_this_file_computes_are_rfc_6238s() {
    let secret = b"12345678901234567890";
    for (at, code) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(code_at(secret, at, 8), code, "at {at}");
    }
    assert_eq!(base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), secret);
}

/// Enrols `user` and confirms with the code of now; the secret, the
/// recovery codes and the code it was confirmed with.
async fn turn_on(auth: &TestAuth, user: &TestUser) -> (Vec<u8>, Vec<String>, String) {
    let enrolment = auth
        .sessions()
        .enroll_totp(user.request(pb::EnrollTotpRequest {}))
        .await
        .expect("enrolling")
        .into_inner();
    assert!(
        enrolment.otpauth_uri.starts_with(&format!(
            "otpauth://totp/chat:{}?secret={}&issuer=chat",
            user.name, enrolment.secret
        )),
        "{enrolment:?}"
    );
    let secret = base32_decode(&enrolment.secret);
    assert_eq!(secret.len(), 20);
    let confirmed_with = code_at(&secret, now(), 6);
    let codes = auth
        .sessions()
        .confirm_totp(user.request(pb::ConfirmTotpRequest {
            code: confirmed_with.clone(),
            current_password: user.password.clone(),
        }))
        .await
        .expect("confirming")
        .into_inner()
        .recovery_codes;
    (secret, codes, confirmed_with)
}

async fn login(
    auth: &TestAuth,
    user: &TestUser,
    second_factor: bool,
) -> Result<pb::LoginResponse, tonic::Status> {
    auth.sessions()
        .login(pb::LoginRequest {
            username: user.name.clone(),
            password: user.password.clone(),
            accepts_second_factor: second_factor,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn challenge(auth: &TestAuth, user: &TestUser) -> String {
    let answer = login(auth, user, true)
        .await
        .expect("the password is right");
    assert!(
        answer.access_token.is_empty() && answer.refresh_token.is_empty(),
        "no tokens before the second factor: {answer:?}"
    );
    assert!(answer.second_factor_expires_at.is_some());
    assert!(answer.second_factor_challenge.starts_with("lc_"));
    answer.second_factor_challenge
}

async fn complete(
    auth: &TestAuth,
    challenge: &str,
    code: &str,
) -> Result<pb::CompleteLoginResponse, tonic::Status> {
    auth.sessions()
        .complete_login(pb::CompleteLoginRequest {
            challenge: challenge.into(),
            code: code.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn check(auth: &TestAuth, access_token: &str) -> Result<pb::CheckResponse, tonic::Status> {
    auth.access()
        .check(tests::services::with_token(
            pb::CheckRequest {
                endpoint_address: "/chat.v1.ChatService/ListChats".into(),
            },
            access_token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_login_takes_a_code_once_and_a_recovery_code_once() {
    // Room for the wrong codes tried here, which count.
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 10).await;
    let ada = auth.register("ada").await;

    // A secret enrolled but not confirmed changes nothing.
    let pending = auth
        .sessions()
        .enroll_totp(ada.request(pb::EnrollTotpRequest {}))
        .await
        .expect("enrolling")
        .into_inner();
    let answer = login(&auth, &ada, true).await.expect("a login");
    assert!(!answer.access_token.is_empty() && answer.second_factor_challenge.is_empty());
    let wrong = auth
        .sessions()
        .confirm_totp(ada.request(pb::ConfirmTotpRequest {
            code: code_at(&base32_decode(&pending.secret), now() + 600, 6),
            ..Default::default()
        }))
        .await
        .expect_err("a code of ten minutes on");
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");
    assert!(wrong.message().contains("code"), "{wrong:?}");

    // Confirming takes the password too: a stolen access token cannot
    // put its own second factor in front of the account.
    let secret = base32_decode(&pending.secret);
    for password in ["", "not it"] {
        let status = auth
            .sessions()
            .confirm_totp(ada.request(pb::ConfirmTotpRequest {
                code: code_at(&secret, now(), 6),
                current_password: password.into(),
            }))
            .await
            .expect_err("without the password");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("current_password"), "{status:?}");
    }
    let (secret, recovery, confirmed_with) = turn_on(&auth, &ada).await;
    assert_eq!(recovery.len(), 10);
    let again = auth
        .sessions()
        .enroll_totp(ada.request(pb::EnrollTotpRequest {}))
        .await
        .expect_err("enrolling with it on");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

    // A client that cannot finish a second factor is told so; a wrong
    // password is refused as ever.
    let old_client = login(&auth, &ada, false)
        .await
        .expect_err("a client without it");
    assert_eq!(
        old_client.code(),
        Code::FailedPrecondition,
        "{old_client:?}"
    );
    let wrong_password = auth
        .sessions()
        .login(pb::LoginRequest {
            username: "ada".into(),
            password: "not it".into(),
            accepts_second_factor: true,
            ..Default::default()
        })
        .await
        .expect_err("a wrong password");
    assert_eq!(wrong_password.code(), Code::Unauthenticated);

    // The code confirming used its step; the next step's is accepted
    // (a step either side is), once.
    let challenge_one = challenge(&auth, &ada).await;
    let replayed = complete(&auth, &challenge_one, &confirmed_with)
        .await
        .expect_err("the code that confirmed, again");
    assert_eq!(replayed.code(), Code::Unauthenticated, "{replayed:?}");
    let next = code_at(&secret, now() + 30, 6);
    let tokens = complete(&auth, &challenge_one, &next)
        .await
        .expect("the next step's code");
    let me = check(&auth, &tokens.access_token)
        .await
        .expect("a working token");
    assert_eq!(me.user_id, ada.id);
    assert!(tokens.device_token.starts_with("dt_"));
    // The challenge is spent, and the code with it.
    let spent = complete(&auth, &challenge_one, &next)
        .await
        .expect_err("the same challenge");
    assert_eq!(spent.code(), Code::Unauthenticated);
    let challenge_two = challenge(&auth, &ada).await;
    let replay = complete(&auth, &challenge_two, &next)
        .await
        .expect_err("the same code");
    assert_eq!(replay.code(), Code::Unauthenticated, "{replay:?}");

    // A recovery code works once, typed however.
    let code = recovery[3].to_uppercase();
    let tokens = complete(&auth, &challenge_two, &code)
        .await
        .expect("a recovery code");
    check(&auth, &tokens.access_token)
        .await
        .expect("a working token");
    let challenge_three = challenge(&auth, &ada).await;
    let used = complete(&auth, &challenge_three, &recovery[3])
        .await
        .expect_err("used");
    assert_eq!(used.code(), Code::Unauthenticated, "{used:?}");
    complete(&auth, &challenge_three, &recovery[4])
        .await
        .expect("another recovery code");

    // Garbage is refused as a challenge that is not there.
    let unknown = complete(&auth, "lc_nothing", "123456")
        .await
        .expect_err("no challenge");
    assert_eq!(unknown.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn wrong_codes_count_toward_the_lockout_and_a_right_password_clears_nothing() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 3).await;
    let ada = auth.register("ada").await;
    let (secret, _, _) = turn_on(&auth, &ada).await;
    let wrong = code_at(&secret, now() + 3600, 6);

    let first = challenge(&auth, &ada).await;
    for _ in 0..2 {
        let status = complete(&auth, &first, &wrong)
            .await
            .expect_err("a wrong code");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // The password again: right, but the count stands.
    let second = challenge(&auth, &ada).await;
    let status = complete(&auth, &second, &wrong)
        .await
        .expect_err("the third wrong code");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let locked = complete(&auth, &second, &code_at(&secret, now() + 30, 6))
        .await
        .expect_err("locked, right code or not");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    assert!(locked.get_details_retry_info().is_some(), "{locked:?}");
    let locked = login(&auth, &ada, true)
        .await
        .expect_err("the name is locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
}

#[tokio::test]
async fn a_challenge_ends_after_five_wrong_codes() {
    let auth = TestAuth::spawn_with(|config| config.lockout.max_failures = 50).await;
    let ada = auth.register("ada").await;
    let (secret, recovery, _) = turn_on(&auth, &ada).await;
    let challenge = challenge(&auth, &ada).await;
    for _ in 0..5 {
        complete(&auth, &challenge, &code_at(&secret, now() + 3600, 6))
            .await
            .expect_err("a wrong code");
    }
    let ended = complete(&auth, &challenge, &recovery[0])
        .await
        .expect_err("ended");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("challenge"), "{ended:?}");
}

#[tokio::test]
async fn turning_it_off_takes_the_password_and_a_code() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let (secret, recovery, _) = turn_on(&auth, &ada).await;
    let disable = |password: &str, code: &str| {
        let request = ada.request(pb::DisableTotpRequest {
            password: password.into(),
            code: code.into(),
        });
        let mut sessions = auth.sessions();
        async move { sessions.disable_totp(request).await.map(drop) }
    };
    let status = disable("not it", &recovery[0])
        .await
        .expect_err("a wrong password");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("password"), "{status:?}");
    let status = disable(&ada.password, &code_at(&secret, now() + 3600, 6))
        .await
        .expect_err("a wrong code");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("code"), "{status:?}");
    disable(&ada.password, &recovery[0])
        .await
        .expect("turning it off");
    let status = disable(&ada.password, &recovery[1])
        .await
        .expect_err("nothing to turn off");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let answer = login(&auth, &ada, true).await.expect("a plain login again");
    assert!(!answer.access_token.is_empty(), "{answer:?}");

    // Without a token, none of it.
    for status in [
        auth.sessions()
            .enroll_totp(pb::EnrollTotpRequest {})
            .await
            .map(drop)
            .expect_err("anonymous"),
        auth.sessions()
            .confirm_totp(pb::ConfirmTotpRequest {
                code: "123456".into(),
                ..Default::default()
            })
            .await
            .map(drop)
            .expect_err("anonymous"),
        auth.sessions()
            .disable_totp(pb::DisableTotpRequest {
                password: ada.password.clone(),
                code: "123456".into(),
            })
            .await
            .map(drop)
            .expect_err("anonymous"),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // Confirming with nothing enrolled is a precondition.
    let status = auth
        .sessions()
        .confirm_totp(ada.request(pb::ConfirmTotpRequest {
            code: "123456".into(),
            ..Default::default()
        }))
        .await
        .expect_err("nothing enrolled");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}
