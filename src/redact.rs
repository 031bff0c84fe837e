//! The one place that knows what a secret looks like in free text.
//! Every log line and error message passes through `redact` on its way out;
//! it must never panic and may over-mask, but never under-mask.
//!
//! What is masked:
//! * in every `scheme://user:PASSWORD@host`, everything from the first `:`
//!   after the user name to the LAST `@` before the next URL, so a password
//!   holding a raw `@`, `/`, `?`, `#`, a space or a quote is masked whole;
//!   and, as `url::mask` does, a `:…@` later in a URL without such a
//!   password (`mysql://u@h/x?s=/a:PW@redis`);
//! * a token-only `scheme://TOKEN@host` (`https://ghp_...@github.com`), for
//!   every scheme but the database and broker ones, whose lone user name
//!   (`postgresql://airflow@db`) is a user, not a secret;
//! * the value of a secret query key (`?password=...`, `sslpassword`, `token`);
//! * every text registered with `hide` (pieces of a URL whose split is
//!   ambiguous), wherever it appears as a word of its own.

use std::borrow::Cow;

pub const MASK: &str = "***";

/// True for a URL query key that carries a secret (libpq's `password=` and
/// `sslpassword=`, a `token=`, ...); `key` is already percent-decoded.
pub fn is_secret_query_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("pass") || key.contains("secret") || key.contains("token") || key == "pwd"
}

/// Characters that end a URL in free text (for its host, path and query;
/// a password is looked for further, up to its last `@`).
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>')
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

/// Schemes whose `scheme://name@host` names a user, not a token: SQLAlchemy
/// dialects and Celery brokers (as Airflow's own libraries read them).
fn user_only_is_a_user(scheme: &str) -> bool {
    let scheme = scheme.to_ascii_lowercase();
    let scheme = scheme.strip_prefix("db+").unwrap_or(&scheme);
    [
        "postgres", "mysql", "mariadb", "sqlite", "oracle", "mssql", "redis", "unix", "sentinel",
        "amqp", "pyamqp",
    ]
    .iter()
    .any(|known| scheme.starts_with(known))
}

/// Where each URL of `text` starts: (start of its scheme, index just after
/// its `://`).
fn url_starts(text: &str) -> Vec<(usize, usize)> {
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|t| t.find("://")) {
        let at = from + found;
        let head = text.get(..at).unwrap_or_default();
        let scheme_len: usize = head
            .chars()
            .rev()
            .take_while(|c| is_scheme_char(*c))
            .map(char::len_utf8)
            .sum();
        starts.push((at - scheme_len, at + 3));
        from = at + 3;
    }
    starts
}

/// Masks the password of every `scheme://user:password@host` in `text`, a
/// token-only userinfo, the value of every secret query parameter
/// (`?password=...`) and every text registered with `hide`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let urls_masked = redact_urls(text);
    match mask_hidden(&urls_masked) {
        Some(masked) => Cow::Owned(masked),
        None => urls_masked,
    }
}

fn redact_urls(text: &str) -> Cow<'_, str> {
    let starts = url_starts(text);
    if starts.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut copied_to = 0;
    for (i, &(scheme_start, body_start)) in starts.iter().enumerate() {
        if body_start < copied_to {
            // Inside the masked part of the URL before.
            continue;
        }
        let limit = starts
            .get(i + 1)
            .map_or(text.len(), |&(next_scheme, _)| next_scheme.max(body_start));
        let scheme = text.get(scheme_start..body_start - 3).unwrap_or_default();
        let window = text.get(body_start..limit).unwrap_or_default();
        out.push_str(text.get(copied_to..body_start).unwrap_or_default());
        let (shown, rest_from) = mask_userinfo(scheme, window);
        changed |= shown.is_some();
        if let Some(shown) = shown {
            out.push_str(&shown);
        }
        // Host, path and query run to the end of the URL.
        let rest = window.get(rest_from..).unwrap_or_default();
        let url_len = rest.find(ends_url).unwrap_or(rest.len());
        let (url_rest, _) = rest.split_at(url_len);
        let query_inside_mask = window.get(..rest_from).is_some_and(|m| m.contains('?'));
        changed |= mask_url_rest(url_rest, query_inside_mask, &mut out);
        copied_to = body_start + rest_from + url_len;
    }
    out.push_str(text.get(copied_to..).unwrap_or_default());
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// The userinfo at the start of `window` (the text after `scheme://`, up to
/// the next URL), masked: `(Some(shown text), end of userinfo)`, or
/// `(None, 0)` when there is nothing to mask.
fn mask_userinfo(scheme: &str, window: &str) -> (Option<String>, usize) {
    let user_len = window
        .find(|c: char| c == ':' || c == '/' || ends_url(c))
        .unwrap_or(window.len());
    let user = window.get(..user_len).unwrap_or_default();
    let after_user = window.get(user_len..).unwrap_or_default();
    if after_user.starts_with(':') {
        // `user:password@host`: the password runs to the last `@` that a
        // host (or the path, or nothing) may follow; an `@` in prose after
        // the URL ("an `@` in ...") is followed by something else.
        if let Some((masked, len)) = mask_colon_to_last_at(after_user) {
            return (Some(format!("{user}{masked}")), user_len + len);
        }
    }
    // `name@host`: a user for database and broker URLs, else a token.
    let (shown, rest_from) = match user.rfind('@') {
        Some(at) if !user_only_is_a_user(scheme) && at > 0 => (Some(format!("{MASK}@")), at + 1),
        _ => (None, 0),
    };
    // A `:` later in the URL (after a `/`, a space or a user's `@`) with an
    // `@` after it: masked like a password, as `url::mask` does
    // (`mysql://u@h/x?s=/a::PW@redis` reads PW as part of a query value,
    // but a typo may have put a password there).
    let rest = window.get(rest_from..).unwrap_or_default();
    match mask_colon_to_last_at(rest) {
        Some((masked, len)) => (Some(shown.unwrap_or_default() + &masked), rest_from + len),
        None => (shown, rest_from),
    }
}

/// `text` up to its last userinfo `@`, with everything from its first `:`
/// to that `@` masked (`:***@`, or `:@` when empty), and the length it
/// covers; `None` without such a `:` and `@`.
fn mask_colon_to_last_at(text: &str) -> Option<(String, usize)> {
    let last_at = last_userinfo_at(text)?;
    let colon = text.get(..last_at)?.find(':')?;
    let kept = text.get(..colon).unwrap_or_default();
    let masked = match text.get(colon + 1..last_at) {
        Some("") => format!("{kept}:@"),
        _ => format!("{kept}:{MASK}@"),
    };
    Some((masked, last_at + 1))
}

/// The last `@` in `text` that is not followed by a backquote: in prose
/// after the URL "an `@`" is quoted so. Anything else may follow the `@`
/// that ends a password (fuzzing found passwords shown before an `@`
/// followed by a space, a control character, a quote or `\u{fffd}`): a
/// host of any characters, or no host at all, as at the end of a server's
/// cut message.
fn last_userinfo_at(text: &str) -> Option<usize> {
    text.match_indices('@').map(|(i, _)| i).rev().find(|&i| {
        match text.get(i + 1..).and_then(|t| t.chars().next()) {
            None => true,
            Some(c) => c != '`',
        }
    })
}

/// Copies host, path and query to `out`, masking secret query values;
/// `query_inside_mask`: the `?` was inside the masked userinfo, so all of
/// `rest` is query. True when it masked something.
fn mask_url_rest(rest: &str, query_inside_mask: bool, out: &mut String) -> bool {
    if query_inside_mask {
        return mask_query_secrets(rest, out);
    }
    let before_query = rest.find(['?', '#']).unwrap_or(rest.len());
    let (head, query) = rest.split_at(before_query);
    out.push_str(head);
    mask_query_secrets(query, out)
}

/// Copies `query` (`?a=1&password=x#frag`, or empty) to `out` with the value
/// of every secret key masked; true when it masked one. A key still holding
/// `%` escapes is masked too: it may spell `password`, and over-masking is
/// allowed here.
fn mask_query_secrets(query: &str, out: &mut String) -> bool {
    let is_separator = |c: char| matches!(c, '?' | '&' | ';' | '#');
    let mut changed = false;
    for piece in query.split_inclusive(is_separator) {
        let body = piece.strip_suffix(is_separator).unwrap_or(piece);
        match body.split_once('=') {
            Some((key, _)) if key.contains('%') || is_secret_query_key(key) => {
                out.push_str(key);
                out.push('=');
                out.push_str(MASK);
                out.push_str(piece.get(body.len()..).unwrap_or_default());
                changed = true;
            }
            _ => out.push_str(piece),
        }
    }
    changed
}

// ---------------------------------------------------------------------------
// Texts hidden by value

/// At most this many texts are hidden by value (each log line is searched
/// for every one of them).
const MAX_HIDDEN: usize = 64;

// The process's list; in unit tests one list per test thread, so that a
// test registering `db` cannot change what another test's line looks like.
#[cfg(not(test))]
static HIDDEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[cfg(not(test))]
fn with_hidden<T>(f: impl FnOnce(&mut Vec<String>) -> T) -> T {
    let mut list = HIDDEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut list)
}

#[cfg(test)]
thread_local! {
    static HIDDEN: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
fn with_hidden<T>(f: impl FnOnce(&mut Vec<String>) -> T) -> T {
    HIDDEN.with(|list| f(&mut list.borrow_mut()))
}

/// Forgets this test thread's hidden texts (property tests parse many URLs).
#[cfg(test)]
pub fn forget_hidden() {
    with_hidden(Vec::clear);
}

/// From now on, masks `text` wherever it stands as a word of its own (not
/// inside a longer word) in any line. For pieces of a URL that may be part
/// of its password, such as the host SQLAlchemy reads from
/// `user:Pw7@zq9k/x4@db`, which then shows in DNS errors and `at=`.
pub fn hide(text: &str) {
    let text = text.trim();
    // As Airflow's own masker (SECRETS_TO_SKIP_MASKING): masking the word
    // `airflow` in every line would hide what the lines are about.
    // Nor punctuation alone (AMQP's default vhost `/`): it holds nothing
    // worth hiding, and masking it would garble every path in every line.
    if !text.chars().any(char::is_alphanumeric) || text.eq_ignore_ascii_case("airflow") {
        return;
    }
    with_hidden(|list| {
        if list.len() < MAX_HIDDEN && !list.iter().any(|known| known == text) {
            list.push(text.to_string());
            // Longest first, so a text is masked before a piece of it.
            list.sort_by_key(|known| std::cmp::Reverse(known.len()));
        }
    });
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `text` with every hidden text masked; None when none occurs.
fn mask_hidden(text: &str) -> Option<String> {
    with_hidden(|list| {
        let mut current: Option<String> = None;
        for hidden in list.iter() {
            let source = current.as_deref().unwrap_or(text);
            if let Some(masked) = mask_word(source, hidden) {
                current = Some(masked);
            }
        }
        current
    })
}

/// `text` with every stand-alone occurrence of `word` replaced by `***`.
fn mask_word(text: &str, word: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied_to = 0;
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|t| t.find(word)) {
        let start = from + found;
        let end = start + word.len();
        let before = text.get(..start).and_then(|t| t.chars().next_back());
        let after = text.get(end..).and_then(|t| t.chars().next());
        let starts_word = word.chars().next().is_some_and(is_word_char);
        let ends_word = word.chars().next_back().is_some_and(is_word_char);
        let joins_before = starts_word && before.is_some_and(is_word_char);
        let joins_after = ends_word && after.is_some_and(is_word_char);
        if !joins_before && !joins_after {
            out.push_str(text.get(copied_to..start).unwrap_or_default());
            out.push_str(MASK);
            copied_to = end;
        }
        from = start + word.chars().next().map_or(1, char::len_utf8);
    }
    if copied_to == 0 {
        return None;
    }
    out.push_str(text.get(copied_to..).unwrap_or_default());
    Some(out)
}

// ---------------------------------------------------------------------------
// Sensitive variable names

/// Words in a variable name that mark its whole value as secret: Airflow's
/// secrets masker's `DEFAULT_SENSITIVE_FIELDS` (matched, as there, anywhere
/// in the name), and the options its configuration marks `sensitive`
/// (fernet_key, sql_alchemy_conn, sql_alchemy_engine_args, broker_url,
/// result_backend, secret_key, jwt_secret, *_kwargs, [openlineage] transport).
const SENSITIVE_WORDS: &[&str] = &[
    // DEFAULT_SENSITIVE_FIELDS (airflow/_shared/secrets_masker, Airflow 3.3)
    "ACCESS_KEY",
    "ACCESS_TOKEN",
    "API_KEY",
    "APIKEY",
    "AUTH_HEADER",
    "AUTHORIZATION",
    "BEARER",
    "CONNECTION_STRING",
    "DSN",
    "PASSPHRASE",
    "PASSWD",
    "PASSWORD",
    "PRIVATE_KEY",
    "PROXY",
    "PROXIES",
    "SECRET",
    "SERVICE_ACCOUNT",
    "SERVICE_KEY",
    "TOKEN",
    "KEYFILE_DICT",
    "WEBHOOK_URL",
    // Options marked sensitive in Airflow's and the Celery provider's config
    "FERNET",
    "CREDENTIAL",
    "SQL_ALCHEMY_CONN",
    "SQL_ALCHEMY_ENGINE_ARGS",
    "BROKER_URL",
    "RESULT_BACKEND",
    "BACKEND_KWARGS",
    "SENTINEL_KWARGS",
    "ASSET_MANAGER_KWARGS",
    "REMOTE_TASK_HANDLER_KWARGS",
    "BASIC_AUTH",
    "OPENLINEAGE__TRANSPORT",
];

/// True when Airflow would treat this variable's value as a secret.
/// Connections (`AIRFLOW_CONN_*`) always are: they may be JSON with a password.
pub fn is_sensitive_key(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("AIRFLOW_CONN_") {
        return true;
    }
    // A `_CMD` variable holds a command, not the secret itself.
    if upper.ends_with("_CMD") {
        return false;
    }
    SENSITIVE_WORDS.iter().any(|w| upper.contains(w))
}

/// The value as it may be shown: `***` for a sensitive key, else redacted.
pub fn mask_value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if is_sensitive_key(name) && !value.is_empty() {
        Cow::Borrowed(MASK)
    } else {
        redact(value)
    }
}

#[cfg(test)]
mod tests {
    use super::{hide, is_sensitive_key, mask_value, redact};
    use proptest::prelude::*;

    /// Fuzzing (fuzz/corpus/url, fuzz/corpus/postgres): a password whose
    /// `@` is followed by no host, as at the end of a server's cut message.
    #[test]
    fn a_password_before_an_at_with_no_host_after_it_is_masked() {
        for line in [
            "failed for postgresql://airflow:Qz7xSeKr1tPw@ (SQLSTATE 28P01)",
            "postgresql://user:p:Qz7xSeKr1tPw@\0\0\0\u{2}b/x?host=/run/pg",
            "answered \"postgresql://airflow:Qz7xSeKr1tPw@\"",
            "postgre%ql://use\u{fffd}:p@ss:Qz7xSeKr1tPw@\u{fffd}\u{fffd}db///upg",
            "redis://:Qz7xSeKr1tPw@!host:6379",
            // CI's fuzz run: user `airflow` ends at `@`, the `:…@` is in the query.
            "mys0l+mysqldb://airflow@localhost/airflow?unix_socket=/r:\u{fffd}/::Qz7xSeKr1tPw@redis:6ck&password=x",
            "mysql://airflow@db/x y:Qz7xSeKr1tPw@z",
            "postgresql://airflow/db:Qz7xSeKr1tPw@h",
        ] {
            assert!(!redact(line).contains("Qz7xSeKr1tPw"), "{line}");
        }
    }

    #[test]
    fn sensitive_keys_are_recognised() {
        for key in [
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__CELERY__BROKER_URL",
            "AIRFLOW__CELERY__RESULT_BACKEND",
            "AIRFLOW__WEBSERVER__SECRET_KEY",
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "_AIRFLOW_WWW_USER_PASSWORD",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET",
            "AIRFLOW_CONN_MY_DB",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in [
            "AIRFLOW_HOME",
            "AIRFLOW__CORE__EXECUTOR",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD",
        ] {
            assert!(!is_sensitive_key(key), "{key}");
        }
        assert_eq!(mask_value("AIRFLOW__CORE__FERNET_KEY", "abc"), "***");
        assert_eq!(mask_value("X", "redis://:pw@r:1/0"), "redis://:***@r:1/0");
    }

    #[test]
    fn names_airflows_secrets_masker_treats_as_secret_are_sensitive() {
        for key in [
            "AIRFLOW_VAR_OPENAI_APIKEY",
            "AIRFLOW_VAR_STRIPE_API_KEY",
            "AIRFLOW_VAR_SSH_PASSPHRASE",
            "AIRFLOW_VAR_HTTP_AUTHORIZATION",
            "AIRFLOW_VAR_GCP_KEYFILE_DICT",
            "AIRFLOW_VAR_GCP_SERVICE_ACCOUNT",
            "AIRFLOW_VAR_SFTP_PRIVATE_KEY",
            "AIRFLOW_VAR_S3_ACCESS_TOKEN",
            "AIRFLOW_VAR_SLACK_WEBHOOK_URL",
            "AIRFLOW_VAR_AZURE_CONNECTION_STRING",
            "AIRFLOW_VAR_AUTH_HEADER",
            "AIRFLOW_VAR_BEARER",
            "AIRFLOW_VAR_HTTPS_PROXY",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_ENGINE_ARGS",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
            "AIRFLOW__OPENLINEAGE__TRANSPORT",
            "AIRFLOW__CORE__ASSET_MANAGER_KWARGS",
            "AIRFLOW__LOGGING__REMOTE_TASK_HANDLER_KWARGS",
            "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__SENTINEL_KWARGS",
            "AIRFLOW__CELERY__FLOWER_BASIC_AUTH",
            "AIRFLOW__SENTRY__SENTRY_DSN",
        ] {
            assert!(is_sensitive_key(key), "{key}");
            assert_eq!(mask_value(key, "{\"k\": \"v\"}"), "***", "{key}");
        }
    }

    #[test]
    fn masks_the_password_of_a_database_url() {
        assert_eq!(
            redact("connecting to postgresql://airflow:s3cret@db:5432/airflow now"),
            "connecting to postgresql://airflow:***@db:5432/airflow now"
        );
    }

    #[test]
    fn masks_a_password_holding_at_and_slash() {
        assert_eq!(
            redact("redis://:p@ss/w@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            redact("postgresql://user:Pw7@zq9k/x4@db:5432/airflow"),
            "postgresql://user:***@db:5432/airflow"
        );
    }

    #[test]
    fn masks_a_password_holding_url_enders() {
        for password in [
            "p w",
            "p\"w",
            "p'w",
            "p`w",
            "p<w>",
            "p?w",
            "p#w",
            "a b?c#d'e",
        ] {
            let text = format!("url=postgresql://u:{password}@h/db?sslmode=require done");
            let shown = redact(&text);
            assert_eq!(
                shown, "url=postgresql://u:***@h/db?sslmode=require done",
                "{password}"
            );
        }
    }

    #[test]
    fn masks_a_token_only_url_but_not_a_database_user() {
        assert_eq!(
            redact("pip install git+https://ghp_T0KEN@github.com/org/repo.git@v1 x"),
            "pip install git+https://***@github.com/org/repo.git@v1 x"
        );
        assert_eq!(
            redact("https://TOKEN@pypi.example.com/simple"),
            "https://***@pypi.example.com/simple"
        );
        assert_eq!(
            mask_value(
                "_PIP_ADDITIONAL_REQUIREMENTS",
                "pkg --index-url https://tok3n@host/simple"
            ),
            "pkg --index-url https://***@host/simple"
        );
        for kept in [
            "postgresql://airflow@db/airflow",
            "db+mysql://u@h/d",
            "amqp://guest@rabbit//",
            "redis://default@r:6379/0",
        ] {
            assert_eq!(redact(kept), kept);
        }
    }

    #[test]
    fn an_empty_password_is_shown_empty() {
        assert_eq!(redact("redis://:@redis:6379/0"), "redis://:@redis:6379/0");
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        let text = "http://localhost:8080/health and postgresql://airflow@db/airflow";
        assert_eq!(redact(text), text);
        let text = "see https://airflow.apache.org/docs/ and http://[::1]:8080/x?a=b";
        assert_eq!(redact(text), text);
    }

    #[test]
    fn masks_a_colon_at_after_a_password_less_user() {
        assert_eq!(
            redact("mysql://airflow@db/airflow?unix_socket=/run/a:pw@host"),
            "mysql://airflow@db/airflow?unix_socket=/run/a:***@host"
        );
        assert_eq!(
            redact("https://TOKEN@h/x:pw@y z"),
            "https://***@h/x:***@y z"
        );
        // No `@` after the `:`: nothing to mask.
        let text = "postgresql://airflow@db/airflow: connection refused";
        assert_eq!(redact(text), text);
    }

    #[test]
    fn masks_every_url_in_a_line() {
        assert_eq!(
            redact("a=mysql://u:x@h/d b='amqp://g:y@r//'"),
            "a=mysql://u:***@h/d b='amqp://g:***@r//'"
        );
        assert_eq!(
            redact("amqp://a:1@x;amqp://b:2@y//"),
            "amqp://a:***@x;amqp://b:***@y//"
        );
    }

    #[test]
    fn masks_secret_query_parameters() {
        assert_eq!(
            redact("url=postgresql://u@h/db?password=x&sslmode=require done"),
            "url=postgresql://u@h/db?password=***&sslmode=require done"
        );
        assert_eq!(
            redact("postgresql://u:p@h/db?sslpassword=k;PWD=y#token=z"),
            "postgresql://u:***@h/db?sslpassword=***;PWD=***#token=***"
        );
        // An escaped key may spell a secret one: masked.
        assert_eq!(
            redact("postgresql://h/db?pass%77ord=x&a=b%20c"),
            "postgresql://h/db?pass%77ord=***&a=b%20c"
        );
        assert_eq!(
            redact("postgresql://h/db?sslmode=require&application_name=x"),
            "postgresql://h/db?sslmode=require&application_name=x"
        );
        assert_eq!(
            redact("postgresql://h/db?&=&password"),
            "postgresql://h/db?&=&password"
        );
        // A `?` inside the masked password: the rest is all query.
        assert_eq!(
            redact("postgresql://u:a?b@h/db?password=x"),
            "postgresql://u:***@h/db?password=***"
        );
    }

    #[test]
    fn an_at_in_prose_after_the_url_does_not_widen_the_mask() {
        assert_eq!(
            redact("found an `@` in the host in `postgresql://u:***@h:5432/db`; expected x; the URL has an `@` after its password: percent-encode `@`"),
            "found an `@` in the host in `postgresql://u:***@h:5432/db`; expected x; the URL has an `@` after its password: percent-encode `@`"
        );
        assert_eq!(
            redact("postgresql://u:p`w@h/db and an `@`"),
            "postgresql://u:***@h/db and an `@`"
        );
    }

    #[test]
    fn hidden_texts_are_masked_as_words_of_their_own() {
        hide("zq9k");
        hide("x4@db:5432/airflow");
        assert_eq!(
            redact("cannot resolve zq9k: no such host; at=zq9k:5432"),
            "cannot resolve ***: no such host; at=***:5432"
        );
        assert_eq!(
            redact("database \"x4@db:5432/airflow\" does not exist"),
            "database \"***\" does not exist"
        );
        // Not inside a longer word.
        assert_eq!(redact("zq9kx azq9k"), "zq9kx azq9k");
        // Never `airflow`, as in Airflow's masker.
        hide("airflow");
        hide("Airflow");
        assert_eq!(redact("airflow-entrypoint"), "airflow-entrypoint");
        hide("");
        hide("   ");
        hide("/");
        hide("?/");
        assert_eq!(redact("a/b ?/"), "a/b ?/");
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn never_panics_on_odd_text() {
        for text in [
            "://",
            "a://@",
            "x://:@",
            "é://ü:ö@ß",
            "://://:@@",
            "s://u:p",
            "é://",
            "ab://cd@ef://gh:ij@kl",
        ] {
            let _ = redact(text);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_password_never_survives_redact(
            scheme in prop::sample::select(vec!["postgresql", "mysql+mysqldb", "redis", "amqp", "https", "git+https", "x"]),
            user in "[a-z0-9_.-]{0,8}",
            tail in "[A-Za-z0-9 @/?#\"'<>&=;%!$]{0,12}",
            host in "[a-z0-9.-]{1,10}",
            before in "[a-z =:'\"]{0,10}",
            after in "[a-z ?/=&:'\"]{0,10}",
        ) {
            let password = format!("PW{tail}");
            let text = format!("{before}{scheme}://{user}:{password}@{host}/db{after}");
            let shown = redact(&text);
            prop_assert!(!shown.contains(&password), "{} -> {}", text, shown);
        }

        #[test]
        fn a_token_never_survives_redact(
            scheme in prop::sample::select(vec!["https", "http", "git+https", "s3"]),
            token in "[A-Za-z0-9_-]{4,20}",
            host in "[a-z0-9.-]{1,10}",
        ) {
            let token = format!("TK{token}");
            let text = format!("pip install {scheme}://{token}@{host}/simple pkg");
            let shown = redact(&text);
            prop_assert!(!shown.contains(&token), "{} -> {}", text, shown);
        }

        #[test]
        fn redact_never_panics(text in any::<String>()) {
            let _ = redact(&text);
        }
    }
}
