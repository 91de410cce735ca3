//! `atoll`: the operator tool.
//!
//! Run with: `ATOLL_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run -p atoll-cli -- dlq list acme.shop.payments.private.dlq`
//!
//! It reads the broker address and client properties like the services do (`atoll.toml`,
//! `ATOLL_*`).

mod acl_admin;
mod acls;
mod asyncapi;
mod broker;
mod cluster;
mod console;
mod dlq;
mod docs;
mod graph;
mod group;
mod plan;
mod schemas;
mod view;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use atoll::contract::Manifest;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "atoll",
    version,
    about = "Operate atoll services: topics and ACLs from the manifests, dead letters, views, the console",
    after_help = "Exit codes: 0 done; 1 failed; 2 `plan --detailed-exitcode` found changes to make; 64 the command line is wrong."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Dead-letter topics (`<service>.private.dlq`).
    Dlq {
        #[command(flatten)]
        kafka: Kafka,
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Serve the operator console: every service's processes, listeners, lag, failures and
    /// store, read from their status topics, on a web page.
    Console {
        #[command(flatten)]
        kafka: Kafka,
        /// Where to serve it; a loopback address unless you mean others to reach it.
        #[arg(long, default_value = "127.0.0.1:9800", value_name = "HOST:PORT")]
        listen: std::net::SocketAddr,
    },
    /// Consumer groups: move a stopped group's offsets.
    Group {
        #[command(flatten)]
        kafka: Kafka,
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Views: read models that listeners build from facts in the service's store.
    View {
        #[command(flatten)]
        kafka: Kafka,
        #[command(subcommand)]
        cmd: ViewCmd,
    },
    /// Compare the manifests with the cluster: topics to create, partitions to add, configs to
    /// change, topics no service declares; with `--registry`, each event's schema against the
    /// registry.
    Plan {
        #[command(flatten)]
        target: Target,
        /// The schema registry to check the schemas (`<dir>/avro/`) against.
        #[arg(long)]
        registry: Option<String>,
        /// Exit 0 when nothing would change, 2 when something would, 1 on error (64: a wrong
        /// command line).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Plan to delete the namespaces' topics that no service declares.
        #[arg(long)]
        delete: bool,
    },
    /// Make the cluster match the manifests (the changes `plan` shows); a second run changes
    /// nothing. Partitions are never removed.
    Apply {
        #[command(flatten)]
        target: Target,
        /// Also delete the namespaces' topics that no service declares.
        #[arg(long)]
        delete: bool,
        /// Also create the ACLs `atoll acls` derives (a broker with an authorizer).
        #[arg(long)]
        acls: bool,
        /// With `--acls`: a service's principal (`{service}`: its full name, `{name}`: its
        /// last segment).
        #[arg(long, default_value = "User:{service}", requires = "acls")]
        principal: String,
    },
    /// An AsyncAPI 3.0.0 document of the manifests: channels, operations, messages with
    /// their schemas, Kafka bindings.
    Asyncapi {
        /// The directory of the manifests, e.g. `topics`.
        dir: PathBuf,
        /// Where to write it (YAML); standard output if not given.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The broker address the document names.
        #[arg(long, default_value = "localhost:9092")]
        server: String,
    },
    /// A picture of the services, their topics and the flows between them (facts, results,
    /// commands, replies; sagas marked).
    Graph {
        /// The directory of the manifests, e.g. `topics`.
        dir: PathBuf,
        /// `svg` (needs Graphviz's `dot`; Mermaid is written instead without it), `dot` or
        /// `mermaid`.
        #[arg(long, value_enum, default_value_t = GraphFormat::Svg)]
        format: GraphFormat,
        /// Where to write it; standard output if not given.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// One static HTML page: the picture, and each service's topics, events with their
    /// schemas, and listeners with their groups.
    Docs {
        /// The directory of the manifests, e.g. `topics`.
        dir: PathBuf,
        /// The directory to write `index.html` into.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Creates the derived ACLs in this process (run by `apply --acls` in a child process, so
    /// that a broker whose answer librdkafka cannot read aborts the child alone).
    #[command(hide = true, name = "create-acls-in-child")]
    CreateAclsInChild {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        principal: String,
    },
    /// Least-privilege ACLs for every service of the manifests in a directory.
    Acls {
        /// The directory of the manifests (`<company>.<namespace>.json`), e.g. `topics`.
        dir: PathBuf,
        /// A service's principal: `{service}` is its full name, `{name}` its last segment.
        #[arg(long, default_value = "User:{service}")]
        principal: String,
        /// `table`, or `commands` (`kafka-acls.sh` lines that create them).
        #[arg(long, value_enum, default_value_t = AclFormat::Table)]
        format: AclFormat,
    },
}

/// Where `plan` and `apply` find the manifests and the cluster.
#[derive(Args)]
struct Target {
    /// The directory of the manifests (`<company>.<namespace>.json`), e.g. `topics`.
    dir: PathBuf,
    #[command(flatten)]
    kafka: Kafka,
}

/// The cluster a command talks to.
#[derive(Args)]
struct Kafka {
    /// The broker, instead of `ATOLL_KAFKA__BOOTSTRAP_SERVERS`.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
}

/// What `atoll graph` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    /// SVG through Graphviz.
    Svg,
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// How `atoll acls` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
enum AclFormat {
    /// One line per ACL.
    Table,
    /// `kafka-acls.sh` commands.
    Commands,
}

#[derive(Subcommand)]
enum GroupCmd {
    /// Move the group's committed offsets on a topic, with its consumers stopped (refused
    /// while it has members): to each partition's first record at or after a time, or to the
    /// start. Prints each partition's move.
    Reset {
        /// The consumer group, e.g. `acme.shop.payments-charge`.
        group: String,
        /// The topic whose offsets move.
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        to: ResetTo,
        /// Print where each partition would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where `group reset` moves a group.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct ResetTo {
    /// To each partition's first record written at or after this time (RFC 3339, e.g.
    /// `2026-12-07T10:00:00Z`); to its end where none is.
    #[arg(long)]
    to_time: Option<String>,
    /// To each partition's oldest record.
    #[arg(long)]
    to_start: bool,
}

#[derive(Subcommand)]
enum ViewCmd {
    /// Rebuild the view a consumer group feeds, with the service stopped: rewind the group
    /// (and every group feeding the same tables) to the start of its topic, empty the view's
    /// tables and forget the groups' inbox rows. The service rebuilds the view when it starts.
    Rebuild {
        /// A consumer group feeding the view, e.g. `acme.shop.storefront-orders`.
        group: String,
        /// Keep the view's tables and apply over them the facts written at or after this time
        /// (RFC 3339): each group moves back to its first fact at or after it, never forward.
        /// For views whose handlers set what a fact says; without it, the tables are emptied
        /// and every fact applied again.
        #[arg(long)]
        from: Option<String>,
        /// Print what would be rewound and emptied; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum DlqCmd {
    /// A table of the dead letters: offset, time, type, key, error kind, error, attempts.
    List {
        /// The DLQ topic.
        topic: String,
    },
    /// One dead letter with all its headers and its payload.
    Show {
        /// The DLQ topic.
        topic: String,
        #[command(flatten)]
        at: At,
    },
    /// Re-publish dead letters to their original topic, for the listener that failed them.
    Replay {
        /// The DLQ topic.
        topic: String,
        #[command(flatten)]
        select: Select,
        /// With `--offset`: the record's partition.
        #[arg(long, requires = "offset")]
        partition: Option<i32>,
        #[command(flatten)]
        window: Window,
        /// Print what would be replayed; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay records that were replayed before.
        #[arg(long)]
        force: bool,
        /// At most this many records per second (default: as fast as the broker takes them).
        #[arg(long, value_name = "RECORDS_PER_SECOND", value_parser = rate)]
        rate: Option<f64>,
    },
}

/// One record: `--offset N`, with `--partition P` when the offset is in several partitions.
#[derive(Args, Clone, Copy)]
struct At {
    /// The record's offset.
    #[arg(long)]
    offset: i64,
    /// The record's partition.
    #[arg(long)]
    partition: Option<i32>,
}

/// Dead letters written to the DLQ within a time window (RFC 3339, e.g.
/// `2026-12-07T08:00:00Z`).
#[derive(Args)]
struct Window {
    /// Only those dead-lettered at or after this time.
    #[arg(long)]
    from: Option<String>,
    /// Only those dead-lettered before this time.
    #[arg(long)]
    to: Option<String>,
}

impl Window {
    fn start_ms(&self) -> anyhow::Result<Option<i64>> {
        self.from
            .as_deref()
            .map(|t| unix_ms("--from", t))
            .transpose()
    }

    fn end_ms(&self) -> anyhow::Result<Option<i64>> {
        self.to.as_deref().map(|t| unix_ms("--to", t)).transpose()
    }
}

/// `--rate`: records per second, from 0.01 to 1,000,000.
fn rate(text: &str) -> Result<f64, String> {
    match atoll_console::dlq::rate(text) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("a rate is needed".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// An RFC 3339 time as Unix milliseconds.
fn unix_ms(flag: &str, time: &str) -> anyhow::Result<i64> {
    let t = time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            anyhow::anyhow!("{flag} `{time}` is not an RFC 3339 time (2026-12-07T08:00:00Z): {e}")
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Select {
    /// One record.
    #[arg(long)]
    offset: Option<i64>,
    /// Every record of this `ce_type`.
    #[arg(long = "type")]
    ce_type: Option<String>,
    /// Every record.
    #[arg(long)]
    all: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` are "errors" printed to standard output.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(USAGE);
        }
    };
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || run(cli, runtime)).await;
    match result {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a wrong command line (`EX_USAGE`): not 2, which `plan --detailed-exitcode`
/// means as "changes to make".
const USAGE: u8 = 64;

/// Runs the command; the exit code on success.
fn run(cli: Cli, runtime: tokio::runtime::Handle) -> anyhow::Result<u8> {
    let out = &mut std::io::stdout().lock();
    let (kafka, cmd) = match cli.command {
        Cmd::Dlq { kafka, cmd } => (kafka, cmd),
        Cmd::Console { kafka, listen } => {
            return console::serve(runtime, kafka.bootstrap, listen, out).map(|()| 0);
        }
        Cmd::View {
            kafka,
            cmd:
                ViewCmd::Rebuild {
                    group,
                    from,
                    dry_run,
                },
        } => {
            let from = match from {
                Some(t) => view::Since::Time(unix_ms("--from", &t)?),
                None => view::Since::Start,
            };
            return view::rebuild(runtime, kafka.bootstrap, &group, from, dry_run, out).map(|()| 0);
        }
        Cmd::Group {
            kafka,
            cmd:
                GroupCmd::Reset {
                    group: name,
                    topic,
                    to,
                    dry_run,
                },
        } => {
            let target = match to.to_time {
                Some(t) => atoll_console::groups::Target::Time(unix_ms("--to-time", &t)?),
                None => atoll_console::groups::Target::Start,
            };
            let broker = broker::Broker::connect_to(runtime, kafka.bootstrap)?;
            return group::reset(&broker, &name, &topic, target, dry_run, out).map(|()| 0);
        }
        Cmd::Plan {
            target,
            registry,
            detailed_exitcode,
            delete,
        } => {
            let changed = topics_plan(runtime, &target, registry.as_deref(), delete, out)?;
            return Ok(if detailed_exitcode && changed { 2 } else { 0 });
        }
        Cmd::Apply {
            target,
            delete,
            acls,
            principal,
        } => {
            let Planned {
                manifests,
                broker,
                declared,
                actual,
                plan,
            } = planned(runtime, &target, delete)?;
            for notice in &plan.notices {
                writeln!(out, "{notice}")?;
            }
            cluster::apply(&broker, &plan, &declared, &actual, out)?;
            if plan.changes.is_empty() {
                writeln!(out, "nothing to change")?;
            }
            if acls {
                let n = acls::derive(&manifests, &acls::Principals(principal.clone()))
                    .map_err(anyhow::Error::msg)?
                    .len();
                cluster::create_acls_in_child(&broker, &target.dir, &principal)?;
                writeln!(out, "{n} ACLs in place")?;
            }
            return Ok(0);
        }
        Cmd::Asyncapi {
            dir,
            output,
            server,
        } => {
            let manifests = Manifest::read_dir(&dir)?;
            let text = asyncapi::yaml(&asyncapi::document(&manifests, &dir, &server)?)?;
            write_to(output.as_deref(), &text, out)?;
            return Ok(0);
        }
        Cmd::Graph {
            dir,
            format,
            output,
        } => {
            let g = graph::graph(&Manifest::read_dir(&dir)?);
            let text = match format {
                GraphFormat::Dot => graph::dot(&g),
                GraphFormat::Mermaid => graph::mermaid(&g),
                GraphFormat::Svg => match graph::svg(&graph::dot(&g)) {
                    Ok(svg) => svg,
                    Err(e) => {
                        eprintln!("no SVG ({e:#}); writing Mermaid instead");
                        graph::mermaid(&g)
                    }
                },
            };
            write_to(output.as_deref(), &text, out)?;
            return Ok(0);
        }
        Cmd::Docs { dir, output } => {
            let manifests = Manifest::read_dir(&dir)?;
            let g = graph::graph(&manifests);
            let picture = match graph::svg(&graph::dot(&g)) {
                Ok(svg) => docs::Picture::Svg(svg),
                Err(e) => {
                    eprintln!("no SVG ({e:#}); the page shows the picture as Mermaid");
                    docs::Picture::Mermaid(graph::mermaid(&g))
                }
            };
            std::fs::create_dir_all(&output)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", output.display()))?;
            let page = output.join("index.html");
            write_to(Some(&page), &docs::page(&manifests, &dir, &picture)?, out)?;
            writeln!(out, "wrote {}", page.display())?;
            return Ok(0);
        }
        Cmd::CreateAclsInChild { target, principal } => {
            let manifests = Manifest::read_dir(&target.dir)?;
            let broker = broker::Broker::connect_to(runtime, target.kafka.bootstrap.clone())?;
            let acls = acls::derive(&manifests, &acls::Principals(principal))
                .map_err(anyhow::Error::msg)?;
            cluster::create_acls(&broker, &acls)?;
            return Ok(0);
        }
        Cmd::Acls {
            dir,
            principal,
            format,
        } => {
            let manifests = Manifest::read_dir(&dir)?;
            let acls = acls::derive(&manifests, &acls::Principals(principal))
                .map_err(anyhow::Error::msg)?;
            let text = match format {
                AclFormat::Table => acls::table(&acls),
                AclFormat::Commands => acls::kafka_acls_commands(&acls),
            };
            out.write_all(text.as_bytes())?;
            return Ok(0);
        }
    };
    let broker = broker::Broker::connect_to(runtime, kafka.bootstrap)?;
    match cmd {
        DlqCmd::List { topic } => dlq::list(&broker, &topic, out),
        DlqCmd::Show { topic, at } => dlq::show(&broker, &topic, at.partition, at.offset, out),
        DlqCmd::Replay {
            topic,
            select,
            partition,
            window,
            dry_run,
            force,
            rate,
        } => {
            let selection = match (select.offset, select.ce_type) {
                (Some(offset), _) => dlq::Selection::At(partition, offset),
                (None, Some(t)) => dlq::Selection::Type(t),
                (None, None) => dlq::Selection::All,
            };
            let how = atoll_console::dlq::Redrive {
                filter: selection.filter(window.start_ms()?, window.end_ms()?),
                dry_run,
                force,
                per_second: rate,
            };
            dlq::replay(&broker, &topic, &how, out)
        }
    }
    .map(|()| 0)
}

/// Writes `text` to `path`, or to `out` without one.
fn write_to(
    path: Option<&std::path::Path>,
    text: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match path {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display())),
        None => Ok(out.write_all(text.as_bytes())?),
    }
}

/// What `plan` and `apply` work from.
struct Planned {
    manifests: Vec<Manifest>,
    broker: broker::Broker,
    declared: std::collections::BTreeMap<String, plan::TopicState>,
    actual: std::collections::BTreeMap<String, plan::TopicState>,
    plan: plan::Plan,
}

/// The manifests, the broker, the declared topics and the plan from the cluster to them.
fn planned(
    runtime: tokio::runtime::Handle,
    target: &Target,
    delete: bool,
) -> anyhow::Result<Planned> {
    let manifests = Manifest::read_dir(&target.dir)?;
    let broker = broker::Broker::connect_to(runtime, target.kafka.bootstrap.clone())?;
    let declared = plan::declared(&manifests);
    let actual = cluster::actual(&broker, &manifests, &declared)?;
    let plan = plan::plan(&declared, &actual, delete);
    Ok(Planned {
        manifests,
        broker,
        declared,
        actual,
        plan,
    })
}

/// Prints the plan (and the schema verdicts); whether anything would change. An incompatible
/// schema is an error.
fn topics_plan(
    runtime: tokio::runtime::Handle,
    target: &Target,
    registry: Option<&str>,
    delete: bool,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let Planned {
        manifests, plan, ..
    } = planned(runtime, target, delete)?;
    for change in &plan.changes {
        writeln!(out, "{change}")?;
    }
    for notice in &plan.notices {
        writeln!(out, "{notice}")?;
    }
    let mut incompatible = Vec::new();
    if let Some(registry) = registry {
        let registry = schemas::registry(registry)?;
        for (subject, verdict) in schemas::check(&registry, &target.dir, &manifests)? {
            match verdict {
                schemas::Verdict::New => writeln!(out, "schema {subject}: new subject")?,
                schemas::Verdict::Compatible => writeln!(out, "schema {subject}: compatible")?,
                schemas::Verdict::Incompatible(reasons) => {
                    writeln!(out, "schema {subject}: INCOMPATIBLE {}", reasons.join("; "))?;
                    incompatible.push(subject);
                }
            }
        }
    }
    let changed = !plan.changes.is_empty();
    writeln!(
        out,
        "{} change(s), {} notice(s)",
        plan.changes.len(),
        plan.notices.len()
    )?;
    if !incompatible.is_empty() {
        anyhow::bail!(
            "schemas incompatible with the registry's latest versions: {} (an incompatible \
             change needs a new event version)",
            incompatible.join(", ")
        );
    }
    Ok(changed)
}
