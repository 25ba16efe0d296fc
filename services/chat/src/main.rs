use chat::config::Config;
use chat::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serving::telemetry::init();
    let config = Config::from_env()?;
    Application::build(config)
        .await?
        .run_until_stopped(serving::shutdown::signal())
        .await
}
