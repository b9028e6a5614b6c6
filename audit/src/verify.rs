//! Checks a stored stream of records and names the first place it is broken, and why.

use crate::chain::{AuditKey, GENESIS, Record, line_hash};
use crate::event::Action;
use std::collections::HashMap;

/// Why a chain is broken at a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("line {line}: not an audit record ({why})")]
    Malformed { line: usize, why: String },
    #[error(
        "line {line} (seq {seq}): its MAC does not verify under this key: the record was altered, or the stream was sealed with another tenant's key"
    )]
    WrongKeyOrAltered { line: usize, seq: u64 },
    #[error("line {line} (seq {seq}): its MAC does not verify: the record was altered")]
    Altered { line: usize, seq: u64 },
    #[error(
        "line {line}: seq {found} follows seq {previous}: {missing} record(s) removed before it"
    )]
    Removed {
        line: usize,
        previous: u64,
        found: u64,
        missing: u64,
    },
    #[error(
        "line {line}: seq {found} follows seq {previous}: records reordered (seq {expected} is at line {expected_at})"
    )]
    Reordered {
        line: usize,
        previous: u64,
        found: u64,
        expected: u64,
        expected_at: usize,
    },
    #[error(
        "line {line} (seq {seq}): it does not follow the record before it (its prev hash differs): a record before it was altered or replaced"
    )]
    PrevMismatch { line: usize, seq: u64 },
}

/// What a verification found about one chain (one node or operator replica's records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The node (or operator replica) that sealed the chain.
    pub node: String,
    /// Records checked.
    pub records: usize,
    /// Exact re-deliveries skipped (at-least-once sinks may repeat a record).
    pub duplicates: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Periodic checkpoints found.
    pub checkpoints: usize,
    /// The chain ends in the record a node seals when it stops cleanly. An open chain belongs
    /// to a node that still runs, or that died; records after its last one cannot be accounted for.
    pub closed: bool,
}

/// What a verification found: one report per chain, in order of first appearance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    pub chains: Vec<ChainReport>,
}

impl Verified {
    pub fn records(&self) -> usize {
        self.chains.iter().map(|c| c.records).sum()
    }

    pub fn duplicates(&self) -> usize {
        self.chains.iter().map(|c| c.duplicates).sum()
    }
}

/// Checks records read back from where a node keeps them (its buffers, its tail file): they
/// verify as a chain, and the one with the head's seq is the record the node sealed last
/// (`head`: its seq and line hash). Returns how many records were checked, or what is broken.
pub fn check_against_head(
    lines: &[String],
    key: &AuditKey,
    head: Option<&(u64, String)>,
) -> Result<usize, String> {
    let verified = verify(lines.iter().map(String::as_str), key).map_err(|b| b.to_string())?;
    if let Some((seq, hash)) = head {
        // The head is the last record or near it: searched from the end.
        let at_head = lines.iter().rev().find(|line| {
            serde_json::from_str::<Record>(line).is_ok_and(|record| record.seq == *seq)
        });
        if let Some(line) = at_head
            && line_hash(line.trim_end()) != *hash
        {
            return Err(format!(
                "seq {seq}, the chain's head, differs from the record the node sealed: it was altered after sealing"
            ));
        }
    }
    Ok(verified.records())
}

/// One parsed line: its number in the stream, the record and the line's text.
type Entry<'a> = (usize, Record, &'a str);

/// Verifies JSON lines. A stream holds one chain per node (each media node and operator
/// replica seals its own), interleaved as a shared sink received them; each is checked on
/// its own. A stream may start mid-chain (a rotated file): a chain's first record is then
/// trusted for its `prev` and checked for its MAC.
pub fn verify<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    key: &AuditKey,
) -> Result<Verified, Broken> {
    let mut chains: Vec<(String, Vec<Entry<'a>>)> = Vec::new();
    for (index, line) in lines.into_iter().enumerate() {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(line).map_err(|e| Broken::Malformed {
            line: index + 1,
            why: e.to_string(),
        })?;
        let node = record.event.place.node.as_str();
        let entry = (index + 1, record.clone(), line);
        match chains.iter_mut().find(|(n, _)| n == node) {
            Some((_, entries)) => entries.push(entry),
            None => chains.push((node.to_string(), vec![entry])),
        }
    }
    let mut verified = Verified::default();
    for (node, entries) in chains {
        verified.chains.push(verify_chain(node, &entries, key)?);
    }
    Ok(verified)
}

fn verify_chain(
    node: String,
    entries: &[Entry<'_>],
    key: &AuditKey,
) -> Result<ChainReport, Broken> {
    let mut previous: Option<(&Record, &str)> = None;
    // Each record seen so far, by seq: an exact copy arriving later is a re-delivery.
    let mut seen: HashMap<u64, String> = HashMap::new();
    let mut report = ChainReport {
        node,
        records: 0,
        duplicates: 0,
        first_seq: None,
        last_seq: None,
        checkpoints: 0,
        closed: false,
    };
    for (index, (line_no, record, line)) in entries.iter().enumerate() {
        let line_no = *line_no;
        // The MAC covers the record as read, so a line that is not the record's own
        // serialization holds bytes it does not cover: RFC 3339 reads a lowercase 't' or 'z'
        // as the same time, and the last record has no successor whose `prev` hashes its line.
        let as_sealed = serde_json::to_string(record).is_ok_and(|own| own == *line);
        if !key.check(record) || !as_sealed {
            return Err(if report.records == 0 {
                Broken::WrongKeyOrAltered {
                    line: line_no,
                    seq: record.seq,
                }
            } else {
                Broken::Altered {
                    line: line_no,
                    seq: record.seq,
                }
            });
        }
        match previous {
            None => {
                if record.seq == 1 && record.prev != GENESIS {
                    return Err(Broken::PrevMismatch {
                        line: line_no,
                        seq: record.seq,
                    });
                }
                report.first_seq = Some(record.seq);
            }
            Some(prev) => {
                if follows(entries, index, prev, &seen)? == Link::Redelivered {
                    report.duplicates += 1;
                    continue;
                }
            }
        }
        report.records += 1;
        report.last_seq = Some(record.seq);
        if record.event.action == Action::Checkpoint {
            report.checkpoints += 1;
        }
        report.closed = record.event.action == Action::ChainClosed;
        seen.insert(record.seq, line_hash(line));
        previous = Some((record, line));
    }
    Ok(report)
}

/// How a record stands to the one before it.
#[derive(Debug, PartialEq, Eq)]
enum Link {
    Next,
    /// An exact copy of a record already seen (a sink's at-least-once delivery).
    Redelivered,
}

/// Checks that `entries[index]` follows `(prev_record, prev_line)`, telling a reordering from a
/// removal and a re-delivery from a re-insertion.
fn follows(
    entries: &[Entry<'_>],
    index: usize,
    (prev_record, prev_line): (&Record, &str),
    seen: &HashMap<u64, String>,
) -> Result<Link, Broken> {
    let (line_no, record, line) = &entries[index];
    let line_no = *line_no;
    // Where a sequence number sits further on, to tell a reordering from a removal.
    let seq_at = |seq: u64| {
        entries
            .iter()
            .skip(index + 1)
            .find_map(|(line_no, r, _)| (r.seq == seq).then_some(*line_no))
    };
    if record.seq <= prev_record.seq && seen.get(&record.seq).is_some_and(|h| *h == line_hash(line))
    {
        return Ok(Link::Redelivered);
    }
    let expected = prev_record.seq + 1;
    if record.seq != expected
        && let Some(expected_at) = seq_at(expected)
    {
        return Err(Broken::Reordered {
            line: line_no,
            previous: prev_record.seq,
            found: record.seq,
            expected,
            expected_at,
        });
    }
    if record.seq > expected {
        return Err(Broken::Removed {
            line: line_no,
            previous: prev_record.seq,
            found: record.seq,
            missing: record.seq - expected,
        });
    }
    if record.seq < expected {
        // A record from earlier in the chain, re-inserted here.
        return Err(Broken::Reordered {
            line: line_no,
            previous: prev_record.seq,
            found: record.seq,
            expected,
            expected_at: seq_at(expected).unwrap_or(0),
        });
    }
    if record.prev != line_hash(prev_line) {
        return Err(Broken::PrevMismatch {
            line: line_no,
            seq: record.seq,
        });
    }
    Ok(Link::Next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::event::*;

    fn key(byte: u8) -> AuditKey {
        AuditKey::new(&[byte; 32]).expect("key")
    }

    fn event(user: &str) -> AuditEvent {
        event_on("node-1", user, Action::Join)
    }

    fn event_on(node: &str, user: &str, action: Action) -> AuditEvent {
        AuditEvent {
            tenant: OpaqueId::new("mercy-clinic").expect("id"),
            actor: Actor {
                user: Some(OpaqueId::new(user).expect("id")),
                role: Some(ActorRole::Participant),
                auth: AuthMethod::JoinToken,
            },
            action,
            outcome: Outcome::success(),
            place: Place {
                node: OpaqueId::new(node).expect("id"),
                room: Some(OpaqueId::new("visit-42").expect("id")),
                client_ip: Some("127.0.0.1".parse().expect("ip")),
                media_path: None,
                break_glass: None,
            },
        }
    }

    fn stream(n: usize) -> Vec<String> {
        let mut chain = Chain::new(key(1), None);
        (0..n)
            .map(|i| {
                chain
                    .append(event(&format!("u-{i}")), jiff::Timestamp::now())
                    .expect("append")
                    .1
            })
            .collect()
    }

    fn check(lines: &[String], k: &AuditKey) -> Result<Verified, Broken> {
        verify(lines.iter().map(String::as_str), k)
    }

    #[test]
    fn an_intact_stream_verifies() {
        let lines = stream(5);
        let v = check(&lines, &key(1)).expect("intact");
        let c = &v.chains[0];
        assert_eq!((c.records, c.first_seq, c.last_seq), (5, Some(1), Some(5)));
        assert!(!c.closed, "a chain without its closing record is open");
    }

    #[test]
    fn an_altered_record_is_named() {
        let mut lines = stream(5);
        lines[2] = lines[2].replace("u-2", "u-9");
        assert_eq!(
            check(&lines, &key(1)),
            Err(Broken::Altered { line: 3, seq: 3 })
        );
    }

    /// Found by the property below: the last record's time with its 'Z' written lowercase
    /// reads as the same time, and the MAC over the record as read still held.
    #[test]
    fn a_time_written_in_another_case_is_an_altered_record() {
        for (from, to) in [("Z\"", "z\""), ("T", "t")] {
            let mut lines = stream(3);
            let (head, time) = lines[2].split_once("\"time\":").expect("a time");
            lines[2] = format!("{head}\"time\":{}", time.replacen(from, to, 1));
            assert_eq!(
                check(&lines, &key(1)),
                Err(Broken::Altered { line: 3, seq: 3 }),
                "{}",
                lines[2]
            );
        }
    }

    #[test]
    fn a_removed_record_is_named() {
        let mut lines = stream(5);
        lines.remove(2);
        assert_eq!(
            check(&lines, &key(1)),
            Err(Broken::Removed {
                line: 3,
                previous: 2,
                found: 4,
                missing: 1
            })
        );
    }

    #[test]
    fn swapped_records_are_named() {
        let mut lines = stream(5);
        lines.swap(1, 2);
        assert_eq!(
            check(&lines, &key(1)),
            Err(Broken::Reordered {
                line: 2,
                previous: 1,
                found: 3,
                expected: 2,
                expected_at: 3
            })
        );
        let mut lines = stream(5);
        let moved = lines.remove(1);
        lines.push(moved);
        assert!(matches!(
            check(&lines, &key(1)),
            Err(Broken::Reordered {
                line: 2,
                expected_at: 5,
                ..
            })
        ));
    }

    #[test]
    fn a_record_resealed_with_the_key_breaks_the_next_link() {
        // Someone holding the key rewrites record 3 and re-MACs it: record 4 no longer follows.
        let mut lines = stream(5);
        let mut record: Record = serde_json::from_str(&lines[2]).expect("record");
        record.event.action = Action::Leave;
        record.mac = key(1).mac(&record).expect("mac");
        lines[2] = serde_json::to_string(&record).expect("json");
        assert_eq!(
            check(&lines, &key(1)),
            Err(Broken::PrevMismatch { line: 4, seq: 4 })
        );
    }

    #[test]
    fn another_key_is_reported_at_the_first_record() {
        let lines = stream(3);
        assert_eq!(
            check(&lines, &key(2)),
            Err(Broken::WrongKeyOrAltered { line: 1, seq: 1 })
        );
    }

    #[test]
    fn exact_redeliveries_are_counted_not_fatal() {
        let mut lines = stream(3);
        lines.insert(2, lines[1].clone());
        let v = check(&lines, &key(1)).expect("duplicates are detectable, not broken");
        assert_eq!((v.records(), v.duplicates()), (3, 1));
        // A sink replaying a window after a reconnect: 1 2 3 4 | 3 4 5.
        let lines = stream(5);
        let replayed: Vec<String> = [0, 1, 2, 3, 2, 3, 4]
            .iter()
            .map(|i| lines[*i].clone())
            .collect();
        let v = check(&replayed, &key(1)).expect("a replayed window is not a break");
        assert_eq!((v.records(), v.duplicates()), (5, 2));
        assert_eq!(v.chains[0].last_seq, Some(5));
    }

    #[test]
    fn a_resumed_chain_continues_the_sequence() {
        let lines = stream(2);
        let last: Record = serde_json::from_str(&lines[1]).expect("record");
        let mut resumed = Chain::new(key(1), Some((&last, &lines[1])));
        let (_, line) = resumed
            .append(event("u-after-restart"), jiff::Timestamp::now())
            .expect("append");
        let mut all = lines.clone();
        all.push(line);
        assert_eq!(check(&all, &key(1)).expect("one chain").records(), 3);
    }

    /// Two nodes' chains, interleaved as a shared syslog receives them.
    fn two_nodes() -> Vec<String> {
        let (mut a, mut b) = (Chain::new(key(1), None), Chain::new(key(1), None));
        let mut lines = Vec::new();
        for i in 0..4 {
            for (chain, node) in [(&mut a, "node-a"), (&mut b, "node-b")] {
                let action = if i == 2 {
                    Action::Checkpoint
                } else {
                    Action::Join
                };
                let e = event_on(node, &format!("u-{i}"), action);
                lines.push(chain.append(e, jiff::Timestamp::now()).expect("append").1);
            }
        }
        let e = event_on("node-b", "u-last", Action::ChainClosed);
        lines.push(b.append(e, jiff::Timestamp::now()).expect("append").1);
        lines
    }

    #[test]
    fn interleaved_chains_of_several_nodes_verify_each_on_its_own() {
        let v = check(&two_nodes(), &key(1)).expect("two intact chains");
        let summary: Vec<_> = v
            .chains
            .iter()
            .map(|c| {
                (
                    c.node.as_str(),
                    c.records,
                    c.last_seq,
                    c.checkpoints,
                    c.closed,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("node-a", 4, Some(4), 1, false),
                ("node-b", 5, Some(5), 1, true)
            ]
        );
    }

    #[test]
    fn a_removal_in_one_of_several_chains_is_named_with_its_line() {
        let mut lines = two_nodes();
        // node-b's seq 2 sits at line 4.
        lines.remove(3);
        assert_eq!(
            check(&lines, &key(1)),
            Err(Broken::Removed {
                line: 5,
                previous: 1,
                found: 3,
                missing: 1
            })
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let lines = vec!["{".to_string()];
        assert!(matches!(
            check(&lines, &key(1)),
            Err(Broken::Malformed { line: 1, .. })
        ));
    }

    proptest::proptest! {
        /// Any byte of any record replaced by any other printable one: the stream no longer
        /// verifies (the MAC covers every field, the next record's `prev` the whole line).
        #[test]
        fn any_changed_byte_of_any_record_is_found(
            line in 0usize..6,
            at in 0usize..100_000,
            byte in 0x20u8..0x7f,
        ) {
            let mut lines = stream(6);
            let mut bytes = lines[line].clone().into_bytes();
            let at = at % bytes.len();
            proptest::prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            lines[line] = String::from_utf8(bytes).expect("ASCII stays UTF-8");
            proptest::prop_assert!(check(&lines, &key(1)).is_err(), "{}", lines[line]);
        }
    }
}
