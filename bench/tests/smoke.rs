//! Every scenario of the benchmark runs once on tiny inputs, with every implementation the
//! suite's machine has (the raw loop, atoll, transactional, exactly once, batch listener): a
//! scenario cannot break unnoticed between benchmark runs, as scenario 4 once did (its worker
//! refused a setting the orchestrator gave every worker). The figures are not looked at: speed
//! is the benchmark's, not the suite's.

use std::process::Command;

#[test]
fn every_scenario_runs_once_on_a_tiny_input() {
    let dir = std::env::temp_dir().join(format!("atoll-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_atoll-bench"))
        .args(["--rounds", "1", "--records", "2000", "--keys", "50"])
        .args(["--io-ms", "1", "--io-records", "100", "--latency-secs", "1"])
        .args([
            "--tx-records",
            "300",
            "--tx-rate",
            "500",
            "--eos-records",
            "1000",
        ])
        .args(["--batched-records", "2000", "--scale-records", "2000"])
        .args(["--processes", "1,2", "--backlogs", "2000"])
        .args(["--batch-listener-records", "2000"])
        .args([
            "--impl",
            "raw,atoll,atoll-tx,atoll-tx-set,atoll-eos,atoll-batch",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the benchmark starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the benchmark failed:\n{stderr}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).expect("results written")).unwrap();
    for scenario in 1..=9 {
        let prefix = format!("{scenario}:");
        assert!(
            rows.iter().any(|r| r["scenario"]
                .as_str()
                .is_some_and(|s| s.starts_with(&prefix))),
            "no row of scenario {scenario} in {rows:#?}\n{stderr}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
