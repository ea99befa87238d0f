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
    /// Starts accepting on `listener`; `what` names the port in log lines.
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        what: &'static str,
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
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(BoxedTls(Box::new((tls, peer)))).await;
                        }
                        Ok(Err(e)) => tracing::debug!("{what}: TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("{what}: TLS handshake with {peer} timed out"),
                    }
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
pub struct BoxedTls(Box<(TlsStream<TcpStream>, SocketAddr)>);

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
        req.extensions().get::<Peer>().copied()
    }
}

impl tonic::transport::server::Connected for BoxedTls {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        let (stream, addr) = &*self.0;
        Peer {
            addr: *addr,
            cert_sha256: stream
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
        Pin::new(&mut self.get_mut().0.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoxedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0.0).poll_shutdown(cx)
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
        let addr = tls.0.1;
        (tls, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
