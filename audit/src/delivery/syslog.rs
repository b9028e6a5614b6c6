//! The syslog sink: RFC 5424 messages over TLS (1.2/1.3, the sink's CA) with RFC 5425
//! octet-counting framing. Delivery is at least once: records come from the sink's spool, and
//! after a failed connection the last [`REPLAY_WINDOW`] of records is sent again, since TCP
//! accepted them but the receiver may not have processed them. Re-deliveries are exact copies,
//! which `bedside-audit verify` counts and skips.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::health::{SinkFailure, SinkHealth};
use super::pace::Pace;
use super::spool::Spool;
use crate::Record;

/// Records read from the buffer at a time.
const BATCH: usize = 256;
/// Records sent within this long before a connection fails are sent again.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10);
/// A connection (TCP and TLS) or a write that takes longer has failed: a receiver that stops
/// reading must not hold delivery forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 5424 PRI: facility authpriv (10), severity notice (5).
const PRI: u8 = 10 * 8 + 5;
/// The SD-ID of bedside's structured data (an enterprise-number-style private id).
const SD_ID: &str = "bedside@32473";

/// Escapes an SD-PARAM value (RFC 5424 section 6.3.3).
fn sd_escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// A HOSTNAME (at most 255 characters) or APP-NAME (48) as RFC 5424 allows it: printable
/// US-ASCII without spaces, `-` when nothing is left. A space would shift every field after
/// it at the collector.
fn header_field(value: &str, max: usize) -> String {
    let kept: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if kept.is_empty() { "-".into() } else { kept }
}

/// One record as an RFC 5425 frame: `LEN SP <PRI>1 TIME HOST APP - MSGID [SD] MSG`.
pub fn frame(line: &str, hostname: &str, app: &str) -> String {
    let (time, sd) = match serde_json::from_str::<Record>(line) {
        Ok(r) => {
            let text = |v: serde_json::Result<serde_json::Value>| {
                v.ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            };
            let e = &r.event;
            let mut params = vec![
                ("tenant", e.tenant.to_string()),
                ("seq", r.seq.to_string()),
                ("action", text(serde_json::to_value(e.action))),
                ("result", text(serde_json::to_value(e.outcome.result))),
                ("node", e.place.node.to_string()),
                ("auth", text(serde_json::to_value(e.actor.auth))),
            ];
            let optional = [
                ("reason", e.outcome.reason.as_ref().map(ToString::to_string)),
                ("user", e.actor.user.as_ref().map(ToString::to_string)),
                ("role", e.actor.role.map(|r| text(serde_json::to_value(r)))),
                ("room", e.place.room.as_ref().map(ToString::to_string)),
                ("clientIp", e.place.client_ip.map(|ip| ip.to_string())),
            ];
            params.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
            let sd: String = params
                .iter()
                .map(|(k, v)| format!(" {k}=\"{}\"", sd_escape(v)))
                .collect();
            (r.time.to_string(), format!("[{SD_ID}{sd}]"))
        }
        Err(_) => (jiff::Timestamp::now().to_string(), "-".to_string()),
    };
    let (hostname, app) = (header_field(hostname, 255), header_field(app, 48));
    let message = format!("<{PRI}>1 {time} {hostname} {app} - audit {sd} {line}");
    format!("{} {message}", message.len())
}

/// Where and as whom a syslog sink is delivered to.
#[derive(Debug)]
pub struct Target {
    /// host:port
    pub address: String,
    pub tls: Arc<rustls::ClientConfig>,
    /// HOSTNAME in each message: the node or operator replica.
    pub hostname: String,
    /// APP-NAME in each message.
    pub app: &'static str,
}

/// Delivers the spool to the target for as long as the process runs.
pub async fn deliver(spool: Arc<Spool>, target: Target, wake: Arc<Notify>, health: SinkHealth) {
    let Target {
        address,
        tls,
        hostname,
        app,
    } = target;
    let host = address
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .unwrap_or_else(|| address.clone());
    let Ok(server_name) = ServerName::try_from(host.clone()) else {
        tracing::error!(%address, "the syslog sink's host is not a valid name or address");
        return;
    };
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut pace = Pace::new(wake);
    loop {
        // Everything after the delivered offset is sent (again) on a new connection.
        let mut offset = spool.delivered();
        let connect = async {
            let tcp = TcpStream::connect(&address).await?;
            connector.connect(server_name.clone(), tcp).await
        };
        let stream = match tokio::time::timeout(IO_TIMEOUT, connect).await {
            Ok(connected) => connected,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS connection within {}s", IO_TIMEOUT.as_secs()),
            )),
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                if health.down(SinkFailure::Unreachable) {
                    tracing::warn!(%address, error = %e, "audit syslog sink unreachable; records stay buffered");
                }
                health.buffered(spool.depth(offset));
                pace.back_off().await;
                continue;
            }
        };
        if health.up() {
            tracing::info!(%address, "audit syslog sink connected");
        }
        pace.recovered();
        // Sent but not yet old enough to count as delivered: (sent at, end offset).
        let mut in_flight: VecDeque<(Instant, u64)> = VecDeque::new();
        'connected: loop {
            // Everything sent long enough ago counts as delivered: one synced offset for all.
            let mut settled = None;
            while let Some((sent, end)) = in_flight.front().copied() {
                if sent.elapsed() < REPLAY_WINDOW {
                    break;
                }
                in_flight.pop_front();
                settled = Some(end);
            }
            if let Some(end) = settled
                && let Err(e) = spool.set_delivered(end)
            {
                tracing::error!(error = %e, "cannot record the audit sink's delivered offset");
            }
            if in_flight.is_empty() {
                match spool.compact_if_drained(offset) {
                    Ok(true) => offset = 0,
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "cannot empty the drained audit spool"),
                }
            }
            health.buffered(spool.depth(offset));
            let lines = pace.batch(&spool, offset, BATCH).await;
            if lines.is_empty() {
                continue;
            }
            for (end, line) in lines {
                let write = async {
                    stream
                        .write_all(frame(&line, &hostname, app).as_bytes())
                        .await?;
                    stream.flush().await
                };
                let written = match tokio::time::timeout(IO_TIMEOUT, write).await {
                    Ok(written) => written,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the receiver took nothing for {}s", IO_TIMEOUT.as_secs()),
                    )),
                };
                if let Err(e) = written {
                    tracing::warn!(%address, error = %e, "audit syslog sink failed; replaying from the last delivered record");
                    health.down(SinkFailure::Broken);
                    break 'connected;
                }
                health.delivered(1);
                in_flight.push_back((Instant::now(), end));
                offset = end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_octets_and_escape_structured_data() {
        let f = frame("not a record", "node-1", "bedside-media-node");
        let (len, rest) = f.split_once(' ').expect("len");
        assert_eq!(len.parse::<usize>().expect("number"), rest.len());
        assert!(rest.starts_with("<85>1 "), "{rest}");
        assert_eq!(sd_escape(r#"a"b]c\"#), r#"a\"b\]c\\"#);
    }

    #[test]
    fn a_hostname_with_spaces_or_line_breaks_cannot_shift_the_header() {
        let f = frame("not a record", "node 1\nforged", "");
        let fields: Vec<&str> = f.split(' ').collect();
        assert_eq!(&fields[3..7], ["node1forged", "-", "-", "audit"], "{f}");
    }

    #[test]
    fn structured_data_carries_who_what_where_and_why() {
        use crate::event::*;
        let key = crate::AuditKey::new(&[1; 32]).expect("key");
        let id = |s: &str| OpaqueId::new(s).expect("id");
        let event = AuditEvent {
            tenant: id("mercy"),
            actor: Actor {
                user: Some(id("u-7")),
                role: Some(ActorRole::Host),
                auth: AuthMethod::JoinToken,
            },
            action: Action::Expel,
            outcome: Outcome::failure(id("not-host")),
            place: Place {
                node: id("node-1"),
                room: Some(id("visit-9")),
                client_ip: Some("127.0.0.1".parse().expect("ip")),
                media_path: None,
                break_glass: None,
            },
        };
        let (_, line) = crate::Chain::new(key, None)
            .append(event, jiff::Timestamp::now())
            .expect("seal");
        let f = frame(&line, "node-1", "bedside-operator");
        assert!(f.contains(" node-1 bedside-operator - audit "), "{f}");
        for field in [
            r#"tenant="mercy""#,
            r#"seq="1""#,
            r#"action="expel""#,
            r#"result="failure""#,
            r#"reason="not-host""#,
            r#"user="u-7""#,
            r#"role="host""#,
            r#"room="visit-9""#,
            r#"clientIp="127.0.0.1""#,
            r#"auth="join-token""#,
        ] {
            assert!(f.contains(field), "{field} in {f}");
        }
        assert!(f.ends_with(&line), "the sealed record is the message: {f}");
    }
}
