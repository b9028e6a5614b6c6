//! The auditor: seals events into one chain (one per media node or operator replica) and
//! hands each record to every sink: the stdout sink's writer, and each network sink's
//! disk-backed buffer.
//!
//! The chain survives restarts: the last record is kept in the buffer directory and the next
//! process continues its sequence. A checkpoint is sealed every interval in which the chain
//! grew, and a closing record when the process stops cleanly, so a verifier can tell a chain
//! that ended from one that was cut.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::DeliveryError;
use super::health::SinkTransition;
use super::spool::Spool;
use crate::event::{
    Action, Actor, ActorRole, AuthMethod, BufferFullPolicy, MediaPath, OpaqueId, Outcome, Place,
};
use crate::evidence::ChainCheck;
use crate::{AuditEvent, AuditKey, Chain, Record};

pub struct Auditor {
    inner: Mutex<Inner>,
    /// Spools, outside the lock, for the backlog check on every join.
    spools: Vec<Arc<Spool>>,
    /// Undelivered bytes per sink at which the tenant's policy applies.
    buffer_limit: u64,
    policy: BufferFullPolicy,
    tenant: OpaqueId,
    node: OpaqueId,
    /// The sinks' delivery tasks: they end with the auditor.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The last record could not be written everywhere: joins wait until one can.
    failing: std::sync::atomic::AtomicBool,
    /// Where the chain's last record is kept, read back by [`check_at_rest`](Self::check_at_rest).
    tail_path: Option<PathBuf>,
}

/// How much of each sink's buffer the check at rest reads back: its newest records, the ones
/// a sink has not taken yet first among them.
const CHECK_WINDOW: u64 = 4 << 20;

impl Drop for Auditor {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

struct Inner {
    chain: Chain,
    out: Option<Box<dyn Write + Send>>,
    spools: Vec<(Arc<Spool>, Arc<Notify>)>,
    /// Holds the last record, so a restarted node continues the chain: rewritten in place
    /// (one write at offset 0; only its first line counts), no rename per record.
    tail_file: Option<std::fs::File>,
    /// Records sealed since the last checkpoint.
    since_checkpoint: u64,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("tenant", &self.tenant)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Who a record is about.
#[derive(Debug, Clone)]
pub struct Who {
    pub user: Option<String>,
    pub role: Option<ActorRole>,
    pub auth: AuthMethod,
}

impl Who {
    /// The node itself: checkpoints, sink failures.
    pub const NODE: Who = Who::UNAUTHENTICATED;

    /// A client that has not proven who it is yet (a refused join).
    pub const UNAUTHENTICATED: Who = Who {
        user: None,
        role: None,
        auth: AuthMethod::None,
    };
}

/// Whether the node's audit buffers let it take joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferState {
    Ok,
    /// Some sink's buffer is past its size, and the tenant keeps serving.
    FullServing,
    /// Joins are refused until the sinks catch up.
    FullRefusing,
}

impl Auditor {
    pub fn new(
        key: &[u8],
        tenant: &str,
        node: &str,
        out: Option<Box<dyn Write + Send>>,
        spools: Vec<(Arc<Spool>, Arc<Notify>)>,
        tail_file: Option<PathBuf>,
        (buffer_limit, policy): (u64, BufferFullPolicy),
    ) -> Result<Self, DeliveryError> {
        let key = AuditKey::new(key).map_err(|e| DeliveryError::setup("the audit key", e))?;
        let id = |what: &str, s: &str| OpaqueId::new(s).map_err(|e| DeliveryError::setup(what, e));
        // The chain goes on after the newest record this node wrote anywhere: a record reaches
        // the buffers before the tail file, so a node killed between the two resumes from the
        // buffer, and never seals a second, different record under the same sequence number.
        let saved = tail_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| text.lines().next().map(str::to_string));
        let buffered = spools
            .iter()
            .filter_map(|(s, _)| s.last_line().ok().flatten());
        let tail = saved
            .into_iter()
            .chain(buffered)
            .filter_map(|line| {
                let record: Record = serde_json::from_str(line.trim()).ok()?;
                Some((record, line.trim().to_string()))
            })
            .max_by_key(|(record, _)| record.seq);
        let chain = Chain::new(key, tail.as_ref().map(|(r, l)| (r, l.as_str())));
        Ok(Self {
            tail_path: tail_file.clone(),
            spools: spools.iter().map(|(s, _)| s.clone()).collect(),
            buffer_limit,
            policy,
            inner: Mutex::new(Inner {
                chain,
                out,
                spools,
                tail_file: match tail_file {
                    Some(path) => Some(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .write(true)
                            .open(&path)
                            .map_err(|source| DeliveryError::File {
                                what: "the audit chain's tail file",
                                path,
                                source,
                            })?,
                    ),
                    None => None,
                },
                since_checkpoint: 0,
            }),
            tenant: id("tenant name", tenant)?,
            node: id("node name", node)?,
            tasks: Mutex::default(),
            failing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(super) fn spools(&self) -> &[Arc<Spool>] {
        &self.spools
    }

    pub(super) fn own_tasks(&self, tasks: Vec<tokio::task::AbortHandle>) {
        if let Ok(mut owned) = self.tasks.lock() {
            owned.extend(tasks);
        }
    }

    /// Where the fullest sink's buffer stands against the tenant's policy. Under RefuseJoins,
    /// a full buffer refuses joins: HIPAA prefers no service to unaudited service. Under
    /// KeepServing, joins go on up to twice the size, past which records would be lost.
    pub fn buffer_state(&self) -> BufferState {
        self.state_at(self.depths().into_iter().max().unwrap_or(0))
    }

    /// Where the fullest sink's buffer, `deepest` bytes, stands against the tenant's policy
    /// (for a caller that already read the [`depths`](Self::depths)).
    pub fn state_at(&self, deepest: u64) -> BufferState {
        match self.policy {
            _ if deepest <= self.buffer_limit => BufferState::Ok,
            BufferFullPolicy::KeepServing if deepest <= self.buffer_limit.saturating_mul(2) => {
                BufferState::FullServing
            }
            _ => BufferState::FullRefusing,
        }
    }

    /// Each network sink's undelivered bytes now, in the order the sinks were opened (the
    /// delivery tasks only see them when they try to deliver, which a long back-off delays).
    pub fn depths(&self) -> Vec<u64> {
        self.spools.iter().map(|s| s.depth(s.delivered())).collect()
    }

    /// True when joins must wait: for the sinks to catch up, or for records to be writable
    /// again (whatever the tenant's buffer policy: a lost record is not a late one).
    pub fn refuses_joins(&self) -> bool {
        self.failing() || self.buffer_state() == BufferState::FullRefusing
    }

    /// The last record could not be written everywhere.
    pub fn failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Seals a checkpoint if the chain grew since the last one, or if the last record could
    /// not be written (the checkpoint finds out whether records can be kept again).
    pub fn checkpoint(&self) {
        let grew = self
            .inner
            .lock()
            .map(|inner| inner.since_checkpoint > 0)
            .unwrap_or(false);
        if grew || self.failing() {
            self.record(&Who::NODE, Action::Checkpoint, None, None, None);
        }
    }

    /// Reads the records this node keeps on its disk (the newest of each sink's buffer, the
    /// chain's tail) back and checks them against the head it holds: an edit of a record
    /// waiting for a sink, or of the tail a restart continues from, is found here.
    pub fn check_at_rest(&self) -> ChainCheck {
        let mut check = ChainCheck {
            checked_at: jiff::Timestamp::now().as_second(),
            ..ChainCheck::default()
        };
        // The head first: records appended meanwhile come after it and are checked too.
        let Ok((head, key)) = self
            .inner
            .lock()
            .map(|inner| (inner.chain.head(), inner.chain.key().clone()))
        else {
            check.broken = Some("the audit chain's lock is poisoned".into());
            return check;
        };
        check.head_seq = head.as_ref().map(|(seq, _)| *seq);
        let tail = self.tail_path.as_ref().map(|path| {
            std::fs::read_to_string(path)
                .map(|text| text.lines().take(1).map(str::to_string).collect::<Vec<_>>())
        });
        let buffers = self.spools.iter().map(|s| {
            (
                format!("the buffer {}", s.file_name()),
                s.tail_lines(CHECK_WINDOW),
            )
        });
        for (place, lines) in
            buffers.chain(tail.map(|lines| ("the chain's tail file".to_string(), lines)))
        {
            let found = lines
                .map_err(|e| format!("cannot read it: {e}"))
                .and_then(|lines| crate::verify::check_against_head(&lines, &key, head.as_ref()));
            match found {
                Ok(records) => check.records_checked += records as u64,
                Err(why) => {
                    check.broken.get_or_insert(format!("{place}: {why}"));
                }
            }
        }
        check
    }

    /// Seals the chain's last record: the node is stopping cleanly.
    pub fn close(&self) {
        self.record(&Who::NODE, Action::ChainClosed, None, None, None);
    }

    /// A sink went down or came back.
    pub fn sink_transition(&self, t: &SinkTransition) {
        match t.failure {
            Some(failure) => {
                let reason = format!("{}-{}-{}", t.kind, t.sink, failure.label());
                self.record(&Who::NODE, Action::SinkFailure, Some(&reason), None, None);
            }
            None => self.record(&Who::NODE, Action::SinkRecovered, None, None, None),
        }
    }

    /// True when the chain has nothing left to do: every record is covered by a checkpoint (or
    /// the chain's close) and every sink has taken every record.
    pub fn settled(&self) -> bool {
        let sealed = self
            .inner
            .lock()
            .map(|inner| inner.since_checkpoint == 0)
            .unwrap_or(false);
        sealed && self.drained()
    }

    /// True once every sink has taken every record.
    pub fn drained(&self) -> bool {
        self.spools.iter().all(|s| s.depth(s.delivered()) == 0)
    }

    /// Seals and writes one record. A failed write is logged, and joins are refused until a
    /// record is written again ([`try_record`](Self::try_record) reports it to the caller).
    pub fn record(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        room: Option<&str>,
        client_ip: Option<IpAddr>,
    ) {
        let _ = self.try_record_repeated(who, action, refusal, room, client_ip, None);
    }

    /// Like [`record`](Self::record), for a record that must be kept before what it is about
    /// goes on (a join): `Err` when it was not written everywhere.
    pub fn try_record(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        room: Option<&str>,
        client_ip: Option<IpAddr>,
    ) -> Result<(), DeliveryError> {
        self.try_record_repeated(who, action, refusal, room, client_ip, None)
    }

    /// Like [`record`](Self::record), for a record that stands for `repeated` like it.
    pub fn record_repeated(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        room: Option<&str>,
        client_ip: Option<IpAddr>,
        repeated: Option<u32>,
    ) {
        let _ = self.try_record_repeated(who, action, refusal, room, client_ip, repeated);
    }

    /// Records that a participant's media flows, and on which path (UDP, ICE-TCP).
    pub fn record_media_connected(
        &self,
        who: &Who,
        room: &str,
        client_ip: IpAddr,
        path: MediaPath,
    ) {
        let mut event = self.event(
            who,
            Action::MediaConnected,
            None,
            Some(room),
            Some(client_ip),
        );
        event.place.media_path = Some(path);
        let _ = self.seal(event);
    }

    /// Records a step of emergency access: `break_glass` names the `BreakGlass` object, `room`
    /// its visit. `Err` when it was not written everywhere (a join through it is undone).
    pub fn try_record_break_glass(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        (room, break_glass): (&str, &str),
        client_ip: Option<IpAddr>,
    ) -> Result<(), DeliveryError> {
        let mut event = self.event(who, action, refusal, Some(room), client_ip);
        event.place.break_glass = OpaqueId::new(break_glass).ok();
        self.seal(event)
    }

    fn try_record_repeated(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        room: Option<&str>,
        client_ip: Option<IpAddr>,
        repeated: Option<u32>,
    ) -> Result<(), DeliveryError> {
        let mut event = self.event(who, action, refusal, room, client_ip);
        event.outcome.repeated = repeated;
        self.seal(event)
    }

    fn event(
        &self,
        who: &Who,
        action: Action,
        refusal: Option<&str>,
        room: Option<&str>,
        client_ip: Option<IpAddr>,
    ) -> AuditEvent {
        AuditEvent {
            tenant: self.tenant.clone(),
            actor: Actor {
                // Ids that are not opaque are left out rather than recorded: never free text.
                user: who.user.as_deref().and_then(|u| OpaqueId::new(u).ok()),
                role: who.role,
                auth: who.auth,
            },
            action,
            outcome: match refusal.and_then(|r| OpaqueId::new(r).ok()) {
                Some(reason) => Outcome::failure(reason),
                None => Outcome::success(),
            },
            place: Place {
                node: self.node.clone(),
                room: room.and_then(|r| OpaqueId::new(r).ok()),
                client_ip,
                media_path: None,
                break_glass: None,
            },
        }
    }

    /// Seals `event` into the chain and writes it everywhere it goes.
    fn seal(&self, event: AuditEvent) -> Result<(), DeliveryError> {
        let written = match self.inner.lock() {
            Ok(mut inner) => inner.seal_and_write(event),
            Err(_) => Err("the audit chain's lock is poisoned".to_string()),
        };
        self.failing
            .store(written.is_err(), std::sync::atomic::Ordering::Release);
        written.map_err(|e| {
            tracing::error!(error = %e, "audit record not kept; joins are refused until records can be written");
            DeliveryError::Unrecorded(e)
        })
    }
}

impl Inner {
    /// Seals `event` and writes it everywhere it goes; every place is tried, the first
    /// failure is returned.
    fn seal_and_write(&mut self, event: AuditEvent) -> Result<(), String> {
        let action = event.action;
        let line = match self.chain.append(event, jiff::Timestamp::now()) {
            Ok((_, line)) => line,
            Err(e) => return Err(format!("cannot seal: {e}")),
        };
        self.since_checkpoint = match action {
            Action::Checkpoint | Action::ChainClosed => 0,
            _ => self.since_checkpoint + 1,
        };
        let mut failure = None;
        // Spools first: once there, a record survives a sink outage and a node restart.
        for (spool, wake) in &self.spools {
            if let Err(e) = spool.append(&line) {
                failure.get_or_insert(format!("cannot buffer it for a sink: {e}"));
            }
            wake.notify_one();
        }
        if let Some(tail) = &self.tail_file {
            use std::os::unix::fs::FileExt;
            let mut text = Vec::with_capacity(line.len() + 1);
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
            if let Err(e) = tail.write_all_at(&text, 0) {
                failure.get_or_insert(format!("cannot save the chain's tail: {e}"));
            }
        }
        if let Some(out) = self.out.as_mut() {
            let written = writeln!(out, "{line}").and_then(|()| out.flush());
            if let Err(e) = written {
                failure.get_or_insert(format!("cannot write it to stdout: {e}"));
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A stdout that can fill up like a disk.
    struct Disk {
        full: Arc<AtomicBool>,
        lines: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full.load(Ordering::Acquire) {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            self.lines
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_record_that_cannot_be_written_refuses_joins_until_one_can() {
        let full = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let disk = Disk {
            full: full.clone(),
            lines: lines.clone(),
        };
        let auditor = Auditor::new(
            &[7; 32],
            "mercy",
            "node-1",
            Some(Box::new(disk)),
            Vec::new(),
            None,
            (1 << 20, BufferFullPolicy::KeepServing),
        )
        .expect("auditor");
        let who = Who::UNAUTHENTICATED;
        auditor
            .try_record(&who, Action::Join, None, Some("r-1"), None)
            .expect("written");
        assert!(!auditor.refuses_joins());

        full.store(true, Ordering::Release);
        let err = auditor
            .try_record(&who, Action::Join, None, Some("r-1"), None)
            .expect_err("a full disk");
        assert!(err.to_string().contains("stdout"), "{err}");
        assert!(
            auditor.refuses_joins(),
            "even a tenant that keeps serving on a full buffer does not serve unaudited"
        );
        // The checkpoint finds out when records can be kept again.
        auditor.checkpoint();
        assert!(auditor.refuses_joins());
        full.store(false, Ordering::Release);
        auditor.checkpoint();
        assert!(!auditor.refuses_joins());
        let text = String::from_utf8(lines.lock().expect("lines").clone()).expect("text");
        let kept: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a whole record"))
            .collect();
        assert_eq!(
            kept.len(),
            2,
            "the join and the checkpoint after the disk came back"
        );
        // The lost records are a gap the verifier names, not a silent hole.
        assert!(kept[1].seq > kept[0].seq + 1);
    }

    fn buffered(dir: &std::path::Path) -> Auditor {
        let spool = Arc::new(Spool::open(dir, "sink-0").expect("spool"));
        Auditor::new(
            &[7; 32],
            "mercy",
            "node-1",
            None,
            vec![(spool, Arc::new(Notify::new()))],
            None,
            (1 << 20, BufferFullPolicy::KeepServing),
        )
        .expect("auditor")
    }

    /// A record waiting in a sink's buffer edited on the disk (here its room) is found by the
    /// node's own check, which names the buffer and the record; untouched, the check passes.
    #[test]
    fn the_check_at_rest_finds_a_buffered_record_edited_on_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auditor = buffered(dir.path());
        let who = Who::UNAUTHENTICATED;
        for room in ["r-1", "r-2", "r-3"] {
            auditor.record(&who, Action::Join, None, Some(room), None);
        }
        let clean = auditor.check_at_rest();
        assert_eq!(clean.broken, None);
        assert_eq!(clean.head_seq, Some(3));
        assert_eq!(clean.records_checked, 3);

        let records = dir.path().join("sink-0.jsonl");
        let text = std::fs::read_to_string(&records).expect("buffer");
        std::fs::write(&records, text.replacen("r-2", "r-9", 1)).expect("edit");
        let broken = auditor.check_at_rest().broken.expect("found");
        assert!(
            broken.contains("the buffer sink-0.jsonl") && broken.contains("seq 2"),
            "{broken}"
        );
    }

    /// The buffer rewritten with a record sealed properly (by someone holding the key) in
    /// place of the head does not pass either: the head the node holds in memory differs.
    #[test]
    fn the_check_at_rest_finds_a_head_that_is_not_the_one_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auditor = buffered(dir.path());
        let who = Who::UNAUTHENTICATED;
        auditor.record(&who, Action::Join, None, Some("r-1"), None);
        let records = dir.path().join("sink-0.jsonl");
        let mut forged = Chain::new(AuditKey::new(&[7; 32]).expect("key"), None);
        let event = auditor.event(&who, Action::Leave, None, Some("r-1"), None);
        let (_, line) = forged
            .append(event, jiff::Timestamp::now())
            .expect("sealed");
        std::fs::write(&records, format!("{line}\n")).expect("replace");
        let broken = auditor.check_at_rest().broken.expect("found");
        assert!(broken.contains("the chain's head"), "{broken}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]
        /// A node killed while a record was half on the disk (the buffer cut at any byte):
        /// the restarted node's buffer holds only whole records, the ones it writes next are
        /// whole too, and the buffer verifies as one chain, the cut-off records a gap the
        /// verifier accounts for rather than a corrupt line.
        #[test]
        fn a_buffer_cut_at_any_byte_recovers_to_whole_records_in_one_chain(
            before in 1usize..6,
            cut in 0usize..100_000,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let who = Who::UNAUTHENTICATED;
            let auditor = buffered(dir.path());
            for _ in 0..before {
                auditor.try_record(&who, Action::Join, None, Some("r-1"), None).expect("kept");
            }
            drop(auditor);
            let records = dir.path().join("sink-0.jsonl");
            let len = std::fs::metadata(&records).expect("buffer").len();
            let cut = cut as u64 % (len + 1);
            std::fs::OpenOptions::new().write(true).open(&records).expect("open")
                .set_len(cut).expect("cut");

            let auditor = buffered(dir.path());
            auditor.try_record(&who, Action::Leave, None, Some("r-1"), None).expect("kept");
            auditor.try_record(&who, Action::Leave, None, Some("r-1"), None).expect("kept");
            let text = std::fs::read_to_string(&records).expect("buffer");
            let verified = crate::verify::verify(text.lines(), &AuditKey::new(&[7; 32]).expect("key"));
            proptest::prop_assert!(verified.is_ok(), "{verified:?}\n{text}");
            let whole_before = text.lines().count() - 2;
            proptest::prop_assert!(whole_before <= before);
            let last: Record = serde_json::from_str(text.lines().last().expect("a line")).expect("whole");
            proptest::prop_assert_eq!(last.seq as usize, whole_before + 2, "the chain goes on after the last whole record");
        }
    }
}
