//! `auth.v1.UserService`: registration, accounts and who may touch them.

use api::auth::v1 as pb;
use serde_json::json;
use tests::services::{TestAuth, with_token};
use tests::snapshot;
use tonic::Code;

fn registration(name: &str) -> pb::CreateRequest {
    pb::CreateRequest {
        name: name.into(),
        email: format!("{name}@example.com"),
        password: "long enough".into(),
        password_confirm: "long enough".into(),
        role: pb::Role::Unspecified.into(),
    }
}

#[tokio::test]
async fn registration_makes_a_user_with_the_user_role() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    let user = auth
        .users()
        .get(ada.request(pb::GetRequest { id: ada.id }))
        .await
        .expect("reading oneself")
        .into_inner()
        .user
        .expect("a user");

    assert_eq!(user.role(), pb::Role::User);
    insta::assert_json_snapshot!(snapshot::user(&user), {
        ".id" => "[id]", ".created_at" => "[timestamp]", ".updated_at" => "[timestamp]"
    });
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_hashes() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let stored: String = sqlx::query_scalar("select password_hash from users where id = $1")
        .bind(ada.id)
        .fetch_one(&auth.db)
        .await
        .expect("the user's row");
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains(&ada.password));
}

#[tokio::test]
async fn names_and_emails_are_unique_regardless_of_case() {
    let auth = TestAuth::spawn().await;
    auth.register("ada").await;
    let users = auth.users();

    let same_name = users
        .clone()
        .create(pb::CreateRequest {
            email: "other@example.com".into(),
            ..registration("ADA")
        })
        .await
        .expect_err("a taken name");
    let same_email = users
        .clone()
        .create(pb::CreateRequest {
            email: "Ada@Example.com".into(),
            ..registration("grace")
        })
        .await
        .expect_err("a taken email");

    assert_eq!(same_name.code(), Code::AlreadyExists);
    assert_eq!(same_email.code(), Code::AlreadyExists);
    insta::assert_json_snapshot!(json!({
        "same_name": snapshot::status(&same_name),
        "same_email": snapshot::status(&same_email),
    }));
}

#[tokio::test]
async fn each_input_rule_is_invalid_argument_naming_its_field() {
    let auth = TestAuth::spawn().await;
    let cases = [
        (
            "empty name",
            pb::CreateRequest {
                name: String::new(),
                ..registration("a")
            },
        ),
        (
            "long name",
            pb::CreateRequest {
                name: "n".repeat(101),
                ..registration("a")
            },
        ),
        (
            "padded name",
            pb::CreateRequest {
                name: " ada".into(),
                ..registration("a")
            },
        ),
        (
            "not an email",
            pb::CreateRequest {
                email: "ada".into(),
                ..registration("a")
            },
        ),
        (
            "long email",
            pb::CreateRequest {
                email: format!("{}@example.com", "e".repeat(250)),
                ..registration("a")
            },
        ),
        (
            "short password",
            pb::CreateRequest {
                password: "short".into(),
                password_confirm: "short".into(),
                ..registration("a")
            },
        ),
        (
            "long password",
            pb::CreateRequest {
                password: "p".repeat(73),
                password_confirm: "p".repeat(73),
                ..registration("a")
            },
        ),
        (
            "mismatched confirmation",
            pb::CreateRequest {
                password_confirm: "long enough!".into(),
                ..registration("a")
            },
        ),
        (
            "unknown role",
            pb::CreateRequest {
                role: 7,
                ..registration("a")
            },
        ),
    ];
    let mut outcomes = serde_json::Map::new();
    for (case, request) in cases {
        let status = auth.users().create(request).await.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        outcomes.insert(case.into(), snapshot::status(&status));
    }
    insta::assert_json_snapshot!(outcomes);

    let users: i64 = sqlx::query_scalar("select count(*) from users where name <> 'root'")
        .fetch_one(&auth.db)
        .await
        .expect("counting users");
    assert_eq!(users, 0, "an invalid registration stored a user");
}

#[tokio::test]
async fn only_admins_create_admins() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let admin = auth.admin().await;
    let admin_role = |name: &str| pb::CreateRequest {
        role: pb::Role::Admin.into(),
        ..registration(name)
    };

    let anonymous = auth
        .users()
        .create(admin_role("eve"))
        .await
        .expect_err("anonymous");
    let by_user = auth
        .users()
        .create(ada.request(admin_role("eve")))
        .await
        .expect_err("a user");
    let by_admin = auth
        .users()
        .create(admin.request(admin_role("grace")))
        .await
        .expect("an admin");

    assert_eq!(anonymous.code(), Code::PermissionDenied);
    assert_eq!(by_user.code(), Code::PermissionDenied);
    let grace = auth
        .users()
        .get(admin.request(pb::GetRequest {
            id: by_admin.into_inner().id,
        }))
        .await
        .expect("reading the new admin")
        .into_inner()
        .user
        .expect("a user");
    assert_eq!(grace.role(), pb::Role::Admin);
}

#[tokio::test]
async fn users_read_themselves_and_admins_read_anyone() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let admin = auth.admin().await;

    let other = auth
        .users()
        .get(ada.request(pb::GetRequest { id: grace.id }))
        .await
        .expect_err("another user");
    let by_admin = auth
        .users()
        .get(admin.request(pb::GetRequest { id: grace.id }))
        .await
        .expect("an admin");
    let missing = auth
        .users()
        .get(admin.request(pb::GetRequest { id: 999_999 }))
        .await
        .expect_err("no such user");
    let anonymous = auth
        .users()
        .get(pb::GetRequest { id: ada.id })
        .await
        .expect_err("no token");
    let bad_id = auth
        .users()
        .get(admin.request(pb::GetRequest { id: 0 }))
        .await
        .expect_err("id 0");

    assert_eq!(
        by_admin.into_inner().user.map(|u| u.name),
        Some("grace".to_owned())
    );
    insta::assert_json_snapshot!(json!({
        "other": snapshot::status(&other),
        "missing": snapshot::status(&missing),
        "anonymous": snapshot::status(&anonymous),
        "bad_id": snapshot::status(&bad_id),
    }));
}

#[tokio::test]
async fn update_changes_only_the_fields_given() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    let renamed = auth
        .users()
        .update(ada.request(pb::UpdateRequest {
            id: ada.id,
            current_password: ada.password.clone(),
            name: Some("ada.lovelace".into()),
            email: None,
            role: None,
            ..Default::default()
        }))
        .await
        .expect("renaming oneself")
        .into_inner()
        .user
        .expect("a user");

    assert_eq!(renamed.name, "ada.lovelace");
    assert_eq!(renamed.email, "ada@example.com");
    assert_eq!(renamed.role(), pb::Role::User);
    let seconds = |at: &Option<prost_types::Timestamp>| at.map(|at| (at.seconds, at.nanos));
    assert!(seconds(&renamed.updated_at) > seconds(&renamed.created_at));

    let unchanged = auth
        .users()
        .update(ada.request(pb::UpdateRequest {
            id: ada.id,
            current_password: ada.password.clone(),
            ..Default::default()
        }))
        .await
        .expect("an empty update")
        .into_inner()
        .user
        .expect("a user");
    assert_eq!(unchanged, renamed);
}

#[tokio::test]
async fn update_refuses_taken_names_other_accounts_and_role_changes_by_users() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let update = |id, name: Option<&str>, role: Option<pb::Role>| pb::UpdateRequest {
        id,
        name: name.map(str::to_owned),
        email: None,
        role: role.map(Into::into),
        current_password: ada.password.clone(),
        ..Default::default()
    };

    let taken = auth
        .users()
        .update(ada.request(update(ada.id, Some("GRACE"), None)))
        .await
        .expect_err("taken");
    let other = auth
        .users()
        .update(ada.request(update(grace.id, Some("x"), None)))
        .await
        .expect_err("other");
    let promotion = auth
        .users()
        .update(ada.request(update(ada.id, None, Some(pb::Role::Admin))))
        .await
        .expect_err("self-promotion");
    let unspecified = auth
        .users()
        .update(ada.request(update(ada.id, None, Some(pb::Role::Unspecified))))
        .await
        .expect_err("unspecified role");

    insta::assert_json_snapshot!(json!({
        "taken": snapshot::status(&taken),
        "other": snapshot::status(&other),
        "promotion": snapshot::status(&promotion),
        "unspecified": snapshot::status(&unspecified),
    }));
}

#[tokio::test]
async fn a_role_change_revokes_the_users_tokens_at_once() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let admin = auth.admin().await;

    let promoted = auth
        .users()
        .update(admin.request(pb::UpdateRequest {
            id: ada.id,
            role: Some(pb::Role::Admin.into()),
            ..Default::default()
        }))
        .await
        .expect("an admin changes a role")
        .into_inner()
        .user
        .expect("a user");
    assert_eq!(promoted.role(), pb::Role::Admin);

    let check = auth
        .access()
        .check(ada.request(pb::CheckRequest {
            endpoint_address: "/chat.v1.ChatService/Create".into(),
        }))
        .await
        .expect_err("the old access token");
    assert_eq!(check.code(), Code::Unauthenticated);
    assert_eq!(check.message(), "access token has been revoked");
    let refresh = auth
        .sessions()
        .get_access_token(pb::GetAccessTokenRequest {
            refresh_token: ada.refresh_token.clone(),
        })
        .await
        .expect_err("the old refresh token");
    assert_eq!(refresh.code(), Code::Unauthenticated);

    let again = auth.login(ada.id, &ada.name, &ada.password).await;
    let me = auth
        .access()
        .check(again.request(pb::CheckRequest {
            endpoint_address: "/auth.v1.UserService/List".into(),
        }))
        .await
        .expect("a fresh token carries the new role")
        .into_inner();
    assert_eq!(me.role(), pb::Role::Admin);
}

#[tokio::test]
async fn deleting_an_account_revokes_its_tokens_and_frees_its_name() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;

    auth.users()
        .delete(ada.request(pb::DeleteRequest {
            id: ada.id,
            current_password: ada.password.clone(),
            ..Default::default()
        }))
        .await
        .expect("deleting oneself");

    let check = auth
        .access()
        .check(ada.request(pb::CheckRequest {
            endpoint_address: "/chat.v1.ChatService/Create".into(),
        }))
        .await
        .expect_err("a deleted user's token");
    assert_eq!(check.code(), Code::Unauthenticated);
    let refresh = auth
        .sessions()
        .get_refresh_token(pb::GetRefreshTokenRequest {
            refresh_token: ada.refresh_token.clone(),
        })
        .await
        .expect_err("a deleted user's refresh token");
    assert_eq!(refresh.code(), Code::Unauthenticated);
    auth.register("ada").await;
}

#[tokio::test]
async fn users_delete_only_themselves_and_admins_anyone() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let admin = auth.admin().await;

    let other = auth
        .users()
        .delete(ada.request(pb::DeleteRequest {
            id: grace.id,
            ..Default::default()
        }))
        .await
        .expect_err("other");
    assert_eq!(other.code(), Code::PermissionDenied);
    auth.users()
        .delete(admin.request(pb::DeleteRequest {
            id: grace.id,
            ..Default::default()
        }))
        .await
        .expect("an admin deletes");
    let gone = auth
        .users()
        .delete(admin.request(pb::DeleteRequest {
            id: grace.id,
            ..Default::default()
        }))
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn listing_is_for_admins_and_pages_through_everyone_once() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    for name in ["b1", "b2", "b3", "b4"] {
        auth.register(name).await;
    }
    let admin = auth.admin().await;

    let by_user = auth
        .users()
        .list(ada.request(pb::ListRequest::default()))
        .await
        .expect_err("a user lists");
    assert_eq!(by_user.code(), Code::PermissionDenied);

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = auth
            .users()
            .list(admin.request(pb::ListRequest {
                page_size: 2,
                page_token: page_token.clone(),
            }))
            .await
            .expect("a page")
            .into_inner();
        assert!(page.users.len() <= 2);
        seen.extend(page.users.into_iter().map(|u| u.name));
        pages += 1;
        if pages == 1 {
            // Users registered mid-listing come at the end, never twice.
            auth.register("late").await;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ["root", "ada", "b1", "b2", "b3", "b4", "late"]);

    let bad = auth
        .users()
        .list(admin.request(pb::ListRequest {
            page_size: 2,
            page_token: "garbage".into(),
        }))
        .await
        .expect_err("a made-up page token");
    let too_big = auth
        .users()
        .list(admin.request(pb::ListRequest {
            page_size: 101,
            page_token: String::new(),
        }))
        .await
        .expect_err("a page too big");
    insta::assert_json_snapshot!(json!({
        "bad_token": snapshot::status(&bad),
        "too_big": snapshot::status(&too_big),
    }));
}

#[tokio::test]
async fn changing_a_password_needs_the_old_one_and_revokes_every_token() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let change = |current: &str| pb::ChangePasswordRequest {
        id: ada.id,
        current_password: current.into(),
        new_password: "a brand new one".into(),
        new_password_confirm: "a brand new one".into(),
    };

    let wrong = auth
        .users()
        .change_password(ada.request(change("not my password")))
        .await
        .expect_err("a wrong current password");
    assert_eq!(wrong.code(), Code::InvalidArgument);
    insta::assert_json_snapshot!(snapshot::status(&wrong));

    auth.users()
        .change_password(ada.request(change(&ada.password)))
        .await
        .expect("the right one");

    let old_access = auth
        .access()
        .check(ada.request(pb::CheckRequest {
            endpoint_address: "/chat.v1.ChatService/Create".into(),
        }))
        .await
        .expect_err("the old access token");
    assert_eq!(old_access.code(), Code::Unauthenticated);
    let old_refresh = auth
        .sessions()
        .get_refresh_token(pb::GetRefreshTokenRequest {
            refresh_token: ada.refresh_token.clone(),
        })
        .await
        .expect_err("the old refresh token");
    assert_eq!(old_refresh.code(), Code::Unauthenticated);
    auth.login(ada.id, "ada", "a brand new one").await;
}

#[tokio::test]
async fn admins_change_others_passwords_without_knowing_them() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    let admin = auth.admin().await;
    let reset = |id| pb::ChangePasswordRequest {
        id,
        current_password: String::new(),
        new_password: "reset by admin".into(),
        new_password_confirm: "reset by admin".into(),
    };

    let by_user = auth
        .users()
        .change_password(ada.request(reset(grace.id)))
        .await
        .expect_err("a user");
    assert_eq!(by_user.code(), Code::PermissionDenied);
    auth.users()
        .change_password(admin.request(reset(grace.id)))
        .await
        .expect("an admin");
    auth.login(grace.id, "grace", "reset by admin").await;
}

#[tokio::test]
async fn usernames_resolve_to_ids_regardless_of_case() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;

    let mut found = auth
        .users()
        .lookup_usernames(ada.request(pb::LookupUsernamesRequest {
            usernames: vec!["GRACE".into(), "ada".into(), "nobody".into()],
        }))
        .await
        .expect("a lookup")
        .into_inner()
        .users;
    found.sort_by_key(|user| user.id);

    assert_eq!(
        found,
        [
            pb::UserRef {
                id: ada.id,
                name: "ada".into()
            },
            pb::UserRef {
                id: grace.id,
                name: "grace".into()
            },
        ]
    );
    let anonymous = auth
        .users()
        .lookup_usernames(pb::LookupUsernamesRequest {
            usernames: vec!["ada".into()],
        })
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let duplicates = auth
        .users()
        .lookup_usernames(with_token(
            pb::LookupUsernamesRequest {
                usernames: vec!["ada".into(), "ada".into()],
            },
            &ada.access_token,
        ))
        .await
        .expect_err("duplicate names");
    assert_eq!(duplicates.code(), Code::InvalidArgument);
}

/// The field a status's `BadRequest` detail names.
fn violated_field(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .and_then(|details| details.field_violations.first().map(|v| v.field.clone()))
}

#[tokio::test]
async fn names_that_hide_characters_cannot_pass_for_another() {
    let auth = TestAuth::spawn().await;
    let grace = auth.register("grace").await;
    for name in [
        "grace\u{200B}",
        "grace\u{202E}",
        "\u{2066}grace",
        "grace\u{3164}",
    ] {
        let status = auth
            .users()
            .create(pb::CreateRequest {
                email: "someone@example.com".into(),
                ..registration(name)
            })
            .await
            .expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}: {status:?}");
        assert_eq!(violated_field(&status).as_deref(), Some("name"), "{name:?}");
        let renamed = auth
            .users()
            .update(grace.request(pb::UpdateRequest {
                id: grace.id,
                current_password: grace.password.clone(),
                name: Some(name.into()),
                ..Default::default()
            }))
            .await
            .expect_err(name);
        assert_eq!(
            renamed.code(),
            Code::InvalidArgument,
            "{name:?}: {renamed:?}"
        );
    }
}

fn registration_with_email(name: &str, email: &str) -> pb::CreateRequest {
    pb::CreateRequest {
        email: email.into(),
        ..registration(name)
    }
}

#[tokio::test]
async fn names_that_look_like_another_are_taken() {
    let auth = TestAuth::spawn().await;
    let ada = auth.register("ada").await;
    let grace = auth.register("grace").await;
    // A Cyrillic а, full-width letters, upper case, "rn" for "m".
    for (n, alike) in ["\u{430}da", "ＡＤＡ", "ADA"].into_iter().enumerate() {
        let taken = auth
            .users()
            .create(registration_with_email(
                alike,
                &format!("alike{n}@example.com"),
            ))
            .await
            .expect_err(alike);
        assert_eq!(taken.code(), Code::AlreadyExists, "{alike:?}: {taken:?}");
        assert!(taken.message().contains("name"), "{taken:?}");
    }
    auth.users()
        .create(registration_with_email("adam", "adam@example.com"))
        .await
        .expect("a name that only starts alike");
    auth.users()
        .create(registration_with_email("rnary", "rnary@example.com"))
        .await
        .expect("rnary");
    let mary = auth
        .users()
        .create(registration_with_email("mary", "mary@example.com"))
        .await
        .expect_err("mary looks like rnary");
    assert_eq!(mary.code(), Code::AlreadyExists);

    // Renaming into a look-alike is refused the same way.
    let renamed = auth
        .users()
        .update(grace.request(pb::UpdateRequest {
            id: grace.id,
            current_password: grace.password.clone(),
            name: Some("\u{430}d\u{430}".into()),
            email: None,
            role: None,
            ..Default::default()
        }))
        .await
        .expect_err("a rename into ada's looks");
    assert_eq!(renamed.code(), Code::AlreadyExists);
    drop(ada);
}

#[tokio::test]
async fn names_are_stored_in_nfkc_and_found_as_typed() {
    let auth = TestAuth::spawn().await;
    let id = auth
        .users()
        .create(registration_with_email("\u{FB01}sh", "fish@example.com"))
        .await
        .expect("a name with a ligature")
        .into_inner()
        .id;
    let admin = auth.admin().await;
    let stored = auth
        .users()
        .get(admin.request(pb::GetRequest { id }))
        .await
        .expect("the user")
        .into_inner()
        .user
        .expect("a user")
        .name;
    assert_eq!(stored, "fish");
    for typed in ["\u{FB01}sh", "fish", "ＦＩＳＨ"] {
        auth.sessions()
            .login(pb::LoginRequest {
                username: typed.into(),
                password: "long enough".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("logging in as {typed:?}: {status:?}"));
    }
}

#[tokio::test]
async fn names_made_before_skeletons_get_theirs_and_look_alikes_keep_working() {
    let auth = TestAuth::spawn().await;
    let mallory = auth.register("mallory").await;
    let other = auth.register("someone").await;
    // A name that spells what a grandfathered skeleton once was: it must
    // not keep the look-alike from getting one.
    auth.users()
        .create(registration_with_email(
            &format!("mallory#{}", other.id),
            "m2@example.com",
        ))
        .await
        .expect("a name with a # in it");
    // As an older release left them: one name that looks like another,
    // neither with a skeleton.
    sqlx::query("update users set name = 'rnallory', name_skeleton = null where id = $1")
        .bind(other.id)
        .execute(&auth.db)
        .await
        .expect("an old look-alike");
    sqlx::query("update users set name_skeleton = null where id = $1")
        .bind(mallory.id)
        .execute(&auth.db)
        .await
        .expect("an old name");
    let database_url = auth.database_url.clone();
    auth.stop().await;

    let auth = TestAuth::spawn_on(database_url, |_| {}).await;
    let skeletons: Vec<(i64, Option<String>)> =
        sqlx::query_as("select id, name_skeleton from users order by id")
            .fetch_all(&auth.db)
            .await
            .expect("the skeletons");
    assert!(
        skeletons.iter().all(|(_, skeleton)| skeleton.is_some()),
        "{skeletons:?}"
    );
    // The older name holds the skeleton; the newer keeps working.
    let of = |id: i64| {
        skeletons
            .iter()
            .find(|(user, _)| *user == id)
            .and_then(|(_, skeleton)| skeleton.clone())
            .expect("a skeleton")
    };
    let looks = of(mallory.id);
    assert_eq!(of(other.id), format!("{looks}\u{1}{}", other.id));
    auth.login(other.id, "rnallory", "someone-password").await;
    let taken = auth
        .users()
        .create(registration_with_email("MALLORY", "m3@example.com"))
        .await
        .expect_err("a third look-alike");
    assert_eq!(taken.code(), Code::AlreadyExists);
}
