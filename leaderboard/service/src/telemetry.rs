//! Structured logging: `tracing` with an env filter, JSON or human-readable lines.

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines with key=value fields.
    Text,
}

/// `LOG_FORMAT` and `RUST_LOG`.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log line format.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info,ingest=debug`.
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

impl Default for TelemetryArgs {
    fn default() -> TelemetryArgs {
        TelemetryArgs {
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        }
    }
}

impl TelemetryArgs {
    /// Installs the global subscriber; logs go to stderr so stdout stays for data.
    pub fn init(&self) -> anyhow::Result<()> {
        let filter = EnvFilter::try_new(&self.log_filter).map_err(|error| {
            anyhow::anyhow!("invalid log filter `{}`: {error}", self.log_filter)
        })?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let installed = match self.log_format {
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
            LogFormat::Text => builder.try_init(),
        };
        // A second init (tests start many services in one process) keeps the first.
        let _ = installed;
        Ok(())
    }
}
