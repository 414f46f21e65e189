//! Configuration pieces from the contract: each is a clap group read from
//! flags or the environment, so every binary reports a bad value at start-up.

use std::path::PathBuf;

use anyhow::Context;

use leaderboard_core::rules::Rules;

/// `KAFKA_BROKERS`.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
}

/// `REDIS_URL`.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL.
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,
}

/// `STORE`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Durable store: `scylla://host:9042[,host…]/keyspace` or the embedded `file://PATH`.
    #[arg(long = "store", env = "STORE", default_value = "file://./data")]
    pub store: String,
}

/// `RULES`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RulesArgs {
    /// Scoring rules file (TOML); the bundled `t20-classic` when unset.
    #[arg(long = "rules", env = "RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

impl RulesArgs {
    /// Reads and validates the rules file (the core only parses text), naming
    /// the file in any error; the bundled `t20-classic` when none is given.
    pub fn load(&self) -> anyhow::Result<Rules> {
        let Some(path) = &self.rules else {
            return Ok(Rules::t20_classic());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the rules file {}", path.display()))?;
        Rules::from_toml(&text, &path.display().to_string())
            .context("cannot load the scoring rules")
    }
}

/// `ADMIN_TOKEN`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminArgs {
    /// Bearer token for admin endpoints; when unset, admin endpoints answer 403.
    #[arg(long = "admin-token", env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}
