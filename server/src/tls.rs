//! TLS for both of the server's ports, with its own certificate (rustls with ring): the gRPC
//! port (agents with their client certificates, enrollment and `vakt` without) and the
//! console.
//!
//! [`TlsListener`] hands out connections whose handshake already finished. Each handshake runs
//! in a task of its own with a deadline, so a client that connects and says nothing holds up
//! neither the accept loop nor anyone else. Waiting for a client's first bytes costs nothing,
//! so any number may wait; the work after them (key exchange, signing, checking the client's
//! certificate) runs for at most [`MAX_HANDSHAKES`] connections at once, the rest queue for a
//! place in arrival order, and a client too slow to finish within [`PLACE_HELD`] gives its
//! place up and finishes outside the bound.
//!
//! Why bound the work: after a restart the whole fleet dials within the same second. Started
//! all at once (as tonic's own acceptor does), ten thousand handshakes share two cores and
//! each finishes only about when all of them do, so most outlast the agents' 10 s connect
//! timeout, their work is thrown away, and those agents back off for longer each time.
//! Bounded, handshakes finish at the rate the cores allow, first come first served, and a
//! connection that has waited past the deadline is dropped before any work is spent on it.
//! Measured at 10,000 agents: all back 10.4–10.7 s after a `kill -9`, against 30–112 s with
//! tonic's acceptor (BENCHMARKS.md).
//!
//! (The wait is for readable bytes, not a whole ClientHello: rustls's lazy acceptor would
//! wait for the hello for free too, but its connections stayed 0.5 KiB larger each, and a
//! client stalling inside its hello gives its place up after [`PLACE_HELD`] anyway.)

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A client gets this long from its connection to a finished handshake (the agents give up
/// after 10 s too).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes past their first bytes, at once. Enough to keep both cores busy while
/// clients on slow networks answer; more only makes every handshake slower.
pub const MAX_HANDSHAKES: usize = 128;
/// A handshake keeps its place among the [`MAX_HANDSHAKES`] this long at most. One on a
/// healthy link needs a few milliseconds; a client slower than this (a bad network, or one
/// that sends its first bytes and stalls on purpose) finishes without a place, so stalled
/// clients can delay the queue by this much, never block it.
pub const PLACE_HELD: Duration = Duration::from_secs(1);

/// An HTTP/2 client sends its 24-byte preface right after the handshake; one that has not
/// within this long is closed. Without it a client could finish handshakes and say nothing,
/// holding a file descriptor each for as long as it liked (hyper waits for the preface
/// forever).
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/2 connection on which the client has sent nothing for any stream this long is
/// closed. Agents send a heartbeat on their Connect stream every 30 s, so only connections
/// kept open without a stream are affected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What every HTTP/2 connection starts with (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the server certificate PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("the server certificate PEM holds no certificate")]
    NoCertificate,
    #[error("the CA certificate PEM holds no certificate")]
    NoCa,
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error(transparent)]
    Certs(#[from] crate::certs::CertsError),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The console's configuration: the server's certificate and key, TLS 1.3, HTTP/1.1.
pub fn console_config(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, TlsError> {
    console_config_with(Arc::new(crate::certs::ServerCert::from_pem(
        cert_pem, key_pem,
    )?))
}

/// [`console_config`] with the certificate from `certs` (replaceable while serving).
pub fn console_config_with(
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The gRPC port's configuration: the server's certificate and key, HTTP/2, and client
/// certificates checked against `ca_pem` but optional at this layer, because enrollment and
/// admin calls come without one (the agent API refuses a call without a known certificate).
pub fn grpc_config(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = crate::certs::ServerCert::from_pem(cert_pem, key_pem)?;
    grpc_config_with(Arc::new(certs), ca_pem)
}

/// [`grpc_config`] with the certificate from `certs` (replaceable while serving).
pub fn grpc_config_with(
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
    ca_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(ca_pem)? {
        roots.add(ca)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa);
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections are TLS streams after a finished handshake.
pub struct TlsListener {
    rx: mpsc::Receiver<BoxedTls>,
    local: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener`; `what` names the port in log lines. For HTTP/1.1 (the
    /// console, whose server has its own header-read timeout).
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        what: &'static str,
    ) -> std::io::Result<Self> {
        Self::start(listener, config, what, false)
    }

    /// The same for HTTP/2 (the gRPC port): a connection is handed over only once its client
    /// has sent the HTTP/2 preface, within [`PREFACE_TIMEOUT`] of the handshake, and it is
    /// closed once idle for [`IDLE_TIMEOUT`].
    pub fn http2(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        what: &'static str,
    ) -> std::io::Result<Self> {
        Self::start(listener, config, what, true)
    }

    fn start(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        what: &'static str,
        http2: bool,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let places = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let acceptor = TlsAcceptor::from(config);
        let accept_loop = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!("{what}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let handshake = handshake(tcp, acceptor.clone(), places.clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!("{what}: TLS handshake with {peer}: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("{what}: TLS handshake with {peer} timed out");
                            return;
                        }
                    };
                    let conn = if http2 {
                        match tokio::time::timeout(PREFACE_TIMEOUT, read_preface(&mut tls)).await {
                            Ok(Ok(())) => Conn {
                                tls,
                                addr: peer,
                                replay: PREFACE.len(),
                                frames: Some(FrameWatch::new(now_s())),
                            },
                            Ok(Err(e)) => {
                                tracing::debug!("{what}: {peer} sent no HTTP/2 preface: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(
                                    "{what}: {peer} sent no HTTP/2 preface within {} s; closed",
                                    PREFACE_TIMEOUT.as_secs()
                                );
                                return;
                            }
                        }
                    } else {
                        Conn {
                            tls,
                            addr: peer,
                            replay: 0,
                            frames: None,
                        }
                    };
                    let _ = tx.send(BoxedTls(Box::new(conn))).await;
                });
            }
        });
        Ok(Self {
            rx,
            local,
            accept_loop,
        })
    }

    /// The next connection with a finished handshake. Never ends while the listener lives.
    pub async fn accept(&mut self) -> BoxedTls {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }
}

/// One handshake: wait until the client has sent something (free), then queue for a place
/// and do the work, giving the place up after [`PLACE_HELD`].
async fn handshake(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    places: Arc<Semaphore>,
) -> std::io::Result<TlsStream<TcpStream>> {
    tcp.readable().await?;
    let place = places
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let mut accept = acceptor.accept(tcp);
    match tokio::time::timeout(PLACE_HELD, &mut accept).await {
        Ok(done) => done,
        Err(_) => {
            drop(place);
            accept.await
        }
    }
}

/// Reads the client's first 24 bytes, which must be the HTTP/2 preface. They are known, so
/// nothing needs keeping: [`Conn::replay`] hands the same bytes to hyper afterwards.
async fn read_preface(tls: &mut TlsStream<TcpStream>) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut got = [0u8; PREFACE.len()];
    tls.read_exact(&mut got).await?;
    if &got != PREFACE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP/2 client",
        ));
    }
    Ok(())
}

/// Seconds since the first call, as a small number for [`FrameWatch`].
fn now_s() -> u32 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u32::try_from(start.elapsed().as_secs()).unwrap_or(u32::MAX)
}

/// Follows the HTTP/2 frames a client sends (after the preface) to know when it last sent
/// one for a stream (a stream id other than 0). Connection-level frames (PING, SETTINGS,
/// connection flow control) do not count: a client that only answers the server's keep-alive
/// pings holds no stream and is idle. Only the 9-byte frame headers are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameWatch {
    /// The frame header being read, and how much of it has arrived.
    head: [u8; 9],
    have: u8,
    /// Payload bytes of the current frame still to come.
    left: u32,
    /// When a frame for a stream last arrived, in [`now_s`] seconds.
    last_stream_frame: u32,
}

impl FrameWatch {
    pub fn new(now: u32) -> Self {
        Self {
            head: [0; 9],
            have: 0,
            left: 0,
            last_stream_frame: now,
        }
    }

    /// Takes the next bytes the client sent, received at `now`.
    pub fn feed(&mut self, mut bytes: &[u8], now: u32) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let skip = bytes.len().min(self.left as usize);
                bytes = &bytes[skip..];
                // `skip` is at most `left`, a u32.
                self.left -= u32::try_from(skip).unwrap_or(self.left);
                continue;
            }
            let have = usize::from(self.have);
            let take = bytes.len().min(9 - have);
            self.head[have..have + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // `have + take` is at most 9.
            self.have = u8::try_from(have + take).unwrap_or(9);
            if self.have == 9 {
                let h = self.head;
                self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                if stream != 0 {
                    self.last_stream_frame = now;
                }
                self.have = 0;
            }
        }
    }

    /// Whether the client has sent nothing for a stream for [`IDLE_TIMEOUT`] at `now`.
    pub fn idle(&self, now: u32) -> bool {
        u64::from(now.saturating_sub(self.last_stream_frame)) >= IDLE_TIMEOUT.as_secs()
    }
}

/// The connections as a stream, for tonic's `serve_with_incoming`. It never yields an error:
/// a failed handshake is logged and dropped inside, so one bad client never ends the server's
/// stream of connections.
impl tokio_stream::Stream for TlsListener {
    type Item = std::io::Result<BoxedTls>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// A finished TLS connection, boxed, as tonic's own acceptor hands them over. tonic keeps a
/// connection's I/O inside that connection's task for as long as it is open, and the rustls
/// state inline there made every held agent cost 0.5 KiB more (measured side by side with
/// 2,000 agents). The peer's address, known from the accept, goes along.
pub struct BoxedTls(Box<Conn>);

/// What [`BoxedTls`] holds.
struct Conn {
    tls: TlsStream<TcpStream>,
    addr: SocketAddr,
    /// How many bytes of [`PREFACE`] (read by the listener) hyper has still to be given: the
    /// last `replay` bytes of it.
    replay: usize,
    /// HTTP/2 only: when the client last sent a frame for a stream.
    frames: Option<FrameWatch>,
}

/// Who is at the other end of a connection, taken once when it is handed to tonic: the
/// address, and the sha-256 of the client certificate when one was presented (how the store
/// knows a device). tonic puts a copy into every request's extensions; its own `TlsConnectInfo`
/// held a copy of the whole certificate chain there for as long as the connection lived,
/// about half a KiB per held agent, where the agent API only ever needs the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert_sha256: Option<[u8; 32]>,
}

impl Peer {
    /// The peer of the connection a request came on (`None` off such a connection, e.g. in a
    /// test that calls a service directly).
    pub fn of<T>(req: &tonic::Request<T>) -> Option<Peer> {
        Self::of_extensions(req.extensions())
    }

    /// The same from a request's extensions (an HTTP request in a layer before tonic's).
    pub fn of_extensions(ext: &tonic::Extensions) -> Option<Peer> {
        ext.get::<Peer>().copied()
    }
}

impl tonic::transport::server::Connected for BoxedTls {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        let conn = &*self.0;
        Peer {
            addr: conn.addr,
            cert_sha256: conn
                .tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| crate::pki::sha256(leaf.as_ref())),
        }
    }
}

impl AsyncRead for BoxedTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let conn = &mut *self.get_mut().0;
        if conn.replay > 0 {
            let from = PREFACE.len() - conn.replay;
            let n = conn.replay.min(buf.remaining());
            buf.put_slice(&PREFACE[from..from + n]);
            conn.replay -= n;
            return Poll::Ready(Ok(()));
        }
        let Some(frames) = conn.frames.as_mut() else {
            return Pin::new(&mut conn.tls).poll_read(cx, buf);
        };
        // Checked whenever hyper reads, which it does at least as often as the keep-alive
        // ping is answered (every minute on a live connection): an end of stream here makes
        // hyper close the connection.
        let now = now_s();
        if frames.idle(now) {
            tracing::debug!("{}: idle HTTP/2 connection closed", conn.addr);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut conn.tls).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            frames.feed(&buf.filled()[before..], now);
        }
        r
    }
}

impl AsyncWrite for BoxedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0.tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.tls.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0.tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0.tls).poll_shutdown(cx)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = BoxedTls;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let tls = TlsListener::accept(self).await;
        let addr = tls.0.addr;
        (tls, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32, kind: u8, stream: u32) -> Vec<u8> {
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([kind, 0]);
        f.extend(stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0u8, len as usize));
        f
    }

    #[test]
    fn only_frames_for_a_stream_keep_a_connection_alive() {
        let idle = u32::try_from(IDLE_TIMEOUT.as_secs()).unwrap();
        let mut w = FrameWatch::new(0);
        // Pings and settings (stream 0) for a long while: idle.
        w.feed(&frame(8, 6, 0), 100);
        w.feed(&frame(6, 4, 0), idle - 1);
        assert!(!w.idle(idle - 1));
        assert!(w.idle(idle));
        // A heartbeat on a stream, split across reads at every byte: alive again.
        let data = frame(20, 0, 1);
        for (i, b) in data.iter().enumerate() {
            w.feed(
                std::slice::from_ref(b),
                idle + u32::try_from(i).unwrap() / 9,
            );
        }
        assert!(!w.idle(idle + 30));
        // A frame header hidden in a payload is not read as one.
        let mut w = FrameWatch::new(0);
        let mut ping = frame(9, 6, 0);
        ping[9..].copy_from_slice(&frame(0, 0, 7)[..9]);
        w.feed(&ping, idle);
        assert!(w.idle(idle));
    }
}
