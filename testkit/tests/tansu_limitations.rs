//! What tansu 0.6 does differently from Kafka, pinned so that a tansu upgrade that fixes it
//! is noticed (and the workaround in `atoll_testkit::TANSU_PROPERTIES` can go).
//!
//! tansu serves a fetch only from the start of a record batch: fetching from an offset inside
//! a batch returns nothing for that batch. A consumer that resumes, seeks or restarts from such
//! an offset skips the rest of the batch. Kafka returns the batch and the client drops the
//! records before the offset. The tests therefore write one record per batch.

use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_cannot_fetch_from_inside_a_record_batch() {
    let broker = Tansu::start();
    let b = broker.bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .unwrap();
    let topic = NewTopic::new("t", 1, TopicReplication::Fixed(1));
    admin
        .create_topics(&[topic], &Default::default())
        .await
        .unwrap();
    // One batch of 100 records.
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
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

/// tansu keeps a member whose heartbeats stopped (a paused process) in its group: its
/// partitions are not given to the other members after `session.timeout.ms` (6 s here), as
/// Kafka does, but wait until it comes back. The fault tests pause processes with that in
/// mind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_keeps_a_silent_member_in_its_group() {
    use atoll_testkit::process::{wait_until, Proc};
    const PROBE: &str = env!("CARGO_BIN_EXE_probe");
    let broker = Tansu::start();
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
