//! Bad input against a real server: garbage and lying gRPC frames, a message over the 16 MiB
//! limit, clients that connect and never finish the TLS handshake (silent, inside the
//! ClientHello, and after it), an enrollment flood, and a
//! client certificate of another CA. After each, a normal agent on a new connection of its own
//! still gets its report acknowledged: the server keeps serving everyone else.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tonic::codegen::{Bytes, http};
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;
use vakt_tests::TestServer;
use vakt_tests::load::sim::{Fleet, SimAgent};

/// A request body of one chunk of raw bytes: whatever gRPC framing (or none) the test wants.
struct Raw(Option<Bytes>);

impl http_body::Body for Raw {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A gRPC frame: compressed flag, big-endian length as claimed, then `payload`.
fn frame(compressed: u8, claimed_len: u32, payload: &[u8]) -> Bytes {
    let mut v = vec![compressed];
    v.extend_from_slice(&claimed_len.to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// Sends `body` as the Report call over `channel` and returns the gRPC status code it ends
/// with (from the headers of a trailers-only answer, or from the trailers).
async fn raw_report(channel: tonic::transport::Channel, body: Bytes) -> tonic::Code {
    use tonic::client::GrpcService;
    let mut svc = channel;
    std::future::poll_fn(|cx| GrpcService::<tonic::body::Body>::poll_ready(&mut svc, cx))
        .await
        .unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri("/vakt.v1.AgentService/Report")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Raw(Some(body))))
        .unwrap();
    let resp = match GrpcService::call(&mut svc, req).await {
        Ok(r) => r,
        // The server may reset the stream outright for a frame it will not read.
        Err(_) => return tonic::Code::Unavailable,
    };
    if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
        return s.code();
    }
    let mut body = resp.into_body();
    loop {
        let f =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await;
        match f {
            Some(Ok(frame)) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return tonic::Status::from_header_map(&trailers)
                        .map_or(tonic::Code::Ok, |s| s.code());
                }
            }
            Some(Err(_)) => return tonic::Code::Unknown,
            None => return tonic::Code::Ok,
        }
    }
}

/// A connection that sends a real ClientHello (rustls's first flight) and then says nothing.
async fn stalled_after_hello(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut tls =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a ClientHello of {} bytes", hello.len());
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s
}

/// The agent everyone else stands for: a new connection, a report, a clean acknowledgement.
async fn still_serving(fleet: &Fleet, canary: &SimAgent, after: &str) {
    let t = Instant::now();
    canary.dial(fleet).await.unwrap();
    let ack = canary
        .report(false)
        .await
        .unwrap_or_else(|e| panic!("after {after}: a normal agent's report failed: {e}"));
    assert!(ack.clean, "after {after}: {ack:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "after {after}: a normal agent waited {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_serving_everyone_through_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let fleet = Fleet::new(&server.url(), &server.ca_pem(), 8);
    let token = server.enroll_token(&["--uses", "10"]);
    let (canary, _) = SimAgent::enroll(&fleet, "bad", 0, &token, Duration::from_secs(30))
        .await
        .unwrap();
    canary.dial(&fleet).await.unwrap();
    assert!(canary.report(false).await.unwrap().clean);
    still_serving(&fleet, &canary, "nothing").await;

    // An authenticated connection sends garbage: the server refuses the call, not the process.
    let (bad, _) = SimAgent::enroll(&fleet, "bad", 1, &token, Duration::from_secs(30))
        .await
        .unwrap();
    bad.dial(&fleet).await.unwrap();
    let ch = || async {
        vakt_agent::link::connect(&server.url(), &server.ca_pem(), None)
            .await
            .unwrap()
    };
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cases: [(&str, Bytes); 4] = [
        (
            "a frame of garbage protobuf",
            frame(0, garbage.len() as u32, &garbage),
        ),
        (
            "a frame that claims more than it carries",
            frame(0, 1000, b"0123456789"),
        ),
        (
            "a compressed frame without an encoding",
            frame(1, 10, b"0123456789"),
        ),
        (
            "bytes that are no gRPC frame at all",
            Bytes::from_static(b"GET / HTTP/1.1\r\n"),
        ),
    ];
    for (what, body) in cases {
        let code = raw_report(bad.channel().unwrap(), body).await;
        assert_ne!(code, tonic::Code::Ok, "{what} was accepted");
        still_serving(&fleet, &canary, what).await;
    }

    // An enrolled laptop announcing far more section digests than there are kinds: each is a
    // key its check-in reads, in a statement shared with other laptops' on PostgreSQL.
    let flood = pb::ReportRequest {
        sequence: 1,
        digests: (0..100_000)
            .map(|i| pb::SectionDigest {
                kind: i,
                hash: vec![0; 32],
            })
            .collect(),
        ..Default::default()
    };
    let err = AgentServiceClient::new(bad.channel().unwrap())
        .report(flood)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("section digests"), "{err:?}");
    still_serving(&fleet, &canary, "a flood of section digests").await;

    // Over the 16 MiB limit: refused from the frame header on, before it is read into memory.
    let big = vec![0u8; vakt_server::server::MAX_MESSAGE_BYTES + 1024];
    let code = raw_report(ch().await, frame(0, big.len() as u32, &big)).await;
    assert!(
        matches!(
            code,
            tonic::Code::OutOfRange | tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "an oversized message gave {code:?}"
    );
    let huge = pb::ReportRequest {
        sequence: 1,
        agent_version: "x".repeat(vakt_server::server::MAX_MESSAGE_BYTES + 1),
        ..Default::default()
    };
    let err = AgentServiceClient::new(ch().await)
        .report(huge)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    still_serving(&fleet, &canary, "an oversized message").await;

    // Slow clients: connections that say nothing, and ones that stop inside the ClientHello.
    let addr = server.addr.clone();
    let mut silent = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if i % 4 == 0 {
            use tokio::io::AsyncWriteExt;
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        silent.push(s);
    }
    still_serving(
        &fleet,
        &canary,
        "200 connections stalled in the TLS handshake",
    )
    .await;
    // Clients that send a whole ClientHello and stall: each gets a place among the server's
    // bounded handshakes (tls::MAX_HANDSHAKES, 128) and must give it up, not block the rest.
    for _ in 0..200 {
        silent.push(stalled_after_hello(&addr).await);
    }
    still_serving(
        &fleet,
        &canary,
        "200 clients that stall after their ClientHello",
    )
    .await;
    // The TLS handshake timeout (10 s) closes them.
    let mut first = silent.swap_remove(0);
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match first.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a client that never finishes the handshake is dropped"
    );
    drop(silent);

    // An enrollment flood from one address: refused with RESOURCE_EXHAUSTED before any work,
    // while another address still enrolls and enrolled agents still report.
    let flood_channel = ch().await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut c = AgentServiceClient::new(flood_channel.clone());
        set.spawn(async move {
            c.enroll(pb::EnrollRequest {
                token: "vakt_e_not-a-token".into(),
                csr_der: vec![1, 2, 3],
                ..Default::default()
            })
            .await
            .map(|_| ())
            .unwrap_err()
            .code()
        });
    }
    let mut limited = 0;
    while let Some(code) = set.join_next().await {
        let code = code.unwrap();
        assert!(
            matches!(
                code,
                tonic::Code::ResourceExhausted | tonic::Code::PermissionDenied
            ),
            "{code:?}"
        );
        limited += usize::from(code == tonic::Code::ResourceExhausted);
    }
    assert!(
        limited >= 50,
        "only {limited} of 100 flooding enrollments were limited"
    );
    // Index 2 dials from 127.0.0.3: its own bucket.
    let (other, _) = SimAgent::enroll(&fleet, "bad", 2, &token, Duration::ZERO)
        .await
        .unwrap();
    assert!(!other.device_id.is_empty());
    still_serving(&fleet, &canary, "an enrollment flood").await;

    // A client certificate of another CA does not get through the handshake.
    assert!(
        !vakt_tests::foreign_ca_gets_through(&server.url(), &server.ca_pem()).await,
        "a foreign client certificate must be refused"
    );
    still_serving(&fleet, &canary, "a certificate of another CA").await;
}
