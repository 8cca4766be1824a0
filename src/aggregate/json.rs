//! One scalar at a path of a JSON document, read without building the document: the object
//! keys on the path are compared as they stream by, every other value is skipped
//! (`serde::de::IgnoredAny`), and a string comes back borrowed when it holds no escapes. No
//! allocation for a number, a boolean or a plain string.
//!
//! A path is the keys from the top object down (`["amount"]`, `["cpu", "load"]`). Anything
//! that is not a JSON document, a path through a non-object, an absent key, or a value that
//! is an object, an array or null gives `None`. With a key repeated in one object, the first
//! occurrence counts.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A scalar read from a document.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    Number(f64),
    Str(Cow<'a, str>),
    Bool(bool),
}

impl Scalar<'_> {
    /// The number, if it is one (a string of digits is not).
    pub fn number(&self) -> Option<f64> {
        match self {
            Scalar::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether it equals `text` as a request gives it: a string by its content, a number by
    /// value (`text` parsed as a number), a boolean as `true`/`false`.
    pub fn equals(&self, text: &str) -> bool {
        match self {
            Scalar::Str(s) => s == text,
            Scalar::Number(n) => text.parse::<f64>().is_ok_and(|t| t == *n),
            Scalar::Bool(b) => text == if *b { "true" } else { "false" },
        }
    }

    /// Appends it as a group key: a string's content, a number in its shortest decimal form
    /// (`3`, `2.5`), `true`/`false`.
    pub fn write_key(&self, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Scalar::Str(s) => out.extend_from_slice(s.as_bytes()),
            Scalar::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Scalar::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
}

/// The scalar at `path` in `json`, if there is one (see the module docs).
pub fn scalar_at<'a>(json: &'a [u8], path: &[String]) -> Option<Scalar<'a>> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let found = At { path }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    found
}

/// Finds the rest of the path in the value being read.
struct At<'p> {
    path: &'p [String],
}

impl<'de> DeserializeSeed<'de> for At<'_> {
    type Value = Option<Scalar<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At<'_> {
    type Value = Option<Scalar<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut seen = false;
        while let Some(is_next) = map.next_key_seed(KeyIs(self.path.first()))? {
            if is_next && !seen {
                seen = true;
                found = map.next_value_seed(At {
                    path: &self.path[1..],
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then_some(Scalar::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then_some(Scalar::Number(v as f64)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then_some(Scalar::Number(v as f64)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.path.is_empty().then_some(Scalar::Number(v)))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(self
            .path
            .is_empty()
            .then_some(Scalar::Str(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self
            .path
            .is_empty()
            .then(|| Scalar::Str(Cow::Owned(v.to_owned()))))
    }
}

/// Reads an object key and says whether it is the path's next key (never, at the path's end).
struct KeyIs<'p>(Option<&'p String>);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(self.0.is_some_and(|k| k == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn reads_scalars_at_paths_and_nothing_else() {
        let doc = br#"{"label":"cpu_usage","value":0.5,"n":3,"ok":true,"none":null,
            "arr":[1,{"x":2}],"host":{"name":"web\u002d1","load":{"m1":1.25}},"n":9}"#;
        let at = |p: &str| scalar_at(doc, &path(p));
        assert_eq!(at("label"), Some(Scalar::Str("cpu_usage".into())));
        assert_eq!(at("value"), Some(Scalar::Number(0.5)));
        assert_eq!(
            at("n"),
            Some(Scalar::Number(3.0)),
            "the first of a repeated key"
        );
        assert_eq!(at("ok"), Some(Scalar::Bool(true)));
        assert_eq!(at("host.name"), Some(Scalar::Str("web-1".into())));
        assert_eq!(at("host.load.m1"), Some(Scalar::Number(1.25)));
        for absent in [
            "none",
            "arr",
            "host",
            "host.load",
            "missing",
            "label.x",
            "arr.x",
        ] {
            assert_eq!(at(absent), None, "{absent}");
        }
        assert_eq!(scalar_at(b"not json", &path("a")), None);
        assert_eq!(scalar_at(br#"{"a":1} trailing"#, &path("a")), None);
        assert_eq!(scalar_at(b"", &path("a")), None);
        assert_eq!(scalar_at(b"7", &path("a")), None);
    }

    #[test]
    fn equality_and_keys_follow_the_value_kind() {
        assert!(Scalar::Str("cpu".into()).equals("cpu"));
        assert!(!Scalar::Str("1".into()).equals("1.0"));
        assert!(Scalar::Number(1.0).equals("1.0"));
        assert!(Scalar::Number(1.0).equals("1"));
        assert!(!Scalar::Number(1.0).equals("one"));
        assert!(Scalar::Bool(false).equals("false"));
        let mut k = Vec::new();
        Scalar::Number(3.0).write_key(&mut k);
        assert_eq!(k, b"3");
        Scalar::Number(2.5).write_key(&mut k);
        assert_eq!(k, b"2.5");
        Scalar::Bool(true).write_key(&mut k);
        assert_eq!(k, b"true");
    }
}
