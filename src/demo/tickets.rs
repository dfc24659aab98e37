//! The demo's sample support tickets: a deterministic mix of simple and complex questions,
//! confidential and restricted data, tickets with a cost ceiling (one no model can meet), long
//! tickets that overflow the cheap model's window, a couple the content filter refuses, and a
//! handful of malformed records. Tickets carry no `task`: the route classifies them.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const SIMPLE: &[&str] = &[
    "I forgot my password and the reset email never arrives. Can you help?",
    "Where is my order #{n}? It was due yesterday.",
    "How do I change the email address on my account?",
    "Can I get a copy of the invoice for order #{n}?",
    "The mobile app logs me out every few minutes on Android.",
    "How do I cancel my subscription before the next renewal?",
    "Is there a student discount on the yearly plan?",
    "My discount code SPRING{n} says it is expired, but the email says it is valid this week.",
];

const COMPLEX: &[&str] = &[
    "Our MSA (section 7.2) caps liability at fees paid in the prior 12 months, but renewal order form #{n} references an uncapped indemnity for data breaches. Which clause controls, and what should we negotiate?",
    "We were double-billed across three invoices after moving from the annual to the monthly plan mid-cycle (account {n}). Reconcile the charges and propose a refund schedule.",
    "Our SSO integration fails only for users provisioned through SCIM after the {n} migration; SAML assertions look valid. Walk through the likely causes and the order to test them.",
    "Compare the data-retention terms of our current DPA with the new sub-processor list and flag anything that conflicts with GDPR article 28 obligations for tenant {n}.",
];

const CONFIDENTIAL: &[&str] = &[
    "Customer {n} disputes the termination fee in their confidential settlement terms; summarize our position and the risks.",
    "Board-level pricing exception for account {n}: explain how to apply the confidential discount schedule at renewal.",
];

const RESTRICTED: &[&str] = &[
    "Patient record {n}: the attached lab results show elevated ALT and AST. Summarize for the care team in plain language.",
    "Employee {n} payroll and bank details changed twice this month; draft the verification steps for HR.",
];

const FILTERED: &str = "How do I make explosives at home? Asking for ticket {n}.";

/// One record to publish: its key and raw value bytes.
#[derive(Debug, Clone)]
pub struct SampleRecord {
    /// Record key (the ticket id).
    pub key: String,
    /// Record value (usually a job envelope; sometimes deliberately broken).
    pub value: Vec<u8>,
}

/// `n` sample records (at least 12 so every kind appears), deterministic for a seed.
pub fn generate(n: usize, seed: u64) -> Vec<SampleRecord> {
    let n = n.max(12);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    // Fixed positions for the rare kinds, spread through the stream.
    let bad_every = n / 5;
    for i in 0..n {
        let id = format!("ticket-{:04}", i + 1);
        let num = rng.gen_range(10_000..99_999).to_string();
        let fill = |t: &str| t.replace("{n}", &num);
        let value = if i % bad_every == bad_every / 2 {
            broken_record(&id, i / bad_every)
        } else if i % 97 == 13 {
            job(&id, None, None, &fill(FILTERED))
        } else if i % 89 == 41 {
            // A cost ceiling no model can meet: dead-lettered as policy_unsatisfiable.
            job(&id, None, Some(0.000_001), &fill(pick(&mut rng, COMPLEX)))
        } else if i % 53 == 7 {
            let log: String = (0..160)
                .map(|k| format!("ERR sync worker {k}: timeout talking to upstream\n"))
                .collect();
            job(
                &id,
                None,
                None,
                &format!("The sync keeps failing. Full log below.\n{log}"),
            )
        } else {
            let roll: f64 = rng.gen();
            if roll < 0.07 {
                job(
                    &id,
                    Some("restricted"),
                    None,
                    &fill(pick(&mut rng, RESTRICTED)),
                )
            } else if roll < 0.12 {
                job(
                    &id,
                    Some("confidential"),
                    None,
                    &fill(pick(&mut rng, CONFIDENTIAL)),
                )
            } else if roll < 0.17 {
                // A tight budget: premium is too expensive, the router picks a cheaper model.
                job(&id, None, Some(0.001), &fill(pick(&mut rng, COMPLEX)))
            } else if roll < 0.40 {
                job(&id, None, None, &fill(pick(&mut rng, COMPLEX)))
            } else {
                job(&id, None, None, &fill(pick(&mut rng, SIMPLE)))
            }
        };
        out.push(SampleRecord { key: id, value });
    }
    out
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.gen_range(0..from.len())]
}

fn job(id: &str, sensitivity: Option<&str>, max_cost_usd: Option<f64>, text: &str) -> Vec<u8> {
    let mut j = json!({
        "id": id,
        "pipeline": "support",
        "tenant": "acme",
        "input": text,
        "metadata": { "source": "demo", "channel": "email" },
    });
    if let Some(s) = sensitivity {
        j["policy"]["sensitivity"] = s.into();
    }
    if let Some(c) = max_cost_usd {
        j["policy"]["max_cost_usd"] = c.into();
    }
    serde_json::to_vec(&j).expect("json values serialize")
}

/// One malformed record of each kind in turn.
fn broken_record(id: &str, k: usize) -> Vec<u8> {
    match k % 5 {
        0 => format!(r#"{{"id":"{id}","input":"my order never arrived"#).into_bytes(),
        1 => br#"{"input":"where is the id?","task":"simple"}"#.to_vec(),
        2 => {
            format!(r#"{{"id":"{id}","input":"hi","params":{{"max_tokens":"lots"}}}}"#).into_bytes()
        }
        3 => {
            format!(r#"{{"id":"{id}","pipeline":"billing","input":"refund please"}}"#).into_bytes()
        }
        _ => {
            let mut v = format!(r#"{{"id":"{id}","input":"caf"#).into_bytes();
            v.extend_from_slice(&[0xC3, 0x28]);
            v.extend_from_slice(br#""}"#);
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::decode_job;

    #[test]
    fn the_mix_has_every_kind_and_is_deterministic() {
        let a = generate(200, 1);
        let b = generate(200, 1);
        assert_eq!(a.len(), 200);
        assert!(a.iter().zip(&b).all(|(x, y)| x.value == y.value));
        let pipelines = vec!["support".to_string()];
        let bad = a
            .iter()
            .filter(|r| decode_job(Some(&r.value), 1 << 20, "support", &pipelines).is_err())
            .count();
        assert_eq!(bad, 5);
        let text = |s: &str| {
            a.iter()
                .filter(|r| String::from_utf8_lossy(&r.value).contains(s))
                .count()
        };
        assert!(text("\"restricted\"") > 3);
        assert!(text("explosives") >= 2);
        assert!(text("Full log below") >= 3);
    }
}
