//! `telemetry::init`: what it refuses. (Its output is tested end to end in the testkit:
//! JSON logs and OTLP export from a service process.)

use atoll::config::TelemetryConfig;
use atoll::telemetry;

#[test]
fn a_bad_filter_is_refused_and_a_second_install_too() {
    let mut config = TelemetryConfig::default();
    config.log_filter = Some("atoll=[".into());
    std::env::remove_var("RUST_LOG");
    let e = telemetry::init(&config, "acme.test.t", "info")
        .unwrap_err()
        .to_string();
    assert!(e.contains("telemetry.log_filter"), "{e}");

    config.log_filter = None;
    let installed = telemetry::init(&config, "acme.test.t", "warn").expect("first install");
    let e = telemetry::init(&config, "acme.test.t", "warn")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot install the tracing subscriber"), "{e}");
    drop(installed);
}
