//! Service processes under test: start, watch their output, kill, restart.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One `handled <listener> <id> <partition> <offset>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Listener name.
    pub listener: String,
    /// Work id.
    pub id: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

#[derive(Debug, Default)]
struct Output {
    handled: Vec<Handled>,
    /// The latest assignment per listener, from the runtime's log.
    assigned: Vec<(String, Vec<i32>)>,
    log: Vec<String>,
}

/// A running service process whose output is collected.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    out: Arc<Mutex<Output>>,
}

impl Proc {
    /// Starts `bin` with `env` (plus `RUST_LOG=atoll=info` unless `env` sets `RUST_LOG`).
    pub fn start(bin: impl Into<PathBuf>, args: &[&str], env: &[(String, String)]) -> Self {
        let log = env
            .iter()
            .find(|(k, _)| k == "RUST_LOG")
            .map_or("atoll=info", |(_, v)| v.as_str());
        let mut child = Command::new(bin.into())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start process");
        let out = Arc::new(Mutex::new(Output::default()));
        let stdout = child.stdout.take().unwrap();
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let parts: Vec<&str> = line.split_whitespace().collect();
                if let ["handled", listener, id, partition, offset] = parts.as_slice() {
                    o.lock().unwrap().handled.push(Handled {
                        listener: (*listener).to_owned(),
                        id: (*id).to_owned(),
                        partition: partition.parse().unwrap_or(-1),
                        offset: offset.parse().unwrap_or(-1),
                    });
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut o = o.lock().unwrap();
                if let Some((listener, change)) = parse_change(&line) {
                    let at = match o.assigned.iter().position(|(l, _)| *l == listener) {
                        Some(at) => at,
                        None => {
                            o.assigned.push((listener, Vec::new()));
                            o.assigned.len() - 1
                        }
                    };
                    change.apply(&mut o.assigned[at].1);
                }
                o.log.push(line);
            }
        });
        Self { child, out }
    }

    /// Everything handled so far.
    pub fn handled(&self) -> Vec<Handled> {
        self.out.lock().unwrap().handled.clone()
    }

    /// Ids handled by `listener`.
    pub fn ids(&self, listener: &str) -> BTreeSet<String> {
        self.handled()
            .into_iter()
            .filter(|h| h.listener == listener)
            .map(|h| h.id)
            .collect()
    }

    /// The partitions currently assigned to `listener`, per the log.
    pub fn assigned(&self, listener: &str) -> Vec<i32> {
        let o = self.out.lock().unwrap();
        o.assigned
            .iter()
            .find(|(l, _)| l == listener)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    /// The log so far (standard error), for failure messages.
    pub fn log(&self) -> String {
        self.out.lock().unwrap().log.join("\n")
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit. Also sends SIGCONT, so that a process stopped by
    /// [`Proc::pause`] handles the SIGTERM instead of waiting forever.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }

    /// SIGSTOP: freezes the process, like a long GC pause or a stalled VM. It keeps its
    /// connections and its group membership but does nothing (no polls, no heartbeats, no
    /// output) until [`Proc::resume`]. [`Proc::kill`] and dropping still work while paused.
    ///
    /// # Panics
    /// When `kill -STOP` cannot be run or fails (e.g. the process was already reaped).
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// SIGCONT: lets a process frozen by [`Proc::pause`] run again.
    ///
    /// # Panics
    /// When `kill -CONT` cannot be run or fails (e.g. the process was already reaped).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's peak resident set so far, in MiB (see [`peak_rss_mib`]).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        peak_rss_mib(&format!("/proc/{}/status", self.child.id()))
    }
}

/// The peak resident set of a process image, in MiB, from `VmHWM` in its `status` file under
/// `/proc` (not getrusage's `ru_maxrss`, which Linux carries over from the parent across
/// `exec`); `None` when it cannot be read.
pub fn peak_rss_mib(status_file: &str) -> Option<f64> {
    let status = std::fs::read_to_string(status_file).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends signal `name` (`STOP`, `CONT`, ...) to `pid` with the `kill` command (no `libc`
/// dependency).
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run `kill -{name} {pid}`: {e}"));
    assert!(status.success(), "`kill -{name} {pid}` failed: {status}");
}

/// A change of a listener's assignment, as its log line says: the partitions it was given or
/// those taken from it. The classic protocol takes all and gives all at a rebalance; KIP-848's
/// (and cooperative assignors) give and take only the ones that move.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

impl Change {
    fn apply(self, partitions: &mut Vec<i32>) {
        match self {
            Self::Assigned(given) => partitions.extend(given),
            Self::Revoked(taken) => partitions.retain(|p| !taken.contains(p)),
        }
        partitions.sort_unstable();
        partitions.dedup();
    }
}

/// A change of a listener's assignment of its own topic (its retry consumer's, of the
/// service's retry topic, is left out).
fn parse_change(line: &str) -> Option<(String, Change)> {
    if line.contains(".private.retry") {
        return None;
    }
    let (change, list): (fn(Vec<i32>) -> Change, _) = if line.contains("partitions assigned") {
        (Change::Assigned, "assigned=[")
    } else if line.contains("partitions revoked") {
        (Change::Revoked, "revoked=[")
    } else {
        return None;
    };
    let listener = field(line, "listener=\"")?.split('"').next()?.to_owned();
    let parts = field(line, list)?
        .split(']')
        .next()?
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    Some((listener, change(parts)))
}

fn field<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.find(prefix).map(|i| &line[i + prefix.len()..])
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assignment_logs() {
        let line = r#"2026-11-22T16:00:00Z  INFO atoll::consume::consumer: partitions assigned listener="work" assigned=[0, 1, 5]"#;
        assert_eq!(
            parse_change(line),
            Some(("work".into(), Change::Assigned(vec![0, 1, 5])))
        );
        let line =
            r#"INFO atoll::consume::consumer: partitions revoked listener="audit" revoked=[2]"#;
        assert_eq!(
            parse_change(line),
            Some(("audit".into(), Change::Revoked(vec![2])))
        );
        assert_eq!(parse_change("something else"), None);
        // Given and taken one at a time (KIP-848), or all at once (classic).
        let mut held = vec![0, 1, 5];
        Change::Revoked(vec![1, 5]).apply(&mut held);
        Change::Assigned(vec![3]).apply(&mut held);
        assert_eq!(held, [0, 3]);
        Change::Revoked(vec![0, 3]).apply(&mut held);
        assert!(held.is_empty());
    }
}
