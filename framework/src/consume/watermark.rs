//! Per-partition commit watermarks for at-least-once delivery (see `docs/architecture.md#delivery-contract`).
//!
//! Records of a partition are started in offset order and may finish in any order. The
//! offset that may be committed is the lowest offset not yet finished (Kafka commits name the
//! *next* record to read), so a record is never skipped by a commit while it is unfinished.

use std::collections::{BTreeMap, VecDeque};

use crate::produce::transactional::Output;

/// The commit watermark of one partition.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    /// In an exactly-once listener: the outputs of finished records not yet handed to a
    /// commit, by offset. They are committed with the offsets past them, in offset order.
    staged: BTreeMap<i64, Vec<Output>>,
    /// Started records, ascending by offset, with whether each has finished.
    pending: VecDeque<(i64, bool)>,
    /// One past the highest finished offset whose predecessors all finished.
    next: Option<i64>,
    /// The offset last handed out by [`Watermark::take_commit`].
    committed: Option<i64>,
    /// The lowest offset started: where the partition's fetch began (the group's committed
    /// offset then, or where `auto.offset.reset` starts).
    first: Option<i64>,
}

impl Watermark {
    /// An empty watermark.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` has started. Offsets start in ascending order; a lower or repeated
    /// offset is a rewind: the records from it on come again (their earlier starts are
    /// forgotten), those below it stay pending until they finish. A record's earlier delivery
    /// that finishes after a rewind finishes the record: it was handled.
    pub(crate) fn start(&mut self, offset: i64) {
        self.first = Some(self.first.map_or(offset, |f| f.min(offset)));
        if self.pending.back().is_some_and(|&(last, _)| offset <= last) {
            let below = self.pending.partition_point(|&(o, _)| o < offset);
            self.pending.truncate(below);
            // The records from `offset` on are handled again: their outputs come again too.
            self.staged.split_off(&offset);
        }
        if self.pending.is_empty() && self.next.is_some_and(|n| offset < n) {
            // A rewind below what finished already: commit nothing past this record.
            self.next = Some(offset);
        }
        self.pending.push_back((offset, false));
    }

    /// Records that `offset` has finished. Returns `false` when it was not started (e.g. it
    /// belonged to an assignment that was revoked).
    pub(crate) fn finish(&mut self, offset: i64) -> bool {
        // Most records finish in the order they started: the lowest pending one.
        let i = if self.pending.front().is_some_and(|&(o, _)| o == offset) {
            0
        } else {
            match self.pending.binary_search_by_key(&offset, |&(o, _)| o) {
                Ok(i) => i,
                Err(_) => return false,
            }
        };
        self.pending[i].1 = true;
        while let Some(&(o, true)) = self.pending.front() {
            self.pending.pop_front();
            self.next = Some(o + 1);
        }
        true
    }

    /// [`Watermark::finish`], keeping the record's `outputs` for the commit that passes it
    /// (see [`Watermark::take_staged`]). The outputs of a record that was not started are
    /// dropped: its partition was taken away, and whoever handles it next produces them.
    pub(crate) fn finish_with(&mut self, offset: i64, outputs: Vec<Output>) -> bool {
        let started = self.finish(offset);
        if started && !outputs.is_empty() {
            self.staged.insert(offset, outputs);
        }
        started
    }

    /// The staged outputs of the records below `offset` (the offset being committed), in
    /// offset order; they are no longer kept.
    pub(crate) fn take_staged(&mut self, offset: i64) -> Vec<Output> {
        let above = self.staged.split_off(&offset);
        std::mem::replace(&mut self.staged, above)
            .into_values()
            .flatten()
            .collect()
    }

    /// The offset that may be committed now: the lowest unfinished offset, or one past the
    /// highest finished one when nothing is in flight.
    pub(crate) fn committable(&self) -> Option<i64> {
        match self.pending.front() {
            Some(&(lowest_unfinished, _)) => self.next.map(|_| lowest_unfinished),
            None => self.next,
        }
    }

    /// The lowest offset started; `None` before the first.
    pub(crate) fn first(&self) -> Option<i64> {
        self.first
    }

    /// The committable offset if it moved since the last call.
    pub(crate) fn take_commit(&mut self) -> Option<i64> {
        let c = self.committable()?;
        if self.committed == Some(c) {
            return None;
        }
        self.committed = Some(c);
        Some(c)
    }

    /// How many records started and have not finished or been passed.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.iter().filter(|(_, done)| !done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(n: i64) -> Output {
        Output {
            topic: "t".into(),
            partition: None,
            key: None,
            payload: n.to_string().into_bytes(),
            headers: rdkafka::message::OwnedHeaders::new(),
        }
    }

    fn payloads(outputs: &[Output]) -> Vec<String> {
        outputs
            .iter()
            .map(|o| String::from_utf8(o.payload.clone()).unwrap())
            .collect()
    }

    #[test]
    fn first_is_the_lowest_offset_started_rewinds_included() {
        let mut w = Watermark::new();
        assert_eq!(w.first(), None);
        for o in [7, 8, 9] {
            w.start(o);
        }
        w.finish(7);
        assert_eq!(w.first(), Some(7));
        w.start(5);
        assert_eq!(w.first(), Some(5), "a rewind below the first");
        w.start(6);
        assert_eq!(w.first(), Some(5));
    }

    #[test]
    fn staged_outputs_go_with_the_commit_that_passes_their_record() {
        let mut w = Watermark::new();
        for o in 0..4 {
            w.start(o);
        }
        // Finished out of order: 2 waits for 1.
        assert!(w.finish_with(2, vec![output(20), output(21)]));
        assert!(w.finish_with(0, vec![output(0)]));
        let c = w.take_commit().unwrap();
        assert_eq!(c, 1);
        assert_eq!(payloads(&w.take_staged(c)), ["0"]);
        assert!(w.finish_with(1, vec![]));
        let c = w.take_commit().unwrap();
        assert_eq!(c, 3);
        assert_eq!(
            payloads(&w.take_staged(c)),
            ["20", "21"],
            "in offset, then produce order"
        );
        assert!(w.take_staged(4).is_empty(), "taken once");
    }

    #[test]
    fn staged_outputs_of_rewound_or_unknown_records_are_dropped() {
        let mut w = Watermark::new();
        for o in 0..3 {
            w.start(o);
        }
        w.finish_with(1, vec![output(1)]);
        w.finish_with(2, vec![output(2)]);
        // Redelivered from 1: the first handling's outputs of 1 and 2 are not committed.
        w.start(1);
        assert!(!w.finish_with(7, vec![output(7)]), "never started");
        w.finish_with(0, vec![output(0)]);
        w.finish_with(1, vec![output(10)]);
        assert_eq!(payloads(&w.take_staged(2)), ["0", "10"]);
    }

    #[test]
    fn in_order_completion_advances() {
        let mut w = Watermark::new();
        assert_eq!(w.committable(), None);
        w.start(0);
        w.start(1);
        assert_eq!(w.committable(), None);
        assert!(w.finish(0));
        assert_eq!(w.committable(), Some(1));
        assert!(w.finish(1));
        assert_eq!(w.take_commit(), Some(2));
        assert_eq!(
            w.take_commit(),
            None,
            "unchanged watermark is not committed again"
        );
    }

    #[test]
    fn out_of_order_completion_holds_at_lowest_unfinished() {
        let mut w = Watermark::new();
        for o in 10..15 {
            w.start(o);
        }
        w.finish(12);
        w.finish(14);
        w.finish(13);
        assert_eq!(
            w.committable(),
            None,
            "10 is unfinished: nothing may be committed"
        );
        w.finish(10);
        assert_eq!(w.committable(), Some(11));
        assert_eq!(w.in_flight(), 1);
        w.finish(11);
        assert_eq!(w.committable(), Some(15));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compaction and transaction markers leave gaps.
        let mut w = Watermark::new();
        w.start(3);
        w.start(7);
        w.start(20);
        w.finish(7);
        w.finish(3);
        assert_eq!(w.committable(), Some(20));
        w.finish(20);
        assert_eq!(w.committable(), Some(21));
    }

    #[test]
    fn unknown_offsets_are_reported() {
        let mut w = Watermark::new();
        w.start(5);
        assert!(!w.finish(4));
        assert!(!w.finish(6));
        assert!(w.finish(5));
        assert!(!w.finish(5), "finishing twice is not counted twice");
    }

    #[test]
    fn rewind_never_commits_past_the_rewound_record() {
        let mut w = Watermark::new();
        w.start(0);
        w.start(1);
        w.finish(0);
        w.finish(1);
        assert_eq!(w.take_commit(), Some(2));
        // A seek back to 1 (e.g. after a failed commit) starts again from there.
        w.start(1);
        assert_eq!(w.committable(), Some(1));
        w.finish(1);
        assert_eq!(w.committable(), Some(2));
    }

    /// A rewind above an unfinished record keeps it pending: committing the rewind point
    /// would skip it.
    #[test]
    fn rewind_keeps_unfinished_records_below_it() {
        let mut w = Watermark::new();
        for o in 10..=12 {
            w.start(o);
        }
        w.finish(11);
        // Delivered again from 11 while 10 is still being handled.
        w.start(11);
        assert_eq!(w.committable(), None, "10 is unfinished");
        w.finish(11);
        assert_eq!(w.committable(), None, "10 is still unfinished");
        w.start(12);
        w.finish(10);
        assert_eq!(w.committable(), Some(12));
        w.finish(12);
        assert_eq!(w.take_commit(), Some(13));
        // A rewind below what was committed holds the watermark at the rewound record.
        w.start(5);
        assert_eq!(w.committable(), Some(5));
    }

    /// Random completion orders never commit past an unfinished record.
    #[test]
    fn property_commit_never_passes_unfinished() {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut w = Watermark::new();
            let offsets: Vec<i64> = (0..50).map(|i| i * 2).collect();
            for &o in &offsets {
                w.start(o);
            }
            let mut order = offsets.clone();
            order.shuffle(&mut rng);
            let mut done = std::collections::BTreeSet::new();
            for o in order {
                w.finish(o);
                done.insert(o);
                if let Some(c) = w.committable() {
                    assert!(offsets.iter().filter(|&&x| x < c).all(|x| done.contains(x)));
                }
            }
            assert_eq!(w.committable(), Some(99));
        }
    }
}
