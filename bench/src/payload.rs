//! The records every implementation reads and writes: a ~200-byte JSON transfer in, a smaller
//! JSON record out.

use atoll::{event_service, Event};
use serde::{Deserialize, Serialize};

/// Declares a relay service (`$name`: it owns `bench.perf.$name.commands`, its input, and
/// `.events`, its output), its input and its output.
macro_rules! relay {
    ($(#[$doc:meta])* $service:ident, $name:tt, $transfer:ident, $relayed:ident) => {
        $(#[$doc])*
        #[event_service(company = "bench", namespace = "perf", name = $name, partitions = 6)]
        #[derive(Debug, Default)]
        pub(crate) struct $service;

        /// The input: a command of the relay service, about 200 bytes of JSON.
        #[derive(Debug, Clone, Serialize, Deserialize, Event)]
        #[event(command, name = "transfer", version = 1, service = $service)]
        pub(crate) struct $transfer {
            /// Sequence number.
            pub(crate) id: u64,
            /// When the producer sent it, in microseconds since the epoch.
            pub(crate) ts_us: u64,
            /// The key: one of `keys` accounts.
            #[event(key)]
            pub(crate) account: String,
            /// Amount.
            pub(crate) amount_cents: i64,
            /// Currency.
            pub(crate) currency: String,
            /// Padding to about 200 bytes.
            pub(crate) memo: String,
        }

        /// The output, one per input.
        #[derive(Debug, Clone, Serialize, Deserialize, Event)]
        #[event(fact, name = "transfer_relayed", version = 1, service = $service)]
        pub(crate) struct $relayed {
            /// The input's sequence number.
            pub(crate) id: u64,
            /// The input's timestamp.
            pub(crate) ts_us: u64,
            /// The input's account.
            #[event(key)]
            pub(crate) account: String,
            /// The input's amount.
            pub(crate) amount_cents: i64,
        }

        impl From<&$transfer> for $relayed {
            fn from(t: &$transfer) -> Self {
                Self {
                    id: t.id,
                    ts_us: t.ts_us,
                    account: t.account.clone(),
                    amount_cents: t.amount_cents,
                }
            }
        }
    };
}

relay!(
    /// The service atoll runs in the benchmark: it owns the input (`bench.perf.relay.commands`)
    /// and the output (`bench.perf.relay.events`).
    Relay,
    "relay",
    Transfer,
    Relayed
);
relay!(
    /// Scenario 9's relay, whose handler takes a batch of a partition's records in one call
    /// ([`atoll::Batch`]); the same work per record as [`Relay`].
    RelayBatch,
    "relay_batch",
    BatchTransfer,
    BatchRelayed
);

/// Declares a ledger service of scenario 4 (`$name`: it owns `bench.perf.$name.commands` and
/// `.events`, and keeps account balances in PostgreSQL), its input and its output.
macro_rules! ledger {
    ($(#[$doc:meta])* $service:ident, $name:tt, $deposit:ident, $deposited:ident) => {
        $(#[$doc])*
        #[event_service(company = "bench", namespace = "perf", name = $name, partitions = 6)]
        #[derive(Debug, Default)]
        pub(crate) struct $service;

        /// Scenario 4's input: the same JSON as [`Transfer`], a command of the ledger.
        #[derive(Debug, Clone, Serialize, Deserialize, Event)]
        #[event(command, name = "deposit", version = 1, service = $service)]
        pub(crate) struct $deposit {
            /// Sequence number.
            pub(crate) id: u64,
            /// When the producer sent it, in microseconds since the epoch.
            pub(crate) ts_us: u64,
            /// The key: one of `keys` accounts.
            #[event(key)]
            pub(crate) account: String,
            /// Amount.
            pub(crate) amount_cents: i64,
            /// Currency.
            pub(crate) currency: String,
            /// Padding.
            pub(crate) memo: String,
        }

        /// Scenario 4's output, one per input, published through the outbox.
        #[derive(Debug, Clone, Serialize, Deserialize, Event)]
        #[event(fact, name = "deposited", version = 1, service = $service)]
        pub(crate) struct $deposited {
            /// The input's sequence number.
            pub(crate) id: u64,
            /// The input's timestamp.
            pub(crate) ts_us: u64,
            /// When atoll's poll thread received the input, in microseconds since the epoch:
            /// the start of atoll's added latency, which ends when the outbox hands this fact
            /// to the producer (the record's timestamp).
            pub(crate) received_us: u64,
            /// The input's account.
            #[event(key)]
            pub(crate) account: String,
            /// The input's amount.
            pub(crate) amount_cents: i64,
        }
    };
}

ledger!(
    /// The transactional service of scenario 4: its handler is called once per record.
    Ledger,
    "ledger",
    Deposit,
    Deposited
);
ledger!(
    /// Scenario 4's set-based ledger: its handler takes each store batch in one call.
    LedgerSet,
    "ledger_set",
    SetDeposit,
    SetDeposited
);

/// Input record `id` with timestamp `ts_us`, keyed by one of `keys` accounts.
pub(crate) fn transfer(id: u64, ts_us: u64, keys: u64) -> Transfer {
    Transfer {
        id,
        ts_us,
        account: format!("account-{:06}", id % keys),
        amount_cents: (id % 10_000) as i64 + 1,
        currency: "EUR".to_owned(),
        memo: "invoice 2026-11 for services rendered, thank you for your business; ref ABCDEFGHIJKLMNOP"
            .to_owned(),
    }
}

/// The input topic, which every implementation reads (but the transactional one).
pub(crate) const INPUT: &str = "bench.perf.relay.commands";
/// The input topic of the batch relay (scenario 9).
pub(crate) const INPUT_BATCH: &str = "bench.perf.relay_batch.commands";
/// The output topic of the batch relay.
pub(crate) const OUTPUT_BATCH: &str = "bench.perf.relay_batch.events";
/// The input topic of the transactional ledger (scenario 4).
pub(crate) const INPUT_LEDGER: &str = "bench.perf.ledger.commands";
/// The output topic of the transactional ledger.
pub(crate) const OUTPUT_LEDGER: &str = "bench.perf.ledger.events";
/// The input topic of the set-based ledger (scenario 4).
pub(crate) const INPUT_LEDGER_SET: &str = "bench.perf.ledger_set.commands";
/// The output topic of the set-based ledger.
pub(crate) const OUTPUT_LEDGER_SET: &str = "bench.perf.ledger_set.events";
/// The output topic of atoll.
pub(crate) const OUTPUT_ATOLL: &str = "bench.perf.relay.events";
/// The output topic of the raw rdkafka loop.
pub(crate) const OUTPUT_RAW: &str = "bench.raw.out";
/// The output topic of ruststream.
pub(crate) const OUTPUT_RUSTSTREAM: &str = "bench.ruststream.out";
/// The output topic of FastStream.
pub(crate) const OUTPUT_FASTSTREAM: &str = "bench.faststream.out";
/// Partitions of every benchmark topic.
pub(crate) const PARTITIONS: i32 = 6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_record_is_about_200_bytes() {
        let len = serde_json::to_vec(&transfer(123_456, crate::meter::now_us(), 1000))
            .unwrap()
            .len();
        assert!((180..=220).contains(&len), "{len} bytes");
    }

    #[test]
    fn the_topics_are_atolls() {
        assert_eq!(Transfer::topic().as_str(), INPUT);
        assert_eq!(Relayed::topic().as_str(), OUTPUT_ATOLL);
        assert_eq!(Deposit::topic().as_str(), INPUT_LEDGER);
        assert_eq!(Deposited::topic().as_str(), OUTPUT_LEDGER);
        assert_eq!(SetDeposit::topic().as_str(), INPUT_LEDGER_SET);
        assert_eq!(SetDeposited::topic().as_str(), OUTPUT_LEDGER_SET);
        assert_eq!(BatchTransfer::topic().as_str(), INPUT_BATCH);
        assert_eq!(BatchRelayed::topic().as_str(), OUTPUT_BATCH);
    }
}
