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
        let batch = &lines[..];
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
        let failure = match client.request(request).await {
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
    fn a_batch_is_a_json_array_of_the_records() {
        let body = batch_body([r#"{"seq":1}"#, r#"{"seq":2}"#]);
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(parsed[1]["seq"], 2);
    }
}
