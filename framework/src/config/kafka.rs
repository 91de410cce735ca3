//! The librdkafka client settings every client of a process shares.

use rdkafka::config::ClientConfig;

use super::Config;
use crate::error::{Error, Result};

/// The librdkafka settings every client of this process shares: the bootstrap servers, the
/// pass-through properties and what `kafka.security` stands for (its secret files read).
///
/// # Errors
/// [`Error::Config`] when `kafka.security` cannot work (see
/// [`KafkaSecurity::resolve`](super::KafkaSecurity::resolve)).
pub fn client_config(config: &Config, bootstrap: &str) -> Result<ClientConfig> {
    let security = config.kafka.security_properties().map_err(Error::Config)?;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    for (k, v) in security.properties() {
        c.set(*k, v.expose());
    }
    Ok(c)
}

/// Who the process is to the brokers, for messages: from `kafka.security`, else the
/// pass-through `sasl.username`, else `anonymous`.
pub(crate) fn principal(config: &Config) -> String {
    let typed = config
        .kafka
        .security_properties()
        .map(|r| r.principal().to_owned())
        .unwrap_or_else(|_| "anonymous".to_owned());
    match config.kafka.properties.get("sasl.username") {
        Some(user) if typed == "anonymous" => user.clone(),
        _ => typed,
    }
}

/// Sets `key` unless the configuration already has it (e.g. from the pass-through properties).
pub(crate) fn set_default(config: &mut ClientConfig, key: &str, value: &str) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::BaseProducer;

    /// Every protocol, SASL mechanism and codec atoll documents makes a client: librdkafka is
    /// built with TLS, SASL (PLAIN, SCRAM, OAUTHBEARER) and zstd.
    #[test]
    fn librdkafka_has_tls_sasl_and_zstd() {
        let cases: &[&[(&str, &str)]] = &[
            &[("security.protocol", "ssl")],
            &[
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "alice"),
                ("sasl.password", "s3cret"),
            ],
            &[
                ("security.protocol", "sasl_plaintext"),
                ("sasl.mechanisms", "SCRAM-SHA-256"),
                ("sasl.username", "alice"),
                ("sasl.password", "s3cret"),
            ],
            &[
                ("security.protocol", "sasl_plaintext"),
                ("sasl.mechanisms", "PLAIN"),
                ("sasl.username", "alice"),
                ("sasl.password", "s3cret"),
            ],
            &[
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanisms", "OAUTHBEARER"),
            ],
            &[("compression.type", "zstd")],
        ];
        for properties in cases {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", "127.0.0.1:1");
            for (k, v) in *properties {
                c.set(*k, *v);
            }
            let made: Result<BaseProducer, _> = c.create();
            if let Err(e) = made {
                panic!("{properties:?}: {e}");
            }
        }
    }
}
