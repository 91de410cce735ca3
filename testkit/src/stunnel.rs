//! TLS in front of a plaintext broker or registry: Debian's `stunnel4` on a free loopback
//! port, terminating TLS with a [`Pair`] and, for mutual TLS, refusing
//! clients without a certificate signed by a given authority. Stopped when dropped.
//!
//! When stunnel is not installed the test **fails** saying how to install it
//! (`scripts/install-security-tools`): a TLS test never passes without TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::pki::Pair;

/// Where the stunnel binary is: `$STUNNEL_BIN`, or `stunnel4` / `stunnel` on the `PATH`.
pub fn stunnel_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STUNNEL_BIN") {
        return Some(PathBuf::from(p));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|d| [d.join("stunnel4"), d.join("stunnel")])
        .find(|p| p.is_file())
}

/// A running stunnel.
#[derive(Debug)]
pub struct Stunnel {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Stunnel {
    /// Terminates TLS on a free loopback port with `server`, forwarding to `127.0.0.1:target`.
    /// With `clients_signed_by`, a client must show a certificate that authority signed.
    ///
    /// # Panics
    /// When stunnel is not installed or does not listen within 10 s.
    pub fn start(target: u16, server: &Pair, clients_signed_by: Option<&Path>, dir: &Path) -> Self {
        let bin = stunnel_binary().unwrap_or_else(|| {
            panic!("stunnel is not installed; run `scripts/install-security-tools` (Debian's stunnel4) or set STUNNEL_BIN: this test needs TLS in front of the broker")
        });
        std::fs::create_dir_all(dir).expect("a directory for stunnel");
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("stunnel-{port}.conf"));
            let log = dir.join(format!("stunnel-{port}.log"));
            let mut text = format!(
                "foreground = yes\npid =\noutput = {}\ndebug = 5\n\n[tls]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{target}\ncert = {}\nkey = {}\n",
                log.display(),
                server.cert.display(),
                server.key.display()
            );
            if let Some(ca) = clients_signed_by {
                text.push_str(&format!(
                    "CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
                    ca.display()
                ));
            }
            std::fs::write(&conf, text).expect("stunnel's configuration");
            let mut child = Command::new(&bin)
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child,
                        port,
                        dir: dir.to_owned(),
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!(
                        "stunnel exited with {status} on port {port}; retrying:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("stunnel did not start listening");
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What stunnel logged (handshakes, refused clients).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("stunnel-{}.log", self.port)))
            .unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
