//! What tansu 0.6 does differently from Kafka, pinned so that a tansu upgrade that fixes it
//! is noticed (and the workaround in `atoll_testkit::TANSU_PROPERTIES` can go).
//!
//! Its time index answers the partition's start for any time (ListOffsets by timestamp); atoll
//! checks the answer against the records and searches them when they disagree
//! (`atoll_console::groups`).
//!
//! tansu serves a fetch only from the start of a record batch: fetching from an offset inside
//! a batch returns nothing for that batch. A consumer that resumes, seeks or restarts from such
//! an offset skips the rest of the batch. Kafka returns the batch and the client drops the
//! records before the offset. The tests therefore write one record per batch.
//!
//! Its answer for a partition's end counts the last batch as one record: with one record per
//! batch (the tests') it is right. The benchmark's reader of the ledger's facts, which start in
//! ordinary batches, skips what an earlier run wrote by the records' timestamps.

use std::time::{Duration, Instant};

use atoll_testkit::proxy::Direction;
use atoll_testkit::Tansu;
use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn first_offset_from(bootstrap: &str, start: i64) -> (Option<i64>, usize) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "g")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Offset(start))
        .unwrap();
    c.assign(&tpl).unwrap();
    let (mut first, mut n) = (None, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            first.get_or_insert(m.offset());
            n += 1;
        }
    }
    (first, n)
}

/// Creates topic `t` with one partition.
async fn create_topic_t(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new("t", 1, TopicReplication::Fixed(1));
    admin
        .create_topics(&[topic], &Default::default())
        .await
        .unwrap();
}

/// A tansu whose topic `t` holds records `0` to `99` as one batch (a producer that lingers
/// 100 ms), and its address.
async fn one_batch_of_100() -> (Tansu, String) {
    let broker = Tansu::start();
    let bootstrap = broker.bootstrap();
    create_topic_t(&bootstrap).await;
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "100")
        .create()
        .unwrap();
    let sent: Vec<_> = (0..100)
        .map(|i| {
            p.send_result(FutureRecord::<str, str>::to("t").payload(&i.to_string()))
                .unwrap()
        })
        .collect();
    for s in sent {
        s.await.unwrap().unwrap();
    }
    p.flush(Duration::from_secs(5)).unwrap();
    (broker, bootstrap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_cannot_fetch_from_inside_a_record_batch() {
    let (_broker, b) = one_batch_of_100().await;
    let b2 = b.clone();
    let from_start = tokio::task::spawn_blocking(move || first_offset_from(&b2, 0))
        .await
        .unwrap();
    let from_middle = tokio::task::spawn_blocking(move || first_offset_from(&b, 50))
        .await
        .unwrap();
    assert_eq!(from_start, (Some(0), 100));
    assert_eq!(
        from_middle,
        (None, 0),
        "Kafka would deliver offsets 50 to 99 here"
    );
}

/// tansu answers the end of a partition (ListOffsets, latest) as if its last record batch held
/// one record: its base offset plus one, not the offset after its last record. A reader that
/// starts "at the end" reads the rest of the last batch again, and lag computed from it is
/// short by that much. One batch of 100 records: tansu answers 1, Kafka 100. (Seen first in
/// the benchmark: 300,000 records written in batches of a few hundred, and the six
/// partitions' ends added up to 297,394.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_answers_a_partitions_end_as_if_its_last_batch_held_one_record() {
    let (_broker, b) = one_batch_of_100().await;
    let b2 = b.clone();
    let (_, read) = tokio::task::spawn_blocking(move || first_offset_from(&b2, 0))
        .await
        .unwrap();
    assert_eq!(read, 100, "the batch is whole");
    let end = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .create()
            .unwrap();
        c.fetch_watermarks("t", 0, Duration::from_secs(5)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(end, (0, 1), "Kafka answers (0, 100)");
}

/// tansu keeps a member whose heartbeats stopped (a paused process) in its group: its
/// partitions are not given to the other members after `session.timeout.ms` (6 s here), as
/// Kafka does, but wait until it comes back. The fault tests pause processes with that in
/// mind. The members it keeps stay for the broker's life, so the test takes a broker of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_keeps_a_silent_member_in_its_group() {
    use atoll_testkit::process::{wait_until, Proc};
    const PROBE: &str = env!("CARGO_BIN_EXE_probe");
    let broker = Tansu::builder().own(true).start();
    broker.driver().await.shutdown().await;
    let env = broker.env();
    let silent = Proc::start(PROBE, &[], &env);
    let other = Proc::start(PROBE, &[], &env);
    let split = wait_until(Duration::from_secs(60), || {
        other.assigned("work").len() == 3 && silent.assigned("work").len() == 3
    });
    assert!(split, "{}\n---\n{}", silent.log(), other.log());
    silent.pause();
    let moved = wait_until(Duration::from_secs(20), || {
        other.assigned("work").len() == 6
    });
    silent.resume();
    assert!(
        !moved,
        "tansu now moves a silent member's partitions: the pause test can expect a takeover"
    );
}

/// A topic `t` on `broker` and an idempotent producer that gives a message up after 3 s
/// (`message.timeout.ms`) unless `props` say otherwise.
async fn idempotent_producer(broker: &Tansu, props: &[(&str, &str)]) -> FutureProducer {
    let b = broker.bootstrap();
    create_topic_t(&b).await;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &b)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "3000")
        .set("request.timeout.ms", "1000");
    for (k, v) in props {
        config.set(*k, *v);
    }
    config.create().unwrap()
}

/// Sends record `i` to `t`, waiting at most 20 s for the outcome.
async fn send(p: &FutureProducer, i: usize) -> Result<i64, String> {
    let payload = i.to_string();
    let sent = p
        .send_result(FutureRecord::<str, str>::to("t").payload(&payload))
        .map_err(|(e, _)| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(20), sent).await {
        Err(_) => Err("no outcome within 20 s".into()),
        Ok(Err(_)) => Err("the producer dropped the record".into()),
        Ok(Ok(Err((e, _)))) => Err(e.to_string()),
        Ok(Ok(Ok(d))) => Ok(d.offset),
    }
}

/// When an idempotent producer's messages time out (here behind a 5 s network blackout with
/// `message.timeout.ms` 3 s), librdkafka bumps the producer's epoch, as Kafka's protocol asks.
/// tansu 0.6 on SQLite storage then panics in its idempotence check (`lite.rs`: "more or less
/// than one row"), which ends its storage task: from then on it answers every produce request,
/// from every client, with `UNKNOWN_SERVER_ERROR`. (On memory storage the producer is fenced
/// for good instead.) The harness therefore sets `message.timeout.ms=0` (never give a message
/// up) in `TANSU_PROPERTIES`, which the next test shows to hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_sqlite_storage_stops_after_an_idempotent_producer_bumps_its_epoch() {
    let broker = Tansu::builder().proxy(true).sqlite(true).start();
    let p = idempotent_producer(&broker, &[]).await;
    assert_eq!(send(&p, 0).await, Ok(0));
    let proxy = broker.proxy().unwrap();
    proxy.blackhole(Direction::Both);
    let timed_out = send(&p, 1).await;
    assert!(
        timed_out.as_ref().is_err_and(|e| e.contains("timed out")),
        "{timed_out:?}"
    );
    proxy.resume();
    let after = send(&p, 2).await;
    let other: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let unrelated = send(&other, 3).await;
    let log = broker.log_tail(100);
    assert!(
        after.is_err() && unrelated.is_err() && log.contains("more or less than one row"),
        "tansu now survives an idempotent producer's epoch bump (the harness can drop \
         message.timeout.ms=0): {after:?} {unrelated:?}\n{log}"
    );
}

/// The harness's workaround for the test above: with `message.timeout.ms=0` (as in
/// `TANSU_PROPERTIES`) a record sent during a blackout waits and is written once after it,
/// and the broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_held_by_a_blackout_are_written_once_without_a_message_timeout() {
    let broker = Tansu::builder().proxy(true).sqlite(true).start();
    let p = idempotent_producer(&broker, atoll_testkit::TANSU_PROPERTIES).await;
    assert_eq!(send(&p, 0).await, Ok(0));
    let proxy = broker.proxy().unwrap();
    proxy.blackhole(Direction::Both);
    let held: Vec<_> = (1..4)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move { send(&p, i).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The blackout dropped bytes mid-stream: a clean start on new connections.
    proxy.resume();
    proxy.close_all();
    let mut offsets = Vec::new();
    for h in held {
        offsets.push(h.await.unwrap().expect("written after the blackout"));
    }
    offsets.sort();
    assert_eq!(offsets, [1, 2, 3]);
    assert_eq!(send(&p, 4).await, Ok(4));
    let read = atoll_testkit::read_topic(&broker.bootstrap(), "t", 6, Duration::from_secs(5));
    assert_eq!(read.len(), 5, "each record once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_answers_a_time_with_the_partitions_start() {
    let broker = Tansu::start();
    let b = broker.bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .unwrap();
    let topic = NewTopic::new("times", 1, TopicReplication::Fixed(1));
    admin
        .create_topics(&[topic], &Default::default())
        .await
        .unwrap();
    let answer = tokio::task::spawn_blocking(move || atoll_testkit::time_index_answer(&b))
        .await
        .unwrap();
    assert_eq!(answer, Offset::Offset(0), "Kafka answers offset 1");
}

/// tansu has no KIP-848 consumer groups (`ConsumerGroupHeartbeat`): a consumer with
/// `group.protocol = consumer` never gets a partition there, and is told nothing. Listeners set to the `consumer`
/// group protocol need a broker that has it (Apache Kafka 4.0 or later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_has_no_kip_848_consumer_groups() {
    let broker = Tansu::start();
    let b = broker.bootstrap();
    create_topic_t(&b).await;
    let answer =
        tokio::task::spawn_blocking(move || atoll_testkit::consumer_protocol_answer(&b, "t"))
            .await
            .unwrap();
    // Nor does it say why: the consumer hears no error, and waits.
    assert_eq!(answer, (0, Vec::new()), "assigned partitions, errors");
}
