//! Configuration pieces from the contract: each is a clap group read from
//! flags or the environment, so every binary reports a bad value at start-up.

use std::path::PathBuf;

use anyhow::Context;

use crate::domain::rules::Rules;

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
    /// Loads and validates the rules, naming the file in any error.
    pub fn load(&self) -> anyhow::Result<Rules> {
        Rules::load(self.rules.as_deref()).context("cannot load the scoring rules")
    }
}

/// `ADMIN_TOKEN`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminArgs {
    /// Bearer token for admin endpoints; when unset, admin endpoints answer 403.
    #[arg(long = "admin-token", env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}
