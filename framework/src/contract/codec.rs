//! How payloads are encoded, as far as the contract goes: the codecs' content types, the Avro
//! schema derived from an event type and its registry subject. The codecs themselves live in
//! the runtime (`codec/`).

use parking_lot::Mutex;
use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use apache_avro::schema::{Name, RecordSchema};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use super::event::Event;
use super::service::Service;
use super::topic::TopicName;
use super::ContractError;

/// The content type of the JSON codec.
pub const JSON: &str = "application/json";

/// The content type of Avro records in the Confluent wire format.
pub const AVRO: &str = "application/avro";

/// Which codec a service produces with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodecKind {
    /// `application/json`.
    #[default]
    Json,
    /// `application/avro`: Confluent wire format, schemas in the registry.
    Avro,
}

/// How a schema's registry subject is named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectStrategy {
    /// `<topic>-<record name>`: several types per topic (the default).
    #[default]
    TopicRecordName,
    /// `<topic>-value`: one type per topic.
    TopicName,
    /// `<record name>`: one schema per type across topics.
    RecordName,
}

pub(crate) fn record_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => r.name.fullname(None),
        _ => String::new(),
    }
}

/// The registry subject of `E`'s schema on `topic` under `strategy`.
pub fn subject<E: Event>(
    topic: &TopicName,
    strategy: SubjectStrategy,
) -> Result<String, ContractError> {
    let name = record_name(&*schema_of::<E>()?);
    Ok(match strategy {
        SubjectStrategy::TopicRecordName => format!("{topic}-{name}"),
        SubjectStrategy::TopicName => format!("{topic}-value"),
        SubjectStrategy::RecordName => name,
    })
}

/// `E`'s Avro schema, named `<company>.<namespace>.<service>.<event>_v<version>`; computed once
/// per type.
pub fn schema_of<E: Event>() -> Result<Arc<Schema>, ContractError> {
    static SCHEMAS: OnceLock<Mutex<HashMap<TypeId, Arc<Schema>>>> = OnceLock::new();
    let cache = SCHEMAS.get_or_init(Default::default);
    if let Some(s) = cache.lock().get(&TypeId::of::<E>()) {
        return Ok(s.clone());
    }
    let Some(Schema::Record(record)) = E::avro_schema() else {
        return Err(ContractError::Schema(format!(
            "`{}` has no Avro record schema: add `#[derive(apache_avro::AvroSchema)]` to the event (and depend on `apache-avro`)",
            E::ce_type()
        )));
    };
    let schema = Arc::new(Schema::Record(RecordSchema {
        name: canonical_name::<E>()?,
        ..record
    }));
    cache.lock().insert(TypeId::of::<E>(), schema.clone());
    Ok(schema)
}

fn canonical_name<E: Event>() -> Result<Name, ContractError> {
    let id = <E::Service as Service>::ID;
    let avro = |s: &str| s.replace('-', "_");
    let full = format!(
        "{}.{}.{}.{}_v{}",
        avro(id.company()),
        avro(id.namespace()),
        avro(id.name()),
        E::NAME,
        E::VERSION
    );
    Name::new(full.as_str())
        .map_err(|e| ContractError::Schema(format!("`{full}` is not an Avro name: {e}")))
}

/// Finds a type's derived Avro schema, if it has one (autoref specialisation, used by the code
/// `#[derive(Event)]` generates).
#[doc(hidden)]
#[derive(Debug)]
pub struct AvroProbe<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Clone for AvroProbe<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for AvroProbe<T> {}

impl<T> AvroProbe<T> {
    #[doc(hidden)]
    pub fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> Default for AvroProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Chosen when the type derives `AvroSchema`.
#[doc(hidden)]
pub trait AvroProbeDerived {
    fn avro_schema(self) -> Option<Schema>;
}

impl<T: apache_avro::AvroSchema> AvroProbeDerived for &AvroProbe<T> {
    fn avro_schema(self) -> Option<Schema> {
        Some(T::get_schema())
    }
}

/// Chosen otherwise.
#[doc(hidden)]
pub trait AvroProbeNone {
    fn avro_schema(self) -> Option<Schema>;
}

impl<T> AvroProbeNone for AvroProbe<T> {
    fn avro_schema(self) -> Option<Schema> {
        None
    }
}
