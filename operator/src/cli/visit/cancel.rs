//! `bedside-operator visit cancel`: the visit's lease in the tenant's namespace marked
//! cancelled, written with the user's own rights (leases in that namespace). Every media pod watches its tenant's
//! Leases: from then on the visit's links are refused everywhere, also after restarts, and the
//! pod holding its call ends it within a beat. Booking stores nothing, so the visit is named
//! by one of its links (the token says its visit and when its window closes, signed with the
//! tenant's key) or by its id and window end.

use bedside_crds::join::{TokenVerifier, parse_link};
use bedside_crds::leases::{self, VisitChange};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use super::{CliError, cluster, read_key_file, tenant_and_keys};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("visit").required(true).args(["link", "id"])))]
pub struct CancelArgs {
    /// The HealthcareTenant the visit belongs to.
    #[arg(long)]
    tenant: String,
    /// The tenant's namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Any of the visit's links (the EHR keeps the patient's on the Appointment).
    #[arg(long, conflicts_with_all = ["id", "until"])]
    link: Option<String>,
    /// The visit's id (visit-...), with --until.
    #[arg(long, requires = "until")]
    id: Option<String>,
    /// When the visit's links stop working (its window's end, RFC 3339), with --id.
    #[arg(long, requires = "id")]
    until: Option<String>,
    /// With --link: read the join key from this file instead of the tenant's Secret.
    #[arg(long, value_name = "FILE")]
    key_file: Option<std::path::PathBuf>,
}

pub(super) async fn run(args: &CancelArgs) -> Result<String, CliError> {
    let now = Timestamp::now();
    let (client, namespace) = cluster(&args.namespace).await?;
    let (visit, until) = match (&args.link, &args.id, &args.until) {
        (Some(link), _, _) => {
            let keys = match &args.key_file {
                Some(path) => vec![read_key_file(path)?],
                None => tenant_and_keys(&client, &namespace, &args.tenant).await?.1,
            };
            visit_of_link(&args.tenant, &keys, link)?
        }
        (None, Some(id), Some(until)) => (
            checked_id(id)?,
            until.parse().map_err(|e| {
                CliError::Cancel(format!(
                    "--until: {e}: give the end of the visit's window as an RFC 3339 time"
                ))
            })?,
        ),
        _ => {
            return Err(CliError::Cancel(
                "name the visit with --link, or with --id and --until".into(),
            ));
        }
    };
    if until < now {
        return Err(CliError::Cancel(format!(
            "visit {visit}'s links stopped working at {until}: they are refused already"
        )));
    }
    let api = Api::<Lease>::namespaced(client, &namespace);
    match leases::write_visit_change(&api, VisitChange::Cancel, (&args.tenant, &visit), until).await
    {
        Ok(Some(_)) => Ok(format!(
            "Visit {visit} ({}) cancelled: its links are refused on every media pod until {until}, and its call, if one runs, ends within seconds.",
            args.tenant
        )),
        Ok(None) => Ok(format!("Visit {visit} was cancelled already.")),
        Err(e) => Err(write_failed(&namespace, e)),
    }
}

/// A visit lease the user could not write, and what they need.
pub(super) fn write_failed(namespace: &str, e: leases::VisitWriteError) -> CliError {
    match e {
        leases::VisitWriteError::Refused(e) => CliError::Visit(e),
        e => CliError::Cancel(format!(
            "cannot write the visit's state to namespace {namespace}: {e} (cancelling and reissuing visits needs `get`, `create` and `update` on leases there)"
        )),
    }
}

/// The visit a link belongs to and the end of its window, from its signed token.
/// `keys`: the tenant's current join key, then its previous one during a rotation.
fn visit_of_link(
    tenant: &str,
    keys: &[Vec<u8>],
    link: &str,
) -> Result<(String, Timestamp), CliError> {
    let (room, token) = parse_link(link).ok_or_else(|| {
        CliError::Cancel(
            "--link: not a visit link (expected https://.../?room=<visit>#token=<token>)".into(),
        )
    })?;
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let verifier = TokenVerifier::with_keys(tenant, &keys)
        .map_err(|e| CliError::Cancel(format!("the tenant's join key: {e}")))?;
    let (visit, closes) = verifier.visit_of(&token).map_err(|e| {
        CliError::Cancel(format!(
            "--link: its token is not one of tenant {tenant}'s: {e}"
        ))
    })?;
    if visit != room {
        return Err(CliError::Cancel(
            "--link: its room and its token name different visits: the link was edited".into(),
        ));
    }
    let closes = i64::try_from(closes)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .ok_or_else(|| CliError::Cancel("--link: its token's expiry is out of range".into()))?;
    Ok((visit, closes))
}

/// A visit id is a room name: printable, short, no spaces (never free text).
fn checked_id(id: &str) -> Result<String, CliError> {
    if bedside_crds::visit::is_visit_id(id) {
        Ok(id.to_string())
    } else {
        Err(CliError::Cancel(
            "--id: a visit id as `visit create` printed it (visit-...)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bedside_crds::join::{JoinClaims, Role, issue, link};

    #[test]
    fn a_link_names_its_visit_and_an_edited_or_foreign_one_is_refused() {
        let key = [7u8; 32];
        let claims = JoinClaims {
            sub: "patient.p-1".into(),
            aud: "mercy-clinic".into(),
            room: "visit-abc".into(),
            role: Role::Participant,
            exp: 1_900_000_000,
            nbf: Some(1_899_990_000),
            start: Some(1_899_991_000),
            generation: None,
            break_glass: None,
        };
        let token = issue(&claims, &key).expect("token");
        let url = link("https://meet.example", "visit-abc", &token, None);
        let (visit, until) = visit_of_link("mercy-clinic", &[key.to_vec()], &url).expect("visit");
        assert_eq!(visit, "visit-abc");
        assert_eq!(until.as_second(), 1_900_000_000);
        let edited = link("https://meet.example", "visit-other", &token, None);
        let refused = visit_of_link("mercy-clinic", &[key.to_vec()], &edited).expect_err("edited");
        assert!(refused.to_string().contains("edited"), "{refused}");
        let foreign = visit_of_link("mercy-clinic", &[vec![8u8; 32]], &url).expect_err("foreign");
        assert!(
            foreign
                .to_string()
                .contains("not one of tenant mercy-clinic's"),
            "{foreign}"
        );
        assert!(visit_of_link("mercy-clinic", &[key.to_vec()], "https://x/").is_err());
    }

    #[test]
    fn a_visit_id_is_never_free_text() {
        assert!(checked_id("visit-0123abcd").is_ok());
        for bad in ["", "Jane Doe", "visit/1", &"v".repeat(129)] {
            assert!(checked_id(bad).is_err(), "{bad}");
        }
    }
}
