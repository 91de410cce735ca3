//! Logs by default: `App::run_until` installs atoll's subscriber only when the application did
//! not install one. (That a service installing none logs its start, its partitions and its stop
//! is tested on the `hello` example's process.)

use std::sync::{Arc, Mutex};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "quiet")]
struct Quiet;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "hush", version = 1, service = Quiet)]
struct Hush {
    #[event(key)]
    id: String,
}

#[handlers]
impl Quiet {
    #[listener(name = "hush")]
    async fn hush(&self, _cmd: Hush) -> HandlerResult {
        Ok(())
    }
}

/// What the application's own subscriber received.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_subscriber_is_kept_and_gets_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("atoll=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    // Had `run_until` installed its own, it would have failed ("cannot install the tracing
    // subscriber").
    // Stops once it has started, however long that takes.
    let logged = captured.clone();
    let stop = async move {
        while !String::from_utf8_lossy(&logged.0.lock().unwrap()).contains("atoll started") {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    App::new(Config::default())
        .service(Quiet)
        .run_until(stop)
        .await
        .expect("runs with the application's subscriber");
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("atoll started"), "{logs}");
    assert!(logs.contains("atoll stopped"), "{logs}");
}
