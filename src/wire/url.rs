//! Turns Airflow's SQLAlchemy URLs and Celery broker / result-backend URLs into probe targets.
//! Owns URL syntax, per-scheme defaults (ports, AMQP vhost, Postgres socket file names) and masking.
//! Must never panic on any input, never do I/O, and never let a password reach an error
//! message or Debug output: every message shows the URL through `mask`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects
)]

// Choices where the brief was silent (each one is pinned by a unit test below):
// * Input is trimmed of surrounding whitespace (secrets mounted from files end in '\n').
// * Scheme names match case-insensitively; `Target::scheme` keeps them as written.
// * SQL dialects accept any driver name (`postgresql+<driver>`, `mysql+<driver>`,
//   `mariadb+<driver>`, `sqlite+<driver>`, letters/digits/`_`): the probe only needs the
//   network address, and refusing a driver Airflow can load would keep the container down.
// * `db+` (Celery result backends) is accepted only in front of SQL dialects.
// * Userinfo is split as the library that will use the URL splits it (checked against
//   SQLAlchemy 2.1 and kombu 5.7 / redis-py 8 in Airflow 3.3's venv):
//   - SQL schemes, as SQLAlchemy's `make_url` regex: the user name runs to the first `:` or `/`;
//     after a `:` the password runs to the FIRST `@` (it may hold `/`, `?`, `#`, `:`, never
//     `@`); with no such password, a user name alone ends at its last `@`. So
//     `user:Pw7@zq9k/x4@db/airflow` is host `zq9k`, database `x4@db/airflow`, as in Airflow.
//   - Broker schemes (redis, rediss, unix, sentinel, amqp, ...), as urllib (kombu's
//     `url_to_parts`, redis-py's `parse_url`): the authority ends at the first `/`, `?` or `#`,
//     the userinfo at its LAST `@`, the password at the first `:` of the userinfo; `#` starts a
//     fragment that is ignored. A raw `/`, `?` or `#` in a password so ends the authority.
//   An `@` left after that split (in host, port, path or query) makes the URL ambiguous:
//   `mask` hides everything up to the last `@`, error messages quote no piece of host or port,
//   and `parse` registers password, hosts, database and every piece of the text between the
//   first `:` and the last `@` with `redact::hide`, so none of them shows in any later line
//   (`at=`, a DNS error, a server's message). `Target::ambiguous` says so, for a warning.
// * An empty user name or password (`redis://:@h`, `postgresql://u:@h/db`) is `None`: redis-py
//   and kombu drop an empty one, and SQLAlchemy's `translate_connect_args` does not pass it on.
// * `host:` (empty port): the default port for brokers (urllib), an error for SQL schemes
//   (SQLAlchemy fails on `int('')`). Port 0 is an error.
// * Broker host names are percent-decoded (kombu and redis-py `unquote` them); SQL ones are not.
// * Host names are ASCII letters, digits, `.`, `-`, `_`; IPv6 literals must be bracketed in the
//   authority (a zone `%25eth0` is kept as `%eth0`) and are kept as written, not normalized.
// * Database names, paths and the AMQP vhost are percent-decoded; query keys and values are
//   decoded like Python's `parse_qsl` (`+` is a space). A repeated query key: the last one wins,
//   except Postgres `host`, whose values (also comma lists) each become an endpoint.
// * Postgres: a query `host` overrides the authority host (as SQLAlchemy passes it to the driver);
//   `host=/dir` => Unix `/dir/.s.PGSQL.<port>`; `host=h:port` items (SQLAlchemy 2 multi-host) are
//   TCP endpoints in order; `port=` in the query overrides the authority port.
//   `sslmode` is matched exactly as libpq does (lower case); asyncpg's `ssl=` is read with the same
//   values when `sslmode` is absent. As libpq does, `require` plus an `sslrootcert` is VerifyCa.
//   `sslrootcert=system` (libpq 16) means the system store: no root path, default VerifyFull, and
//   any weaker explicit mode is an error.
// * MySQL TLS: `ssl_disabled=true` => Off, else an explicit `ssl_mode` (case-insensitive:
//   DISABLED/PREFERRED => Off, REQUIRED => Require, VERIFY_CA => VerifyCa, VERIFY_IDENTITY =>
//   VerifyFull) decides; otherwise the strongest implied level: `ssl=true`, `ssl_cert`, `ssl_key`
//   => Require; `ssl_ca`, `ssl_capath`, `ssl_verify_cert=true` => VerifyCa; `ssl_verify_identity`
//   or `ssl_check_hostname=true` => VerifyFull; `ssl_verify_cert=false` caps it at Require.
//   Booleans are true/false/1/0/yes/no/on/off; anything else is an error.
// * Redis: `rediss` without `ssl_cert_reqs` => Require (no certificate check asked for);
//   none/CERT_NONE => Require, optional/CERT_OPTIONAL => VerifyCa, required/CERT_REQUIRED =>
//   VerifyFull; `ssl_ca_certs` is the root certificate. The db comes from query `db`, then
//   `virtual_host` (kombu), then the path, and must be a number; absent => None.
// * AMQP: `amqps` => Require unless the RabbitMQ URI option `verify=verify_peer` (VerifyFull) or
//   `verify=verify_none` (Require) says otherwise; `cacertfile` is the root certificate.
// * Sentinel: master name from query `master_name` (kombu's transport option name); TLS Off.
// * SQLite: `sqlite:///` (empty path) is in-memory like SQLAlchemy; `?uri=true` with a `file:`
//   path strips `file:`; `mode=memory` is in-memory. A host or user in a sqlite URL is an error.
//   SQLite targets have no endpoints: the probe checks `sqlite_path` instead.
// * `;` separates URLs only when what follows (after spaces) is `scheme://`, so a raw `;` in a
//   password survives. Several URLs must share kind and TLS level and be amqp/redis/sentinel;
//   user, password, database and root certificate come from the first URL (first master name).
// * `mask` shows a URL's password as `***` (an empty one as empty), up to the LAST `@` whatever
//   the split, and a lone user name as written for these schemes (`***` for any other scheme,
//   whose `https://TOKEN@host` is a token). It also replaces values of query keys that look secret (containing `pass`, `secret`,
//   `token`, or equal to `pwd`), e.g. libpq `password=` / `sslpassword=`. Messages show the
//   masked URL with control characters escaped, cut after 300 characters.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Kind {
    Postgres,
    Mysql,
    Sqlite,
    Redis,
    RedisSentinel,
    Amqp,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Endpoint {
    /// `host` has no brackets for IPv6: "::1".
    Tcp { host: String, port: u16 },
    /// Socket file path; for Postgres the full socket file path `DIR/.s.PGSQL.PORT`.
    Unix { path: PathBuf },
}

/// How strongly the client is asked to use TLS. `Off` also covers opportunistic modes
/// (Postgres `prefer`/`allow`, MySQL `PREFERRED`), which never fail for lack of TLS.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Tls {
    Off,
    /// Encrypt, do not verify the server certificate.
    Require,
    /// Verify the certificate chain, not the host name.
    VerifyCa,
    /// Verify the chain and that the certificate matches the host name.
    VerifyFull,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    /// As written, e.g. "postgresql+psycopg2" or "db+mysql".
    pub scheme: String,
    /// Usually one; several for failover lists and sentinels (try in order). Empty for SQLite.
    pub endpoints: Vec<Endpoint>,
    /// Percent-decoded; `None` when absent or empty.
    pub user: Option<String>,
    /// Percent-decoded. SECRET: never printed, `Debug` shows `***`.
    pub password: Option<String>,
    /// Postgres/MySQL db name; Redis db number as text; AMQP vhost (decoded, default "/").
    pub database: Option<String>,
    pub tls: Tls,
    /// Postgres `sslrootcert`, MySQL `ssl_ca`, Redis `ssl_ca_certs`, AMQP `cacertfile`.
    pub tls_root_cert: Option<PathBuf>,
    /// SQLite file path; `None` for an in-memory database.
    pub sqlite_path: Option<PathBuf>,
    /// Sentinel master name from `?master_name=`, if given.
    pub sentinel_master: Option<String>,
    /// An `@` was left after the userinfo split: the password may hold a raw `@`, `/`, `?` or
    /// `#`, and the host, port or database may be pieces of it (all are masked in output).
    pub ambiguous: bool,
}

/// Prints as `***`; stands in for the password in `Debug` output.
struct Masked;

impl fmt::Debug for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("scheme", &self.scheme)
            .field("endpoints", &self.endpoints)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| Masked))
            .field("database", &self.database)
            .field("tls", &self.tls)
            .field("tls_root_cert", &self.tls_root_cert)
            .field("sqlite_path", &self.sqlite_path)
            .field("sentinel_master", &self.sentinel_master)
            .field("ambiguous", &self.ambiguous)
            .finish()
    }
}

/// One line: what was found (URL masked) and what was expected.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UrlError {
    pub message: String,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UrlError {}

const SUPPORTED_SCHEMES: &str = "postgresql, postgres, postgresql+<driver> (psycopg2, psycopg, \
asyncpg, pg8000, ...), mysql, mariadb, mysql+<driver> / mariadb+<driver> (mysqldb, pymysql, \
mysqlconnector, mariadbconnector, ...), sqlite, db+<any of these> (Celery result backend), \
redis, rediss, redis+socket, unix, sentinel, amqp, pyamqp, amqps";

const MAX_SHOWN_CHARS: usize = 300;

/// Parses one URL, or a Celery failover list `url;url;...`, into a probe target.
pub fn parse(url: &str) -> Result<Target, UrlError> {
    let url = url.trim();
    let ambiguous = split_segments(url)
        .into_iter()
        .any(|segment| is_ambiguous(segment.trim()));
    let ctx = Ctx {
        shown: show(&mask(url)),
        clear: shape_is_clear(url) && !ambiguous,
        ambiguous,
    };
    if url.is_empty() {
        return Err(UrlError {
            message: format!(
                "found an empty URL; expected a URL such as \
                 postgresql://user:password@host:5432/airflow with a scheme from: {SUPPORTED_SCHEMES}"
            ),
        });
    }
    let mut targets = Vec::new();
    for segment in split_segments(url) {
        targets.push(parse_one(segment.trim(), &ctx)?);
    }
    let mut target = merge(targets, &ctx)?;
    if ambiguous {
        target.ambiguous = true;
        hide_ambiguous_pieces(url, &target);
    }
    Ok(target)
}

/// Registers with `redact::hide` everything of an ambiguous URL that may be
/// a piece of its password: the parsed password, hosts and database, and
/// each piece of the text from the first `:` to the last `@` of a segment.
fn hide_ambiguous_pieces(url: &str, target: &Target) {
    let hide = crate::redact::hide;
    for segment in split_segments(url) {
        let Some((_, rest)) = split_scheme(segment.trim()) else {
            continue;
        };
        let Some(last_at) = rest.rfind('@') else {
            continue;
        };
        let region = rest.get(..last_at).unwrap_or_default();
        let span = match region.split_once(':') {
            Some((_, after_colon)) => after_colon,
            None => region,
        };
        hide(span);
        // The user name is shown in the masked URL anyway.
        span.split(|c: char| c.is_whitespace() || "@/:?#&=;[]".contains(c))
            .filter(|piece| target.user.as_deref() != Some(*piece))
            .for_each(hide);
    }
    if let Some(password) = &target.password {
        hide(password);
    }
    for endpoint in &target.endpoints {
        if let Endpoint::Tcp { host, .. } = endpoint {
            hide(host);
        }
    }
    if let Some(database) = &target.database {
        hide(database);
    }
}

/// The URL with the password replaced by *** (used in every message and log line): everything
/// from the first `:` of the userinfo to the last `@` of each URL, whatever the split.
/// A URL whose shape cannot be told shows only its scheme.
pub fn mask(url: &str) -> String {
    if !url.trim().is_empty() && !shape_is_clear(url.trim()) {
        return shown_less(url.trim());
    }
    let mut out = String::with_capacity(url.len());
    for (i, segment) in split_segments(url).into_iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        mask_segment(segment, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Splitting

/// Splits a Celery failover list at each `;` that is followed (after spaces) by `scheme://`.
fn split_segments(url: &str) -> Vec<&str> {
    let mut segments = Vec::new();
    let mut rest = url;
    let mut search_from = 0usize;
    loop {
        let found = rest
            .get(search_from..)
            .and_then(|tail| tail.find(';'))
            .and_then(|i| i.checked_add(search_from));
        let Some(at) = found else {
            segments.push(rest);
            return segments;
        };
        let (head, tail) = rest.split_at_checked(at).unwrap_or((rest, ""));
        let after = tail.strip_prefix(';').unwrap_or(tail);
        if starts_with_scheme(after.trim_start()) {
            segments.push(head);
            rest = after;
            search_from = 0;
        } else {
            search_from = at.saturating_add(1);
        }
    }
}

fn is_scheme_token(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Looks only at the scheme token, so scanning a long `;;;;` input stays linear.
fn starts_with_scheme(s: &str) -> bool {
    let token_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(s.len());
    match s.split_at_checked(token_len) {
        Some((token, after)) => is_scheme_token(token) && after.starts_with("://"),
        None => false,
    }
}

/// `scheme://rest`, only when the part before the first `://` is a well-formed scheme.
/// Whether masking can be trusted to find the password: every segment
/// starts with `scheme://`, and one without userinfo has a host whose port,
/// if any, is digits. A typo (`postgresql//`, no scheme, a missing `@`)
/// otherwise leaves a password where a scheme, host or port is read.
fn shape_is_clear(url: &str) -> bool {
    split_segments(url).into_iter().all(|segment| {
        let Some((_, rest)) = split_scheme(segment.trim()) else {
            return false;
        };
        // `mask` hides everything up to the last `@`.
        if rest.contains('@') {
            return true;
        }
        let hostport = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let port = match hostport.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((_, after)) => after.strip_prefix(':').unwrap_or(after),
                None => return false,
            },
            None => match hostport.split_once(':') {
                Some((_, port)) => port,
                None => "",
            },
        };
        port.bytes().all(|b| b.is_ascii_digit())
    })
}

/// What may be shown of a URL of unknown shape: its scheme when the text
/// starts with one we know, and `***` for the rest.
fn shown_less(url: &str) -> String {
    let token_end = url
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(url.len());
    let token = url.get(..token_end).unwrap_or_default();
    let followed_by_separator = url
        .get(token_end..)
        .is_some_and(|rest| rest.starts_with([':', '/']));
    if followed_by_separator && is_scheme_token(token) && classify(token).is_some() {
        format!("{token}:***")
    } else {
        "***".to_string()
    }
}

fn split_scheme(segment: &str) -> Option<(&str, &str)> {
    segment
        .split_once("://")
        .filter(|(scheme, _)| is_scheme_token(scheme))
}

/// How the library that will use a URL splits it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    /// SQLAlchemy's `make_url` regex (database URLs).
    SqlAlchemy,
    /// Python's `urllib.parse`, as kombu and redis-py use it (broker URLs).
    Urllib,
}

fn split_rule(scheme: &str) -> Split {
    match classify(scheme) {
        Some(
            Scheme::Redis { .. } | Scheme::RedisSocket | Scheme::Sentinel | Scheme::Amqp { .. },
        ) => Split::Urllib,
        _ => Split::SqlAlchemy,
    }
}

/// Byte index of the `@` that ends the userinfo in the text after `scheme://`.
fn userinfo_end(rest: &str, rule: Split) -> Option<usize> {
    match rule {
        Split::SqlAlchemy => {
            // (?P<username>[^:/]*)(?::(?P<password>[^@]*))?@ with backtracking: a password
            // ends at the first `@` after the `:`; without one, the user name alone ends at
            // its own last `@`.
            let user_len = rest.find([':', '/']).unwrap_or(rest.len());
            let (user, after_user) = rest.split_at_checked(user_len)?;
            if let Some(password_and_rest) = after_user.strip_prefix(':') {
                if let Some(at) = password_and_rest.find('@') {
                    return user_len.checked_add(1)?.checked_add(at);
                }
            }
            user.rfind('@')
        }
        Split::Urllib => {
            let netloc_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            rest.get(..netloc_len)?.rfind('@')
        }
    }
}

struct Parts<'a> {
    userinfo: Option<&'a str>,
    hostport: &'a str,
    /// Text after the first `/` following the host (without that `/`); `None` without a `/`.
    path: Option<&'a str>,
    query: Option<&'a str>,
}

fn split_userinfo(rest: &str, rule: Split) -> (Option<&str>, &str) {
    match userinfo_end(rest, rule).and_then(|at| rest.split_at_checked(at)) {
        Some((userinfo, after)) => (Some(userinfo), after.strip_prefix('@').unwrap_or(after)),
        None => (None, rest),
    }
}

/// True when an `@` is left after the userinfo split of `segment` and a `:`
/// comes before the last `@` (without one there is no password): the
/// password may hold a raw `@`, `/`, `?` or `#`, so what follows may be
/// pieces of it.
fn is_ambiguous(segment: &str) -> bool {
    let Some((scheme, rest)) = split_scheme(segment) else {
        return false;
    };
    let colon_before_last_at = rest
        .rfind('@')
        .and_then(|at| rest.get(..at))
        .is_some_and(|region| region.contains(':'));
    colon_before_last_at && split_userinfo(rest, split_rule(scheme)).1.contains('@')
}

fn split_parts(rest: &str, rule: Split) -> Parts<'_> {
    let (userinfo, after) = split_userinfo(rest, rule);
    // urllib drops a `#fragment`; SQLAlchemy keeps `#` as a character.
    let after = match rule {
        Split::Urllib => after.split('#').next().unwrap_or(after),
        Split::SqlAlchemy => after,
    };
    let (before_query, query) = match after.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (after, None),
    };
    let (hostport, path) = match before_query.split_once('/') {
        Some((hostport, path)) => (hostport, Some(path)),
        None => (before_query, None),
    };
    Parts {
        userinfo,
        hostport,
        path,
        query,
    }
}

// ---------------------------------------------------------------------------------------------
// Masking

fn mask_segment(segment: &str, out: &mut String) {
    let (scheme, rest) = match split_scheme(segment) {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            (Some(scheme), rest)
        }
        None => (None, segment),
    };
    // Whatever the split, everything up to the last `@` may be password.
    let Some(last_at) = rest.rfind('@') else {
        mask_after_userinfo(rest, false, out);
        return;
    };
    let (region, after) = rest.split_at(last_at);
    let after = after.strip_prefix('@').unwrap_or(after);
    let plausible_user =
        |user: &str| !user.contains(|c: char| c.is_whitespace() || "/?#[]".contains(c));
    match region.split_once(':') {
        Some((user, "")) if plausible_user(user) => {
            out.push_str(user);
            out.push(':');
        }
        Some((user, _)) if plausible_user(user) => {
            out.push_str(user);
            out.push_str(":***");
        }
        // A lone user name of a scheme we know; any other may be a token.
        None if plausible_user(region) && scheme.is_some_and(|s| classify(s).is_some()) => {
            out.push_str(region);
        }
        _ => out.push_str("***"),
    }
    out.push('@');
    mask_after_userinfo(after, region.contains('?'), out);
}

/// Host, path and query, with secret query values masked. `in_query`: the
/// `?` was inside the masked part, so all of `text` is query.
fn mask_after_userinfo(text: &str, in_query: bool, out: &mut String) {
    if in_query {
        mask_query(text, out);
        return;
    }
    match text.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            mask_query(query, out);
        }
        None => out.push_str(text),
    }
}

fn mask_query(query: &str, out: &mut String) {
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => {
                out.push_str(key);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
    }
}

fn is_secret_key(key: &str) -> bool {
    crate::redact::is_secret_query_key(&percent_decode(key, true))
}

// ---------------------------------------------------------------------------------------------
// Decoding helpers

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => b.checked_sub(b'0'),
        b'a'..=b'f' => b.checked_sub(b'a' - 10),
        b'A'..=b'F' => b.checked_sub(b'A' - 10),
        _ => None,
    }
}

/// Python-`unquote`-like: bad `%` sequences stay literal, invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let mut look = bytes.clone();
            let hi = look.next().and_then(hex_value);
            let lo = look.next().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi.wrapping_shl(4) | lo);
                bytes = look;
                continue;
            }
            out.push(b);
        } else if plus_is_space && b == b'+' {
            out.push(b' ');
        } else {
            out.push(b);
        }
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Escapes control characters and cuts long text, so a message stays one readable line.
fn show(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i >= MAX_SHOWN_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key, true), percent_decode(value, true))
            })
            .collect();
        Query { pairs }
    }

    /// The last value of `key`, if any.
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The last non-empty value of `key`, if any.
    fn get_non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn tls_rank(tls: &Tls) -> u8 {
    match tls {
        Tls::Off => 0,
        Tls::Require => 1,
        Tls::VerifyCa => 2,
        Tls::VerifyFull => 3,
    }
}

fn stronger(a: Tls, b: Tls) -> Tls {
    if tls_rank(&b) > tls_rank(&a) {
        b
    } else {
        a
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

struct Ctx {
    /// The whole input, masked and made printable (only its scheme when its
    /// shape cannot be told).
    shown: String,
    /// `shape_is_clear` and not ambiguous: host and port text may be quoted in messages.
    clear: bool,
    /// An `@` is left after the userinfo split (see `is_ambiguous`).
    ambiguous: bool,
}

impl Ctx {
    /// A piece of the host-and-port text for a message. In a URL of unclear
    /// shape it may be the password (a missing `@`), so it is not shown.
    fn fragment(&self, text: &str) -> String {
        if self.clear {
            format!("`{}`", show(text))
        } else {
            "(not shown: it may be part of the password)".to_string()
        }
    }

    fn err(&self, found: impl fmt::Display, expected: impl fmt::Display) -> UrlError {
        let hint = if self.ambiguous {
            "; the URL has an `@` after its password, so SQLAlchemy, kombu and redis-py end the \
             password before it: percent-encode `@`, `/`, `?`, `#` and `:` in a password \
             (%40, %2F, %3F, %23, %3A)"
        } else {
            ""
        };
        UrlError {
            message: format!(
                "found {found} in `{}`; expected {expected}{hint}",
                self.shown
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host and port

fn parse_port(text: &str, ctx: &Ctx) -> Result<Option<u16>, UrlError> {
    if text.is_empty() {
        return Ok(None);
    }
    let expected = "a port number from 1 to 65535";
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ctx.err(format!("non-numeric port {}", ctx.fragment(text)), expected));
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(Some(port)),
        _ => Err(ctx.err(
            format!("port {} out of range", ctx.fragment(text)),
            expected,
        )),
    }
}

fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Validates an IPv6 literal (optionally with a zone) and returns it as written.
fn ipv6_host(inner: &str) -> Option<String> {
    let (addr, zone) = match inner.split_once('%') {
        Some((addr, zone)) => (addr, Some(zone.strip_prefix("25").unwrap_or(zone))),
        None => (inner, None),
    };
    addr.parse::<std::net::Ipv6Addr>().ok()?;
    match zone {
        None => Some(addr.to_string()),
        Some(zone) if is_hostname(zone) => Some(format!("{addr}%{zone}")),
        Some(_) => None,
    }
}

const HOST_EXPECTED: &str = "host[:port] with an ASCII host name, an IPv4 address or a bracketed IPv6 address like [::1]:5432";

/// `host[:port]`, `[v6]` or `[v6]:port`. `bare_ipv6` also accepts an unbracketed IPv6 address
/// (libpq's `host=` option). Empty text gives `(None, None)`.
fn parse_hostport(
    text: &str,
    bare_ipv6: bool,
    ctx: &Ctx,
) -> Result<(Option<String>, Option<u16>), UrlError> {
    parse_hostport_as(text, bare_ipv6, Split::SqlAlchemy, ctx)
}

/// As `parse_hostport`; `Split::Urllib` percent-decodes the host name (kombu and
/// redis-py `unquote` it).
fn parse_hostport_as(
    text: &str,
    bare_ipv6: bool,
    rule: Split,
    ctx: &Ctx,
) -> Result<(Option<String>, Option<u16>), UrlError> {
    if text.is_empty() {
        return Ok((None, None));
    }
    if let Some(bracketed) = text.strip_prefix('[') {
        let Some((inner, after)) = bracketed.split_once(']') else {
            return Err(ctx.err(
                format!("unclosed `[` in host {}", ctx.fragment(text)),
                HOST_EXPECTED,
            ));
        };
        let Some(host) = ipv6_host(inner) else {
            return Err(ctx.err(
                format!("invalid IPv6 address {}", ctx.fragment(inner)),
                HOST_EXPECTED,
            ));
        };
        let port = match after.strip_prefix(':') {
            Some(port) => parse_port(port, ctx)?,
            None if after.is_empty() => None,
            None => {
                return Err(ctx.err(
                    format!("{} after the IPv6 address", ctx.fragment(after)),
                    HOST_EXPECTED,
                ));
            }
        };
        return Ok((Some(host), port));
    }
    let bare = if bare_ipv6 && text.matches(':').count() > 1 {
        ipv6_host(text)
    } else {
        None
    };
    if let Some(host) = bare {
        return Ok((Some(host), None));
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, port),
        None => (text, ""),
    };
    if port.contains(':') {
        return Err(ctx.err(
            format!("several `:` in host {}", ctx.fragment(text)),
            "an IPv6 address in brackets, like [::1]:5432",
        ));
    }
    let port = parse_port(port, ctx)?;
    let decoded;
    let host = match rule {
        Split::Urllib if host.contains('%') => {
            decoded = percent_decode(host, false);
            decoded.as_str()
        }
        _ => host,
    };
    if host.is_empty() {
        return Ok((None, port));
    }
    if host.contains('@') {
        return Err(ctx.err(
            format!("an `@` in the host {}", ctx.fragment(host)),
            HOST_EXPECTED,
        ));
    }
    if !is_hostname(host) {
        return Err(ctx.err(
            format!("invalid host {}", ctx.fragment(host)),
            HOST_EXPECTED,
        ));
    }
    Ok((Some(host.to_string()), port))
}

fn tcp(host: Option<String>, port: Option<u16>, default_port: u16) -> Endpoint {
    Endpoint::Tcp {
        host: host.unwrap_or_else(|| "localhost".to_string()),
        port: port.unwrap_or(default_port),
    }
}

// ---------------------------------------------------------------------------------------------
// Schemes

#[derive(Clone, Copy)]
enum Scheme {
    Postgres,
    Mysql,
    Sqlite,
    Redis { tls: bool },
    RedisSocket,
    Sentinel,
    Amqp { tls: bool },
}

fn is_driver_name(driver: &str) -> bool {
    !driver.is_empty()
        && driver
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn classify(scheme: &str) -> Option<Scheme> {
    let lower = scheme.to_ascii_lowercase();
    let (result_backend, base) = match lower.strip_prefix("db+") {
        Some(base) => (true, base),
        None => (false, lower.as_str()),
    };
    let (dialect, driver) = match base.split_once('+') {
        Some((dialect, driver)) => (dialect, Some(driver)),
        None => (base, None),
    };
    let sql = match dialect {
        "postgresql" | "postgres" => Some(Scheme::Postgres),
        "mysql" | "mariadb" => Some(Scheme::Mysql),
        "sqlite" => Some(Scheme::Sqlite),
        _ => None,
    };
    if let Some(sql) = sql {
        return match driver {
            Some(driver) if !is_driver_name(driver) => None,
            _ => Some(sql),
        };
    }
    if result_backend {
        return None;
    }
    match (dialect, driver) {
        ("redis", None) => Some(Scheme::Redis { tls: false }),
        ("rediss", None) => Some(Scheme::Redis { tls: true }),
        ("redis", Some("socket")) | ("unix", None) => Some(Scheme::RedisSocket),
        ("sentinel", None) => Some(Scheme::Sentinel),
        ("amqp" | "pyamqp", None) => Some(Scheme::Amqp { tls: false }),
        ("amqps", None) => Some(Scheme::Amqp { tls: true }),
        _ => None,
    }
}

fn parse_one(segment: &str, ctx: &Ctx) -> Result<Target, UrlError> {
    let Some((scheme, rest)) = split_scheme(segment) else {
        return Err(ctx.err(
            "no `scheme://` prefix",
            format!(
                "a URL such as postgresql://user:password@host:5432/airflow with a scheme from: \
                 {SUPPORTED_SCHEMES}"
            ),
        ));
    };
    let Some(class) = classify(scheme) else {
        return Err(ctx.err(
            format!("unsupported scheme `{}`", show(scheme)),
            format!("one of: {SUPPORTED_SCHEMES}"),
        ));
    };
    let parts = split_parts(rest, split_rule(scheme));
    let query = Query::parse(parts.query);
    let (user, password) = match parts.userinfo {
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, password)) => (
                non_empty(percent_decode(user, false)),
                non_empty(percent_decode(password, false)),
            ),
            None => (non_empty(percent_decode(userinfo, false)), None),
        },
        None => (None, None),
    };
    let mut target = Target {
        kind: Kind::Postgres,
        scheme: scheme.to_string(),
        endpoints: Vec::new(),
        user,
        password,
        database: None,
        tls: Tls::Off,
        tls_root_cert: None,
        sqlite_path: None,
        sentinel_master: None,
        ambiguous: false,
    };
    match class {
        Scheme::Postgres => fill_postgres(&mut target, &parts, &query, ctx)?,
        Scheme::Mysql => fill_mysql(&mut target, &parts, &query, ctx)?,
        Scheme::Sqlite => fill_sqlite(&mut target, &parts, &query, ctx)?,
        Scheme::Redis { tls } => fill_redis(&mut target, &parts, &query, tls, ctx)?,
        Scheme::RedisSocket => fill_redis_socket(&mut target, &parts, &query, ctx)?,
        Scheme::Sentinel => fill_sentinel(&mut target, &parts, &query, ctx)?,
        Scheme::Amqp { tls } => fill_amqp(&mut target, &parts, &query, tls, ctx)?,
    }
    Ok(target)
}

fn decoded_path(path: Option<&str>) -> Option<String> {
    path.map(|p| percent_decode(p, false)).and_then(non_empty)
}

/// SQLAlchemy reads `host:` as port `int('')`, which fails.
fn refuse_empty_sql_port(hostport: &str, ctx: &Ctx) -> Result<(), UrlError> {
    if hostport.ends_with(':') {
        return Err(ctx.err(
            "an empty port after `:`",
            "a port number after the `:`, or no `:` for the default port (SQLAlchemy fails on an empty one)",
        ));
    }
    Ok(())
}

fn fill_postgres(t: &mut Target, p: &Parts, q: &Query, ctx: &Ctx) -> Result<(), UrlError> {
    t.kind = Kind::Postgres;
    refuse_empty_sql_port(p.hostport, ctx)?;
    let (host, port) = parse_hostport(p.hostport, false, ctx)?;
    let port = match q.get("port") {
        Some(text) => parse_port(text, ctx)?.or(port),
        None => port,
    }
    .unwrap_or(5432);
    t.database = decoded_path(p.path);

    let hosts: Vec<&str> = q
        .all("host")
        .flat_map(|v| v.split(','))
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        t.endpoints.push(tcp(host, Some(port), 5432));
    }
    for item in hosts {
        if item.starts_with('/') {
            let path = PathBuf::from(item).join(format!(".s.PGSQL.{port}"));
            t.endpoints.push(Endpoint::Unix { path });
        } else {
            let (host, item_port) = parse_hostport(item, true, ctx)?;
            t.endpoints.push(tcp(host, item_port, port));
        }
    }

    let (key, mode) = match (q.get("sslmode"), q.get("ssl")) {
        (Some(mode), _) => ("sslmode", Some(mode)),
        (None, Some(mode)) => ("ssl", Some(mode)),
        (None, None) => ("sslmode", None),
    };
    let explicit = match mode {
        None => None,
        Some("disable" | "allow" | "prefer") => Some(Tls::Off),
        Some("require") => Some(Tls::Require),
        Some("verify-ca") => Some(Tls::VerifyCa),
        Some("verify-full") => Some(Tls::VerifyFull),
        Some(other) => {
            return Err(ctx.err(
                format!("{key} {}", ctx.fragment(other)),
                format!(
                    "{key} to be one of disable, allow, prefer, require, verify-ca, verify-full"
                ),
            ));
        }
    };
    t.tls = match q.get_non_empty("sslrootcert") {
        Some("system") => match explicit {
            None | Some(Tls::VerifyFull) => Tls::VerifyFull,
            Some(_) => {
                return Err(ctx.err(
                    format!("sslrootcert=system with a weaker {key}"),
                    format!("{key}=verify-full (or no {key}) with sslrootcert=system"),
                ));
            }
        },
        Some(root) => {
            t.tls_root_cert = Some(PathBuf::from(root));
            match explicit {
                Some(Tls::Require) => Tls::VerifyCa,
                other => other.unwrap_or(Tls::Off),
            }
        }
        None => explicit.unwrap_or(Tls::Off),
    };
    Ok(())
}

fn bool_option(q: &Query, key: &str, ctx: &Ctx) -> Result<Option<bool>, UrlError> {
    match q.get(key) {
        None => Ok(None),
        Some(value) => parse_bool(value).map(Some).ok_or_else(|| {
            ctx.err(
                format!("{key} {}", ctx.fragment(value)),
                format!("{key} to be true/false, 1/0, yes/no or on/off"),
            )
        }),
    }
}

fn mysql_tls(q: &Query, ctx: &Ctx) -> Result<Tls, UrlError> {
    if bool_option(q, "ssl_disabled", ctx)? == Some(true) {
        return Ok(Tls::Off);
    }
    if let Some(mode) = q.get("ssl_mode") {
        return match mode.to_ascii_uppercase().as_str() {
            "DISABLED" | "PREFERRED" => Ok(Tls::Off),
            "REQUIRED" => Ok(Tls::Require),
            "VERIFY_CA" => Ok(Tls::VerifyCa),
            "VERIFY_IDENTITY" => Ok(Tls::VerifyFull),
            _ => Err(ctx.err(
                format!("ssl_mode {}", ctx.fragment(mode)),
                "ssl_mode to be one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
            )),
        };
    }
    let mut tls = Tls::Off;
    if bool_option(q, "ssl", ctx)? == Some(true)
        || q.get_non_empty("ssl_cert").is_some()
        || q.get_non_empty("ssl_key").is_some()
    {
        tls = stronger(tls, Tls::Require);
    }
    let verify_cert = bool_option(q, "ssl_verify_cert", ctx)?;
    if q.get_non_empty("ssl_ca").is_some()
        || q.get_non_empty("ssl_capath").is_some()
        || verify_cert == Some(true)
    {
        tls = stronger(tls, Tls::VerifyCa);
    }
    if bool_option(q, "ssl_verify_identity", ctx)? == Some(true)
        || bool_option(q, "ssl_check_hostname", ctx)? == Some(true)
    {
        tls = stronger(tls, Tls::VerifyFull);
    }
    if verify_cert == Some(false) && tls != Tls::Off {
        tls = Tls::Require;
    }
    Ok(tls)
}

fn fill_mysql(t: &mut Target, p: &Parts, q: &Query, ctx: &Ctx) -> Result<(), UrlError> {
    t.kind = Kind::Mysql;
    refuse_empty_sql_port(p.hostport, ctx)?;
    let (host, port) = parse_hostport(p.hostport, false, ctx)?;
    t.database = decoded_path(p.path);
    t.endpoints.push(match q.get_non_empty("unix_socket") {
        Some(socket) => Endpoint::Unix {
            path: PathBuf::from(socket),
        },
        None => tcp(host, port, 3306),
    });
    t.tls = mysql_tls(q, ctx)?;
    t.tls_root_cert = q.get_non_empty("ssl_ca").map(PathBuf::from);
    Ok(())
}

fn fill_sqlite(t: &mut Target, p: &Parts, q: &Query, ctx: &Ctx) -> Result<(), UrlError> {
    t.kind = Kind::Sqlite;
    if p.userinfo.is_some() || !p.hostport.is_empty() {
        return Err(ctx.err(
            "a host or user in a sqlite URL",
            "sqlite:////absolute/path/airflow.db, sqlite:///relative/path.db or sqlite:// (in memory)",
        ));
    }
    let mut path = p.path.map(|p| percent_decode(p, false)).unwrap_or_default();
    if bool_option(q, "uri", ctx)? == Some(true) {
        path = path
            .strip_prefix("file:")
            .map(str::to_string)
            .unwrap_or(path);
    }
    let in_memory = path.is_empty() || path == ":memory:" || q.get("mode") == Some("memory");
    t.sqlite_path = if in_memory {
        None
    } else {
        Some(PathBuf::from(path))
    };
    Ok(())
}

/// Redis db number: query `db`, then kombu's `virtual_host`, then the path.
fn redis_db(path: Option<&str>, q: &Query, ctx: &Ctx) -> Result<Option<String>, UrlError> {
    let raw = q
        .get_non_empty("db")
        .map(str::to_string)
        .or_else(|| q.get_non_empty("virtual_host").map(str::to_string))
        .or_else(|| decoded_path(path));
    let Some(raw) = raw else {
        return Ok(None);
    };
    let db = raw.trim_matches('/');
    if db.is_empty() {
        return Ok(None);
    }
    if !db.bytes().all(|b| b.is_ascii_digit()) || db.len() > 9 {
        return Err(ctx.err(
            format!("Redis database {}", ctx.fragment(db)),
            "a database number, like redis://host:6379/0",
        ));
    }
    Ok(Some(db.to_string()))
}

fn fill_redis(t: &mut Target, p: &Parts, q: &Query, tls: bool, ctx: &Ctx) -> Result<(), UrlError> {
    t.kind = Kind::Redis;
    let (host, port) = parse_hostport_as(p.hostport, false, Split::Urllib, ctx)?;
    t.endpoints.push(tcp(host, port, 6379));
    t.database = redis_db(p.path, q, ctx)?;
    if tls {
        t.tls = match q.get("ssl_cert_reqs") {
            None => Tls::Require,
            Some(reqs) => match reqs.to_ascii_lowercase().as_str() {
                "none" | "cert_none" => Tls::Require,
                "optional" | "cert_optional" => Tls::VerifyCa,
                "required" | "cert_required" => Tls::VerifyFull,
                _ => {
                    return Err(ctx.err(
                        format!("ssl_cert_reqs {}", ctx.fragment(reqs)),
                        "ssl_cert_reqs to be none, optional, required, CERT_NONE, \
                         CERT_OPTIONAL or CERT_REQUIRED",
                    ));
                }
            },
        };
        t.tls_root_cert = q.get_non_empty("ssl_ca_certs").map(PathBuf::from);
    }
    Ok(())
}

fn fill_redis_socket(t: &mut Target, p: &Parts, q: &Query, ctx: &Ctx) -> Result<(), UrlError> {
    t.kind = Kind::Redis;
    let expected = "an absolute socket path, like redis+socket:///run/redis/redis.sock?db=0";
    if !p.hostport.is_empty() {
        return Err(ctx.err("a host in a Redis socket URL", expected));
    }
    let Some(path) = decoded_path(p.path) else {
        return Err(ctx.err("no socket path", expected));
    };
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    t.endpoints.push(Endpoint::Unix {
        path: PathBuf::from(path),
    });
    t.database = redis_db(None, q, ctx)?;
    Ok(())
}

fn fill_sentinel(t: &mut Target, p: &Parts, q: &Query, ctx: &Ctx) -> Result<(), UrlError> {
    t.kind = Kind::RedisSentinel;
    let (host, port) = parse_hostport_as(p.hostport, false, Split::Urllib, ctx)?;
    t.endpoints.push(tcp(host, port, 26379));
    t.database = redis_db(p.path, q, ctx)?;
    t.sentinel_master = q.get_non_empty("master_name").map(str::to_string);
    Ok(())
}

fn fill_amqp(t: &mut Target, p: &Parts, q: &Query, tls: bool, ctx: &Ctx) -> Result<(), UrlError> {
    t.kind = Kind::Amqp;
    let (host, port) = parse_hostport_as(p.hostport, false, Split::Urllib, ctx)?;
    t.endpoints
        .push(tcp(host, port, if tls { 5671 } else { 5672 }));
    t.database = Some(decoded_path(p.path).unwrap_or_else(|| "/".to_string()));
    if tls {
        t.tls = match q.get("verify") {
            None | Some("verify_none") => Tls::Require,
            Some("verify_peer") => Tls::VerifyFull,
            Some(other) => {
                return Err(ctx.err(
                    format!("verify {}", ctx.fragment(other)),
                    "verify to be verify_peer or verify_none",
                ));
            }
        };
        t.tls_root_cert = q.get_non_empty("cacertfile").map(PathBuf::from);
    }
    Ok(())
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Postgres => "postgres",
        Kind::Mysql => "mysql",
        Kind::Sqlite => "sqlite",
        Kind::Redis => "redis",
        Kind::RedisSentinel => "sentinel",
        Kind::Amqp => "amqp",
    }
}

/// Joins a `;`-separated failover list into one target.
fn merge(targets: Vec<Target>, ctx: &Ctx) -> Result<Target, UrlError> {
    let mut iter = targets.into_iter();
    let Some(mut first) = iter.next() else {
        return Err(ctx.err(
            "no URL",
            format!("a URL with a scheme from: {SUPPORTED_SCHEMES}"),
        ));
    };
    for next in iter {
        if !matches!(first.kind, Kind::Amqp | Kind::Redis | Kind::RedisSentinel) {
            return Err(ctx.err(
                format!("several `;`-separated {} URLs", kind_name(&first.kind)),
                "a single URL (only Celery brokers amqp, redis and sentinel take failover lists)",
            ));
        }
        if next.kind != first.kind {
            return Err(ctx.err(
                format!(
                    "a failover list mixing {} and {}",
                    kind_name(&first.kind),
                    kind_name(&next.kind)
                ),
                "every `;`-separated URL to be of the same kind",
            ));
        }
        if next.tls != first.tls {
            return Err(ctx.err(
                "a failover list mixing TLS settings",
                "every `;`-separated URL to use the same TLS setting",
            ));
        }
        first.endpoints.extend(next.endpoints);
        if first.sentinel_master.is_none() {
            first.sentinel_master = next.sentinel_master;
        }
    }
    Ok(first)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(url: &str) -> Target {
        match parse(url) {
            Ok(t) => t,
            Err(e) => panic!("{url} should parse: {e}"),
        }
    }

    fn err(url: &str) -> String {
        match parse(url) {
            Ok(t) => panic!("{url} should fail, got {t:?}"),
            Err(e) => e.message,
        }
    }

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.to_string(),
            port,
        }
    }

    fn unix(path: &str) -> Endpoint {
        Endpoint::Unix {
            path: PathBuf::from(path),
        }
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    // ----- Postgres -------------------------------------------------------------------------

    #[test]
    fn postgres_family_schemes_are_postgres_with_default_port_5432() {
        for scheme in [
            "postgres",
            "postgresql",
            "postgresql+psycopg2",
            "postgresql+psycopg",
            "postgresql+asyncpg",
            "postgresql+pg8000",
        ] {
            let t = ok(&format!("{scheme}://airflow:pw@db/airflow"));
            assert_eq!(t.kind, Kind::Postgres, "{scheme}");
            assert_eq!(t.scheme, scheme);
            assert_eq!(t.endpoints, vec![tcp("db", 5432)], "{scheme}");
            assert_eq!(t.database, s("airflow"));
            assert_eq!(t.tls, Tls::Off);
        }
    }

    #[test]
    fn postgres_full_url_gives_every_component() {
        let t = ok("postgresql+psycopg2://airflow:airflow@postgres:5433/airflow_db");
        assert_eq!(t.user, s("airflow"));
        assert_eq!(t.password, s("airflow"));
        assert_eq!(t.endpoints, vec![tcp("postgres", 5433)]);
        assert_eq!(t.database, s("airflow_db"));
        assert_eq!(t.sqlite_path, None);
        assert_eq!(t.sentinel_master, None);
    }

    #[test]
    fn scheme_matches_case_insensitively_but_is_kept_as_written() {
        let t = ok("PostgreSQL+Psycopg2://h/db");
        assert_eq!(t.kind, Kind::Postgres);
        assert_eq!(t.scheme, "PostgreSQL+Psycopg2");
    }

    #[test]
    fn any_wellformed_sql_driver_name_is_accepted() {
        assert_eq!(ok("postgresql+psycopg2cffi://h/db").kind, Kind::Postgres);
        assert_eq!(ok("mysql+aiomysql://h/db").kind, Kind::Mysql);
        assert_eq!(ok("sqlite+pysqlite:///a.db").kind, Kind::Sqlite);
    }

    #[test]
    fn empty_or_malformed_driver_name_is_rejected() {
        assert!(err("postgresql+://h/db").contains("unsupported scheme"));
        assert!(err("postgresql+psy-copg://h/db").contains("unsupported scheme"));
    }

    #[test]
    fn postgres_query_host_directory_gives_socket_file_with_port() {
        let t = ok("postgresql://airflow:pw@/airflow?host=/var/run/postgresql");
        assert_eq!(t.endpoints, vec![unix("/var/run/postgresql/.s.PGSQL.5432")]);
        let t = ok("postgresql://airflow@:6543/airflow?host=/tmp/");
        assert_eq!(t.endpoints, vec![unix("/tmp/.s.PGSQL.6543")]);
    }

    #[test]
    fn postgres_cloudsql_socket_directory_with_colons_is_kept() {
        let t = ok("postgresql+psycopg2://u:p@/airflow?host=/cloudsql/project:region:instance");
        assert_eq!(
            t.endpoints,
            vec![unix("/cloudsql/project:region:instance/.s.PGSQL.5432")]
        );
    }

    #[test]
    fn postgres_percent_encoded_query_host_is_decoded() {
        let t = ok("postgresql://u@/db?host=%2Fcloudsql%2Fp%3Ar%3Ai");
        assert_eq!(t.endpoints, vec![unix("/cloudsql/p:r:i/.s.PGSQL.5432")]);
    }

    #[test]
    fn postgres_query_host_overrides_authority_host() {
        let t = ok("postgresql://u@ignored:5433/db?host=/sock");
        assert_eq!(t.endpoints, vec![unix("/sock/.s.PGSQL.5433")]);
    }

    #[test]
    fn postgres_multihost_query_gives_endpoints_in_order() {
        let t = ok("postgresql+psycopg2://u:p@/db?host=h1:5433&host=h2&host=[::1]:5434");
        assert_eq!(
            t.endpoints,
            vec![tcp("h1", 5433), tcp("h2", 5432), tcp("::1", 5434)]
        );
        let t = ok("postgresql://u@/db?host=a,b,/s&port=6000");
        assert_eq!(
            t.endpoints,
            vec![tcp("a", 6000), tcp("b", 6000), unix("/s/.s.PGSQL.6000")]
        );
    }

    #[test]
    fn postgres_query_host_accepts_bare_ipv6() {
        let t = ok("postgresql://u@/db?host=fd00::5");
        assert_eq!(t.endpoints, vec![tcp("fd00::5", 5432)]);
    }

    #[test]
    fn postgres_query_port_overrides_authority_port() {
        let t = ok("postgresql://u@h:5433/db?port=5499");
        assert_eq!(t.endpoints, vec![tcp("h", 5499)]);
        assert!(err("postgresql://u@h/db?port=abc").contains("non-numeric port"));
    }

    #[test]
    fn postgres_sslmode_values_map_to_tls_levels() {
        for (mode, tls) in [
            ("disable", Tls::Off),
            ("allow", Tls::Off),
            ("prefer", Tls::Off),
            ("require", Tls::Require),
            ("verify-ca", Tls::VerifyCa),
            ("verify-full", Tls::VerifyFull),
        ] {
            assert_eq!(
                ok(&format!("postgresql://h/db?sslmode={mode}")).tls,
                tls,
                "{mode}"
            );
        }
    }

    #[test]
    fn postgres_unknown_sslmode_is_an_error_listing_valid_modes() {
        let m = err("postgresql://u:pw@h/db?sslmode=maybe");
        assert!(m.contains("sslmode `maybe`"), "{m}");
        assert!(m.contains("verify-full"), "{m}");
        // libpq is case-sensitive, so is this parser.
        assert!(err("postgresql://h/db?sslmode=REQUIRE").contains("sslmode"));
    }

    #[test]
    fn postgres_sslrootcert_is_kept_and_upgrades_require_to_verify_ca() {
        let t = ok("postgresql://h/db?sslmode=verify-full&sslrootcert=/certs/root.crt");
        assert_eq!(t.tls, Tls::VerifyFull);
        assert_eq!(t.tls_root_cert, Some(PathBuf::from("/certs/root.crt")));
        let t = ok("postgresql://h/db?sslmode=require&sslrootcert=/certs/root.crt");
        assert_eq!(t.tls, Tls::VerifyCa);
        let t = ok("postgresql://h/db?sslrootcert=/certs/root.crt");
        assert_eq!(t.tls, Tls::Off);
    }

    #[test]
    fn postgres_sslrootcert_system_defaults_to_verify_full_and_rejects_weaker_modes() {
        let t = ok("postgresql://h/db?sslrootcert=system");
        assert_eq!(t.tls, Tls::VerifyFull);
        assert_eq!(t.tls_root_cert, None);
        assert!(err("postgresql://h/db?sslrootcert=system&sslmode=require").contains("system"));
    }

    #[test]
    fn postgres_asyncpg_ssl_option_is_read_when_sslmode_is_absent() {
        assert_eq!(
            ok("postgresql+asyncpg://h/db?ssl=require").tls,
            Tls::Require
        );
        assert_eq!(
            ok("postgresql+asyncpg://h/db?ssl=require&sslmode=disable").tls,
            Tls::Off
        );
        assert!(err("postgresql+asyncpg://h/db?ssl=true").contains("ssl `true`"));
    }

    #[test]
    fn unknown_query_options_are_ignored() {
        let t = ok("postgresql://h/db?application_name=airflow&connect_timeout=10&options=-c%20x");
        assert_eq!(t.endpoints, vec![tcp("h", 5432)]);
        let t = ok("mysql://h/db?charset=utf8mb4&binary_prefix=true");
        assert_eq!(t.endpoints, vec![tcp("h", 3306)]);
    }

    #[test]
    fn query_values_are_decoded_like_parse_qsl() {
        let t = ok("postgresql://h/db?sslrootcert=/certs/my+ca%2Bx.pem");
        assert_eq!(t.tls_root_cert, Some(PathBuf::from("/certs/my ca+x.pem")));
    }

    // ----- MySQL -----------------------------------------------------------------------------

    #[test]
    fn mysql_family_schemes_are_mysql_with_default_port_3306() {
        for scheme in [
            "mysql",
            "mysql+mysqldb",
            "mysql+pymysql",
            "mysql+mysqlconnector",
            "mariadb",
            "mariadb+mariadbconnector",
        ] {
            let t = ok(&format!("{scheme}://airflow:pw@mysql/airflow"));
            assert_eq!(t.kind, Kind::Mysql, "{scheme}");
            assert_eq!(t.endpoints, vec![tcp("mysql", 3306)], "{scheme}");
            assert_eq!(t.database, s("airflow"));
        }
    }

    #[test]
    fn mysql_unix_socket_query_gives_that_exact_path() {
        let t = ok(
            "mysql+mysqldb://airflow:pw@localhost/airflow?unix_socket=/var/run/mysqld/mysqld.sock",
        );
        assert_eq!(t.endpoints, vec![unix("/var/run/mysqld/mysqld.sock")]);
    }

    #[test]
    fn mysql_ssl_mode_values_map_to_tls_levels() {
        for (mode, tls) in [
            ("DISABLED", Tls::Off),
            ("PREFERRED", Tls::Off),
            ("REQUIRED", Tls::Require),
            ("VERIFY_CA", Tls::VerifyCa),
            ("VERIFY_IDENTITY", Tls::VerifyFull),
            ("required", Tls::Require),
        ] {
            assert_eq!(
                ok(&format!("mysql://h/db?ssl_mode={mode}")).tls,
                tls,
                "{mode}"
            );
        }
        assert!(err("mysql://h/db?ssl_mode=STRICT").contains("ssl_mode `STRICT`"));
    }

    #[test]
    fn mysql_ssl_true_means_require() {
        assert_eq!(ok("mysql+pymysql://h/db?ssl=true").tls, Tls::Require);
        assert_eq!(ok("mysql+pymysql://h/db?ssl=false").tls, Tls::Off);
        assert!(err("mysql+pymysql://h/db?ssl=sure").contains("ssl `sure`"));
    }

    #[test]
    fn mysql_ssl_ca_means_verify_ca_and_is_the_root_cert() {
        let t = ok("mysql+mysqldb://h/db?ssl_ca=/certs/ca.pem&ssl_cert=/c.pem&ssl_key=/k.pem");
        assert_eq!(t.tls, Tls::VerifyCa);
        assert_eq!(t.tls_root_cert, Some(PathBuf::from("/certs/ca.pem")));
    }

    #[test]
    fn mysql_client_cert_alone_means_require() {
        assert_eq!(
            ok("mysql://h/db?ssl_cert=/c.pem&ssl_key=/k.pem").tls,
            Tls::Require
        );
    }

    #[test]
    fn mysql_identity_checks_mean_verify_full() {
        assert_eq!(
            ok("mysql+pymysql://h/db?ssl_ca=/ca&ssl_verify_identity=true").tls,
            Tls::VerifyFull
        );
        assert_eq!(
            ok("mysql+mysqldb://h/db?ssl_ca=/ca&ssl_check_hostname=1").tls,
            Tls::VerifyFull
        );
        assert_eq!(
            ok("mysql+pymysql://h/db?ssl_verify_cert=true").tls,
            Tls::VerifyCa
        );
    }

    #[test]
    fn mysql_verify_cert_false_caps_at_require() {
        assert_eq!(
            ok("mysql+pymysql://h/db?ssl_ca=/ca&ssl_verify_cert=false").tls,
            Tls::Require
        );
    }

    #[test]
    fn mysql_explicit_ssl_mode_wins_and_ssl_disabled_wins_over_all() {
        assert_eq!(
            ok("mysql://h/db?ssl_ca=/ca&ssl_mode=REQUIRED").tls,
            Tls::Require
        );
        assert_eq!(
            ok("mysql+mysqlconnector://h/db?ssl_mode=VERIFY_IDENTITY&ssl_disabled=true").tls,
            Tls::Off
        );
    }

    // ----- SQLite ----------------------------------------------------------------------------

    #[test]
    fn sqlite_four_slashes_is_an_absolute_path() {
        let t = ok("sqlite:////abs/path/airflow.db");
        assert_eq!(t.kind, Kind::Sqlite);
        assert_eq!(t.sqlite_path, Some(PathBuf::from("/abs/path/airflow.db")));
        assert!(t.endpoints.is_empty());
    }

    #[test]
    fn sqlite_three_slashes_is_a_relative_path() {
        let t = ok("sqlite:///relative.db");
        assert_eq!(t.sqlite_path, Some(PathBuf::from("relative.db")));
        assert!(t.sqlite_path.as_ref().unwrap().is_relative());
    }

    #[test]
    fn sqlite_memory_forms_have_no_path() {
        for url in [
            "sqlite://",
            "sqlite:///:memory:",
            "sqlite:///",
            "sqlite:///file::memory:?uri=true",
            "sqlite:///file:x?mode=memory&uri=true",
        ] {
            let t = ok(url);
            assert_eq!(t.kind, Kind::Sqlite, "{url}");
            assert_eq!(t.sqlite_path, None, "{url}");
        }
    }

    #[test]
    fn sqlite_uri_form_strips_file_prefix_and_query() {
        let t = ok("sqlite:///file:/data/airflow.db?mode=ro&uri=true");
        assert_eq!(t.sqlite_path, Some(PathBuf::from("/data/airflow.db")));
    }

    #[test]
    fn sqlite_with_host_is_rejected() {
        assert!(err("sqlite://host/airflow.db").contains("sqlite:////absolute"));
    }

    // ----- Redis -----------------------------------------------------------------------------

    #[test]
    fn redis_defaults_to_port_6379_without_tls() {
        let t = ok("redis://redis:6379/0");
        assert_eq!(t.kind, Kind::Redis);
        assert_eq!(t.endpoints, vec![tcp("redis", 6379)]);
        assert_eq!(t.database, s("0"));
        assert_eq!(t.tls, Tls::Off);
        assert_eq!(ok("redis://redis").endpoints, vec![tcp("redis", 6379)]);
        assert_eq!(ok("redis://redis").database, None);
    }

    #[test]
    fn redis_password_only_userinfo_gives_no_user() {
        let t = ok("redis://:s3cret@redis:6379/1");
        assert_eq!(t.user, None);
        assert_eq!(t.password, s("s3cret"));
        assert_eq!(t.database, s("1"));
    }

    #[test]
    fn redis_non_numeric_db_is_an_error() {
        assert!(err("redis://h/abc").contains("Redis database `abc`"));
    }

    /// Fuzzing (fuzz/corpus/url): in a URL with an `@` after its password
    /// the database (or a query value) may be a piece of the password, and
    /// the error quoted it.
    #[test]
    fn a_database_or_query_value_of_an_ambiguous_url_is_not_quoted() {
        for url in [
            "redis://:@res://::Qz7xSeKr1tPw@redis:6379/x",
            "redis://:pw/Qz7xSeKr1tPw@h@redis:6379/0",
            "postgresql://u:p?sslmode=Qz7xSeKr1tPw@h@db/airflow",
        ] {
            if let Err(message) = parse(url).map_err(|e| e.message) {
                assert!(!message.contains("Qz7x"), "{url}: {message}");
            }
        }
    }

    #[test]
    fn redis_query_db_overrides_path() {
        assert_eq!(ok("redis://h/1?db=3").database, s("3"));
    }

    #[test]
    fn rediss_is_port_6379_with_tls_require_by_default() {
        let t = ok("rediss://:pw@redis/0");
        assert_eq!(t.endpoints, vec![tcp("redis", 6379)]);
        assert_eq!(t.tls, Tls::Require);
    }

    #[test]
    fn rediss_ssl_cert_reqs_values_map_to_tls_levels() {
        for (reqs, tls) in [
            ("none", Tls::Require),
            ("CERT_NONE", Tls::Require),
            ("optional", Tls::VerifyCa),
            ("CERT_OPTIONAL", Tls::VerifyCa),
            ("required", Tls::VerifyFull),
            ("CERT_REQUIRED", Tls::VerifyFull),
        ] {
            assert_eq!(
                ok(&format!("rediss://h:6380/0?ssl_cert_reqs={reqs}")).tls,
                tls,
                "{reqs}"
            );
        }
        assert!(err("rediss://h/0?ssl_cert_reqs=always").contains("ssl_cert_reqs `always`"));
    }

    #[test]
    fn rediss_ssl_ca_certs_is_the_root_cert() {
        let t = ok("rediss://h/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem");
        assert_eq!(t.tls_root_cert, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn redis_socket_scheme_gives_unix_endpoint() {
        let t = ok("redis+socket:///path/redis.sock");
        assert_eq!(t.kind, Kind::Redis);
        assert_eq!(t.endpoints, vec![unix("/path/redis.sock")]);
        assert_eq!(t.database, None);
    }

    #[test]
    fn unix_scheme_gives_redis_unix_endpoint() {
        let t = ok("unix:///path/redis.sock");
        assert_eq!(t.kind, Kind::Redis);
        assert_eq!(t.endpoints, vec![unix("/path/redis.sock")]);
    }

    #[test]
    fn redis_socket_keeps_db_from_virtual_host_or_db_query() {
        assert_eq!(
            ok("redis+socket:///path/redis.sock?virtual_host=1").database,
            s("1")
        );
        let t = ok("unix://:pw@/path/redis.sock?db=2");
        assert_eq!(t.database, s("2"));
        assert_eq!(t.password, s("pw"));
        assert_eq!(t.endpoints, vec![unix("/path/redis.sock")]);
    }

    #[test]
    fn redis_socket_without_path_or_with_host_is_rejected() {
        assert!(err("redis+socket://").contains("no socket path"));
        assert!(err("unix://host/redis.sock").contains("a host in a Redis socket URL"));
    }

    // ----- Sentinel --------------------------------------------------------------------------

    #[test]
    fn sentinel_list_gives_all_endpoints_in_order() {
        let t = ok("sentinel://h1:26379;sentinel://h2:26380;sentinel://h3");
        assert_eq!(t.kind, Kind::RedisSentinel);
        assert_eq!(
            t.endpoints,
            vec![tcp("h1", 26379), tcp("h2", 26380), tcp("h3", 26379)]
        );
        assert_eq!(t.sentinel_master, None);
    }

    #[test]
    fn sentinel_without_master_name_keeps_db() {
        let t = ok("sentinel://:pw@h:26379/0");
        assert_eq!(t.database, s("0"));
        assert_eq!(t.password, s("pw"));
        assert_eq!(t.sentinel_master, None);
    }

    #[test]
    fn sentinel_master_name_query_is_kept() {
        let t = ok("sentinel://h1/0?master_name=mymaster;sentinel://h2/0");
        assert_eq!(t.sentinel_master, s("mymaster"));
        assert_eq!(t.endpoints, vec![tcp("h1", 26379), tcp("h2", 26379)]);
    }

    // ----- AMQP ------------------------------------------------------------------------------

    #[test]
    fn amqp_and_pyamqp_default_to_port_5672_without_tls() {
        for scheme in ["amqp", "pyamqp"] {
            let t = ok(&format!("{scheme}://guest:guest@rabbit/"));
            assert_eq!(t.kind, Kind::Amqp);
            assert_eq!(t.endpoints, vec![tcp("rabbit", 5672)]);
            assert_eq!(t.tls, Tls::Off);
        }
    }

    #[test]
    fn amqps_defaults_to_port_5671_with_tls_require() {
        let t = ok("amqps://guest:guest@rabbit/vh");
        assert_eq!(t.endpoints, vec![tcp("rabbit", 5671)]);
        assert_eq!(t.tls, Tls::Require);
        let t = ok("amqps://rabbit?verify=verify_peer&cacertfile=/ca.pem");
        assert_eq!(t.tls, Tls::VerifyFull);
        assert_eq!(t.tls_root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(err("amqps://rabbit?verify=yes").contains("verify `yes`"));
    }

    #[test]
    fn amqp_vhost_defaults_and_decoding() {
        assert_eq!(ok("amqp://guest@h//").database, s("/"));
        assert_eq!(ok("amqp://guest@h").database, s("/"));
        assert_eq!(ok("amqp://guest@h/").database, s("/"));
        assert_eq!(ok("amqp://guest@h/%2F").database, s("/"));
        assert_eq!(ok("amqp://guest@h/airflow").database, s("airflow"));
        assert_eq!(ok("amqp://guest@h/my%20vh").database, s("my vh"));
        assert_eq!(ok("amqp://guest@h//nested").database, s("/nested"));
    }

    #[test]
    fn amqp_failover_list_gives_all_endpoints_in_order() {
        let t = ok("amqp://u:p@a;amqp://u:p@b:5673//");
        assert_eq!(t.endpoints, vec![tcp("a", 5672), tcp("b", 5673)]);
        assert_eq!(t.user, s("u"));
        assert_eq!(t.database, s("/"));
    }

    #[test]
    fn failover_list_tolerates_spaces_after_separator() {
        let t = ok("redis://a:6379/0; redis://b:6380/0");
        assert_eq!(t.endpoints, vec![tcp("a", 6379), tcp("b", 6380)]);
    }

    #[test]
    fn redis_failover_list_may_mix_tcp_and_socket() {
        let t = ok("redis://a/0;redis+socket:///run/r.sock");
        assert_eq!(t.endpoints, vec![tcp("a", 6379), unix("/run/r.sock")]);
    }

    #[test]
    fn failover_list_of_different_kinds_is_rejected() {
        let m = err("amqp://a;redis://b");
        assert!(m.contains("mixing amqp and redis"), "{m}");
    }

    #[test]
    fn failover_list_mixing_tls_is_rejected() {
        assert!(err("amqp://a;amqps://b").contains("TLS"));
    }

    #[test]
    fn failover_list_of_database_urls_is_rejected() {
        let m = err("postgresql://a/db;postgresql://b/db");
        assert!(m.contains("several `;`-separated postgres URLs"), "{m}");
    }

    #[test]
    fn semicolon_not_followed_by_scheme_stays_in_the_password() {
        let t = ok("amqp://u:pa;ss@h//");
        assert_eq!(t.password, s("pa;ss"));
        assert_eq!(t.endpoints, vec![tcp("h", 5672)]);
    }

    // ----- Celery db+ ------------------------------------------------------------------------

    #[test]
    fn celery_db_prefix_is_the_same_as_without() {
        let t = ok("db+postgresql://u:p@pg/results");
        assert_eq!(t.kind, Kind::Postgres);
        assert_eq!(t.scheme, "db+postgresql");
        assert_eq!(t.endpoints, vec![tcp("pg", 5432)]);
        assert_eq!(t.database, s("results"));
        let t = ok("db+mysql://u:p@my/results");
        assert_eq!(t.kind, Kind::Mysql);
        assert_eq!(t.endpoints, vec![tcp("my", 3306)]);
        assert_eq!(ok("db+mysql+pymysql://my/r").kind, Kind::Mysql);
        assert_eq!(ok("db+sqlite:///results.db").kind, Kind::Sqlite);
    }

    #[test]
    fn celery_db_prefix_before_broker_scheme_is_rejected() {
        assert!(err("db+redis://h/0").contains("unsupported scheme `db+redis`"));
    }

    // ----- Hosts and ports -------------------------------------------------------------------

    #[test]
    fn ipv6_literal_with_port() {
        let t = ok("postgresql://u:p@[::1]:5433/db");
        assert_eq!(t.endpoints, vec![tcp("::1", 5433)]);
    }

    #[test]
    fn ipv6_literal_without_port_uses_default() {
        assert_eq!(ok("redis://[::1]").endpoints, vec![tcp("::1", 6379)]);
        assert_eq!(
            ok("mysql://[2001:db8::10]/db").endpoints,
            vec![tcp("2001:db8::10", 3306)]
        );
    }

    #[test]
    fn ipv6_zone_is_kept() {
        assert_eq!(
            ok("postgresql://[fe80::1%25eth0]:5432/db").endpoints,
            vec![tcp("fe80::1%eth0", 5432)]
        );
    }

    #[test]
    fn bad_ipv6_literals_are_rejected() {
        assert!(err("postgresql://[::1/db").contains("unclosed `[`"));
        assert!(err("postgresql://[zz::1]/db").contains("invalid IPv6 address"));
        assert!(err("postgresql://[::1]x/db").contains("after the IPv6 address"));
        assert!(err("postgresql://::1/db").contains("IPv6 address in brackets"));
    }

    #[test]
    fn ipv4_and_hostnames_are_kept_as_written() {
        assert_eq!(
            ok("postgresql://10.0.0.5/db").endpoints,
            vec![tcp("10.0.0.5", 5432)]
        );
        assert_eq!(
            ok("postgresql://Airflow_DB.svc.cluster.local:5432/db").endpoints,
            vec![tcp("Airflow_DB.svc.cluster.local", 5432)]
        );
    }

    #[test]
    fn missing_host_means_localhost() {
        assert_eq!(
            ok("postgresql:///airflow").endpoints,
            vec![tcp("localhost", 5432)]
        );
        assert_eq!(ok("postgresql://").endpoints, vec![tcp("localhost", 5432)]);
        assert_eq!(
            ok("mysql://u:p@/airflow").endpoints,
            vec![tcp("localhost", 3306)]
        );
        assert_eq!(
            ok("redis://:5555/0").endpoints,
            vec![tcp("localhost", 5555)]
        );
        assert_eq!(ok("amqp://").endpoints, vec![tcp("localhost", 5672)]);
    }

    #[test]
    fn empty_port_is_the_default_for_brokers_and_an_error_for_sql_as_in_their_libraries() {
        // urllib (kombu, redis-py): `h:` has no port.
        assert_eq!(ok("redis://h:/0").endpoints, vec![tcp("h", 6379)]);
        assert_eq!(ok("amqp://h://").endpoints, vec![tcp("h", 5672)]);
        // SQLAlchemy: int('') fails.
        for url in ["postgresql://h:/db", "mysql://u:pw@h:/db"] {
            assert!(err(url).contains("empty port"), "{url}");
        }
    }

    #[test]
    fn missing_port_defaults_as_the_libraries_do() {
        assert_eq!(ok("postgresql://h/db").endpoints, vec![tcp("h", 5432)]);
        assert_eq!(ok("mysql://h/db").endpoints, vec![tcp("h", 3306)]);
        assert_eq!(ok("redis://h/0").endpoints, vec![tcp("h", 6379)]);
        assert_eq!(ok("rediss://h/0").endpoints, vec![tcp("h", 6379)]);
        assert_eq!(ok("sentinel://h").endpoints, vec![tcp("h", 26379)]);
        assert_eq!(ok("amqp://h//").endpoints, vec![tcp("h", 5672)]);
        assert_eq!(ok("pyamqp://h//").endpoints, vec![tcp("h", 5672)]);
        assert_eq!(ok("amqps://h//").endpoints, vec![tcp("h", 5671)]);
    }

    #[test]
    fn broker_host_names_are_percent_decoded_as_kombu_does() {
        assert_eq!(
            ok("redis://%72edis:6379/0").endpoints,
            vec![tcp("redis", 6379)]
        );
        assert_eq!(ok("amqp://r%61bbit//").endpoints, vec![tcp("rabbit", 5672)]);
        // SQLAlchemy passes the host on as written.
        assert!(err("postgresql://%72b/db").contains("invalid host"));
    }

    #[test]
    fn port_out_of_range_is_an_error() {
        for url in [
            "postgresql://h:65536/db",
            "postgresql://h:0/db",
            "redis://h:99999999999999999999",
        ] {
            let m = err(url);
            assert!(m.contains("out of range"), "{m}");
            assert!(m.contains("1 to 65535"), "{m}");
        }
        assert_eq!(
            ok("postgresql://h:65535/db").endpoints,
            vec![tcp("h", 65535)]
        );
    }

    #[test]
    fn non_numeric_port_is_an_error() {
        for url in [
            "postgresql://h:abc/db",
            "postgresql://h:+5432/db",
            "postgresql://h:-1/db",
            "postgresql://h: 5432/db",
        ] {
            assert!(err(url).contains("non-numeric port"), "{url}");
        }
    }

    #[test]
    fn invalid_host_characters_are_rejected() {
        assert!(err("postgresql://h%20x/db").contains("invalid host"));
        assert!(err("postgresql://héllo/db").contains("invalid host"));
    }

    // ----- Userinfo --------------------------------------------------------------------------

    #[test]
    fn percent_encoded_user_and_password_are_decoded() {
        let t = ok("postgresql://us%3Aer%40x:p%40ss%2Fw%3Ard%25@h/db");
        assert_eq!(t.user, s("us:er@x"));
        assert_eq!(t.password, s("p@ss/w:rd%"));
    }

    #[test]
    fn empty_user_or_password_means_none_as_in_redis_py_kombu_and_sqlalchemy() {
        // The quick-start Compose file's broker: Redis without a password.
        let t = ok("redis://:@redis:6379/0");
        assert_eq!(t.user, None);
        assert_eq!(t.password, None);
        assert_eq!(t.endpoints, vec![tcp("redis", 6379)]);
        assert_eq!(t.database, s("0"));
        assert_eq!(mask("redis://:@redis:6379/0"), "redis://:@redis:6379/0");
        for url in [
            "postgresql://u:@h/db",
            "postgresql+psycopg2://u:@h/db",
            "mysql+mysqldb://u:@h/db",
            "redis://u:@h/0",
            "amqp://u:@rabbit//",
        ] {
            let t = ok(url);
            assert_eq!(t.user, s("u"), "{url}");
            assert_eq!(t.password, None, "{url}");
        }
        let t = ok("amqp://:@rabbit//");
        assert_eq!((t.user, t.password), (None, None));
        assert_eq!(ok("postgresql://:@h/db").password, None);
    }

    #[test]
    fn user_without_password_gives_none() {
        let t = ok("postgresql://u@h/db");
        assert_eq!(t.user, s("u"));
        assert_eq!(t.password, None);
    }

    #[test]
    fn no_userinfo_gives_no_user_and_no_password() {
        let t = ok("postgresql://h/db");
        assert_eq!(t.user, None);
        assert_eq!(t.password, None);
    }

    #[test]
    fn sql_urls_split_as_sqlalchemy_make_url_does() {
        // make_url (SQLAlchemy 2.1.9): the password ends at the FIRST `@`.
        let t = ok("postgresql://user:Pw7@zq9k/x4@db:5432/airflow");
        assert_eq!(t.user, s("user"));
        assert_eq!(t.password, s("Pw7"));
        assert_eq!(t.endpoints, vec![tcp("zq9k", 5432)]);
        assert_eq!(t.database, s("x4@db:5432/airflow"));
        assert!(t.ambiguous);
        // A user name alone ends at its last `@`; a user name may hold `@`.
        let t = ok("postgresql://us@er:pw@host/db");
        assert_eq!((t.user, t.password), (s("us@er"), s("pw")));
        assert!(!t.ambiguous);
        let t = ok("mysql://us@er@host/db");
        assert_eq!(t.user, s("us@er"));
        assert_eq!(t.endpoints, vec![tcp("host", 3306)]);
        // No `:`: a `/` before the `@` means no userinfo.
        let t = ok("postgresql://u/x@h/db");
        assert_eq!(t.user, None);
        assert_eq!(t.database, s("x@h/db"));
        // `host:5432/db@x`: user `host`, password `5432/db`, as make_url reads it.
        let t = ok("postgresql://h:5432/db@x");
        assert_eq!((t.user, t.password), (s("h"), s("5432/db")));
        assert_eq!(t.endpoints, vec![tcp("x", 5432)]);
    }

    #[test]
    fn a_raw_at_leaving_an_at_in_the_host_is_an_error_that_shows_no_piece_of_it() {
        // make_url reads host `ss@host`, which no driver can reach.
        let m = err("postgresql://u:p@ss@host:5432/db");
        assert!(m.contains("an `@` in the host"), "{m}");
        assert!(m.contains("not shown"), "{m}");
        assert!(m.contains("%40"), "{m}");
        assert!(!m.contains("ss@") && !m.contains(":p@"), "{m}");
    }

    #[test]
    fn broker_urls_split_as_urllib_does_for_kombu_and_redis_py() {
        // The userinfo ends at the LAST `@` of the authority.
        let t = ok("redis://:p@ss@host/0");
        assert_eq!(t.password, s("p@ss"));
        assert_eq!(t.endpoints, vec![tcp("host", 6379)]);
        assert!(!t.ambiguous);
        let t = ok("amqp://u:p@ss@rabbit:5672/vh");
        assert_eq!(t.password, s("p@ss"));
        assert_eq!(t.endpoints, vec![tcp("rabbit", 5672)]);
        // `/`, `?` and `#` end the authority: the "password" is then a port, as in kombu.
        for url in ["redis://:p/w@h/0", "redis://:p?w@h/0", "redis://:p#w@h/0"] {
            let m = err(url);
            assert!(m.contains("not shown") && m.contains("%2F"), "{url}: {m}");
            assert!(!m.contains("`p`"), "{url}: {m}");
        }
        // The fragment is dropped.
        assert_eq!(ok("redis://h:6380/1#x").endpoints, vec![tcp("h", 6380)]);
        // An ambiguous broker URL, split as kombu does: host `zq9k`.
        let t = ok("amqp://u:Pw7@zq9k/x4@rabbit:5672/vh");
        assert_eq!(t.endpoints, vec![tcp("zq9k", 5672)]);
        assert!(t.ambiguous);
    }

    #[test]
    fn an_ambiguous_url_hides_every_piece_of_its_password_from_later_lines() {
        let url = "postgresql://user:Pw7@zq9k/x4@db:5432/airflow";
        assert_eq!(mask(url), "postgresql://user:***@db:5432/airflow");
        let _ = ok(url);
        for line in [
            "cannot resolve zq9k: Name or service not known",
            "at=zq9k:5432",
            "database \"x4@db:5432/airflow\" does not exist",
            "password Pw7 x4",
        ] {
            let shown = crate::redact::redact(line);
            for piece in ["zq9k", "Pw7", "x4"] {
                assert!(!shown.contains(piece), "{line} -> {shown}");
            }
        }
        // A plain URL registers nothing.
        let _ = ok("postgresql://airflow:plainpw@plainhost/plaindb");
        assert_eq!(
            crate::redact::redact("plainhost plaindb plainpw"),
            "plainhost plaindb plainpw"
        );
        // Nor does an `@` with no `:` before it (no password to be part of).
        let t = ok("sqlite:////tmp/a@b.db");
        assert!(!t.ambiguous);
        assert!(!ok("postgresql://u@h/db@x").ambiguous);
    }

    #[test]
    fn raw_slash_question_and_colon_in_password_are_kept() {
        let t = ok("postgresql://u:a/b?c:d@host/db?sslmode=require");
        assert_eq!(t.password, s("a/b?c:d"));
        assert_eq!(t.endpoints, vec![tcp("host", 5432)]);
        assert_eq!(t.database, s("db"));
        assert_eq!(t.tls, Tls::Require);
    }

    #[test]
    fn at_sign_in_path_or_query_is_not_userinfo() {
        let t = ok("postgresql://host/db@x");
        assert_eq!(t.user, None);
        assert_eq!(t.database, s("db@x"));
        let t = ok("postgresql://u:p@host/db?sslrootcert=/me@corp/ca.pem");
        assert_eq!(t.password, s("p"));
        assert_eq!(t.tls_root_cert, Some(PathBuf::from("/me@corp/ca.pem")));
    }

    #[test]
    fn database_name_is_percent_decoded() {
        assert_eq!(ok("postgresql://h/my%2Fdb%3F").database, s("my/db?"));
    }

    // ----- Errors ----------------------------------------------------------------------------

    #[test]
    fn empty_string_is_an_error_listing_schemes() {
        for url in ["", "   ", "\n"] {
            let m = err(url);
            assert!(m.contains("empty URL"), "{m}");
            assert!(m.contains("postgresql") && m.contains("amqps"), "{m}");
        }
    }

    #[test]
    fn garbage_is_an_error_listing_schemes() {
        for url in [
            "garbage",
            "://x",
            "1abc://x",
            "postgresql:/h/db",
            "user:pw@host",
        ] {
            let m = err(url);
            assert!(m.contains("no `scheme://` prefix"), "{url}: {m}");
            assert!(m.contains("sentinel"), "{m}");
        }
    }

    #[test]
    fn unknown_scheme_is_an_error_listing_supported_schemes() {
        for url in [
            "oracle://scott:tiger@db/orcl",
            "http://example.com",
            "mssql+pyodbc://h/db",
            "redis+tcp://h",
        ] {
            let m = err(url);
            assert!(m.contains("unsupported scheme"), "{m}");
            assert!(
                m.contains("postgresql+<driver>") && m.contains("pyamqp"),
                "{m}"
            );
        }
        assert!(!err("oracle://scott:tiger@db/orcl").contains("tiger"));
    }

    #[test]
    fn error_message_shows_masked_url_and_expectation_on_one_line() {
        let m = err("postgresql://airflow:hunter2@db:99999/airflow");
        assert_eq!(
            m,
            "found port `99999` out of range in `postgresql://airflow:***@db:99999/airflow`; \
             expected a port number from 1 to 65535"
        );
        let m = err("postgresql://u:p@db:x/a\n\rb");
        assert!(!m.contains('\n') && !m.contains('\r'), "{m}");
    }

    #[test]
    fn repeated_query_key_last_one_wins() {
        assert_eq!(
            ok("postgresql://h/db?sslmode=disable&sslmode=verify-full").tls,
            Tls::VerifyFull
        );
    }

    #[test]
    fn long_urls_are_cut_in_messages() {
        let url = format!("oracle://u:pw@h/{}", "x".repeat(5000));
        let m = err(&url);
        assert!(m.contains('…'), "{m}");
        assert!(m.len() < 1500, "{}", m.len());
    }

    #[test]
    fn huge_inputs_are_handled_quickly() {
        let started = std::time::Instant::now();
        for url in [
            ";".repeat(200_000),
            format!("amqp://h{}", ";a".repeat(100_000)),
            "@".repeat(200_000),
            format!("amqp://{}", "%".repeat(200_000)),
        ] {
            let _ = parse(&url);
            let _ = mask(&url);
        }
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(ok("  redis://h/0\n").endpoints, vec![tcp("h", 6379)]);
    }

    #[test]
    fn url_error_display_is_its_message() {
        let e = parse("oracle://x").unwrap_err();
        assert_eq!(e.to_string(), e.message);
    }

    // ----- Secrets ---------------------------------------------------------------------------

    const SECRET: &str = "Zx9-SECRET-pw";

    fn secret_urls() -> Vec<String> {
        let p = SECRET;
        vec![
            format!("postgresql://airflow:{p}@db:5432/airflow"),
            format!("postgresql+psycopg2://airflow:{p}@db/airflow?sslmode=require"),
            format!("mysql+mysqldb://airflow:{p}@mysql/airflow?ssl_ca=/ca.pem"),
            format!("redis://:{p}@redis:6379/0"),
            format!("rediss://default:{p}@redis:6380/0?ssl_cert_reqs=required"),
            format!("unix://:{p}@/run/redis.sock?db=1"),
            format!("sentinel://:{p}@s1:26379;sentinel://:{p}@s2:26379"),
            format!("amqp://guest:{p}@rabbit:5672//"),
            format!("amqps://guest:{p}@a;amqps://guest:{p}@b"),
            format!("db+postgresql://u:{p}@pg/results"),
            format!("postgresql://u:a/{p}?@h/db"),
            format!("redis://:x@{p}@h/0"),
            format!("amqp://u:{p}@zq9k/x4@rabbit//"),
            format!("postgresql://u:{p}@zq9k/x4@db/airflow"),
            format!("postgresql://u@h/db?password={p}"),
            format!("postgresql://u@h/db?sslpassword={p}&sslmode=require"),
        ]
    }

    fn secret_error_urls() -> Vec<String> {
        let p = SECRET;
        vec![
            format!("oracle://scott:{p}@db/orcl"),
            format!("http://u:{p}@example.com"),
            format!("postgresql://airflow:{p}@db:99999/airflow"),
            format!("postgresql://airflow:{p}@db:abc/airflow"),
            format!("postgresql://airflow:{p}@db/airflow?sslmode=bogus"),
            format!("postgresql://airflow:{p}@[::1/airflow"),
            format!("postgresql://airflow:{p}@bad host/airflow"),
            format!("mysql://u:{p}@h/db?ssl_mode=nope"),
            format!("rediss://:{p}@h/0?ssl_cert_reqs=maybe"),
            format!("redis://:{p}@h/notanumber"),
            format!("amqp://u:{p}@a;redis://:{p}@b"),
            format!("postgresql://u:{p}@a/db;postgresql://u:{p}@b/db"),
            format!("sqlite://u:{p}@host/x.db"),
            format!("redis+socket://:{p}@"),
            format!("  amqp://u:{p}@h:70000//  "),
            format!("u:{p}@host"),
            format!("db+redis://:{p}@h/0"),
            format!("postgresql://u:x@{p}@h/db"),
            format!("postgresql://u:{p}@ss@h/db"),
            format!("redis://:{p}/x@h/0"),
            format!("redis://:{p}#x@h/0"),
            format!("postgresql://u:{p}@h:/db"),
        ]
    }

    #[test]
    fn debug_output_never_contains_the_password() {
        for url in secret_urls() {
            let t = ok(&url);
            let debug = format!("{t:?}");
            let pretty = format!("{t:#?}");
            assert!(!debug.contains(SECRET), "{debug}");
            assert!(!pretty.contains(SECRET), "{pretty}");
            if t.password.is_some() {
                assert!(debug.contains("password: Some(***)"), "{debug}");
            }
        }
    }

    #[test]
    fn password_is_still_parsed_for_secret_urls() {
        let t = ok(&format!("postgresql://airflow:{SECRET}@db:5432/airflow"));
        assert_eq!(t.password.as_deref(), Some(SECRET));
        assert!(format!("{t:?}").contains("password: Some(***)"));
        assert!(format!("{:?}", ok("postgresql://h/db")).contains("password: None"));
    }

    #[test]
    fn error_messages_never_contain_the_password() {
        for url in secret_error_urls() {
            let e = parse(&url).unwrap_err();
            assert!(!e.message.contains(SECRET), "{url} -> {}", e.message);
            assert!(!format!("{e:?}").contains(SECRET), "{url}");
            assert!(!e.to_string().contains(SECRET), "{url}");
            assert!(e.message.contains("***"), "{url} -> {}", e.message);
        }
    }

    /// Typos whose shape hides where the password is: missing `:` after the
    /// scheme, no scheme at all, a missing `@` (the password reads as a
    /// port or a host), stray text.
    fn malformed_secret_urls() -> Vec<String> {
        let p = SECRET;
        vec![
            format!("postgresql//airflow:{p}@db/airflow"),
            format!("postgresql:/airflow:{p}@db/airflow"),
            format!("//airflow:{p}@db/airflow"),
            format!("airflow:{p}@db/airflow"),
            format!("postgresql://airflow:{p}db/airflow"),
            format!("postgresql://airflow:{p}/airflow"),
            format!("postgresql://airflow:{p}"),
            format!("mysql://airflow:{p}#db/airflow"),
            format!("redis://:{p}"),
            format!("amqp://guest:{p}rabbit:5672//"),
            format!("postgresql:airflow:{p}@db/airflow"),
            format!("{p}"),
            format!("password={p}"),
            format!("Error: could not read secret {p}"),
            format!("postgresql://airflow:{p}@db/airflow garbage"),
            format!("host=db user=airflow password={p} dbname=airflow"),
            format!("postgresql+psycopg2//airflow:{p}@db:5432/airflow?sslmode=require"),
        ]
    }

    #[test]
    fn malformed_urls_show_the_scheme_when_recognisable_and_what_was_expected() {
        let e = parse(&format!("postgresql//airflow:{SECRET}@db/airflow")).unwrap_err();
        assert!(e.message.contains("in `postgresql:***`"), "{}", e.message);
        assert!(
            e.message.contains("expected a URL such as"),
            "{}",
            e.message
        );
        let e = parse(&format!("//airflow:{SECRET}@db/airflow")).unwrap_err();
        assert!(e.message.contains("in `***`"), "{}", e.message);
        let e = parse(&format!("amqp://guest:{SECRET}rabbit:5672//")).unwrap_err();
        assert!(e.message.contains("in `amqp:***`"), "{}", e.message);
        assert!(e.message.contains("not shown"), "{}", e.message);
        assert_eq!(mask("password-only-text"), "***");
        // A port of digits, IPv6 and no userinfo are still clear shapes.
        assert!(parse("postgresql://db:5432/airflow").is_ok());
        assert!(parse("postgresql://[::1]:5432/airflow").is_ok());
    }

    #[test]
    fn malformed_urls_never_show_the_password() {
        for url in malformed_secret_urls() {
            match parse(&url) {
                Err(e) => {
                    assert!(!e.message.contains(SECRET), "{url} -> {}", e.message);
                    assert!(!format!("{e:?}").contains(SECRET), "{url}");
                }
                Ok(t) => assert!(!format!("{t:?}").contains(SECRET), "{url}"),
            }
            let masked = mask(&url);
            assert!(!masked.contains(SECRET), "{url} -> {masked}");
        }
    }

    #[test]
    fn mask_hides_password_in_valid_and_rejected_urls() {
        for url in secret_urls().into_iter().chain(secret_error_urls()) {
            let masked = mask(&url);
            assert!(!masked.contains(SECRET), "{url} -> {masked}");
            assert!(masked.contains("***"), "{url} -> {masked}");
        }
    }

    #[test]
    fn mask_examples() {
        assert_eq!(
            mask("postgresql://airflow:airflow@db:5432/airflow"),
            "postgresql://airflow:***@db:5432/airflow"
        );
        assert_eq!(
            mask("redis://:pw@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            mask("postgresql://u:p@ss@host/db"),
            "postgresql://u:***@host/db"
        );
        assert_eq!(mask("postgresql://u@host/db"), "postgresql://u@host/db");
        assert_eq!(mask("postgresql://u:@host/db"), "postgresql://u:@host/db");
        assert_eq!(
            mask("postgresql://user:Pw7@zq9k/x4@db:5432/airflow"),
            "postgresql://user:***@db:5432/airflow"
        );
        assert_eq!(
            mask("postgresql://u:a?b@h/db?password=x"),
            "postgresql://u:***@h/db?password=***"
        );
        assert_eq!(mask("postgresql://u/x:pw@h/db"), "postgresql://***@h/db");
        assert_eq!(mask("sqlite:////tmp/a.db"), "sqlite:////tmp/a.db");
        assert_eq!(
            mask("amqp://a:1@x;amqp://b:2@y//"),
            "amqp://a:***@x;amqp://b:***@y//"
        );
        assert_eq!(
            mask("postgresql://h/db?password=x&sslmode=require"),
            "postgresql://h/db?password=***&sslmode=require"
        );
        assert_eq!(
            mask("oracle://scott:tiger@db/orcl"),
            "oracle://scott:***@db/orcl"
        );
        assert_eq!(mask(""), "");
        // No shape to trust: only a known scheme is shown.
        assert_eq!(mask("garbage"), "***");
    }

    // ----- Properties ------------------------------------------------------------------------

    fn encode(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// (host as it appears in the URL, host as parse must return it)
    fn host_strategy() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            "[a-zA-Z0-9]([a-zA-Z0-9_-]{0,12}[a-zA-Z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}"
                .prop_map(|h| (h.clone(), h)),
            any::<std::net::Ipv4Addr>().prop_map(|a| (a.to_string(), a.to_string())),
            any::<std::net::Ipv6Addr>().prop_map(|a| (format!("[{a}]"), a.to_string())),
        ]
    }

    fn nasty_string() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z0-9:/@\\[\\]%;?&=+#.,é€ \n\t-]{0,60}",
            (
                prop::sample::select(vec![
                    "postgresql",
                    "postgresql+psycopg2",
                    "db+mysql",
                    "mysql",
                    "sqlite",
                    "redis",
                    "rediss",
                    "redis+socket",
                    "unix",
                    "sentinel",
                    "amqp",
                    "amqps",
                    "oracle",
                ]),
                "[a-zA-Z0-9:/@\\[\\]%;?&=+#.,é€_ -]{0,60}",
            )
                .prop_map(|(scheme, rest)| format!("{scheme}://{rest}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_and_mask_never_panic_and_errors_are_one_line(url in nasty_string()) {
            let _ = mask(&url);
            if let Err(e) = parse(&url) {
                prop_assert!(!e.message.contains('\n'));
                prop_assert!(e.message.contains("expected"));
            }
        }

        #[test]
        fn password_never_leaks_for_any_rest_of_url(
            scheme in prop::sample::select(vec!["postgresql", "mysql", "redis", "amqp", "sentinel", "sqlite", "oracle", ""]),
            user in "[a-z0-9_.-]{0,8}",
            tail in "[A-Za-z0-9/?:#!$@ ]{0,6}",
            rest in "[a-z0-9:/@\\[\\]%;?&=+#.é-]{0,40}",
        ) {
            let password = format!("PW{tail}");
            prop_assume!(!rest.contains("PW") && !rest.contains(&password));
            let sep = if scheme.is_empty() { "" } else { "://" };
            let url = format!("{scheme}{sep}{user}:{password}@{rest}");
            let masked = mask(&url);
            prop_assert!(!masked.contains(&password), "{} -> {}", url, masked);
            match parse(&url) {
                Ok(t) => {
                    let debug = format!("{t:?}");
                    prop_assert!(!debug.contains(&password), "{}", debug);
                }
                Err(e) => prop_assert!(!e.message.contains(&password), "{}", e.message),
            }
        }

        #[test]
        fn no_host_or_database_cut_from_a_password_survives_redact(
            scheme in prop::sample::select(vec!["postgresql", "mysql", "redis", "amqp", "sentinel"]),
            user in "[a-z]{1,6}",
            head in "[A-Za-z0-9]{1,6}",
            tail in "[A-Za-z0-9@/?#:]{0,12}",
            host in "[a-z]{3,8}",
        ) {
            crate::redact::forget_hidden();
            let password = format!("{head}{tail}");
            let url = format!("{scheme}://{user}:{password}@{host}/0");
            let Ok(t) = parse(&url) else {
                return Ok(());
            };
            let from_password = |piece: &str| {
                !piece.is_empty()
                    && piece != host
                    && piece != "localhost"
                    && piece != "0"
                    && !piece.eq_ignore_ascii_case("airflow")
                    && piece.chars().any(char::is_alphanumeric)
                    && password.contains(piece)
            };
            for endpoint in &t.endpoints {
                if let Endpoint::Tcp { host: h, .. } = endpoint {
                    if from_password(h) {
                        let line = format!("cannot resolve {h}: no such host; at={h}:1");
                        let shown = crate::redact::redact(&line);
                        // The piece itself, not its letters in the line's own words.
                        prop_assert!(
                            !shown.contains(&format!("resolve {h}:")) && !shown.contains(&format!("at={h}:")),
                            "{} -> {}", url, shown
                        );
                    }
                }
            }
            if let Some(d) = t.database.as_deref().filter(|d| from_password(d)) {
                let line = format!("database \"{d}\" does not exist");
                let shown = crate::redact::redact(&line);
                prop_assert!(!shown.contains(&format!("\"{d}\"")), "{} -> {}", url, shown);
            }
        }

        #[test]
        fn generated_postgres_urls_round_trip(
            scheme in prop::sample::select(vec![
                "postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg",
                "postgresql+asyncpg", "postgresql+pg8000", "db+postgresql",
            ]),
            user in any::<String>(),
            password in proptest::option::of(any::<String>()),
            (host_in_url, host) in host_strategy(),
            port in proptest::option::of(1u16..=65535),
            db in any::<String>(),
            sslmode in proptest::option::of(prop::sample::select(vec![
                ("disable", Tls::Off), ("prefer", Tls::Off), ("require", Tls::Require),
                ("verify-ca", Tls::VerifyCa), ("verify-full", Tls::VerifyFull),
            ])),
        ) {
            let userinfo = match (&password, user.is_empty()) {
                (None, true) => String::new(),
                (None, false) => format!("{}@", encode(&user)),
                (Some(p), _) => format!("{}:{}@", encode(&user), encode(p)),
            };
            let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
            let query = sslmode.as_ref().map(|(m, _)| format!("?sslmode={m}")).unwrap_or_default();
            let url = format!("{scheme}://{userinfo}{host_in_url}{port_text}/{}{query}", encode(&db));
            let t = parse(&url).map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(t.kind, Kind::Postgres);
            prop_assert_eq!(&t.scheme, scheme);
            prop_assert_eq!(t.endpoints, vec![Endpoint::Tcp { host, port: port.unwrap_or(5432) }]);
            prop_assert_eq!(t.user, if user.is_empty() { None } else { Some(user.clone()) });
            // An empty password is none (SQLAlchemy's translate_connect_args drops it).
            prop_assert_eq!(&t.password, &password.clone().filter(|p| !p.is_empty()));
            prop_assert_eq!(t.database, if db.is_empty() { None } else { Some(db.clone()) });
            prop_assert_eq!(t.tls, sslmode.map(|(_, tls)| tls).unwrap_or(Tls::Off));
            prop_assert_eq!(t.tls_root_cert, None);
            prop_assert_eq!(t.sqlite_path, None);
            let masked_userinfo = match (&password, user.is_empty()) {
                (None, true) => String::new(),
                (None, false) => format!("{}@", encode(&user)),
                (Some(p), _) if p.is_empty() => format!("{}:@", encode(&user)),
                (Some(_), _) => format!("{}:***@", encode(&user)),
            };
            let expected_mask = format!("{scheme}://{masked_userinfo}{host_in_url}{port_text}/{}{query}", encode(&db));
            prop_assert_eq!(mask(&url), expected_mask);
        }
    }
}
