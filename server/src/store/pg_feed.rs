//! The PostgreSQL change feed: one LISTEN connection per process, outside the pool, on which
//! the `vakt_changes` notifications of migration 0002's trigger arrive. Each is a write another
//! process committed to a watched tree; this process's own (same `application_name`) are
//! skipped, since the writer already did what the change calls for.
//!
//! PostgreSQL forgets the notifications sent while a listener is away, so every time the
//! LISTEN is (re-)established the feed says [`Change::Resync`] first: the consumer then
//! rebuilds what it derives from the trees instead of trusting that it saw every change. A
//! broken connection is reconnected with a doubling backoff (0.1 s up to 5 s).
//!
//! Backpressure: the channel is bounded and the feed waits when it is full, without reading
//! the connection meanwhile; PostgreSQL keeps the notifications queued for it (its queue is
//! gigabytes), so a slow consumer loses nothing.

use super::engine::Change;
use super::pg_tls::MakeRustls;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

/// The channel migration 0002's trigger notifies.
pub const CHANNEL: &str = "vakt_changes";

/// Changes waiting for the consumer before the feed stops reading.
const BUFFER: usize = 1024;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Starts the feed on `rt` (the engine's runtime); it ends when the receiver is dropped.
pub fn start(
    rt: &tokio::runtime::Handle,
    config: tokio_postgres::Config,
    tls: MakeRustls,
    origin: String,
) -> mpsc::Receiver<Change> {
    let (tx, rx) = mpsc::channel(BUFFER);
    rt.spawn(run(config, tls, origin, tx));
    rx
}

/// Listens until the receiver goes, reconnecting whenever the connection breaks.
/// The connection goes over the same TLS as the pool's (the URL's `sslmode`).
async fn run(
    config: tokio_postgres::Config,
    tls: MakeRustls,
    origin: String,
    tx: mpsc::Sender<Change>,
) {
    let mut retry = FIRST_RETRY;
    while !tx.is_closed() {
        match listen(&config, &tls, &origin, &tx).await {
            Ok(()) => return,
            Err(Broke { listened, why }) => {
                if listened {
                    retry = FIRST_RETRY;
                }
                tracing::warn!(
                    "the change feed from PostgreSQL broke ({why}); reconnecting in {} ms",
                    retry.as_millis()
                );
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// Why one connection of the feed ended.
struct Broke {
    /// Whether its LISTEN had taken effect (the backoff starts again after a good run).
    listened: bool,
    why: String,
}

/// One connection: LISTEN, say Resync, then pass changes on until it breaks (`Err`) or the
/// receiver is gone (`Ok`).
async fn listen(
    config: &tokio_postgres::Config,
    tls: &MakeRustls,
    origin: &str,
    tx: &mpsc::Sender<Change>,
) -> Result<(), Broke> {
    let broke = |listened: bool| {
        move |e: tokio_postgres::Error| Broke {
            listened,
            why: super::pg::describe(&e),
        }
    };
    let (client, mut conn) = config.connect(tls.clone()).await.map_err(broke(false))?;
    // The connection's messages (replies and notifications alike) are read only by polling
    // it, so it is driven in a task of its own while the LISTEN is sent.
    let (note_tx, mut notes) = mpsc::channel::<tokio_postgres::Notification>(BUFFER);
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if note_tx.send(n).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let listened = client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(broke(false));
    if let Err(e) = listened {
        driver.abort();
        return Err(e);
    }
    tracing::info!("following other replicas' changes (PostgreSQL LISTEN {CHANNEL})");
    // Whatever was notified before the LISTEN took effect is unknown: start from the trees.
    if tx.send(Change::Resync).await.is_err() {
        driver.abort();
        return Ok(());
    }
    while let Some(n) = notes.recv().await {
        let Some((writer, tree, key)) = parse_payload(n.payload()) else {
            tracing::warn!(payload = %n.payload(), "a change notification this server cannot read; resynchronising");
            if tx.send(Change::Resync).await.is_err() {
                break;
            }
            continue;
        };
        if writer == origin {
            continue;
        }
        let change = Change::Written {
            tree: tree.to_string(),
            key,
        };
        if tx.send(change).await.is_err() {
            break;
        }
    }
    drop(client);
    match driver.await {
        Ok(Ok(())) if tx.is_closed() => Ok(()),
        Ok(Ok(())) => Err(Broke {
            listened: true,
            why: "the connection closed".into(),
        }),
        Ok(Err(e)) => Err(broke(true)(e)),
        Err(e) => Err(Broke {
            listened: true,
            why: format!("its task ended: {e}"),
        }),
    }
}

/// "<writer> <tree> <key as hex>" (migration 0002) as its parts; `None` if it is not that.
/// Read from the right: the writer is any session's `application_name`, which may hold spaces.
pub fn parse_payload(payload: &str) -> Option<(&str, &str, Vec<u8>)> {
    let mut parts = payload.rsplitn(3, ' ');
    let (key, tree, writer) = (parts.next()?, parts.next()?, parts.next()?);
    if tree.is_empty() {
        return None;
    }
    Some((writer, tree, unhex(key)?))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_read_or_refused() {
        assert_eq!(
            parse_payload("vakt-server-00ff commands 636d642d31"),
            Some(("vakt-server-00ff", "commands", b"cmd-1".to_vec()))
        );
        // An empty key (a tree's empty key) is still a key.
        assert_eq!(
            parse_payload("w policies "),
            Some(("w", "policies", vec![]))
        );
        // Any session may write, under any application_name.
        assert_eq!(
            parse_payload("my tool commands 63"),
            Some(("my tool", "commands", b"c".to_vec()))
        );
        assert_eq!(
            parse_payload(" commands 63"),
            Some(("", "commands", b"c".to_vec()))
        );
        for bad in [
            "",
            "w commands",
            "w commands 6",
            "w commands zz",
            "w commands 63 extra",
            "w  63",
            "w commands +1",
            "w commands é1",
        ] {
            assert_eq!(parse_payload(bad), None, "{bad:?}");
        }
    }
}
