//! `docker-compose.yml` and the `Dockerfile`, checked without a container engine: the
//! structure the issue asks for, every service's environment through the real configuration
//! loader, and every command through the `shop` binary's own argument parser. (CI also runs
//! `docker-compose config`, when it can install it.)

use std::path::Path;
use std::process::Command;

use example_shop::SERVICES;
use serde_yaml_ng::Value;

const SHOP: &str = env!("CARGO_BIN_EXE_shop");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut v: Value = serde_yaml_ng::from_str(&text).expect("docker-compose.yml is YAML");
    v.apply_merge().expect("merge keys resolve");
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn env(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .expect("environment as a mapping")
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("environment value {other:?}"),
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// Loads the configuration a container would, from `env` alone.
// figment's `Jail` closures must return `figment::Error`, which is large.
#[allow(clippy::result_large_err)]
fn load(env: &[(String, String)]) -> Result<atoll::config::Config, String> {
    let mut out = None;
    figment::Jail::expect_with(|jail| {
        for (k, v) in env {
            jail.set_env(k, v);
        }
        out = Some(atoll::config::Config::load().map_err(|e| e.to_string()));
        Ok(())
    });
    out.unwrap()
}

/// Whether `<bin> <command>` parses (clap validates everything before `--help`).
fn parses_with(bin: &Path, command: &[String]) -> Result<(), String> {
    let out = Command::new(bin)
        .args(command)
        .arg("--help")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether `shop <command>` parses.
fn parses(command: &[String]) -> Result<(), String> {
    parses_with(Path::new(SHOP), command)
}

#[test]
fn kafka_runs_in_kraft_mode_with_a_schema_registry() {
    let c = compose();
    let services = &c["services"];
    assert!(
        services.get("zookeeper").is_none(),
        "KRaft needs no ZooKeeper"
    );
    let kafka = &services["kafka"];
    let image = kafka["image"].as_str().unwrap();
    assert!(image.starts_with("apache/kafka:4."), "Kafka 4: {image}");
    let kenv = env(kafka);
    let get = |k: &str| kenv.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // A host listener, published: a service run on the host joins the same cluster.
    let advertised = get("KAFKA_ADVERTISED_LISTENERS").unwrap();
    assert!(
        advertised.contains("HOST://localhost:29092"),
        "{advertised}"
    );
    assert!(get("KAFKA_LISTENERS").unwrap().contains("HOST://:29092"));
    assert!(get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
        .unwrap()
        .contains("HOST:PLAINTEXT"));
    assert!(strings(&kafka["ports"]).contains(&"29092:29092".to_owned()));
    assert!(get("KAFKA_PROCESS_ROLES").unwrap().contains("controller"));
    assert!(get("KAFKA_CONTROLLER_QUORUM_VOTERS").is_some());
    assert!(get("CLUSTER_ID").is_some());
    assert!(kafka["healthcheck"]["test"].is_sequence());
    let registry = &services["schema-registry"];
    assert!(registry["image"]
        .as_str()
        .unwrap()
        .starts_with("confluentinc/cp-schema-registry:"));
    assert!(registry["healthcheck"]["test"].is_sequence());
}

/// Whether `atoll <command>` parses: the operator tool built beside `shop` (the workspace's
/// tests build both).
fn atoll_parses(command: &[String]) -> Result<(), String> {
    let atoll = Path::new(SHOP).with_file_name("atoll");
    if !atoll.exists() {
        return Err(format!(
            "{} is not built: `cargo build -p atoll-cli` (scripts/test builds it)",
            atoll.display()
        ));
    }
    parses_with(&atoll, command)
}

#[test]
fn a_one_shot_job_applies_the_checked_in_manifests_before_the_services_start() {
    let c = compose();
    let job = &c["services"]["topics"];
    assert_eq!(strings(&job["entrypoint"]), ["atoll"]);
    let command = strings(&job["command"]);
    assert_eq!(command, ["apply", "/usr/share/atoll/topics"]);
    atoll_parses(&command).unwrap();
    // The image holds the tool and the manifests the job applies.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("-p atoll-cli"),
        "the image builds `atoll`"
    );
    assert!(
        dockerfile.contains("COPY --from=build /src/topics /usr/share/atoll/topics"),
        "the image holds the manifests"
    );
    assert_eq!(job["restart"].as_str(), Some("no"));
    assert_eq!(
        job["depends_on"]["kafka"]["condition"].as_str(),
        Some("service_healthy")
    );
    load(&env(job)).expect("the job's environment loads");
}

#[test]
fn every_shop_service_runs_from_environment_with_a_readiness_healthcheck() {
    let c = compose();
    for name in SERVICES {
        let s = &c["services"][*name];
        assert!(s.is_mapping(), "no service {name}");
        let command = strings(&s["command"]);
        assert_eq!(command, ["serve", name]);
        parses(&command).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            strings(&s["healthcheck"]["test"]),
            ["CMD", "shop", "health"]
        );
        assert_eq!(
            s["depends_on"]["topics"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} waits for its topics"
        );
        assert_eq!(
            s["depends_on"]["schema-registry"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert!(
            s.get("volumes").is_none() && s.get("env_file").is_none(),
            "{name}: environment only"
        );
        let vars = env(s);
        assert!(
            vars.iter().all(|(k, _)| k.starts_with("ATOLL_")),
            "{name}: {vars:?}"
        );
        assert!(
            !vars.iter().any(|(k, _)| k == "ATOLL_CONFIG"),
            "{name}: no config file"
        );
        let config = load(&vars).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            config.kafka.bootstrap_servers.as_deref(),
            Some("kafka:9092")
        );
        assert!(config.schema_registry.url.is_some(), "{name}");
        assert!(
            config.http.addr.is_some(),
            "{name}: the healthcheck needs the endpoint"
        );
        assert!(config.service.process_name.is_some(), "{name}");
        assert!(
            s["stop_grace_period"].is_string(),
            "{name}: time to drain on SIGTERM"
        );
    }
}

#[test]
fn the_driver_places_orders_once_every_service_is_ready() {
    let c = compose();
    let d = &c["services"]["driver"];
    let command = strings(&d["command"]);
    assert_eq!(command[0], "place");
    parses(&command).unwrap();
    for name in SERVICES {
        assert_eq!(
            d["depends_on"][*name]["condition"].as_str(),
            Some("service_healthy"),
            "driver waits for {name}"
        );
    }
    load(&env(d)).expect("the driver's environment loads");
}

#[test]
fn a_bad_environment_is_caught_here() {
    let e = load(&[("ATOLL_HTTP__ADDR".into(), String::new())]).unwrap_err();
    assert!(e.contains("http.addr"), "{e}");
    assert!(parses(&["serve".into(), "orders".into(), "--nope".into()]).is_err());
}

#[test]
fn the_image_is_multi_stage_slim_and_not_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms.last().unwrap().contains("slim"),
        "slim runtime: {froms:?}"
    );
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(!["root", "0", "0:0"].contains(&user), "non-root: {user}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("HEALTHCHECK") && l.contains("\"health\"")));
    assert!(lines.iter().any(|l| l.starts_with("COPY --from=build")));
    assert!(lines.iter().any(|l| l.starts_with("ENTRYPOINT [\"shop\"]")));
}

#[test]
fn the_stateful_services_keep_their_state_in_a_postgresql_database_each() {
    let c = compose();
    let services = &c["services"];
    assert!(services["postgres"]["image"]
        .as_str()
        .unwrap()
        .starts_with("postgres:"));
    assert!(services["postgres"]["healthcheck"]["test"].is_sequence());
    let job = &services["databases"];
    assert_eq!(job["restart"].as_str(), Some("no"));
    assert_eq!(
        job["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    let script = strings(&job["command"]).join(" ");
    for name in ["inventory", "payments", "storefront"] {
        assert!(
            script.contains(name),
            "the job creates {name}'s database: {script}"
        );
        let s = &services[name];
        assert_eq!(
            s["depends_on"]["databases"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} waits for its database"
        );
        let config = load(&env(s)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let url = config.store.url.unwrap_or_default();
        assert!(
            url.starts_with("postgres://") && url.ends_with(&format!("@postgres:5432/{name}")),
            "{name}: its own database on the postgres service, not {url:?}"
        );
    }
    for name in ["orders", "shipping"] {
        let config = load(&env(&services[name])).unwrap();
        assert!(config.store.url.is_none(), "{name} keeps no state");
    }
}

#[test]
fn prometheus_scrapes_every_service() {
    let c = compose();
    let prometheus = &c["services"]["prometheus"];
    assert!(prometheus["image"]
        .as_str()
        .unwrap()
        .starts_with("prom/prometheus:"));
    let volumes = strings(&prometheus["volumes"]);
    assert!(
        volumes.contains(&"./ops/prometheus.yml:/etc/prometheus/prometheus.yml:ro".to_owned()),
        "{volumes:?}"
    );
    let text = std::fs::read_to_string(root().join("ops/prometheus.yml")).unwrap();
    let config: Value = serde_yaml_ng::from_str(&text).expect("ops/prometheus.yml is YAML");
    let targets: Vec<String> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .filter(|job| job["metrics_path"].as_str().unwrap_or("/metrics") == "/metrics")
        .flat_map(|job| {
            job["static_configs"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|sc| strings(&sc["targets"]))
        .collect();
    for name in SERVICES {
        let port = load(&env(&c["services"][*name]))
            .unwrap()
            .http
            .addr
            .expect("the metrics endpoint")
            .port();
        let target = format!("{name}:{port}");
        assert!(
            targets.contains(&target),
            "{target} not scraped: {targets:?}"
        );
    }
}
