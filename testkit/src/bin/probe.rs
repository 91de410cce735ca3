//! The probe service process used by the multi-process tests.
//!
//! Run with: `ATOLL_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run -p atoll-testkit --bin probe`

use atoll::App;
use atoll_testkit::probe::Probe;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "atoll=info".into()),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    App::from_env()?.service(Probe::from_env()).run().await?;
    Ok(())
}
