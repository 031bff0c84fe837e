//! The one place that knows what a secret looks like in free text.
//! Every log line and error message passes through `redact` on its way out;
//! it must never panic and may over-mask, but never under-mask.

use std::borrow::Cow;

pub const MASK: &str = "***";

/// Masks the password of every `scheme://user:password@host` in `text`.
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
        match url[..before_query].rfind('@') {
            Some(at) => match url[..at].find(':') {
                Some(colon) => {
                    out.push_str(&url[..=colon]);
                    out.push_str(MASK);
                    out.push_str(&url[at..]);
                    changed = true;
                }
                None => out.push_str(url),
            },
            None => out.push_str(url),
        }
        rest = &tail[url_end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

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
