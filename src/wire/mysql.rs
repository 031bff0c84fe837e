//! MySQL/MariaDB probe: the server speaks first. A protocol-10 greeting
//! means it accepts clients; an error packet instead is classified by its
//! code. TLS (ssl* options) starts only after this plaintext greeting, so
//! the greeting is the readiness signal either way.

use std::time::Duration;

use super::transport::{connect, io_reason};
use super::url::Target;
use super::Verdict;
use std::io::Read;

pub fn probe(target: &Target, timeout: Duration) -> Verdict {
    let Some(endpoint) = target.endpoints.first() else {
        return Verdict::Fatal("no host to connect to".into());
    };
    let mut socket = match connect(endpoint, timeout) {
        Ok(s) => s,
        Err(v) => return v,
    };
    let mut header = [0u8; 4];
    if let Err(e) = socket.read_exact(&mut header) {
        return Verdict::NotYet(io_reason(&e));
    }
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len == 0 || len > 64 * 1024 {
        return Verdict::Fatal(format!("not a MySQL server (greeting length {len})"));
    }
    let mut payload = vec![0u8; len];
    if let Err(e) = socket.read_exact(&mut payload) {
        return Verdict::NotYet(io_reason(&e));
    }
    classify_greeting(&payload)
}

pub fn classify_greeting(payload: &[u8]) -> Verdict {
    match payload.first() {
        Some(10) => Verdict::Ready,
        Some(0xff) => {
            let code = payload
                .get(1..3)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .unwrap_or(0);
            let mut text = payload.get(3..).unwrap_or_default();
            if text.first() == Some(&b'#') {
                text = text.get(6..).unwrap_or_default();
            }
            let message = String::from_utf8_lossy(text).into_owned();
            match code {
                1040 => Verdict::NotYet(format!("{message} (error 1040: too many connections)")),
                1129 => Verdict::Fatal(format!("{message} (error 1129: host blocked; run FLUSH HOSTS or raise max_connect_errors)")),
                1130 => Verdict::Fatal(format!("{message} (error 1130: this host may not connect; grant access to it)")),
                other => Verdict::NotYet(format!("{message} (error {other})")),
            }
        }
        Some(other) => Verdict::Fatal(format!("not a MySQL server (protocol {other})")),
        None => Verdict::NotYet("empty greeting".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_and_errors_are_classified() {
        assert!(matches!(classify_greeting(&[10, b'1', 0]), Verdict::Ready));
        let mut too_many = vec![0xff, 0x10, 0x04];
        too_many.extend_from_slice(b"#08004Too many connections");
        assert!(
            matches!(classify_greeting(&too_many), Verdict::NotYet(m) if m.starts_with("Too many"))
        );
        let mut blocked = vec![0xff, 0x6a, 0x04];
        blocked.extend_from_slice(b"Host 'x' is not allowed to connect");
        assert!(matches!(classify_greeting(&blocked), Verdict::Fatal(m) if m.contains("1130")));
        assert!(matches!(classify_greeting(&[9]), Verdict::Fatal(_)));
    }
}
