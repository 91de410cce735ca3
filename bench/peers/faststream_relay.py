"""FastStream's side of the benchmark: the relay written the way FastStream's documentation
writes a Kafka consumer that publishes, run as one process by the orchestrator (bench/src/python.rs).

It decodes each ~200-byte JSON transfer into a pydantic model, publishes one output record with
the same CloudEvents headers atoll writes (awaiting the broker's acknowledgement, FastStream's
default), and acknowledges (commits) the input record after its handler returned
(AckPolicy.ACK): at least once, like atoll. It prints `ready` once started, then one JSON report
line with the same fields as the Rust workers' (bench/src/meter.rs), measured the same way: from
the first record handled to the last, CPU time from getrusage, peak RSS from VmHWM.
"""

import argparse
import asyncio
import datetime
import json
import logging
import resource
import sys
import time
import uuid

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import BaseModel

CE_TYPE = "bench.perf.relay.transfer_relayed.v1"
SOURCE = "bench.perf.relay"


class Transfer(BaseModel):
    id: int
    ts_us: int
    account: str
    amount_cents: int
    currency: str
    memo: str


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Meter:
    def __init__(self, records: int) -> None:
        self.records = records
        self.seen = 0
        self.start = None
        self.report = None
        self.done = asyncio.Event()

    def record(self) -> None:
        self.seen += 1
        if self.seen == 1:
            self.start = (time.monotonic(), cpu_seconds())
        if self.seen == self.records:
            t0, cpu0 = self.start
            secs = max(time.monotonic() - t0, 1e-9)
            self.report = {
                "records": self.records,
                "secs": secs,
                "rate": self.records / secs,
                "cpu_us": (cpu_seconds() - cpu0) * 1e6 / self.records,
                "p50_us": None,
                "p99_us": None,
                "rss_mib": peak_rss_mib(),
            }
            self.done.set()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--records", type=int, required=True)
    args = parser.parse_args()

    meter = Meter(args.records)
    # FastStream's producer defaults (acks=1, no linger: it awaits each publish, so lingering
    # would only add latency). aiokafka's idempotent producer fails its InitProducerId on tansu
    # 0.6 (UnknownError). Its log goes to stderr: stdout carries `ready` and the report.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logger = logging.getLogger("faststream-bench")
    broker = KafkaBroker(args.bootstrap, logger=logger)

    @broker.subscriber(
        args.input,
        group_id=args.group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
    )
    async def relay(t: Transfer, msg: KafkaMessage) -> None:
        cause = msg.headers.get("ce_id", "")
        ce_id = str(uuid.uuid4())
        await broker.publish(
            {"id": t.id, "ts_us": t.ts_us, "account": t.account, "amount_cents": t.amount_cents},
            args.output,
            key=t.account.encode(),
            headers={
                "ce_specversion": "1.0",
                "ce_id": ce_id,
                "ce_type": CE_TYPE,
                "ce_source": SOURCE,
                "ce_time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "content-type": "application/json",
                "ce_correlationid": cause,
                "ce_causationid": cause,
            },
        )
        meter.record()

    await broker.start()
    print("ready", flush=True)
    await meter.done.wait()
    await broker.stop()
    print(json.dumps(meter.report), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
