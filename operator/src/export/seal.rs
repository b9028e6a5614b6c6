//! Signing an export and verifying it offline. The manifest holds the SHA-256 of each file
//! and of each part of the JSON document (every section, and every entry of its lists), and is
//! signed with Ed25519; the verifier checks the signature, then names each part that no longer
//! matches, so an auditor learns not only that something changed but what.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const EVIDENCE_FILE: &str = "evidence.json";
pub const PAGE_FILE: &str = "report.html";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// What was signed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    /// Hex SHA-256 of each file, by name.
    pub files: BTreeMap<String, String>,
    /// Hex SHA-256 of each part of the evidence document, by path (`breakGlass[0]`).
    pub parts: BTreeMap<String, String>,
    /// The signer's Ed25519 public key, hex: compare its fingerprint with the one the exporter
    /// gave you on another channel, or verify against the key file they sent.
    pub public_key: String,
}

/// Why an export does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "the signing key cannot be read: {0} (an Ed25519 key in PKCS#8, as `evidence keygen` writes)"
    )]
    Key(String),
    #[error("{MANIFEST_FILE} is not a manifest: {0}")]
    Manifest(String),
    #[error(
        "the signature does not verify: {MANIFEST_FILE} or {SIGNATURE_FILE} was altered, or the export was signed with another key"
    )]
    Signature,
    #[error(
        "signed by key {found}, not by the key you gave ({expected}): this export is not from whom you expected"
    )]
    OtherSigner { expected: String, found: String },
    #[error("altered after signing: {}", .0.join("; "))]
    Altered(Vec<String>),
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A public key's short name: the first 16 hex digits of its SHA-256.
pub fn fingerprint(public_key_hex: &str) -> String {
    let bytes = unhex(public_key_hex).unwrap_or_default();
    sha256_hex(&bytes)[..16].to_string()
}

/// A new signing key (PKCS#8).
pub fn generate_key() -> Result<Vec<u8>, SealError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|e| SealError::Key(e.to_string()))
}

/// The public key (hex) of a PKCS#8 signing key.
pub fn public_key(pkcs8: &[u8]) -> Result<String, SealError> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| SealError::Key(e.to_string()))?;
    Ok(hex(pair.public_key().as_ref()))
}

/// Every part of the document a verifier can name: each top-level section, and each field and
/// list entry below it, three levels deep.
pub fn parts(document: &Value) -> BTreeMap<String, String> {
    let mut parts = BTreeMap::new();
    if let Value::Object(sections) = document {
        for (name, value) in sections {
            walk(name, value, 1, &mut parts);
        }
    }
    parts
}

fn walk(path: &str, value: &Value, depth: usize, parts: &mut BTreeMap<String, String>) {
    parts.insert(
        path.to_string(),
        sha256_hex(&serde_json::to_vec(value).unwrap_or_default()),
    );
    if depth >= 3 {
        return;
    }
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), item, depth + 1, parts);
            }
        }
        Value::Object(fields) => {
            for (name, item) in fields {
                walk(&format!("{path}.{name}"), item, depth + 1, parts);
            }
        }
        _ => {}
    }
}

/// The manifest and its signature for the files of an export (`evidence.json` and the page).
pub fn sign(
    files: &BTreeMap<String, Vec<u8>>,
    pkcs8: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SealError> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| SealError::Key(e.to_string()))?;
    let document: Value = files
        .get(EVIDENCE_FILE)
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .unwrap_or(Value::Null);
    let manifest = Manifest {
        format: super::FORMAT.into(),
        files: files
            .iter()
            .map(|(name, bytes)| (name.clone(), sha256_hex(bytes)))
            .collect(),
        parts: parts(&document),
        public_key: hex(pair.public_key().as_ref()),
    };
    let mut text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| SealError::Manifest(e.to_string()))?;
    text.push(b'\n');
    let signature = hex(pair.sign(&text).as_ref()).into_bytes();
    Ok((text, signature))
}

/// Verifies an export's files against its manifest and signature; `expected_key`: the
/// public key (hex) the auditor was given, if any. The manifest on success.
pub fn verify(
    files: &BTreeMap<String, Vec<u8>>,
    manifest_bytes: &[u8],
    signature_hex: &[u8],
    expected_key: Option<&str>,
) -> Result<Manifest, SealError> {
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| SealError::Manifest(e.to_string()))?;
    if let Some(expected) = expected_key
        && expected.trim() != manifest.public_key
    {
        return Err(SealError::OtherSigner {
            expected: fingerprint(expected),
            found: fingerprint(&manifest.public_key),
        });
    }
    let key = unhex(&manifest.public_key).ok_or(SealError::Signature)?;
    let signature = std::str::from_utf8(signature_hex)
        .ok()
        .and_then(unhex)
        .ok_or(SealError::Signature)?;
    UnparsedPublicKey::new(&signature::ED25519, &key)
        .verify(manifest_bytes, &signature)
        .map_err(|_| SealError::Signature)?;
    let altered = altered(files, &manifest);
    if altered.is_empty() {
        Ok(manifest)
    } else {
        Err(SealError::Altered(altered))
    }
}

/// What differs from the manifest, named as precisely as the manifest allows.
fn altered(files: &BTreeMap<String, Vec<u8>>, manifest: &Manifest) -> Vec<String> {
    let mut found = Vec::new();
    for (name, hash) in &manifest.files {
        match files.get(name) {
            None => found.push(format!("{name} is missing")),
            Some(bytes) if sha256_hex(bytes) != *hash => {
                if name == EVIDENCE_FILE {
                    found.extend(altered_parts(bytes, &manifest.parts, name));
                } else {
                    found.push(format!("{name} was altered"));
                }
            }
            Some(_) => {}
        }
    }
    for name in files.keys().filter(|n| !manifest.files.contains_key(*n)) {
        found.push(format!("{name} was added"));
    }
    found
}

fn altered_parts(bytes: &[u8], signed: &BTreeMap<String, String>, file: &str) -> Vec<String> {
    let Ok(document) = serde_json::from_slice::<Value>(bytes) else {
        return vec![format!("{file} was altered: it is no longer valid JSON")];
    };
    let now = parts(&document);
    let differs = |path: &String| now.get(path) != signed.get(path);
    let changed: Vec<&String> = signed
        .keys()
        .chain(now.keys())
        .filter(|p| differs(p))
        .collect();
    // The deepest parts that differ: a changed entry, not every section above it.
    let mut named: Vec<String> = changed
        .iter()
        .filter(|path| {
            !changed.iter().any(|other| {
                other.len() > path.len()
                    && other.starts_with(path.as_str())
                    && matches!(other.as_bytes()[path.len()], b'.' | b'[')
            })
        })
        .map(
            |path| match (signed.contains_key(*path), now.contains_key(*path)) {
                (true, true) => format!("{file}: {path} was altered"),
                (true, false) => format!("{file}: {path} was removed"),
                _ => format!("{file}: {path} was added"),
            },
        )
        .collect();
    named.sort();
    named.dedup();
    if named.is_empty() {
        // Same content, other bytes: spacing or key order.
        named.push(format!(
            "{file} was altered outside its content (spacing or order)"
        ));
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export() -> BTreeMap<String, Vec<u8>> {
        let document = serde_json::json!({
            "format": "bedside-evidence/v1",
            "controls": [{"check": "sinks-delivering", "result": "pass"}],
            "breakGlass": [
                {"name": "bg-1", "incident": "INC-1", "phase": "Expired"},
                {"name": "bg-2", "incident": "INC-2", "phase": "Revoked"},
            ],
        });
        BTreeMap::from([
            (
                EVIDENCE_FILE.to_string(),
                serde_json::to_vec_pretty(&document).expect("json"),
            ),
            (
                PAGE_FILE.to_string(),
                b"<html><table id=controls></table></html>".to_vec(),
            ),
        ])
    }

    #[test]
    fn an_untouched_export_verifies_with_its_key() {
        let key = generate_key().expect("key");
        let files = export();
        let (manifest, signature) = sign(&files, &key).expect("signed");
        let public = public_key(&key).expect("public");
        let verified = verify(&files, &manifest, &signature, Some(&public)).expect("verifies");
        assert_eq!(verified.public_key, public);
    }

    #[test]
    fn an_edited_byte_is_named_by_the_part_it_changed() {
        let key = generate_key().expect("key");
        let files = export();
        let (manifest, signature) = sign(&files, &key).expect("signed");
        let mut edited = files.clone();
        let text = String::from_utf8(edited[EVIDENCE_FILE].clone()).expect("utf8");
        edited.insert(
            EVIDENCE_FILE.into(),
            text.replace("INC-2", "INC-3").into_bytes(),
        );
        let err = verify(&edited, &manifest, &signature, None).expect_err("altered");
        assert_eq!(
            err,
            SealError::Altered(vec![
                "evidence.json: breakGlass[1].incident was altered".into()
            ])
        );
        let mut page = files.clone();
        page.insert(
            PAGE_FILE.into(),
            b"<html><table id=controls></table><!-- --></html>".to_vec(),
        );
        let err = verify(&page, &manifest, &signature, None).expect_err("altered");
        assert_eq!(
            err,
            SealError::Altered(vec!["report.html was altered".into()])
        );
        let mut broken = files.clone();
        broken.get_mut(EVIDENCE_FILE).expect("file").truncate(10);
        let err = verify(&broken, &manifest, &signature, None).expect_err("altered");
        assert!(err.to_string().contains("no longer valid JSON"), "{err}");
    }

    #[test]
    fn an_edited_manifest_or_another_signer_is_refused() {
        let key = generate_key().expect("key");
        let files = export();
        let (manifest, signature) = sign(&files, &key).expect("signed");
        let text = String::from_utf8(manifest.clone()).expect("utf8");
        // Someone edits the evidence and the manifest's hash to match: the signature fails.
        let forged = text.replacen("\"breakGlass[1]\"", "\"breakGlass[9]\"", 1);
        assert_eq!(
            verify(&files, forged.as_bytes(), &signature, None),
            Err(SealError::Signature)
        );
        // Re-signed with another key: refused against the key the auditor holds.
        let other = generate_key().expect("key");
        let (manifest2, signature2) = sign(&files, &other).expect("signed");
        let expected = public_key(&key).expect("public");
        assert!(matches!(
            verify(&files, &manifest2, &signature2, Some(&expected)),
            Err(SealError::OtherSigner { .. })
        ));
        assert!(verify(&files, &manifest, &signature, Some(&expected)).is_ok());
    }
}
