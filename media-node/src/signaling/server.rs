//! The HTTPS side of the node: the web client, `/healthz`, and the `/ws` signaling endpoint.

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::state::AppState;
use crate::limits::ConnectionRefusal;
use crate::protocol::MAX_MESSAGE_BYTES;

/// The WebSocket layer's read and write buffers per connection.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;
/// What may wait for a client that does not read before it is cut off.
const MAX_UNREAD_BYTES: usize = 1 << 20;

const INDEX_HTML: &str = include_str!("../../web/index.html");
/// The web client's scripts, by path: plain files, no build step (docs/media-node.md#the-web-client).
const SCRIPTS: [(&str, &str); 5] = [
    ("/i18n.js", include_str!("../../web/i18n.js")),
    ("/devices.js", include_str!("../../web/devices.js")),
    ("/check.js", include_str!("../../web/check.js")),
    ("/client.js", include_str!("../../web/client.js")),
    ("/e2e-worker.js", include_str!("../../web/e2e-worker.js")),
];

pub fn router(state: AppState) -> Router {
    let mut router = Router::new().route("/", get(index));
    for (path, body) in SCRIPTS {
        router = router.route(
            path,
            get(
                move || async move { hardened("text/javascript; charset=utf-8", body.to_string()) },
            ),
        );
    }
    router
        .route("/healthz", get(healthz))
        .route("/ws", get(websocket))
        .with_state(state)
}

/// Security headers for a page that handles a clinical visit: no caching, no framing, no
/// referrer (the URL carries the join token), scripts only from this origin.
fn hardened(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        ],
        body,
    )
        .into_response()
}

async fn index(State(state): State<AppState>) -> Response {
    let page = INDEX_HTML.replace("{{DISPLAY_NAME}}", &html_escape(&state.display_name));
    let mut response = hardened("text/html; charset=utf-8", page);
    *response.status_mut() = StatusCode::OK;
    response
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if *state.shutdown.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn websocket(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    // A join another pod of the tenant carried here: the client's address is the one it
    // vouched for, and the join stays on this pod.
    let vouched = state
        .keys
        .all()
        .iter()
        .find_map(|key| super::forward::forwarded_client(key, &headers));
    let client = match vouched {
        Some(ip) => super::session::Client {
            ip,
            forwarded: true,
        },
        None => super::session::Client {
            ip: peer.ip(),
            forwarded: false,
        },
    };
    let slot = match state.guards.connections.open(client.ip) {
        Ok(slot) => slot,
        Err(refusal) => return too_many_connections(&state, refusal),
    };
    state.stats.signaling_connections.set(count(&state));
    // One limit for every frame: nothing a client sends, joined or not, needs more (an offer
    // with simulcast is about 10 KiB), and the WebSocket layer never buffers beyond it. Small
    // read and write buffers (the library's default is 128 KiB each): thousands of idle
    // connections cost megabytes, not gigabytes; a client that does not read is cut off once
    // a megabyte waits for it (the node's offer in a full room is about 100 KiB).
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_write_buffer_size(MAX_UNREAD_BYTES)
        .on_upgrade(move |socket| async move {
            super::session::run(socket, state.clone(), client).await;
            drop(slot);
            state.stats.signaling_connections.set(count(&state));
        })
}

fn count(state: &AppState) -> i64 {
    i64::try_from(state.guards.connections.count()).unwrap_or(i64::MAX)
}

/// Refused before the WebSocket upgrade: a plain HTTP answer the client can act on.
fn too_many_connections(state: &AppState, refusal: ConnectionRefusal) -> Response {
    let (status, text) = match refusal {
        ConnectionRefusal::NetworkFull => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your network; close other visit tabs or try again shortly\n",
        ),
        ConnectionRefusal::NodeFull => (
            StatusCode::SERVICE_UNAVAILABLE,
            "this media node is full; try again shortly\n",
        ),
    };
    state.stats.refused(refusal.into());
    (status, [(header::RETRY_AFTER, "10")], text).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_cannot_inject_markup() {
        assert_eq!(
            html_escape("<script>\"x\"</script>"),
            "&lt;script&gt;&quot;x&quot;&lt;/script&gt;"
        );
    }

    /// A patient on a weak phone connection loads the whole client: under 200 KB, and nothing
    /// from anywhere but the node (no third-party request; the CSP would refuse one anyway).
    #[test]
    fn the_web_client_stays_under_200_kb_and_loads_nothing_from_elsewhere() {
        let total: usize =
            INDEX_HTML.len() + SCRIPTS.iter().map(|(_, body)| body.len()).sum::<usize>();
        assert!(total < 200 * 1024, "the web client weighs {total} bytes");
        for (name, body) in std::iter::once(("index.html", INDEX_HTML)).chain(SCRIPTS) {
            for scheme in ["http://", "https://", "//cdn", "src=\"http"] {
                assert!(!body.contains(scheme), "{name} names {scheme}");
            }
        }
    }
}
