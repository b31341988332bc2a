//! Conformance suite. Inputs are fixtures under `translate/fixtures/`,
//! written from the providers' documented wire formats; outputs are insta
//! snapshots, one per fixture, reviewed against the same documentation.
//! Adding a fixture file adds a case.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::TranslateError;

mod errors;
mod requests;
mod responses;
mod round_trip;
mod streams;

/// The `created` timestamp used wherever one is fixed for snapshots.
const CREATED: u64 = 1_700_000_000;

fn fixture_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/translate/fixtures")
        .join(dir)
}

/// Every fixture in `dir` as (file stem, bytes), sorted by name.
fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixture_dir(dir))
        .expect("fixture dir")
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let stem = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            (stem, std::fs::read(&path).expect("fixture"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {dir}");
    out
}

/// One fixture's bytes.
fn fixture(dir: &str, name: &str) -> Vec<u8> {
    let path = fixture_dir(dir).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// A translation result as a snapshot value: the JSON body, or the error.
fn outcome(result: Result<Vec<u8>, TranslateError>) -> Value {
    match result {
        Ok(body) => json(&body),
        Err(e) => json!({"translate_error": {"message": e.message, "param": e.param}}),
    }
}

/// Snapshots `value` under `name`, noting the fixture it came from.
fn snapshot_json(dir: &str, name: &str, value: &Value) {
    insta::with_settings!({
        description => format!("fixture: translate/fixtures/{dir}/{name}"),
        omit_expression => true,
    }, {
        insta::assert_json_snapshot!(format!("{dir}__{name}"), value);
    });
}

/// Snapshots text under `name`, noting the fixture it came from.
fn snapshot_text(dir: &str, name: &str, text: &str) {
    insta::with_settings!({
        description => format!("fixture: translate/fixtures/{dir}/{name}"),
        omit_expression => true,
    }, {
        insta::assert_snapshot!(format!("{dir}__{name}"), text);
    });
}
