//! Lua configuration files: the script runs in a small sandbox and the
//! global variables it defines become the top-level sections, exactly as the
//! sections of a YAML file would (seed 004 configures Lexora in Lua).
//!
//! The sandbox has only the pure libraries (`string`, `table`, `math`,
//! `utf8`) and no way to reach the outside: no `io`, `os`, `package`/
//! `require`, `debug`, `dofile`, `loadfile`, `load` or `print`. A config file
//! describes settings; the environment reaches them through `LEXORA_`
//! variables, which Lexora lays over the file afterwards, so a Lua file
//! behaves like its YAML twin in every respect.
//!
//! A script cannot hang or exhaust the gateway: it gets [`MEMORY_LIMIT`]
//! bytes, [`INSTRUCTION_LIMIT`] VM instructions and [`TIME_LIMIT`] of wall
//! time. It runs on its own thread so that the time limit also holds inside
//! a long C call (a pathological `string.find` pattern), where the VM's
//! instruction hook never fires.
//!
//! The conversion rules from Lua values to the JSON tree are in [`convert`].

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mlua::{ChunkMode, HookTriggers, Lua, LuaOptions, StdLib, VmState};
use serde_json::Value;

mod convert;

#[cfg(test)]
mod tests;

/// Memory one script may allocate, interpreter included.
pub const MEMORY_LIMIT: usize = 16 * 1024 * 1024;
/// VM instructions one script may execute; a real config needs a few
/// thousand, an endless loop reaches this in well under a second.
pub const INSTRUCTION_LIMIT: u64 = 10_000_000;
/// Wall time one script may take, conversion included.
pub const TIME_LIMIT: Duration = Duration::from_secs(2);

/// The instruction hook runs this often; counting in steps keeps its cost
/// negligible while stopping a loop within a few microseconds of the limit.
const HOOK_STEP: u32 = 1_000;

/// Base-library functions that reach files, print to the gateway's stdout,
/// or load code (a binary chunk can crash the interpreter).
const REMOVED_GLOBALS: &[&str] = &["dofile", "loadfile", "load", "print", "collectgarbage"];

/// What one run may use; the constants above except in tests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    memory: usize,
    instructions: u64,
    time: Duration,
}

const LIMITS: Limits = Limits {
    memory: MEMORY_LIMIT,
    instructions: INSTRUCTION_LIMIT,
    time: TIME_LIMIT,
};

/// Runs the Lua config `text` read from `path` and returns its globals as a
/// JSON object tree. Errors are one-line messages starting `Lua error:`; the
/// caller adds the file name.
pub(super) fn parse(path: &Path, text: &str) -> Result<Value, String> {
    parse_with(path, text, LIMITS)
}

fn parse_with(path: &Path, text: &str, limits: Limits) -> Result<Value, String> {
    // Lua's messages name the chunk; the file name alone keeps them short
    // since the error already starts with the full path.
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let text = text.to_owned();
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("lexora-lua-config".into())
        .spawn(move || {
            // The receiver is gone only after a timeout, already reported.
            let _ = tx.send(run(&name, &text, limits));
        })
        .map_err(|e| format!("Lua error: cannot start the interpreter thread: {e}"))?;
    let mut converted = match rx.recv_timeout(limits.time) {
        Ok(result) => result?,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // The thread is left behind: nothing can interrupt a C call, but
            // the hook stops it as soon as it is back in Lua code.
            return Err(format!(
                "Lua error: the script did not finish within {} s",
                limits.time.as_secs_f64()
            ));
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err("Lua error: the interpreter stopped unexpectedly".into())
        }
    };
    convert::settle_empty_tables(&mut converted);
    Ok(converted.tree)
}

/// Why the hook stopped a script; set before the hook returns its error so
/// the message does not depend on how mlua wraps it.
#[derive(Debug, Clone, Copy)]
enum Abort {
    Instructions(i32),
    Time(i32),
}

/// Runs on the interpreter thread: sandbox, execute, convert.
fn run(name: &str, text: &str, limits: Limits) -> Result<convert::Converted, String> {
    let lua = sandbox(limits).map_err(|e| format!("Lua error: {}", describe(&e, limits)))?;
    let before = convert::snapshot_globals(&lua).map_err(|e| lua_error(&e, limits))?;

    let abort = Rc::new(Cell::new(None));
    let executed = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + limits.time;
    let hook_abort = Rc::clone(&abort);
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_STEP),
        move |_lua, debug| {
            let count = executed.get() + u64::from(HOOK_STEP);
            executed.set(count);
            let line = debug.curr_line();
            let reason = if count > limits.instructions {
                Abort::Instructions(line)
            } else if Instant::now() > deadline {
                Abort::Time(line)
            } else {
                return Ok(VmState::Continue);
            };
            hook_abort.set(Some(reason));
            Err(mlua::Error::runtime("configuration script aborted"))
        },
    );

    let result = lua
        .load(text)
        .set_name(format!("@{name}"))
        .set_mode(ChunkMode::Text)
        .exec();
    lua.remove_hook();
    if let Err(e) = result {
        return Err(match abort.get() {
            Some(Abort::Instructions(line)) => format!(
                "Lua error: {name}:{line}: the script ran more than {} instructions \
                 (an endless loop?)",
                limits.instructions
            ),
            Some(Abort::Time(line)) => format!(
                "Lua error: {name}:{line}: the script ran longer than {} s",
                limits.time.as_secs_f64()
            ),
            None => lua_error(&e, limits),
        });
    }
    convert::globals(&lua, &before)
}

/// A fresh interpreter with only the safe libraries and the limits set.
fn sandbox(limits: Limits) -> mlua::Result<Lua> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8;
    let lua = Lua::new_with(libs, LuaOptions::new())?;
    let globals = lua.globals();
    for name in REMOVED_GLOBALS {
        globals.raw_set(*name, mlua::Value::Nil)?;
    }
    // `string.dump` makes bytecode; with `load` gone it is useless, and
    // removing it keeps bytecode out of the sandbox entirely.
    if let Ok(string) = globals.raw_get::<mlua::Table>("string") {
        string.raw_set("dump", mlua::Value::Nil)?;
    }
    // Set last, so the libraries themselves always fit.
    lua.set_memory_limit(limits.memory)?;
    Ok(lua)
}

fn lua_error(e: &mlua::Error, limits: Limits) -> String {
    format!("Lua error: {}", describe(e, limits))
}

/// One line saying what went wrong and where (`file:line: message`),
/// without mlua's wrapping and Lua's stack traceback.
fn describe(e: &mlua::Error, limits: Limits) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => describe(cause, limits),
        mlua::Error::SyntaxError { message, .. } => format!("syntax error: {message}"),
        mlua::Error::RuntimeError(message) => message
            .split("\nstack traceback:")
            .next()
            .unwrap_or(message)
            .trim_end()
            .to_owned(),
        mlua::Error::MemoryError(_) => format!(
            "the script needs more than {} MiB of memory",
            limits.memory / (1024 * 1024)
        ),
        other => other.to_string(),
    }
}
