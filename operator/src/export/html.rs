//! The export as a page people read: the same content as `evidence.json`, in tables, with no
//! script and nothing loaded from elsewhere (it opens offline, as an auditor keeps it).

use std::fmt::Write;

use super::Evidence;

/// Text for HTML: every character that could start markup is escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "–".to_string(), |v| esc(&v.to_string()))
}

/// A table: `id`, its caption, its column heads, and its rows of already escaped cells.
fn table(id: &str, caption: &str, heads: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "<table id=\"{id}\"><caption>{}</caption><thead><tr>",
        esc(caption)
    );
    for head in heads {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(head));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\">none in this range</td></tr>",
            heads.len()
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1b1b1b}\
table{border-collapse:collapse;width:100%;margin:1rem 0 2rem}caption{text-align:left;font-weight:600;font-size:1.1rem;padding:.4rem 0}\
th,td{border:1px solid #bbb;padding:.35rem .5rem;text-align:left;vertical-align:top}th{background:#eef1f4}\
.pass{color:#0a6b2d;font-weight:600}.fail{color:#a11212;font-weight:700}.warn{color:#8a5a00;font-weight:600}.skip,.error{color:#555}\
.note{background:#f6f7f9;border-left:4px solid #888;padding:.6rem .9rem}code{font-size:.9em}";

pub fn render(evidence: &Evidence) -> String {
    let about = &evidence.about;
    let mut page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>HIPAA evidence: {tenant}</title><style>{STYLE}</style></head><body>\
<h1>HIPAA evidence for {tenant}</h1>\
<p>Namespace <code>{namespace}</code>, from {from} to {to}. Generated {generated} by {by}.</p>\
<p class=\"note\">{disclaimer} Verify this export with <code>bedside-operator evidence verify &lt;folder&gt;</code> before relying on it.</p>",
        tenant = esc(&about.tenant),
        namespace = esc(&about.namespace),
        from = about.from,
        to = about.to,
        generated = about.generated_at,
        by = esc(&about.generated_by),
        disclaimer = esc(&about.disclaimer),
    );
    let controls: Vec<Vec<String>> = evidence
        .controls
        .iter()
        .map(|c| {
            let result = if c.manual {
                "manual"
            } else {
                c.result.as_str()
            };
            vec![
                esc(&c.control),
                esc(&c.check),
                format!("<span class=\"{}\">{}</span>", esc(&c.result), esc(result)),
                or_dash(c.severity.as_deref()),
                esc(&c.message),
            ]
        })
        .collect();
    page.push_str(&table(
        "controls",
        "Controls, as last evaluated",
        &["control", "check", "result", "severity", "message"],
        &controls,
    ));
    let baa = &evidence.baa;
    page.push_str(&table(
        "baa",
        "Business Associate Agreement",
        &[
            "reference",
            "signed on",
            "expires on",
            "in force when exported",
        ],
        &[vec![
            esc(&baa.reference),
            esc(&baa.signed_on),
            or_dash(baa.expires_on.as_deref()),
            esc(&baa.in_force),
        ]],
    ));
    let revisions: Vec<Vec<String>> = evidence
        .config_history
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                or_dash(r.created),
                esc(&r.config_hash),
            ]
        })
        .collect();
    page.push_str(&table(
        "config-history",
        "Media node configuration (each revision's config hash)",
        &["revision", "created", "config SHA-256"],
        &revisions,
    ));
    let grants: Vec<Vec<String>> = evidence
        .break_glass
        .iter()
        .map(|b| {
            vec![
                esc(&b.name),
                esc(&b.phase),
                esc(&b.visit),
                esc(&b.clinician),
                esc(&b.requested_by),
                or_dash(b.approved_by.as_deref()),
                or_dash(b.revoked_by.as_deref()),
                esc(&b.incident),
                b.ttl_minutes.to_string(),
                or_dash(b.activated_at),
                or_dash(b.ended_at),
            ]
        })
        .collect();
    page.push_str(&table(
        "break-glass",
        "Emergency access (BreakGlass)",
        &[
            "name",
            "phase",
            "visit",
            "clinician",
            "requested by",
            "approved by",
            "revoked by",
            "incident",
            "TTL (min)",
            "active from",
            "ended",
        ],
        &grants,
    ));
    page.push_str(&audit_section(evidence));
    page.push_str("</body></html>\n");
    page
}

fn audit_section(evidence: &Evidence) -> String {
    let audit = &evidence.audit_chains;
    let verdict = match (&audit.source, audit.verified, &audit.problem) {
        (None, _, problem) => format!("Not checked: {}", or_dash(problem.as_deref())),
        (Some(source), true, _) => format!(
            "Every chain in {} verified under the tenant's audit key.",
            esc(source)
        ),
        (Some(source), false, problem) => format!(
            "<span class=\"fail\">{} does not verify</span>: {}",
            esc(source),
            or_dash(problem.as_deref())
        ),
    };
    let chains: Vec<Vec<String>> = audit
        .chains
        .iter()
        .map(|c| {
            let head = c.head.as_ref().map_or_else(
                || "–".to_string(),
                |h| {
                    format!(
                        "seq {} at {}<br><code>{}</code>",
                        h.seq,
                        h.time,
                        esc(&h.hash)
                    )
                },
            );
            let checkpoints = c
                .checkpoints
                .iter()
                .map(|p| format!("seq {} at {}", p.seq, p.time))
                .collect::<Vec<_>>()
                .join("<br>");
            vec![
                esc(&c.node),
                c.records_in_range.to_string(),
                head,
                if checkpoints.is_empty() {
                    "–".into()
                } else {
                    checkpoints
                },
                if c.closed { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    let actions: Vec<Vec<String>> = audit
        .actions
        .iter()
        .map(|(action, n)| vec![esc(action), n.to_string()])
        .collect();
    format!(
        "<h2>Audit records</h2><p>{verdict}</p>{}{}",
        table(
            "audit-chains",
            "Each chain's head and checkpoints in the range",
            &["chain (node)", "records", "head", "checkpoints", "closed"],
            &chains,
        ),
        table(
            "actions",
            "Records in the range by action",
            &["action", "records"],
            &actions
        ),
    )
}
