//! Several OS processes writing the same sessions at once: the test for stores that claim
//! `multiprocess_safe`.
//!
//! The parent test seeds sessions, then starts copies of its own test binary, each running one
//! `#[ignore]`d child test with its role in the environment. Each child applies keys
//! `<role><n>` to every seeded session, as fast as it can; any error (a "database is locked"
//! escaping, a lost session) fails the child and so the parent. The parent then checks that
//! every key of every child is in every session.
//!
//! Then the same key, through the session API: in each of [`TRIALS`] sessions, every child
//! runs [`UPDATES`] concurrent requests that each push an item to one list with
//! [`Session::update`](sessionkit_core::Session::update) and increment one counter. The
//! parent checks that every item is in the list exactly once and that the counter counted
//! every request.
//!
//! ```ignore
//! #[test]
//! fn two_processes_share_one_store() {
//!     multiprocess::run_parent("child", &url, 2, open);
//! }
//! #[test]
//! #[ignore = "run by two_processes_share_one_store"]
//! fn child() {
//!     multiprocess::run_child(open);
//! }
//! ```

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::{
    ApplyOutcome, Change, CleanupPolicy, CookieUpdate, Record, SessionKey, SessionManager, Store,
    Timestamp,
};

use crate::fresh_key;

const ENV_URL: &str = "SESSIONKIT_CHILD_URL";
const ENV_ROLE: &str = "SESSIONKIT_CHILD_ROLE";
const ENV_KEYS: &str = "SESSIONKIT_CHILD_KEYS";
const ENV_ROUNDS: &str = "SESSIONKIT_CHILD_ROUNDS";
const ENV_COOKIES: &str = "SESSIONKIT_CHILD_COOKIES";

/// Sessions each run seeds, and rounds of writes each child makes to every one of them.
pub const SESSIONS: usize = 8;
/// Rounds of writes per child.
pub const ROUNDS: usize = 250;
/// Sessions whose one list and one counter every child updates concurrently.
pub const TRIALS: usize = 3;
/// Concurrent update requests per child and session.
pub const UPDATES: usize = 50;

fn manager<S: Store>(store: &Arc<S>) -> SessionManager {
    SessionManager::builder(Arc::clone(store))
        .cleanup(CleanupPolicy::Off)
        .build()
        .expect("valid settings")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Starts a copy of this test binary running only `child_test`, with `env` added.
///
/// # Panics
/// If the binary cannot be found or started.
pub fn spawn_child(child_test: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args([
            child_test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("starting a child test process")
}

/// The parent: seeds sessions in the store at `url`, runs `children` processes of `child_test`
/// against them, and checks that every write of every child survived.
///
/// # Panics
/// If a child fails or any write is missing.
pub fn run_parent<S, F, Fut>(child_test: &str, url: &str, children: usize, open: F)
where
    S: Store,
    F: Fn(String) -> Fut,
    Fut: Future<Output = sessionkit_core::Result<S>>,
{
    let runtime = runtime();
    let store = Arc::new(
        runtime
            .block_on(open(url.to_owned()))
            .expect("opening the store in the parent"),
    );
    let manager = manager(&store);
    let cookies: Vec<String> = runtime.block_on(async {
        let mut cookies = Vec::new();
        for _ in 0..TRIALS {
            let session = manager.session(None);
            session.insert("seeded", &true).await.expect("insert");
            match session.commit().await.expect("commit").cookie {
                CookieUpdate::Set { id, .. } => cookies.push(id.expose()),
                other => panic!("a new session sets a cookie, got {other:?}"),
            }
        }
        cookies
    });
    let keys: Vec<SessionKey> = runtime.block_on(async {
        let mut keys = Vec::new();
        for _ in 0..SESSIONS {
            let key = fresh_key();
            let record = Record::new(
                Timestamp::now(),
                Timestamp::now().saturating_add(Duration::from_secs(3600)),
            );
            store
                .create(&key, &record)
                .await
                .expect("seeding a session");
            keys.push(key);
        }
        keys
    });
    let key_list = keys
        .iter()
        .map(SessionKey::to_hex)
        .collect::<Vec<_>>()
        .join(",");
    let roles: Vec<String> = (0..children).map(|i| format!("p{i}_")).collect();
    let running: Vec<Child> = roles
        .iter()
        .map(|role| {
            spawn_child(
                child_test,
                &[
                    (ENV_URL, url.to_owned()),
                    (ENV_ROLE, role.clone()),
                    (ENV_KEYS, key_list.clone()),
                    (ENV_ROUNDS, ROUNDS.to_string()),
                    (ENV_COOKIES, cookies.join(",")),
                ],
            )
        })
        .collect();
    for mut child in running {
        let status = child.wait().expect("waiting for a child");
        assert!(status.success(), "a child process failed: {status}");
    }
    runtime.block_on(async {
        for key in &keys {
            let record = store
                .load(key)
                .await
                .expect("load")
                .expect("every seeded session is alive");
            for role in &roles {
                for round in 0..ROUNDS {
                    let name = format!("{role}{round}");
                    assert_eq!(
                        record.data.get(&name).map(Vec::as_slice),
                        Some(name.as_bytes()),
                        "write {name} of session {} was lost",
                        key.short()
                    );
                }
            }
            assert_eq!(record.data.len(), roles.len() * ROUNDS);
            assert_eq!(record.version, 1 + (roles.len() * ROUNDS) as u64);
        }
        for (trial, cookie) in cookies.iter().enumerate() {
            let session = manager.session(Some(cookie));
            let mut list: Vec<String> = session.get("list").await.expect("get").unwrap_or_default();
            list.sort();
            let mut expected: Vec<String> = roles
                .iter()
                .flat_map(|role| (0..UPDATES).map(move |i| format!("{role}{i}")))
                .collect();
            expected.sort();
            assert_eq!(list, expected, "trial {trial}: every pushed item, once");
            assert_eq!(
                session.get::<usize>("count").await.expect("get"),
                Some(roles.len() * UPDATES),
                "trial {trial}: every increment"
            );
        }
    });
}

/// A child's concurrent update requests to each session in `cookies`.
async fn update_concurrently<S: Store>(store: &Arc<S>, role: &str, cookies: &str) {
    let manager = manager(store);
    for cookie in cookies.split(',').filter(|c| !c.is_empty()) {
        let requests: Vec<_> = (0..UPDATES)
            .map(|i| {
                let (manager, cookie) = (manager.clone(), cookie.to_owned());
                let item = format!("{role}{i}");
                tokio::spawn(async move {
                    let session = manager.session(Some(&cookie));
                    session
                        .update("list", move |list: &mut Vec<String>| {
                            list.push(item.clone())
                        })
                        .await?;
                    session.update("count", |n: &mut usize| *n += 1).await?;
                    session.commit().await
                })
            })
            .collect();
        for request in requests {
            match request.await.expect("task") {
                Ok(committed) => assert!(!committed.gone, "child {role}: the session is gone"),
                Err(err) => panic!(
                    "update failed in child {role}: {err} ({:?})",
                    std::error::Error::source(&err)
                ),
            }
        }
    }
}

/// The child: applies its writes to every session named in its environment. Does nothing when
/// started without that environment (a plain `cargo test -- --ignored` run).
///
/// # Panics
/// On any store error or a session reported gone: the parent sees the failed exit status.
pub fn run_child<S, F, Fut>(open: F)
where
    S: Store,
    F: Fn(String) -> Fut,
    Fut: Future<Output = sessionkit_core::Result<S>>,
{
    let (Ok(url), Ok(role), Ok(keys), Ok(rounds), Ok(cookies)) = (
        std::env::var(ENV_URL),
        std::env::var(ENV_ROLE),
        std::env::var(ENV_KEYS),
        std::env::var(ENV_ROUNDS),
        std::env::var(ENV_COOKIES),
    ) else {
        eprintln!("not started by a multi-process parent test; nothing to do");
        return;
    };
    let keys: Vec<SessionKey> = keys
        .split(',')
        .map(|k| SessionKey::from_hex(k).expect("key from the parent"))
        .collect();
    let rounds: usize = rounds.parse().expect("rounds from the parent");
    let runtime = runtime();
    runtime.block_on(async {
        let store = Arc::new(open(url).await.expect("opening the store in a child"));
        for round in 0..rounds {
            for key in &keys {
                let name = format!("{role}{round}");
                let mut change = Change::default();
                change.set(name.clone(), name.into_bytes());
                match store.apply(key, &change).await {
                    Ok(ApplyOutcome::Applied { .. }) => {}
                    Ok(other) => panic!("session {}: {other:?}", key.short()),
                    Err(err) => panic!(
                        "apply failed in child {role}: {err} ({:?})",
                        std::error::Error::source(&err)
                    ),
                }
            }
        }
        update_concurrently(&store, &role, &cookies).await;
    });
}
