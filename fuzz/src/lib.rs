//! The fuzz targets' crate root. It compiles the binary's own modules in
//! with `#[path]`, as `src/main.rs` declares them, so that the targets reach
//! `pub` items of private modules while the binary stays exactly as it is
//! (no `[lib]` target, no `pub mod`, nothing changed under `src/`).
//! Only `alloc` is left out: its `#[global_allocator]` is the binary's, and
//! libFuzzer's sanitizers want the system allocator.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(dead_code, unused_imports, clippy::all)]

#[path = "../../src/airflow/mod.rs"]
mod airflow;
#[path = "../../src/clean_logs.rs"]
mod clean_logs;
#[path = "../../src/cli.rs"]
mod cli;
#[path = "../../src/command.rs"]
mod command;
#[path = "../../src/env/mod.rs"]
mod env;
#[path = "../../src/error.rs"]
mod error;
#[path = "../../src/jitter.rs"]
mod jitter;
#[path = "../../src/logging.rs"]
mod logging;
#[path = "../../src/multicall.rs"]
mod multicall;
#[path = "../../src/readiness/mod.rs"]
mod readiness;
#[path = "../../src/redact.rs"]
mod redact;
#[path = "../../src/settings.rs"]
mod settings;
#[path = "../../src/shell_words.rs"]
mod shell_words;
#[path = "../../src/signals.rs"]
mod signals;
#[path = "../../src/supervisor/mod.rs"]
mod supervisor;
#[path = "../../src/user.rs"]
mod user;
#[path = "../../src/wire/mod.rs"]
mod wire;

/// Stands in for the binary's allocator module: sealing the start-up arena
/// means nothing without the arena.
mod alloc {
    pub fn seal() {}
}

mod fake_server;
mod secret;
pub mod targets;
