//! The console's routes: the pages (whole, or their `<main>` alone when htmx asks for it with
//! `HX-Request`) and the assets, each answer with headers that keep the page from being framed
//! or fed scripts from elsewhere.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::Markup;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::dead_letters;
use crate::dlq::{self, Kafka, Redrive};
use crate::fleet::Fleet;
use crate::groups::{self as engine, GroupError};
use crate::guard::Guard;
use crate::holds::HoldForm;
use crate::offsets;
use crate::pages;
use crate::sagas;
use crate::topology;

/// What the routes read.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) fleet: Arc<Mutex<Fleet>>,
    /// The path the console is served under (`""` at the root, `/console` nested).
    pub(crate) base: String,
    /// Reads and redrives dead letters.
    pub(crate) kafka: Arc<Kafka>,
    /// Who may act.
    pub(crate) guard: Arc<Guard>,
    /// Held while a redrive runs: one at a time, so that a double click or a retried request
    /// cannot send the same dead letters twice (each run reads the markers once, at its start).
    pub(crate) redriving: Arc<tokio::sync::Mutex<()>>,
    /// Decodes Avro payloads, when a schema registry is configured.
    pub(crate) codec: Option<Arc<atoll::codec::Codec>>,
}

impl Shared {
    /// The names of the services the console knows, in order.
    fn service_names(&self) -> Vec<String> {
        let services = self.fleet.lock().services(now_ms());
        services.into_iter().map(|v| v.name).collect()
    }
}

/// The routes, relative to the console's base path.
pub(crate) fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/listener", get(listener))
        .route("/listener/hold", post(hold))
        .route("/store", get(store))
        .route("/dlq", get(dead_letters))
        .route("/sagas", get(sagas))
        .route("/topology", get(topology))
        .route("/groups", get(groups))
        .route("/groups/reset", post(reset))
        .route("/saga", get(saga))
        .route("/dlq/redrive", post(redrive))
        .route("/assets/{file}", get(asset))
        .with_state(Arc::new(shared))
        .layer(axum::middleware::map_response(secure))
}

/// No framing (clickjacking), no scripts or styles from elsewhere, no guessing of types.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The page, or its `<main>` alone for htmx's refresh (from `refresh`, when the page has one).
fn answer(
    headers: &HeaderMap,
    s: &Shared,
    title: &str,
    refresh: Option<&str>,
    main: Markup,
) -> Response {
    let markup = if headers.contains_key("hx-request") {
        main
    } else {
        pages::page(&s.base, title, refresh, main)
    };
    // The fragment and the page differ by that header: caches (and the Back button) must
    // not give one for the other.
    ([(header::VARY, "HX-Request")], Html(markup.into_string())).into_response()
}

async fn overview(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let services = s.fleet.lock().services(now_ms());
    let main = pages::overview(&s.base, &services);
    answer(&headers, &s, "Overview", Some("/"), main)
}

/// `?service=…&name=…`.
#[derive(Debug, Deserialize)]
struct Which {
    service: String,
    name: String,
}

async fn listener(
    State(s): State<Arc<Shared>>,
    Query(which): Query<Which>,
    headers: HeaderMap,
) -> Response {
    let services = s.fleet.lock().services(now_ms());
    let found = services
        .iter()
        .find(|svc| svc.name == which.service)
        .and_then(|svc| svc.listeners.iter().find(|l| l.name == which.name));
    let path = pages::listener_href("", &which.service, &which.name);
    match found {
        Some(l) => {
            let csrf = s.guard.acts().then(|| s.guard.csrf());
            let main = pages::listener(&s.base, &which.service, l, csrf);
            answer(&headers, &s, &which.name, Some(&path), main)
        }
        None => {
            let what = format!(
                "No running process of {} reports a listener {}.",
                which.service, which.name
            );
            let page = answer(&headers, &s, "Not found", None, pages::not_found(&what));
            (StatusCode::NOT_FOUND, page).into_response()
        }
    }
}

async fn store(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let services = s.fleet.lock().services(now_ms());
    answer(
        &headers,
        &s,
        "Store",
        Some("/store"),
        pages::store(&services),
    )
}

/// The scripts and style sheets, built into the binary.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        pages::HTMX => (
            include_bytes!("../assets/htmx-2.0.11.min.js"),
            "text/javascript",
        ),
        pages::UPLOT => (
            include_bytes!("../assets/uPlot-1.6.32.iife.min.js"),
            "text/javascript",
        ),
        pages::UPLOT_CSS => (include_bytes!("../assets/uPlot-1.6.32.min.css"), "text/css"),
        pages::SCRIPT => (include_bytes!("../assets/console.js"), "text/javascript"),
        pages::STYLE => (include_bytes!("../assets/console.css"), "text/css"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn dead_letters(
    State(s): State<Arc<Shared>>,
    Query(query): Query<dead_letters::Query>,
    headers: HeaderMap,
) -> Response {
    let title = "Dead letters";
    let Some(service) = query.service.clone() else {
        let index = pages::services_index(title, &s.service_names(), |svc| {
            pages::dlq_href(&s.base, svc)
        });
        return answer(&headers, &s, title, None, index);
    };
    let fail = |status: StatusCode, why: &str| {
        let page = answer(&headers, &s, title, None, dead_letters::refused(why));
        (status, page).into_response()
    };
    let filter = match query.filter() {
        Ok(f) => f,
        Err(why) => return fail(StatusCode::BAD_REQUEST, &why),
    };
    let dlq = format!("{service}.private.dlq");
    let kafka = s.kafka.clone();
    let all = match tokio::task::spawn_blocking(move || kafka.read_all(&dlq)).await {
        Ok(Ok(all)) => all,
        Ok(Err(e)) => return fail(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let letters: Vec<&dlq::DeadLetter> = all.iter().filter(|d| filter.matches(d)).collect();
    let decoded = avro_payloads(s.codec.as_deref(), &letters).await;
    let shown = dead_letters::Shown {
        decoded: &decoded,
        base: &s.base,
        service: &service,
        query: &query,
        letters: &letters,
        total: all.len(),
        csrf: s.guard.acts().then(|| s.guard.csrf()),
        now_ms: now_ms(),
    };
    answer(&headers, &s, title, None, dead_letters::page(&shown))
}

/// The redrive form's fields: the filter's (or one dead letter's `at`, and when the page was
/// made), the token, the anti-forgery value, the rate and whether it is a dry run. (No
/// `Debug`: it holds the token.)
#[derive(Deserialize)]
struct RedriveForm {
    #[serde(flatten)]
    query: dead_letters::Query,
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rate: String,
    dry_run: Option<String>,
}

impl RedriveForm {
    /// The redrive it asks for.
    fn redrive(&self) -> Result<Redrive, String> {
        let per_second = match self.rate.trim() {
            "" => None,
            rate => dlq::rate(rate).map_err(|e| e.to_string())?,
        };
        Ok(Redrive {
            filter: self.query.filter()?,
            dry_run: self.dry_run.is_some(),
            force: false,
            per_second,
        })
    }
}

async fn redrive(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<RedriveForm>,
) -> Response {
    let refuse = |status: StatusCode, why: &str| refused(&headers, &s, status, why);
    let Some(service) = form.query.service.clone() else {
        return refuse(StatusCode::BAD_REQUEST, "which service's dead letters?");
    };
    if let Err(refused) = s.guard.check(&headers, &form.token, &form.csrf) {
        tracing::warn!(
            service,
            why = refused.say(),
            "console: a redrive was refused"
        );
        return refuse(StatusCode::FORBIDDEN, refused.say());
    }
    let how = match form.redrive() {
        Ok(how) => how,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    let Ok(running) = s.redriving.clone().try_lock_owned() else {
        let why = "a redrive is running: wait for its end, then look at the dead letters again";
        return refuse(StatusCode::CONFLICT, why);
    };
    let dlq = format!("{service}.private.dlq");
    let kafka = s.kafka.clone();
    let dry_run = how.dry_run;
    let ran = tokio::task::spawn_blocking(move || {
        let _running = running;
        let mut lines = Vec::new();
        let summary = dlq::redrive(&kafka, &dlq, &how, |o| lines.push(o.to_string()));
        summary.map(|summary| (lines, summary))
    })
    .await;
    match ran {
        Ok(Ok((lines, summary))) => {
            tracing::info!(
                service,
                dry_run,
                redriven = summary.redriven,
                skipped = summary.skipped,
                "console: dead letters redriven"
            );
            let main = dead_letters::redriven(&s.base, &service, &lines, dry_run);
            answer(&headers, &s, "Redriven", None, main)
        }
        Ok(Err(e)) => refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Holds a listener's partition, or lifts its hold: a record on the service's control topic.
async fn hold(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HoldForm>,
) -> Response {
    let refuse = |status: StatusCode, why: &str| refused(&headers, &s, status, why);
    let service = form.service.clone();
    if let Err(refused) = s.guard.check(&headers, &form.token, &form.csrf) {
        tracing::warn!(service, why = refused.say(), "console: a hold was refused");
        return refuse(StatusCode::FORBIDDEN, refused.say());
    }
    let change = match form.change(now_ms()) {
        Ok(change) => change,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
    };
    let kafka = s.kafka.clone();
    let (topic, key) = (change.topic.clone(), change.key.to_string());
    let value = change
        .hold
        .as_ref()
        .map(|h| serde_json::to_vec(h).expect("a hold serializes"));
    let wrote = tokio::task::spawn_blocking(move || {
        // Never to a topic the broker would make on the fly, without compaction (a hold would
        // be dropped with its segment): the service makes its control topic at its start.
        kafka.partitions(&topic)?;
        // The control topic has one partition, which every process reads.
        kafka.put(&topic, 0, key.as_bytes(), value.as_deref())
    })
    .await;
    match wrote {
        Ok(Ok(())) => {
            match &change.hold {
                Some(h) => {
                    tracing::info!(service, hold = %change.key, by = h.by, reason = h.reason, "console: partition held")
                }
                None => tracing::info!(service, hold = %change.key, "console: hold lifted"),
            }
            let title = if change.hold.is_some() {
                "Held"
            } else {
                "Hold lifted"
            };
            let main = crate::holds::done(&s.base, &service, &change);
            answer(&headers, &s, title, None, main)
        }
        Ok(Err(e @ dlq::DlqError::NoTopic(..))) => refuse(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(e)) => refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The service's saga instances, or (without a service) the services to choose from.
async fn sagas(
    State(s): State<Arc<Shared>>,
    Query(query): Query<sagas::Query>,
    headers: HeaderMap,
) -> Response {
    let Some(service) = query.service.clone() else {
        let href = |svc: &str| sagas::sagas_href(&s.base, svc, "");
        let index = pages::services_index("Sagas", &s.service_names(), href);
        return answer(&headers, &s, "Sagas", None, index);
    };
    let show = match sagas::Show::parse(&query.show) {
        Ok(show) => show,
        Err(why) => return refused(&headers, &s, StatusCode::BAD_REQUEST, &why),
    };
    let (instances, undecoded) = match saga_instances(&s, &service).await {
        Ok(read) => read,
        Err((status, why)) => return refused(&headers, &s, status, &why),
    };
    let listed = sagas::Listed {
        base: &s.base,
        service: &service,
        show,
        shown: &query.show,
        instances: &instances,
        undecoded,
        now_ms: now_ms(),
    };
    // Not refreshed by itself: each look reads the whole saga topic.
    answer(&headers, &s, "Sagas", None, sagas::list(&listed))
}

/// One saga instance's timeline.
async fn saga(
    State(s): State<Arc<Shared>>,
    Query(query): Query<sagas::Query>,
    headers: HeaderMap,
) -> Response {
    let Some(service) = query.service.clone() else {
        return refused(
            &headers,
            &s,
            StatusCode::BAD_REQUEST,
            "which service's saga?",
        );
    };
    let (instances, _) = match saga_instances(&s, &service).await {
        Ok(read) => read,
        Err((status, why)) => return refused(&headers, &s, status, &why),
    };
    match instances.get(&query.key) {
        Some(i) => {
            let main = sagas::instance(&s.base, &service, &query.key, i, now_ms());
            answer(&headers, &s, &query.key, None, main)
        }
        None => {
            let what = format!(
                "{service} holds no saga {} (an ended saga is removed once its retention passed).",
                query.key
            );
            let page = answer(&headers, &s, "Not found", None, pages::not_found(&what));
            (StatusCode::NOT_FOUND, page).into_response()
        }
    }
}

/// Every saga instance of `service`, read from its `private.saga` topic; else the answer's
/// status and why.
async fn saga_instances(
    s: &Shared,
    service: &str,
) -> Result<(std::collections::BTreeMap<String, sagas::Instance>, usize), (StatusCode, String)> {
    let topic = format!("{service}.private.saga");
    let kafka = s.kafka.clone();
    match tokio::task::spawn_blocking(move || kafka.read_all(&topic)).await {
        Ok(Ok(records)) => Ok(sagas::instances(&records)),
        Ok(Err(e)) => Err((StatusCode::NOT_FOUND, e.to_string())),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// A page saying why the request is refused, with `status`.
fn refused(headers: &HeaderMap, s: &Shared, status: StatusCode, why: &str) -> Response {
    let page = answer(headers, s, "Refused", None, dead_letters::refused(why));
    (status, page).into_response()
}

/// Which service's groups (`?service=…`).
#[derive(Debug, Deserialize)]
struct OfService {
    service: Option<String>,
}

/// The service's consumer groups, or (without a service) the services to choose from.
async fn groups(
    State(s): State<Arc<Shared>>,
    Query(of): Query<OfService>,
    headers: HeaderMap,
) -> Response {
    let title = "Consumer groups";
    let Some(service) = of.service else {
        let index = pages::services_index(title, &s.service_names(), |svc| {
            offsets::groups_href(&s.base, svc)
        });
        return answer(&headers, &s, title, None, index);
    };
    let (kafka, fleet) = (s.kafka.clone(), s.fleet.clone());
    let prefix = format!("{service}-");
    // Names may hold `-`: the groups of a service named `<service>-…` are its, not these.
    let longer: Vec<String> = s
        .service_names()
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .map(|name| format!("{name}-"))
        .collect();
    let read =
        tokio::task::spawn_blocking(move || -> Result<Vec<offsets::GroupView>, GroupError> {
            let mut views = Vec::new();
            let ours = engine::groups_of(&kafka, &prefix)?
                .into_iter()
                .filter(|(name, _)| !longer.iter().any(|l| name.starts_with(l)));
            for (name, members) in ours {
                let mut topics = Vec::new();
                // Not locked while the broker is asked.
                let known = fleet.lock().topics_of(&name);
                for topic in known {
                    let committed = engine::committed(&kafka, &name, &topic)?;
                    let offsets = committed
                        .elements_for_topic(&topic)
                        .iter()
                        .map(|e| (e.partition(), e.offset().to_raw().filter(|o| *o >= 0)))
                        .collect();
                    topics.push((topic, offsets));
                }
                views.push(offsets::GroupView {
                    name,
                    members,
                    topics,
                });
            }
            Ok(views)
        })
        .await;
    match read {
        Ok(Ok(views)) => {
            let csrf = s.guard.acts().then(|| s.guard.csrf());
            let main = offsets::page(&s.base, &service, &views, csrf);
            answer(&headers, &s, title, None, main)
        }
        Ok(Err(e)) => refused(&headers, &s, StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(e) => refused(
            &headers,
            &s,
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        ),
    }
}

/// Moves a stopped group's offsets to a time (a dry run says where, moving nothing).
async fn reset(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<offsets::ResetForm>,
) -> Response {
    let service = form.service.clone();
    if let Err(refusal) = s.guard.check(&headers, &form.token, &form.csrf) {
        tracing::warn!(
            service,
            why = refusal.say(),
            "console: a group reset was refused"
        );
        return refused(&headers, &s, StatusCode::FORBIDDEN, refusal.say());
    }
    let reset = match form.reset() {
        Ok(reset) => reset,
        Err(why) => return refused(&headers, &s, StatusCode::BAD_REQUEST, &why),
    };
    let reads = s.fleet.lock().topics_of(&reset.group);
    if !reads.is_empty() && !reads.contains(&reset.topic) {
        let why = format!(
            "consumer group `{}` reads {}, not `{}`",
            reset.group,
            reads.join(", "),
            reset.topic
        );
        return refused(&headers, &s, StatusCode::BAD_REQUEST, &why);
    }
    let (kafka, r) = (s.kafka.clone(), reset.clone());
    let ran = tokio::task::spawn_blocking(move || {
        let moves = engine::plan(&kafka, &r.group, &r.topic, r.target)?;
        if !r.dry_run {
            engine::apply(&kafka, &r.group, &r.topic, &moves)?;
        }
        Ok::<_, GroupError>(moves)
    })
    .await;
    match ran {
        Ok(Ok(moves)) => {
            tracing::info!(
                service,
                group = reset.group,
                topic = reset.topic,
                dry_run = reset.dry_run,
                ?moves,
                "console: group offsets moved"
            );
            let main = offsets::moved(&s.base, &service, &reset, &moves);
            answer(&headers, &s, "Group offsets", None, main)
        }
        Ok(Err(e @ GroupError::Members { .. })) => {
            tracing::warn!(
                service,
                group = reset.group,
                "console: a group reset was refused: the group has members"
            );
            refused(&headers, &s, StatusCode::CONFLICT, &e.to_string())
        }
        Ok(Err(e)) => refused(&headers, &s, StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(e) => refused(
            &headers,
            &s,
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        ),
    }
}

/// The topology with live rates.
async fn topology(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let picture = {
        let fleet = s.fleet.lock();
        topology::build(&fleet.services(now_ms()), |group| fleet.topics_of(group))
    };
    answer(
        &headers,
        &s,
        "Topology",
        Some("/topology"),
        topology::page(&picture),
    )
}

/// How long a page may spend decoding Avro payloads (a registry out of reach costs its
/// timeout per schema).
const DECODE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The Avro payloads of `letters` (content type `application/avro`) as pretty JSON, or why
/// not, by `(partition, offset)`; nothing without a registry (the page then says which schema
/// each was written with). A schema that failed is not asked for again, a registry out of
/// reach stops the decoding, and so does [`DECODE_WITHIN`]: the page shows the rest by their
/// schema id.
async fn avro_payloads(
    codec: Option<&atoll::codec::Codec>,
    letters: &[&dlq::DeadLetter],
) -> std::collections::HashMap<(i32, i64), String> {
    let mut decoded = std::collections::HashMap::new();
    let Some(codec) = codec else {
        return decoded;
    };
    let deadline = tokio::time::Instant::now() + DECODE_WITHIN;
    let mut failed: std::collections::HashMap<[u8; 4], String> = Default::default();
    for d in letters {
        let avro = d.header(atoll::envelope::CONTENT_TYPE) == Some(atoll::codec::AVRO);
        let Some(payload @ [0, a, b, c, e, ..]) = d.payload.as_deref().filter(|_| avro) else {
            continue;
        };
        let id = [*a, *b, *c, *e];
        let text = match failed.get(&id) {
            Some(why) => why.clone(),
            None => match tokio::time::timeout_at(deadline, codec.avro_to_json(payload)).await {
                Ok(Ok(v)) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                Ok(Err(e @ atoll::codec::DecodeError::Unavailable(_))) => {
                    decoded.insert((d.partition, d.offset), format!("Avro, not decoded: {e}"));
                    break;
                }
                Ok(Err(e)) => {
                    let why = format!("Avro, not decoded: {e}");
                    failed.insert(id, why.clone());
                    why
                }
                Err(_) => break,
            },
        };
        decoded.insert((d.partition, d.offset), text);
    }
    decoded
}
