//! The SQLite layout choice: per-key rows against one JSON document per session. (Store
//! operations next to the raw floor are in `sessionkit-bench`.)
//!
//! Run: `cargo bench -p sessionkit-sqlite --bench sqlite` (results: docs/BENCHMARKS.md).

#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use sessionkit_core::{SessionId, SessionKey, Timestamp};

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
    targets = layouts
}
criterion_main!(benches);
