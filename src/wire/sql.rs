//! One SQL query on the metadata database and its rows, as text: the
//! Postgres simple-query protocol or MySQL's COM_QUERY, after the same
//! connection and authentication the probes use. Read-only by contract:
//! callers pass SELECTs; it never retries, sleeps or logs a password.

use std::time::Duration;

use super::url::{Kind, Target};
use super::{mysql, postgres, Verdict};

/// What one answer may hold: the queries here read a handful of short
/// rows (alembic revisions, a few jobs); past these a server is broken or
/// hostile, and the query fails with one line instead of growing PID 1.
pub const MAX_COLUMNS: usize = 64;
pub const MAX_ROWS: usize = 10_000;
/// All the values of one answer together, in bytes.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The one line for an answer past the caps above.
pub fn too_big(what: &str) -> SqlError {
    SqlError::Connection(Verdict::Fatal(format!(
        "the server's answer has {what}; a metadata query here reads a few short rows, so it is not read further"
    )))
}

/// Adds one row to `rows` within the caps; `bytes` counts the answer so far.
pub fn push_row(
    rows: &mut Rows,
    row: Vec<Option<String>>,
    bytes: &mut usize,
) -> Result<(), SqlError> {
    if rows.rows.len() >= MAX_ROWS {
        return Err(too_big(&format!("more than {MAX_ROWS} rows")));
    }
    *bytes += row.iter().flatten().map(String::len).sum::<usize>() + row.len();
    if *bytes > MAX_ANSWER_BYTES {
        return Err(too_big(&format!("more than {MAX_ANSWER_BYTES} bytes")));
    }
    rows.rows.push(row);
    Ok(())
}

/// The rows of one result set; NULL is `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Why a query gave no rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlError {
    /// The server could not be reached or refused us (the probe's verdict).
    Connection(Verdict),
    /// The server ran the query and answered with an error.
    Server {
        /// SQLSTATE (both servers send one; MySQL also its number below).
        sqlstate: String,
        /// MySQL's error number; 0 for Postgres.
        code: u16,
        message: String,
    },
}

impl SqlError {
    /// The table does not exist (yet): Postgres 42P01, MySQL 1146 / 42S02.
    pub fn is_missing_table(&self) -> bool {
        matches!(self, SqlError::Server { sqlstate, code, .. } if sqlstate == "42P01" || sqlstate == "42S02" || *code == 1146)
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlError::Connection(Verdict::NotYet(r) | Verdict::Fatal(r)) => f.write_str(r),
            SqlError::Connection(Verdict::Ready) => f.write_str("connection lost"),
            SqlError::Server {
                sqlstate,
                code: 0,
                message,
            } => write!(f, "{message} (SQLSTATE {sqlstate})"),
            SqlError::Server {
                sqlstate,
                code,
                message,
            } => write!(f, "{message} (error {code}, SQLSTATE {sqlstate})"),
        }
    }
}

impl From<Verdict> for SqlError {
    fn from(v: Verdict) -> SqlError {
        SqlError::Connection(v)
    }
}

/// Connects, authenticates and runs each of `queries` in turn on the same
/// connection; one result per query (a failed query does not end the rest).
pub fn query_all(
    target: &Target,
    timeout: Duration,
    queries: &[&str],
) -> Result<Vec<Result<Rows, SqlError>>, SqlError> {
    match target.kind {
        Kind::Postgres => postgres::query_all(target, timeout, queries),
        Kind::Mysql => mysql::query_all(target, timeout, queries),
        _ => Err(SqlError::Connection(Verdict::Fatal(format!(
            "{} is not a database this entrypoint can query (PostgreSQL or MySQL/MariaDB)",
            target.scheme
        )))),
    }
}
