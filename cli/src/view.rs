//! `atoll view rebuild <group>`: empties a view and replays its facts from the start.
//!
//! The view's tables and the groups that feed it come from the service's store
//! (`atoll_views`, written by the service at start), so the tool needs no code of the service:
//! only its store (`ATOLL_STORE__URL`, or `ATOLL_STORE__PATH` for SQLite) and its broker.

use std::io::Write;

use anyhow::{bail, Context as _};
use atoll::config::Config;
use atoll::Store;

use crate::broker::Broker;

/// Rebuilds the view `group` feeds; with `dry_run`, only says what it would do.
///
/// Order matters for a rebuild that fails half-way: the groups are rewound first and the
/// tables emptied last, in one transaction. Should emptying fail, the records delivered again
/// are skipped as repeats (their inbox rows remain) and the view stays as it was; running the
/// command again finishes the job.
pub(crate) fn rebuild(
    runtime: tokio::runtime::Handle,
    group: &str,
    dry_run: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let config = Config::load()?;
    if config.store.url.is_none() && !config.store.path.exists() {
        bail!(
            "no store at `{}`: set ATOLL_STORE__URL (PostgreSQL) or ATOLL_STORE__PATH (SQLite) to the service's store",
            config.store.path.display()
        );
    }
    let store = runtime
        .block_on(Store::connect(&config.store))
        .context("connecting to the service's store")?;
    let Some(view) = runtime.block_on(store.view(group))? else {
        let groups = runtime.block_on(store.view_groups())?;
        bail!(
            "consumer group `{group}` feeds no view in this store; the groups that do: {}",
            if groups.is_empty() {
                "none (a service registers its views when it starts)".to_owned()
            } else {
                groups.join(", ")
            }
        );
    };
    let broker = Broker::connect(runtime.clone())?;
    for feed in &view.feeds {
        let members = broker.members(&feed.group)?;
        if members > 0 {
            bail!(
                "consumer group `{}` has {members} member(s): stop the service before rebuilding its view",
                feed.group
            );
        }
    }
    let verb = if dry_run { "would rewind" } else { "rewound" };
    for feed in &view.feeds {
        if !dry_run {
            broker.rewind(&feed.group, &feed.topic)?;
        }
        writeln!(out, "{verb} {} to the start of {}", feed.group, feed.topic)?;
    }
    if !dry_run {
        runtime.block_on(store.reset_view(&view))?;
    }
    let verb = if dry_run { "would empty" } else { "emptied" };
    writeln!(out, "{verb} {}", view.tables.join(", "))?;
    if !dry_run {
        writeln!(
            out,
            "the view is rebuilt from the facts when the service starts"
        )?;
    }
    Ok(())
}
