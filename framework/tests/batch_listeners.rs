//! Batch listeners outside a store transaction, on the embedded broker: a handler that takes a
//! `Batch` is called with a partition's waiting records at once (up to `batch_size`, or more
//! that come within `batch_wait_ms`), each record's output its own, its offset committed once
//! every record before it is done. A record the handler marks failed alone is called again,
//! and retried or dead-lettered as ever, while its neighbours are not run again; a call that
//! fails as a whole is split until the failing record is alone.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Batch, Event, HandlerError, HandlerResult, Running};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "tally", partitions = 1)]
#[derive(Default, Clone)]
struct Tally {
    /// Each call's record ids, in order.
    calls: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Tally {
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls record `id` was in.
    fn calls_of(&self, id: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.iter().any(|i| i == id))
            .count()
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "vote", version = 1, service = Tally)]
struct Vote {
    #[event(key)]
    id: String,
    /// Hold the call this long (the first record's, so that the others queue behind it).
    hold_ms: u64,
    /// The test waits this long after sending it (not a field the handler reads).
    #[serde(skip)]
    gap_ms: u64,
    /// `transient-once`: marked failed in its first call; `slow-retry`: the same, and its
    /// second call takes 3 s; `permanent`: marked in every call; `boom`: fails every call it
    /// is in, as a whole.
    fail: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "counted", version = 1, service = Tally)]
struct Counted {
    #[event(key)]
    id: String,
}

#[handlers]
impl Tally {
    #[listener(name = "votes", max_attempts = 2, backoff_ms = 10)]
    async fn votes(&self, batch: Batch<Self, Vote>) -> HandlerResult {
        let ids: Vec<String> = batch.events().map(|v| v.id.clone()).collect();
        let first_time: Vec<bool> = ids.iter().map(|id| self.calls_of(id) == 0).collect();
        self.calls.lock().unwrap().push(ids);
        let slow = batch
            .events()
            .zip(&first_time)
            .any(|(v, first)| v.fail == "slow-retry" && !first);
        let hold = batch.events().map(|v| v.hold_ms).max().unwrap_or(0);
        let hold = if slow { hold.max(3_000) } else { hold };
        tokio::time::sleep(Duration::from_millis(hold)).await;
        if batch.events().any(|v| v.fail == "boom") {
            return Err(HandlerError::transient("a boom in the batch"));
        }
        for (record, first) in batch.into_iter().zip(first_time) {
            match record.event.fail.as_str() {
                "transient-once" | "slow-retry" if first => {
                    record.fail(HandlerError::transient("not this time"));
                    continue;
                }
                "permanent" => {
                    record.fail(HandlerError::permanent(format!(
                        "vote {} is void",
                        record.event.id
                    )));
                    continue;
                }
                _ => {}
            }
            record
                .ctx
                .emit(Counted {
                    id: record.event.id.clone(),
                })
                .await?;
        }
        Ok(())
    }
}

const COMMANDS: &str = "acme.test.tally.commands";
const EVENTS: &str = "acme.test.tally.events";
const DLQ: &str = "acme.test.tally.private.dlq";
const GROUP: &str = "acme.test.tally-votes";

/// What a run came to: the calls, the facts by id (with how often each was emitted), the
/// dead letters.
struct Outcome {
    tally: Tally,
    facts: HashMap<String, usize>,
    dead: Vec<OwnedMessage>,
}

/// Starts the service with `config` (its broker embedded), sends `votes` (the first holds its
/// call 2 s, so that the others wait behind it), waits until `done` holds (or 30 s) and every
/// record is committed, and reads at least `facts` facts and the dead letters; then stops it.
async fn run(
    config: Config,
    votes: &[Vote],
    done: impl Fn(&Tally) -> bool,
    facts: usize,
) -> Outcome {
    let (tally, running) = started(config, votes).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&tally) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    finish(tally, running, votes.len(), facts).await
}

/// Starts the service with `config` (its broker embedded), waits for its partition, and sends
/// `votes`.
async fn started(config: Config, votes: &[Vote]) -> (Tally, Running) {
    let tally = Tally::default();
    let running = App::new(config)
        .service(tally.clone())
        .start()
        .await
        .unwrap();
    let assigned = Instant::now() + Duration::from_secs(30);
    while running
        .assignments()
        .iter()
        .all(|a| a.partitions.is_empty())
        && Instant::now() < assigned
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = running.client("test");
    for v in votes {
        client.send(v).await.unwrap();
        tokio::time::sleep(Duration::from_millis(v.gap_ms)).await;
    }
    (tally, running)
}

/// Waits until all `votes` records are committed, reads at least `facts` facts and the dead
/// letters, and stops the service.
async fn finish(tally: Tally, running: Running, votes: usize, facts: usize) -> Outcome {
    let b = running.bootstrap_servers().to_owned();
    let n = votes as i64;
    let (committed, read, dead) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let committed = loop {
            let at = common::committed(&b, GROUP, COMMANDS);
            if at == Offset::Offset(n) || Instant::now() > deadline {
                break at;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let read = common::read_topic(&b, EVENTS, 1, facts);
        let dead = common::read_topic_within(&b, DLQ, 1, usize::MAX, Duration::from_secs(2));
        (committed, read, dead)
    })
    .await
    .unwrap();
    running.shutdown().await;
    assert_eq!(committed, Offset::Offset(n), "every record committed");
    let mut by_id = HashMap::new();
    for f in read {
        let key = String::from_utf8(f.key().unwrap().to_vec()).unwrap();
        *by_id.entry(key).or_default() += 1;
    }
    Outcome {
        tally,
        facts: by_id,
        dead,
    }
}

fn votes(n: usize, special: &[(usize, &str)]) -> Vec<Vote> {
    let special: HashMap<usize, &str> = special.iter().copied().collect();
    (0..n)
        .map(|i| Vote {
            id: format!("v{i}"),
            hold_ms: if i == 0 { 2_000 } else { 0 },
            fail: special.get(&i).copied().unwrap_or_default().to_owned(),
            gap_ms: 0,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_records_come_in_calls_of_many_each_handled_once() {
    let all = votes(60, &[]);
    let Outcome { tally, facts, dead } = run(
        Config::default(),
        &all,
        |t| t.calls().iter().map(Vec::len).sum::<usize>() == 60,
        60,
    )
    .await;
    let calls = tally.calls();
    assert!(
        calls.iter().any(|c| c.len() > 10),
        "calls of many: {calls:?}"
    );
    let flat: Vec<String> = calls.concat();
    let want: Vec<String> = all.iter().map(|v| v.id.clone()).collect();
    assert_eq!(flat, want, "each once, in offset order");
    assert_eq!(facts.len(), 60);
    assert!(facts.values().all(|n| *n == 1), "{facts:?}");
    assert!(dead.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_record_alone_is_called_again_and_its_neighbours_are_not() {
    let all = votes(30, &[(13, "transient-once"), (21, "permanent")]);
    let Outcome { tally, facts, dead } = run(
        Config::default(),
        &all,
        |t| t.calls_of("v13") == 2 && t.calls_of("v21") == 2 && t.calls_of("v29") == 1,
        29,
    )
    .await;
    for v in &all {
        let want = if v.fail.is_empty() { 1 } else { 2 };
        assert_eq!(tally.calls_of(&v.id), want, "{}: {:?}", v.id, tally.calls());
    }
    // Alone: its second call is a batch of one.
    assert!(tally.calls().contains(&vec!["v13".to_owned()]));
    assert!(tally.calls().contains(&vec!["v21".to_owned()]));
    assert_eq!(facts.len(), 29, "all but the void vote: {facts:?}");
    assert!(!facts.contains_key("v21"));
    assert_eq!(dead.len(), 1, "the void vote alone");
    assert_eq!(dead[0].key(), Some(&b"v21"[..]));
    let header = |name| {
        common::header(&dead[0], name)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("atoll_dlq_error"), "vote v21 is void");
    assert_eq!(header("atoll_dlq_attempts"), "1");
}

/// While a marked record is called again, the records after it are done, but the committed
/// offset stays at it: a crash then would hand it over again, not skip it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_offset_stays_at_a_marked_record_while_it_is_called_again() {
    let mut all = votes(30, &[(13, "slow-retry")]);
    // The first call is v0's alone (it holds 2 s): committed before the others' call.
    all[0].gap_ms = 300;
    let (tally, running) = started(Config::default(), &all).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let retrying = |t: &Tally| t.calls_of("v13") == 2 && t.calls_of("v29") == 1;
    while !retrying(&tally) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(retrying(&tally), "{:?}", tally.calls());
    let b = running.bootstrap_servers().to_owned();
    let seen = tokio::task::spawn_blocking(move || {
        // Past two commit intervals (500 ms), within the retry's 3 s.
        std::thread::sleep(Duration::from_millis(1_500));
        common::committed(&b, GROUP, COMMANDS)
    })
    .await
    .unwrap();
    assert!(retrying(&tally), "the retry still runs");
    let Offset::Offset(seen) = seen else {
        panic!("v0's call was committed: {seen:?}")
    };
    assert!(
        (1..=13).contains(&seen),
        "committed {seen}: past v0, not past the marked record"
    );
    let Outcome { facts, dead, .. } = finish(tally, running, all.len(), 30).await;
    assert_eq!(facts.len(), 30, "{facts:?}");
    assert!(dead.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_fails_as_a_whole_is_split_until_its_failing_record_is_alone() {
    let all = votes(40, &[(25, "boom")]);
    let Outcome { tally, facts, dead } = run(
        Config::default(),
        &all,
        |t| {
            t.calls()
                .iter()
                .filter(|c| c == &&["v25".to_owned()])
                .count()
                == 2
        },
        39,
    )
    .await;
    assert_eq!(facts.len(), 39, "every vote but the boom: {facts:?}");
    assert!(!facts.contains_key("v25"));
    // Alone, it takes its budget (2 attempts), then its dead letter.
    let alone = tally
        .calls()
        .iter()
        .filter(|c| c == &&["v25".to_owned()])
        .count();
    assert_eq!(alone, 2, "{:?}", tally.calls());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key(), Some(&b"v25"[..]));
    assert_eq!(common::header(&dead[0], "atoll_dlq_attempts"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_bounds_a_call_and_batch_wait_gathers_a_trickle() {
    let mut config = Config::default();
    config.listener.batch_size = 10;
    let Outcome { tally, .. } = run(
        config,
        &votes(60, &[]),
        |t| t.calls().iter().map(Vec::len).sum::<usize>() == 60,
        60,
    )
    .await;
    let calls = tally.calls();
    assert!(calls.iter().all(|c| c.len() <= 10), "{calls:?}");
    assert!(calls.iter().any(|c| c.len() == 10), "{calls:?}");

    // Records sent 200 ms apart, none waiting behind a held one: without a wait, a call each
    // (or two, on a slow machine); with one of 3 s, a call gathers them.
    let trickle: Vec<Vote> = (0..8)
        .map(|i| Vote {
            id: format!("t{i}"),
            gap_ms: 200,
            ..Default::default()
        })
        .collect();
    let Outcome { tally, .. } = run(
        Config::default(),
        &trickle,
        |t| t.calls().iter().map(Vec::len).sum::<usize>() == 8,
        8,
    )
    .await;
    assert!(tally.calls().len() >= 4, "no wait: {:?}", tally.calls());
    let mut config = Config::default();
    config.listener.batch_wait_ms = 3_000;
    let Outcome { tally, .. } = run(
        config,
        &trickle,
        |t| t.calls().iter().map(Vec::len).sum::<usize>() == 8,
        8,
    )
    .await;
    assert!(
        tally.calls().len() <= 2,
        "gathered within the wait: {:?}",
        tally.calls()
    );
}
