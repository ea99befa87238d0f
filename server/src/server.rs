//! Putting the server together: [`prepare`] opens a data directory (store, PKI, first admin
//! token), [`run`] serves gRPC on a listener until `shutdown` resolves, [`run_console`]
//! serves the web console beside it over the same [`State`], and [`run_metrics`] Prometheus'
//! `/metrics` (token and TLS as `metrics_access` says) — the listeners and the shutdown
//! signals come from the caller, so tests and the demo run the real server on ephemeral
//! loopback ports.

use crate::api::{admin::AdminApi, agent::AgentApi};
use crate::pki::{Pki, PkiError};
use crate::state::State;
use crate::store::{Store, StoreError, StoreLocation};
use std::future::Future;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;
use tonic::transport::Server;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminServiceServer;
use vakt_proto::pb::agent_service_server::AgentServiceServer;

/// The largest message the server decodes: a full software inventory of a big machine is a few
/// hundred KiB; anything near this limit is not a report.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How often a replica looks for command-signing generations another replica stored.
pub const KEY_REFRESH: std::time::Duration = std::time::Duration::from_secs(3);

/// How long held connections get to close once a shutdown begins (see [`run`]).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the last flush of the store may take at shutdown; with [`SHUTDOWN_GRACE`] well
/// under the 10 s a service manager gives before it kills.
pub const FLUSH_BOUND: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the store did not finish its last flush within {0} s")]
    FlushTimeout(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error("the gRPC listener: {0}")]
    Listener(std::io::Error),
    #[error("gRPC TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("metrics TLS: {0}")]
    MetricsTls(crate::tls::TlsError),
    #[error("the metrics listener: {0}")]
    MetricsListener(std::io::Error),
}

/// Opens the data directory: takes the store lock first (so a second server fails before it
/// touches anything), loads or creates the PKI, and on first start writes `admin.token`.
pub async fn prepare(
    data: &Path,
    hostnames: &[String],
    notify: crate::notify::NotifyConfig,
) -> Result<State, ServerError> {
    prepare_at(data, &StoreLocation::Embedded, None, hostnames, notify).await
}

/// [`prepare`] with the store where `location` says. A PostgreSQL store is checked (reachable,
/// schema not newer than this build, the secrets key opens its secrets) before anything is
/// written to `data` or the database; it needs `secrets_key` (see [`prepare_replica`]).
pub async fn prepare_at(
    data: &Path,
    location: &StoreLocation,
    secrets_key: Option<&Path>,
    hostnames: &[String],
    notify: crate::notify::NotifyConfig,
) -> Result<State, ServerError> {
    let (store, pki) = match location {
        StoreLocation::Embedded => {
            let store = Store::open_at(data, location)?;
            let pki = Pki::load_or_create(data, hostnames)?;
            (store, pki)
        }
        StoreLocation::Postgres(url) => {
            let key = secrets_key.ok_or(crate::secrets::SecretsError::Required)?;
            prepare_replica(data, url, key, hostnames).await?
        }
    };
    if store.admin_token_count()? == 0 {
        let (id, secret) = crate::api::admin::create_admin_token(
            &store,
            pb::Role::Admin,
            "initial-admin",
            "system",
        )
        .await?;
        let path = write_admin_token(data, &secret)?;
        store
            .audit(
                "system",
                "admin-token.create",
                &id,
                "first start: initial-admin",
                crate::timefmt::now_ms(),
            )
            .await?;
        tracing::info!("first start: admin token written to {}", path.display());
    }
    Ok(State::new(store, pki, notify)?)
}

/// A replica on PostgreSQL: the CA key and command-signing keys come from the database,
/// sealed with the key in `key_path` (the first replica on an empty database makes them, and
/// the key file if it does not exist, and writes `admin.token`); `data` holds only this
/// replica's lock, `ca.pem` and server certificate. An initialised database is checked against
/// the key before the data directory is touched, so a wrong or missing key writes nothing.
async fn prepare_replica(
    data: &Path,
    url: &str,
    key_path: &Path,
    hostnames: &[String],
) -> Result<(Store, Pki), ServerError> {
    use crate::secrets;
    let store = Store::connect_postgres(url)?;
    let (store, opened) = if secrets::initialised(&store)? {
        let opened = secrets::load(&store, key_path)?;
        (store.lock_data(data)?, opened)
    } else {
        // The directory first: the replica that initialises must be able to write
        // admin.token once its transaction has committed.
        let store = store.lock_data(data)?;
        let material = match secrets::Material::from_dir(data)? {
            Some(m) => {
                tracing::info!(
                    "sealing the CA and command-signing keys of {} into the empty database",
                    data.display()
                );
                m
            }
            None => secrets::Material::fresh()?,
        };
        let opened = secrets::initialise_or_load(&store, key_path, material).await?;
        (store, opened)
    };
    for leftover in ["ca.key", "command.key"] {
        if data.join(leftover).exists() {
            tracing::warn!(
                "{} is no longer used: this server's CA and command-signing keys are the database's (sealed with {}); remove the file once the migration is confirmed",
                data.join(leftover).display(),
                key_path.display()
            );
        }
    }
    let keys = crate::signing::KeyRing::load_shared(Box::new(opened.shared.clone()))?;
    let pki = Pki::with_shared_ca(data, hostnames, opened.ca_pem, &opened.ca_key_pem, keys)?;
    if let Some(secret) = opened.admin_token {
        let path = write_admin_token(data, &secret)?;
        tracing::info!(
            "initialised the database: admin token written to {}",
            path.display()
        );
    }
    Ok((store, pki))
}

/// Writes the initial admin token's secret to `data/admin.token` (private), where IT reads it
/// after the first start; returns the path.
fn write_admin_token(data: &Path, secret: &str) -> Result<std::path::PathBuf, ServerError> {
    let path = data.join("admin.token");
    crate::fsutil::write_private(&path, format!("{secret}\n").as_bytes()).map_err(|source| {
        ServerError::Io {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// The HTTP/2 settings of every connection: keep-alive pings that find dead peers. TLS (and
/// no Nagle delay) comes before it, from [`crate::tls::TlsListener`] with
/// [`crate::tls::grpc_config`] (see [`run`]); tonic ignores its own socket settings for
/// connections it is handed. The fleet simulator's bare baseline serves through this same
/// builder and listener, so the two are compared on equal terms.
pub fn transport() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
}

/// Serves the agent and admin APIs (plus gRPC health and reflection) over TLS on `listener`
/// until `shutdown` completes. Client certificates are optional at the TLS layer because admin
/// calls and enrollment come without one; the agent API checks them per call.
pub async fn run(
    listener: TcpListener,
    state: State,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let tls = crate::tls::grpc_config_with(state.pki.server_cert(), state.pki.ca_pem())?;
    // TLS handshakes happen in the listener, bounded (see `tls`), before tonic sees a
    // connection; tonic then gives each request its connection's `tls::Peer`.
    let incoming =
        crate::tls::TlsListener::http2(listener, tls, "gRPC").map_err(ServerError::Listener)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServiceServer<AgentApi>>().await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let agent = AgentServiceServer::new(AgentApi::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServiceServer::new(AdminApi::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    // Once a minute: commands whose queue time ran out expire; every five minutes the
    // time-based rules (check-in overdue, trips ending, end of employment) are re-evaluated.
    let timer_state = state.clone();
    let expiry = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(e) =
                crate::commands::expire_due(&timer_state, crate::timefmt::now_ms()).await
            {
                tracing::error!("command expiry: {e}");
            }
            if n.is_multiple_of(5)
                && let Err(e) = crate::findings::evaluate_all(&timer_state).await
            {
                tracing::error!("policy evaluation: {e}");
            }
            n += 1;
        }
    });
    let sender = tokio::spawn(crate::notify::run_sender(state.clone()));
    // Replicas on one database: a rotation on another replica reaches the agents held here
    // within KEY_REFRESH, and a retirement there drops the retired private keys from this
    // replica's memory (see `KeyRing::refresh` for why a periodic look suffices). A no-op on
    // the embedded store.
    let key_state = state.clone();
    let key_refresh = tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEY_REFRESH);
        loop {
            tick.tick().await;
            match key_state.pki.command_keys.refresh() {
                Ok(true) => {
                    let handed = crate::commands::hand_key_chain(&key_state);
                    tracing::info!(
                        generation = key_state.pki.command_keys.current().0,
                        handed,
                        "another replica rotated or retired command-signing keys; connected agents were handed the chain"
                    );
                }
                Ok(false) => {}
                Err(e) => tracing::error!("reloading the command-signing keys: {e}"),
            }
        }
    });
    // Other replicas' changes (PostgreSQL); ends at once on the embedded store.
    let follower = tokio::spawn(crate::replicas::follow(state.clone()));
    // On shutdown tonic stops accepting and sends every connection a GOAWAY, then waits for
    // their streams to end, which a held Connect stream never does by itself: so the streams
    // are ended here, and whatever is still open after SHUTDOWN_GRACE is left behind.
    let (began, begun) = tokio::sync::oneshot::channel::<()>();
    let stop_state = state.clone();
    let shutdown = async move {
        shutdown.await;
        stop_state.stop_streams();
        let _ = began.send(());
    };
    let serve = transport()
        .layer(crate::preauth::PreAuthLayer::new(state.clone()))
        .add_service(agent)
        .add_service(admin)
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, shutdown);
    let served = tokio::select! {
        r = serve => r,
        () = async {
            match begun.await {
                Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
                Err(_) => std::future::pending().await,
            }
        } => {
            tracing::warn!(
                "connections still open {} s after the shutdown began; closing them",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    };
    expiry.abort();
    sender.abort();
    key_refresh.abort();
    follower.abort();
    served?;
    // Whatever sled still buffers (last-seen times) goes to disk before we exit, in bounded
    // time: acknowledged data is on disk already.
    tokio::time::timeout(FLUSH_BOUND, state.store.flush())
        .await
        .map_err(|_| ServerError::FlushTimeout(FLUSH_BOUND.as_secs()))??;
    tracing::info!("gRPC server stopped; store flushed");
    Ok(())
}

/// Serves the web console on `listener` until `shutdown` completes: HTTPS with the server's
/// certificate, or plain HTTP when `transport` says so (only ever for loopback; see
/// [`crate::console::Transport::for_addr`]). Its pages call the same admin API as `vakt`.
pub async fn run_console(
    listener: TcpListener,
    state: State,
    transport: crate::console::Transport,
    login: crate::console::oidc::Login,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    crate::console::serve_with_login(listener, state, transport, login, shutdown).await?;
    Ok(())
}

/// Serves `GET /metrics` (Prometheus' text format, [`crate::metrics`]) on `listener` until
/// `shutdown`, as `access` says (see [`MetricsEndpoint`]).
pub async fn run_metrics(
    listener: TcpListener,
    state: State,
    access: crate::metrics_access::MetricsAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    MetricsEndpoint::new(listener, state, access)?
        .serve(shutdown)
        .await;
    Ok(())
}

/// The metrics listener, ready to serve: through the console's server loop (header timeout,
/// connection limit), over TLS with the server's certificate when `access.transport` says so,
/// and answering 401 before any work unless a scrape carries the token. Made before it is
/// served so that a start that cannot serve metrics fails at start, not in a task.
pub struct MetricsEndpoint {
    listener: MetricsListener,
    app: axum::Router,
}

enum MetricsListener {
    Plain(TcpListener),
    Tls(crate::tls::TlsListener),
}

impl MetricsEndpoint {
    pub fn new(
        listener: TcpListener,
        state: State,
        access: crate::metrics_access::MetricsAccess,
    ) -> Result<Self, ServerError> {
        let listener = match access.transport {
            crate::console::Transport::Plain => MetricsListener::Plain(listener),
            crate::console::Transport::Tls => {
                let config = crate::tls::console_config_with(state.pki.server_cert())
                    .map_err(ServerError::MetricsTls)?;
                MetricsListener::Tls(
                    crate::tls::TlsListener::new(listener, config, "metrics")
                        .map_err(ServerError::MetricsListener)?,
                )
            }
        };
        let token = access.token.map(std::sync::Arc::new);
        let logs = std::sync::Arc::new(ScrapeLogs::default());
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |req: axum::extract::Request| {
                let state = state.clone();
                let token = token.clone();
                let logs = logs.clone();
                // The parts only: a body is not `Sync`, and the future must be `Send`.
                let (parts, _) = req.into_parts();
                async move { scrape(&state, token.as_deref(), &logs, &parts).await }
            }),
        );
        Ok(Self { listener, app })
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        match self.listener {
            MetricsListener::Plain(l) => crate::console::listen::serve(l, self.app, shutdown).await,
            MetricsListener::Tls(l) => crate::console::listen::serve(l, self.app, shutdown).await,
        }
    }
}

/// How often a refused scrape, or a failed count, is written to the log at most: a
/// Prometheus with the wrong token scrapes every 15–60 s, a prober as often as it likes.
pub const SCRAPE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The metrics endpoint's log windows ([`crate::logwindow`]).
struct ScrapeLogs {
    refused: std::sync::Mutex<crate::logwindow::LogWindow>,
    failed: std::sync::Mutex<crate::logwindow::LogWindow>,
}

impl Default for ScrapeLogs {
    fn default() -> Self {
        let window = || std::sync::Mutex::new(crate::logwindow::LogWindow::new(SCRAPE_LOG_EVERY));
        Self {
            refused: window(),
            failed: window(),
        }
    }
}

/// Notes an event in `window` now: `Some(left out since the last line)` when a line is due.
fn log_due(window: &std::sync::Mutex<crate::logwindow::LogWindow>) -> Option<u64> {
    // A panic elsewhere while it was held leaves a window still fit to count with.
    let mut w = window
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    w.note(std::time::Instant::now())
}

/// One scrape: the token checked first, so a request without it costs the server nothing but
/// a log line now and then (the peer and why: an admin can tell a misconfigured Prometheus,
/// or someone probing, from a quiet one).
async fn scrape(
    state: &State,
    token: Option<&crate::metrics_access::ScrapeToken>,
    logs: &ScrapeLogs,
    req: &axum::http::request::Parts,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let authorization = req.headers.get(header::AUTHORIZATION);
    if let Some(token) = token
        && let Err(why) = token.check(authorization.map(|v| v.as_bytes()))
    {
        if let Some(left_out) = log_due(&logs.refused) {
            let peer = req
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or_else(|| "an unknown peer".to_string(), |c| c.0.to_string());
            tracing::warn!(
                "metrics: refused a scrape from {peer}: {why}{}",
                crate::logwindow::suppressed_note(left_out)
            );
        }
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"vakt-metrics\"")],
            "a bearer token is required: the one in the server's metrics_token_file\n",
        )
            .into_response();
    }
    match state.metrics.render(state).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            if let Some(left_out) = log_due(&logs.failed) {
                tracing::error!(
                    "metrics: {e}{}",
                    crate::logwindow::suppressed_note(left_out)
                );
            }
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics unavailable; see the server's log\n",
            )
                .into_response()
        }
    }
}
