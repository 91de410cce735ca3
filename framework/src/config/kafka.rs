//! The librdkafka client settings every client of a process shares, and librdkafka's logs.

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

use super::Config;

/// The librdkafka settings every client of this process shares: bootstrap servers and the
/// pass-through properties.
pub fn client_config(config: &Config, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    c
}

/// Sets `key` unless the configuration already has it (e.g. from the pass-through properties).
pub(crate) fn set_default(config: &mut ClientConfig, key: &str, value: &str) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

/// Forwards a librdkafka log line to `tracing`, target `librdkafka`.
pub(crate) fn log(client: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(target: "librdkafka", client, facility, "{message}")
        }
        Warning => tracing::warn!(target: "librdkafka", client, facility, "{message}"),
        Notice | Info => tracing::info!(target: "librdkafka", client, facility, "{message}"),
        Debug => tracing::debug!(target: "librdkafka", client, facility, "{message}"),
    }
}
