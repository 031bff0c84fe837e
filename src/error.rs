//! The entrypoint's own failures and the exit codes they map to.
//! Owns the table of documented exit codes; every phase returns a `Failure`
//! and only `main` turns it into a message and a process exit.

use std::fmt;

/// Documented exit codes of the entrypoint itself (the child's own code passes through).
pub mod code {
    pub const USAGE: i32 = 64;
    pub const UNAVAILABLE: i32 = 69;
    pub const INTERNAL: i32 = 70;
    pub const NO_PERMISSION: i32 = 77;
    pub const CONFIG: i32 = 78;
    pub const NOT_EXECUTABLE: i32 = 126;
    pub const NOT_FOUND: i32 = 127;
}

/// A failure of the entrypoint: one line for the operator and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit_code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(exit_code: i32, message: impl Into<String>) -> Self {
        Failure {
            exit_code,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(code::USAGE, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(code::CONFIG, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, message)
    }
    /// Start-up was ended by a signal: the conventional 128+N.
    pub fn interrupted(signal: i32) -> Self {
        Self::new(
            128 + signal,
            format!(
                "received SIG{} during start-up; stopping before the command was started",
                crate::signals::signal_name(signal)
            ),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
