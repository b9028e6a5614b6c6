//! Credentials for the tenant's TURN relay (coturn with `use-auth-secret`: the "TURN REST API"
//! scheme of draft-uberti-behave-turn-rest). The username is `EXPIRY:ID`, the password
//! base64(HMAC-SHA1(secret, username)); coturn recomputes the password from its own copy of
//! the secret and refuses the username once EXPIRY has passed. Nothing is stored anywhere, and
//! a credential stops working when the join token that earned it does.

use std::path::PathBuf;
use std::sync::RwLock;

use base64::Engine as _;
use bedside_crds::node_config::RelaySettings;

use crate::error::NodeError;
use crate::protocol::IceServer;
use crate::reload::Reload;

/// The shortest shared secret accepted: the operator generates 32 random bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The relay's URLs and the secret shared with it, read again as the Secret is rotated.
#[derive(Debug)]
pub struct Relay {
    urls: Vec<String>,
    secret_file: PathBuf,
    secret: RwLock<Vec<u8>>,
}

impl Relay {
    pub fn load(settings: &RelaySettings) -> Result<Relay, NodeError> {
        let secret = read_secret(&settings.shared_secret_file)?;
        Ok(Relay {
            urls: settings.urls.clone(),
            secret_file: settings.shared_secret_file.clone(),
            secret: RwLock::new(secret),
        })
    }

    /// Reads the secret file again; a rotated secret applies to the next join.
    pub fn reload(&self) -> Result<Reload, NodeError> {
        let fresh = read_secret(&self.secret_file)?;
        let mut secret = self.secret.write().unwrap_or_else(|e| e.into_inner());
        if *secret == fresh {
            return Ok(Reload::Unchanged);
        }
        *secret = fresh;
        Ok(Reload::Replaced)
    }

    /// The relay as a browser's `RTCIceServer`, usable by `id` until `expires_at` (seconds
    /// since the epoch).
    pub fn ice_server(&self, expires_at: u64, id: &str) -> IceServer {
        let secret = self.secret.read().unwrap_or_else(|e| e.into_inner());
        let (username, credential) = credential(&secret, expires_at, id);
        IceServer {
            urls: self.urls.clone(),
            username,
            credential,
        }
    }
}

/// Reads the secret again every few seconds until shutdown.
pub async fn keep_fresh(
    relay: std::sync::Arc<Relay>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let outcome = |result| match result {
        Ok(Reload::Unchanged) => {}
        Ok(Reload::Replaced) => tracing::info!("the TURN relay's shared secret was rotated"),
        Err(e) => {
            tracing::warn!(error = %e, "the mounted TURN relay secret cannot be used; keeping the one held");
        }
    };
    crate::reload::every_interval(shutdown, || relay.reload(), outcome).await;
}

/// coturn's shared-secret credential. `id` is opaque (a participant id, never a name): coturn
/// writes usernames to its log.
pub fn credential(secret: &[u8], expires_at: u64, id: &str) -> (String, String) {
    let username = format!("{expires_at}:{id}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = aws_lc_rs::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, NodeError> {
    let text = std::fs::read(path).map_err(|source| NodeError::ReadFile {
        what: "the TURN relay's shared secret (network.relay.sharedSecretFile)",
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(NodeError::RelaySecret {
            path: path.to_owned(),
            bytes: secret.len(),
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn the_password_is_what_coturn_computes_from_the_shared_secret() {
        // Python: base64(hmac.new(SECRET, b"1700000000:p-7", sha1).digest())
        assert_eq!(
            credential(SECRET, 1_700_000_000, "p-7"),
            (
                "1700000000:p-7".to_string(),
                "jYZzwhpc6seu2M3NXcSu5H3Rxg0=".to_string()
            )
        );
    }

    #[test]
    fn a_short_secret_is_refused_and_a_rotated_one_applies_to_the_next_join() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "short\n").expect("write");
        let settings = RelaySettings {
            urls: vec!["turns:relay.test:443?transport=tcp".into()],
            shared_secret_file: file.clone(),
        };
        let err = Relay::load(&settings).expect_err("5 bytes are too few");
        assert!(err.to_string().contains("at least 32"), "{err}");

        std::fs::write(&file, [SECRET, b"\n"].concat()).expect("write");
        let relay = Relay::load(&settings).expect("a long enough secret");
        let before = relay.ice_server(1_700_000_000, "p-7");
        assert_eq!(before.urls, settings.urls);
        assert_eq!(before.credential, "jYZzwhpc6seu2M3NXcSu5H3Rxg0=");
        assert_eq!(relay.reload().expect("same file"), Reload::Unchanged);

        std::fs::write(&file, "another secret, also 32 bytes long or more").expect("write");
        assert_eq!(relay.reload().expect("rotated"), Reload::Replaced);
        assert_ne!(
            relay.ice_server(1_700_000_000, "p-7").credential,
            before.credential
        );
    }
}
