//! AMQP 0-9-1 probe (RabbitMQ): send the protocol header and read the
//! server's Connection.Start method frame, which means it takes clients.

use std::io::{Read, Write};
use std::time::Duration;

use super::transport::{connect, io_reason, secure};
use super::url::{Endpoint, Target};
use super::Verdict;

const HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

pub fn probe(target: &Target, timeout: Duration) -> Verdict {
    let mut last = Verdict::NotYet("no endpoint".into());
    // Celery failover lists: any one broker answering is enough to start.
    for endpoint in &target.endpoints {
        last = probe_one(target, endpoint, timeout);
        if matches!(last, Verdict::Ready) {
            return last;
        }
    }
    last
}

fn probe_one(target: &Target, endpoint: &Endpoint, timeout: Duration) -> Verdict {
    let socket = match connect(endpoint, timeout) {
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
    let mut frame = [0u8; 11];
    if let Err(e) = conn.read_exact(&mut frame) {
        return Verdict::NotYet(io_reason(&e));
    }
    classify_first_frame(&frame)
}

/// type(1) channel(2) size(4) class(2) method(2).
pub fn classify_first_frame(frame: &[u8; 11]) -> Verdict {
    if frame.starts_with(b"AMQP") {
        return Verdict::Fatal(
            "the broker does not speak AMQP 0-9-1 (it proposed another protocol version)".into(),
        );
    }
    let class = u16::from_be_bytes([frame[7], frame[8]]);
    let method = u16::from_be_bytes([frame[9], frame[10]]);
    if frame[0] == 1 && class == 10 && method == 10 {
        Verdict::Ready
    } else {
        Verdict::Fatal(format!(
            "not an AMQP broker (frame type {}, method {class}.{method})",
            frame[0]
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
}
