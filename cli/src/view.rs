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
/// Everything is checked first (the tables' names, the topics, that no group has members).
/// Then the groups are rewound and the tables emptied in one transaction; should either
/// fail, the groups are put back where they were, and the view stays as it was.
pub(crate) fn rebuild(
    runtime: tokio::runtime::Handle,
    bootstrap: Option<String>,
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
    let broker = Broker::connect_to(runtime.clone(), bootstrap)?;
    // Everything that can be checked is checked before anything changes.
    view.check()?;
    for feed in &view.feeds {
        broker.partitions(&feed.topic)?;
        let members = broker.members(&feed.group)?;
        if members > 0 {
            bail!(
                "consumer group `{}` has {members} member(s): stop the service before rebuilding its view",
                feed.group
            );
        }
    }
    if dry_run {
        for feed in &view.feeds {
            writeln!(
                out,
                "would rewind {} to the start of {}",
                feed.group, feed.topic
            )?;
        }
        writeln!(out, "would empty {}", view.tables.join(", "))?;
        return Ok(());
    }
    // Where each group was, to put it back should a later step fail: a group left at the
    // start of its topic beside a view that was not emptied would apply old facts again once
    // their inbox rows are pruned.
    let mut saved = Vec::new();
    let rebuilt = (|| -> anyhow::Result<()> {
        for feed in &view.feeds {
            saved.push((feed, broker.committed(&feed.group, &feed.topic)?));
            broker.rewind(&feed.group, &feed.topic)?;
            writeln!(out, "rewound {} to the start of {}", feed.group, feed.topic)?;
        }
        runtime.block_on(store.reset_view(&view))?;
        Ok(())
    })();
    if let Err(e) = rebuilt {
        for (feed, offsets) in &saved {
            if let Err(undo) = broker.commit(&feed.group, offsets) {
                writeln!(
                    out,
                    "could not put {} back where it was: {undo:#}",
                    feed.group
                )?;
            }
        }
        return Err(e.context("the rebuild failed; the groups were put back where they were"));
    }
    writeln!(out, "emptied {}", view.tables.join(", "))?;
    writeln!(
        out,
        "the view is rebuilt from the facts when the service starts"
    )?;
    Ok(())
}
