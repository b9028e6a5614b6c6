//! The join contract: what a scheduling system (or the dev default, or a clinic's command)
//! hands a clinician or a patient, and what the media node checks. One home for the token, the
//! passcode and the link, shared by the node, the tools that issue links and the tests.
//!
//! Join tokens (45 CFR 164.312(a)(2)(i) unique user identification, (d) authentication).
//!
//! A join token is a JWT signed HS256 with the tenant's join-token key (the Secret the
//! operator generates once per tenant; tenants never share keys). It names a pseudonymous
//! user (`sub`), the tenant (`aud`), one room and a role, and expires within a day. The node
//! verifies it on every join; a token for another tenant or room, an expired or forged one,
//! or one that carries what looks like a name or an address instead of an opaque id is refused.
//!
//! Keys rotate: a token names its key (`kid`, [`key_id`]: derived from the key, so there is
//! nothing to configure), and a node verifies against the current key and the previous one,
//! so links issued before a rotation keep working through their visit.
//!
//! The meeting passcode ([`passcode`]) is derived from the same key and the room, so the
//! scheduling system computes it too and gives it to the patient out of band (a text message,
//! the appointment letter): a leaked link alone does not get anyone in, and the node keeps no
//! passcode state. The link ([`link`]) carries the room in its query and the token (and, for
//! the dev default, the passcode) in its fragment, which browsers never send to a server.

use aws_lc_rs::hmac;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// A join token may not be valid for longer than this: a link forwarded days later is dead.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;
/// A visit's link works from a little before its start to a little after its end: at most a
/// day-long visit plus [`MAX_OPENS_BEFORE_SECS`] and [`MAX_GRACE_SECS`].
pub const MAX_VISIT_WINDOW_SECS: u64 =
    MAX_TOKEN_LIFETIME_SECS + MAX_OPENS_BEFORE_SECS + MAX_GRACE_SECS;
/// The earliest a visit's link may open before its start.
pub const MAX_OPENS_BEFORE_SECS: u64 = 3600;
/// The longest a visit's link may keep working after its scheduled end.
pub const MAX_GRACE_SECS: u64 = 3600;
/// Clock skew tolerated between the token issuer and the node.
pub const LEEWAY_SECS: u64 = 30;
/// The shortest key accepted: HS256 wants at least 256 bits.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Admits from the waiting room, locks, mutes, expels, ends the meeting.
    Host,
    Participant,
    /// Receives only.
    Observer,
}

/// The claims a join token carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct JoinClaims {
    /// Pseudonymous user id: opaque, never a name or an email address.
    pub sub: String,
    /// The tenant (HealthcareTenant name) the token is for.
    pub aud: String,
    pub room: String,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before: a visit's link opens here (seconds since the epoch); absent for ad-hoc links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The visit's scheduled start, so the landing page can say when the appointment is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// Which issue of the visit's links this is: a reissue refuses the older ones. Absent: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// An emergency link: the `BreakGlass` object that grants it. The node lets it in only
    /// while that grant is active (`crate::break_glass`), past the waiting room and passcode.
    #[serde(
        default,
        rename = "breakGlass",
        skip_serializing_if = "Option::is_none"
    )]
    pub break_glass: Option<String>,
}

/// What a verified token lets its bearer do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub user: String,
    pub room: String,
    pub role: Role,
    pub expires_at: u64,
    /// The issue of the visit's links this one belongs to (0: the first, or not a visit's).
    pub generation: u32,
    /// The key that signed the token ([`key_id`]): the room's passcode derives from it.
    pub key_id: String,
    /// The `BreakGlass` object an emergency link names.
    pub break_glass: Option<String>,
}

/// Why a token was refused, in words for the participant's screen and the audit trail.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the join key is {0} bytes; at least 32 are needed (the operator generates 32)")]
    KeyTooShort(usize),
    #[error(
        "this visit has ended and its link no longer works; if you still need to be seen, ask the clinic for a new link"
    )]
    Expired,
    #[error(
        "this visit has not opened yet: its link works from {} (a little before the appointment); please come back then",
        utc(*opens_at)
    )]
    NotOpenYet { opens_at: u64 },
    #[error("the join link is not valid for this clinic")]
    WrongTenant,
    #[error("the join link is for another meeting")]
    WrongRoom,
    #[error("the join link is not valid (its signature does not match)")]
    Forged,
    #[error(
        "the join link is valid for longer than a day (or its visit's window is longer than {MAX_VISIT_WINDOW_SECS} seconds); links must expire soon after their visit"
    )]
    LivesTooLong,
    #[error(
        "the join link's user id must be an opaque id (letters, digits, '.', '_', '-', at most 64, like patient.8c1f2a or u-7f3a9c), not a name (jane.doe) or address"
    )]
    NotPseudonymous,
    #[error("the join link is malformed: {0}")]
    Malformed(String),
}

/// A time for people: `2026-12-03 14:45 UTC`.
pub fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("{secs} seconds after 1970"))
}

/// The id of a join key, as tokens name it in their `kid` header: 12 hex digits of a
/// domain-separated SHA-256 of the key (it reveals nothing of a 256-bit random key).
pub fn key_id(key: &[u8]) -> String {
    let mut input = b"bedside-join-key-id\0".to_vec();
    input.extend_from_slice(key);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verifies join tokens for one tenant, against its current key and, during a rotation, the
/// previous one.
pub struct TokenVerifier {
    tenant: String,
    /// (key id, key), the current first.
    keys: Vec<(String, DecodingKey)>,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TokenVerifier")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// FHIR resource types a subject may start with: `<resource>.<id>` is how bedside names the
/// people of a visit (`patient.8c1f2a`), from the EHR's references.
const SUBJECT_RESOURCES: &[&str] = &[
    "patient",
    "practitioner",
    "practitionerrole",
    "relatedperson",
    "person",
    "device",
];

/// What bedside takes as pseudonymous: an opaque id of letters, digits, '.', '_' and '-' (at
/// most 64), and not in the shapes names take. bedside cannot prove an id is not a name; it
/// refuses addresses and spaces (by the charset) and `first.last` or `first_last` (two or more
/// words of letters only, joined by '.' or '_'), also after a FHIR resource type
/// (`patient.jane.doe`). An id with a digit, a single word or a `-`-joined handle passes; so
/// does `patient.<opaque id>`.
pub fn is_pseudonymous(id: &str) -> bool {
    let charset = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    charset && !looks_like_a_name(id)
}

fn looks_like_a_name(id: &str) -> bool {
    let mut words: Vec<&str> = id.split(['.', '_']).collect();
    if words.len() > 1 && SUBJECT_RESOURCES.contains(&words[0].to_ascii_lowercase().as_str()) {
        words.remove(0);
    }
    words.len() >= 2
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphabetic()))
}

impl TokenVerifier {
    pub fn new(tenant: impl Into<String>, key: &[u8]) -> Result<Self, TokenError> {
        Self::with_keys(tenant, &[key])
    }

    /// A verifier for tokens signed with any of `keys` (the current first, then the previous).
    pub fn with_keys(tenant: impl Into<String>, keys: &[&[u8]]) -> Result<Self, TokenError> {
        if let Some(short) = keys.iter().find(|k| k.len() < MIN_KEY_BYTES) {
            return Err(TokenError::KeyTooShort(short.len()));
        }
        if keys.is_empty() {
            return Err(TokenError::KeyTooShort(0));
        }
        let tenant = tenant.into();
        // HS256 only: a token may not pick its own algorithm (no `none`, no key confusion).
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[tenant.as_str()]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            tenant,
            keys: keys
                .iter()
                .map(|k| (key_id(k), DecodingKey::from_secret(k)))
                .collect(),
            validation,
        })
    }

    /// Whether a token names a key this verifier does not hold (a key rotated in since it
    /// was made: the caller may read its keys again).
    pub fn names_an_unknown_key(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .is_some_and(|kid| !self.keys.iter().any(|(id, _)| *id == kid))
    }

    /// Decodes `token` with the key its `kid` names (each key in turn for a token without
    /// one, issued before keys had ids).
    fn decode(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<(JoinClaims, String), TokenError> {
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Malformed(format!("{:?}", e.kind())))?
            .kid;
        let candidates = self
            .keys
            .iter()
            .filter(|(id, _)| kid.as_ref().is_none_or(|kid| kid == id));
        let mut refusal = TokenError::Forged;
        for (id, key) in candidates {
            match jsonwebtoken::decode::<JoinClaims>(token, key, validation) {
                Ok(data) => return Ok((data.claims, id.clone())),
                Err(e) => {
                    refusal = match e.kind() {
                        ErrorKind::ExpiredSignature => TokenError::Expired,
                        ErrorKind::InvalidAudience => TokenError::WrongTenant,
                        ErrorKind::InvalidSignature => TokenError::Forged,
                        other => TokenError::Malformed(format!("{other:?}")),
                    };
                    if refusal != TokenError::Forged {
                        break;
                    }
                }
            }
        }
        Err(refusal)
    }

    /// Verifies `token` for a join to `room` at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, room: &str, now: u64) -> Result<Grant, TokenError> {
        let (claims, key_id) = self.decode(token, &self.validation)?;
        // jsonwebtoken checks expiry against the system clock; check against `now` too, so
        // the caller's clock (and tests) decide.
        if claims.exp + LEEWAY_SECS < now {
            return Err(TokenError::Expired);
        }
        match claims.nbf {
            // A visit's link: its window is bounded, wherever in the future it lies.
            Some(nbf) if claims.exp < nbf || claims.exp - nbf > MAX_VISIT_WINDOW_SECS => {
                return Err(TokenError::LivesTooLong);
            }
            Some(nbf) if now + LEEWAY_SECS < nbf => {
                return Err(TokenError::NotOpenYet { opens_at: nbf });
            }
            Some(_) => {}
            None if claims.exp > now + MAX_TOKEN_LIFETIME_SECS + LEEWAY_SECS => {
                return Err(TokenError::LivesTooLong);
            }
            None => {}
        }
        if claims.aud != self.tenant {
            return Err(TokenError::WrongTenant);
        }
        if claims.room != room {
            return Err(TokenError::WrongRoom);
        }
        if !is_pseudonymous(&claims.sub) {
            return Err(TokenError::NotPseudonymous);
        }
        Ok(Grant {
            user: claims.sub,
            room: claims.room,
            role: claims.role,
            expires_at: claims.exp,
            generation: claims.generation.unwrap_or(0),
            key_id,
            break_glass: claims.break_glass,
        })
    }
}

impl TokenVerifier {
    /// The visit (room) a token of this tenant belongs to and when its window closes, whether
    /// or not it is open now: for cancelling a visit by one of its links.
    pub fn visit_of(&self, token: &str) -> Result<(String, u64), TokenError> {
        let mut validation = self.validation.clone();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let (claims, _) = self.decode(token, &validation)?;
        Ok((claims.room, claims.exp))
    }
}

/// Signs a join token: what a scheduling system does with the tenant key, and what the dev
/// default does to print a link. The node itself only verifies.
pub fn issue(claims: &JoinClaims, key: &[u8]) -> Result<String, TokenError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(TokenError::KeyTooShort(key.len()));
    }
    // A link the node would refuse is refused here, before anyone is sent it.
    if !is_pseudonymous(&claims.sub) {
        return Err(TokenError::NotPseudonymous);
    }
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some(key_id(key));
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .map_err(|e| TokenError::Malformed(e.to_string()))
}

/// How many digits a meeting passcode has.
pub const PASSCODE_DIGITS: usize = 8;

/// The passcode of `room` under the tenant's join key: the first [`PASSCODE_DIGITS`] decimal
/// digits of HMAC-SHA-256(key, "bedside-passcode:" + room).
pub fn passcode(join_key: &[u8], room: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, join_key);
    let tag = hmac::sign(&key, format!("bedside-passcode:{room}").as_bytes());
    let mut n = u64::from_be_bytes(tag.as_ref()[..8].try_into().unwrap_or_default());
    let mut digits = String::with_capacity(PASSCODE_DIGITS);
    for _ in 0..PASSCODE_DIGITS {
        digits.push(char::from(b'0' + (n % 10) as u8));
        n /= 10;
    }
    digits
}

/// Whether `given` is the passcode, in time that does not depend on where they differ.
/// Spaces and dashes people type between digit groups are ignored.
pub fn passcode_matches(expected: &str, given: &str) -> bool {
    let given: String = given.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    expected.len() == given.len()
        && aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), given.as_bytes())
            .is_ok()
}

/// A join link for the web client served at `base` (`https://meet.clinic.example`).
/// The web client's address for a tenant's signaling endpoint (`status.endpoint`):
/// `wss://host:port` becomes `https://host:port`.
pub fn web_client_url(endpoint: &str) -> String {
    let rest = endpoint
        .strip_prefix("wss://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("https://{authority}")
}

pub fn link(base: &str, room: &str, token: &str, passcode: Option<&str>) -> String {
    let mut url = format!("{}/?room={room}#token={token}", base.trim_end_matches('/'));
    if let Some(passcode) = passcode {
        url.push_str("&passcode=");
        url.push_str(passcode);
    }
    url
}

/// The room and token of a join link made by [`link`] (its passcode, if any, is not needed).
pub fn parse_link(url: &str) -> Option<(String, String)> {
    let (before, fragment) = url.split_once('#')?;
    let room = before
        .split_once('?')?
        .1
        .split('&')
        .find_map(|pair| pair.strip_prefix("room="))?;
    let token = fragment
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    (!room.is_empty() && !token.is_empty()).then(|| (room.to_string(), token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    #[test]
    fn a_link_gives_back_its_room_and_token() {
        let url = link(
            "https://meet.example/",
            "visit-1",
            "a.b.c",
            Some("12345678"),
        );
        assert_eq!(
            parse_link(&url),
            Some(("visit-1".to_string(), "a.b.c".to_string()))
        );
        assert_eq!(
            parse_link(&link("https://meet.example", "visit-2", "t", None)),
            Some(("visit-2".to_string(), "t".to_string()))
        );
        assert_eq!(parse_link("https://meet.example/?room=visit-1"), None);
        assert_eq!(parse_link("not a link"), None);
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    }

    /// A fresh random key per test: no key material lives in the repository.
    fn key() -> Vec<u8> {
        let mut key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut key).expect("randomness");
        key
    }

    #[test]
    fn the_web_client_is_where_signaling_is() {
        assert_eq!(
            web_client_url("wss://meet.mercy.example"),
            "https://meet.mercy.example"
        );
        assert_eq!(
            web_client_url("wss://10.0.0.7:30443/"),
            "https://10.0.0.7:30443"
        );
    }

    fn claims(tenant: &str, room: &str, sub: &str, exp: u64) -> JoinClaims {
        JoinClaims {
            sub: sub.into(),
            aud: tenant.into(),
            room: room.into(),
            role: Role::Participant,
            exp,
            nbf: None,
            start: None,
            generation: None,
            break_glass: None,
        }
    }

    fn sign(claims: &JoinClaims, key: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(key),
        )
        .expect("sign")
    }

    #[test]
    fn a_valid_token_grants_its_role_in_its_room() {
        let key = key();
        let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
        let mut c = claims("mercy-clinic", "visit-42", "u-7f3a", now() + 600);
        c.role = Role::Host;
        let grant = verifier
            .verify(&sign(&c, &key), "visit-42", now())
            .expect("valid");
        assert_eq!((grant.user.as_str(), grant.role), ("u-7f3a", Role::Host));
    }

    #[test]
    fn during_a_rotation_links_of_the_current_and_the_previous_key_work_and_no_others() {
        let (old, new, stranger) = (key(), key(), key());
        let verifier = TokenVerifier::with_keys("mercy-clinic", &[&new, &old]).expect("verifier");
        let c = claims("mercy-clinic", "visit-42", "u-7f3a", now() + 600);
        let by_new = issue(&c, &new).expect("issued");
        let by_old = issue(&c, &old).expect("issued");
        let grant = verifier
            .verify(&by_new, "visit-42", now())
            .expect("current key");
        assert_eq!(grant.key_id, key_id(&new));
        let grant = verifier
            .verify(&by_old, "visit-42", now())
            .expect("previous key");
        assert_eq!(
            grant.key_id,
            key_id(&old),
            "the passcode derives from the signer"
        );
        // A token from before key ids: tried against each key.
        let grant = verifier
            .verify(&sign(&c, &old), "visit-42", now())
            .expect("no kid");
        assert_eq!(grant.key_id, key_id(&old));
        // Another key, named or not, and a token that names a known key it was not signed with.
        let by_stranger = issue(&c, &stranger).expect("issued");
        assert!(verifier.names_an_unknown_key(&by_stranger));
        assert!(!verifier.names_an_unknown_key(&by_old));
        assert_eq!(
            verifier.verify(&by_stranger, "visit-42", now()),
            Err(TokenError::Forged)
        );
        assert_eq!(
            verifier.verify(&sign(&c, &stranger), "visit-42", now()),
            Err(TokenError::Forged)
        );
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key_id(&new));
        let posing =
            jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(&stranger)).expect("sign");
        assert_eq!(
            verifier.verify(&posing, "visit-42", now()),
            Err(TokenError::Forged)
        );
        // Once the previous key is retired, its links are refused.
        let retired = TokenVerifier::new("mercy-clinic", &new).expect("verifier");
        assert_eq!(
            retired.verify(&by_old, "visit-42", now()),
            Err(TokenError::Forged)
        );
        assert_ne!(key_id(&old), key_id(&new));
        assert_eq!(key_id(&old).len(), 12);
    }

    #[test]
    fn tokens_for_another_tenant_room_or_key_are_refused() {
        let key = key();
        let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
        let t = now();
        let other_tenant = sign(&claims("lakeside", "visit-42", "u-1", t + 600), &key);
        assert_eq!(
            verifier.verify(&other_tenant, "visit-42", t),
            Err(TokenError::WrongTenant)
        );
        let other_room = sign(&claims("mercy-clinic", "visit-41", "u-1", t + 600), &key);
        assert_eq!(
            verifier.verify(&other_room, "visit-42", t),
            Err(TokenError::WrongRoom)
        );
        let forged = sign(
            &claims("mercy-clinic", "visit-42", "u-1", t + 600),
            &self::key(),
        );
        assert_eq!(
            verifier.verify(&forged, "visit-42", t),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn expired_and_overlong_tokens_are_refused() {
        let key = key();
        let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
        let t = now();
        let expired = sign(&claims("mercy-clinic", "r", "u-1", t - 3600), &key);
        assert_eq!(verifier.verify(&expired, "r", t), Err(TokenError::Expired));
        let forever = sign(
            &claims("mercy-clinic", "r", "u-1", t + 30 * 24 * 3600),
            &key,
        );
        assert_eq!(
            verifier.verify(&forever, "r", t),
            Err(TokenError::LivesTooLong)
        );
    }

    #[test]
    fn a_link_names_its_visit_and_window_end_before_it_opens_and_after_it_closes() {
        let key = key();
        let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
        let t = now();
        let mut c = claims("mercy-clinic", "visit-7", "u-1", t + 7 * 24 * 3600);
        c.nbf = Some(t + 6 * 24 * 3600);
        assert_eq!(
            verifier.visit_of(&sign(&c, &key)),
            Ok(("visit-7".to_string(), t + 7 * 24 * 3600))
        );
        c.exp = t - 3600;
        c.nbf = Some(t - 7200);
        assert_eq!(
            verifier.visit_of(&sign(&c, &key)),
            Ok(("visit-7".to_string(), t - 3600))
        );
        assert_eq!(
            verifier.visit_of(&sign(&c, &[9u8; 32])),
            Err(TokenError::Forged)
        );
        c.aud = "another-clinic".into();
        assert_eq!(
            verifier.visit_of(&sign(&c, &key)),
            Err(TokenError::WrongTenant)
        );
    }

    #[test]
    fn a_visit_link_works_only_in_its_window_however_far_ahead_it_lies() {
        let key = key();
        let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
        let t = now();
        let next_week = t + 7 * 24 * 3600;
        let mut c = claims("mercy-clinic", "r", "u-1", next_week + 3600);
        c.nbf = Some(next_week - 900);
        let token = sign(&c, &key);
        let early = verifier.verify(&token, "r", t);
        assert_eq!(
            early,
            Err(TokenError::NotOpenYet {
                opens_at: next_week - 900
            })
        );
        assert!(
            early.expect_err("too early").to_string().contains(" UTC"),
            "the patient is told when it opens"
        );
        // Inside the window (the caller's clock decides; jsonwebtoken's own expiry check
        // passes because the token expires after today).
        assert!(verifier.verify(&token, "r", next_week).is_ok());
        // A window longer than a day-long visit plus its margins is refused.
        c.nbf = Some(c.exp - MAX_VISIT_WINDOW_SECS - 1);
        assert_eq!(
            verifier.verify(&sign(&c, &key), "r", next_week),
            Err(TokenError::LivesTooLong)
        );
    }

    #[test]
    fn a_name_or_email_as_user_id_is_refused() {
        let key = key();
        let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
        let t = now();
        for sub in [
            "jane.doe@example.org",
            "Jane Doe",
            "",
            "jane.doe",
            "Jane.Doe",
            "jane_doe",
            "mary.jane.watson",
            "j.doe",
            "patient.jane.doe",
        ] {
            let token = sign(&claims("mercy-clinic", "r", sub, t + 600), &key);
            assert_eq!(
                verifier.verify(&token, "r", t),
                Err(TokenError::NotPseudonymous),
                "{sub:?}"
            );
            // bedside's own issuer does not sign it either.
            let refused = issue(&claims("mercy-clinic", "r", sub, t + 600), &key);
            assert_eq!(refused, Err(TokenError::NotPseudonymous), "{sub:?}");
        }
        // Opaque ids pass: a resource and its id, handles, ids with digits.
        for sub in [
            "patient.8c1f2a",
            "practitioner.dr-7",
            "patient.abc",
            "u-7f3a9c",
            "u-guest",
            "clinician",
            "3f9a1c7e-2b4d-4e8f-9a6b-1c2d3e4f5a6b",
            "mrn.0042",
        ] {
            let token = sign(&claims("mercy-clinic", "r", sub, t + 600), &key);
            assert!(verifier.verify(&token, "r", t).is_ok(), "{sub:?}");
        }
    }

    #[test]
    fn unsigned_and_garbage_tokens_are_refused_without_panicking() {
        let key = key();
        let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
        // alg "none": header {"alg":"none"} with a valid-looking payload and no signature.
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1LTEiLCJhdWQiOiJtZXJjeS1jbGluaWMiLCJyb29tIjoiciIsInJvbGUiOiJob3N0IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
        for token in [none, "", "a.b.c", "not a token"] {
            assert!(
                matches!(
                    verifier.verify(token, "r", now()),
                    Err(TokenError::Malformed(_)) | Err(TokenError::Forged)
                ),
                "{token:?}"
            );
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            TokenVerifier::new("t", &[0u8; 16]).err(),
            Some(TokenError::KeyTooShort(16))
        );
    }

    #[test]
    fn the_passcode_is_eight_digits_per_room_and_key() {
        let a = passcode(&[1; 32], "visit-42");
        assert_eq!(a.len(), PASSCODE_DIGITS);
        assert!(a.bytes().all(|b| b.is_ascii_digit()), "{a}");
        assert_eq!(a, passcode(&[1; 32], "visit-42"), "stable");
        assert_ne!(a, passcode(&[1; 32], "visit-43"), "per room");
        assert_ne!(a, passcode(&[2; 32], "visit-42"), "per tenant key");
    }

    #[test]
    fn typed_separators_are_forgiven_and_anything_else_fails() {
        assert!(passcode_matches("12345678", "1234 5678"));
        assert!(passcode_matches("12345678", "1234-5678"));
        assert!(!passcode_matches("12345678", "12345679"));
        assert!(!passcode_matches("12345678", "1234567"));
        assert!(!passcode_matches("12345678", ""));
    }

    #[test]
    fn a_link_carries_the_room_in_its_query_and_the_secrets_in_its_fragment() {
        assert_eq!(
            link(
                "https://meet.example/",
                "visit-1",
                "t.o.k",
                Some("12345678")
            ),
            "https://meet.example/?room=visit-1#token=t.o.k&passcode=12345678"
        );
        assert_eq!(
            link("https://meet.example", "visit-1", "t.o.k", None),
            "https://meet.example/?room=visit-1#token=t.o.k"
        );
    }
}
