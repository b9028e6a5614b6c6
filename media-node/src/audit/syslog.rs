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
use super::spool::Spool;
use bedside_audit::Record;

/// Records sent within this long before a connection fails are sent again.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
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

/// One record as an RFC 5425 frame: `LEN SP <PRI>1 TIME HOST APP - MSGID [SD] MSG`.
pub fn frame(line: &str, hostname: &str) -> String {
    let (time, sd) = match serde_json::from_str::<Record>(line) {
        Ok(r) => {
            let action = serde_json::to_value(r.event.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let result = serde_json::to_value(r.event.outcome.result)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (
                r.time.to_string(),
                format!(
                    "[{SD_ID} tenant=\"{}\" seq=\"{}\" action=\"{}\" result=\"{}\"]",
                    sd_escape(r.event.tenant.as_str()),
                    r.seq,
                    sd_escape(&action),
                    sd_escape(&result)
                ),
            )
        }
        Err(_) => (jiff::Timestamp::now().to_string(), "-".to_string()),
    };
    let message = format!("<{PRI}>1 {time} {hostname} bedside-media-node - audit {sd} {line}");
    format!("{} {message}", message.len())
}

/// Delivers the spool to `address` for as long as the node runs.
pub async fn deliver(
    spool: Arc<Spool>,
    address: String,
    tls: Arc<rustls::ClientConfig>,
    hostname: String,
    wake: Arc<Notify>,
    health: SinkHealth,
) {
    let host = address
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .unwrap_or_else(|| address.clone());
    let Ok(server_name) = ServerName::try_from(host.clone()) else {
        tracing::error!(%address, "the syslog sink's host is not a valid name or address");
        return;
    };
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut backoff = Duration::from_millis(100);
    loop {
        // Everything after the delivered offset is sent (again) on a new connection.
        let mut offset = spool.delivered();
        let stream = match TcpStream::connect(&address).await {
            Ok(tcp) => connector.connect(server_name.clone(), tcp).await,
            Err(e) => Err(e),
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                if health.set_up(false) {
                    tracing::warn!(%address, error = %e, "audit syslog sink unreachable; records stay buffered");
                }
                health.failed(SinkFailure::Unreachable);
                health.buffered(spool.depth(offset));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !health.set_up(true) {
            tracing::info!(%address, "audit syslog sink connected");
        }
        backoff = Duration::from_millis(100);
        // Sent but not yet old enough to count as delivered: (sent at, end offset).
        let mut in_flight: VecDeque<(Instant, u64)> = VecDeque::new();
        'connected: loop {
            while let Some((sent, end)) = in_flight.front().copied() {
                if sent.elapsed() < REPLAY_WINDOW {
                    break;
                }
                in_flight.pop_front();
                if let Err(e) = spool.set_delivered(end) {
                    tracing::error!(error = %e, "cannot record the audit sink's delivered offset");
                }
            }
            let lines = match spool.read_from(offset) {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the audit spool");
                    Vec::new()
                }
            };
            health.buffered(spool.depth(offset));
            if lines.is_empty() {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            for (end, line) in lines {
                let written = async {
                    stream.write_all(frame(&line, &hostname).as_bytes()).await?;
                    stream.flush().await
                }
                .await;
                if let Err(e) = written {
                    tracing::warn!(%address, error = %e, "audit syslog sink failed; replaying from the last delivered record");
                    health.set_up(false);
                    health.failed(SinkFailure::Broken);
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
        let f = frame("not a record", "node-1");
        let (len, rest) = f.split_once(' ').expect("len");
        assert_eq!(len.parse::<usize>().expect("number"), rest.len());
        assert!(rest.starts_with("<85>1 "), "{rest}");
        assert_eq!(sd_escape(r#"a"b]c\"#), r#"a\"b\]c\\"#);
    }
}
