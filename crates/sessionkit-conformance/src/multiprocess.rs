//! Several OS processes writing the same sessions at once: the test for stores that claim
//! `multiprocess_safe`.
//!
//! The parent test seeds sessions, then starts copies of its own test binary, each running one
//! `#[ignore]`d child test with its role in the environment. Each child applies keys
//! `<role><n>` to every seeded session, as fast as it can; any error (a "database is locked"
//! escaping, a lost session) fails the child and so the parent. The parent then checks that
//! every key of every child is in every session.
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
use std::time::Duration;

use sessionkit_core::{ApplyOutcome, Change, Record, SessionKey, Store, Timestamp};

use crate::fresh_key;

const ENV_URL: &str = "SESSIONKIT_CHILD_URL";
const ENV_ROLE: &str = "SESSIONKIT_CHILD_ROLE";
const ENV_KEYS: &str = "SESSIONKIT_CHILD_KEYS";
const ENV_ROUNDS: &str = "SESSIONKIT_CHILD_ROUNDS";

/// Sessions each run seeds, and rounds of writes each child makes to every one of them.
pub const SESSIONS: usize = 8;
/// Rounds of writes per child.
pub const ROUNDS: usize = 250;

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
    let store = runtime
        .block_on(open(url.to_owned()))
        .expect("opening the store in the parent");
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
    });
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
    let (Ok(url), Ok(role), Ok(keys), Ok(rounds)) = (
        std::env::var(ENV_URL),
        std::env::var(ENV_ROLE),
        std::env::var(ENV_KEYS),
        std::env::var(ENV_ROUNDS),
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
        let store = open(url).await.expect("opening the store in a child");
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
    });
}
