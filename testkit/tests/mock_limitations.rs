//! What librdkafka's mock cluster (the embedded broker of the unit-speed tests) does
//! differently from Kafka, pinned so that a librdkafka upgrade that changes it is noticed.
//!
//! - It lists no consumer groups (ListGroups and DescribeGroups are not implemented): tests of
//!   what needs a group's members (the console's group reset, `atoll view rebuild`) run on
//!   tansu.
//! - Its time index answers the partition's end for any time (ListOffsets by timestamp); atoll
//!   checks the answer against the records and searches them when they disagree
//!   (`atoll_console::groups`).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset};

#[test]
fn the_mock_cluster_lists_no_groups() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "g")
        .create()
        .unwrap();
    let listed = c.fetch_group_list(None, Duration::from_secs(10));
    let code = listed.err().and_then(|e| e.rdkafka_error_code());
    assert_eq!(
        code,
        Some(RDKafkaErrorCode::UnsupportedFeature),
        "Kafka lists them"
    );
}

#[test]
fn the_mock_cluster_answers_a_time_with_the_partitions_end() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("times", 1, 1).unwrap();
    let answer = atoll_testkit::time_index_answer(&cluster.bootstrap_servers());
    assert_eq!(answer, Offset::End, "Kafka answers offset 1");
}
