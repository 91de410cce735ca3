//! `atoll group reset`: moves a stopped consumer group's committed offsets on a topic to a time
//! or to the topic's start, on the engine of the console's groups page
//! ([`atoll_console::groups`]). Refused while the group has members.

use std::io::Write;

use atoll_console::groups::{Move, Target};

use crate::broker::Broker;

/// Moves `group`'s offsets on `topic` to `target`; with `dry_run`, only says where.
pub(crate) fn reset(
    broker: &Broker,
    group: &str,
    topic: &str,
    target: Target,
    dry_run: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    broker.partitions(topic)?;
    let moves = broker.plan_move(group, topic, target)?;
    if !dry_run {
        broker.apply_move(group, topic, &moves)?;
    }
    let verb = if dry_run { "would move" } else { "moved" };
    writeln!(out, "{verb} {group} on {topic}:")?;
    write_moves(&moves, out)?;
    if moves.iter().all(|m| m.from.is_none()) {
        writeln!(
            out,
            "note: {group} had committed nothing on {topic}: a new group, or a mistyped name?"
        )?;
    }
    Ok(())
}

/// One line per partition: `partition P: FROM -> TO` (`-` where nothing was committed).
pub(crate) fn write_moves(moves: &[Move], out: &mut impl Write) -> anyhow::Result<()> {
    for m in moves {
        let from = m.from.map_or_else(|| "-".to_owned(), |o| o.to_string());
        writeln!(out, "  partition {}: {from} -> {}", m.partition, m.to)?;
    }
    Ok(())
}
