//! The one place that knows what a secret looks like in free text.
//! Every log line and error message passes through `redact` on its way out;
//! it must never panic and may over-mask, but never under-mask.

use std::borrow::Cow;

pub const MASK: &str = "***";

/// True for a URL query key that carries a secret (libpq's `password=` and
/// `sslpassword=`, a `token=`, ...); `key` is already percent-decoded.
pub fn is_secret_query_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("pass") || key.contains("secret") || key.contains("token") || key == "pwd"
}

/// Masks the password of every `scheme://user:password@host` in `text`, and
/// the value of every secret query parameter (`?password=...`) in it.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The URL runs to the next whitespace or quote character.
        let url_end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(tail.len());
        let url = &tail[..url_end];
        // The userinfo ends at the last '@' before any query or fragment, so a
        // password holding a raw '@' or '/' is still masked whole.
        let before_query = url.find(['?', '#']).unwrap_or(url.len());
        let (authority_and_path, query) = url.split_at(before_query);
        match authority_and_path.rfind('@') {
            Some(at) => match authority_and_path[..at].find(':') {
                Some(colon) => {
                    out.push_str(&authority_and_path[..=colon]);
                    out.push_str(MASK);
                    out.push_str(&authority_and_path[at..]);
                    changed = true;
                }
                None => out.push_str(authority_and_path),
            },
            None => out.push_str(authority_and_path),
        }
        changed |= mask_query_secrets(query, &mut out);
        rest = &tail[url_end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
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
                out.push_str(&piece[body.len()..]);
                changed = true;
            }
            _ => out.push_str(piece),
        }
    }
    changed
}

/// Words in a variable name that mark its whole value as secret, after
/// Airflow's own list of sensitive options (fernet_key, sql_alchemy_conn,
/// broker_url, result_backend, secret_key, jwt_secret, passwords, ...).
const SENSITIVE_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "FERNET",
    "PRIVATE_KEY",
    "CREDENTIAL",
    "SQL_ALCHEMY_CONN",
    "BROKER_URL",
    "RESULT_BACKEND",
    "SENTRY_DSN",
    "BACKEND_KWARGS",
    "BASIC_AUTH",
    "API_KEY",
    "ACCESS_KEY",
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
    use super::{is_sensitive_key, mask_value, redact};

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
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        let text = "http://localhost:8080/health and postgresql://airflow@db/airflow";
        assert_eq!(redact(text), text);
    }

    #[test]
    fn masks_every_url_in_a_line() {
        assert_eq!(
            redact("a=mysql://u:x@h/d b='amqp://g:y@r//'"),
            "a=mysql://u:***@h/d b='amqp://g:***@r//'"
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
        ] {
            let _ = redact(text);
        }
    }
}
