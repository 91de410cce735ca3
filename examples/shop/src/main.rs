//! `shop`: the reference system of atoll.
//!
//! Run with:
//! - `cargo run -p example-shop -- demo` — every service plus a driver in one process, on the
//!   embedded broker unless `ATOLL_KAFKA__BOOTSTRAP_SERVERS` is set;
//! - `cargo run -p example-shop -- serve orders` — one service until SIGTERM;
//! - `cargo run -p example-shop -- place --orders 500` — send orders to running services;
//! - `cargo run -p example-shop -- topics --write topics` — regenerate `topics/`;
//! - `shop health` — exit 0 when the service on `ATOLL_HTTP__ADDR` is ready (a container
//!   healthcheck that needs no curl in the image).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use atoll::codec::CodecKind;
use atoll::config::{Config, StoreConfig};
use atoll::telemetry::{self, Telemetry};
use atoll::App;
use clap::{Parser, Subcommand};
use example_shop::{all_topics, driver, topics, with_all, with_service, Options};

#[derive(Parser)]
#[command(
    name = "shop",
    about = "The reference system of atoll: orders, inventory, payments, shipping, storefront, analytics"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every service and a driver in one process; exit non-zero unless every order ends.
    Demo {
        #[command(flatten)]
        options: ShopOptions,
        /// How many orders to place.
        #[arg(long, default_value_t = 100)]
        orders: usize,
        /// Fraction of orders (0 to 1) whose amount exceeds the payment limit, so is declined.
        #[arg(long, default_value_t = 0.2, value_parser = fraction)]
        decline_rate: f64,
        /// How long to wait for every order to end.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// The codec the services produce with (`avro` starts a development schema registry
        /// unless ATOLL_SCHEMA_REGISTRY__URL names one).
        #[arg(long, value_enum, default_value_t = Codec::Json)]
        codec: Codec,
    },
    /// Run one service until SIGTERM or Ctrl-C.
    Serve {
        /// orders, inventory, payments, shipping, storefront or analytics.
        service: String,
        #[command(flatten)]
        options: ShopOptions,
        /// Also serve the operator console (every service's status) under `/console` on
        /// ATOLL_HTTP__ADDR.
        #[arg(long)]
        console: bool,
    },
    /// Place orders with services running elsewhere; exit non-zero unless every order ends.
    Place {
        /// How many orders to place.
        #[arg(long, default_value_t = 10)]
        orders: usize,
        /// Fraction of orders (0 to 1) whose amount exceeds the payment limit, so is declined.
        #[arg(long, default_value_t = 0.2, value_parser = fraction)]
        decline_rate: f64,
        /// How long to wait for every order to end.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// Orders per second (0: as fast as the broker takes them).
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
    /// Ask a running service whether it is ready: exit 0 when `/health/ready` answers 200.
    Health {
        /// The endpoint; default: `/health/ready` on ATOLL_HTTP__ADDR (loopback for 0.0.0.0).
        #[arg(long)]
        url: Option<String>,
    },
    /// Write or check the manifest under `topics/`, or create the topics on the broker.
    Topics {
        /// Write the manifest and schemas into this directory.
        #[arg(long, conflicts_with_all = ["check", "create"])]
        write: Option<PathBuf>,
        /// Fail when the manifest or schemas in this directory is out of date.
        #[arg(long, conflicts_with = "create")]
        check: Option<PathBuf>,
        /// Create every declared topic missing on ATOLL_KAFKA__BOOTSTRAP_SERVERS (a deployment's
        /// one-shot job; existing topics are left as they are).
        #[arg(long)]
        create: bool,
    },
}

/// A payload codec.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Codec {
    /// application/json.
    Json,
    /// application/avro with a schema registry.
    Avro,
}

/// How the services behave.
#[derive(clap::Args)]
struct ShopOptions {
    /// Probability (0 to below 1) that a charge fails transiently; retries heal it.
    #[arg(long, default_value_t = 0.0)]
    flaky_payments: f64,
    /// Dead-letter every order (a deploy with a bug): restart without it, then redrive them.
    #[arg(long)]
    refuse_orders: bool,
    /// How long inventory holds an order's reservation before it expires, unless the order
    /// completes or is cancelled first (milliseconds; 30 minutes by default).
    #[arg(long, default_value_t = 1_800_000)]
    reservation_hold_ms: u64,
}

impl ShopOptions {
    fn checked(&self) -> anyhow::Result<Options> {
        let o = Options {
            flaky_payments: self.flaky_payments,
            refuse_orders: self.refuse_orders,
            reservation_hold: std::time::Duration::from_millis(self.reservation_hold_ms),
        };
        o.check()?;
        Ok(o)
    }
}

/// A number from 0 to 1.
fn fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{f} is not between 0 and 1"))
    }
}

/// Loads the configuration and installs logs and traces as it says.
fn configured(service: &str, default_filter: &str) -> anyhow::Result<(Config, Telemetry)> {
    let config = Config::load()?;
    let telemetry = telemetry::init(&config.telemetry, service, default_filter)?;
    Ok((config, telemetry))
}

/// `/health/ready` of the service on `http.addr`.
fn ready_url(config: &Config) -> anyhow::Result<String> {
    let Some(mut addr) = config.http.addr else {
        anyhow::bail!("no endpoint to ask: set ATOLL_HTTP__ADDR or pass --url");
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(format!("http://{addr}/health/ready"))
}

/// `app` serving the operator console under `/console`, reading the cluster it runs on; the
/// console reads as long as the returned value lives.
fn with_console(
    app: App,
    config: &Config,
) -> anyhow::Result<(App, Option<atoll_console::Console>)> {
    let Some(bootstrap) = &config.kafka.bootstrap_servers else {
        anyhow::bail!("--console reads the cluster: set ATOLL_KAFKA__BOOTSTRAP_SERVERS");
    };
    if config.http.addr.is_none() {
        anyhow::bail!("--console is served on the service's HTTP server: set ATOLL_HTTP__ADDR");
    }
    let client = atoll::broker::client_config(config, bootstrap)?;
    let console = atoll_console::Console::from_config(&client, "/console", config)?;
    let app = app.routes(axum::Router::new().nest("/console", console.router()));
    Ok((app, Some(console)))
}

/// Exit 0 when `url` answers 200.
async fn health(url: &str) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let response = client.get(url).send().await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("{status} {body}");
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Demo {
            options,
            orders,
            decline_rate,
            timeout_secs,
            codec,
        } => {
            let (mut config, _telemetry) = configured("acme.shop", "warn")?;
            let _scratch = Scratch::store(&mut config)?;
            let options = options.checked()?;
            config.service.codec = Some(match codec {
                Codec::Json => CodecKind::Json,
                Codec::Avro => CodecKind::Avro,
            });
            let app = with_all(App::new(config.clone()), &options);
            let plan = driver::Plan {
                orders,
                decline_rate,
                rate: 0,
                timeout: Duration::from_secs(timeout_secs),
            };
            drive(app, &config, &plan).await
        }
        Cmd::Serve {
            service,
            options,
            console,
        } => {
            let (config, _telemetry) = configured(&format!("acme.shop.{service}"), "info")?;
            let app = with_service(App::new(config.clone()), &service, &options.checked()?)?
                .topics(all_topics());
            let (app, _console) = match console {
                true => with_console(app, &config)?,
                false => (app, None),
            };
            app.run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Place {
            orders,
            decline_rate,
            timeout_secs,
            rate,
        } => {
            let (config, _telemetry) = configured("acme.shop.driver", "warn")?;
            if config.kafka.bootstrap_servers.is_none() {
                anyhow::bail!(
                    "`shop place` sends to services running elsewhere: set ATOLL_KAFKA__BOOTSTRAP_SERVERS (or run `shop demo`)"
                );
            }
            let app = App::new(config.clone()).topics(all_topics());
            let plan = driver::Plan {
                orders,
                decline_rate,
                rate,
                timeout: Duration::from_secs(timeout_secs),
            };
            drive(app, &config, &plan).await
        }
        Cmd::Health { url } => {
            let url = match url {
                Some(url) => url,
                None => ready_url(&Config::load()?)?,
            };
            health(&url).await
        }
        Cmd::Topics {
            write,
            check,
            create,
        } => {
            match (write, check) {
                (Some(dir), _) => topics::write(&dir)?,
                (None, Some(dir)) => topics::check(&dir)?,
                (None, None) if create => create_topics().await?,
                (None, None) => print!("{}", topics::render()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The demo's store: like its embedded broker, a fresh one per run (a SQLite file in a
/// directory removed at the end), unless `store.url` or `store.path` is configured.
struct Scratch(Option<PathBuf>);

impl Scratch {
    fn store(config: &mut Config) -> anyhow::Result<Self> {
        if config.store.url.is_some() || config.store.path != StoreConfig::default().path {
            return Ok(Self(None));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("atoll-shop-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the demo's store in {}", dir.display()))?;
        config.store.path = dir.join("shop.db");
        Ok(Self(Some(dir)))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Creates the shop's topics on the configured broker.
async fn create_topics() -> anyhow::Result<()> {
    let (config, _telemetry) = configured("acme.shop.topics", "info")?;
    let Some(bootstrap) = &config.kafka.bootstrap_servers else {
        anyhow::bail!("`shop topics --create` needs a broker: set ATOLL_KAFKA__BOOTSTRAP_SERVERS");
    };
    let topics = all_topics();
    atoll::broker::create_topics(&atoll::broker::client_config(&config, bootstrap)?, &topics)
        .await?;
    println!("{} topics present on {bootstrap}", topics.len());
    Ok(())
}

/// Starts `app`, places the orders, shuts down, and reports.
async fn drive(app: App, config: &Config, plan: &driver::Plan) -> anyhow::Result<ExitCode> {
    let running = app.start().await?;
    let summary = driver::drive(&running, config, plan).await;
    running.shutdown().await;
    finish(summary?)
}

/// Prints the stock and sales checks, then the summary as the last line; fails unless every
/// order ended, stock was not found leaking and analytics' results (when it runs) match.
fn finish(summary: driver::Summary) -> anyhow::Result<ExitCode> {
    println!("{}", summary.stock);
    println!("{}", summary.sales);
    println!("{summary}");
    let mut ok = true;
    if !summary.all_terminal() {
        eprintln!("not every order reached order_completed or order_cancelled");
        ok = false;
    }
    if matches!(summary.stock, driver::StockCheck::NotConserved { .. }) {
        eprintln!("stock leaked: some reservation was not released, or was taken twice");
        ok = false;
    }
    if matches!(summary.sales, driver::SalesCheck::NotMatching { .. }) {
        eprintln!("analytics' daily_sales results do not match the orders' outcomes");
        ok = false;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
