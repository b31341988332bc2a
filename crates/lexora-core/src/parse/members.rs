//! A JSON object's top-level members as a list of raw values, for the
//! few rewrites Lexora makes to a request body.
//!
//! Every streamed request is rewritten (to ask for usage), so this is on
//! the hot path: members are kept in order in a `Vec` with keys borrowed
//! from the body, where an `IndexMap` hashed every key with SipHash and
//! allocated each one. The output is byte for byte what serializing that
//! map gave; an object with a repeated key (whose later value wins, at
//! the first one's place) is left to the map, so that rare case cannot
//! cost quadratic time here.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Keys up to this many members are checked for repeats pairwise; larger
/// objects sort their keys first.
const PAIRWISE: usize = 16;

/// The members of one JSON object, in order.
#[derive(Default)]
pub(super) struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of `json`, which must be one object.
    pub(super) fn parse(json: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }

    /// Whether a key appears twice. Such objects are left to the derived
    /// and map-based readers, whose handling of repeats is the reference.
    pub(super) fn has_repeats(&self) -> bool {
        let keys = &self.0;
        if keys.len() <= PAIRWISE {
            return keys
                .iter()
                .enumerate()
                .any(|(i, (k, _))| keys[i + 1..].iter().any(|(other, _)| other == k));
        }
        let mut sorted: Vec<&str> = keys.iter().map(|(k, _)| k.as_ref()).collect();
        sorted.sort_unstable();
        sorted.windows(2).any(|pair| pair[0] == pair[1])
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    pub(super) fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// Replaces `key`'s value in its place, or appends it.
    pub(super) fn set(&mut self, key: &'static str, value: &'a RawValue) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = value,
            None => self.0.push((Cow::Borrowed(key), value)),
        }
    }

    /// The object as compact JSON, members' values as they were written.
    pub(super) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let size: usize = self
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, key.as_ref())?;
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    // The map's wording, so error messages stay what they were.
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key_seed(Text)? {
            members.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(Members(members))
    }
}

/// A key (or string value) borrowed from the body when it has no escapes.
pub(super) struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}
