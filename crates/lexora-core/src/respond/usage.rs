//! The `usage` of a complete answer ([`of_answer`]) or of one streamed
//! event ([`of_event`]), read without deserializing the rest.
//!
//! Every complete answer is read for its token counts. A derived reader
//! that ignores every other member still has to walk and validate all of
//! them (the choices' text is most of the body): ~5,000 instructions of a
//! ~66,000-instruction request. Engines write `usage` after the choices,
//! so it is looked for from the end first: only what follows it is read
//! to tell that it is a top-level member. Otherwise the answer is walked
//! from the start, strings skipped with a byte search for their closing
//! quote. Only the `usage` object itself goes through serde.
//!
//! Differences from the derived reader, all on answers no engine sends: a
//! malformed answer whose `usage` is readable still counts; of a repeated
//! `usage` key, the last value counts if it is a top-level member, else the
//! first; a key written with escapes (`"usag\u0065"`) is not recognised.

use serde::de::IgnoredAny;
use serde::Deserialize;

use std::sync::LazyLock;

use memchr::memmem;

use crate::record::Usage;

const USAGE_KEY: &[u8] = b"\"usage\"";

/// The top-level `usage` member of the JSON object `json`, if it has one
/// that reads as [`Usage`].
pub(super) fn of_answer(json: &[u8]) -> Option<Usage> {
    static LAST: LazyLock<memmem::FinderRev<'static>> =
        LazyLock::new(|| memmem::FinderRev::new(USAGE_KEY));
    let last = LAST.rfind(json)?;
    let start = match top_level_from_end(json, last) {
        Some(start) => start,
        None => top_level_value(json, b"usage")?,
    };
    let mut reader = serde_json::Deserializer::from_slice(&json[start..]);
    // Reads one value and leaves what follows it alone.
    Option::<Usage>::deserialize(&mut reader).ok().flatten()
}

/// What one streamed event's JSON says about usage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct EventUsage {
    /// The top-level `usage` (OpenAI's last chunk; Anthropic's
    /// `message_delta`).
    pub usage: Option<Usage>,
    /// `message.usage`: Anthropic's `message_start` nests it.
    pub nested: Option<Usage>,
    /// `choices` is an empty array: the event reports usage and nothing else.
    pub no_choices: bool,
}

/// The usage members of the event `json`, each read where the walk finds it
/// instead of deserializing the whole event (the chunk's id, model and
/// fingerprint are most of it). What a derived reader of the whole event
/// would find whenever the event is valid JSON with no repeated member;
/// otherwise what can be read (a derived reader finds nothing). A member
/// that is there but does not read as its type voids the whole event, as
/// it would the derived reader's.
pub(super) fn of_event(json: &[u8]) -> EventUsage {
    #[derive(Deserialize)]
    struct Nested {
        #[serde(default)]
        usage: Option<Usage>,
    }
    fn read<'a, T: Deserialize<'a>>(json: &'a [u8], start: Option<usize>) -> Result<Option<T>, ()> {
        let Some(start) = start else {
            return Ok(None);
        };
        let mut reader = serde_json::Deserializer::from_slice(&json[start..]);
        Option::<T>::deserialize(&mut reader).map_err(drop)
    }
    let [usage, choices, message] = top_level_values(json, [b"usage", b"choices", b"message"]);
    let read_all = || -> Result<EventUsage, ()> {
        Ok(EventUsage {
            usage: read(json, usage)?,
            nested: read::<Nested>(json, message)?.and_then(|m| m.usage),
            no_choices: read::<Vec<IgnoredAny>>(json, choices)?.is_some_and(|c| c.is_empty()),
        })
    };
    read_all().unwrap_or_default()
}

/// Where the value of the top-level member `key` of the object `json`
/// starts (past its colon); `None` without such a member.
fn top_level_value(json: &[u8], key: &[u8]) -> Option<usize> {
    let [start] = top_level_values(json, [key]);
    start
}

/// [`top_level_value`] of several keys in one walk; of a repeated key, the
/// first. The walk stops once every key is found, at the end of the
/// object, or where `json` stops making sense.
fn top_level_values<const N: usize>(json: &[u8], keys: [&[u8]; N]) -> [Option<usize>; N] {
    let mut found = [None; N];
    let mut missing = N;
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => {
                let Some(end) = string_end(json, at + 1) else {
                    break;
                };
                let text = &json[at + 1..end];
                at = end + 1;
                // At depth 1 a string followed by a colon is a member's key.
                if depth != 1 {
                    continue;
                }
                let Some(k) = keys.iter().position(|key| *key == text) else {
                    continue;
                };
                let colon = skip_whitespace(json, at);
                if json.get(colon) == Some(&b':') && found[k].is_none() {
                    found[k] = Some(skip_whitespace(json, colon + 1));
                    missing -= 1;
                    if missing == 0 {
                        break;
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b']' => {
                match depth.checked_sub(1) {
                    Some(d) if d > 0 => depth = d,
                    _ => break,
                }
                at += 1;
            }
            _ => at += 1,
        }
    }
    found
}

/// Where the value of the member whose key is the `"usage"` at `at`
/// starts, if that is a member of the top-level object: read back from the
/// end of `json`, what follows the key must close exactly one container
/// more than it opens, and that one must be an object. `None` also when
/// what follows is not valid enough to tell (the caller then reads from the
/// start).
fn top_level_from_end(json: &[u8], at: usize) -> Option<usize> {
    let after = at + USAGE_KEY.len();
    if escaped(json, at) {
        // `\"usage"`: the end of a longer string, not a key.
        return None;
    }
    let colon = skip_whitespace(json, after);
    if json.get(colon) != Some(&b':') {
        return None;
    }
    let last = json.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if json[last] != b'}' {
        return None;
    }
    let mut depth = 0usize;
    let mut i = json.len();
    while i > after {
        i -= 1;
        match json[i] {
            b'}' | b']' => depth += 1,
            b'{' | b'[' => {
                // An opener whose closer is not in the text: broken.
                depth = depth.checked_sub(1).filter(|d| *d >= 1)?;
            }
            b'"' if !escaped(json, i) => i = string_start(json, after, i)?,
            _ => {}
        }
    }
    (depth == 1).then(|| skip_whitespace(json, colon + 1))
}

/// Whether the byte at `at` follows an odd number of backslashes.
fn escaped(json: &[u8], at: usize) -> bool {
    json[..at].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 1
}

/// The quote, at `floor` or after it, that opens the string closed by the
/// quote at `close`.
fn string_start(json: &[u8], floor: usize, close: usize) -> Option<usize> {
    let mut end = close;
    loop {
        let quote = floor + memchr::memrchr(b'"', &json[floor..end])?;
        if !escaped(json, quote) {
            return Some(quote);
        }
        end = quote;
    }
}

/// The index of the quote that closes the string whose text starts at
/// `from`.
fn string_end(json: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', json.get(from..)?)?;
        if json[at] == b'"' {
            return Some(at);
        }
        // A backslash escapes the byte after it (`\"`, `\\`, `\u…`'s `u`).
        from = at + 2;
    }
}

fn skip_whitespace(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests;
