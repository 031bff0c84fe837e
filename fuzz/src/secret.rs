//! The planted secret and `redact`'s promise about it: whatever the input,
//! no message the code produces shows it.

/// Planted where a password goes (a URL's userinfo, a probe's target).
/// Unlikely to be made up by the fuzzer or to occur in any fixed message.
pub const SECRET: &str = "Qz7xSeKr1tPw";

/// What a log line would show of `message`: every line passes through
/// `redact` on its way out.
pub fn assert_logged_line_hides(message: &str, what: &str) {
    let shown = crate::redact::redact(message);
    assert!(
        !shown.contains(SECRET),
        "{what}: the planted secret survives redact: {shown:?}"
    );
}

/// For a server's text that held the planted URL: the log line must not
/// show it whole with its password. A URL the server's own framing cut
/// before its `@` (or its scheme) no longer looks like one, as the same
/// text from a real server would not: that is not checked.
pub fn assert_whole_url_masked(message: &str, what: &str) {
    let shown = crate::redact::redact(message);
    assert!(
        !shown.contains(&format!("://airflow:{SECRET}@")),
        "{what}: the planted URL's password survives redact: {shown:?}"
    );
}

/// For code that promises never to put input in a message at all (the
/// env-file and airflow.cfg errors, the wire clients' verdicts unless the
/// server itself sent the secret back).
pub fn assert_message_hides(message: &str, what: &str) {
    assert!(
        !message.contains(SECRET),
        "{what}: the planted secret is in the message: {message:?}"
    );
    assert_logged_line_hides(message, what);
}

/// True when `data` holds the secret itself: a server that echoes it back
/// is then quoted, which is not a leak of ours.
pub fn sent_back(data: &[u8]) -> bool {
    data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
}
