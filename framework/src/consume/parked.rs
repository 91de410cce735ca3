//! Partitions taken from a listener whose progress was not committed: records still in flight
//! after the drain timeout, or a commit the broker did not take (the assignment was lost with
//! the group session, during a network outage). Their handlers go on; what finishes still
//! moves the partition's watermark. When the partition comes back to this consumer, its
//! progress is committed before it is fetched again, so the records handled here are not
//! handled twice (unless the group committed past them meanwhile). A partition that goes
//! elsewhere is handled again from its committed offset by its new owner: at least once.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::TopicPartitionList;

use crate::consume::committer::Batch;
use crate::consume::worker::PartitionShared;

/// The parked partitions of one consumer, by partition.
#[derive(Debug, Default)]
pub(crate) struct Parked(Mutex<HashMap<i32, Arc<PartitionShared>>>);

impl Parked {
    /// Keeps partition `p`'s state until it is assigned here again (replacing an older one).
    pub(crate) fn park(&self, p: i32, part: Arc<PartitionShared>) {
        self.0.lock().insert(p, part);
    }

    /// The parked states of those of `partitions` parked here, taken out.
    pub(crate) fn take(&self, partitions: &[i32]) -> Vec<(i32, Arc<PartitionShared>)> {
        let mut parked = self.0.lock();
        partitions
            .iter()
            .filter_map(|p| parked.remove(p).map(|part| (*p, part)))
            .collect()
    }
}

/// The offset to commit for a partition given back: its `progress` here (the watermark's
/// committable offset), when that passes what the group `committed` and nothing but this
/// process's own work can have moved the committed offset since: it lies between where this
/// process began to fetch (`first`) and its progress. A committed offset below `first` was
/// reset by an operator, one at or past the progress was moved by another owner: both are
/// kept. With none committed (this process never committed it), the progress.
pub(crate) fn catch_up(
    progress: Option<i64>,
    first: Option<i64>,
    committed: Option<i64>,
) -> Option<i64> {
    match (progress, committed) {
        (Some(p), Some(c)) if first.is_some_and(|f| f <= c) && c < p => Some(p),
        (Some(p), None) => Some(p),
        _ => None,
    }
}

/// The commit that catches up partitions given `back`, from the group's `committed` offsets
/// of `topic` as read from the broker: a partition whose entry has an error is left out
/// (nothing known); one with no offset was never committed. Parked partitions are
/// at-least-once: no staged outputs go with it.
pub(crate) fn catch_up_batch(
    topic: &str,
    back: &[(i32, Arc<PartitionShared>)],
    committed: &TopicPartitionList,
) -> Batch {
    let mut batch = Batch::default();
    for (p, part) in back {
        let Some(entry) = committed.find_partition(topic, *p) else {
            continue;
        };
        if let Err(error) = entry.error() {
            tracing::debug!(partition = p, %error, "no committed offset read for a partition given back");
            continue;
        }
        let committed = entry.offset().to_raw().filter(|o| *o >= 0);
        let watermark = part.watermark.lock();
        if let Some(o) = catch_up(watermark.committable(), watermark.first(), committed) {
            batch.offsets.push((*p, o));
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn commits_progress_only_past_a_committed_offset_of_its_own_making() {
        let cases = [
            // (progress, first started, committed, commit)
            (Some(31), Some(0), Some(1), Some(31)),
            (Some(31), Some(1), Some(1), Some(31)),
            (Some(30), Some(0), None, Some(30)),
            // Nothing past the committed offset.
            (Some(5), Some(0), Some(5), None),
            // Another owner committed further.
            (Some(5), Some(0), Some(9), None),
            // Reset below where this process began: the operator's offset stays.
            (Some(31), Some(10), Some(3), None),
            // Nothing finished here.
            (None, Some(0), Some(9), None),
            (None, None, None, None),
        ];
        for (progress, first, committed, expected) in cases {
            assert_eq!(
                catch_up(progress, first, committed),
                expected,
                "{progress:?} from {first:?} over {committed:?}"
            );
        }
    }

    /// A parked partition that handled `offsets` (each finished), from the first.
    fn handled(offsets: std::ops::Range<i64>) -> Arc<PartitionShared> {
        let part = PartitionShared::new(CancellationToken::new());
        {
            let mut w = part.watermark.lock();
            for o in offsets.clone() {
                w.start(o);
            }
            for o in offsets {
                w.finish(o);
            }
        }
        Arc::new(part)
    }

    #[test]
    fn the_batch_reads_the_offsets_the_broker_returned() {
        use rdkafka::Offset;
        let topic = "acme.test.relay.commands";
        let back = [
            (0, handled(0..31)),
            (1, handled(0..30)),
            (2, handled(5..9)),
            (3, handled(0..4)),
        ];
        let mut committed = TopicPartitionList::new();
        // Partition 0 committed by this process before; 1 never; 2 reset below where this
        // process began; 3 not in the answer at all.
        committed
            .add_partition_offset(topic, 0, Offset::Offset(1))
            .unwrap();
        committed
            .add_partition_offset(topic, 1, Offset::Invalid)
            .unwrap();
        committed
            .add_partition_offset(topic, 2, Offset::Offset(2))
            .unwrap();
        let batch = catch_up_batch(topic, &back, &committed);
        assert_eq!(batch.offsets, [(0, 31), (1, 30)]);
        assert!(batch.outputs.is_empty());
    }

    #[test]
    fn a_partition_is_taken_once_and_only_when_parked() {
        let parked = Parked::default();
        parked.park(2, Arc::new(PartitionShared::new(CancellationToken::new())));
        parked.park(0, Arc::new(PartitionShared::new(CancellationToken::new())));
        let back: Vec<i32> = parked.take(&[1, 2]).iter().map(|(p, _)| *p).collect();
        assert_eq!(back, [2]);
        assert!(parked.take(&[2]).is_empty(), "taken already");
        assert_eq!(parked.take(&[0, 1]).len(), 1);
    }
}
