//! `[retry]`: the delayed retry tiers, each a topic `<input>.retry.<delay>` per step.

use std::time::Duration;

use serde::Deserialize;

use super::error::{valid_topic_part, Resolver};

/// `[retry]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Delays of the retry tiers, in order (`"30s"`, `"5m"`...); each is a topic
    /// `<input>.retry.<delay>`. Empty: retryable failures are dead-lettered at once.
    #[serde(default = "d_tiers")]
    pub tiers: Vec<String>,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry { tiers: d_tiers() }
    }
}

fn d_tiers() -> Vec<String> {
    vec!["30s".into(), "5m".into(), "30m".into()]
}

/// One tier of delayed retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryTier {
    /// As written (`30s`); the suffix of the tier's topics.
    pub name: String,
    /// How long a record waits in the tier before it is processed again.
    pub delay: Duration,
}

impl RawRetry {
    /// Each tier a positive duration that can name a topic, none twice.
    pub fn resolve(&self, r: &mut Resolver<'_>) -> Vec<RetryTier> {
        let mut tiers: Vec<RetryTier> = Vec::new();
        for (i, t) in self.tiers.iter().enumerate() {
            let path = format!("retry.tiers[{i}]");
            match humantime::parse_duration(t) {
                Ok(d) if d.is_zero() => r.err(&path, "must be positive"),
                Ok(_) if !valid_topic_part(t) => r.err(
                    &path,
                    format!("{t:?} names a topic: write it without spaces, e.g. \"90s\" or \"1h\""),
                ),
                Ok(_) if tiers.iter().any(|x| x.name == *t) => {
                    r.err(&path, format!("duplicate tier {t:?}"))
                }
                Ok(delay) => tiers.push(RetryTier {
                    name: t.clone(),
                    delay,
                }),
                Err(e) => r.err(
                    &path,
                    format!("not a duration ({e}); e.g. \"30s\", \"5m\", \"1h\""),
                ),
            }
        }
        tiers
    }
}
