//! One Redis connection type for one Redis or a Redis Cluster.
//!
//! `REDIS_URL` is either `redis://host:port` (one server, through redis-rs's
//! `ConnectionManager`, which reconnects by itself) or
//! `redis+cluster://h1:p1,h2:p2,…` (any nodes of a cluster, through redis-rs's
//! async cluster client, which follows `MOVED`/`ASK`, refreshes its slot map
//! and reconnects after a failover). Both speak [`ConnectionLike`], so every
//! command, pipeline and script of the hot state runs on either; the hot
//! state keeps every multi-key command, script and transaction within one
//! hash tag, so none of them crosses slots (see `docs/redis-keys.md`).
//!
//! Notices differ: on one server they are `PUBLISH`ed (any subscriber, also a
//! pattern one, sees them); on a cluster they are `SPUBLISH`ed on sharded
//! channels, so a contest's notices load only the shard that owns the
//! contest instead of being broadcast to every node ([`Subscriber`] follows
//! either).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where `REDIS_URL` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server: its `redis://` URL.
    Single(String),
    /// A cluster: one `redis://` URL per seed node.
    Cluster(Vec<String>),
}

/// The scheme of a cluster's `REDIS_URL`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

impl Topology {
    /// Parses `REDIS_URL`; a cluster's seed list may carry credentials and a
    /// path once, at its start (`redis+cluster://user:pass@h1:1,h2:2`), which
    /// every seed then shares.
    pub fn parse(url: &str) -> RedisResult<Topology> {
        let invalid = |why: &str| -> redis::RedisError {
            (
                redis::ErrorKind::InvalidClientConfig,
                "invalid REDIS_URL",
                format!("{why}: {url}"),
            )
                .into()
        };
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            if url.starts_with("redis://") || url.starts_with("rediss://") {
                return Ok(Topology::Single(url.to_string()));
            }
            return Err(invalid(
                "expected redis://host:port or redis+cluster://host:port[,host:port…]",
            ));
        };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .map(|host| {
                if host.is_empty() || host.contains('/') || !host.contains(':') {
                    Err(invalid("every cluster node needs host:port"))
                } else {
                    Ok(format!("redis://{credentials}{host}"))
                }
            })
            .collect::<RedisResult<_>>()?;
        if seeds.is_empty() {
            return Err(invalid("a cluster needs at least one node"));
        }
        Ok(Topology::Cluster(seeds))
    }
}

/// A connection to the hot state: one server or a cluster. Cheap to clone;
/// clones share one multiplexed connection (per node, on a cluster).
#[derive(Clone)]
pub enum HotConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for HotConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HotConnection::Single(_) => "HotConnection::Single",
            HotConnection::Cluster(_) => "HotConnection::Cluster",
        })
    }
}

impl HotConnection {
    /// Whether this is a cluster (notices then travel on sharded channels).
    pub fn is_cluster(&self) -> bool {
        matches!(self, HotConnection::Cluster(_))
    }

    /// Adds a notice to `pipe`: `SPUBLISH` on a cluster, `PUBLISH` otherwise.
    pub fn notice(&self, pipe: &mut Pipeline, channel: &str, message: &str) {
        pipe.cmd(publish_command(self.is_cluster()))
            .arg(channel)
            .arg(message)
            .ignore();
    }
}

/// `SPUBLISH` on a cluster, `PUBLISH` on one server.
pub fn publish_command(cluster: bool) -> &'static str {
    if cluster {
        "SPUBLISH"
    } else {
        "PUBLISH"
    }
}

impl ConnectionLike for HotConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            HotConnection::Single(c) => c.req_packed_command(cmd),
            HotConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            HotConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            HotConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            HotConnection::Single(c) => c.get_db(),
            HotConnection::Cluster(c) => c.get_db(),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `REDIS_URL` (one server or a cluster) with a connection that
/// reconnects by itself.
pub async fn connect(url: &str) -> RedisResult<HotConnection> {
    match Topology::parse(url)? {
        Topology::Single(url) => {
            let client = redis::Client::open(url)?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_number_of_retries(2)
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            Ok(HotConnection::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
        }
        Topology::Cluster(seeds) => Ok(HotConnection::Cluster(
            cluster_builder(seeds)
                .build()?
                .get_async_connection()
                .await?,
        )),
    }
}

/// The cluster client's settings, shared by commands and subscriptions.
pub(crate) fn cluster_builder(seeds: Vec<String>) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(seeds)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        // A failover (a replica promoted) takes a few seconds: retry through it.
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(2_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_one_server_or_a_cluster() {
        assert_eq!(
            Topology::parse("redis://127.0.0.1:6379").unwrap(),
            Topology::Single("redis://127.0.0.1:6379".into())
        );
        assert_eq!(
            Topology::parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001, 10.0.0.3:7002").unwrap(),
            Topology::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7001".into(),
                "redis://10.0.0.3:7002".into(),
            ])
        );
        assert_eq!(
            Topology::parse("redis+cluster://lb:secret@h1:7000,h2:7000/").unwrap(),
            Topology::Cluster(vec![
                "redis://lb:secret@h1:7000".into(),
                "redis://lb:secret@h2:7000".into(),
            ])
        );
        for bad in [
            "redis+cluster://",
            "redis+cluster://h1",
            "redis+cluster://h1:1,,h2:2",
            "redis+cluster://h1:1/3",
            "http://h1:1",
            "127.0.0.1:6379",
        ] {
            let error = Topology::parse(bad).unwrap_err();
            assert!(error.to_string().contains("REDIS_URL"), "{bad}: {error}");
        }
    }

    #[test]
    fn notices_are_sharded_on_a_cluster() {
        assert_eq!(publish_command(true), "SPUBLISH");
        assert_eq!(publish_command(false), "PUBLISH");
    }
}
