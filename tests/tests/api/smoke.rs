//! The harness itself: a real database, migrations, a gRPC round trip.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use tests::services::TestAuth;

#[tokio::test]
async fn auth_starts_on_a_migrated_database_and_answers_health_checks() {
    let auth = TestAuth::spawn().await;

    let migrations: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&auth.db)
        .await
        .expect("counting migrations");
    assert_eq!(migrations, auth::MIGRATOR.iter().count() as i64);

    let rules: i64 = sqlx::query_scalar("select count(*) from access_rules")
        .fetch_one(&auth.db)
        .await
        .expect("counting access rules");
    assert!(rules > 0, "the seeded access rules are missing");

    let response = HealthClient::new(auth.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn each_test_gets_a_database_of_its_own() {
    let first = tests::postgres::fresh_database().await;
    let second = tests::postgres::fresh_database().await;
    assert_ne!(first, second);

    let first = sqlx::PgPool::connect(&first)
        .await
        .expect("the first database");
    let second = sqlx::PgPool::connect(&second)
        .await
        .expect("the second database");
    sqlx::query("create table only_in_the_first (id int)")
        .execute(&first)
        .await
        .expect("a table in the first database");
    let in_second: bool = sqlx::query_scalar("select to_regclass('only_in_the_first') is not null")
        .fetch_one(&second)
        .await
        .expect("looking in the second database");
    assert!(!in_second, "the databases share tables");
}

#[tokio::test]
async fn shutting_down_reports_not_serving_before_the_server_goes() {
    let auth = TestAuth::spawn().await;
    let mut watch = HealthClient::new(auth.channel())
        .watch(HealthCheckRequest {
            service: "auth.v1.AccessService".into(),
        })
        .await
        .expect("watching health")
        .into_inner();
    let first = watch.message().await.expect("a status").expect("an update");
    assert_eq!(first.status(), ServingStatus::Serving);

    let stopping = tokio::spawn(auth.stop());

    let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .expect("an update within ten seconds");
    match next {
        Ok(Some(update)) => assert_eq!(update.status(), ServingStatus::NotServing),
        other => panic!("the watch ended without NOT_SERVING: {other:?}"),
    }
    // The watch was the last call in flight; once it ends, the server exits.
    drop(watch);
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping)
        .await
        .expect("the server stops once its calls have finished")
        .expect("stopping");
}
