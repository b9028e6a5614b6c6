//! The webhook sink: batches of records POSTed as a JSON array over HTTPS with a bearer token,
//! for SIEMs. A 2xx answer acknowledges the batch, so delivery resumes exactly after it; a
//! refused token (401/403) or any other failure keeps the records buffered and is reported in
//! the sink's metrics and the log.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;

use super::health::{SinkFailure, SinkHealth};
use super::pace::Pace;
use super::spool::Spool;

/// Records per POST.
const BATCH: usize = 100;
/// A webhook that has not answered by then has failed; the batch is sent again later.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The records of a batch that can go in one request: those before the first line that is not
/// a record. A batch that starts with such a line gets `Err(its end and text)`: it would make
/// every request that carries it invalid JSON, holding back every record after it.
pub fn sendable(lines: &[(u64, String)]) -> Result<&[(u64, String)], (u64, &str)> {
    let poisoned = lines
        .iter()
        .position(|(_, l)| serde_json::from_str::<crate::Record>(l).is_err());
    match poisoned {
        Some(0) => Err((lines[0].0, lines[0].1.as_str())),
        Some(n) => Ok(&lines[..n]),
        None => Ok(lines),
    }
}

/// The request body: the records, as a JSON array of the sealed lines.
pub fn batch_body<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = String::from("[");
    for (i, line) in lines.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(line);
    }
    body.push(']');
    body
}

/// Delivers the spool to `url` for as long as the node runs.
pub async fn deliver(
    spool: Arc<Spool>,
    url: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
    wake: Arc<Notify>,
    health: SinkHealth,
) {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let mut pace = Pace::new(wake);
    loop {
        let offset = spool.delivered();
        health.buffered(spool.depth(offset));
        let lines = pace.batch(&spool, offset, BATCH).await;
        if lines.is_empty() {
            continue;
        }
        let batch = match sendable(&lines) {
            Ok(batch) => batch,
            Err((end, line)) => {
                match spool.set_aside(line, end) {
                    Ok(()) => {
                        tracing::error!(%url, "a line in the audit buffer is not a record; set aside beside the buffer");
                        health.set_aside();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot set aside a line that is not a record");
                        pace.back_off().await;
                    }
                }
                continue;
            }
        };
        let body = batch_body(batch.iter().map(|(_, l)| l.as_str()));
        let request = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(bytes::Bytes::from(body)));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%url, error = %e, "the webhook sink's URL is not usable");
                return;
            }
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request)).await;
        let failure = match answer {
            Err(_) => (
                SinkFailure::Unreachable,
                format!(
                    "the webhook did not answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            ),
            Ok(answer) => match answer {
                Ok(response) if response.status().is_success() => {
                    let _ = response.into_body().collect().await;
                    let end = batch.last().map(|(end, _)| *end).unwrap_or(offset);
                    if let Err(e) = spool
                        .set_delivered(end)
                        .and_then(|()| spool.compact_if_drained(end))
                    {
                        tracing::error!(error = %e, "cannot record the audit sink's delivered offset");
                    }
                    if health.up() {
                        tracing::info!(%url, "audit webhook sink delivering");
                    }
                    health.delivered(batch.len() as u64);
                    pace.recovered();
                    continue;
                }
                Ok(response)
                    if matches!(
                        response.status(),
                        http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN
                    ) =>
                {
                    (
                        SinkFailure::Unauthorized,
                        format!(
                            "the webhook refused the sink's token (HTTP {}): fix the token Secret",
                            response.status().as_u16()
                        ),
                    )
                }
                Ok(response) => (
                    SinkFailure::Rejected,
                    format!("the webhook answered HTTP {}", response.status().as_u16()),
                ),
                Err(e) => (
                    SinkFailure::Unreachable,
                    format!("the webhook is unreachable: {e}"),
                ),
            },
        };
        if health.down(failure.0) {
            tracing::warn!(%url, reason = %failure.1, "audit webhook sink failing; records stay buffered");
        }
        pace.back_off().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_a_record_never_rides_in_a_request() {
        let key = crate::AuditKey::new(&[1; 32]).expect("key");
        let mut chain = crate::Chain::new(key, None);
        let mut record = || {
            use crate::event::*;
            let id = |s: &str| OpaqueId::new(s).expect("id");
            let event = AuditEvent {
                tenant: id("mercy"),
                actor: Actor {
                    user: None,
                    role: None,
                    auth: AuthMethod::None,
                },
                action: Action::Checkpoint,
                outcome: Outcome::success(),
                place: Place {
                    node: id("node-1"),
                    room: None,
                    client_ip: None,
                    media_path: None,
                    break_glass: None,
                },
            };
            chain.append(event, jiff::Timestamp::now()).expect("seal").1
        };
        let (a, b) = (record(), record());
        let cut = a[..a.len() / 2].to_string();
        let lines = vec![(10, a.clone()), (20, cut.clone()), (30, b)];
        assert_eq!(sendable(&lines).expect("the first goes").len(), 1);
        assert_eq!(sendable(&lines[1..]), Err((20, cut.as_str())));
        assert_eq!(sendable(&lines[2..]).expect("the rest go").len(), 1);
    }

    #[test]
    fn a_batch_is_a_json_array_of_the_records() {
        let body = batch_body([r#"{"seq":1}"#, r#"{"seq":2}"#]);
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(parsed[1]["seq"], 2);
    }
}
