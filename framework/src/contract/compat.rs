//! Schema compatibility levels, as the Confluent Schema Registry names them, and the check
//! that a new schema keeps a level against earlier ones.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// A compatibility level, as the Confluent registry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// The new schema reads data written with the latest one.
    Backward,
    /// … with every earlier one.
    BackwardTransitive,
    /// Data written with the new schema is read by the latest one.
    Forward,
    /// … by every earlier one.
    ForwardTransitive,
    /// Backward and forward against the latest.
    Full,
    /// Backward and forward against every earlier one.
    FullTransitive,
}

impl Compatibility {
    /// Why `new` breaks this level against `earlier` (oldest first), if it does: names the
    /// rule and what the Avro check found (the field, for a field).
    pub fn check(self, new: &Schema, earlier: &[Schema]) -> Option<String> {
        use Compatibility as C;
        let against: &[Schema] = match self {
            C::None => &[],
            C::Backward | C::Forward | C::Full => earlier.last().map_or(&[], std::slice::from_ref),
            C::BackwardTransitive | C::ForwardTransitive | C::FullTransitive => earlier,
        };
        let backward = matches!(
            self,
            C::Backward | C::BackwardTransitive | C::Full | C::FullTransitive
        );
        let forward = matches!(
            self,
            C::Forward | C::ForwardTransitive | C::Full | C::FullTransitive
        );
        for old in against {
            if backward {
                if let Err(e) = SchemaCompatibility::can_read(old, new) {
                    return Some(format!("{self:?} (new schema must read old data): {e}"));
                }
            }
            if forward {
                if let Err(e) = SchemaCompatibility::can_read(new, old) {
                    return Some(format!("{self:?} (old schema must read new data): {e}"));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"order_placed","namespace":"acme.shop.orders","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn levels_name_the_rule_and_the_field() {
        let v1 = schema(r#"{"name":"order_id","type":"string"}"#);
        let added_with_default = schema(
            r#"{"name":"order_id","type":"string"},{"name":"note","type":"string","default":""}"#,
        );
        let added_without =
            schema(r#"{"name":"order_id","type":"string"},{"name":"note","type":"string"}"#);
        let retyped = schema(r#"{"name":"order_id","type":"long"}"#);
        let earlier = [v1.clone()];
        assert_eq!(
            Compatibility::Backward.check(&added_with_default, &earlier),
            None
        );
        assert_eq!(
            Compatibility::Full.check(&added_with_default, &earlier),
            None
        );
        let why = Compatibility::Backward
            .check(&added_without, &earlier)
            .unwrap();
        assert!(
            why.contains("Backward") && why.contains("'note'") && why.contains("default"),
            "{why}"
        );
        let why = Compatibility::Backward.check(&retyped, &earlier).unwrap();
        assert!(why.contains("order_id"), "{why}");
        // Removing a field without default: new reads old fine, old cannot read new.
        assert_eq!(
            Compatibility::Backward.check(&v1, std::slice::from_ref(&added_without)),
            None
        );
        let why = Compatibility::Full.check(&v1, &[added_without]).unwrap();
        assert!(
            why.contains("Full (old schema must read new data)") && why.contains("'note'"),
            "{why}"
        );
        assert_eq!(Compatibility::None.check(&retyped, &earlier), None);
    }
}
