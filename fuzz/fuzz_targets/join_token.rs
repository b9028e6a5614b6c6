//! Any join token a link can carry: a raw string, or claims of the fuzzer's choosing signed
//! with the tenant's key (so the checks past the signature are reached). What verifies is a
//! grant for this tenant and room, for a pseudonymous user, not expired. `exp`, `nbf` and
//! `start` in the fuzzed claims count seconds from now, so that the seed corpus never ages.
#![no_main]

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bedside_crds::join::{LEEWAY_SECS, TokenVerifier, is_pseudonymous, key_id};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];
const ROOM: &str = "visit-42";

fn signed(claims: &str, now: u64) -> String {
    let mut claims = claims.to_string();
    if let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str(&claims) {
        for field in ["exp", "nbf", "start"] {
            if let Some(offset) = object.get(field).and_then(serde_json::Value::as_i64) {
                object.insert(field.into(), now.saturating_add_signed(offset).into());
            }
        }
        claims = serde_json::Value::Object(object).to_string();
    }
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": key_id(&KEY)});
    let body = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &KEY), body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fuzz_target!(|input: (bool, &str)| {
    let (sign, text) = input;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let verifier = TokenVerifier::new("mercy-clinic", &KEY).expect("verifier");
    let token = if sign {
        signed(text, now)
    } else {
        text.to_string()
    };
    let _ = verifier.names_an_unknown_key(&token);
    if let Ok(grant) = verifier.verify(&token, ROOM, now) {
        assert_eq!(grant.room, ROOM);
        assert!(is_pseudonymous(&grant.user), "a grant for {:?}", grant.user);
        assert!(grant.expires_at + LEEWAY_SECS >= now);
    }
});
