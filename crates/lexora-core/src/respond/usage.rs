//! The `usage` of a complete answer, read without deserializing the rest.
//!
//! Every complete answer is read for its token counts. A derived reader
//! that ignores every other member still has to walk and validate all of
//! them (the choices' text is most of the body): ~5,000 instructions of a
//! ~66,000-instruction request. Here strings are skipped with a byte
//! search for their closing quote, and only the `usage` object itself goes
//! through serde.
//!
//! Differences from the derived reader, all on answers no engine sends: a
//! malformed answer whose `usage` is readable still counts; a repeated
//! `usage` key counts its first value; a key written with escapes
//! (`"usag\u0065"`) is not recognised.

use serde::Deserialize;

use super::sse::mentions_usage;
use crate::record::Usage;

/// The top-level `usage` member of the JSON object `json`, if it has one
/// that reads as [`Usage`].
pub(super) fn of_answer(json: &[u8]) -> Option<Usage> {
    if !mentions_usage(json) {
        return None;
    }
    let start = top_level_value(json, b"usage")?;
    let mut reader = serde_json::Deserializer::from_slice(&json[start..]);
    // Reads one value and leaves what follows it alone.
    Option::<Usage>::deserialize(&mut reader).ok().flatten()
}

/// Where the value of the top-level member `key` of the object `json`
/// starts (past its colon); `None` without such a member.
fn top_level_value(json: &[u8], key: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => {
                let end = string_end(json, at + 1)?;
                let text = &json[at + 1..end];
                at = end + 1;
                // At depth 1 a string followed by a colon is a member's key.
                if depth == 1 && text == key {
                    let colon = skip_whitespace(json, at);
                    if json.get(colon) == Some(&b':') {
                        return Some(skip_whitespace(json, colon + 1));
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return None;
                }
                at += 1;
            }
            _ => at += 1,
        }
    }
    None
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
