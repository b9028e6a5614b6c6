use super::*;
use crate::join::{Grant, TokenVerifier};

fn key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut key).expect("randomness");
    key
}

fn policy() -> VisitPolicy {
    VisitPolicy {
        tenant: "mercy-clinic".into(),
        base_url: "https://meet.mercy.example".into(),
        max_duration: Duration::from_secs(3600),
        max_participants: 4,
        opens_before: DEFAULT_OPENS_BEFORE,
        grace: DEFAULT_GRACE,
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn request(start: Timestamp) -> VisitRequest {
    VisitRequest {
        start,
        duration: Duration::from_secs(30 * 60),
        host: "Practitioner/dr-7".into(),
        invitees: vec![
            Invitee {
                reference: "Patient/8c1f2a".into(),
                role: InviteeRole::Patient,
            },
            Invitee {
                reference: "Practitioner/int-3".into(),
                role: InviteeRole::Interpreter,
            },
        ],
    }
}

/// The token in a link's fragment.
fn token(link: &str) -> &str {
    link.split_once("#token=")
        .expect("a token in the fragment")
        .1
}

fn secs(t: Timestamp) -> u64 {
    t.as_second() as u64
}

#[test]
fn each_person_gets_a_link_for_their_role_that_works_only_in_the_window() {
    let key = key();
    let start = now() + Duration::from_secs(2 * 24 * 3600);
    let visit = book(&request(start), &policy(), &key, "visit-1", now()).expect("booked");
    assert_eq!(visit.window.opens, start - DEFAULT_OPENS_BEFORE);
    assert_eq!(visit.window.closes, start + Duration::from_secs(45 * 60));
    let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
    let at_start = |link: &IssuedLink| verifier.verify(token(&link.link), "visit-1", secs(start));
    let host: Grant = at_start(&visit.host).expect("host link works at the start");
    assert_eq!(
        (host.role, host.user.as_str()),
        (Role::Host, "practitioner.dr-7")
    );
    let patient = at_start(&visit.invitees[0]).expect("patient link works");
    assert_eq!(
        (patient.role, patient.user.as_str()),
        (Role::Participant, "patient.8c1f2a")
    );
    let early = verifier.verify(token(&visit.host.link), "visit-1", secs(now()));
    assert!(
        matches!(early, Err(TokenError::NotOpenYet { opens_at }) if opens_at == secs(visit.window.opens)),
        "{early:?}"
    );
    let late = secs(visit.window.closes) + 120;
    assert_eq!(
        verifier.verify(token(&visit.host.link), "visit-1", late),
        Err(TokenError::Expired)
    );
    assert_eq!(
        verifier.verify(token(&visit.host.link), "visit-2", secs(start)),
        Err(TokenError::WrongRoom),
        "bound to its visit"
    );
}

#[test]
fn the_passcode_travels_apart_from_the_links() {
    let key = key();
    let visit = book(&request(now()), &policy(), &key, "visit-9", now()).expect("booked");
    assert_eq!(visit.passcode, join::passcode(&key, "visit-9"));
    for link in std::iter::once(&visit.host).chain(&visit.invitees) {
        assert!(
            link.link
                .starts_with("https://meet.mercy.example/?room=visit-9#token=")
        );
        assert!(!link.link.contains("passcode"), "{}", link.link);
    }
}

#[test]
fn bad_bookings_name_their_field_and_never_echo_a_name() {
    let key = key();
    let t = now();
    let field = |r: VisitRequest| match book(&r, &policy(), &key, "v", t) {
        Err(VisitError::Invalid { field, problem }) => {
            assert!(!problem.contains("Jane"), "echoed a name: {problem}");
            field
        }
        other => panic!("expected a field error, got {other:?}"),
    };
    let mut past = request(t - Duration::from_secs(3600));
    assert_eq!(field(past.clone()), "start");
    past.start = t;
    past.duration = Duration::from_secs(2 * 3600);
    assert_eq!(field(past), "duration", "over maxDuration");
    let mut crowd = request(t);
    for n in 0..4 {
        crowd.invitees.push(Invitee {
            reference: format!("RelatedPerson/c{n}"),
            role: InviteeRole::Caregiver,
        });
    }
    assert_eq!(field(crowd), "participants", "over maxParticipants");
    let mut named = request(t);
    named.invitees[0].reference = "Jane Doe".into();
    assert_eq!(field(named.clone()), "participants[0].reference");
    named.invitees[0].reference = "Patient/Jane Doe".into();
    assert_eq!(field(named.clone()), "participants[0].reference");
    // A valid FHIR id in the shape of a name is refused too (its link would be).
    named.invitees[0].reference = "Patient/Jane.Doe".into();
    assert_eq!(field(named), "participants[0].reference");
    let mut host_as_patient = request(t);
    host_as_patient.host = "Patient/8c1f2a".into();
    assert_eq!(field(host_as_patient), "host");
    let mut twice = request(t);
    twice.invitees[1] = twice.invitees[0].clone();
    assert_eq!(field(twice), "participants[1].reference");
    let mut alone = request(t);
    alone.invitees.clear();
    assert_eq!(field(alone), "participants");
}

#[test]
fn margins_over_an_hour_are_refused() {
    let mut p = policy();
    p.opens_before = Duration::from_secs(2 * 3600);
    assert!(matches!(
        book(&request(now()), &p, &key(), "v", now()),
        Err(VisitError::Invalid { field, .. }) if field == "opensBefore"
    ));
}

#[test]
fn visit_ids_are_unique_room_names() {
    let a = new_visit_id().expect("id");
    let b = new_visit_id().expect("id");
    assert_ne!(a, b);
    assert!(a.len() <= 64 && a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
}

#[test]
fn the_appointment_carries_the_patients_link_and_never_the_hosts() {
    let visit = book(&request(now()), &policy(), &key(), "visit-3", now()).expect("booked");
    let fhir = fhir::appointments(&visit);
    let service = &fhir["r5"]["virtualService"][0];
    assert_eq!(service["addressUrl"], visit.invitees[0].link.as_str());
    assert_eq!(service["sessionKey"], visit.passcode.as_str());
    assert_eq!(service["maxParticipants"], 4);
    assert_eq!(fhir["r5"]["participant"].as_array().map(Vec::len), Some(3));
    let text = fhir.to_string();
    assert!(
        !text.contains(token(&visit.host.link)),
        "the host's link stays off the Appointment"
    );
    assert_eq!(
        fhir["r4"]["extension"][0]["url"],
        fhir::R4_VIRTUAL_SERVICE_EXTENSION
    );
}

#[test]
fn a_reissue_carries_its_issue_in_every_link_and_may_come_during_the_visit() {
    let key = key();
    let verifier = TokenVerifier::new("mercy-clinic", &key).expect("verifier");
    // Started ten minutes ago: a new booking is refused, a reissue is not.
    let start = now() - Duration::from_secs(600);
    assert!(book(&request(start), &policy(), &key, "visit-3", now()).is_err());
    let visit = issue(&request(start), &policy(), &key, ("visit-3", 2), now()).expect("reissued");
    assert_eq!(visit.generation, 2);
    assert_eq!(
        visit.passcode,
        join::passcode(&key, "visit-3"),
        "same passcode"
    );
    for link in std::iter::once(&visit.host).chain(&visit.invitees) {
        let grant = verifier
            .verify(token(&link.link), "visit-3", secs(now()))
            .expect("works now");
        assert_eq!(grant.generation, 2);
    }
    let first = book(&request(now()), &policy(), &key, "visit-4", now()).expect("booked");
    let grant = verifier
        .verify(token(&first.host.link), "visit-4", secs(now()))
        .expect("works");
    assert_eq!((first.generation, grant.generation), (0, 0));
    // Once the window has closed there is nothing to reissue.
    let long_ago = now() - Duration::from_secs(3 * 3600);
    assert_eq!(
        issue(&request(long_ago), &policy(), &key, ("visit-3", 3), now())
            .map(|v| v.id)
            .map_err(|e| e.to_string().starts_with("start: ")),
        Err(true)
    );
}
