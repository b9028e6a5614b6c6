//! The visits API for scheduling systems (EHRs), on the tenant's endpoint beside the web
//! client: book a visit, read its state, cancel it, reissue its links. The wire contract is
//! `bedside_crds::visit::api`, described for integrators by the OpenAPI document served at
//! `/api/v1/openapi.json` (committed as `media-node/api/visits-v1.openapi.json`).
//!
//! Every call names its caller with a credential from the tenant's `<tenant>-api` Secret
//! ([`credentials`]); each credential has its own rate, wrong credentials are rate-limited per
//! address, and every call that presents a credential is audited (who, which visit, the
//! outcome; never the links). The handlers are a thin shell over the pure booking in
//! `bedside_crds::visit`.

pub mod credentials;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bedside_audit::delivery::{Auditor, Who};
use bedside_audit::event::{Action, ActorRole, AuthMethod};
use bedside_crds::leases::VisitChange;
use bedside_crds::visit::api::{Booking, BookingBody, CancelBody, ErrorBody, VisitStatus, read};
use bedside_crds::visit::{self, VisitError, VisitPolicy};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use jiff::Timestamp;
use prometheus::{IntCounterVec, Opts, Registry};

use self::credentials::Credentials;
use crate::error::NodeError;
use crate::placement::leases::Placement;
use crate::sfu::SfuHandle;

/// The OpenAPI document, as committed (a test checks it is a valid OpenAPI 3.1 document and
/// that the API's answers match it).
pub const OPENAPI: &str = include_str!("../../api/visits-v1.openapi.json");
/// Bookings are small; anything bigger is not one.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Calls with a wrong credential, per client address: enough for a misconfigured integration
/// to show up in the audit trail, too few to try credentials.
const WRONG_CREDENTIALS_PER_MINUTE: u32 = 10;

/// What the API needs from the node.
#[allow(missing_debug_implementations)] // holds the join key
pub struct ApiSetup {
    pub tenant: String,
    /// The tenant's join keys: visits are signed with the current one.
    pub keys: std::sync::Arc<crate::keys::JoinKeys>,
    pub max_duration: Duration,
    pub max_participants: u32,
    pub credentials_dir: std::path::PathBuf,
    pub requests_per_second: u32,
    pub audit: Arc<Auditor>,
    pub placement: Option<Arc<Placement>>,
    pub sfu: SfuHandle,
}

struct ApiState {
    setup: ApiSetup,
    credentials: Credentials,
    per_credential: DefaultKeyedRateLimiter<String>,
    wrong_credentials: DefaultKeyedRateLimiter<IpAddr>,
    calls: IntCounterVec,
    /// Calls so far: every [`FORGET_EVERY`] the limiters forget addresses and credentials
    /// whose limits have recovered, so their memory stays bounded by recent callers.
    seen: std::sync::atomic::AtomicU64,
}

const FORGET_EVERY: u64 = 4096;

/// The API's routes, to merge into the signaling server's.
pub fn router(setup: ApiSetup, registry: &Registry) -> Result<Router, NodeError> {
    let calls = IntCounterVec::new(
        Opts::new(
            "bedside_api_calls_total",
            "Calls to the visits API by call and outcome (ok, invalid, unauthenticated, rate_limited, unavailable, error)",
        )
        .const_label("tenant", &setup.tenant),
        &["call", "outcome"],
    )?;
    registry.register(Box::new(calls.clone()))?;
    let rate = NonZeroU32::new(setup.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let wrong = NonZeroU32::new(WRONG_CREDENTIALS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
    let credentials = Credentials::new(setup.credentials_dir.clone());
    tracing::info!(
        credentials = credentials.count(Instant::now()),
        dir = %setup.credentials_dir.display(),
        "visits API served at /api/v1/visits"
    );
    let state = Arc::new(ApiState {
        setup,
        credentials,
        per_credential: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate)),
        wrong_credentials: DefaultKeyedRateLimiter::keyed(Quota::per_minute(wrong)),
        calls,
        seen: std::sync::atomic::AtomicU64::new(0),
    });
    Ok(Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/visits", post(create))
        .route("/api/v1/visits/{id}", get(status))
        .route("/api/v1/visits/{id}/cancel", post(cancel))
        .route("/api/v1/visits/{id}/reissue", post(reissue))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state))
}

/// A refusal or failure: its status, and the body every error has.
struct Refused {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<Duration>,
}

impl Refused {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message, None),
            retry_after: None,
        }
    }

    fn invalid(body: ErrorBody) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body,
            retry_after: None,
        }
    }

    fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "invalid",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "error",
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = json(self.status, &self.body);
        if let Some(wait) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bedside visits\""),
            );
        }
        response
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

fn scheduler(name: &str) -> Who {
    Who {
        user: Some(name.to_string()),
        role: Some(ActorRole::Scheduler),
        auth: AuthMethod::ApiCredential,
    }
}

impl ApiState {
    /// The caller's credential name; wrong credentials are audited until the address has
    /// tried too many, then only counted.
    fn authenticate(&self, headers: &HeaderMap, client: IpAddr) -> Result<String, Refused> {
        let seen = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if seen % FORGET_EVERY == FORGET_EVERY - 1 {
            self.wrong_credentials.retain_recent();
            self.per_credential.retain_recent();
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let name = presented.and_then(|p| self.credentials.check(p, Instant::now()));
        let Some(name) = name else {
            if let Err(not_until) = self.wrong_credentials.check_key(&client) {
                let mut refused = Refused::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "too many calls with a wrong credential from this address; wait and check the credential",
                );
                refused.retry_after = Some(not_until.wait_time_from(DefaultClock::default().now()));
                return Err(refused);
            }
            let reason = if presented.is_some() {
                "wrong-credential"
            } else {
                "no-credential"
            };
            self.setup.audit.record(
                &Who::UNAUTHENTICATED,
                Action::ApiRefused,
                Some(reason),
                None,
                Some(client),
            );
            return Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send Authorization: Bearer <credential>, a credential from the tenant's <tenant>-api Secret",
            ));
        };
        if let Err(not_until) = self.per_credential.check_key(&name) {
            let mut refused = Refused::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!(
                    "this credential may make {} calls per second; retry after the time in Retry-After",
                    self.setup.requests_per_second
                ),
            );
            refused.retry_after = Some(not_until.wait_time_from(DefaultClock::default().now()));
            return Err(refused);
        }
        Ok(name)
    }

    /// One call: the caller authenticated, then `work` (which says which visit it was about),
    /// the call counted and, when the caller is known, its record sealed.
    async fn answer<Fut>(
        &self,
        (call, action): (&'static str, Action),
        headers: &HeaderMap,
        client: IpAddr,
        work: impl FnOnce() -> Fut,
    ) -> Response
    where
        Fut: Future<Output = (Option<String>, Result<Response, Refused>)>,
    {
        let (caller, visit, result) = match self.authenticate(headers, client) {
            Ok(name) => {
                let (visit, result) = work().await;
                (Some(name), visit, result)
            }
            Err(refused) => (None, None, Err(refused)),
        };
        let outcome = result.as_ref().map_or_else(Refused::outcome, |_| "ok");
        self.calls.with_label_values(&[call, outcome]).inc();
        if let Some(name) = caller {
            let refusal = result.as_ref().err().map(|r| r.body.error.code.as_str());
            self.setup.audit.record(
                &scheduler(&name),
                action,
                refusal,
                visit.as_deref(),
                Some(client),
            );
        }
        result.unwrap_or_else(IntoResponse::into_response)
    }

    /// Where the links point: the web client on the host the caller reached (the tenant's
    /// endpoint, where the API is served too).
    fn base_url(headers: &HeaderMap) -> Result<String, Refused> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    })
            })
            .ok_or_else(|| {
                Refused::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "the Host header must name the tenant's endpoint; the links point there",
                )
            })?;
        Ok(format!("https://{host}"))
    }

    /// A booking body read, with the policy it is checked against.
    fn booking(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<(Booking, VisitPolicy), Refused> {
        let booking = read::<BookingBody>(body)
            .map_err(Refused::invalid)?
            .booking(now);
        let policy = VisitPolicy {
            tenant: self.setup.tenant.clone(),
            base_url: Self::base_url(headers)?,
            max_duration: self.setup.max_duration,
            max_participants: self.setup.max_participants,
            opens_before: booking.opens_before,
            grace: booking.grace,
        };
        Ok((booking, policy))
    }

    fn book(&self, headers: &HeaderMap, body: &[u8]) -> Result<visit::IssuedVisit, Refused> {
        let now = Timestamp::now();
        let (booking, policy) = self.booking(headers, body, now)?;
        let id = visit::new_visit_id().map_err(refused)?;
        let key = self.setup.keys.current();
        visit::book(&booking.request, &policy, &key, &id, now).map_err(refused)
    }

    /// New links for visit `id`, the older ones refused on every pod from now on.
    async fn reissue(
        &self,
        id: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<visit::IssuedVisit, Refused> {
        checked_id(id)?;
        let now = Timestamp::now();
        let (booking, policy) = self.booking(headers, body, now)?;
        let key = &self.setup.keys.current();
        // Checked before anything is written: a bad body leaves the current links working.
        let trial = visit::issue(&booking.request, &policy, key, (id, 1), now).map_err(refused)?;
        let record = self
            .placement()?
            .change_visit(VisitChange::Reissue, id, trial.window.closes)
            .await
            .map_err(not_stored)?
            .unwrap_or_default();
        visit::issue(&booking.request, &policy, key, (id, record.generation), now).map_err(refused)
    }

    fn placement(&self) -> Result<&Placement, Refused> {
        self.setup.placement.as_deref().ok_or_else(|| {
            Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-available",
                "this media node runs alone: cancelling or reissuing a visit needs the tenant's pods on Kubernetes, which share them",
            )
        })
    }

    async fn status_of(&self, id: &str) -> VisitStatus {
        let (cancelled, in_progress) = match &self.setup.placement {
            Some(placement) => (
                placement.visit(id).is_some_and(|v| v.cancelled),
                placement.held(id),
            ),
            None => {
                let rooms = self.setup.sfu.rooms().await.unwrap_or_default();
                (false, rooms.iter().any(|r| r == id))
            }
        };
        VisitStatus {
            id: id.to_string(),
            cancelled,
            in_progress,
        }
    }
}

async fn openapi() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        OPENAPI,
    )
        .into_response()
}

/// `POST /api/v1/visits[?format=fhir]`
async fn create(
    State(api): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fhir = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "format=fhir"));
    let work = async || {
        let booked = api.book(&headers, &body);
        let id = booked.as_ref().ok().map(|v| v.id.clone());
        let result = booked.map(|visit| {
            let mut response = if fhir {
                json(StatusCode::CREATED, &visit::fhir::appointments(&visit))
            } else {
                json(StatusCode::CREATED, &visit)
            };
            if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/visits/{}", visit.id)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        });
        (id, result)
    };
    api.answer(("create", Action::VisitBooked), &headers, peer.ip(), work)
        .await
}

/// `GET /api/v1/visits/{id}`
async fn status(
    State(api): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let work = async || match checked_id(&id) {
        Ok(()) => (
            Some(id.clone()),
            Ok(json(StatusCode::OK, &api.status_of(&id).await)),
        ),
        Err(refused) => (None, Err(refused)),
    };
    api.answer(("status", Action::VisitRead), &headers, peer.ip(), work)
        .await
}

/// `POST /api/v1/visits/{id}/cancel`
async fn cancel(
    State(api): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let work = async || {
        let result = cancel_visit(&api, &id, &body).await;
        (checked_id(&id).is_ok().then(|| id.clone()), result)
    };
    api.answer(
        ("cancel", Action::VisitCancelled),
        &headers,
        peer.ip(),
        work,
    )
    .await
}

async fn cancel_visit(api: &ApiState, id: &str, body: &[u8]) -> Result<Response, Refused> {
    checked_id(id)?;
    let until = read::<CancelBody>(body).map_err(Refused::invalid)?.until;
    if until < Timestamp::now() {
        return Err(Refused::invalid(ErrorBody::new(
            "invalid",
            "is in the past: the visit's links are refused already",
            Some("until".into()),
        )));
    }
    api.placement()?
        .change_visit(VisitChange::Cancel, id, until)
        .await
        .map_err(not_stored)?;
    let mut status = api.status_of(id).await;
    status.cancelled = true;
    Ok(json(StatusCode::OK, &status))
}

/// `POST /api/v1/visits/{id}/reissue`
async fn reissue(
    State(api): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let work = async || {
        let result = api
            .reissue(&id, &headers, &body)
            .await
            .map(|visit| json(StatusCode::OK, &visit));
        (checked_id(&id).is_ok().then(|| id.clone()), result)
    };
    api.answer(
        ("reissue", Action::VisitReissued),
        &headers,
        peer.ip(),
        work,
    )
    .await
}

/// A booking the checks refused, or links that could not be signed.
fn refused(e: VisitError) -> Refused {
    match e {
        VisitError::Invalid { .. } => Refused::invalid(ErrorBody::from(&e)),
        VisitError::Key(_) => Refused::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the visit's links could not be signed",
        ),
    }
}

/// A visit lease that could not be written (a cancelled visit cannot be reissued: invalid).
fn not_stored(e: NodeError) -> Refused {
    if let NodeError::Visit(e) = e {
        return refused(e);
    }
    tracing::warn!(error = %e, "visits API: a visit's state could not be stored");
    Refused::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-available",
        "the visit's state could not be stored right now; retry",
    )
}

fn checked_id(id: &str) -> Result<(), Refused> {
    if visit::is_visit_id(id) {
        Ok(())
    } else {
        Err(Refused::invalid(ErrorBody::new(
            "invalid",
            "is not a visit id as a booking returned it (visit-...)",
            Some("id".into()),
        )))
    }
}
