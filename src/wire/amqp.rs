//! AMQP 0-9-1 probe (RabbitMQ): send the protocol header and read the
//! server's Connection.Start method frame, which means it takes clients.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::transport::{connect_until, io_reason, secure};
use super::url::{Endpoint, Target};
use super::Verdict;

const HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

pub fn probe(target: &Target, timeout: Duration) -> Verdict {
    let mut last = Verdict::NotYet("no endpoint".into());
    // Celery failover lists: any one broker answering is enough to start;
    // all of them share the attempt's one deadline.
    let deadline = Instant::now() + timeout;
    for endpoint in &target.endpoints {
        last = probe_one(target, endpoint, deadline);
        if matches!(last, Verdict::Ready) {
            return last;
        }
    }
    last
}

fn probe_one(target: &Target, endpoint: &Endpoint, deadline: Instant) -> Verdict {
    let socket = match connect_until(endpoint, deadline) {
        Ok(s) => s,
        Err(v) => return v,
    };
    let mut conn = match secure(socket, endpoint, target) {
        Ok(c) => c,
        Err(v) => return v,
    };
    if let Err(e) = conn.write_all(HEADER).and_then(|_| conn.flush()) {
        return Verdict::NotYet(io_reason(&e));
    }
    // A broker that refuses our version answers with its own 8-byte
    // header and closes: read what arrives, up to the 11 bytes that tell a
    // method frame, instead of insisting on 11.
    let mut frame = [0u8; 11];
    let mut got = 0;
    while got < frame.len() {
        match conn.read(&mut frame[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // What arrived may still be a header.
            Err(_) if got >= HEADER.len() => break,
            Err(e) => return Verdict::NotYet(io_reason(&e)),
        }
        if frame[..got].starts_with(b"AMQP") && got >= HEADER.len() {
            break;
        }
    }
    classify_first_frame(&frame[..got])
}

/// What the broker sent first: a protocol header of its own (another
/// version), or a method frame: type(1) channel(2) size(4) class(2)
/// method(2). Fewer bytes than either is "not yet".
pub fn classify_first_frame(frame: &[u8]) -> Verdict {
    if frame.len() >= HEADER.len() && frame.starts_with(b"AMQP") {
        return Verdict::Fatal(
            "the broker does not speak AMQP 0-9-1 (it proposed another protocol version)".into(),
        );
    }
    let [kind, _, _, _, _, _, _, c1, c2, m1, m2] = frame else {
        return Verdict::NotYet(if frame.is_empty() {
            "the server closed the connection".into()
        } else {
            format!("the broker sent {} bytes and closed", frame.len())
        });
    };
    let class = u16::from_be_bytes([*c1, *c2]);
    let method = u16::from_be_bytes([*m1, *m2]);
    let kind = *kind;
    if kind == 1 && class == 10 && method == 10 {
        Verdict::Ready
    } else {
        Verdict::Fatal(format!(
            "not an AMQP broker (frame type {kind}, method {class}.{method})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_start_is_ready() {
        let frame = [1, 0, 0, 0, 0, 1, 0, 0, 10, 0, 10];
        assert!(matches!(classify_first_frame(&frame), Verdict::Ready));
        assert!(matches!(
            classify_first_frame(b"AMQP\x00\x00\x09\x01xyz"),
            Verdict::Fatal(_)
        ));
    }

    #[test]
    fn a_refusing_broker_s_eight_byte_header_is_another_version() {
        match classify_first_frame(b"AMQP\x00\x00\x09\x00") {
            Verdict::Fatal(m) => assert!(m.contains("another protocol version"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_and_malformed_frames_do_not_panic() {
        for frame in [
            &b""[..],
            b"A",
            b"AMQP",
            b"\x01\x00",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            let _ = classify_first_frame(frame);
        }
        assert!(matches!(
            classify_first_frame(b"AMQP\x00"),
            Verdict::NotYet(_)
        ));
    }
}
