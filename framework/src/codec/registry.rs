//! A development schema registry: the part of the Confluent Schema Registry API that atoll and
//! its tools use, in memory, in-process.
//!
//! **Development and tests only**: nothing is persisted, the only login is an optional basic
//! auth user ([`DevRegistry::start_with_login`], to test clients' logins), and only Avro
//! schemas are supported. Production uses Confluent's registry (see `docker-compose.yml`).
//!
//! Endpoints: `GET /subjects`, `GET /subjects/{s}/versions`,
//! `GET /subjects/{s}/versions/{v|latest}`, `POST /subjects/{s}/versions` (register, checked
//! against the subject's compatibility level), `POST /subjects/{s}` (look up),
//! `GET /schemas/ids/{id}`, `POST /compatibility/subjects/{s}/versions/{v|latest}`,
//! `GET|PUT /config` and `GET|PUT /config/{s}`. Ids are global; registering a schema that a
//! subject already has returns its id.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use apache_avro::Schema;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::Secret;
use crate::contract::compat::Compatibility;
use crate::error::{Error, Result};
use crate::ops::http::Server;

#[derive(Debug)]
struct Store {
    /// Schema text by id - 1.
    schemas: Vec<(String, Schema)>,
    /// Ids by subject, in version order.
    subjects: BTreeMap<String, Vec<u32>>,
    global: Compatibility,
    config: BTreeMap<String, Compatibility>,
}

type Shared = Arc<Mutex<Store>>;

/// A running development registry.
#[derive(Debug)]
pub struct DevRegistry {
    url: String,
    /// Stops serving when dropped.
    _server: Server,
}

impl DevRegistry {
    /// Starts a registry on a free loopback port (BACKWARD compatibility by default).
    pub async fn start() -> Result<Self> {
        Self::serve(None).await
    }

    /// As [`start`](Self::start), answering only requests that log in as `username` with
    /// `password` (basic auth); others get `401`, as Confluent's registry answers them.
    pub async fn start_with_login(username: &str, password: Secret) -> Result<Self> {
        Self::serve(Some((username.to_owned(), password))).await
    }

    async fn serve(login: Option<(String, Secret)>) -> Result<Self> {
        let store = Arc::new(Mutex::new(Store {
            schemas: Vec::new(),
            subjects: BTreeMap::new(),
            global: Compatibility::Backward,
            config: BTreeMap::new(),
        }));
        let app = Router::new()
            .route("/subjects", get(subjects))
            .route("/subjects/{subject}", post(lookup))
            .route("/subjects/{subject}/versions", get(versions).post(register))
            .route("/subjects/{subject}/versions/{version}", get(version))
            .route("/schemas/ids/{id}", get(by_id))
            .route(
                "/compatibility/subjects/{subject}/versions/{version}",
                post(compatibility),
            )
            .route("/config", get(global_config).put(set_global_config))
            .route(
                "/config/{subject}",
                get(subject_config).put(set_subject_config),
            )
            .with_state(store);
        let app = match login {
            Some(login) => {
                let expected = Arc::new(basic(&login.0, login.1.expose()));
                app.layer(axum::middleware::from_fn(move |request, next| {
                    logged_in(expected.clone(), request, next)
                }))
            }
            None => app,
        };
        let server = Server::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            app,
            &crate::config::HttpConfig::default(),
            "the development registry",
        )
        .await
        .map_err(|e| Error::Registry(format!("cannot bind the development registry: {e}")))?;
        let url = format!("http://{}", server.addr());
        tracing::info!(
            url,
            "development schema registry started (in memory, for development only)"
        );
        Ok(Self {
            url,
            _server: server,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The `Authorization` header of a basic auth login.
fn basic(username: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Passes a request that logs in as `expected`; answers others `401`.
async fn logged_in(
    expected: Arc<String>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given == Some(expected.as_str()) {
        return next.run(request).await;
    }
    error(StatusCode::UNAUTHORIZED, 401, "Unauthorized")
}

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error_code": code, "message": message.into()})),
    )
        .into_response()
}

fn subject_not_found(subject: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        40401,
        format!("Subject '{subject}' not found."),
    )
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

/// A rejected request's response (boxed: responses are large).
type Rejected = Box<Response>;

fn reject(status: StatusCode, code: u32, message: impl Into<String>) -> Rejected {
    Box::new(error(status, code, message))
}

fn parse(body: &SchemaBody) -> std::result::Result<Schema, Rejected> {
    if body.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
        return Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            "only AVRO schemas are supported by the development registry",
        )));
    }
    Schema::parse_str(&body.schema).map_err(|e| {
        reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema: {e}"),
        )
    })
}

impl Store {
    fn level(&self, subject: &str) -> Compatibility {
        self.config.get(subject).copied().unwrap_or(self.global)
    }

    fn id_of(&self, schema: &Schema) -> Option<u32> {
        let canonical = schema.canonical_form();
        self.schemas
            .iter()
            .position(|(_, s)| s.canonical_form() == canonical)
            .map(|i| i as u32 + 1)
    }

    fn versions(&self, subject: &str) -> Option<&Vec<u32>> {
        self.subjects.get(subject).filter(|v| !v.is_empty())
    }

    /// `(version, id)` of `version` (`latest` or a number) of `subject`.
    fn find(&self, subject: &str, version: &str) -> std::result::Result<(usize, u32), Rejected> {
        let ids = self
            .versions(subject)
            .ok_or_else(|| Box::new(subject_not_found(subject)))?;
        let v = match version {
            "latest" | "-1" => ids.len(),
            n => n.parse().map_err(|_| {
                reject(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42202,
                    format!("invalid version `{n}`"),
                )
            })?,
        };
        let id = ids.get(v.wrapping_sub(1)).ok_or_else(|| {
            reject(
                StatusCode::NOT_FOUND,
                40402,
                format!("Version {v} not found."),
            )
        })?;
        Ok((v, *id))
    }

    fn registered(&self, subject: &str, version: usize, id: u32) -> Response {
        let schema = &self.schemas[id as usize - 1].0;
        Json(json!({"subject": subject, "version": version, "id": id, "schema": schema}))
            .into_response()
    }

    fn earlier(&self, subject: &str) -> Vec<Schema> {
        self.subjects
            .get(subject)
            .into_iter()
            .flatten()
            .map(|id| self.schemas[*id as usize - 1].1.clone())
            .collect()
    }
}

async fn subjects(State(store): State<Shared>) -> Response {
    let store = store.lock();
    let names: Vec<&String> = store
        .subjects
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k)
        .collect();
    Json(names).into_response()
}

async fn versions(State(store): State<Shared>, Path(subject): Path<String>) -> Response {
    let store = store.lock();
    match store.versions(&subject) {
        Some(ids) => Json((1..=ids.len()).collect::<Vec<_>>()).into_response(),
        None => subject_not_found(&subject),
    }
}

async fn version(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let store = store.lock();
    match store.find(&subject, &version) {
        Ok((v, id)) => store.registered(&subject, v, id),
        Err(e) => *e,
    }
}

async fn register(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Json(body): Json<SchemaBody>,
) -> Response {
    let schema = match parse(&body) {
        Ok(s) => s,
        Err(e) => return *e,
    };
    let mut store = store.lock();
    let existing = store.id_of(&schema);
    if let Some(id) = existing {
        if store
            .subjects
            .get(&subject)
            .is_some_and(|ids| ids.contains(&id))
        {
            return Json(json!({"id": id})).into_response();
        }
    }
    if let Some(why) = store
        .level(&subject)
        .check(&schema, &store.earlier(&subject))
    {
        return error(StatusCode::CONFLICT, 409, format!("Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {why}"));
    }
    let id = existing.unwrap_or_else(|| {
        store.schemas.push((body.schema.clone(), schema));
        store.schemas.len() as u32
    });
    store.subjects.entry(subject).or_default().push(id);
    Json(json!({"id": id})).into_response()
}

async fn lookup(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Json(body): Json<SchemaBody>,
) -> Response {
    let schema = match parse(&body) {
        Ok(s) => s,
        Err(e) => return *e,
    };
    let store = store.lock();
    let Some(ids) = store.versions(&subject) else {
        return subject_not_found(&subject);
    };
    match store
        .id_of(&schema)
        .and_then(|id| ids.iter().position(|i| *i == id).map(|v| (v + 1, id)))
    {
        Some((v, id)) => store.registered(&subject, v, id),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn by_id(State(store): State<Shared>, Path(id): Path<u32>) -> Response {
    let store = store.lock();
    match store.schemas.get((id as usize).wrapping_sub(1)) {
        Some((text, _)) => Json(json!({"schema": text})).into_response(),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn compatibility(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
    Json(body): Json<SchemaBody>,
) -> Response {
    let schema = match parse(&body) {
        Ok(s) => s,
        Err(e) => return *e,
    };
    let store = store.lock();
    let (v, _) = match store.find(&subject, &version) {
        Ok(found) => found,
        Err(e) => return *e,
    };
    let earlier = &store.earlier(&subject)[..v];
    match store.level(&subject).check(&schema, earlier) {
        None => Json(json!({"is_compatible": true})).into_response(),
        Some(why) => Json(json!({"is_compatible": false, "messages": [why]})).into_response(),
    }
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: Compatibility,
}

async fn global_config(State(store): State<Shared>) -> Response {
    let level = store.lock().global;
    Json(json!({"compatibilityLevel": level})).into_response()
}

async fn set_global_config(State(store): State<Shared>, Json(body): Json<ConfigBody>) -> Response {
    store.lock().global = body.compatibility;
    Json(json!({"compatibility": body.compatibility})).into_response()
}

async fn subject_config(State(store): State<Shared>, Path(subject): Path<String>) -> Response {
    let store = store.lock();
    match store.config.get(&subject) {
        Some(level) => Json(json!({"compatibilityLevel": level})).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        ),
    }
}

async fn set_subject_config(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    Json(body): Json<ConfigBody>,
) -> Response {
    store.lock().config.insert(subject, body.compatibility);
    Json(json!({"compatibility": body.compatibility})).into_response()
}
