//! `atoll console`: serves the operator console (see the `atoll-console` crate) on a local
//! address until interrupted.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context as _;

use crate::broker::Broker;

/// Serves the console on `listen` (loopback unless told otherwise) for the cluster at
/// `bootstrap` (else the configured one), saying where on `out`, until Ctrl-C or SIGTERM.
pub(crate) fn serve(
    runtime: tokio::runtime::Handle,
    bootstrap: Option<String>,
    listen: SocketAddr,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // The address first: a wrong one fails at once, before the broker is asked anything.
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let broker = Broker::connect_to(runtime.clone(), bootstrap)?;
    let config = atoll::config::Config::load()?;
    let console = atoll_console::Console::from_config(broker.client(), "", &config)?;
    let acts = console.acts();
    let mode = if acts {
        "actions ask for console.token"
    } else {
        "read-only: console.token is not set"
    };
    writeln!(
        out,
        "atoll console: http://{addr}/ ({mode}; Ctrl-C stops it)"
    )?;
    if !addr.ip().is_loopback() {
        writeln!(
            out,
            "warning: {addr} is not a loopback address: anyone who reaches it reads the console"
        )?;
    }
    out.flush()?;
    broker.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, console.router())
            .with_graceful_shutdown(stopped())
            .await
            .context("serving the console")
    })
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be waited for");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
