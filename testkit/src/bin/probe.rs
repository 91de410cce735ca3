//! The probe service process used by the multi-process tests.
//!
//! Run with: `ATOLL_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run -p atoll-testkit --bin probe`

use atoll::App;
use atoll_testkit::probe::Probe;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = atoll::config::Config::load()?;
    let _telemetry = atoll::telemetry::init(&config.telemetry, "acme.test.probe", "atoll=info")?;
    App::new(config).service(Probe::from_env()).run().await?;
    Ok(())
}
