//! The baseline: the loop a careful engineer writes by hand on rdkafka for the same contract.
//!
//! One task: receive, decode the JSON, produce one output record with the same CloudEvents
//! headers atoll writes, and move on without waiting; a record's offset becomes committable
//! once its output is acknowledged (a per-partition watermark over the acknowledgements), and
//! committed every 500 ms or 1,000 records, like atoll's defaults. At least once, like atoll.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::meter;
use crate::payload::{Relayed, Transfer, INPUT, OUTPUT_RAW};
use crate::Work;

const CE_TYPE: &str = "bench.perf.relay.transfer_relayed.v1";
const SOURCE: &str = "bench.perf.relay";

/// Offsets received from one partition, in order, each with whether its output was
/// acknowledged.
#[derive(Default)]
struct Watermark {
    offsets: VecDeque<(i64, bool)>,
    committable: Option<i64>,
}

impl Watermark {
    fn received(&mut self, offset: i64) {
        self.offsets.push_back((offset, false));
    }

    fn acked(&mut self, offset: i64) {
        if let Ok(i) = self.offsets.binary_search_by_key(&offset, |(o, _)| *o) {
            self.offsets[i].1 = true;
        }
        while let Some((o, true)) = self.offsets.front().copied() {
            self.committable = Some(o + 1);
            self.offsets.pop_front();
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Runs the loop until the meter has its records.
pub(crate) async fn run(work: &Work, ready: impl FnOnce()) -> anyhow::Result<meter::Report> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &work.bootstrap)
        .set("group.id", &work.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", &work.fetch_wait_ms)
        .create()?;
    // atoll's producer settings: idempotent (acks=all), lingering 5 ms.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &work.bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()?;
    consumer.subscribe(&[INPUT])?;
    let mut ready = Some(ready);
    let mut marks: HashMap<i32, Watermark> = HashMap::new();
    let mut acks = FuturesUnordered::new();
    let mut finished = 0u64;
    let mut last_commit = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let report = meter::finished();
    tokio::pin!(report);
    loop {
        tokio::select! {
            report = &mut report => {
                drop(consumer);
                return Ok(report);
            }
            msg = consumer.recv() => {
                let msg = msg?;
                let (partition, offset) = (msg.partition(), msg.offset());
                let t: Transfer = serde_json::from_slice(msg.payload().unwrap_or_default())?;
                let cause = msg
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "ce_id"))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let out = serde_json::to_vec(&Relayed::from(&t))?;
                let id = uuid::Uuid::now_v7().to_string();
                let now = OffsetDateTime::now_utc().format(&Rfc3339)?;
                let mut headers = OwnedHeaders::new_with_capacity(8)
                    .insert(header("ce_specversion", "1.0"))
                    .insert(header("ce_id", &id))
                    .insert(header("ce_type", CE_TYPE))
                    .insert(header("ce_source", SOURCE))
                    .insert(header("ce_time", &now))
                    .insert(header("content-type", "application/json"))
                    .insert(header("ce_correlationid", &cause))
                    .insert(header("ce_causationid", &cause));
                loop {
                    let record = FutureRecord::to(OUTPUT_RAW)
                        .key(t.account.as_bytes())
                        .payload(&out)
                        .headers(headers);
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            acks.push(async move { (partition, offset, delivery.await) });
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            headers = r.headers.expect("the record had headers");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err((e, _)) => return Err(e.into()),
                    }
                }
                marks.entry(partition).or_default().received(offset);
                meter::record(t.ts_us, None);
            }
            Some((partition, offset, result)) = acks.next() => {
                match result {
                    Ok(Ok(_)) => {
                        marks.entry(partition).or_default().acked(offset);
                        finished += 1;
                    }
                    // Not acknowledged: the offset stays uncommitted, the record comes again.
                    _ => anyhow::bail!("output of {partition}/{offset} not acknowledged"),
                }
            }
            _ = tick.tick() => {
                if let Some(go) = ready.take_if(|_| {
                    consumer.assignment().map_or(0, |a| a.count()) >= work.ready_partitions as usize
                }) {
                    go();
                }
            }
        }
        if finished >= 1_000 || last_commit.elapsed() >= Duration::from_millis(500) {
            let mut tpl = TopicPartitionList::new();
            for (p, w) in &marks {
                if let Some(o) = w.committable {
                    tpl.add_partition_offset(INPUT, *p, Offset::Offset(o))?;
                }
            }
            if tpl.count() > 0 {
                consumer.commit(&tpl, CommitMode::Async)?;
            }
            finished = 0;
            last_commit = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Watermark;

    #[test]
    fn the_watermark_passes_only_acknowledged_prefixes() {
        let mut w = Watermark::default();
        for o in [10, 11, 13, 14] {
            w.received(o);
        }
        w.acked(11);
        assert_eq!(w.committable, None, "10 is not acknowledged yet");
        w.acked(10);
        assert_eq!(w.committable, Some(12));
        w.acked(14);
        assert_eq!(
            w.committable,
            Some(12),
            "13 (after a gap) is not acknowledged yet"
        );
        w.acked(13);
        assert_eq!(w.committable, Some(15));
    }
}
