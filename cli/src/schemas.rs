//! The schema side of `plan`: each event's checked-in Avro schema against the subject's latest
//! version in the schema registry, through the registry's compatibility endpoint (which
//! applies the subject's own compatibility level).

use std::path::Path;

use anyhow::Context as _;
use atoll::contract::Manifest;

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
    registry: &str,
    dir: &Path,
    manifests: &[Manifest],
) -> anyhow::Result<Vec<(String, Verdict)>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let base = registry.trim_end_matches('/');
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
        let response = client
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body)
            .send()
            .with_context(|| {
                format!(
                    "cannot reach the schema registry at {base} (set --registry or \
                     ATOLL_SCHEMA_REGISTRY__URL to a reachable one)"
                )
            })?;
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let verdict = if status.as_u16() == 404 {
            Verdict::New
        } else if !status.is_success() {
            anyhow::bail!("the registry at {base} answered {status} for {subject}: {text}");
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
