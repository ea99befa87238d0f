//! The yardstick: a bare tonic service answering the agent's `Report` call without doing any
//! work, served through the server's own transport builder and TLS set-up
//! (`vakt_server::server::transport`, `vakt_server::tls::{grpc_config, TlsListener}`) with
//! certificates from a PKI of the server's own kind, and its own two-worker runtime like the
//! server's. The check-in rate is
//! measured against it in the same run, on the same machine.

use super::LoadError;
use std::pin::Pin;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use vakt_proto::pb;
use vakt_proto::pb::agent_service_server::{AgentService, AgentServiceServer};

/// The bare service: acknowledges every report, does nothing else.
#[derive(Debug, Clone, Copy)]
struct Echo;

type Never = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Echo {
    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        Err(Status::unimplemented("the baseline only echoes reports"))
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        Ok(Response::new(pb::ReportResponse {
            acknowledged_sequence: req.get_ref().sequence,
            resend: Vec::new(),
        }))
    }

    async fn request_exemption(
        &self,
        _: Request<pb::ExemptionRequest>,
    ) -> Result<Response<pb::ExemptionReply>, Status> {
        Err(Status::unimplemented("the baseline only echoes reports"))
    }

    async fn renew(
        &self,
        _: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        Err(Status::unimplemented("the baseline only echoes reports"))
    }

    type ConnectStream = Never;

    async fn connect(
        &self,
        _: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Never>, Status> {
        Err(Status::unimplemented("the baseline only echoes reports"))
    }
}

/// A running baseline server; stops when dropped.
pub struct Baseline {
    pub url: String,
    pub ca_pem: String,
    /// A client certificate and key the baseline's CA issued.
    pub cert_pem: String,
    pub key_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Baseline {
    /// Starts the baseline on an ephemeral loopback port, on a runtime of `workers` threads.
    pub fn start(workers: usize) -> Result<Self, LoadError> {
        let dir = tempfile::tempdir().map_err(|e| LoadError::Other(format!("tempdir: {e}")))?;
        let pki = vakt_server::pki::Pki::load_or_create(dir.path(), &[])
            .map_err(|e| LoadError::Other(format!("baseline PKI: {e}")))?;
        let (key_pem, csr) = vakt_agent::link::key_and_csr("baseline")?;
        let cert = pki
            .issue_device_cert(&csr, "baseline", time::OffsetDateTime::now_utc())
            .map_err(|e| LoadError::Other(format!("baseline client certificate: {e}")))?;
        let tls =
            vakt_server::tls::grpc_config(&pki.server_cert_pem, &pki.server_key_pem, pki.ca_pem())
                .map_err(|e| LoadError::Other(format!("baseline TLS: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("baseline")
            .enable_all()
            .build()
            .map_err(|e| LoadError::Other(format!("baseline runtime: {e}")))?;
        // Bound here, served on the baseline's own runtime (this may run inside another one).
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| LoadError::Other(format!("baseline listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LoadError::Other(format!("baseline listen: {e}")))?;
        let router = vakt_server::server::transport().add_service(
            AgentServiceServer::new(Echo)
                .max_decoding_message_size(vakt_server::server::MAX_MESSAGE_BYTES),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let served = rt.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                let incoming = vakt_server::tls::TlsListener::http2(listener, tls, "baseline")?;
                router
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .map_err(std::io::Error::other)
            });
            if let Err(e) = served {
                eprintln!("baseline server: {e}");
            }
        });
        Ok(Self {
            url: format!("https://{addr}"),
            ca_pem: pki.ca_pem().to_string(),
            cert_pem: cert.pem,
            key_pem,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
