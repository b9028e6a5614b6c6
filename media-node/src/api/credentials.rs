//! Who may call the visits API: the credentials in a directory (the tenant's `<tenant>-api`
//! Secret, mounted: each key a file, the key's name the caller's name). Read again at most every
//! [`RELOAD_EVERY`], so rotating is editing the Secret: add the new credential, move the
//! scheduling system to it, remove the old one; both work in between, no pod restarts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How stale the node's view of the directory may be (the kubelet's own sync of a Secret
/// volume adds up to about a minute).
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// Shorter credentials are ignored (and logged): a guessable credential is no credential.
pub const MIN_CREDENTIAL_BYTES: usize = 32;

/// A credential as held in memory: its name and the SHA-256 of its value, so checks compare
/// equal-length digests in constant time.
#[derive(Clone)]
struct Known {
    name: String,
    digest: [u8; 32],
}

pub struct Credentials {
    dir: PathBuf,
    loaded: Mutex<(Option<Instant>, Vec<Known>)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("Credentials")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A caller's name as the audit trail can carry it (an opaque id: letters, digits, `-_.`).
fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The credentials in `dir`: regular files (or links to them) with a usable name, skipping
/// the Secret volume's own `..data` entries.
fn read_dir(dir: &Path) -> Vec<Known> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "the visits API's credentials directory cannot be read; every call is refused");
        return Vec::new();
    };
    let mut known = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let Ok(value) = std::fs::read(entry.path()) else {
            continue;
        };
        let value = value.trim_ascii();
        if !usable_name(&name) || value.len() < MIN_CREDENTIAL_BYTES {
            tracing::warn!(credential = %name.escape_default(), "a visits API credential is ignored: its name must be letters, digits, '-', '_', '.', and its value at least 32 bytes");
            continue;
        }
        known.push(Known {
            name,
            digest: digest(value),
        });
    }
    known.sort_by(|a, b| a.name.cmp(&b.name));
    known
}

impl Credentials {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            loaded: Mutex::new((None, Vec::new())),
        }
    }

    /// The name of the credential `presented` is, if it is one.
    pub fn check(&self, presented: &str, now: Instant) -> Option<String> {
        let known = self.current(now);
        let presented = digest(presented.as_bytes());
        let mut found = None;
        // Every credential is compared, so the time taken does not say which one matched.
        for k in &known {
            if aws_lc_rs::constant_time::verify_slices_are_equal(&k.digest, &presented).is_ok() {
                found = Some(k.name.clone());
            }
        }
        found
    }

    /// How many credentials are valid now (for the node's start-up log).
    pub fn count(&self, now: Instant) -> usize {
        self.current(now).len()
    }

    fn current(&self, now: Instant) -> Vec<Known> {
        let Ok(mut loaded) = self.loaded.lock() else {
            return Vec::new();
        };
        let stale = loaded
            .0
            .is_none_or(|at| now.saturating_duration_since(at) >= RELOAD_EVERY);
        if stale {
            *loaded = (Some(now), read_dir(&self.dir));
        }
        loaded.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EHR: &str = "ehr-credential-0123456789abcdef0123456789abcdef";
    const NEXT: &str = "next-credential-0123456789abcdef0123456789abcdef";

    #[test]
    fn a_rotation_has_both_credentials_valid_then_only_the_new_one() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ehr-2026"), format!("{EHR}\n")).expect("write");
        std::fs::write(dir.path().join("short"), "too-short").expect("write");
        std::fs::create_dir(dir.path().join("..data")).expect("the volume's own entries");
        let credentials = Credentials::new(dir.path().to_path_buf());
        let t0 = Instant::now();
        assert_eq!(credentials.check(EHR, t0), Some("ehr-2026".into()));
        assert_eq!(
            credentials.check("too-short", t0),
            None,
            "too short to count"
        );
        assert_eq!(credentials.check(NEXT, t0), None);
        assert_eq!(credentials.count(t0), 1);

        std::fs::write(dir.path().join("ehr-2027"), NEXT).expect("write");
        assert_eq!(
            credentials.check(NEXT, t0 + Duration::from_secs(1)),
            None,
            "read again only after the reload interval"
        );
        let t1 = t0 + RELOAD_EVERY;
        assert_eq!(credentials.check(NEXT, t1), Some("ehr-2027".into()));
        assert_eq!(credentials.check(EHR, t1), Some("ehr-2026".into()));

        std::fs::remove_file(dir.path().join("ehr-2026")).expect("retire");
        let t2 = t1 + RELOAD_EVERY;
        assert_eq!(credentials.check(EHR, t2), None, "the old one is refused");
        assert_eq!(credentials.check(NEXT, t2), Some("ehr-2027".into()));
        assert!(!format!("{credentials:?}").contains("credential-"));
    }

    #[test]
    fn a_missing_directory_refuses_everything() {
        let credentials = Credentials::new("/nonexistent/bedside-api".into());
        assert_eq!(credentials.check(EHR, Instant::now()), None);
    }
}
