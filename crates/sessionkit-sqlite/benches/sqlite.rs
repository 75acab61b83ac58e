//! SQLite store costs next to the raw rusqlite floor, and the layout choice.
//!
//! Run: `cargo bench -p sessionkit-sqlite --bench sqlite` (results: docs/BENCHMARKS.md).

#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use sessionkit_core::{Change, Record, SessionId, SessionKey, Store, Timestamp};
use sessionkit_sqlite::SqliteStore;

const HOUR: Duration = Duration::from_secs(3600);

fn small_data() -> Vec<(String, Vec<u8>)> {
    vec![
        ("profile".into(), vec![b'p'; 150]),
        ("counter".into(), vec![1, 2, 3, 4]),
        ("csrf".into(), vec![b'c'; 32]),
    ]
}

/// 16 values of 64 KiB: a 1 MiB session.
fn large_data() -> Vec<(String, Vec<u8>)> {
    (0..16)
        .map(|i| (format!("blob{i:02}"), vec![b'a' + (i as u8); 64 * 1024]))
        .collect()
}

fn raw_connection(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
    .expect("pragmas");
    conn
}

fn store_ops(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let dir = tempfile::tempdir().expect("dir");
    let store = runtime
        .block_on(SqliteStore::open(dir.path().join("store.db")))
        .expect("open");
    let key = SessionId::generate().expect("rng").key();
    let mut record = Record::new(Timestamp::now(), Timestamp::now().saturating_add(HOUR));
    record.data.extend(small_data());
    runtime
        .block_on(store.create(&key, &record))
        .expect("create");

    let mut group = c.benchmark_group("sqlite");
    group.bench_function("store/load", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.load(&key).await.expect("load").expect("live") })
    });
    group.bench_function("store/load_keys(1 of 3)", |b| {
        b.to_async(&runtime).iter(|| async {
            store
                .load_keys(&key, &["counter"])
                .await
                .expect("load")
                .expect("live")
        })
    });
    let mut n = 0u64;
    group.bench_function("store/apply(1 key)", |b| {
        b.to_async(&runtime).iter(|| {
            n += 1;
            let mut change = Change::default();
            change.set("counter".into(), n.to_le_bytes().to_vec());
            let store = &store;
            async move { store.apply(&key, &change).await.expect("apply") }
        })
    });
    group.bench_function("store/apply x64 concurrent (per apply)", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let store = store.clone();
            async move {
                let started = std::time::Instant::now();
                let batches = iters.div_ceil(64);
                for _ in 0..batches {
                    let tasks: Vec<_> = (0..64u64)
                        .map(|i| {
                            let store = store.clone();
                            tokio::spawn(async move {
                                let mut change = Change::default();
                                change.set(format!("k{i}"), i.to_le_bytes().to_vec());
                                store.apply(&key, &change).await.expect("apply")
                            })
                        })
                        .collect();
                    for task in tasks {
                        let _ = task.await.expect("task");
                    }
                }
                // criterion wants the time of `iters` applies; we ran `batches * 64`.
                started
                    .elapsed()
                    .mul_f64(iters as f64 / (batches * 64) as f64)
            }
        })
    });

    // The floor: the same statements on a plain rusqlite connection, no async, no thread hop.
    let raw = raw_connection(&dir.path().join("store.db"));
    let bytes = key.as_bytes().to_vec();
    group.bench_function("raw/load", |b| {
        let mut stmt = raw
            .prepare("SELECT s.created_at, s.expires_at, s.owner, s.version, s.moved_to, v.name, v.value FROM sessions s LEFT JOIN sessions_values v ON v.session = s.key WHERE s.key = ?1 AND s.expires_at > ?2")
            .expect("prepare");
        b.iter(|| {
            let rows: Vec<(Option<String>, Option<Vec<u8>>)> = stmt
                .query_map(params![bytes, Timestamp::now().as_millis()], |r| Ok((r.get(5)?, r.get(6)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            rows
        })
    });
    let mut m = 0u64;
    group.bench_function("raw/apply(1 key)", |b| {
        b.iter(|| {
            m += 1;
            let tx = raw.unchecked_transaction().expect("tx");
            let version: i64 = tx
                .prepare_cached("UPDATE sessions SET version = version + 1 WHERE key = ?1 AND expires_at > ?2 AND moved_to IS NULL RETURNING version")
                .and_then(|mut s| s.query_row(params![bytes, Timestamp::now().as_millis()], |r| r.get(0)))
                .expect("bump");
            tx.prepare_cached("INSERT INTO sessions_values (session, name, value) VALUES (?1, ?2, ?3) ON CONFLICT (session, name) DO UPDATE SET value = excluded.value")
                .and_then(|mut s| s.execute(params![bytes, "counter", m.to_le_bytes().to_vec()]))
                .expect("upsert");
            tx.commit().expect("commit");
            version
        })
    });
    group.finish();
}

/// Per-key rows (the chosen layout) against one JSON document per session patched in place.
fn layouts(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let conn = raw_connection(&dir.path().join("layout.db"));
    conn.execute_batch(
        "CREATE TABLE kv_s (key BLOB PRIMARY KEY, expires_at INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE kv_v (session BLOB NOT NULL REFERENCES kv_s (key) ON DELETE CASCADE, name TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (session, name));
         CREATE TABLE doc (key BLOB PRIMARY KEY, expires_at INTEGER NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL);",
    )
    .expect("schema");
    let far = Timestamp::now().saturating_add(HOUR).as_millis();
    let mut group = c.benchmark_group("sqlite-layout");
    for (label, data) in [("small", small_data()), ("1MiB", large_data())] {
        let key: SessionKey = SessionId::generate().expect("rng").key();
        let k = key.as_bytes().to_vec();
        conn.execute("INSERT INTO kv_s VALUES (?1, ?2, 1)", params![k, far])
            .expect("insert");
        let mut doc = serde_json::Map::new();
        for (name, value) in &data {
            conn.execute(
                "INSERT INTO kv_v VALUES (?1, ?2, ?3)",
                params![k, name, value],
            )
            .expect("insert");
            doc.insert(name.clone(), serde_json::Value::String(hex(value)));
        }
        conn.execute(
            "INSERT INTO doc VALUES (?1, ?2, 1, ?3)",
            params![k, far, serde_json::Value::Object(doc).to_string()],
        )
        .expect("insert");
        let mut n = 0u64;
        group.bench_function(format!("{label}/per-key apply(1 key)"), |b| {
            b.iter(|| {
                n += 1;
                let tx = conn.unchecked_transaction().expect("tx");
                tx.prepare_cached("UPDATE kv_s SET version = version + 1 WHERE key = ?1 AND expires_at > ?2")
                    .and_then(|mut s| s.execute(params![k, 0]))
                    .expect("bump");
                tx.prepare_cached("INSERT INTO kv_v VALUES (?1, 'counter', ?2) ON CONFLICT (session, name) DO UPDATE SET value = excluded.value")
                    .and_then(|mut s| s.execute(params![k, n.to_le_bytes().to_vec()]))
                    .expect("upsert");
                tx.commit().expect("commit");
            })
        });
        group.bench_function(format!("{label}/json-doc apply(1 key)"), |b| {
            b.iter(|| {
                n += 1;
                conn.prepare_cached("UPDATE doc SET version = version + 1, data = json_set(data, '$.counter', ?2) WHERE key = ?1 AND expires_at > 0")
                    .and_then(|mut s| s.execute(params![k, hex(&n.to_le_bytes())]))
                    .expect("patch");
            })
        });
        group.bench_function(format!("{label}/per-key load"), |b| {
            b.iter(|| {
                conn.prepare_cached("SELECT name, value FROM kv_v WHERE session = ?1")
                    .and_then(|mut s| {
                        s.query_map(params![k], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()
                    })
                    .expect("load")
            })
        });
        group.bench_function(format!("{label}/json-doc load"), |b| {
            b.iter(|| {
                let text: String = conn
                    .prepare_cached("SELECT data FROM doc WHERE key = ?1")
                    .and_then(|mut s| s.query_row(params![k], |r| r.get(0)))
                    .expect("load");
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
                    .expect("json")
            })
        });
    }
    group.finish();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = store_ops, layouts
}
criterion_main!(benches);
