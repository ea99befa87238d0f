//! Small decode limits for calls before authentication. The server decodes messages of up to
//! [`crate::server::MAX_MESSAGE_BYTES`] (16 MiB: a big machine's report), but that limit is
//! the services' own and applies before a handler has looked at who is calling: anyone who
//! can reach the port could make it buffer 16 MiB per call with an Enroll, an admin call with
//! a made-up token, or an agent call without a certificate.
//!
//! tonic sets its decode limit per service, and Enroll shares its service with the reports,
//! so the split is made here, in a layer in front of every service, by who is calling:
//!
//! - Enroll is always before authentication (it carries an enrollment token and a CSR, about
//!   2 KiB): at most [`PRE_AUTH_BYTES`].
//! - Other agent calls: the full limit only on a connection whose client certificate was
//!   verified against the server's CA at the handshake (only enrolled devices hold one; the
//!   handler then checks that it is not revoked).
//! - Admin calls: the full limit only with a valid API token, checked here the same way the
//!   handler checks it (a sha-256 and a lookup). With one, `policy apply` and `people import`
//!   keep their room (a people CSV of 10,000 rows is about 1 MiB).
//! - Everything else (health, reflection): [`PRE_AUTH_BYTES`].
//!
//! A request over its limit ends with `resource_exhausted` and a sentence, once that many
//! bytes have arrived; nothing beyond them is read.

use crate::api::admin::AdminApi;
use crate::state::State;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;
use vakt_proto::pb;

/// The most a call before authentication may send, in bytes (all its messages together).
pub const PRE_AUTH_BYTES: usize = 64 * 1024;

const ENROLL: &str = "/vakt.v1.AgentService/Enroll";
const AGENT: &str = "/vakt.v1.AgentService/";
const ADMIN: &str = "/vakt.v1.AdminService/";

/// The layer for tonic's `Server::layer`.
#[derive(Clone, Debug)]
pub struct PreAuthLayer {
    state: State,
}

impl PreAuthLayer {
    pub fn new(state: State) -> Self {
        Self { state }
    }
}

impl<S> tower_layer::Layer<S> for PreAuthLayer {
    type Service = PreAuth<S>;

    fn layer(&self, inner: S) -> PreAuth<S> {
        PreAuth {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`PreAuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct PreAuth<S> {
    inner: S,
    state: State,
}

impl<S> PreAuth<S> {
    /// Whether `req` comes from someone already known: a device's verified certificate for
    /// agent calls, a valid token for admin calls.
    fn authenticated(&self, req: &tonic::codegen::http::Request<Body>) -> bool {
        let path = req.uri().path();
        if path == ENROLL {
            false
        } else if path.starts_with(AGENT) {
            crate::tls::Peer::of_extensions(req.extensions())
                .is_some_and(|p| p.cert_sha256.is_some())
        } else if path.starts_with(ADMIN) {
            let probe = tonic::Request::from_parts(
                tonic::metadata::MetadataMap::from_headers(req.headers().clone()),
                tonic::Extensions::default(),
                (),
            );
            AdminApi::new(self.state.clone())
                .authorize(&probe, pb::Role::Viewer)
                .is_ok()
        } else {
            false
        }
    }
}

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<Body>> for PreAuth<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<Body>) -> Self::Future {
        if self.authenticated(&req) {
            return self.inner.call(req);
        }
        let req = req.map(|inner| {
            Body::new(Capped {
                inner,
                left: PRE_AUTH_BYTES,
            })
        });
        self.inner.call(req)
    }
}

/// A request body that fails once more than its limit has arrived.
struct Capped {
    inner: Body,
    left: usize,
}

impl http_body::Body for Capped {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            match self.left.checked_sub(data.len()) {
                Some(left) => self.left = left,
                None => {
                    self.left = 0;
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "this call sent more than {} KiB before authentication; enrollment and unauthenticated calls are small (check the API token or the device's certificate)",
                        PRE_AUTH_BYTES / 1024
                    )))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
