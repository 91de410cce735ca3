//! Replicas of one probe service on a broker and a PostgreSQL of their own, for the tests that
//! kill them (SIGKILL) while records flow: start, kill, restart and read their logs.

use crate::process::Proc;
use crate::{Postgres, Tansu};

/// Processes of the `probe` binary running one service (`PROBE_SERVICE`), each with a name of
/// its own (`ATOLL_SERVICE__PROCESS_NAME`), on `broker` and one PostgreSQL database.
pub struct Replicas {
    /// The broker they run on.
    pub broker: Tansu,
    /// The database's URL.
    pub url: String,
    bin: String,
    /// Settings of every process: the service, the store, and the test's own.
    env: Vec<(String, String)>,
    names: Vec<String>,
    /// The processes, by number.
    pub procs: Vec<Proc>,
    _pg: Postgres,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Replicas {
    /// Creates `topics` on `broker`, then starts one process of `bin` per name in `names`,
    /// running `service`, with `settings` beyond the broker's and the store's (database
    /// `database` on a PostgreSQL of their own).
    pub async fn start(
        broker: Tansu,
        bin: &str,
        service: &str,
        names: &[&str],
        topics: Vec<atoll::contract::TopicSpec>,
        settings: &[(&str, &str)],
    ) -> Self {
        let pg = Postgres::start();
        let url = pg.database(service);
        let driver = atoll::App::new(broker.config())
            .topics(topics)
            .start()
            .await
            .expect("the service's topics");
        driver.shutdown().await;
        let mut env = vec![
            ("PROBE_SERVICE".to_owned(), service.to_owned()),
            ("ATOLL_STORE__URL".to_owned(), url.clone()),
        ];
        env.extend(
            settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut replicas = Self {
            broker,
            url,
            bin: bin.to_owned(),
            env,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            procs: Vec::new(),
            _pg: pg,
        };
        replicas.procs = (0..names.len()).map(|i| replicas.spawn(i)).collect();
        replicas
    }

    /// Starts process `i` again (or for the first time).
    pub fn spawn(&self, i: usize) -> Proc {
        let mut env = self.broker.env();
        env.extend(self.env.iter().cloned());
        env.push((
            "ATOLL_SERVICE__PROCESS_NAME".to_owned(),
            self.names[i].clone(),
        ));
        Proc::start(&self.bin, &[], &env)
    }

    /// Kills process `i` (SIGKILL) and starts it again.
    pub fn kill_and_restart(&mut self, i: usize) {
        self.procs[i].kill();
        self.procs[i] = self.spawn(i);
    }

    /// Every process's log, one after the other.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Stops every process (SIGTERM).
    pub fn stop(mut self) {
        for p in &mut self.procs {
            p.terminate();
        }
    }
}
