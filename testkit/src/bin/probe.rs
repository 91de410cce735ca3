//! The probe service process used by the multi-process tests.
//!
//! Run with: `ATOLL_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run -p atoll-testkit --bin probe`

use atoll::App;
use atoll_testkit::probe::{Alarm, Bulk, Journey, Pipeline, Probe, Tally};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = atoll::config::Config::load()?;
    let _telemetry = atoll::telemetry::init(&config.telemetry, "acme.test.probe", "atoll=info")?;
    let app = App::new(config);
    // `PROBE_SERVICE=pipeline`, `bulk`, `journey`, `tally` or `alarm`: that service instead of the
    // probe.
    let app = match std::env::var("PROBE_SERVICE").as_deref() {
        Ok("pipeline") => app.service(Pipeline::from_env()),
        Ok("bulk") => app.service(Bulk),
        Ok("journey") => app.service(Journey),
        Ok("tally") => app.service(Tally).migrations(Tally::migrations()),
        Ok("alarm") => app.service(Alarm).migrations(Alarm::migrations()),
        _ => app.service(Probe::from_env()),
    };
    app.run().await?;
    Ok(())
}
