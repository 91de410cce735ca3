//! The schema side of `plan`: each event's checked-in Avro schema against the subject's latest
//! version in the schema registry, through the registry's compatibility endpoint (which
//! applies the subject's own compatibility level).

use std::path::Path;

use anyhow::Context as _;
use atoll::config::{Config, Registry};
use atoll::contract::Manifest;

/// The registry at `url`, reached with the configured CA and login (`schema_registry.*`).
pub(crate) fn registry(url: &str) -> anyhow::Result<Registry> {
    let mut config = Config::load()?.schema_registry;
    config.url = Some(url.to_owned());
    let registry = config.resolve().map_err(anyhow::Error::msg)?;
    Ok(registry.expect("a URL is set"))
}

/// What the registry says of one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The registry has no such subject: it is registered when first written.
    New,
    /// The schema may be registered as the next version.
    Compatible,
    /// It may not; the registry's reasons, when it gives any.
    Incompatible(Vec<String>),
}

/// The verdict on every event of `manifests` that has a subject, by subject. Each schema is
/// read from `<dir>/avro/<subject>.avsc`.
pub(crate) fn check(
    registry: &Registry,
    dir: &Path,
    manifests: &[Manifest],
) -> anyhow::Result<Vec<(String, Verdict)>> {
    let client = registry
        .blocking_client(std::time::Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    let base = registry.url().trim_end_matches('/');
    let shown = registry.shown();
    let mut verdicts = Vec::new();
    for (subject, path) in manifests
        .iter()
        .flat_map(|m| &m.services)
        .flat_map(|s| &s.events)
        .filter_map(|e| Some((e.subject.as_deref()?, e.schema_file(dir)?)))
    {
        let schema = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the schema of {subject} ({})", path.display()))?;
        let body = serde_json::to_vec(&serde_json::json!({ "schema": schema }))?;
        let url = format!("{base}/compatibility/subjects/{subject}/versions/latest?verbose=true");
        let request = client
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body);
        let response = registry.login(request).send().with_context(|| {
            format!(
                "cannot reach the schema registry at {shown} (set --registry or \
                 ATOLL_SCHEMA_REGISTRY__URL to a reachable one)"
            )
        })?;
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let verdict = if status.as_u16() == 404 {
            Verdict::New
        } else if !status.is_success() {
            anyhow::bail!("the registry at {shown} answered {status} for {subject}: {text}");
        } else if json["is_compatible"] == true {
            Verdict::Compatible
        } else {
            let reasons = json["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Verdict::Incompatible(reasons)
        };
        verdicts.push((subject.to_owned(), verdict));
    }
    Ok(verdicts)
}
