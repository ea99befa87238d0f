//! The store's contract on both engines: every case runs against sled in a temporary data
//! directory and against a real PostgreSQL (a private cluster, `vakt_tests::pg`), through
//! the store's public methods only, so the logic above the engine is checked to mean the same
//! on either. PostgreSQL cases skip, saying why, only when PostgreSQL is not installed.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use std::path::{Path, PathBuf};
use vakt_proto::pb;
use vakt_server::store::{Change, JsonTree, Store, StoreLocation};
use vakt_tests::pg::PgCluster;

/// Where one case's store lives, and what must stay alive for it.
struct Place {
    dir: tempfile::TempDir,
    location: StoreLocation,
    pg: Option<(PgCluster, &'static str)>,
}

impl Place {
    fn sled() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            location: StoreLocation::Embedded,
            pg: None,
        }
    }

    /// A fresh database on a cluster of its own; `None` (said on stderr) when PostgreSQL is
    /// not installed.
    fn postgres() -> Option<Self> {
        let cluster = match PgCluster::start() {
            Ok(c) => c,
            Err(why) => {
                eprintln!("skipped: {why}");
                return None;
            }
        };
        let url = cluster.database("vakt");
        Some(Self {
            dir: tempfile::tempdir().unwrap(),
            location: StoreLocation::Postgres(url),
            pg: Some((cluster, "vakt")),
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn open(&self) -> Store {
        Store::open_at(&self.data(), &self.location).unwrap()
    }

    /// Opens the store again, as a restart would (a fresh `Store` on the same data).
    async fn reopen(&self) -> Store {
        // sled's own threads may hold its files for a moment after the last handle is
        // dropped in this process (a restart, a new process, never meets them).
        for _ in 0..50 {
            match Store::open_at(&self.data(), &self.location) {
                Ok(s) => return s,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
        panic!("reopen: sled stayed locked");
    }

    /// Writes `value` under `key` of `tree` behind the store's back (the store is closed).
    async fn write_raw(&self, tree: &str, key: &[u8], value: &[u8]) {
        match &self.pg {
            Some((cluster, db)) => {
                cluster.sql(
                    db,
                    &format!(
                        "INSERT INTO vakt_kv (tree, key, value) VALUES ('{tree}', '\\x{}', '\\x{}') \
                         ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                        hex(key),
                        hex(value)
                    ),
                );
            }
            None => {
                let path = self.data().join("db");
                for _ in 0..50 {
                    match sled::open(&path) {
                        Ok(db) => {
                            db.open_tree(tree).unwrap().insert(key, value).unwrap();
                            db.flush().unwrap();
                            return;
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
                panic!("sled stayed locked");
            }
        }
    }
}

impl Place {
    /// Removes `trees` behind the store's back (the store is closed on sled), as a data
    /// directory or database from before they existed lacks them.
    async fn drop_raw(&self, trees: &[&str]) {
        match &self.pg {
            Some((cluster, db)) => {
                let names: Vec<String> = trees.iter().map(|t| format!("'{t}'")).collect();
                cluster.sql(
                    db,
                    &format!("DELETE FROM vakt_kv WHERE tree IN ({})", names.join(", ")),
                );
            }
            None => {
                let path = self.data().join("db");
                for _ in 0..50 {
                    match sled::open(&path) {
                        Ok(db) => {
                            for t in trees {
                                db.drop_tree(t).unwrap();
                            }
                            db.flush().unwrap();
                            return;
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
                panic!("sled stayed locked");
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Each case as a test on sled and one on PostgreSQL, on the multi-threaded runtime the
/// server uses; `current_thread` cases also run on the runtime `#[tokio::test]` defaults to.
macro_rules! both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sled() {
                super::$case(super::Place::sled()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(p) = super::Place::postgres() {
                    super::$case(p).await
                }
            }
        }
    )*};
}

both!(
    committed_writes_survive_a_fresh_store,
    an_enrollment_token_is_used_exactly_once_under_concurrent_enrollments,
    reenrollment_revokes_the_old_certificate,
    reports_store_changed_sections_and_ask_for_missing_ones,
    command_states_follow_every_write_and_survive_a_restart,
    scans_follow_key_order_and_prefix_bounds,
    a_corrupt_record_is_named_and_the_rest_stands,
    token_updates_never_undo_a_revocation,
    a_checkin_from_a_stale_record_keeps_the_other_write,
    concurrent_command_updates_are_never_lost,
    concurrent_checkins_lose_nothing,
    devices_are_found_by_hostname_through_the_index,
    loss_cases_are_found_by_device_through_the_index,
    a_store_from_before_the_indexes_builds_them_at_open,
    a_loss_report_reads_only_its_device_and_its_cases,
    lists_by_device_show_what_the_whole_trees_show_and_an_old_store_gets_them_at_open,
);

fn device(id: &str) -> pb::Device {
    pb::Device {
        id: id.into(),
        hostname: "lap".into(),
        state: pb::DeviceState::Active as i32,
        ..Default::default()
    }
}

async fn token(store: &Store, secret: &str, uses: u32) -> [u8; 32] {
    let h = vakt_server::token::hash(secret);
    store
        .put_enroll_token(
            &h,
            &pb::EnrollTokenRecord {
                id: secret.into(),
                uses_left: uses,
                uses_total: uses,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h
}

fn command(id: &str, device: &str, state: pb::CommandState) -> pb::CommandInfo {
    pb::CommandInfo {
        id: id.into(),
        device_id: device.into(),
        state: state as i32,
        ..Default::default()
    }
}

fn ids(cs: Vec<pb::CommandInfo>) -> Vec<String> {
    cs.into_iter().map(|c| c.id).collect()
}

async fn committed_writes_survive_a_fresh_store(p: Place) {
    {
        let s = p.open();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100u32 {
            let s = s.clone();
            tasks.spawn(async move { token(&s, &format!("t{i}"), 1).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let h = token(&s, "enroll", 1).await;
        s.enroll(&h, 1, device("d1"), Default::default(), [1; 32])
            .await
            .unwrap();
        let secs = vakt_proto::convert::report_to_sections(&Default::default());
        s.store_report("d1", 7, &secs, &[], 5, "v1").await.unwrap();
        s.audit("admin", "test.action", "d1", "", 9).await.unwrap();
    }
    let s = p.reopen().await;
    for i in 0..100u32 {
        let h = vakt_server::token::hash(&format!("t{i}"));
        assert!(s.check_enroll_token(&h, "x", 0).is_ok(), "token {i}");
    }
    let d = s.device_by_cert(&[1; 32]).unwrap().unwrap().device.unwrap();
    assert_eq!((d.id.as_str(), d.last_report_sequence), ("d1", 7));
    assert_eq!(s.sections("d1").unwrap().len(), 5);
    assert_eq!(s.audit_log().unwrap().len(), 1);
}

/// Enrolls `n` devices at once on token `h`, spread over `stores` (replicas on one database,
/// or one store), each with hardware of its own; how many were enrolled. Every refusal must
/// be the token's own "no uses left", never a conflict.
async fn enroll_at_once(stores: &[Store], h: [u8; 32], n: u32, tag: &str) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let s = stores[i as usize % stores.len()].clone();
        let id = format!("{tag}{i}");
        tasks.spawn(async move {
            let hw = pb::HardwareIdentity {
                machine_id: format!("m-{id}"),
                serial: format!("s-{id}"),
                ..Default::default()
            };
            let mut cert = [0u8; 32];
            cert[..id.len()].copy_from_slice(id.as_bytes());
            s.enroll(&h, 1, device(&id), hw, cert)
                .await
                .map_err(|e| e.to_string())
        });
    }
    let mut enrolled = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => enrolled += 1,
            Err(e) => assert_eq!(e, "enrollment token shared has no uses left"),
        }
    }
    enrolled
}

/// 600 enrollments at once on a token with 150 uses: exactly 150 succeed, the rest are
/// refused for the token, and on PostgreSQL none ran again after a conflict (enrollments on
/// one token take turns, and those queued meanwhile are written together, at most 256 in a
/// turn: the queue outgrows that here, and those left for the next turn must be written and
/// answered too). One store alone rarely overlaps its transactions here: without the turns
/// this case still counted 0 conflicts; the two-replica case below is the one that fails
/// without them.
async fn an_enrollment_token_is_used_exactly_once_under_concurrent_enrollments(p: Place) {
    let s = p.open();
    let h = token(&s, "shared", 150).await;
    let before = s.conflicts();
    let enrolled = enroll_at_once(std::slice::from_ref(&s), h, 600, "d").await;
    assert_eq!(enrolled, 150, "one enrollment per use, never more");
    assert_eq!(s.devices().unwrap().len(), 150);
    let err = s.check_enroll_token(&h, "x", 1).unwrap_err().to_string();
    assert!(err.contains("no uses left"), "{err}");
    assert_eq!(s.conflicts(), before, "enrollments on one token ran again");
}

/// Two servers (two `Store`s on one database) enrolling 200 devices at once on one token
/// with 50 uses: exactly 50 in all, the rest refused for the token, and no enrollment ran
/// again after a conflict on either (the database orders the replicas' turns). Checked: with
/// no turns at all it counted 15 + 17 conflicts, with the in-process turn alone 8 + 24, with
/// the batches but no database turn 0 + 3 and 0 + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_use_an_enrollment_token_exactly_once() {
    let Some(p) = Place::postgres() else { return };
    let other = tempfile::tempdir().unwrap();
    let replicas = [p.open(), Store::open_at(other.path(), &p.location).unwrap()];
    let h = token(&replicas[0], "shared", 50).await;
    let enrolled = enroll_at_once(&replicas, h, 200, "r").await;
    assert_eq!(enrolled, 50, "one enrollment per use, never more");
    assert_eq!(replicas[1].devices().unwrap().len(), 50);
    let err = replicas[1]
        .check_enroll_token(&h, "x", 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no uses left"), "{err}");
    let conflicts: Vec<Option<u64>> = replicas.iter().map(Store::conflicts).collect();
    assert_eq!(conflicts, [Some(0), Some(0)], "enrollments ran again");
}

/// Another server stopped while it held the enrollment turns (a psql session that took their
/// locks and went quiet): an enrollment waits at most the turn's wait, is refused as busy
/// with nothing written and the use still on the token, and goes through once the turns are
/// free. Checked: without the wait it hung until the holder went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_turn_held_by_a_stopped_server_is_refused_as_busy() {
    let Some(p) = Place::postgres() else { return };
    let s = p.open();
    let h = token(&s, "held", 1).await;
    s.set_turn_wait(std::time::Duration::from_millis(300));
    let (cluster, db) = p.pg.as_ref().unwrap();
    // Every turn, in the enrollment turns' lock space ("en").
    let locks: String = (0..8)
        .map(|k| format!("SELECT pg_advisory_lock({}, {k});", 0x656e))
        .collect();
    let holder = cluster.session(db, &locks);
    let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted";
    for _ in 0..100 {
        if cluster.sql(db, held) == "8" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(cluster.sql(db, held), "8", "the holder took every turn");
    let hw = pb::HardwareIdentity {
        machine_id: "m-held".into(),
        ..Default::default()
    };
    let began = std::time::Instant::now();
    let enroll = || s.enroll(&h, 1, device("held1"), hw.clone(), [7; 32]);
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), enroll())
        .await
        .expect("the enrollment waited for the stopped server")
        .unwrap_err();
    let waited = began.elapsed();
    assert!(
        matches!(&err, vakt_server::store::EnrollError::Store(e) if e.is_busy()),
        "{err}"
    );
    assert!(err.to_string().contains("held this turn"), "{err}");
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "{waited:?}"
    );
    assert!(s.device("held1").unwrap().is_none(), "nothing written");
    s.check_enroll_token(&h, "held", 1)
        .expect("the use is still there");
    drop(holder);
    let rec = enroll().await.expect("the turn is free again");
    assert_eq!(rec.device.unwrap().id, "held1");
}

async fn reenrollment_revokes_the_old_certificate(p: Place) {
    let s = p.open();
    let h = token(&s, "tok1", 2).await;
    let hw = pb::HardwareIdentity {
        machine_id: "m1".into(),
        serial: "s1".into(),
        ..Default::default()
    };
    s.enroll(&h, 1, device("d1"), hw.clone(), [1; 32])
        .await
        .unwrap();
    assert_eq!(s.device_for_hardware(&hw).unwrap().as_deref(), Some("d1"));
    s.allow_reenroll("d1", 100).await.unwrap();
    s.enroll(&h, 2, device("d-unused"), hw.clone(), [2; 32])
        .await
        .unwrap();
    assert!(
        s.device_by_cert(&[1; 32]).unwrap().is_none(),
        "old cert revoked"
    );
    let rec = s.device_by_cert(&[2; 32]).unwrap().unwrap();
    assert_eq!(rec.device.unwrap().id, "d1");
    assert_eq!(rec.revoked_cert_sha256, vec![vec![1u8; 32]]);
    let err = s
        .enroll(&h, 3, device("d2"), hw, [3; 32])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "enrollment token tok1 has no uses left");
    // Renewal and retirement are transactions over the same trees.
    let next = vakt_server::store::CertInfo {
        sha256: [4; 32],
        not_after_ms: 5000,
    };
    assert!(s.renew_cert("d1", &[2; 32], next).await.unwrap().is_some());
    let rec = s.device_by_cert_promoting(&[4; 32]).await.unwrap().unwrap();
    assert_eq!(rec.cert_sha256, vec![4; 32]);
    assert!(s.device_by_cert(&[2; 32]).unwrap().is_none());
    s.retire("d1").await.unwrap();
    assert!(s.device_by_cert(&[4; 32]).unwrap().is_none());
}

async fn reports_store_changed_sections_and_ask_for_missing_ones(p: Place) {
    let s = p.open();
    let h = token(&s, "tok", 1).await;
    s.enroll(&h, 1, device("d1"), Default::default(), [1; 32])
        .await
        .unwrap();
    let secs = vakt_proto::convert::report_to_sections(&Default::default());
    let digests: Vec<_> = secs
        .iter()
        .map(|s| pb::SectionDigest {
            kind: s.kind,
            hash: s.hash.clone(),
        })
        .collect();
    let o = s
        .store_report("d1", 1, &[], &digests, 5, "t")
        .await
        .unwrap();
    assert_eq!(o.resend.len(), 5);
    let o = s
        .store_report("d1", 2, &secs, &digests, 6, "t")
        .await
        .unwrap();
    assert!(o.resend.is_empty() && o.changed);
    assert_eq!(s.sections("d1").unwrap().len(), 5);
    let o = s
        .store_report("d1", 1, &secs, &digests, 7, "t")
        .await
        .unwrap();
    assert_eq!(o.acknowledged_sequence, 2);
    assert!(!o.changed);
    let o = s
        .store_report("d1", 3, &[], &digests, 8, "t2")
        .await
        .unwrap();
    assert_eq!((o.acknowledged_sequence, o.resend.len()), (3, 0));
    let d = s.device("d1").unwrap().unwrap().device.unwrap();
    assert_eq!((d.last_report_ms, d.agent_version.as_str()), (8, "t2"));
    assert!(s.store_report("nobody", 1, &[], &[], 1, "").await.is_err());
    // Concurrent reports of one device: the newest sequence wins, none is lost.
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 4..24u64 {
        let (s, secs) = (s.clone(), secs.clone());
        tasks.spawn(async move { s.store_report("d1", seq, &secs, &[], 10, "t3").await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let d = s.device("d1").unwrap().unwrap().device.unwrap();
    assert_eq!(d.last_report_sequence, 23);
}

async fn command_states_follow_every_write_and_survive_a_restart(p: Place) {
    use pb::CommandState as S;
    {
        let s = p.open();
        s.put_command(&command("c2", "d1", S::Pending))
            .await
            .unwrap();
        s.put_command(&command("c1", "d1", S::Delivered))
            .await
            .unwrap();
        s.put_command(&command("c3", "d2", S::AwaitingApproval))
            .await
            .unwrap();
        s.put_command(&command("c4", "d1", S::Succeeded))
            .await
            .unwrap();
        let case = pb::LossCase {
            id: "l1".into(),
            device_id: "d3".into(),
            ..Default::default()
        };
        s.save_loss(&case, &[command("c5", "d3", S::Pending)], None)
            .await
            .unwrap();
        assert_eq!(ids(s.open_commands_of("d1").unwrap()), ["c1", "c2"]);
        s.update_command("c1", |c| {
            c.state = S::Failed as i32;
            true
        })
        .await
        .unwrap();
        s.update_command("c3", |c| {
            c.state = S::Pending as i32;
            true
        })
        .await
        .unwrap();
        s.update_command("c5", |c| {
            c.state = S::Expired as i32;
            true
        })
        .await
        .unwrap();
        assert_eq!(ids(s.open_commands().unwrap()), ["c2", "c3"]);
        assert_eq!(s.losses().unwrap().len(), 1);
    }
    let s = p.reopen().await;
    assert_eq!(ids(s.open_commands().unwrap()), ["c2", "c3"]);
    assert_eq!(ids(s.commands().unwrap()), ["c1", "c2", "c3", "c4", "c5"]);
    assert_eq!(
        s.command("c1").unwrap().unwrap().state,
        S::Failed as i32,
        "the result survived"
    );
}

async fn scans_follow_key_order_and_prefix_bounds(p: Place) {
    let s = p.open();
    let keys: [&[u8]; 7] = [b"b", b"a\xff\xff", b"a", b"\xff", b"a\x00", b"a\xff", b"ab"];
    let puts: Vec<(Vec<u8>, String)> = keys.iter().map(|k| (k.to_vec(), hex(k))).collect();
    s.json_apply(JsonTree::People, &puts, &[]).await.unwrap();
    let all: Vec<String> = s.json_list(JsonTree::People, b"").unwrap();
    assert_eq!(all, ["61", "6100", "6162", "61ff", "61ffff", "62", "ff"]);
    let under: Vec<String> = s.json_list(JsonTree::People, b"a\xff").unwrap();
    assert_eq!(under, ["61ff", "61ffff"]);
    let under: Vec<String> = s.json_list(JsonTree::People, b"\xff").unwrap();
    assert_eq!(under, ["ff"]);
    // Replacing the tree removes what is not kept, in one batch.
    s.json_replace_all(JsonTree::People, &[(b"a".to_vec(), "new".to_string())])
        .await
        .unwrap();
    let all: Vec<String> = s.json_list(JsonTree::People, b"").unwrap();
    assert_eq!(all, ["new"]);
    assert_eq!(s.json_count(JsonTree::People).unwrap(), 1);
    // The audit log's keys are big-endian sequence numbers: past 255 the order must hold,
    // and the chain continues from the last entry.
    for i in 0..300 {
        s.audit("admin", "x", &i.to_string(), "", i).await.unwrap();
    }
    let log = s.audit_log().unwrap();
    assert_eq!(log.len(), 300);
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        if i > 0 {
            assert_eq!(e.prev_hash, log[i - 1].hash);
        }
    }
}

async fn a_corrupt_record_is_named_and_the_rest_stands(p: Place) {
    {
        let s = p.open();
        let h = token(&s, "tok", 1).await;
        s.enroll(&h, 1, device("d1"), Default::default(), [1; 32])
            .await
            .unwrap();
    }
    p.write_raw("devices", b"dbad", &[0xff, 0xff, 0xff]).await;
    p.write_raw("people", b"pbad", b"{not json").await;
    let s = p.reopen().await;
    let err = s.device("dbad").unwrap_err().to_string();
    assert!(err.contains("devices/dbad does not decode"), "{err}");
    assert_eq!(s.device("d1").unwrap().unwrap().device.unwrap().id, "d1");
    let err = s.devices().unwrap_err().to_string();
    assert!(err.contains("devices/dbad"), "{err}");
    let err = s
        .json_list::<serde_json::Value>(JsonTree::People, b"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("people/pbad does not decode"), "{err}");
    // A record that does not decode is left as it is by an update, and said.
    let err = s
        .update_device("dbad", |r| r.reenroll_allowed_until_ms = 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("devices/dbad"), "{err}");
}

async fn token_updates_never_undo_a_revocation(p: Place) {
    let s = p.open();
    let h = vakt_server::token::hash("vakt_a_x");
    let rec = pb::AdminTokenRecord {
        id: "a1".into(),
        ..Default::default()
    };
    s.put_admin_token(&h, &rec).await.unwrap();
    // Last-use writes racing a revocation: the revocation always stands.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20i64 {
        let s = s.clone();
        tasks.spawn(async move { s.touch_admin_token(&h, 100_000 + i * 60_000) });
    }
    s.update_admin_token(&h, |r| r.revoked = true)
        .await
        .unwrap();
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let after = s.admin_token(&h).unwrap().unwrap();
    assert!(after.revoked);
    assert!(after.last_used_at_ms >= 100_000);
    let missing = vakt_server::token::hash("nope");
    assert!(
        s.update_admin_token(&missing, |r| r.revoked = true)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.admin_tokens().unwrap().len(), 1, "no record created");
    assert_eq!(s.admin_token_count().unwrap(), 1);
}

// ---- PostgreSQL only: what a wrong database does at start ----

/// A check-in starts from the device record the agent API read to identify the caller; when
/// another writer changed the record in between, that record is only a guess: the other
/// write stays and the check-in still counts.
async fn a_checkin_from_a_stale_record_keeps_the_other_write(p: Place) {
    let s = p.open();
    let h = token(&s, "tok", 1).await;
    s.enroll(&h, 1, device("d1"), Default::default(), [1; 32])
        .await
        .unwrap();
    let seen = s.device_by_cert(&[1; 32]).unwrap().unwrap();
    s.update_device("d1", |r| {
        if let Some(d) = r.device.as_mut() {
            d.assigned_to = "renamed".into();
        }
    })
    .unwrap();
    let o = s
        .store_report_of(&seen, 4, &[], &[], 50, "v9")
        .await
        .unwrap();
    assert_eq!(o.acknowledged_sequence, 4);
    let d = s.device("d1").unwrap().unwrap().device.unwrap();
    assert_eq!(
        (
            d.assigned_to.as_str(),
            d.last_report_sequence,
            d.last_seen_ms
        ),
        ("renamed", 4, 50)
    );
    // From the current record, and then from one the check-in itself made stale.
    let seen = s.device_by_cert(&[1; 32]).unwrap().unwrap();
    s.store_report_of(&seen, 5, &[], &[], 60, "v9")
        .await
        .unwrap();
    s.store_report_of(&seen, 6, &[], &[], 70, "v9")
        .await
        .unwrap();
    let d = s.device("d1").unwrap().unwrap().device.unwrap();
    assert_eq!(
        (
            d.assigned_to.as_str(),
            d.last_report_sequence,
            d.last_seen_ms
        ),
        ("renamed", 6, 70)
    );
}

/// Writers of one command at once (the delivery noted while the agent's result is stored):
/// each update starts from the other's write, so none is lost.
async fn concurrent_command_updates_are_never_lost(p: Place) {
    let s = p.open();
    s.put_command(&command("c1", "d1", pb::CommandState::Pending))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.spawn(async move {
            s.update_command("c1", |c| {
                c.deliveries += 1;
                true
            })
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(r.unwrap().unwrap().is_some());
    }
    assert_eq!(s.command("c1").unwrap().unwrap().deliveries, 20);
    assert!(
        s.update_command("nothing", |c| {
            c.deliveries += 1;
            true
        })
        .await
        .unwrap()
        .is_none()
    );
}

/// Many agents checking in at once, each several times and out of order, while another
/// writer renames every device: on PostgreSQL the lookups, reads and swaps are gathered into
/// shared statements (`pg_batch`), one device may appear twice in one statement, and swaps
/// from stale records must fail and be done again. Every device ends with its highest
/// sequence, its last-seen time and the rename; each check-in is acknowledged at least up to
/// its own sequence.
async fn concurrent_checkins_lose_nothing(p: Place) {
    const DEVICES: u32 = 40;
    const ROUNDS: u64 = 8;
    let s = p.open();
    let h = token(&s, "tok", DEVICES).await;
    for i in 0..DEVICES {
        let mut cert = [0u8; 32];
        cert[..4].copy_from_slice(&i.to_be_bytes());
        s.enroll(&h, 1, device(&format!("d{i}")), Default::default(), cert)
            .await
            .unwrap();
    }
    let statements_before = s.gathered_statements();
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..ROUNDS {
        for i in 0..DEVICES {
            let s = s.clone();
            // Sequences arrive out of order: even rounds count down.
            let seq = if round % 2 == 0 {
                ROUNDS - round
            } else {
                round + 1
            };
            tasks.spawn(async move {
                let mut cert = [0u8; 32];
                cert[..4].copy_from_slice(&i.to_be_bytes());
                let rec = s.device_by_cert_async(&cert).await.unwrap().unwrap();
                let o = s
                    .store_report_of(&rec, seq, &[], &[], 1000 + seq as i64, "v")
                    .await
                    .unwrap();
                assert!(o.acknowledged_sequence >= seq);
            });
        }
        let s = s.clone();
        tasks.spawn(async move {
            for i in (0..DEVICES).filter(|i| u64::from(*i) % ROUNDS == round) {
                s.update_device(&format!("d{i}"), |r| {
                    if let Some(d) = r.device.as_mut() {
                        d.assigned_to = "renamed".into();
                    }
                })
                .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for i in 0..DEVICES {
        let d = s.device(&format!("d{i}")).unwrap().unwrap().device.unwrap();
        assert_eq!(
            (
                d.last_report_sequence,
                d.last_seen_ms,
                d.assigned_to.as_str()
            ),
            (ROUNDS, 1000 + ROUNDS as i64, "renamed"),
            "device d{i}"
        );
    }
    // On PostgreSQL three statements per check-in when run one by one; gathered, fewer.
    if let (Some(before), Some(after)) = (statements_before, s.gathered_statements()) {
        let checkins = u64::from(DEVICES) * ROUNDS;
        eprintln!(
            "{checkins} check-ins took {} gathered statements",
            after - before
        );
        assert!(after - before < 3 * checkins);
    }
}

/// What the agent API costs in PostgreSQL round trips: the caller's record found through
/// its certificate, then the report. A check-in is three (the lookup, then the record's
/// compare-and-swap and the announced sections' hashes together, each gathered with other
/// callers' requests into shared statements); a report with sections is
/// a transaction of three (BEGIN with the record's read, the sections' read, the writes with
/// COMMIT). Before issue 17's round-trip work a check-in took eleven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_per_report_on_postgres() {
    let Some(p) = Place::postgres() else { return };
    let s = p.open();
    let h = token(&s, "tok", 1).await;
    s.enroll(&h, 1, device("d1"), Default::default(), [1; 32])
        .await
        .unwrap();
    let secs = vakt_proto::convert::report_to_sections(&Default::default());
    let digests: Vec<_> = secs
        .iter()
        .map(|s| pb::SectionDigest {
            kind: s.kind,
            hash: s.hash.clone(),
        })
        .collect();
    let mut seq = 0;
    let mut cost = |sections: &[pb::Section]| {
        seq += 1;
        let (s, sections, digests) = (s.clone(), sections.to_vec(), digests.clone());
        async move {
            let before = s.round_trips().unwrap();
            let rec = s.device_by_cert_async(&[1; 32]).await.unwrap().unwrap();
            s.store_report_of(&rec, seq, &sections, &digests, 5, "t")
                .await
                .unwrap();
            s.round_trips().unwrap() - before
        }
    };
    let full = cost(&secs).await;
    let unchanged = cost(&secs).await;
    let checkin = cost(&[]).await;
    eprintln!("round trips: full report {full}, unchanged report {unchanged}, check-in {checkin}");
    assert_eq!((full, unchanged, checkin), (4, 4, 3));
    let d = s.device("d1").unwrap().unwrap().device.unwrap();
    assert_eq!(d.last_report_sequence, 3);
    assert_eq!(s.sections("d1").unwrap().len(), 5);
}

/// The store on a current-thread runtime (the CLI's, `#[tokio::test]`'s): the engine waits
/// for PostgreSQL from a thread of its own there, and must not need this runtime to progress.
#[tokio::test]
async fn postgres_serves_a_current_thread_runtime() {
    let Some(p) = Place::postgres() else { return };
    committed_writes_survive_a_fresh_store(p).await;
}

fn refused(dir: &Path, url: &str) -> String {
    let err = Store::open_at(dir, &StoreLocation::Postgres(url.into()))
        .err()
        .unwrap_or_else(|| panic!("{url} was accepted"))
        .to_string();
    assert!(!dir.exists(), "{url}: the data directory was created");
    err
}

#[test]
fn a_wrong_or_unreachable_url_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = refused(&data, "mysql://vakt@127.0.0.1/vakt");
    assert!(
        err.contains("postgresql://USER@HOST:PORT/DATABASE"),
        "{err}"
    );
    let err = refused(&data, "postgresql://vakt@127.0.0.1:5432");
    assert!(err.contains("names no database"), "{err}");
    let err = refused(&data, "postgresql://vakt@127.0.0.1:notaport/vakt");
    assert!(err.contains("--store: invalid connection string"), "{err}");
    // Nothing listens on port 1.
    let err = refused(&data, "postgresql://vakt@127.0.0.1:1/vakt");
    assert!(
        err.starts_with("cannot use the PostgreSQL database vakt@127.0.0.1:1/vakt:")
            && err.contains("onnection refused"),
        "{err}"
    );
    let Ok(cluster) = PgCluster::start() else {
        eprintln!("skipped the running-cluster cases: PostgreSQL is not installed");
        return;
    };
    let err = refused(&data, &cluster.url("nosuchdb"));
    assert!(err.contains("\"nosuchdb\" does not exist"), "{err}");
}

#[test]
fn a_newer_schema_is_refused_before_anything_is_written() {
    let Some(p) = Place::postgres() else { return };
    let (cluster, db) = p.pg.as_ref().unwrap();
    let url = cluster.url(db);
    drop(p.open());
    cluster.sql(db, "INSERT INTO vakt_schema (version) VALUES (99)");
    let fresh = p.dir.path().join("other");
    let err = refused(&fresh, &url);
    assert_eq!(
        err,
        format!(
            "the PostgreSQL database vakt@127.0.0.1:{}/vakt has schema version 99, newer than \
             this vakt-server knows ({}); run a newer vakt-server, or point --store at another \
             database",
            cluster.port(),
            vakt_server::store::SCHEMA_VERSION
        )
    );
    // A database that holds only a newer schema's version table gets no tables of ours.
    let url = cluster.database("newer");
    cluster.sql(
        "newer",
        "CREATE TABLE vakt_schema (version integer PRIMARY KEY); \
         INSERT INTO vakt_schema VALUES (7)",
    );
    let err = refused(&fresh, &url);
    assert!(err.contains("schema version 7"), "{err}");
    assert_eq!(
        cluster.sql("newer", "SELECT to_regclass('vakt_kv') IS NULL"),
        "t"
    );
}

#[test]
fn a_fresh_database_is_migrated_once() {
    let Some(p) = Place::postgres() else { return };
    drop(p.open());
    drop(p.open());
    let (cluster, db) = p.pg.as_ref().unwrap();
    assert_eq!(
        cluster.sql(
            db,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM vakt_schema"
        ),
        (1..=vakt_server::store::SCHEMA_VERSION)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
}

/// Two servers (two `Store`s, as two replicas would open them) on one database appending to
/// the audit log at once: each append reads the last entry and inserts the next only if its
/// key is free, so the log stays one dense chain with every entry once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_keep_one_audit_chain() {
    let Some(p) = Place::postgres() else { return };
    let other = tempfile::tempdir().unwrap();
    let replicas = [p.open(), Store::open_at(other.path(), &p.location).unwrap()];
    let mut tasks = tokio::task::JoinSet::new();
    for (r, s) in replicas.iter().enumerate() {
        // Two writers per replica: the in-process turn-taking never covers the other
        // replica's writers, and two tasks per store keep both sides busy.
        for w in 0..2 {
            let s = s.clone();
            tasks.spawn(async move {
                for i in 0..50 {
                    s.audit("admin", "x", &format!("r{r}w{w}i{i}"), "", i)
                        .await
                        .unwrap();
                }
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let log = replicas[1].audit_log().unwrap();
    let verdict = vakt_server::api::admin::verify_chain(&log);
    assert!(verdict.ok, "{}", verdict.problem);
    let mut targets: Vec<&str> = log.iter().map(|e| e.target.as_str()).collect();
    targets.sort_unstable();
    targets.dedup();
    assert_eq!((log.len(), targets.len()), (200, 200), "every entry once");
}

/// Two servers (two `Store`s on one database) updating one command at once, as one records
/// its deliveries while another records a result or expires it: each update runs on the
/// command as it is now, so none is lost, and a condition (here: not yet final) is decided on
/// the current state. With a read-then-write the count comes out short (checked: reading
/// outside the transaction lost updates).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_lose_no_command_update() {
    use pb::CommandState as S;
    let Some(p) = Place::postgres() else { return };
    let other = tempfile::tempdir().unwrap();
    let replicas = [p.open(), Store::open_at(other.path(), &p.location).unwrap()];
    replicas[0]
        .put_command(&command("c1", "d1", S::Pending))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for s in &replicas {
        for _ in 0..2 {
            let s = s.clone();
            tasks.spawn(async move {
                for _ in 0..25 {
                    s.update_command("c1", |c| {
                        c.deliveries += 1;
                        true
                    })
                    .await
                    .unwrap();
                }
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let c = replicas[1].command("c1").unwrap().unwrap();
    assert_eq!(c.deliveries, 100, "every update kept");
    // A condition on the current state: once final, a later update is refused.
    let expire = |c: &mut pb::CommandInfo| {
        if c.state != S::Pending as i32 {
            return false;
        }
        c.state = S::Expired as i32;
        true
    };
    assert!(
        replicas[0]
            .update_command("c1", expire)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        replicas[1]
            .update_command("c1", expire)
            .await
            .unwrap()
            .is_none()
    );
}

/// Two replicas initialising the shared secrets of one empty database at the same moment
/// (five rounds, a database each): exactly one transaction wins, and the database holds its
/// secrets, its admin token and its audit entry only; the other writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_replicas_initialise_the_secrets_once() {
    use vakt_server::store::{AuditDraft, InitOutcome};
    let Some(p) = Place::postgres() else { return };
    let (cluster, _) = p.pg.as_ref().unwrap();
    for round in 0..5 {
        let url = cluster.database(&format!("race{round}"));
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let location = StoreLocation::Postgres(url);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = tokio::task::JoinSet::new();
        for (r, dir) in dirs.iter().enumerate() {
            let store = Store::open_at(dir.path(), &location).unwrap();
            let barrier = barrier.clone();
            tasks.spawn(async move {
                let token = vakt_server::token::new_admin_token(pb::Role::Admin, "first", "t", 1);
                let items = vec![
                    ("ca.key".to_string(), format!("key of {r}").into_bytes()),
                    ("ca.pem".to_string(), format!("cert of {r}").into_bytes()),
                ];
                let audit = AuditDraft {
                    actor: "system".into(),
                    action: "admin-token.create".into(),
                    target: token.record.id.clone(),
                    detail: format!("replica {r}"),
                    at_ms: 1,
                };
                barrier.wait().await;
                let outcome = store
                    .initialise_secrets(&items, Some((&token.hash, &token.record)), Some(&audit))
                    .await
                    .unwrap();
                (r, outcome, store)
            });
        }
        let mut results = Vec::new();
        while let Some(r) = tasks.join_next().await {
            results.push(r.unwrap());
        }
        let winners: Vec<usize> = results
            .iter()
            .filter(|(_, o, _)| matches!(o, InitOutcome::Won { audited: true }))
            .map(|(r, _, _)| *r)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {results:?}",
            results = results.iter().map(|(r, o, _)| (r, o)).collect::<Vec<_>>()
        );
        let w = winners[0];
        assert!(results.iter().any(|(_, o, _)| *o == InitOutcome::Lost));
        let store = &results[0].2;
        assert_eq!(
            store.secret("ca.key").unwrap().unwrap(),
            format!("key of {w}").into_bytes()
        );
        assert_eq!(
            store.secret("ca.pem").unwrap().unwrap(),
            format!("cert of {w}").into_bytes()
        );
        assert_eq!(store.admin_token_count().unwrap(), 1);
        let log = store.audit_log().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].detail, format!("replica {w}"));
    }
}

/// The next change of `feed`, failing after ten seconds.
async fn next_change(feed: &mut vakt_server::store::Changes) -> Change {
    tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
        .await
        .expect("a change within ten seconds")
        .expect("the feed goes on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_has_no_other_writers_to_follow() {
    let p = Place::sled();
    assert_eq!(p.open().changes().next().await, None);
}

/// Two stores on one database, as two replicas: what one commits reaches the other's change
/// feed (and not its own), and a broken LISTEN connection comes back with a Resync, after
/// which rebuilding the open-command index finds what was written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_writes_reach_the_change_feed_and_a_break_resyncs() {
    let Some(p) = Place::postgres() else { return };
    let other = tempfile::tempdir().unwrap();
    let (a, b) = (p.open(), Store::open_at(other.path(), &p.location).unwrap());
    let mut feed = a.changes();
    assert_eq!(
        next_change(&mut feed).await,
        Change::Resync,
        "first, from the trees"
    );

    b.put_command(&command("cmd-1", "d1", pb::CommandState::Pending))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut feed).await,
        Change::Command("cmd-1".into())
    );
    assert!(
        a.open_commands_of("d1").unwrap().is_empty(),
        "not yet followed"
    );
    let c = a.refresh_command("cmd-1").await.unwrap().unwrap();
    assert_eq!(c.state, pb::CommandState::Pending as i32);
    assert_eq!(a.open_commands_of("d1").unwrap().len(), 1);

    // Its own writes and unwatched trees are not in it: notifications come in commit order,
    // so the next one is b's policy, not a's command or b's finding.
    a.put_command(&command("cmd-2", "d1", pb::CommandState::Pending))
        .await
        .unwrap();
    b.json_apply(JsonTree::Findings, &[(b"d1\0f".to_vec(), "x")], &[])
        .await
        .unwrap();
    b.json_apply(
        JsonTree::Policies,
        &[(1u32.to_be_bytes().to_vec(), "p")],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(next_change(&mut feed).await, Change::Policy);

    // The listening connection dies; what is written while it is away is found by the resync.
    let (cluster, db) = p.pg.as_ref().unwrap();
    let ended = cluster.sql(
        db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query = 'LISTEN vakt_changes' AND pid <> pg_backend_pid()",
    );
    assert_eq!(ended, "1", "one listening connection");
    b.put_command(&command("cmd-3", "d2", pb::CommandState::Pending))
        .await
        .unwrap();
    loop {
        match next_change(&mut feed).await {
            Change::Resync => break,
            // Seen if the write beat the break: either way the resync follows.
            Change::Command(id) if id == "cmd-3" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    a.rebuild_open_commands().await.unwrap();
    assert_eq!(a.open_commands_of("d2").unwrap()[0].id, "cmd-3");
}

/// Agent reports never take every PostgreSQL connection: the report slots are the pool less
/// a reserve, so a loss report or a command's result finds a connection while check-ins
/// saturate the rest; sled keeps its 256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_leave_connections_for_everything_else() {
    assert_eq!(
        Place::sled().open().report_slots(),
        vakt_server::state::REPORT_SLOTS
    );
    let Some(p) = Place::postgres() else { return };
    assert_eq!(p.open().report_slots(), 24, "the default pool of 32 less 8");
    let StoreLocation::Postgres(url) = &p.location else {
        unreachable!()
    };
    let small = StoreLocation::Postgres(format!("{url}?pool_size=4"));
    let other = tempfile::tempdir().unwrap();
    let store = Store::open_at(other.path(), &small).unwrap();
    assert_eq!(store.report_slots(), 1, "a small pool still stores reports");
}

/// A device called `hostname`.
fn named(id: &str, hostname: &str) -> pb::Device {
    pb::Device {
        hostname: hostname.into(),
        ..device(id)
    }
}

/// The ids of `recs`, sorted.
fn device_ids(recs: Vec<pb::DeviceRecord>) -> Vec<String> {
    let mut ids: Vec<String> = recs
        .into_iter()
        .filter_map(|r| r.device)
        .map(|d| d.id)
        .collect();
    ids.sort();
    ids
}

/// A report whose host section names the device `hostname`.
fn host_report(hostname: &str) -> Vec<pb::Section> {
    vakt_proto::convert::report_to_sections(&vakt_proto::model::Report {
        host: vakt_proto::model::HostFacts {
            hostname: hostname.into(),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The hostname index: found with ASCII case ignored, two devices of one name are both found
/// (the API refuses the name as ambiguous), a name is not a prefix of a longer one, a report
/// that renames moves the entry, an update never renames, and it all survives a restart.
async fn devices_are_found_by_hostname_through_the_index(p: Place) {
    {
        let s = p.open();
        let h = token(&s, "tok", 3).await;
        for (id, name, cert) in [("d1", "Lap-A", 1), ("d2", "lap-b", 2), ("d3", "LAP-B", 3)] {
            s.enroll(&h, 1, named(id, name), Default::default(), [cert; 32])
                .await
                .unwrap();
        }
        assert_eq!(device_ids(s.devices_named("lap-a").await.unwrap()), ["d1"]);
        assert_eq!(device_ids(s.devices_named("LAP-A").await.unwrap()), ["d1"]);
        assert_eq!(
            device_ids(s.devices_named("Lap-B").await.unwrap()),
            ["d2", "d3"]
        );
        assert!(s.devices_named("lap").await.unwrap().is_empty());
        assert!(s.devices_named("lap-a2").await.unwrap().is_empty());
        s.store_report("d1", 1, &host_report("lap-c"), &[], 5, "t")
            .await
            .unwrap();
        assert!(s.devices_named("lap-a").await.unwrap().is_empty());
        assert_eq!(device_ids(s.devices_named("lap-C").await.unwrap()), ["d1"]);
        s.update_device("d2", |r| {
            if let Some(d) = r.device.as_mut() {
                d.hostname = "elsewhere".into();
            }
        })
        .unwrap();
        assert_eq!(
            s.device("d2").unwrap().unwrap().device.unwrap().hostname,
            "lap-b"
        );
    }
    let s = p.reopen().await;
    assert_eq!(device_ids(s.devices_named("lap-c").await.unwrap()), ["d1"]);
    assert_eq!(
        device_ids(s.devices_named("lap-b").await.unwrap()),
        ["d2", "d3"]
    );
    assert!(s.devices_named("lap-a").await.unwrap().is_empty());
}

fn case(id: &str, device: &str, open: bool) -> pb::LossCase {
    pb::LossCase {
        id: id.into(),
        device_id: device.into(),
        open,
        ..Default::default()
    }
}

fn case_id(c: Option<pb::LossCase>) -> Option<String> {
    c.map(|c| c.id)
}

/// The loss cases' device index: a device's open case and its latest, open or closed,
/// follow every write of its cases and survive a restart; other devices' cases never answer.
async fn loss_cases_are_found_by_device_through_the_index(p: Place) {
    {
        let s = p.open();
        for c in [
            case("loss-01", "d1", false),
            case("loss-02", "d1", true),
            case("loss-03", "d2", false),
            case("loss-04", "d10", true),
        ] {
            s.save_loss(&c, &[], None).await.unwrap();
        }
        assert_eq!(
            case_id(s.open_loss_of("d1").await.unwrap()).as_deref(),
            Some("loss-02")
        );
        assert_eq!(
            case_id(s.latest_loss_of("d1").await.unwrap()).as_deref(),
            Some("loss-02")
        );
        assert_eq!(case_id(s.open_loss_of("d2").await.unwrap()), None);
        assert_eq!(
            case_id(s.latest_loss_of("d2").await.unwrap()).as_deref(),
            Some("loss-03")
        );
        assert_eq!(case_id(s.latest_loss_of("d3").await.unwrap()), None);
        // Closing the case: no open one, the latest is still it.
        s.save_loss(&case("loss-02", "d1", false), &[], None)
            .await
            .unwrap();
        assert_eq!(case_id(s.open_loss_of("d1").await.unwrap()), None);
        assert_eq!(
            case_id(s.latest_loss_of("d1").await.unwrap()).as_deref(),
            Some("loss-02")
        );
        s.save_loss(&case("loss-05", "d1", true), &[], None)
            .await
            .unwrap();
    }
    let s = p.reopen().await;
    assert_eq!(
        case_id(s.open_loss_of("d1").await.unwrap()).as_deref(),
        Some("loss-05")
    );
    assert_eq!(
        s.losses_of("d1")
            .await
            .unwrap()
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["loss-01", "loss-02", "loss-05"]
    );
    assert_eq!(
        case_id(s.open_loss_of("d10").await.unwrap()).as_deref(),
        Some("loss-04")
    );
}

/// A data directory (or database) written before the index trees existed has none: the
/// store builds them from the records at open and answers as if they had always been kept.
/// On sled, where the store is the only writer, an index that lost an entry behind its back
/// is found by its count and built again too.
async fn a_store_from_before_the_indexes_builds_them_at_open(p: Place) {
    {
        let s = p.open();
        let h = token(&s, "tok", 2).await;
        s.enroll(&h, 1, named("d1", "Lap-A"), Default::default(), [1; 32])
            .await
            .unwrap();
        s.enroll(&h, 1, named("d2", "lap-a"), Default::default(), [2; 32])
            .await
            .unwrap();
        s.save_loss(&case("loss-01", "d1", false), &[], None)
            .await
            .unwrap();
        s.save_loss(&case("loss-02", "d1", true), &[], None)
            .await
            .unwrap();
    }
    p.drop_raw(&["device_hostnames", "loss_devices", "indexes"])
        .await;
    {
        let s = p.reopen().await;
        assert_eq!(
            device_ids(s.devices_named("LAP-A").await.unwrap()),
            ["d1", "d2"]
        );
        assert_eq!(
            case_id(s.open_loss_of("d1").await.unwrap()).as_deref(),
            Some("loss-02")
        );
        // Kept from here on, as for any store.
        s.store_report("d2", 1, &host_report("lap-b"), &[], 5, "t")
            .await
            .unwrap();
        assert_eq!(device_ids(s.devices_named("lap-a").await.unwrap()), ["d1"]);
    }
    if p.pg.is_none() {
        // The marks stay; one entry goes.
        p.drop_raw(&["device_hostnames"]).await;
        p.write_raw("device_hostnames", b"lap-b\0d2", b"d2").await;
        let s = p.reopen().await;
        assert_eq!(device_ids(s.devices_named("lap-a").await.unwrap()), ["d1"]);
        assert_eq!(device_ids(s.devices_named("lap-b").await.unwrap()), ["d2"]);
    }
}

/// `ReportLoss` by hostname reads the device it names and that device's cases, nothing
/// else: with another device's record and another device's case that do not decode in the
/// store (a full read of either tree fails, as the lookups before the indexes did), the loss
/// is reported, a second report of it is refused as already open, and a hostname two devices
/// share is refused as ambiguous. On PostgreSQL the call's round trips are counted and do
/// not grow with the closed cases stored.
async fn a_loss_report_reads_only_its_device_and_its_cases(p: Place) {
    use vakt_proto::pb::admin_service_server::AdminService;
    let garbage: [(&str, &[u8]); 2] = [("devices", b"dbad"), ("losses", b"loss-000000000001bad")];
    // sled's raw writes need the store closed: before it is opened; PostgreSQL's after (the
    // table exists once the store migrated the database).
    if p.pg.is_none() {
        for (tree, key) in garbage {
            p.write_raw(tree, key, &[0xff, 0xff, 0xff]).await;
        }
    }
    let key = p.dir.path().join("secrets.key");
    let state = vakt_server::server::prepare_at(
        &p.data(),
        &p.location,
        Some(&key),
        &[],
        vakt_server::notify::NotifyConfig::default(),
    )
    .await
    .unwrap();
    if p.pg.is_some() {
        for (tree, key) in garbage {
            p.write_raw(tree, key, &[0xff, 0xff, 0xff]).await;
        }
    }
    let s = &state.store;
    assert!(
        s.devices().is_err() && s.losses().is_err(),
        "the garbage is stored"
    );
    let h = token(s, "tok", 3).await;
    for (id, name, cert) in [("d1", "pc-1", 1), ("d2", "pc-2", 2), ("d3", "PC-2", 3)] {
        s.enroll(&h, 1, named(id, name), Default::default(), [cert; 32])
            .await
            .unwrap();
    }
    let admin = std::fs::read_to_string(p.data().join("admin.token")).unwrap();
    let api = vakt_server::api::admin::AdminApi::new(state.clone());
    let report = |device: &str| {
        let mut req = tonic::Request::new(pb::ReportLossRequest {
            device: device.into(),
            ..Default::default()
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", admin.trim()).parse().unwrap(),
        );
        api.report_loss(req)
    };
    let closed_cases = |n: usize, from: usize| {
        let s = s.clone();
        async move {
            for i in from..from + n {
                let c = case(&format!("loss-{i:08}"), "d2", false);
                s.save_loss(&c, &[], None).await.unwrap();
            }
        }
    };
    closed_cases(10, 0).await;
    let before = s.round_trips();
    let case = report("PC-1").await.unwrap().into_inner();
    let few = s.round_trips().map(|after| after - before.unwrap());
    assert_eq!(
        (case.device_id.as_str(), case.hostname.as_str()),
        ("d1", "pc-1")
    );
    let lock = s.command(&case.lock_command_id).unwrap().unwrap();
    assert_eq!(lock.kind, pb::CommandKind::Lock as i32);
    let err = report("pc-1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&case.id), "{}", err.message());
    let err = report("pc-2").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("2 devices"), "{}", err.message());
    // By id, with ten times the closed cases of another device stored.
    closed_cases(100, 10).await;
    let before = s.round_trips();
    let by_id = report("d2").await.unwrap().into_inner();
    let many = s.round_trips().map(|after| after - before.unwrap());
    assert_eq!(by_id.device_id, "d2");
    if let (Some(few), Some(many)) = (few, many) {
        eprintln!("ReportLoss round trips: by hostname {few}, by id with 110 closed cases {many}");
        // By id saves the hostname lookup's query; nothing grows with the cases.
        assert!(many <= few, "by hostname {few}, by id {many}");
    }
}

/// A report with a storage section: `/home` on `home` (encrypted or not), `/` and swap
/// encrypted, wiped by erasing LUKS key slots.
fn storage_report(home_encrypted: bool) -> Vec<pb::Section> {
    use vakt_proto::model;
    let vol = |mount: &str, device: &str, encrypted: bool| model::Volume {
        mount: mount.into(),
        device: device.into(),
        encrypted,
        scheme: encrypted.then_some(model::CryptScheme::Luks2),
        ..Default::default()
    };
    let report = model::Report {
        storage: model::Storage {
            volumes: vec![
                vol("/", "/dev/sda2", true),
                vol("/home", "/dev/sdb1", home_encrypted),
            ],
            swap: vec![vol("", "/dev/sda3", true)],
            wipe: Some(model::WipePlan {
                strategy: model::WipeStrategy::LuksErase,
                devices: Vec::new(),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    vakt_proto::convert::report_to_sections(&report)
}

/// The commands of `device` as the whole history shows them (what the lists did before the
/// by-device index).
fn filtered(s: &Store, device: &str) -> Vec<pb::CommandInfo> {
    let all = s.commands().unwrap();
    all.into_iter().filter(|c| c.device_id == device).collect()
}

/// The readiness each device record keeps, by device.
fn kept(s: &Store, ids: &[&str]) -> Vec<(Option<pb::WipeReadiness>, u32)> {
    ids.iter()
        .map(|id| {
            let r = s.device(id).unwrap().unwrap();
            (r.readiness, r.readiness_version)
        })
        .collect()
}

/// The by-device lists (commands through the `command_devices` index, the readiness each
/// device record keeps) say what the whole trees say, in the same order; and a store written
/// before them (no index, records without readiness) gets them when it opens.
async fn lists_by_device_show_what_the_whole_trees_show_and_an_old_store_gets_them_at_open(
    p: Place,
) {
    use pb::CommandState as S;
    use vakt_server::readiness::{JUDGEMENT_VERSION, summary};
    let devices = ["d1", "d2", "d3", "d1x"];
    {
        let s = p.open();
        let h = token(&s, "tok", 4).await;
        for (n, id) in devices.iter().enumerate() {
            s.enroll(&h, 1, device(id), Default::default(), [n as u8 + 1; 32])
                .await
                .unwrap();
        }
        s.store_report("d1", 1, &storage_report(false), &[], 5, "t")
            .await
            .unwrap();
        s.store_report("d2", 1, &storage_report(true), &[], 5, "t")
            .await
            .unwrap();
        // d3 never reported; d1x's id starts with d1's.
        s.put_command(&command("c3", "d1", S::Pending))
            .await
            .unwrap();
        s.put_command(&command("c1", "d2", S::Succeeded))
            .await
            .unwrap();
        s.put_command(&command("c2", "d1x", S::Pending))
            .await
            .unwrap();
        let case = pb::LossCase {
            id: "l1".into(),
            device_id: "d1".into(),
            ..Default::default()
        };
        let lost = [
            command("c0", "d1", S::Pending),
            command("c4", "d1", S::Pending),
        ];
        s.save_loss(&case, &lost, None).await.unwrap();
        s.update_command("c3", |c| {
            c.state = S::Failed as i32;
            true
        })
        .await
        .unwrap();
        assert_eq!(ids(s.commands_of("d1").unwrap()), ["c0", "c3", "c4"]);
        for d in devices {
            assert_eq!(s.commands_of(d).unwrap(), filtered(&s, d), "{d}");
        }
        assert!(s.commands_of("d").unwrap().is_empty());
        // Each storage section's readiness is kept with its device, as judged from it.
        for (id, home_encrypted) in [("d1", false), ("d2", true)] {
            let section = s.section(id, pb::SectionKind::Storage).unwrap();
            let judged = summary(section.as_ref());
            let state = if home_encrypted {
                "crypto-erase"
            } else {
                "partial"
            };
            assert_eq!(judged.state, state);
            assert_eq!(kept(&s, &[id]), [(Some(judged), JUDGEMENT_VERSION)]);
        }
    }

    // The same data as a store written before either existed has it.
    let (before, judged): (Vec<Vec<pb::CommandInfo>>, Vec<_>) = {
        let s = p.reopen().await;
        let lists = devices.iter().map(|d| s.commands_of(d).unwrap()).collect();
        let judged = kept(&s, &devices);
        // d3 and d1x never reported: judged (no storage section) when the store opened.
        assert_eq!(judged[2], (Some(summary(None)), JUDGEMENT_VERSION));
        assert_eq!(judged[3], judged[2]);
        let records: Vec<_> = devices
            .iter()
            .map(|d| s.device(d).unwrap().unwrap())
            .collect();
        drop(s);
        p.drop_raw(&["command_devices", "indexes"]).await;
        for mut rec in records {
            rec.readiness = None;
            rec.readiness_version = 0;
            let id = rec.device.clone().unwrap().id;
            p.write_raw(
                "devices",
                id.as_bytes(),
                &prost::Message::encode_to_vec(&rec),
            )
            .await;
        }
        (lists, judged)
    };
    let s = p.reopen().await;
    let after: Vec<_> = devices.iter().map(|d| s.commands_of(d).unwrap()).collect();
    assert_eq!(after, before, "the index is built at open");
    assert_eq!(
        kept(&s, &devices),
        judged,
        "the readiness is judged at open"
    );
    // And kept from then on.
    s.put_command(&command("c5", "d2", S::Pending))
        .await
        .unwrap();
    assert_eq!(ids(s.commands_of("d2").unwrap()), ["c1", "c5"]);
}
