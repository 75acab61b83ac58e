//! The public multiplexed connection against the live test Redis: idle connections and slow
//! replies within the timeout are kept, hundreds of concurrent and large requests each get
//! their own reply, and pipelines and transactions get theirs in order. Required under
//! CI=true; skipped loudly elsewhere.

use std::time::Duration;

use redis::RedisResult;
use sessionkit_redis::Multiplexed;

/// The test server, or `None` (a loud skip; a failure under CI=true).
async fn test_server() -> Option<Multiplexed> {
    test_server_with(Duration::from_secs(5)).await
}

async fn test_server_with(timeout: Duration) -> Option<Multiplexed> {
    let url = "redis://127.0.0.1:6379";
    let info = redis::Client::open(url).ok()?.get_connection_info().clone();
    let conn = Multiplexed::new(&info, timeout).ok()?;
    match conn.connect().await {
        Ok(()) => Some(conn),
        Err(err) => sessionkit_conformance::server_unavailable("Redis", url, err),
    }
}

/// The watchdog breaks a connection whose requests wait without replies, not one that
/// merely has nothing to do, nor one whose single request is slow but shorter than the
/// timeout.
#[tokio::test]
async fn an_idle_connection_or_a_slow_reply_within_the_timeout_is_kept() {
    let Some(mut conn) = test_server_with(Duration::from_millis(300)).await else {
        return;
    };
    let client_id = |conn: &mut Multiplexed| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("CLIENT")
                .arg("ID")
                .query_async::<i64>(&mut conn)
                .await
                .expect("CLIENT ID")
        }
    };
    let first = client_id(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(client_id(&mut conn).await, first, "idle for 3 timeouts");
    let key = format!("sktest_slow_{}", std::process::id());
    let nothing: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(&key)
        .arg(0.15)
        .query_async(&mut conn)
        .await
        .expect("a 150 ms BLPOP under a 300 ms timeout");
    assert_eq!(nothing, None);
    assert_eq!(client_id(&mut conn).await, first, "after a slow reply");
}

/// Hundreds of concurrent requests (many full batches, written by the requests that fill
/// them) and large ones (writes the socket does not take whole, finished by the writer
/// task) each get their own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_large_requests_get_their_own_replies() {
    let Some(conn) = test_server().await else {
        return;
    };
    let prefix = format!("sktest_many_{}", std::process::id());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let mut conn = conn.clone();
        let message = format!("{prefix}_{i}");
        tasks.spawn(async move {
            let echoed: String = redis::cmd("ECHO")
                .arg(&message)
                .query_async(&mut conn)
                .await
                .expect("ECHO");
            assert_eq!(echoed, message);
        });
    }
    for i in 0..32_u8 {
        let mut conn = conn.clone();
        let key = format!("{prefix}_big_{i}");
        tasks.spawn(async move {
            let value = vec![i; 2 * 1024 * 1024];
            let () = redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("EX")
                .arg(60)
                .query_async(&mut conn)
                .await
                .expect("SET 2 MiB");
            let back: Vec<u8> = redis::cmd("GETDEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("GETDEL");
            assert!(back == value, "{key} came back whole");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("every request got its own reply");
    }
}

/// Pipelines (not used by the store, but part of `ConnectionLike`) get their replies in
/// order, a transaction's `OK`/`QUEUED` are skipped, an error reply fails the whole
/// request, and the replies after it still reach the right requests.
#[tokio::test]
async fn pipelines_and_transactions_get_their_own_replies() {
    let Some(mut conn) = test_server().await else {
        return;
    };
    let key = format!("sktest_pipe_{}", std::process::id());
    let got: (String, i64) = redis::pipe()
        .set(&key, "v")
        .ignore()
        .get(&key)
        .strlen(&key)
        .query_async(&mut conn)
        .await
        .expect("plain pipeline");
    assert_eq!(got, ("v".to_owned(), 1));
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .set(&key, 1)
        .ignore()
        .del(&key)
        .query_async(&mut conn)
        .await
        .expect("MULTI/EXEC");
    assert_eq!(n, 1, "the DEL's reply, after OK, QUEUED, QUEUED");
    let failed: RedisResult<(i64, i64)> = redis::pipe()
        .cmd("PING")
        .cmd("NO-SUCH-COMMAND")
        .query_async(&mut conn)
        .await;
    assert!(failed.is_err(), "an error reply fails the pipeline");
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("later requests get their own replies");
    assert_eq!(pong, "PONG");
}
