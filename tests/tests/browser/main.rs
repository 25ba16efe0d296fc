//! The web client in a real browser: headless Chromium, driven through
//! WebDriver (chromedriver) as two people in two browsers, against the
//! real services and the page as `web` serves it. Each step leaves a
//! screenshot under `target/tmp/browser/`.
//!
//! Needs `chromium` and `chromium-driver` (Debian's packages; `.ci/run`
//! installs them). Without them the test says so and passes, except under
//! `CI=true`, where it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tests::certificates::TestCa;
use tests::services::{TestAuth, TestChat};
use tokio::process::{Child, Command};

const PASSWORD: &str = "a fine password";
const XSS: &str = "<img src=x onerror=alert(1)>";

/// chromedriver and the Chromium it starts, if this machine has them.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .find(|candidate| candidate.is_file())
            })
        })
    };
    Some((
        find(&["chromedriver"])?,
        find(&["chromium", "chromium-browser", "google-chrome"])?,
    ))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

struct Driver {
    process: Child,
    url: String,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        let port = free_port();
        let process = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { process, url }
    }

    /// A browser of its own: its own profile, storage and cookies,
    /// trusting certificates with these keys (SHA-256 of the
    /// SubjectPublicKeyInfo, base64) beside the system's.
    async fn browser(&self, chromium: &Path, trusted: &[String]) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--ignore-certificate-errors-spki-list={}", trusted.join(",")),
                ],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

/// Screenshots of each step, kept as CI artifacts.
struct Steps {
    dir: PathBuf,
    count: usize,
}

impl Steps {
    fn new() -> Steps {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        Steps { dir, count: 0 }
    }

    async fn shoot(&mut self, browser: &Client, name: &str) {
        self.count += 1;
        let png = browser.screenshot().await.expect("a screenshot");
        let path = self.dir.join(format!("{:02}-{name}.png", self.count));
        std::fs::write(&path, png).expect("saving the screenshot");
    }
}

async fn fill(browser: &Client, id: &str, text: &str) {
    let input = browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|error| panic!("#{id}: {error}"));
    input.clear().await.expect("clearing");
    input.send_keys(text).await.expect("typing");
}

async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"))
        .click()
        .await
        .unwrap_or_else(|error| panic!("clicking {css}: {error}"));
}

/// What `script` returns once `until` holds for it, within ten seconds.
async fn eventually(
    browser: &Client,
    script: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = browser.execute(script, vec![]).await.expect("a script");
        if until(&value) {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            let error = browser
                .execute(
                    "return document.getElementById('error').textContent",
                    vec![],
                )
                .await;
            panic!("{script} is still {value} (page error: {error:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The texts of the messages shown.
const MESSAGES: &str =
    "return [...document.querySelectorAll('#messages .text')].map(e => e.textContent)";

/// JavaScript that finds the list's button of the chat titled `title` as
/// `b`.
fn find_chat(title: &str) -> String {
    format!(
        "const b = [...document.querySelectorAll('#chat-list li button')]\
         .find(b => b.querySelector('.title').textContent === '{title}')"
    )
}

/// JavaScript that returns the unread badge of the chat titled `title`:
/// its text, empty when hidden, null when the chat is not listed.
fn badge_of(title: &str) -> String {
    format!(
        "{}; if (!b) return null; const badge = b.querySelector('.badge'); \
         return badge.hidden ? '' : badge.textContent",
        find_chat(title)
    )
}

async fn register(browser: &Client, page: &str, name: &str) {
    browser.goto(page).await.expect("opening the page");
    fill(browser, "register-name", name).await;
    fill(browser, "register-email", &format!("{name}@example.com")).await;
    fill(browser, "register-password", PASSWORD).await;
    click(browser, "#register-button").await;
    eventually(
        browser,
        "return [document.getElementById('app-view').checkVisibility(), \
                 document.getElementById('auth-view').checkVisibility()]",
        |shown| shown == &json!([true, false]),
    )
    .await;
}

#[tokio::test]
async fn two_people_chat_live_in_two_browsers() {
    let Some((chromedriver, chromium)) = browser_binaries() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs chromium and chromium-driver for the browser test"
        );
        eprintln!(
            "skipped: no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };

    // Everything over TLS, as deployed: the page, both services, and
    // mutual TLS from chat to auth, with certificates of the test's own CA.
    let ca = TestCa::generate();
    let (auth_cert, chat_cert, web_cert) = (ca.server("auth"), ca.server("chat"), ca.server("web"));
    let chat_client = ca.client("chat");

    // The page's origin first: both services allow only it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the web client's port");
    let page_addr: SocketAddr = listener.local_addr().expect("an address");
    let origin = format!("https://localhost:{}", page_addr.port());
    let origins = host::grpc_web::CorsOrigins::parse("ORIGINS", &origin).expect("an origin");
    // Mail goes to a real SMTP server the test reads; its links lead
    // back to the page.
    let mail = tests::mail::MailServer::start();
    let smtp = mail.smtp_config(None);
    let auth = TestAuth::spawn_with(|config| {
        config.mail.smtp = Some(smtp);
        config.mail.link_base = format!("{origin}/");
        config.edge.cors_origins = origins.clone();
        let mut tls = ca.settings(&auth_cert);
        tls.client_ca_file = Some(ca.ca_file());
        config.edge.tls = Some(tls);
    })
    .await;
    let chat = TestChat::spawn_with(&auth, |config| {
        config.edge.cors_origins = origins.clone();
        config.edge.tls = Some(ca.settings(&chat_cert));
        config.auth.tls.ca_file = Some(ca.ca_file());
        config.auth.tls.client_cert_file = Some(chat_client.cert_file.clone());
        config.auth.tls.client_key_file = Some(chat_client.key_file.clone());
        // One send at once, then one a second: a quick second send must
        // wait as the service asks, and still land.
        config.quotas.sends = Some(host::quota::Rate::new(1, 1.0));
    })
    .await;
    let web = web::WebClient::on(
        listener,
        &web::Config {
            addr: page_addr,
            auth_url: auth.url(),
            chat_url: format!("https://localhost:{}", chat.addr.port()),
            tls: Some(ca.settings(&web_cert)),
        },
    )
    .expect("the web client");
    tokio::spawn(web.run_until_stopped(std::future::pending()));

    // The browser trusts exactly these three certificates' keys.
    let trusted: Vec<String> = [&auth_cert, &chat_cert, &web_cert]
        .iter()
        .map(|issued| issued.spki_sha256_base64())
        .collect();
    let driver = Driver::start(&chromedriver).await;
    let ada = driver.browser(&chromium, &trusted).await;
    let grace = driver.browser(&chromium, &trusted).await;
    let mut steps = Steps::new();

    // 1. Both register; ada creates a chat with grace.
    register(&grace, &origin, "grace").await;
    register(&ada, &origin, "ada").await;
    fill(&ada, "create-title", "Engines").await;
    fill(&ada, "create-users", "grace").await;
    click(&ada, "#create-button").await;
    eventually(
        &ada,
        "return document.getElementById('chat-title').textContent",
        |title| title == "Engines",
    )
    .await;
    steps.shoot(&ada, "ada-created-a-chat").await;

    // 2. Grace finds it in her list, opens it and writes.
    click(&grace, "#refresh-chats").await;
    click(&grace, "#chat-list li button").await;
    eventually(
        &grace,
        "return document.getElementById('chat-status').textContent",
        |status| status == "live",
    )
    .await;
    let controls = grace
        .execute(
            "return ['rename-form', 'add-form'].map(id => document.getElementById(id).checkVisibility())",
            vec![],
        )
        .await
        .expect("the creator's controls");
    assert_eq!(controls, json!([false, false]), "grace is not the creator");
    fill(&grace, "message-text", "hello ada").await;
    click(&grace, "#send-button").await;
    steps.shoot(&grace, "grace-sent-a-message").await;

    // 3. Ada sees it live, without reloading.
    eventually(&ada, MESSAGES, |texts| texts == &json!(["hello ada"])).await;
    steps.shoot(&ada, "ada-sees-it-live").await;

    // Past the send quota, the page waits as asked and sends.
    fill(&grace, "message-text", "and again").await;
    click(&grace, "#send-button").await;
    eventually(&ada, MESSAGES, |texts| {
        texts == &json!(["hello ada", "and again"])
    })
    .await;

    // Markup in a message is text, never HTML.
    fill(&ada, "message-text", XSS).await;
    click(&ada, "#send-button").await;
    eventually(&grace, MESSAGES, |texts| {
        texts == &json!(["hello ada", "and again", XSS])
    })
    .await;
    let images = grace
        .execute(
            "return document.querySelectorAll('#messages img').length",
            vec![],
        )
        .await
        .expect("counting images");
    assert_eq!(images, json!(0), "the message became an element");
    assert!(
        grace.get_alert_text().await.is_err(),
        "a script in a message ran"
    );
    steps.shoot(&grace, "markup-shown-as-text").await;

    // 4. Ada renames the chat and removes grace.
    fill(&ada, "rename-title", "Analytical").await;
    click(&ada, "#rename-button").await;
    eventually(
        &ada,
        "return document.getElementById('chat-title').textContent",
        |title| title == "Analytical",
    )
    .await;
    let grace_id: i64 = sqlx::query_scalar("select id from users where name = 'grace'")
        .fetch_one(&auth.db)
        .await
        .expect("grace's id");
    click(
        &ada,
        &format!("#members button.remove[data-user-id='{grace_id}']"),
    )
    .await;
    eventually(
        &ada,
        "return document.querySelectorAll('#members li').length",
        |count| count == &json!(1),
    )
    .await;
    steps.shoot(&ada, "ada-renamed-and-removed-grace").await;

    // 5. Grace's live view ends, and says why.
    let status = eventually(
        &grace,
        "const s = document.getElementById('chat-status'); return s.className + ': ' + s.textContent",
        |status| status.as_str().is_some_and(|s| s.starts_with("ended: ")),
    )
    .await;
    assert!(
        status
            .as_str()
            .is_some_and(|s| s.contains("no longer open to you")),
        "{status}"
    );
    steps.shoot(&grace, "grace-removed").await;

    // 6. Unread badges, "seen by" and typing. Grace keeps a second
    // window, logged in on its own.
    let grace_again = driver.browser(&chromium, &trusted).await;
    grace_again.goto(&origin).await.expect("opening the page");
    fill(&grace_again, "login-name", "grace").await;
    fill(&grace_again, "login-password", PASSWORD).await;
    click(&grace_again, "#login-button").await;
    fill(&ada, "create-title", "Side").await;
    fill(&ada, "create-users", "grace").await;
    click(&ada, "#create-button").await;
    eventually(
        &ada,
        "return document.getElementById('chat-status').textContent",
        |status| status == "live",
    )
    .await;
    fill(&ada, "message-text", "psst").await;
    click(&ada, "#send-button").await;
    // Grace has another chat open: the new one shows one unread message in
    // both her windows, without a click.
    for window in [&grace, &grace_again] {
        eventually(window, &badge_of("Side"), |badge| badge == "1").await;
    }
    steps.shoot(&grace, "grace-has-an-unread-message").await;
    // She opens it; the badge clears in both windows, and ada sees it seen.
    grace
        .execute(
            &format!("{}; b.click(); return true", find_chat("Side")),
            vec![],
        )
        .await
        .expect("opening the chat");
    eventually(&grace, MESSAGES, |texts| texts == &json!(["psst"])).await;
    for window in [&grace, &grace_again] {
        eventually(window, &badge_of("Side"), |badge| badge == "").await;
    }
    eventually(
        &ada,
        "return document.getElementById('seen-by').textContent",
        |seen| seen == "Seen by grace",
    )
    .await;
    steps.shoot(&ada, "ada-sees-it-seen").await;
    // Ada types; grace sees it, until ada sends.
    fill(&ada, "message-text", "are you").await;
    eventually(
        &grace,
        "return document.getElementById('typing').textContent",
        |typing| typing == "ada is typing…",
    )
    .await;
    steps.shoot(&grace, "grace-sees-ada-typing").await;
    click(&ada, "#send-button").await;
    eventually(
        &grace,
        "return document.getElementById('typing').textContent",
        |typing| typing == "",
    )
    .await;
    // Ada adds hopper with the chat open. Hopper's typing shows under
    // hopper's name, and although joining starts hopper with the history
    // read, ada's last message, sent before, does not count as seen by
    // hopper.
    let hopper = driver.browser(&chromium, &trusted).await;
    register(&hopper, &origin, "hopper").await;
    fill(&ada, "add-users", "hopper").await;
    click(&ada, "#add-button").await;
    eventually(
        &hopper,
        &format!(
            "{}; if (b) {{ b.click(); return true }} \
             document.getElementById('refresh-chats').click(); return false",
            find_chat("Side")
        ),
        |opened| opened == true,
    )
    .await;
    eventually(
        &hopper,
        "return document.getElementById('chat-status').textContent",
        |status| status == "live",
    )
    .await;
    fill(&hopper, "message-text", "hi all").await;
    eventually(
        &ada,
        "return document.getElementById('typing').textContent",
        |typing| typing == "hopper is typing…",
    )
    .await;
    let seen = ada
        .execute(
            "return document.getElementById('seen-by').textContent",
            vec![],
        )
        .await
        .expect("reading seen-by");
    assert_eq!(seen, "Seen by grace");
    steps.shoot(&ada, "ada-sees-hopper-typing").await;
    hopper.close().await.expect("closing hopper's window");

    // Sessions: grace sees both her windows' sessions from the first, ends
    // the second's, and the second finds itself logged out.
    click(&grace, "#sessions").await;
    let current = eventually(
        &grace,
        "return [...document.querySelectorAll('#session-list li')]\
         .map(li => li.classList.contains('current'))",
        |current| current.as_array().is_some_and(|all| all.len() == 2),
    )
    .await;
    let marked = current
        .as_array()
        .map_or(0, |all| all.iter().filter(|c| **c == json!(true)).count());
    assert_eq!(
        marked, 1,
        "this window's session is marked, the other's not: {current}"
    );
    steps.shoot(&grace, "grace-sees-her-sessions").await;
    click(&grace, "#session-list li:not(.current) .end").await;
    eventually(
        &grace,
        "return document.querySelectorAll('#session-list li').length",
        |count| count == 1,
    )
    .await;
    eventually(
        &grace_again,
        "return [document.getElementById('auth-view').checkVisibility(), \
                 document.getElementById('app-view').checkVisibility()]",
        |shown| shown == &json!([true, false]),
    )
    .await;
    steps
        .shoot(&grace_again, "grace-other-window-logged-out")
        .await;
    click(&grace, "#close-sessions").await;

    // At a phone's width the list and the chat stack.
    grace
        .set_window_size(390, 844)
        .await
        .expect("a phone's width");
    steps.shoot(&grace, "phone-width").await;
    grace_again
        .close()
        .await
        .expect("closing grace's second window");

    // 7. The logins kept a device token, which outlives a reload.
    ada.refresh().await.expect("reloading");
    let device = ada
        .execute(
            "return localStorage.getItem('chat.deviceToken.ada')",
            vec![],
        )
        .await
        .expect("reading storage");
    assert!(
        device
            .as_str()
            .is_some_and(|token| token.starts_with("dt_")),
        "no device token kept: {device}"
    );

    // 8. Two-factor login: ada turns it on with a code computed from the
    // secret the page shows, and her next login takes a code.
    fill(&ada, "login-name", "ada").await;
    fill(&ada, "login-password", PASSWORD).await;
    click(&ada, "#login-button").await;
    eventually(
        &ada,
        "return document.getElementById('sessions').checkVisibility()",
        |shown| shown == true,
    )
    .await;
    click(&ada, "#sessions").await;
    click(&ada, "#totp-enroll").await;
    let secret = eventually(
        &ada,
        "return document.getElementById('totp-secret').textContent",
        |secret| secret.as_str().is_some_and(|s| s.len() == 32),
    )
    .await;
    let secret = tests::totp::base32_decode(secret.as_str().expect("text"));
    let now = tests::totp::now();
    fill(&ada, "totp-code", &tests::totp::code_at(&secret, now, 6)).await;
    fill(&ada, "totp-password", PASSWORD).await;
    click(&ada, "#totp-confirm-button").await;
    eventually(
        &ada,
        "return document.querySelectorAll('#totp-recovery-codes li').length",
        |count| count == 10,
    )
    .await;
    steps.shoot(&ada, "ada-turns-two-factor-login-on").await;
    click(&ada, "#logout").await;
    fill(&ada, "login-name", "ada").await;
    fill(&ada, "login-password", PASSWORD).await;
    click(&ada, "#login-button").await;
    eventually(
        &ada,
        "return document.getElementById('code-form').checkVisibility()",
        |shown| shown == true,
    )
    .await;
    // The confirming code's step is spent; the next one is accepted.
    fill(
        &ada,
        "login-code",
        &tests::totp::code_at(&secret, now + 30, 6),
    )
    .await;
    steps.shoot(&ada, "ada-gives-her-code").await;
    click(&ada, "#code-button").await;
    eventually(
        &ada,
        "return [document.getElementById('app-view').checkVisibility(), \
                 document.getElementById('auth-view').checkVisibility()]",
        |shown| shown == &json!([true, false]),
    )
    .await;

    // 9. Mail: grace is told her address is unverified, follows the
    // link her registration mail carried, then forgets her password and
    // sets a new one through the link of a reset mail.
    eventually(
        &grace,
        "return document.getElementById('verify-notice').checkVisibility()",
        |shown| shown == true,
    )
    .await;
    let welcome = mail
        .wait_for("grace@example.com", "Confirm", 1, Duration::from_secs(60))
        .await;
    grace
        .goto(&format!(
            "{origin}/#verify={}",
            welcome.link_token("verify")
        ))
        .await
        .expect("following the verification link");
    eventually(
        &grace,
        "return document.getElementById('verify-status').textContent",
        |text| text == "Email address verified: grace@example.com",
    )
    .await;
    steps.shoot(&grace, "grace-verifies-her-address").await;
    eventually(
        &grace,
        "return document.getElementById('verify-notice').checkVisibility()",
        |shown| shown == false,
    )
    .await;
    click(&grace, "#logout").await;
    click(&grace, "#forgot-password").await;
    fill(&grace, "reset-email", "grace@example.com").await;
    click(&grace, "#reset-request-button").await;
    eventually(
        &grace,
        "return document.getElementById('reset-request-status').textContent",
        |text| text.as_str().is_some_and(|t| t.contains("on its way")),
    )
    .await;
    let reset = mail
        .wait_for("grace@example.com", "Reset", 1, Duration::from_secs(60))
        .await;
    grace
        .goto(&format!("{origin}/#reset={}", reset.link_token("reset")))
        .await
        .expect("following the reset link");
    eventually(
        &grace,
        "return document.getElementById('reset-form').checkVisibility()",
        |shown| shown == true,
    )
    .await;
    fill(&grace, "reset-new-password", "a brand new password").await;
    fill(&grace, "reset-confirm-password", "a brand new password").await;
    steps.shoot(&grace, "grace-sets-a-new-password").await;
    click(&grace, "#reset-submit").await;
    eventually(
        &grace,
        "return document.getElementById('reset-status').textContent",
        |text| {
            text.as_str()
                .is_some_and(|t| t.starts_with("Password changed"))
        },
    )
    .await;
    fill(&grace, "login-name", "grace").await;
    fill(&grace, "login-password", "a brand new password").await;
    click(&grace, "#login-button").await;
    eventually(
        &grace,
        "return [document.getElementById('app-view').checkVisibility(), \
                 document.getElementById('auth-view').checkVisibility()]",
        |shown| shown == &json!([true, false]),
    )
    .await;

    ada.close().await.expect("closing ada's browser");
    grace.close().await.expect("closing grace's browser");
    drop(driver.process);
}
