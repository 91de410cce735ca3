//! A TCP proxy that injects network faults between Kafka clients and a broker.
//!
//! [`FaultProxy`] listens on a loopback port and forwards every connection it accepts to an
//! upstream address (the broker), byte for byte, in both directions. Faults are switched on
//! and off at any time, per [`Direction`], and apply at once to the open connections and to
//! new ones:
//!
//! - [`FaultProxy::delay`]: every chunk forwarded in a direction is held for a given time
//!   after it was read. Chunks wait in a per-connection queue stamped with their read time, so
//!   order is kept and throughput is not: five chunks read 20 ms apart under a 300 ms delay
//!   arrive about 300 ms after each was sent, not 1.5 s later.
//! - [`FaultProxy::blackhole`]: like a network partition that loses packets. What is read in
//!   that direction is discarded (never forwarded, never counted). Connections are still
//!   accepted, but while [`Direction::ToBroker`] is blackholed a new connection does not even
//!   connect to the broker (it connects when the blackhole is lifted).
//! - [`FaultProxy::close_all`]: closes every open connection, on both sides, once.
//! - [`FaultProxy::resume`]: lifts every delay and blackhole.
//!
//! Unlike a real network, a blackhole drops bytes from the middle of a TCP stream: a connection
//! that lost bytes is out of step with the Kafka framing after [`FaultProxy::resume`], and
//! clients recover by timing out their requests and reconnecting. Call
//! [`FaultProxy::close_all`] after `resume` for a quicker, clean start.
//!
//! The proxy runs on its own thread with its own tokio runtime, so it works the same under
//! synchronous tests and inside any async runtime. Dropping it closes the listener and every
//! connection, and joins the thread.
//!
//! [`crate::Tansu::builder`] puts one in front of tansu, with the broker advertising the
//! proxy's address, so that every connection of every client (bootstrap and the broker
//! addresses from metadata) goes through it.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

/// A direction of the traffic through a [`FaultProxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the broker (requests).
    ToBroker,
    /// From the broker to the client (responses).
    ToClient,
    /// Both directions.
    Both,
}

/// Index of the client-to-broker side in [`Settings::sides`] and [`Counters::bytes`].
const TO_BROKER: usize = 0;
/// Index of the broker-to-client side.
const TO_CLIENT: usize = 1;

/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;
/// Chunks waiting to be forwarded, per connection and direction, before reading stops.
const QUEUE: usize = 1024;

impl Direction {
    /// The sides this direction stands for.
    fn sides(self) -> &'static [usize] {
        match self {
            Self::ToBroker => &[TO_BROKER],
            Self::ToClient => &[TO_CLIENT],
            Self::Both => &[TO_BROKER, TO_CLIENT],
        }
    }
}

/// The faults of one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    delay: Duration,
    blackhole: bool,
}

/// The faults of both sides, shared with every connection through a `watch` channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Settings {
    sides: [Faults; 2],
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    bytes: [AtomicU64; 2],
}

/// A TCP proxy in front of a broker that can delay, drop and cut traffic (see the
/// [module documentation](crate::proxy)). Stopped when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    settings: watch::Sender<Settings>,
    close: broadcast::Sender<()>,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = *self.settings.borrow();
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("to_broker", &settings.sides[TO_BROKER])
            .field("to_client", &settings.sides[TO_CLIENT])
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port (`127.0.0.1:0`) that forwards every connection
    /// to `upstream`.
    ///
    /// # Panics
    /// When the port cannot be bound or the proxy thread cannot be started.
    pub fn start(upstream: SocketAddr) -> Self {
        Self::start_on(0, upstream)
    }

    /// Starts a proxy on `127.0.0.1:<port>` (`0`: a free port) that forwards every
    /// connection to `upstream`.
    ///
    /// # Panics
    /// When the port cannot be bound or the proxy thread cannot be started; see
    /// [`FaultProxy::try_start_on`] for an error instead.
    pub fn start_on(port: u16, upstream: SocketAddr) -> Self {
        Self::try_start_on(port, upstream)
            .unwrap_or_else(|e| panic!("fault proxy: cannot listen on 127.0.0.1:{port}: {e}"))
    }

    /// Like [`FaultProxy::start_on`], with an error when the port cannot be bound or the
    /// thread cannot be started.
    pub fn try_start_on(port: u16, upstream: SocketAddr) -> io::Result<Self> {
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (settings, settings_rx) = watch::channel(Settings::default());
        let (close, _) = broadcast::channel(16);
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = oneshot::channel();
        let thread = {
            let close = close.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || {
                    // Built and dropped on this thread: dropping a runtime inside the caller's
                    // async context would panic. Dropping it cancels every connection task,
                    // which closes their sockets.
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("fault proxy runtime");
                    runtime.block_on(accept(
                        listener,
                        upstream,
                        settings_rx,
                        close,
                        counters,
                        stop_rx,
                    ));
                })?
        };
        Ok(Self {
            addr,
            upstream,
            settings,
            close,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address clients connect to: `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Holds every chunk forwarded in `direction` for `delay` after it was read (replacing
    /// any earlier delay there; `Duration::ZERO` removes it). Order within a connection is
    /// kept and chunks are not serialised behind each other's delay. Takes effect at once,
    /// also for chunks already waiting.
    pub fn delay(&self, direction: Direction, delay: Duration) {
        self.settings.send_modify(|s| {
            for &side in direction.sides() {
                s.sides[side].delay = delay;
            }
        });
    }

    /// Silently discards every byte read in `direction`, on open and new connections, until
    /// [`FaultProxy::resume`]; connections stay open and new ones are accepted. While
    /// [`Direction::ToBroker`] is blackholed, new connections are not connected to the broker.
    pub fn blackhole(&self, direction: Direction) {
        self.settings.send_modify(|s| {
            for &side in direction.sides() {
                s.sides[side].blackhole = true;
            }
        });
    }

    /// Lifts every delay and blackhole, in both directions.
    pub fn resume(&self) {
        self.settings.send_modify(|s| *s = Settings::default());
    }

    /// Closes every open connection, on both sides (clients read end-of-stream or a reset).
    /// Connections accepted afterwards are forwarded normally.
    pub fn close_all(&self) {
        // No receiver: no open connection to close.
        let _ = self.close.send(());
    }

    /// The number of connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// The number of bytes forwarded so far in `direction` (written to the other side;
    /// blackholed bytes are not counted). [`Direction::Both`]: the sum of both directions.
    pub fn bytes(&self, direction: Direction) -> u64 {
        direction
            .sides()
            .iter()
            .map(|&side| self.counters.bytes[side].load(Ordering::SeqCst))
            .sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until `stop` fires (or its sender is dropped), one task each.
async fn accept(
    listener: StdTcpListener,
    upstream: SocketAddr,
    settings: watch::Receiver<Settings>,
    close: broadcast::Sender<()>,
    counters: Arc<Counters>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("fault proxy: cannot listen: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    counters.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = client.set_nodelay(true);
                    tokio::spawn(serve(
                        client,
                        upstream,
                        settings.clone(),
                        close.subscribe(),
                        counters.clone(),
                    ));
                }
                // E.g. out of file descriptors: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// One connection, until it ends or [`FaultProxy::close_all`]; dropping the futures closes
/// both sockets.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    settings: watch::Receiver<Settings>,
    mut close: broadcast::Receiver<()>,
    counters: Arc<Counters>,
) {
    tokio::select! {
        _ = forward(client, upstream, settings, counters) => {}
        // A close, or the proxy going away (closed), or missed closes (lagged): close.
        _ = close.recv() => {}
    }
}

/// Connects to the broker (once requests are not blackholed) and forwards both ways.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut settings: watch::Receiver<Settings>,
    counters: Arc<Counters>,
) -> io::Result<()> {
    // Requests are lost: the broker is not connected, what the client sends is discarded.
    let mut buf = vec![0u8; CHUNK];
    while settings.borrow_and_update().sides[TO_BROKER].blackhole {
        tokio::select! {
            read = client.read(&mut buf) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            changed = settings.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
    }
    drop(buf);
    let broker = TcpStream::connect(upstream).await?;
    let _ = broker.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (broker_read, broker_write) = broker.into_split();
    tokio::try_join!(
        pump(
            client_read,
            broker_write,
            TO_BROKER,
            settings.clone(),
            counters.clone()
        ),
        pump(broker_read, client_write, TO_CLIENT, settings, counters),
    )?;
    Ok(())
}

/// Forwards one direction of one connection: a reader that stamps chunks with their read
/// time, and a writer that forwards each when its delay has passed. At end-of-stream, the
/// writer forwards what is queued and then shuts the other side's write half down.
async fn pump<R, W>(
    from: R,
    to: W,
    side: usize,
    settings: watch::Receiver<Settings>,
    counters: Arc<Counters>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (queue, queued) = mpsc::channel(QUEUE);
    tokio::try_join!(
        read_side(from, queue, side, settings.clone()),
        write_side(to, queued, side, settings, counters),
    )?;
    Ok(())
}

/// Reads chunks into `queue`, dropping those read while `side` is blackholed; returns at
/// end-of-stream (dropping `queue` tells the writer).
async fn read_side<R>(
    mut from: R,
    queue: mpsc::Sender<(Instant, Vec<u8>)>,
    side: usize,
    settings: watch::Receiver<Settings>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let read_at = Instant::now();
        if settings.borrow().sides[side].blackhole {
            continue;
        }
        if queue.send((read_at, buf[..n].to_vec())).await.is_err() {
            return Ok(());
        }
    }
}

/// Writes the queued chunks in order, each once its read time plus the current delay has
/// passed (re-evaluated whenever the settings change), dropping those due while `side` is
/// blackholed.
async fn write_side<W>(
    mut to: W,
    mut queued: mpsc::Receiver<(Instant, Vec<u8>)>,
    side: usize,
    mut settings: watch::Receiver<Settings>,
    counters: Arc<Counters>,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while let Some((read_at, chunk)) = queued.recv().await {
        let blackhole = loop {
            let faults = settings.borrow_and_update().sides[side];
            let due = read_at + faults.delay;
            if faults.blackhole || Instant::now() >= due {
                break faults.blackhole;
            }
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                changed = settings.changed() => {
                    if changed.is_err() {
                        // The proxy is going away.
                        return Ok(());
                    }
                }
            }
        };
        if blackhole {
            continue;
        }
        to.write_all(&chunk).await?;
        counters.bytes[side].fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    to.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::{Direction, FaultProxy};
    use std::io::{ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use crate::process::wait_until;

    /// An echo server on a free port, for the life of the test process.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let Ok(mut reader) = stream.try_clone() else {
                        return;
                    };
                    let _ = std::io::copy(&mut reader, &mut stream);
                });
            }
        });
        addr
    }

    fn connect(proxy: &FaultProxy) -> TcpStream {
        let c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.set_nodelay(true).unwrap();
        c
    }

    fn round_trip(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        c.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got)?;
        Ok(got)
    }

    fn is_timeout(e: &std::io::Error) -> bool {
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    }

    /// Asserts that the peer closed `c`: a read returns end-of-stream or an error other than a
    /// timeout.
    fn assert_closed(c: &mut TcpStream) {
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Ok(0) => {}
            Err(e) if !is_timeout(&e) => {}
            other => panic!("the connection is still open: {other:?}"),
        }
    }

    #[test]
    fn forwards_bytes_both_ways() {
        let proxy = FaultProxy::start(echo_server());
        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, b"hello").unwrap(), b"hello");
        let big = vec![7u8; 100_000];
        assert_eq!(round_trip(&mut c, &big).unwrap(), big);
        assert_eq!(proxy.connections(), 1);
        assert!(wait_until(Duration::from_secs(5), || {
            proxy.bytes(Direction::ToBroker) == 100_005
                && proxy.bytes(Direction::ToClient) == 100_005
        }));
        assert_eq!(proxy.bytes(Direction::Both), 200_010);
    }

    #[test]
    fn start_on_a_given_port() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = FaultProxy::start_on(port, echo_server());
        assert_eq!(proxy.port(), port);
        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, b"port").unwrap(), b"port");
    }

    #[test]
    fn delay_adds_latency_without_serialising() {
        let proxy = FaultProxy::start(echo_server());
        proxy.delay(Direction::ToBroker, Duration::from_millis(300));
        let mut c = connect(&proxy);
        let t = Instant::now();
        assert_eq!(round_trip(&mut c, b"ping").unwrap(), b"ping");
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );

        // Five chunks 20 ms apart: each is held 300 ms, not 300 ms behind the previous one.
        let t = Instant::now();
        for _ in 0..5 {
            c.write_all(b"tick").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut got = [0u8; 20];
        c.read_exact(&mut got).unwrap();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(1400), "{took:?}");

        // Lifted at once on the open connection.
        proxy.resume();
        let t = Instant::now();
        assert_eq!(round_trip(&mut c, b"pong").unwrap(), b"pong");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn blackhole_drops_traffic_until_resume() {
        let proxy = FaultProxy::start(echo_server());
        proxy.blackhole(Direction::Both);
        let mut lost = connect(&proxy);
        lost.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        lost.write_all(b"lost").unwrap();
        let mut buf = [0u8; 4];
        let err = lost.read(&mut buf).unwrap_err();
        assert!(is_timeout(&err), "{err:?}");
        assert_eq!(proxy.bytes(Direction::Both), 0);

        proxy.resume();
        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, b"back").unwrap(), b"back");
        assert_eq!(proxy.connections(), 2);
    }

    #[test]
    fn blackhole_applies_to_open_connections() {
        let proxy = FaultProxy::start(echo_server());
        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, b"one").unwrap(), b"one");

        proxy.blackhole(Direction::ToClient);
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.write_all(b"two").unwrap();
        let mut buf = [0u8; 3];
        let err = c.read(&mut buf).unwrap_err();
        assert!(is_timeout(&err), "{err:?}");

        proxy.resume();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(round_trip(&mut c, b"three").unwrap(), b"three");
    }

    #[test]
    fn close_all_closes_open_connections_only() {
        let proxy = FaultProxy::start(echo_server());
        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, b"before").unwrap(), b"before");
        proxy.close_all();
        assert_closed(&mut c);

        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, b"after").unwrap(), b"after");
    }

    #[test]
    fn drop_stops_the_proxy() {
        let proxy = FaultProxy::start(echo_server());
        let addr = proxy.addr();
        let mut c = connect(&proxy);
        assert_eq!(round_trip(&mut c, b"hi").unwrap(), b"hi");
        drop(proxy);
        assert_closed(&mut c);
        assert!(TcpStream::connect(addr).is_err());
    }

    #[tokio::test]
    async fn works_inside_a_runtime() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let proxy = FaultProxy::start(echo_server());
        let mut c = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"async").await.unwrap();
        let mut got = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(&got, b"async");
        // Dropping inside an async context must not panic.
        drop(proxy);
    }
}
