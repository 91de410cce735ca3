//! Payload codecs: JSON, and Avro in the Confluent wire format with a schema registry.
//!
//! A service *encodes* with the codec it is configured with (`service.codec`); it *decodes*
//! by the record's `content-type`, so consumers read both while producers migrate.
//!
//! Avro records are `0x00`, the 4-byte big-endian schema id, then the Avro datum. The schema
//! of an event is derived from its Rust type (`#[derive(AvroSchema)]` next to
//! `#[derive(Event)]`) and named `<company>.<namespace>.<service>.<event>_v<version>`; its
//! subject follows [`SubjectStrategy`] (by default `<topic>-<record name>`, since one facts
//! topic carries several types). Readers resolve the writer's schema (found by id) against
//! their own, so older and newer compatible versions read each other; resolved schemas and
//! registry answers are cached.

pub(crate) mod registry;

pub use crate::contract::codec::{schema_of, subject, CodecKind, SubjectStrategy, AVRO, JSON};
pub use registry::DevRegistry;

use parking_lot::Mutex;
use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::get_supplied_schema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;

use crate::config::{Registry, RegistryAuth, SchemaRegistryConfig};
use crate::contract::codec::record_name;
use crate::contract::event::Event;
use crate::contract::topic::TopicName;
use crate::error::{Error, Result};

/// Why a payload did not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Bad input: wrong magic byte, unknown schema id, incompatible or malformed payload.
    #[error("{0}")]
    Bad(String),
    /// The registry could not be asked: try again later.
    #[error("{0} (the schema registry could not be asked)")]
    Unavailable(String),
}

/// The codecs of a process: what services produce with, and what reads Avro records.
///
/// The runtime builds one from the configuration; tools and benchmarks may build their own.
#[derive(Debug)]
pub struct Codec {
    produce: CodecKind,
    avro: Option<Arc<Avro>>,
}

/// A registered schema's id and its datum writer.
type Writer = (u32, Arc<GenericDatumWriter<'static>>);

/// A datum reader from one writer schema to one type (resolving only when they differ).
struct Reader {
    datum: GenericDatumReader<'static>,
}

struct Avro {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    writers: Mutex<HashMap<(String, TypeId), Writer>>,
    readers: Mutex<HashMap<(u32, TypeId), Arc<Reader>>>,
    auto_register: bool,
    strategy: SubjectStrategy,
}

impl std::fmt::Debug for Avro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Avro")
            .field("auto_register", &self.auto_register)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

fn registry_error(e: SRCError) -> Error {
    if e.retriable {
        Error::Registry(e.to_string())
    } else {
        Error::Schema(e.to_string())
    }
}

impl Codec {
    /// Produces with `produce`; reads Avro through `registry`, if any (see
    /// [`SchemaRegistryConfig::resolve`], or [`Registry::open`] for a registry without TLS
    /// settings or login), with `settings`' subject strategy, registration and allocation
    /// limit.
    ///
    /// The allocation limit is apache-avro's, set once per process: the first codec made sets
    /// it.
    pub fn new(
        produce: CodecKind,
        registry: Option<&Registry>,
        settings: &SchemaRegistryConfig,
    ) -> Result<Self> {
        let (auto_register, strategy) = (settings.auto_register, settings.subject_strategy);
        let limit = apache_avro::util::max_allocation_bytes(settings.max_allocation_bytes);
        if limit != settings.max_allocation_bytes {
            tracing::warn!(
                limit,
                asked = settings.max_allocation_bytes,
                "schema_registry.max_allocation_bytes: an earlier codec of this process set \
                 Avro's allocation limit, which is set once per process"
            );
        }
        let avro =
            match registry {
                None if produce == CodecKind::Avro => return Err(Error::Config(
                    "service.codec = avro needs schema_registry.url (ATOLL_SCHEMA_REGISTRY__URL)"
                        .into(),
                )),
                None => None,
                Some(registry) => {
                    let settings = || {
                        let timeout = std::time::Duration::from_secs(5);
                        let mut builder = SrSettings::new_builder(registry.url().to_owned());
                        builder.set_timeout(timeout);
                        match registry.auth() {
                            RegistryAuth::None => {}
                            RegistryAuth::Basic { username, password } => {
                                builder.set_basic_authorization(username, Some(password.expose()));
                            }
                            RegistryAuth::Bearer(token) => {
                                builder.set_token_authorization(token.expose());
                            }
                        }
                        let fail = |e: String| {
                            Error::Config(format!("schema registry {}: {e}", registry.shown()))
                        };
                        builder
                            .build_with(registry.client(timeout).map_err(fail)?)
                            .map_err(|e| fail(e.to_string()))
                    };
                    Some(Arc::new(Avro {
                        encoder: AvroEncoder::new(settings()?),
                        decoder: AvroDecoder::new(settings()?),
                        writers: Mutex::default(),
                        readers: Mutex::default(),
                        auto_register,
                        strategy,
                    }))
                }
            };
        Ok(Self { produce, avro })
    }

    /// The same codecs, producing with `produce` (sharing the registry client and its caches).
    pub fn producing(&self, produce: CodecKind) -> Result<Self> {
        if produce == CodecKind::Avro && self.avro.is_none() {
            return Err(Error::Config(
                "the Avro codec needs schema_registry.url (ATOLL_SCHEMA_REGISTRY__URL)".into(),
            ));
        }
        Ok(Self {
            produce,
            avro: self.avro.clone(),
        })
    }

    /// Encodes `event` for `topic`; returns the payload and its content type.
    pub async fn encode<E: Event>(
        &self,
        topic: &TopicName,
        event: &E,
    ) -> Result<(Vec<u8>, &'static str)> {
        let ce_type = E::ce_type();
        match (self.produce, &self.avro) {
            (CodecKind::Json, _) => serde_json::to_vec(event)
                .map(|p| (p, JSON))
                .map_err(|source| Error::Encode { ce_type, source }),
            (CodecKind::Avro, None) => unreachable!("checked at construction"),
            (CodecKind::Avro, Some(avro)) => {
                let (registered, writer) = avro.writer::<E>(topic).await?;
                let mut bytes = Vec::with_capacity(128);
                bytes.push(0);
                bytes.extend_from_slice(&registered.to_be_bytes());
                writer.write_ser(&mut bytes, event).map_err(|e| {
                    Error::Schema(format!(
                        "`{ce_type}` does not encode with schema {registered}: {e}"
                    ))
                })?;
                Ok((bytes, AVRO))
            }
        }
    }

    /// A payload in the schema registry's Avro wire format as JSON, decoded with the writer's
    /// schema (fetched from the registry by the id in its header, then kept): for tools that
    /// show records whose type they do not know, as the operator console's dead-letter page.
    ///
    /// # Errors
    /// No registry is configured, the payload is not in the wire format, its schema cannot be
    /// fetched, or it does not decode with it.
    pub async fn avro_to_json(
        &self,
        payload: &[u8],
    ) -> std::result::Result<serde_json::Value, DecodeError> {
        let Some(avro) = &self.avro else {
            return Err(DecodeError::Bad(
                "an Avro record, but no schema_registry.url is configured to read it".into(),
            ));
        };
        if payload.len() < 5 || payload[0] != 0 {
            return Err(DecodeError::Bad(
                "not the Confluent wire format (a zero byte, then a 4-byte schema id)".into(),
            ));
        }
        let decoded = avro.decoder.decode(Some(payload)).await.map_err(|e| {
            let why = format!("the Avro record does not decode: {}", e.error);
            if e.retriable {
                DecodeError::Unavailable(why)
            } else {
                DecodeError::Bad(why)
            }
        })?;
        serde_json::Value::try_from(decoded.value)
            .map_err(|e| DecodeError::Bad(format!("the Avro value has no JSON form: {e}")))
    }

    /// Decodes a payload of `content_type` (JSON when absent).
    pub async fn decode<E: Event>(
        &self,
        content_type: Option<&str>,
        payload: &[u8],
    ) -> std::result::Result<E, DecodeError> {
        if content_type != Some(AVRO) {
            return serde_json::from_slice(payload).map_err(|e| {
                DecodeError::Bad(format!(
                    "payload does not decode as `{}`: {e}",
                    E::ce_type()
                ))
            });
        }
        let Some(avro) = &self.avro else {
            return Err(DecodeError::Bad(
                "an Avro record, but no schema_registry.url is configured to read it".into(),
            ));
        };
        let (magic, id, datum) = match payload {
            [magic, a, b, c, d, datum @ ..] => {
                (*magic, u32::from_be_bytes([*a, *b, *c, *d]), datum)
            }
            _ => {
                return Err(DecodeError::Bad(format!(
                    "Avro payload of {} bytes is shorter than the wire format's 5-byte header",
                    payload.len()
                )))
            }
        };
        if magic != 0 {
            return Err(DecodeError::Bad(format!(
                "not the Confluent wire format: magic byte {magic:#04x}, expected 0x00"
            )));
        }
        let reader = avro.reader::<E>(id).await?;
        let value = reader.datum.read_value(&mut &datum[..]).map_err(|e| {
            DecodeError::Bad(format!(
                "the writer's schema {id} does not resolve to `{}`'s: {e}",
                E::ce_type()
            ))
        })?;
        apache_avro::from_value(&value).map_err(|e| {
            DecodeError::Bad(format!(
                "Avro value does not decode as `{}`: {e}",
                E::ce_type()
            ))
        })
    }
}

impl Avro {
    /// The datum reader from schema `id` to `E`'s schema, resolved once per pair.
    async fn reader<E: Event>(&self, id: u32) -> std::result::Result<Arc<Reader>, DecodeError> {
        let key = (id, TypeId::of::<E>());
        if let Some(r) = self.readers.lock().get(&key) {
            return Ok(r.clone());
        }
        let writer = self.decoder.get_schema(id).await.map_err(|e| {
            if e.retriable {
                DecodeError::Unavailable(e.to_string())
            } else {
                DecodeError::Bad(format!("schema id {id}: {e}"))
            }
        })?;
        let reader = schema_of::<E>().map_err(|e| DecodeError::Bad(e.to_string()))?;
        // Leaked on a cache miss (readers borrow their schemata): once per (schema id, type),
        // or a few times when concurrent misses race; bounded by the schemas a process meets.
        let direct = writer.parsed.canonical_form() == reader.canonical_form();
        let writer: &'static Schema = Box::leak(Box::new(writer.parsed.clone()));
        let resolve = |e| DecodeError::Bad(format!("schema id {id} does not resolve: {e}"));
        let datum = if direct {
            GenericDatumReader::builder(writer)
                .build()
                .map_err(resolve)?
        } else {
            let reader: &'static Schema = Box::leak(Box::new((*reader).clone()));
            GenericDatumReader::builder(writer)
                .reader_schema(reader)
                .build()
                .map_err(resolve)?
        };
        let built = Arc::new(Reader { datum });
        self.readers.lock().insert(key, built.clone());
        Ok(built)
    }

    /// The registered schema of `E` on `topic` and its datum writer: registered (or looked up)
    /// and resolved once per topic and type, so that two versions of one event in a process
    /// (during a migration, in tests) keep their own schemas.
    async fn writer<E: Event>(
        &self,
        topic: &TopicName,
    ) -> Result<(u32, Arc<GenericDatumWriter<'static>>)> {
        let key = (topic.to_string(), TypeId::of::<E>());
        if let Some(w) = self.writers.lock().get(&key) {
            return Ok(w.clone());
        }
        let schema = schema_of::<E>()?;
        let strategy = self.strategy(topic, &schema);
        let cache_key = format!(
            "{}#{}",
            strategy.get_subject().map_err(registry_error)?,
            std::any::type_name::<E>()
        );
        let registered = self
            .encoder
            .get_schema_and_id(&cache_key, strategy)
            .await
            .map_err(registry_error)?;
        // Leaked on a cache miss (writers borrow their schema): once per topic and type, or a
        // few times when concurrent misses race; bounded by the events a process produces.
        let schema: &'static Schema = Box::leak(Box::new(registered.parsed.clone()));
        let writer = GenericDatumWriter::builder(schema).build().map_err(|e| {
            Error::Schema(format!("schema {} does not resolve: {e}", registered.id))
        })?;
        let entry = (registered.id, Arc::new(writer));
        self.writers.lock().insert(key, entry.clone());
        Ok(entry)
    }

    fn strategy(&self, topic: &TopicName, schema: &Schema) -> SubjectNameStrategy {
        let topic = topic.to_string();
        let name = record_name(schema);
        match (self.auto_register, self.strategy) {
            (true, SubjectStrategy::TopicRecordName) => {
                SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
                    topic,
                    get_supplied_schema(schema),
                )
            }
            (true, SubjectStrategy::TopicName) => SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic,
                false,
                get_supplied_schema(schema),
            ),
            (true, SubjectStrategy::RecordName) => {
                SubjectNameStrategy::RecordNameStrategyWithSchema(get_supplied_schema(schema))
            }
            (false, SubjectStrategy::TopicRecordName) => {
                SubjectNameStrategy::TopicRecordNameStrategy(topic, name)
            }
            (false, SubjectStrategy::TopicName) => {
                SubjectNameStrategy::TopicNameStrategy(topic, false)
            }
            (false, SubjectStrategy::RecordName) => SubjectNameStrategy::RecordNameStrategy(name),
        }
    }
}
