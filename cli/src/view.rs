//! `atoll view rebuild <group> [--from TIME]`: empties a view and replays its facts from the
//! start; with `--from`, keeps the view and applies its facts from that time on over it.
//!
//! The view's tables and the groups that feed it come from the service's store
//! (`atoll_views`, written by the service at start), so the tool needs no code of the service:
//! only its store (`ATOLL_STORE__URL`, or `ATOLL_STORE__PATH` for SQLite) and its broker.

use std::io::Write;

use anyhow::{bail, Context as _};
use atoll::config::Config;
use atoll::{Store, ViewFeed};

use atoll_console::groups::{self, Move, Target};

use crate::broker::Broker;

/// Where a rebuild replays the view's facts from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Since {
    /// The start of each topic: the tables are emptied.
    Start,
    /// Each partition's first fact at or after this time (Unix ms, with the text given): the
    /// tables are kept and those facts applied over them. No group moves forward.
    Time(i64),
}

/// Whether what is said was done, or would be by a run without `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Yes,
    Not,
}

impl Since {
    /// Says where one of the view's groups moved.
    fn say_move(
        self,
        feed: &ViewFeed,
        moves: &[Move],
        done: Done,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        let (group, topic) = (&feed.group, &feed.topic);
        match (self, done) {
            (Self::Start, Done::Yes) => writeln!(out, "rewound {group} to the start of {topic}")?,
            (Self::Start, Done::Not) => {
                writeln!(out, "would rewind {group} to the start of {topic}")?;
            }
            (Self::Time(_), Done::Yes) => writeln!(out, "moved {group} on {topic}:")?,
            (Self::Time(_), Done::Not) => writeln!(out, "would move {group} on {topic}:")?,
        }
        if let Self::Time(_) = self {
            crate::group::write_moves(moves, out)?;
        }
        Ok(())
    }

    /// Says what became of the view's tables.
    fn say_tables(self, tables: &str, done: Done, out: &mut impl Write) -> anyhow::Result<()> {
        match (self, done) {
            (Self::Start, Done::Yes) => writeln!(out, "emptied {tables}")?,
            (Self::Start, Done::Not) => writeln!(out, "would empty {tables}")?,
            (Self::Time(_), Done::Yes) => {
                writeln!(
                    out,
                    "kept {tables}: the facts from the time on are applied over them"
                )?;
            }
            (Self::Time(_), Done::Not) => writeln!(
                out,
                "would keep {tables} and apply the facts from the time on over them"
            )?,
        }
        Ok(())
    }
}

/// Rebuilds the view `group` feeds from `since`; with `dry_run`, only says what it would do.
///
/// Everything is checked first (the tables' names, the topics, that no group has members)
/// and every move planned. Then the groups are moved and the view reset (its tables emptied,
/// or kept) in one transaction; should either fail, the groups are put back where they were,
/// and the view stays as it was.
pub(crate) fn rebuild(
    runtime: tokio::runtime::Handle,
    bootstrap: Option<String>,
    group: &str,
    since: Since,
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
    // Everything that can be checked is checked, and every move planned, before anything
    // changes.
    view.check()?;
    let mut planned = Vec::new();
    for feed in &view.feeds {
        broker.partitions(&feed.topic)?;
        let members = broker.members(&feed.group)?;
        if members > 0 {
            bail!(
                "consumer group `{}` has {members} member(s): stop the service before rebuilding its view",
                feed.group
            );
        }
        let moves = match since {
            Since::Start => broker.plan_move(&feed.group, &feed.topic, Target::Start)?,
            Since::Time(ms) => groups::backwards_only(&broker.plan_move(
                &feed.group,
                &feed.topic,
                Target::Time(ms),
            )?),
        };
        planned.push((feed, moves));
    }
    let tables = view.tables.join(", ");
    if dry_run {
        for (feed, moves) in &planned {
            since.say_move(feed, moves, Done::Not, out)?;
        }
        return since.say_tables(&tables, Done::Not, out);
    }
    // Where each group was, to put it back should a later step fail: a group left at the
    // start of its topic beside a view that was not emptied would apply old facts again once
    // their inbox rows are pruned.
    let mut saved = Vec::new();
    let rebuilt = (|| -> anyhow::Result<()> {
        for (feed, moves) in &planned {
            saved.push((feed, broker.committed(&feed.group, &feed.topic)?));
            broker.apply_move(&feed.group, &feed.topic, moves)?;
            since.say_move(feed, moves, Done::Yes, out)?;
        }
        match since {
            Since::Start => runtime.block_on(store.reset_view(&view))?,
            Since::Time(ms) => runtime.block_on(store.reopen_view(&view, ms))?,
        }
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
    since.say_tables(&tables, Done::Yes, out)?;
    writeln!(
        out,
        "the view is rebuilt from the facts when the service starts"
    )?;
    Ok(())
}
