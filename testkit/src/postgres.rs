//! A throwaway PostgreSQL server for tests: a fresh cluster (`initdb`) in a temporary directory,
//! started with `pg_ctl` on a free loopback port, trusted local connections only, stopped and
//! removed when dropped.
//!
//! PostgreSQL refuses to run as root; under root the cluster belongs to the `postgres` user
//! (which Debian's `postgresql` package creates) and the commands run as it. When PostgreSQL is
//! not installed the test **fails** saying how to install it: a test that needs a database
//! never passes without one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::pki::Pair;

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    owner: Option<&'static str>,
    /// Whether the server offers TLS (`ssl = on`), with a certificate in its data directory.
    tls: bool,
    /// Whether it syncs its writes (`fsync`; `synchronous_commit` is on either way).
    durable: bool,
}

/// The directory holding `initdb` and `pg_ctl`: `$PG_BIN`, the `PATH`, or Debian's
/// `/usr/lib/postgresql/<version>/bin`.
pub fn postgres_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|d| has_tools(d)));
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|d| has_tools(d))
            .collect();
        versions.sort();
        versions.pop()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Postgres {
    /// The user the server runs as: `atoll`, the superuser of the fresh cluster.
    pub const USER: &'static str = "atoll";

    /// Creates and starts a cluster.
    ///
    /// # Panics
    /// When PostgreSQL is not installed or does not start: the test must not pass without it.
    pub fn start() -> Self {
        Self::start_with(None, false)
    }

    /// As [`start`](Self::start), with `fsync` on (tests run without it: they never survive the
    /// machine's crash, and it would slow them): as production runs, for measuring the store's
    /// write path (the benchmark's transactional scenario).
    pub fn durable() -> Self {
        Self::start_with(None, true)
    }

    /// As [`start`](Self::start), offering TLS (`ssl = on`) with `server`'s certificate:
    /// clients asking for `sslmode=verify-full` check it against the authority that signed it.
    pub fn start_tls(server: &Pair) -> Self {
        Self::start_with(Some(server), false)
    }

    fn start_with(tls: Option<&Pair>, durable: bool) -> Self {
        let bin = postgres_bin().unwrap_or_else(|| {
            panic!("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql); install Debian's `postgresql` (`.ci/run` does) or set PG_BIN: this test needs a database")
        });
        let owner = is_root().then_some("postgres");
        let dir =
            std::env::temp_dir().join(format!("atoll-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        if let Some(user) = owner {
            run(Command::new("chown").args([user, path(&dir)]), "chown");
        }
        let mut pg = Self {
            dir,
            port: 0,
            bin,
            owner,
            tls: tls.is_some(),
            durable,
        };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                Self::USER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        if let Some(server) = tls {
            // The server reads its key only when the server's user alone may read it.
            for (from, to) in [(&server.cert, "server.crt"), (&server.key, "server.key")] {
                let to = data.join(to);
                std::fs::copy(from, &to).expect("the certificate into the data directory");
                run(Command::new("chmod").args(["600", path(&to)]), "chmod");
                if let Some(user) = owner {
                    run(Command::new("chown").args([user, path(&to)]), "chown");
                }
            }
        }
        for _ in 0..3 {
            pg.port = free_port();
            if pg.try_start() {
                return pg;
            }
            eprintln!(
                "PostgreSQL did not start on port {}; retrying:\n{}",
                pg.port,
                std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default()
            );
        }
        panic!("PostgreSQL did not start");
    }

    fn try_start(&self) -> bool {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync={} -c max_connections=200",
            self.port,
            path(&self.dir),
            if self.durable { "on" } else { "off" }
        );
        if self.tls {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let started = self.try_run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        started.status.success() && self.accepts()
    }

    /// Stops the server (fast shutdown: connections are closed), keeping its data.
    pub fn stop(&self) {
        let data = self.dir.join("data");
        self.run("pg_ctl", &["-D", path(&data), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port and data.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&self) {
        assert!(
            self.try_start(),
            "PostgreSQL did not start again on port {}",
            self.port
        );
    }

    fn accepts(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// What the server logged so far (its `server.log`: errors, and what a test asked it to
    /// log, such as `auto_explain`'s plans).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The port the server listens on (`127.0.0.1`; `localhost` names it for TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Adds a superuser `name` who must log in with `password` (SCRAM) over TCP; the others
    /// stay trusted.
    pub fn add_login(&self, name: &str, password: &str) {
        let out = self.psql(
            "postgres",
            &format!("CREATE ROLE \"{name}\" LOGIN SUPERUSER PASSWORD '{password}'"),
        );
        assert!(
            out.status.success(),
            "CREATE ROLE {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hba = self.dir.join("data").join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        let login = format!(
            "host all \"{name}\" 127.0.0.1/32 scram-sha-256\nhost all \"{name}\" ::1/128 scram-sha-256\n"
        );
        std::fs::write(&hba, login + &rules).expect("pg_hba.conf written");
        let data = self.dir.join("data");
        self.run("pg_ctl", &["-D", path(&data), "reload"]);
    }

    /// `postgres://atoll@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/postgres", Self::USER, self.port)
    }

    /// A new empty database on this server, and its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        assert!(
            out.status.success(),
            "CREATE DATABASE {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://{}@127.0.0.1:{}/{name}", Self::USER, self.port)
    }

    /// Runs `sql` with `psql` on database `db` of this server (unaligned, tuples only).
    fn psql(&self, db: &str, sql: &str) -> Output {
        let port = self.port.to_string();
        self.try_run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                Self::USER,
                "-d",
                db,
                "-tAc",
                sql,
            ],
        )
    }

    /// Environment variables that point an atoll process's store at `url`.
    pub fn env(url: &str) -> Vec<(String, String)> {
        vec![("ATOLL_STORE__URL".to_owned(), url.to_owned())]
    }

    fn command(&self, tool: &str) -> Command {
        let exe = if tool == "psql" && !self.bin.join("psql").is_file() {
            PathBuf::from("psql")
        } else {
            self.bin.join(tool)
        };
        match self.owner {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> Output {
        self.command(tool)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.try_run(tool, args);
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.try_run(
            "pg_ctl",
            &["-D", path(&data), "-m", "immediate", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_sql_and_cleans_up() {
        let pg = Postgres::start();
        let dir = pg.dir.clone();
        let url = pg.database("probe");
        assert!(url.ends_with("/probe"), "{url}");
        let out = pg.psql("probe", "SELECT 40 + 2");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
        drop(pg);
        assert!(!dir.exists(), "{} is removed", dir.display());
    }
}
