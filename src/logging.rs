//! The entrypoint's own log lines on stderr: human text or JSON, one event a
//! line, every text masked by `redact`. Owns the current start-up phase that
//! each line carries. It never touches the child's stdout/stderr.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::Metadata;
use tracing::{Event, Level, Subscriber};

use crate::error::{code, Failure};
use crate::redact::redact;

/// The format `init` chose; a failure before it is written as plain text.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The phases of a start-up, in the order `main` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Settings = 0,
    Environment,
    User,
    Resolve,
    Wait,
    Startup,
    Command,
    Supervise,
    Shutdown,
}

const PHASE_NAMES: [&str; 9] = [
    "settings",
    "environment",
    "user",
    "resolve",
    "wait",
    "startup",
    "command",
    "supervise",
    "shutdown",
];

static CURRENT_PHASE: AtomicU8 = AtomicU8::new(Phase::Settings as u8);

pub fn enter_phase(phase: Phase) {
    CURRENT_PHASE.store(phase as u8, Ordering::Relaxed);
}

pub fn current_phase() -> &'static str {
    PHASE_NAMES
        .get(CURRENT_PHASE.load(Ordering::Relaxed) as usize)
        .copied()
        .unwrap_or("unknown")
}

/// Installs the global subscriber. Returns false if one was already set.
pub fn init(format: LogFormat, level: LevelFilter) -> bool {
    let _ = FORMAT.set(format);
    let subscriber = LineWriter { format, level };
    tracing::subscriber::set_global_default(subscriber).is_ok()
}

/// Writes a failure as one line in the configured format, even before `init`
/// (then as plain text), straight to fd 2 without taking any lock.
pub fn write_failure_line(format: Option<LogFormat>, message: &str) {
    let mut line = String::new();
    let fields = Fields {
        message: message.to_string(),
        pairs: Vec::new(),
    };
    match format {
        Some(LogFormat::Json) => render_json(&mut line, &Level::ERROR, &fields),
        Some(LogFormat::Text) => render_text(&mut line, &Level::ERROR, &fields),
        None => {
            let _ = writeln!(line, "airflow-entrypoint: error: {}", redact(message));
        }
    }
    write_stderr_raw(line.as_bytes());
}

/// The end of a failed start-up: its one line, then its exit code.
pub fn exit_with(failure: Failure) -> ! {
    write_failure_line(FORMAT.get().copied(), &failure.message);
    std::process::exit(failure.exit_code);
}

/// PID 1 must never die by accident: a panic is logged and becomes exit 70.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let message =
            format!("internal error (a bug, please report it): panic{location}: {payload}");
        write_failure_line(FORMAT.get().copied(), &message);
        std::process::exit(code::INTERNAL);
    }));
}

/// One write(2) per line, retried on EINTR, errors ignored: a closed stderr
/// must never take PID 1 down.
pub fn write_stderr_raw(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writing a valid, live buffer to fd 2; no memory is shared.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if n == 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

struct LineWriter {
    format: LogFormat,
    level: LevelFilter,
}

enum Value {
    Number(String),
    Bool(bool),
    Text(String),
}

struct Fields {
    message: String,
    pairs: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.pairs
                .push((field.name(), Value::Text(format!("{value:?}"))));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.pairs
                .push((field.name(), Value::Text(value.to_string())));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pairs
            .push((field.name(), Value::Number(value.to_string())));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pairs
            .push((field.name(), Value::Number(value.to_string())));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let text = if value.is_finite() {
            value.to_string()
        } else {
            "null".to_string()
        };
        self.pairs.push((field.name(), Value::Number(text)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pairs.push((field.name(), Value::Bool(value)));
    }
}

/// The whole subscriber: a level filter and one line per event. Spans are
/// not used (no registry: its slab alone would cost 36 kB of PID 1's memory).
impl Subscriber for LineWriter {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.level >= *metadata.level()
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields {
            message: String::new(),
            pairs: Vec::new(),
        };
        event.record(&mut fields);
        let mut line = String::with_capacity(128);
        match self.format {
            LogFormat::Text => render_text(&mut line, event.metadata().level(), &fields),
            LogFormat::Json => render_json(&mut line, event.metadata().level(), &fields),
        }
        write_stderr_raw(line.as_bytes());
    }
}

fn render_text(line: &mut String, level: &Level, fields: &Fields) {
    let _ = write!(
        line,
        "{} {:<5} [{}] {}",
        timestamp(),
        level.as_str(),
        current_phase(),
        redact(&fields.message)
    );
    for (name, value) in &fields.pairs {
        match value {
            Value::Number(n) => {
                let _ = write!(line, " {name}={n}");
            }
            Value::Bool(b) => {
                let _ = write!(line, " {name}={b}");
            }
            Value::Text(t) => {
                let t = redact(t);
                if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '"') {
                    let _ = write!(line, " {name}={t:?}");
                } else {
                    let _ = write!(line, " {name}={t}");
                }
            }
        }
    }
    line.push('\n');
}

fn render_json(line: &mut String, level: &Level, fields: &Fields) {
    line.push_str("{\"timestamp\":");
    push_json_string(line, &timestamp());
    line.push_str(",\"level\":");
    push_json_string(line, &level.as_str().to_ascii_lowercase());
    line.push_str(",\"phase\":");
    push_json_string(line, current_phase());
    line.push_str(",\"message\":");
    push_json_string(line, &redact(&fields.message));
    for (name, value) in &fields.pairs {
        line.push(',');
        push_json_string(line, name);
        line.push(':');
        match value {
            Value::Number(n) => line.push_str(n),
            Value::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
            Value::Text(t) => push_json_string(line, &redact(t)),
        }
    }
    line.push_str("}\n");
}

pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 UTC with milliseconds, computed without a calendar crate.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Informational output (help, a table): stdout, flushed; exit code 0.
pub fn print_stdout(text: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
    let _ = std::io::Write::flush(&mut out);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn json_lines_mask_passwords() {
        let mut line = String::new();
        let fields = Fields {
            message: "db is postgresql://a:b@h/d".into(),
            pairs: vec![("url", Value::Text("redis://:pw@r:6379".into()))],
        };
        render_json(&mut line, &Level::INFO, &fields);
        assert!(!line.contains(":b@") && !line.contains("pw@"), "{line}");
        assert!(line.contains("\"level\":\"info\""), "{line}");
    }
}
