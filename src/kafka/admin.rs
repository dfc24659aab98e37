//! `baton topics apply`: create the planned topics that are missing and report drift (partition
//! count, replication factor, configs) for the ones that exist. Drift is reported, not
//! corrected: changing a live topic is a decision for a person.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::topics::PlannedTopic;

/// What `apply` found or did for one topic.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicStatus {
    /// It was missing and has been created.
    Created,
    /// It exists as declared.
    Ok,
    /// It exists but differs from the declaration.
    Drift(Vec<String>),
    /// It is missing and was not created (dry run, or it vanished while applying).
    Missing,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicReport {
    /// The topic.
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// What happened.
    pub status: TopicStatus,
}

/// Why `apply` failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The cluster could not be reached or answered with an error.
    #[error("kafka admin: {0}")]
    Kafka(#[from] KafkaError),
    /// Creating a topic failed.
    #[error("creating topic {topic}: {code}")]
    Create {
        /// The topic.
        topic: String,
        /// The broker's error.
        code: RDKafkaErrorCode,
    },
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Partition count and replication factor of every topic in the cluster.
fn describe_topics(
    admin: &AdminClient<DefaultClientContext>,
) -> Result<HashMap<String, (i32, i32)>, KafkaError> {
    let metadata = admin.inner().fetch_metadata(None, TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| {
            let rf = t
                .partitions()
                .first()
                .map_or(0, |p| p.replicas().len() as i32);
            (t.name().to_string(), (t.partitions().len() as i32, rf))
        })
        .collect())
}

/// Creates missing topics (unless `dry_run`) and checks existing ones against the plan;
/// `client` gives the bootstrap servers and any security settings
/// ([`super::client_config`], or [`super::plain_config`] without a config).
pub async fn apply(
    client: &rdkafka::ClientConfig,
    plan: &[PlannedTopic],
    dry_run: bool,
) -> Result<Vec<TopicReport>, AdminError> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let mut existing = describe_topics(&admin)?;
    let missing: Vec<&PlannedTopic> = plan
        .iter()
        .filter(|t| !existing.contains_key(&t.name))
        .collect();
    let mut created = Vec::new();
    if !dry_run && !missing.is_empty() {
        let already;
        (created, already) = create(&admin, &missing).await?;
        // Metadata can lag a topic created a moment ago (here, by another process, or a
        // previous run): read it again until every topic the broker says exists shows up, so
        // the existing ones get their drift check and a worker started right after this
        // returns finds all of them.
        for _ in 0..50 {
            if already
                .iter()
                .chain(created.iter())
                .all(|t| existing.contains_key(t))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            existing = describe_topics(&admin)?;
        }
    }
    let configs = topic_configs(&admin, plan, &existing).await?;
    Ok(plan
        .iter()
        .map(|t| TopicReport {
            name: t.name.clone(),
            kind: t.kind,
            status: if created.contains(&t.name) {
                TopicStatus::Created
            } else {
                status(t, existing.get(&t.name).copied(), configs.get(&t.name))
            },
        })
        .collect())
}

/// Creates `missing`; returns the topics created and those another client created first.
async fn create(
    admin: &AdminClient<DefaultClientContext>,
    missing: &[&PlannedTopic],
) -> Result<(Vec<String>, Vec<String>), AdminError> {
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| {
            let mut nt = NewTopic::new(
                &t.name,
                t.spec.partitions,
                TopicReplication::Fixed(t.spec.replication_factor),
            );
            for (k, v) in &t.spec.configs {
                nt = nt.set(k, v);
            }
            nt
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let (mut created, mut already) = (Vec::new(), Vec::new());
    for r in admin.create_topics(&new_topics, &opts).await? {
        match r {
            Ok(topic) => created.push(topic),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => already.push(topic),
            Err((topic, code)) => return Err(AdminError::Create { topic, code }),
        }
    }
    Ok((created, already))
}

/// The broker-side configs of the planned topics that exist.
async fn topic_configs(
    admin: &AdminClient<DefaultClientContext>,
    plan: &[PlannedTopic],
    existing: &HashMap<String, (i32, i32)>,
) -> Result<HashMap<String, HashMap<String, String>>, AdminError> {
    let present: Vec<&PlannedTopic> = plan
        .iter()
        .filter(|t| existing.contains_key(&t.name))
        .collect();
    let mut configs = HashMap::new();
    if present.is_empty() {
        return Ok(configs);
    }
    let specifiers: Vec<ResourceSpecifier<'_>> = present
        .iter()
        .map(|t| ResourceSpecifier::Topic(&t.name))
        .collect();
    let described = admin
        .describe_configs(
            &specifiers,
            &AdminOptions::new().request_timeout(Some(TIMEOUT)),
        )
        .await?;
    for (t, r) in present.iter().zip(described) {
        if let Ok(resource) = r {
            let map = resource
                .entries
                .iter()
                .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
                .collect();
            configs.insert(t.name.clone(), map);
        }
    }
    Ok(configs)
}

/// How an existing topic (`found`: partitions and replication factor) compares with its plan.
fn status(
    t: &PlannedTopic,
    found: Option<(i32, i32)>,
    configs: Option<&HashMap<String, String>>,
) -> TopicStatus {
    let Some((partitions, rf)) = found else {
        return TopicStatus::Missing;
    };
    let mut drift = Vec::new();
    if partitions != t.spec.partitions {
        drift.push(format!(
            "partitions {partitions} (declared {})",
            t.spec.partitions
        ));
    }
    if rf != t.spec.replication_factor {
        drift.push(format!(
            "replication_factor {rf} (declared {})",
            t.spec.replication_factor
        ));
    }
    if let Some(actual) = configs {
        for (k, v) in &t.spec.configs {
            match actual.get(k) {
                Some(a) if a == v => {}
                a => drift.push(format!(
                    "{k}={} (declared {v})",
                    a.map_or("unset", String::as_str)
                )),
            }
        }
    }
    if drift.is_empty() {
        TopicStatus::Ok
    } else {
        TopicStatus::Drift(drift)
    }
}
