//! The operator's holds (see [`crate::contract::control`]) as this process knows them, and
//! what a listener's consumer changes to obey them.
//!
//! The process's control reader ([`crate::app`]) writes [`Holds`] as it reads the services'
//! `private.control` topics; each listener's poll thread looks at its [`Holds::generation`]
//! every turn (one atomic load) and, when it moved or the assignment changed, pauses the held
//! partitions it owns and resumes those whose hold was lifted ([`plan`], a pure core).
//!
//! A held partition is paused in librdkafka, as a full buffer pauses one: its records already
//! fetched are dropped by librdkafka and fetched again from the last one delivered when it
//! resumes. The partition's records already handed to its worker finish; its offsets keep
//! being committed; its lag grows while it is held. A partition paused by both a hold and a
//! full buffer resumes when neither holds it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::contract::control::{Hold, HoldKey};

/// Every hold this process read, per service and listener.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    by_listener: RwLock<HashMap<(String, String), BTreeMap<i32, Hold>>>,
    /// Moves on every change: a consumer that saw this generation has nothing new to obey.
    generation: AtomicU64,
}

impl Holds {
    /// Records that `key` of `service` is held (`Some`) or free (`None`); whether that changed
    /// anything.
    pub(crate) fn set(&self, service: &str, key: HoldKey, hold: Option<Hold>) -> bool {
        let mut map = self.by_listener.write();
        let listener = map.entry((service.to_owned(), key.listener)).or_default();
        let changed = match hold {
            Some(hold) => listener.insert(key.partition, hold.clone()) != Some(hold),
            None => listener.remove(&key.partition).is_some(),
        };
        if changed {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        changed
    }

    /// The holds on `listener` of `service`, by partition.
    pub(crate) fn of(&self, service: &str, listener: &str) -> BTreeMap<i32, Hold> {
        self.by_listener
            .read()
            .get(&(service.to_owned(), listener.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// How many changes were recorded so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// What a consumer changes to obey the holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Held partitions it owns and has not paused for their hold yet.
    pub(crate) pause: Vec<i32>,
    /// Partitions it paused for a hold that was lifted, or that it no longer owns.
    pub(crate) release: Vec<i32>,
}

/// What to change, given the partitions the consumer owns, those held, and those it paused
/// for their hold so far.
pub(crate) fn plan(
    assigned: &[i32],
    held: &BTreeMap<i32, Hold>,
    paused_for_hold: &BTreeSet<i32>,
) -> Plan {
    let wanted: BTreeSet<i32> = assigned
        .iter()
        .copied()
        .filter(|p| held.contains_key(p))
        .collect();
    Plan {
        pause: wanted.difference(paused_for_hold).copied().collect(),
        release: paused_for_hold.difference(&wanted).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold() -> Hold {
        Hold::new("test", "", 0)
    }

    #[test]
    fn plans_pause_what_is_held_and_owned_and_release_the_rest() {
        // (assigned, held, paused for a hold) → (pause, release)
        type Case = (
            &'static [i32],
            &'static [i32],
            &'static [i32],
            &'static [i32],
            &'static [i32],
        );
        let cases: &[Case] = &[
            (&[0, 1, 2], &[], &[], &[], &[]),
            (&[0, 1, 2], &[1], &[], &[1], &[]),
            // Already paused for it: nothing to do.
            (&[0, 1, 2], &[1], &[1], &[], &[]),
            // Held elsewhere: not ours to pause.
            (&[0, 1], &[5], &[], &[], &[]),
            // Lifted.
            (&[0, 1, 2], &[], &[1], &[], &[1]),
            // No longer owned.
            (&[0, 2], &[1], &[1], &[], &[1]),
            (&[0, 1, 2], &[0, 2], &[2, 3], &[0], &[3]),
        ];
        for (assigned, held, paused, pause, release) in cases {
            let held = held.iter().map(|p| (*p, hold())).collect();
            let paused = paused.iter().copied().collect();
            let got = plan(assigned, &held, &paused);
            let want = Plan {
                pause: pause.to_vec(),
                release: release.to_vec(),
            };
            assert_eq!(got, want, "{assigned:?} {held:?} {paused:?}");
        }
    }

    #[test]
    fn a_change_moves_the_generation_and_a_repeat_does_not() {
        let holds = Holds::default();
        let key = || HoldKey::new("orders", 2);
        assert!(holds.set("s", key(), Some(hold())));
        assert_eq!(holds.generation(), 1);
        assert!(!holds.set("s", key(), Some(hold())));
        assert_eq!(holds.generation(), 1);
        assert_eq!(holds.of("s", "orders").keys().collect::<Vec<_>>(), [&2]);
        assert!(holds.of("t", "orders").is_empty());
        assert!(holds.set("s", key(), None));
        assert!(!holds.set("s", key(), None));
        assert_eq!(holds.generation(), 2);
        assert!(holds.of("s", "orders").is_empty());
    }
}
