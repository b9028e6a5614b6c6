//! `bedside-operator keys rotate`: a new join-token key for a tenant, as an explicit act.
//!
//! The tenant's `<tenant>-keys` Secret gets a new `join-token.key`; the one it replaces moves
//! to `join-token.previous.key`, which the media pods keep accepting, so links already sent
//! work through their visits. Media pods take the new key up without a restart (they read the
//! mounted Secret every few seconds) and each seals a `join-key-rotated` record naming the
//! new key's id. A second rotation within a visit window of the first would drop the key
//! that links still in use were signed with: it is refused unless forced.

use std::process::ExitCode;

use bedside_crds::HealthcareTenant;
use bedside_crds::join::{MAX_VISIT_WINDOW_SECS, MIN_KEY_BYTES, key_id};
use bedside_operator::build::config::JOIN_TOKEN_KEY;
use bedside_operator::names::ChildNames;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// The previous key, beside the current one in the keys Secret (the media node reads it from
/// the same folder).
pub const PREVIOUS_JOIN_TOKEN_KEY: &str = "join-token.previous.key";
/// When the last rotation happened (RFC 3339), on the keys Secret.
pub const ROTATED_AT_ANNOTATION: &str = "bedside.health/join-key-rotated-at";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Sign new links with a new key; links signed with the current one keep working.
    Rotate(RotateArgs),
}

#[derive(clap::Args, Debug)]
struct RotateArgs {
    /// The HealthcareTenant whose join key rotates.
    #[arg(long)]
    tenant: String,
    /// Its namespace (the kubeconfig's by default).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Rotate even though links signed with the previous key may still be in use (they stop
    /// working): for a key that leaked.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RotateError {
    #[error(
        "the last rotation was at {rotated_at}: links signed with key {previous} may be in use until {safe_from}, and rotating again drops that key; wait until then, or give --force if the key leaked"
    )]
    TooSoon {
        rotated_at: Timestamp,
        previous: String,
        safe_from: Timestamp,
    },
    #[error(
        "the keys Secret's {0} is shorter than {MIN_KEY_BYTES} bytes; it was not made by bedside"
    )]
    ShortKey(&'static str),
}

/// What a rotation writes into the keys Secret.
#[derive(Debug, PartialEq, Eq)]
pub struct Rotation {
    pub current: Vec<u8>,
    pub previous: Vec<u8>,
    pub at: Timestamp,
}

/// Decides a rotation from what the Secret holds now: the current key becomes the previous
/// one, `new_key` the current one.
pub fn plan(
    current: &[u8],
    previous: Option<&[u8]>,
    rotated_at: Option<Timestamp>,
    now: Timestamp,
    force: bool,
    new_key: Vec<u8>,
) -> Result<Rotation, RotateError> {
    if current.len() < MIN_KEY_BYTES {
        return Err(RotateError::ShortKey(JOIN_TOKEN_KEY));
    }
    let window = SignedDuration::from_secs(MAX_VISIT_WINDOW_SECS as i64);
    if let (Some(previous), Some(rotated_at), false) = (previous, rotated_at, force) {
        let safe_from = rotated_at.saturating_add(window).unwrap_or(rotated_at);
        if now < safe_from {
            return Err(RotateError::TooSoon {
                rotated_at,
                previous: key_id(previous),
                safe_from,
            });
        }
    }
    Ok(Rotation {
        current: new_key,
        previous: current.to_vec(),
        at: now,
    })
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("no Kubernetes config ({0}): set KUBECONFIG")]
    NoCluster(kube::Error),
    #[error("cannot read HealthcareTenant {0}: {1} (does it exist, and may you get it?)")]
    Tenant(String, kube::Error),
    #[error(
        "cannot read Secret {0}: {1} (rotating needs `get` and `patch` on the tenant's keys Secret)"
    )]
    Read(String, String),
    #[error(
        "cannot write Secret {0}: {1} (another rotation at the same time? run it again; otherwise rotating needs `patch` on it)"
    )]
    Write(String, kube::Error),
    #[error("{0}")]
    Rotate(#[from] RotateError),
    #[error("no system randomness for a new key")]
    Randomness,
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

pub fn run(args: &Args) -> ExitCode {
    let Command::Rotate(rotate_args) = &args.command;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|rt| rt.block_on(rotate(rotate_args)));
    super::finish(result)
}

async fn rotate(args: &RotateArgs) -> Result<String, CliError> {
    let client = kube::Client::try_default()
        .await
        .map_err(CliError::NoCluster)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let tenant = Api::<HealthcareTenant>::namespaced(client.clone(), &namespace)
        .get(&args.tenant)
        .await
        .map_err(|e| CliError::Tenant(format!("{namespace}/{}", args.tenant), e))?;
    let name = ChildNames::of(&tenant).keys;
    let secrets = Api::<Secret>::namespaced(client, &namespace);
    let secret = secrets
        .get(&name)
        .await
        .map_err(|e| CliError::Read(name.clone(), e.to_string()))?;
    let data = secret.data.clone().unwrap_or_default();
    let current = data
        .get(JOIN_TOKEN_KEY)
        .ok_or_else(|| CliError::Read(name.clone(), format!("it has no {JOIN_TOKEN_KEY}")))?;
    let rotated_at = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATED_AT_ANNOTATION))
        .and_then(|t| t.parse().ok());
    let mut new_key = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut new_key).map_err(|_| CliError::Randomness)?;
    let rotation = plan(
        &current.0,
        data.get(PREVIOUS_JOIN_TOKEN_KEY).map(|k| k.0.as_slice()),
        rotated_at,
        Timestamp::now(),
        args.force,
        new_key,
    )?;
    // The version read: a rotation racing this one makes the API server refuse one of them.
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": secret.metadata.resource_version,
            "annotations": {ROTATED_AT_ANNOTATION: rotation.at.to_string()},
        },
        "data": {
            JOIN_TOKEN_KEY: ByteString(rotation.current.clone()),
            PREVIOUS_JOIN_TOKEN_KEY: ByteString(rotation.previous.clone()),
        },
    });
    secrets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| CliError::Write(name.clone(), e))?;
    let window = SignedDuration::from_secs(MAX_VISIT_WINDOW_SECS as i64);
    Ok(format!(
        "rotated the join key of {namespace}/{tenant}: new links are signed with key {new}; links signed with key {old} keep working, and the next rotation is possible from {next}.\n\
         The media pods take the new key up within about a minute (as the kubelet updates the Secret's volume) and each records `join-key-rotated` in its audit trail.",
        tenant = args.tenant,
        new = key_id(&rotation.current),
        old = key_id(&rotation.previous),
        next = rotation.at.saturating_add(window).unwrap_or(rotation.at),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a time")
    }

    #[test]
    fn the_current_key_becomes_the_previous_one() {
        let rotation = plan(
            &[1; 32],
            None,
            None,
            at("2026-12-03T10:00:00Z"),
            false,
            vec![2; 32],
        )
        .expect("rotates");
        assert_eq!(
            (rotation.current, rotation.previous),
            (vec![2; 32], vec![1; 32])
        );
    }

    #[test]
    fn a_second_rotation_waits_for_the_links_of_the_first_unless_forced() {
        let first = at("2026-12-03T10:00:00Z");
        let soon = at("2026-12-04T10:00:00Z");
        let refused = plan(
            &[2; 32],
            Some(&[1; 32]),
            Some(first),
            soon,
            false,
            vec![3; 32],
        )
        .expect_err("too soon");
        assert!(
            refused.to_string().contains(&key_id(&[1; 32]))
                && refused.to_string().contains("--force"),
            "{refused}"
        );
        plan(
            &[2; 32],
            Some(&[1; 32]),
            Some(first),
            soon,
            true,
            vec![3; 32],
        )
        .expect("forced");
        let later = at("2026-12-04T13:00:01Z");
        plan(
            &[2; 32],
            Some(&[1; 32]),
            Some(first),
            later,
            false,
            vec![3; 32],
        )
        .expect("after the window");
    }

    #[test]
    fn a_key_bedside_did_not_make_is_not_rotated() {
        assert_eq!(
            plan(
                &[1; 8],
                None,
                None,
                at("2026-12-03T10:00:00Z"),
                false,
                vec![2; 32]
            ),
            Err(RotateError::ShortKey(JOIN_TOKEN_KEY))
        );
    }
}
