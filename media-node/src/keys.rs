//! The tenant's join keys, as the node holds them while it runs: the current key (visit links
//! the node issues, the address a pod vouches for when it carries a join, passcodes of new
//! visits) and, during a rotation, the previous one, whose links keep working through their
//! visits. Both come from the mounted keys Secret (`join-token.key` and, beside it,
//! `join-token.previous.key`), read again every few seconds ([`crate::reload`]) and whenever
//! a token names a key the node does not hold yet: a rotation reaches a running node without
//! a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bedside_crds::join::{Grant, TokenError, TokenVerifier, key_id};

use bedside_audit::delivery::{Auditor, Who};
use bedside_audit::event::Action;

use crate::error::NodeError;
use crate::reload::Reload;

/// The previous key's file name, beside the current key's.
pub const PREVIOUS_KEY_FILE: &str = "join-token.previous.key";

/// Where the keys are mounted.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub current: PathBuf,
    pub previous: PathBuf,
}

impl KeyFiles {
    /// The current key's file and the previous key's beside it.
    pub fn beside(current: PathBuf) -> Self {
        let previous = current.with_file_name(PREVIOUS_KEY_FILE);
        Self { current, previous }
    }

    pub(crate) fn read(&self) -> Result<(Vec<u8>, Option<Vec<u8>>), NodeError> {
        let current = crate::node::read("the join-token key", &self.current)?;
        // Absent outside a rotation.
        let previous = std::fs::read(&self.previous).ok();
        Ok((current, previous))
    }
}

pub struct JoinKeys {
    tenant: String,
    files: Option<KeyFiles>,
    state: RwLock<Keys>,
    /// Where a rotation taken up is recorded.
    audit: Option<Arc<Auditor>>,
}

#[derive(Clone)]
struct Keys {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
    verifier: Arc<TokenVerifier>,
}

impl std::fmt::Debug for JoinKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("JoinKeys")
            .field("tenant", &self.tenant)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Keys {
    fn new(tenant: &str, current: Vec<u8>, previous: Option<Vec<u8>>) -> Result<Self, NodeError> {
        let mut keys: Vec<&[u8]> = vec![&current];
        keys.extend(previous.as_deref());
        let verifier = Arc::new(TokenVerifier::with_keys(tenant, &keys)?);
        Ok(Self {
            current,
            previous,
            verifier,
        })
    }
}

impl JoinKeys {
    pub fn new(
        tenant: &str,
        current: Vec<u8>,
        previous: Option<Vec<u8>>,
        files: Option<KeyFiles>,
        audit: Option<Arc<Auditor>>,
    ) -> Result<Arc<Self>, NodeError> {
        Ok(Arc::new(Self {
            tenant: tenant.to_string(),
            files,
            state: RwLock::new(Keys::new(tenant, current, previous)?),
            audit,
        }))
    }

    fn keys(&self) -> Keys {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The key new links are signed with.
    pub fn current(&self) -> Vec<u8> {
        self.keys().current
    }

    /// Every key a token may be signed with, the current first.
    pub fn all(&self) -> Vec<Vec<u8>> {
        let keys = self.keys();
        std::iter::once(keys.current).chain(keys.previous).collect()
    }

    /// The key with id `id` (the one a verified token was signed with).
    pub fn by_id(&self, id: &str) -> Option<Vec<u8>> {
        self.all().into_iter().find(|k| key_id(k) == id)
    }

    /// Verifies a join token; a token naming a key not held yet makes the node read its keys
    /// again first (the rotation reached this token before this pod's mount was read).
    pub fn verify(&self, token: &str, room: &str, now: u64) -> Result<Grant, TokenError> {
        if self.keys().verifier.names_an_unknown_key(token) {
            let _ = self.reload();
        }
        self.keys().verifier.verify(token, room, now)
    }

    /// Holds `current` and `previous` from now on, if they differ from what is held.
    pub fn offer(&self, current: Vec<u8>, previous: Option<Vec<u8>>) -> Result<Reload, NodeError> {
        let held = self.keys();
        if held.current == current && held.previous == previous {
            return Ok(Reload::Unchanged);
        }
        let keys = Keys::new(&self.tenant, current, previous)?;
        let new_id = key_id(&keys.current);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = keys;
        if let Some(audit) = &self.audit {
            audit.record(
                &Who::NODE,
                Action::JoinKeyRotated,
                None,
                Some(&new_id),
                None,
            );
        }
        Ok(Reload::Replaced)
    }

    /// Reads the mounted keys again (nothing to do for generated keys).
    pub fn reload(&self) -> Result<Reload, NodeError> {
        match &self.files {
            Some(files) => {
                let (current, previous) = files.read()?;
                self.offer(current, previous)
            }
            None => Ok(Reload::Unchanged),
        }
    }

    /// The ids of the keys held, for the log (never the keys).
    pub fn ids(&self) -> Vec<String> {
        self.all().iter().map(|k| key_id(k)).collect()
    }
}

/// Reads the keys every [`RELOAD_INTERVAL`](crate::reload::RELOAD_INTERVAL) until `shutdown`.
pub async fn keep_fresh(keys: Arc<JoinKeys>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let outcome = |result| match result {
        Ok(Reload::Unchanged) => {}
        Ok(Reload::Replaced) => {
            tracing::info!(keys = ?keys.ids(), "join keys rotated: tokens signed with these keys are accepted");
        }
        Err(e) => {
            tracing::warn!(error = %e, "the mounted join keys cannot be used; keeping the ones held");
        }
    };
    crate::reload::every_interval(shutdown, || keys.reload(), outcome).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bedside_crds::join::{JoinClaims, Role, issue};

    fn key(byte: u8) -> Vec<u8> {
        vec![byte; 32]
    }

    fn token(key: &[u8]) -> String {
        let claims = JoinClaims {
            sub: "u-7".into(),
            aud: "mercy".into(),
            room: "r-1".into(),
            role: Role::Host,
            exp: now() + 600,
            nbf: None,
            start: None,
            generation: None,
            break_glass: None,
        };
        issue(&claims, key).expect("issued")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn a_rotation_on_the_mount_is_picked_up_by_the_first_token_of_the_new_key() {
        let dir = tempfile::tempdir().expect("dir");
        let files = KeyFiles::beside(dir.path().join("join-token.key"));
        std::fs::write(&files.current, key(1)).expect("key");
        let keys = JoinKeys::new("mercy", key(1), None, Some(files.clone()), None).expect("keys");
        // The rotation: the current key becomes the previous one, a new one is current.
        std::fs::write(&files.previous, key(1)).expect("previous");
        std::fs::write(&files.current, key(2)).expect("current");
        let grant = keys.verify(&token(&key(2)), "r-1", now()).expect("new key");
        assert_eq!(grant.key_id, key_id(&key(2)));
        keys.verify(&token(&key(1)), "r-1", now())
            .expect("the previous key's links still work");
        assert_eq!(keys.current(), key(2));
        assert_eq!(keys.by_id(&key_id(&key(1))), Some(key(1)));
        // The previous key retired.
        std::fs::remove_file(&files.previous).expect("retired");
        assert_eq!(keys.reload().expect("read"), Reload::Replaced);
        assert_eq!(
            keys.verify(&token(&key(1)), "r-1", now()),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn a_short_key_on_the_mount_leaves_the_held_keys_in_place() {
        let keys = JoinKeys::new("mercy", key(1), None, None, None).expect("keys");
        assert!(keys.offer(vec![3; 8], None).is_err());
        keys.verify(&token(&key(1)), "r-1", now())
            .expect("still held");
    }
}
