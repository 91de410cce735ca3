//! Events as contracts: the Avro schema of every event, generated from the code and checked
//! in (`<dir>/<subject>.avsc`), and a check that a changed schema stays compatible with the
//! checked-in one.
//!
//! The level is BACKWARD (the new schema reads data written with the old one) unless
//! `<dir>/compatibility.json` names another for the event's topic, e.g.
//! `{"acme.shop.orders.events": "FULL"}`. A violation names the subject, the rule and what
//! the Avro check found (the field, for a field).

use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::Schema;

use super::codec::{schema_of, subject, SubjectStrategy};
use super::compat::Compatibility;
use super::event::Event;
use super::topic::TopicName;
use super::ContractError;

/// One event's contract: its topic, registry subject and schema.
#[derive(Debug, Clone)]
pub struct Contract {
    /// The topic the event travels on.
    pub topic: TopicName,
    /// Its registry subject (`<topic>-<record name>`).
    pub subject: String,
    /// Its schema, from the code.
    pub schema: Schema,
}

impl Contract {
    /// The contract of event `E` (which must derive `AvroSchema`).
    pub fn of<E: Event>() -> Result<Self, ContractError> {
        let topic = E::topic();
        Ok(Self {
            subject: subject::<E>(&topic, SubjectStrategy::TopicRecordName)?,
            schema: (*schema_of::<E>()?).clone(),
            topic,
        })
    }

    fn file(&self) -> String {
        format!("{}.avsc", self.subject)
    }

    fn render(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.schema).expect("serializable");
        s.push('\n');
        s
    }
}

/// Writes every contract's schema into `dir`, and removes schemas no contract has.
pub fn write(dir: &Path, contracts: &[Contract]) -> Result<(), ContractError> {
    let io = |source: std::io::Error| ContractError::Io {
        what: format!("writing {}", dir.display()),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let stale = path.extension().is_some_and(|e| e == "avsc")
            && !contracts
                .iter()
                .any(|c| path.file_name().is_some_and(|f| *f == *c.file()));
        if stale {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    for c in contracts {
        std::fs::write(dir.join(c.file()), c.render()).map_err(io)?;
    }
    Ok(())
}

/// Checks the contracts against the schemas in `dir`: `Err` lists every schema that changed
/// incompatibly (naming subject, rule and field), or that changed compatibly or is new but was
/// not written (run the write command).
pub fn check(dir: &Path, contracts: &[Contract]) -> Result<(), Vec<String>> {
    let levels: BTreeMap<String, Compatibility> =
        match std::fs::read_to_string(dir.join("compatibility.json")) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| vec![format!("{}/compatibility.json: {e}", dir.display())])?,
            Err(_) => BTreeMap::new(),
        };
    let mut problems = Vec::new();
    for c in contracts {
        let path = dir.join(c.file());
        let Ok(text) = std::fs::read_to_string(&path) else {
            problems.push(format!(
                "{}: new event, no checked-in schema yet",
                c.subject
            ));
            continue;
        };
        let old = match Schema::parse_str(&text) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: unreadable: {e}", path.display()));
                continue;
            }
        };
        let level = levels
            .get(c.topic.as_str())
            .copied()
            .unwrap_or(Compatibility::Backward);
        if let Some(why) = level.check(&c.schema, std::slice::from_ref(&old)) {
            problems.push(format!("{}: breaks {why}", c.subject));
        } else if text != c.render() {
            problems.push(format!(
                "{}: changed compatibly, but the checked-in schema is out of date",
                c.subject
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(fields: &str) -> Contract {
        let schema = Schema::parse_str(&format!(
            r#"{{"type":"record","name":"order_placed_v1","namespace":"acme.shop.orders","fields":[{fields}]}}"#
        ))
        .unwrap();
        Contract {
            topic: "acme.shop.orders.events".parse().unwrap(),
            subject: "acme.shop.orders.events-acme.shop.orders.order_placed_v1".into(),
            schema,
        }
    }

    #[test]
    fn breaking_changes_name_the_rule_and_the_field() {
        let dir = std::env::temp_dir().join(format!("atoll-contracts-{}", std::process::id()));
        let v1 = contract(r#"{"name":"order_id","type":"string"},{"name":"note","type":"string"}"#);
        write(&dir, std::slice::from_ref(&v1)).unwrap();
        assert_eq!(check(&dir, std::slice::from_ref(&v1)), Ok(()));

        // A field added without a default: the new schema cannot read old data.
        let added = contract(
            r#"{"name":"order_id","type":"string"},{"name":"note","type":"string"},{"name":"qty","type":"int"}"#,
        );
        let e = check(&dir, &[added]).unwrap_err();
        assert!(e[0].contains("Backward") && e[0].contains("'qty'"), "{e:?}");
        // A type changed.
        let retyped =
            contract(r#"{"name":"order_id","type":"long"},{"name":"note","type":"string"}"#);
        let e = check(&dir, &[retyped]).unwrap_err();
        assert!(e[0].contains("order_id"), "{e:?}");
        // A field removed: fine under BACKWARD (only drift is reported), broken under FULL.
        let removed = contract(r#"{"name":"order_id","type":"string"}"#);
        let e = check(&dir, std::slice::from_ref(&removed)).unwrap_err();
        assert!(e[0].contains("out of date"), "{e:?}");
        std::fs::write(
            dir.join("compatibility.json"),
            r#"{"acme.shop.orders.events": "FULL"}"#,
        )
        .unwrap();
        let e = check(&dir, &[removed]).unwrap_err();
        assert!(e[0].contains("Full") && e[0].contains("'note'"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
