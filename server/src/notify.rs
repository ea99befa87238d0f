//! Telling people and systems: a durable outbox of mails (SMTP) and webhook calls (JSON POST),
//! delivered by a background worker with retries, so a mail server or webhook that is down
//! never blocks a report or loses a notification.

use crate::state::State;
use crate::store::{JsonTree, StoreError};
use crate::timefmt::now_ms;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

/// Where notifications go and how. Its `Debug` leaves the secrets out (see [`crate::redact`]).
#[derive(Clone, Default)]
pub struct NotifyConfig {
    /// `smtp://host:port` (plain, for a local relay), `smtp://host?tls=required` (STARTTLS)
    /// or `smtps://host` (TLS), with `user:pass@` if the relay needs it. `None`: mail is queued
    /// but not sent (and the server says so at start).
    pub smtp_url: Option<String>,
    pub from: String,
    /// Who hears of a violation when the device's person has no known manager.
    pub it_address: Option<String>,
    /// Every event is also POSTed as JSON to each of these.
    pub webhooks: Vec<String>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("smtp_url", &crate::redact::opt_url(&self.smtp_url))
            .field("from", &self.from)
            .field("it_address", &self.it_address)
            .field("webhooks", &crate::redact::urls(&self.webhooks))
            .finish()
    }
}

/// One queued mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    pub created_ms: i64,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: String,
    /// Set for a webhook delivery: POST `body` (JSON) here instead of mailing it.
    #[serde(default)]
    pub webhook: Option<String>,
}

fn item(
    to: &[String],
    subject: &str,
    body: &str,
    webhook: Option<String>,
) -> (Vec<u8>, OutboxItem) {
    let now = now_ms();
    let id = format!(
        "m-{now:012x}{}",
        crate::token::hex(&crate::token::random_bytes::<4>())
    );
    let item = OutboxItem {
        id: id.clone(),
        to: to.to_vec(),
        subject: subject.to_string(),
        body: body.to_string(),
        created_ms: now,
        attempts: 0,
        next_attempt_ms: now,
        last_error: String::new(),
        webhook,
    };
    (id.into_bytes(), item)
}

/// An outbox item (with its key) for a mail, to be stored by the caller: in one transaction
/// with what caused it (see `findings::evaluate_device`), then [`wake`].
pub fn mail_item(to: &[String], subject: &str, body: &str) -> (Vec<u8>, OutboxItem) {
    item(to, subject, body, None)
}

/// The outbox items that POST `event` (JSON with an `event` field) to every configured
/// webhook; none when there are no webhooks.
pub fn event_items(config: &NotifyConfig, event: &serde_json::Value) -> Vec<(Vec<u8>, OutboxItem)> {
    let body = event.to_string();
    let name = event["event"].as_str().unwrap_or("event").to_string();
    config
        .webhooks
        .iter()
        .map(|url| item(&[], &name, &body, Some(url.clone())))
        .collect()
}

/// Tells the sender that something was queued.
pub fn wake(state: &State) {
    state.outbox_wake.notify_one();
}

/// Queues a mail durably and wakes the sender.
pub async fn enqueue(
    state: &State,
    to: &[String],
    subject: &str,
    body: &str,
) -> Result<(), StoreError> {
    state
        .store
        .json_apply(JsonTree::Outbox, &[mail_item(to, subject, body)], &[])
        .await?;
    wake(state);
    Ok(())
}

/// Queues `event` (JSON with an `event` field) for every configured webhook.
pub async fn enqueue_event(state: &State, event: &serde_json::Value) -> Result<(), StoreError> {
    let items = event_items(&state.notify, event);
    if items.is_empty() {
        return Ok(());
    }
    state
        .store
        .json_apply(JsonTree::Outbox, &items, &[])
        .await?;
    wake(state);
    Ok(())
}

/// Mails still waiting to go out.
pub fn pending(state: &State) -> Result<Vec<OutboxItem>, StoreError> {
    state.store.json_list(JsonTree::Outbox, b"")
}

fn build(cfg: &NotifyConfig, item: &OutboxItem) -> Result<Message, String> {
    let from: Mailbox = cfg
        .from
        .parse()
        .map_err(|e| format!("from address '{}': {e}", cfg.from))?;
    let mut b = Message::builder().from(from).subject(item.subject.clone());
    for to in &item.to {
        let mb: Mailbox = to.parse().map_err(|e| format!("address '{to}': {e}"))?;
        b = b.to(mb);
    }
    b.header(ContentType::TEXT_PLAIN)
        .body(item.body.clone())
        .map_err(|e| e.to_string())
}

/// How long a claimed item is left to the server that claimed it before another may send it:
/// longer than a send can take (lettre's SMTP timeout is a minute, a webhook's is shorter).
const CLAIM_MS: i64 = 5 * 60 * 1000;

/// Takes a due item for this server: moves its next attempt past [`CLAIM_MS`] in one
/// transaction, if it is still there and still due. Why: servers sharing one database
/// (replicas) each run a sender over the same outbox, and without a claim both would send
/// every mail. A server that dies between the claim and the send leaves the item to be sent
/// by another after the claim runs out: at least once, never lost. `None`: another server
/// has it, or it is gone.
async fn claim(state: &State, key: &[u8]) -> Option<OutboxItem> {
    let now = now_ms();
    let claimed = state
        .store
        .json_update(JsonTree::Outbox, key, |cur: OutboxItem| {
            (cur.next_attempt_ms <= now).then(|| OutboxItem {
                next_attempt_ms: now + CLAIM_MS,
                ..cur
            })
        })
        .await;
    claimed.unwrap_or_else(|e| {
        tracing::error!("outbox: {e}");
        None
    })
}

/// Sends what is due, forever; retries with growing delays (30 s doubling, at most an hour).
pub async fn run_sender(state: State) {
    let transport = match &state.notify.smtp_url {
        None => None,
        Some(url) => match AsyncSmtpTransport::<Tokio1Executor>::from_url(url) {
            Ok(t) => Some(t.build()),
            Err(e) => {
                tracing::error!(
                    "smtp url '{}': {e}; mail will stay queued",
                    crate::redact::url(url)
                );
                None
            }
        },
    };
    if transport.is_none() && state.notify.webhooks.is_empty() {
        return;
    }
    loop {
        let now = now_ms();
        let due: Vec<OutboxItem> = match pending(&state) {
            // Mail waits (queued, not lost) while no relay is configured.
            Ok(items) => items
                .into_iter()
                .filter(|i| {
                    i.next_attempt_ms <= now && (i.webhook.is_some() || transport.is_some())
                })
                .collect(),
            Err(e) => {
                tracing::error!("outbox: {e}");
                Vec::new()
            }
        };
        for due_item in due {
            let key = due_item.id.into_bytes();
            let Some(mut item) = claim(&state, &key).await else {
                continue;
            };
            let sent = match (&item.webhook, &transport) {
                (Some(url), _) => crate::webhook::post(url, item.body.as_bytes())
                    .await
                    .map_err(|e| e.to_string()),
                (None, Some(transport)) => match build(&state.notify, &item) {
                    Ok(msg) => transport
                        .send(msg)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                },
                (None, None) => continue,
            };
            let res = match sent {
                Ok(()) => {
                    tracing::info!(to = ?item.to, webhook = ?crate::redact::opt_url(&item.webhook), subject = %item.subject, "notification sent");
                    state
                        .store
                        .json_apply::<OutboxItem>(JsonTree::Outbox, &[], &[key])
                        .await
                }
                Err(e) => {
                    item.attempts += 1;
                    let delay = 30_000i64
                        .saturating_mul(1 << item.attempts.min(7))
                        .min(3_600_000);
                    item.next_attempt_ms = now_ms() + delay;
                    tracing::warn!(to = ?item.to, webhook = ?crate::redact::opt_url(&item.webhook), attempts = item.attempts, "mail not sent, retrying in {} s: {e}", delay / 1000);
                    item.last_error = e;
                    state
                        .store
                        .json_apply(JsonTree::Outbox, &[(key, item)], &[])
                        .await
                }
            };
            if let Err(e) = res {
                tracing::error!("outbox: {e}");
            }
        }
        tokio::select! {
            _ = state.outbox_wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A webhook receiver that answers 200 and keeps every body it was sent.
    async fn sink() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = got.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let body = loop {
                        let n = s.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "the request ended early");
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if body.len() >= len {
                                break body.to_string();
                            }
                        }
                    };
                    kept.lock().unwrap().push(body);
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .unwrap();
                });
            }
        });
        (url, got)
    }

    /// Two senders over one outbox, as two replicas on one database run: every event is
    /// delivered exactly once. Without the claim both senders read the same due items and
    /// post each of them (checked: removing `claim` makes this fail with duplicates).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_senders_deliver_each_item_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("db")).unwrap();
        let pki = crate::pki::Pki::load_or_create(dir.path(), &[]).unwrap();
        let (url, got) = sink().await;
        let config = NotifyConfig {
            webhooks: vec![url],
            ..NotifyConfig::default()
        };
        let state = State::new(store, pki, config).unwrap();
        const EVENTS: usize = 40;
        for n in 0..EVENTS {
            enqueue_event(&state, &serde_json::json!({"event": "test", "n": n}))
                .await
                .unwrap();
        }
        let senders = [
            tokio::spawn(run_sender(state.clone())),
            tokio::spawn(run_sender(state.clone())),
        ];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !pending(&state).unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "outbox not drained");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        senders.iter().for_each(|s| s.abort());
        let bodies = got.lock().unwrap().clone();
        let unique: std::collections::BTreeSet<&String> = bodies.iter().collect();
        assert_eq!(unique.len(), EVENTS, "every event arrived");
        assert_eq!(bodies.len(), EVENTS, "no event arrived twice");
    }
}
