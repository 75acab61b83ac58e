//! The test Redis behind Sentinel (`.ci/services`): a master and a replica with a password,
//! watched by three Sentinels as `sessionkit`, each server restarted 8 s after it dies; and
//! what a failover test needs: the store URL, and killing the master once the group is healthy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The Sentinels' addresses.
pub const SENTINELS: [&str; 3] = ["127.0.0.1:26391", "127.0.0.1:26392", "127.0.0.1:26393"];

/// The name the Sentinels know the master by.
pub const MASTER_NAME: &str = "sessionkit";

/// The password of the master and replica (the Sentinels have none).
pub const PASSWORD: &str = "sentinel-data-1";

/// The store URL of the test Sentinel group (`SESSIONKIT_REDIS_SENTINEL_URL`).
pub fn url() -> String {
    std::env::var("SESSIONKIT_REDIS_SENTINEL_URL").unwrap_or_else(|_| {
        format!(
            "redis+sentinel://:{PASSWORD}@{}/{MASTER_NAME}",
            SENTINELS.join(",")
        )
    })
}

/// How long a Sentinel group may take to be healthy again (a killed server comes back after
/// 8 s and is then made a replica).
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

async fn connection(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// The master's address as the first Sentinel sees it.
async fn master_address() -> redis::RedisResult<(String, u16)> {
    let mut sentinel = connection(&format!("redis://{}", SENTINELS[0])).await?;
    redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER_NAME)
        .query_async(&mut sentinel)
        .await
}

/// A connection to the server at `address`, logged in.
async fn server(address: &(String, u16)) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    connection(&format!("redis://:{PASSWORD}@{}:{}", address.0, address.1)).await
}

async fn info(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
) -> redis::RedisResult<String> {
    redis::cmd("INFO").arg(section).query_async(conn).await
}

/// Whether every Sentinel names the same master, each sees a replica as up, and that replica
/// really replicates the master (a killed server comes back as an empty master and stays one
/// until a Sentinel converts it, while the Sentinels may already list it as a replica).
async fn healthy() -> redis::RedisResult<bool> {
    let master = master_address().await?;
    let mut replica = None;
    for address in SENTINELS {
        let mut sentinel = connection(&format!("redis://{address}")).await?;
        let seen: (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER_NAME)
            .query_async(&mut sentinel)
            .await?;
        let replicas: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(MASTER_NAME)
            .query_async(&mut sentinel)
            .await?;
        let up = replicas
            .iter()
            .filter(|r| r.get("flags").is_some_and(|f| f == "slave"))
            .find_map(|r| Some((r.get("ip")?.clone(), r.get("port")?.parse().ok()?)));
        if seen != master || up.is_none() {
            return Ok(false);
        }
        replica = up;
    }
    let Some(replica) = replica else {
        return Ok(false);
    };
    let master_info = info(&mut server(&master).await?, "replication").await?;
    let replica_info = info(&mut server(&replica).await?, "replication").await?;
    Ok(master_info.contains("role:master")
        && master_info.contains("state=online")
        && replica_info.contains("role:slave")
        && replica_info.contains("master_link_status:up")
        && replica_info.contains(&format!("master_port:{}", master.1)))
}

/// Waits until the group is healthy (a failover an earlier test caused is over, the killed
/// server is a replica again); returns at once if no Sentinel answers (the store factory then
/// skips or fails as for any server that is down).
///
/// # Panics
/// If Sentinels answer but the group is not healthy within a minute.
pub async fn wait_until_healthy() {
    if master_address().await.is_err() {
        return;
    }
    let deadline = Instant::now() + HEALTHY_WITHIN;
    while !healthy().await.unwrap_or(false) {
        assert!(
            Instant::now() < deadline,
            "the Sentinel group did not become healthy within {HEALTHY_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the group is healthy, then kills its master's process (`kill -9`): the
/// Sentinels must promote the replica. Returns the killed master's address once it is dead.
///
/// # Panics
/// If the group is not healthy within a minute, or the master cannot be killed.
pub async fn kill_master() -> (String, u16) {
    wait_until_healthy().await;
    let master = master_address().await.expect("the master's address");
    let mut conn = server(&master).await.expect("a connection to the master");
    // Everything written so far reaches the replica before the master dies.
    let replicas: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query_async(&mut conn)
        .await
        .expect("WAIT");
    assert_eq!(replicas, 1, "the replica has everything before the kill");
    let info = info(&mut conn, "server").await.expect("INFO server");
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .expect("the master's process id")
        .trim()
        .to_owned();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -9 of the master failed");
    master
}

/// The address of a replica the first Sentinel sees as up, once the group is healthy.
///
/// # Panics
/// If no Sentinel answers or none lists a replica that is up.
pub async fn replica_address() -> (String, u16) {
    wait_until_healthy().await;
    let mut sentinel = connection(&format!("redis://{}", SENTINELS[0]))
        .await
        .expect("a Sentinel");
    let replicas: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(MASTER_NAME)
        .query_async(&mut sentinel)
        .await
        .expect("SENTINEL replicas");
    replicas
        .iter()
        .filter(|r| r.get("flags").is_some_and(|f| f == "slave"))
        .find_map(|r| Some((r.get("ip")?.clone(), r.get("port")?.parse().ok()?)))
        .expect("a replica that is up")
}

/// The master's address now (after a failover, the promoted replica's).
///
/// # Panics
/// If no Sentinel answers.
pub async fn current_master() -> (String, u16) {
    master_address().await.expect("the master's address")
}
