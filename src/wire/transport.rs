//! One connection for one probe attempt: TCP (after DNS, which blocks and so
//! only ever runs on a probe thread) or a Unix socket, each with a time
//! limit, optionally wrapped in TLS (rustls; no OpenSSL in a static binary).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};

use super::url::{Endpoint, Tls};
use super::Verdict;

/// The reason for a closed port: nothing listens, so trying again costs the
/// server nothing (the wait polls those faster).
pub const REFUSED: &str = "connection refused";

/// The system CA bundle of Debian-based images, used when the URL names none.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A byte stream to a server: TCP, a Unix socket, or TLS over either.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A plain socket or a TLS connection; probes only read and write it.
pub type Conn = Box<dyn Stream>;

/// Connects to `endpoint` within `timeout`; every failure is "not yet".
/// `timeout` is the whole attempt's: the connection it returns stops
/// reading and writing once it has passed (see `connect_until`).
pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Conn, Verdict> {
    connect_until(endpoint, Instant::now() + timeout)
}

/// Connects to `endpoint` by `deadline`, one absolute time for the whole
/// attempt: the connect (each resolved address gets only what is left),
/// then every read and write on the connection, TLS handshake included.
/// A server that sends one byte a second cannot stretch it. (DNS itself
/// cannot be bounded here: it runs on a probe thread, never PID 1's.)
pub fn connect_until(endpoint: &Endpoint, deadline: Instant) -> Result<Conn, Verdict> {
    match endpoint {
        Endpoint::Unix { path } => {
            let stream = unix_connect(path, deadline).map_err(|e| {
                Verdict::NotYet(match e.kind() {
                    io::ErrorKind::NotFound => {
                        format!("socket {} does not exist yet", path.display())
                    }
                    io::ErrorKind::ConnectionRefused => REFUSED.to_string(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
                        "cannot connect to {}: timed out (the server does not accept)",
                        path.display()
                    ),
                    _ => format!("cannot connect to {}: {e}", path.display()),
                })
            })?;
            Ok(Box::new(Bounded {
                socket: stream,
                deadline,
            }))
        }
        Endpoint::Tcp { host, port } => {
            let addrs: Vec<_> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| {
                    Verdict::NotYet(format!("DNS: cannot resolve {host}: {}", dns_reason(&e)))
                })?
                .collect();
            if addrs.is_empty() {
                return Err(Verdict::NotYet(format!("DNS: no address for {host}")));
            }
            let mut last = String::new();
            for addr in addrs {
                let Some(left) = time_left(deadline) else {
                    last = "timed out".into();
                    break;
                };
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(Box::new(Bounded {
                            socket: stream,
                            deadline,
                        }));
                    }
                    Err(e) => last = io_reason(&e),
                }
            }
            Err(Verdict::NotYet(last))
        }
    }
}

/// What is left until `deadline`, or None once it has passed.
fn time_left(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

/// A Unix-socket connect that gives up at `deadline`. A blocking connect
/// waits while the server's accept queue is full, as long as the socket's
/// send timeout allows (Linux's unix_stream_connect), so that timeout is
/// set first: std's `UnixStream::connect` has no way to.
fn unix_connect(path: &std::path::Path, deadline: Instant) -> io::Result<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is valid (AF_UNSPEC, empty path).
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path is too long (at most 107 bytes) or holds a NUL",
        ));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: plain socket(2); the fd is owned right below.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
    let left = time_left(deadline).ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
    stream.set_write_timeout(Some(left))?;
    let length = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    loop {
        // SAFETY: `address` is a valid sockaddr_un of `length` bytes.
        let rc = unsafe {
            libc::connect(
                raw,
                (&address as *const libc::sockaddr_un).cast(),
                length as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(stream);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted || time_left(deadline).is_none() {
            return Err(error);
        }
    }
}

/// A socket whose every read and write ends by the attempt's deadline: the
/// socket's timeout is set to what is left before each call (SO_RCVTIMEO
/// alone is an idle timeout that every byte would restart).
struct Bounded<S> {
    socket: S,
    deadline: Instant,
}

/// The two socket types' timeout setters, for `Bounded`.
trait Timeouts {
    fn read_timeout(&self, left: Duration) -> io::Result<()>;
    fn write_timeout(&self, left: Duration) -> io::Result<()>;
}

impl Timeouts for TcpStream {
    fn read_timeout(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))
    }
    fn write_timeout(&self, left: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(left))
    }
}

impl Timeouts for UnixStream {
    fn read_timeout(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))
    }
    fn write_timeout(&self, left: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(left))
    }
}

impl<S> Bounded<S> {
    fn left(&self) -> io::Result<Duration> {
        time_left(self.deadline).ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    }
}

impl<S: Read + Timeouts> Read for Bounded<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.socket.read_timeout(left)?;
        self.socket.read(buf)
    }
}

impl<S: Write + Timeouts> Write for Bounded<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.socket.write_timeout(left)?;
        self.socket.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

fn dns_reason(e: &io::Error) -> String {
    let text = e.to_string();
    if text.contains("Name does not resolve")
        || text.contains("not known")
        || text.contains("No address")
    {
        "no such host".to_string()
    } else {
        text
    }
}

/// Short words for the usual connection failures.
pub fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => REFUSED.into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::ConnectionReset => "connection reset by the server".into(),
        io::ErrorKind::UnexpectedEof => "the server closed the connection".into(),
        io::ErrorKind::BrokenPipe => "the server closed the connection".into(),
        _ => e.to_string(),
    }
}

/// The connection a Redis or AMQP probe speaks over: TLS when the URL asks
/// for it on TCP (there is no TLS over a local Unix socket), else plain.
pub fn secure(
    socket: Conn,
    endpoint: &Endpoint,
    target: &super::url::Target,
) -> Result<Conn, Verdict> {
    match (&target.tls, endpoint) {
        (Tls::Off, _) | (_, Endpoint::Unix { .. }) => Ok(socket),
        (tls, Endpoint::Tcp { host, .. }) => {
            start_tls(socket, host, tls, target.tls_root_cert.as_deref())
        }
    }
}

/// Wraps `socket` in TLS as `tls` asks; `host` is the name to verify.
pub fn start_tls(
    socket: Conn,
    host: &str,
    tls: &Tls,
    root_cert: Option<&std::path::Path>,
) -> Result<Conn, Verdict> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Verdict::Fatal(format!("TLS set-up failed: {e}")))?;
    let config = match tls {
        Tls::Off => return Ok(socket),
        Tls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
        Tls::VerifyCa | Tls::VerifyFull => {
            let roots = load_roots(root_cert)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Verdict::Fatal(format!("TLS verifier: {e}")))?;
            let verifier: Arc<dyn ServerCertVerifier> = if matches!(tls, Tls::VerifyCa) {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| Verdict::Fatal(format!("TLS: {host} is not a valid server name")))?;
    let mut conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| Verdict::Fatal(format!("TLS set-up failed: {e}")))?;
    let mut socket = socket;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut socket) {
            let text = e.to_string();
            return Err(
                if text.contains("certificate") || text.contains("Certificate") {
                    Verdict::Fatal(format!(
                        "TLS: the server's certificate was rejected: {text}"
                    ))
                } else {
                    Verdict::NotYet(format!("TLS handshake failed: {}", io_reason(&e)))
                },
            );
        }
    }
    Ok(Box::new(StreamOwned::new(conn, socket)))
}

fn load_roots(path: Option<&std::path::Path>) -> Result<RootCertStore, Verdict> {
    let path = path.unwrap_or(std::path::Path::new(SYSTEM_ROOTS));
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
        Verdict::Fatal(format!(
            "cannot read CA certificates from {}: {e}",
            path.display()
        ))
    })?;
    for cert in certs.flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(Verdict::Fatal(format!(
            "no CA certificate found in {}",
            path.display()
        )));
    }
    Ok(roots)
}

/// `sslmode=require`: encrypt, check the handshake signature, but trust any
/// certificate (libpq's meaning of require).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the host
/// name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Reads exactly `buf.len()` bytes; a short read is "not yet".
pub fn read_exact(conn: &mut impl Read, buf: &mut [u8]) -> Result<(), Verdict> {
    conn.read_exact(buf)
        .map_err(|e| Verdict::NotYet(io_reason(&e)))
}

/// Reads exactly `len` bytes into a buffer that grows as they arrive: a
/// length a server announces costs memory only once its bytes are here.
pub fn read_exact_vec(conn: &mut impl Read, len: usize) -> Result<Vec<u8>, Verdict> {
    let mut buf = Vec::with_capacity(len.min(8192));
    conn.take(len as u64)
        .read_to_end(&mut buf)
        .map_err(|e| Verdict::NotYet(io_reason(&e)))?;
    if buf.len() < len {
        return Err(Verdict::NotYet("the server closed the connection".into()));
    }
    Ok(buf)
}

pub fn write_all(conn: &mut impl Write, buf: &[u8]) -> Result<(), Verdict> {
    conn.write_all(buf)
        .and_then(|_| conn.flush())
        .map_err(|e| Verdict::NotYet(io_reason(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_dripping_server_cannot_hold_reads_past_the_attempts_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            if let Ok((mut peer, _)) = listener.accept() {
                // One byte every 50 ms for up to 3 s.
                for _ in 0..60 {
                    if peer.write_all(b"x").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        let started = Instant::now();
        let endpoint = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let mut conn = connect(&endpoint, Duration::from_millis(400)).unwrap();
        let mut buf = vec![0u8; 1000];
        let outcome = read_exact(&mut conn, &mut buf);
        let took = started.elapsed();
        drop(conn);
        let _ = server.join();
        assert_eq!(outcome, Err(Verdict::NotYet("timed out".into())));
        assert!(took < Duration::from_millis(600), "took {took:?}");
    }

    #[test]
    fn a_unix_socket_that_never_accepts_is_given_up_at_the_deadline() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("ae-transport-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("full.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // SAFETY: listen(2) again on our own listening socket: backlog 0.
        unsafe { libc::listen(listener.as_raw_fd(), 0) };
        let _queued = UnixStream::connect(&path).unwrap();
        let started = Instant::now();
        let endpoint = Endpoint::Unix { path: path.clone() };
        let outcome = connect(&endpoint, Duration::from_millis(300));
        let took = started.elapsed();
        let _ = std::fs::remove_dir_all(&dir);
        match outcome {
            Err(Verdict::NotYet(reason)) => assert!(reason.contains("timed out"), "{reason}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("connected to a full queue"),
        }
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }

    #[test]
    fn a_deadline_already_passed_fails_reads_and_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut bounded = Bounded {
            socket: stream,
            deadline: Instant::now(),
        };
        let mut buf = [0u8; 4];
        assert_eq!(
            bounded.read(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut)
        );
        assert_eq!(
            bounded.write(b"x").map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut)
        );
    }
}
