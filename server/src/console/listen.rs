//! The console's HTTP/1.1 server loop, in place of `axum::serve`, which has no header-read
//! timeout and no connection limit: a client that opened connections and trickled a header
//! (or sent nothing) held each of them forever, and enough of them locked IT out of the
//! console. Here a request's header must arrive within [`HEADER_READ_TIMEOUT`] (hyper's own
//! timer, which also closes a kept-alive connection left silent that long), and at most
//! [`MAX_CONNECTIONS`] are served at once; further ones wait in the listen queue until a
//! place frees, which a silent one does within the timeout. Each request carries its peer's
//! address as axum's `ConnectInfo` (the metrics endpoint names who it refused).

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// How long a client has to send a request's header (the first, or the next on a connection
/// kept alive).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Console connections served at once. A browser opens about six; this is room for the whole
/// IT desk many times over.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves `app` on `listener` until `shutdown`; then tells every open connection to finish its
/// request and close (the caller bounds how long it waits for them).
pub async fn serve<L>(mut listener: L, app: Router, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener,
    L::Addr: Clone + Send + Sync + 'static,
{
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let place = tokio::select! {
            p = places.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer.clone()));
            // A router is always ready (axum's documentation), so it is called without
            // `poll_ready`.
            tower_service::Service::call(&mut app.clone(), req)
        });
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _place = place;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("console connection: {e}");
                    }
                }
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    // Wait for the connections to close: each holds a place until it has.
    let _ = places.acquire_many(MAX_CONNECTIONS as u32).await;
}
