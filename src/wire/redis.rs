//! Redis probe: AUTH (when the URL has credentials) and PING, in RESP.
//! +PONG is ready, -LOADING is not yet, a refused password is fatal.
//! For Sentinel URLs, the first sentinel that answers PING is enough.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use super::transport::{connect_until, io_reason, secure};
use super::url::{Endpoint, Kind, Target};
use super::{server_text, Verdict};

pub fn probe(target: &Target, timeout: Duration) -> Verdict {
    let mut last = Verdict::NotYet("no endpoint".into());
    // One deadline for the attempt, whichever sentinel answers.
    let deadline = Instant::now() + timeout;
    for endpoint in &target.endpoints {
        last = probe_one(target, endpoint, deadline);
        if matches!(last, Verdict::Ready | Verdict::Fatal(_)) {
            return last;
        }
        if target.kind != Kind::RedisSentinel {
            break;
        }
    }
    last
}

fn command(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn probe_one(target: &Target, endpoint: &Endpoint, deadline: Instant) -> Verdict {
    let socket = match connect_until(endpoint, deadline) {
        Ok(s) => s,
        Err(v) => return v,
    };
    let conn = match secure(socket, endpoint, target) {
        Ok(c) => c,
        Err(v) => return v,
    };
    let mut reader = BufReader::new(conn);
    let mut request = Vec::new();
    let authenticating = target.password.is_some() && target.kind != Kind::RedisSentinel;
    if authenticating {
        let password = target.password.as_deref().unwrap_or_default();
        match target.user.as_deref().filter(|u| !u.is_empty()) {
            Some(user) => request.extend(command(&["AUTH", user, password])),
            None => request.extend(command(&["AUTH", password])),
        }
    }
    request.extend(command(&["PING"]));
    if let Err(e) = reader
        .get_mut()
        .write_all(&request)
        .and_then(|_| reader.get_mut().flush())
    {
        return Verdict::NotYet(io_reason(&e));
    }
    let replies = match read_replies(&mut reader, if authenticating { 2 } else { 1 }) {
        Ok(replies) => replies,
        Err(v) => return v,
    };
    let _ = reader.get_mut().write_all(&command(&["QUIT"]));
    // The password, wherever a reply echoes it (a renamed AUTH does).
    let sent: Vec<&str> = target.password.as_deref().into_iter().collect();
    classify(&replies, authenticating, &sent)
}

/// The longest reply line read: a status or an error is short.
const MAX_LINE: u64 = 4096;

/// `count` reply lines, each cut at MAX_LINE bytes (a longer one is read
/// no further: it is not a Redis status line anyway).
fn read_replies(reader: &mut impl BufRead, count: usize) -> Result<Vec<String>, Verdict> {
    let mut replies = Vec::new();
    for _ in 0..count {
        let mut line = String::new();
        match Read::by_ref(reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) => return Err(Verdict::NotYet("the server closed the connection".into())),
            Ok(_) => replies.push(line.trim_end().to_string()),
            Err(e) => return Err(Verdict::NotYet(io_reason(&e))),
        }
    }
    Ok(replies)
}

/// The replies' verdict; `sent` are the credentials we sent, masked
/// wherever a reply echoes them.
pub fn classify(replies: &[String], authenticated: bool, sent: &[&str]) -> Verdict {
    for reply in replies {
        let upper = reply.to_ascii_uppercase();
        if upper.starts_with("-WRONGPASS")
            || upper.contains("INVALID PASSWORD")
            || upper.contains("INVALID USERNAME")
        {
            return Verdict::Fatal("wrong password (the server refused AUTH)".into());
        }
        if upper.starts_with("-ERR AUTH") || upper.contains("WITHOUT ANY PASSWORD CONFIGURED") {
            return Verdict::Fatal(
                "the URL has a password but the server has none configured; remove it from the URL"
                    .into(),
            );
        }
        if upper.starts_with("-NOAUTH") {
            return Verdict::Fatal(if authenticated {
                "the server still asks for authentication".into()
            } else {
                "the server needs a password; put it in the URL (redis://:PASSWORD@host)".into()
            });
        }
        if upper.starts_with("-LOADING") {
            return Verdict::NotYet("Redis is loading its dataset into memory".into());
        }
        if upper.starts_with('-') {
            return Verdict::NotYet(server_text(reply.trim_start_matches('-'), sent));
        }
    }
    match replies.last() {
        Some(r) if r == "+PONG" => Verdict::Ready,
        Some(r) => Verdict::Fatal(format!(
            "not a Redis server (answered {:?})",
            // Masked before it is cut: a cut URL may no longer look like one.
            server_text(r, sent).chars().take(40).collect::<String>()
        )),
        None => Verdict::NotYet("no answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Fuzzing (fuzz/corpus/redis): the reply was cut to 40 characters
    /// before it was masked, so a URL cut inside its password showed it.
    #[test]
    fn a_strange_reply_is_masked_before_it_is_cut() {
        let url = "postgresql://airflow:Qz7xSeKr1tPw@db:5432/airflow";
        for pad in 0..40 {
            let reply = format!("{}{url}", "x".repeat(pad));
            let verdict = classify(&s(&["+OK", &reply]), true, &[]);
            let Verdict::Fatal(why) = verdict else {
                panic!("{verdict:?}")
            };
            assert!(!why.contains("Qz7x"), "{why}");
        }
    }

    #[test]
    fn replies_are_classified() {
        assert!(matches!(
            classify(&s(&["+PONG"]), false, &[]),
            Verdict::Ready
        ));
        assert!(matches!(
            classify(&s(&["+OK", "+PONG"]), true, &[]),
            Verdict::Ready
        ));
        assert!(matches!(
            classify(
                &s(&["-LOADING Redis is loading the dataset in memory"]),
                false,
                &[]
            ),
            Verdict::NotYet(_)
        ));
        assert!(
            matches!(classify(&s(&["-WRONGPASS invalid username-password pair", "-NOAUTH x"]), true, &[]), Verdict::Fatal(m) if m.contains("wrong password"))
        );
        assert!(matches!(
            classify(&s(&["-NOAUTH Authentication required."]), false, &[]),
            Verdict::Fatal(_)
        ));
        assert!(matches!(
            classify(&s(&["HTTP/1.1 400"]), false, &[]),
            Verdict::Fatal(_)
        ));
    }

    #[test]
    fn a_reply_that_echoes_the_password_is_masked() {
        let renamed = "-ERR unknown command 'AUTH', with args beginning with: 'default' 'hunter2' ";
        match classify(&s(&[renamed, "+PONG"]), true, &["hunter2"]) {
            Verdict::NotYet(m) => {
                assert!(!m.contains("hunter2") && !m.contains("default"), "{m}");
                assert!(m.contains("unknown command"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        match classify(&s(&["-ERR bad password hunter2 here"]), true, &["hunter2"]) {
            Verdict::NotYet(m) => assert_eq!(m, "ERR bad password *** here"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_oversized_and_malformed_replies_do_not_panic() {
        for reply in [
            "",
            "-",
            "+",
            "\u{0}\u{1}",
            "$-1",
            "*",
            &"x".repeat(100_000),
            "-é",
        ] {
            let _ = classify(&s(&[reply]), false, &["pw"]);
            let _ = classify(&s(&[reply, reply]), true, &["pw"]);
        }
        assert!(matches!(classify(&[], false, &[]), Verdict::NotYet(_)));
    }

    #[test]
    fn reply_lines_are_cut_and_bad_bytes_are_a_verdict() {
        let mut long = vec![b'+'; 100_000];
        long.extend_from_slice(b"\r\n+PONG\r\n");
        let replies = read_replies(&mut std::io::Cursor::new(long), 1).unwrap();
        assert_eq!(replies[0].len(), MAX_LINE as usize);
        assert!(matches!(classify(&replies, false, &[]), Verdict::Fatal(_)));
        for input in [&b""[..], b"+OK", b"\xff\xfe\r\n", b"-ERR x\r\n"] {
            let got = read_replies(&mut std::io::Cursor::new(input.to_vec()), 2);
            assert!(got.is_err(), "{input:?}: {got:?}");
        }
        let both = read_replies(&mut std::io::Cursor::new(b"+OK\r\n+PONG\r\n".to_vec()), 2);
        assert_eq!(both.unwrap(), ["+OK", "+PONG"]);
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(
            command(&["AUTH", "pw"]),
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n".to_vec()
        );
    }
}
