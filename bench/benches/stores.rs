//! Every embedded store through the same operations, each next to its raw floor: the driver
//! doing the same reads and writes with no session layer (no async, no thread hop).
//!
//! Run: `cargo bench -p sessionkit-bench --bench stores`

#![allow(missing_docs)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use redb::ReadableDatabase;
use sessionkit_core::{ApplyOutcome, Change, Record, SessionId, SessionKey, Store, Timestamp};

const HOUR: Duration = Duration::from_secs(3600);

fn seeded_record() -> Record {
    let mut record = Record::new(Timestamp::now(), Timestamp::now().saturating_add(HOUR));
    record.data.insert("profile".into(), vec![b'p'; 150]);
    record.data.insert("counter".into(), vec![0; 8]);
    record.data.insert("csrf".into(), vec![b'c'; 32]);
    record
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt")
}

/// The same four measurements for any store.
fn bench_store(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn Store>,
) {
    let key = SessionId::generate().expect("rng").key();
    runtime
        .block_on(store.create(&key, &seeded_record()))
        .expect("create");
    let mut group = c.benchmark_group(name);
    group.bench_function("load", |b| {
        b.to_async(runtime)
            .iter(|| async { store.load(&key).await.expect("load").expect("live") })
    });
    group.bench_function("load_keys(1 of 3)", |b| {
        b.to_async(runtime).iter(|| async {
            store
                .load_keys(&key, &["counter"])
                .await
                .expect("load")
                .expect("live")
        })
    });
    let mut n = 0u64;
    group.bench_function("apply(1 key)", |b| {
        b.to_async(runtime).iter(|| {
            n += 1;
            let mut change = Change::default();
            change.set("counter".into(), n.to_le_bytes().to_vec());
            let store = &store;
            async move { store.apply(&key, &change).await.expect("apply") }
        })
    });
    // The same write as `update` sends it: conditional on the value it replaces (which holds,
    // so every apply lands). The distance to `apply(1 key)` is what the condition costs.
    let mut seen = runtime
        .block_on(store.load_keys(&key, &["counter"]))
        .expect("load")
        .and_then(|r| r.data.get("counter").cloned());
    group.bench_function("apply_if(1 key)", |b| {
        b.to_async(runtime).iter(|| {
            n += 1;
            let value = n.to_le_bytes().to_vec();
            let mut change = Change::default();
            change.expect("counter", seen.as_deref());
            change.set("counter".into(), value.clone());
            seen = Some(value);
            let store = &store;
            async move {
                let outcome = store.apply(&key, &change).await.expect("apply");
                assert!(
                    matches!(outcome, ApplyOutcome::Applied { .. }),
                    "{outcome:?}"
                );
            }
        })
    });
    let mut seed = Change::default();
    for i in 0..64u64 {
        seed.set(format!("k{i}"), i.to_le_bytes().to_vec());
    }
    let _ = runtime.block_on(store.apply(&key, &seed)).expect("seed");
    for conditional in [false, true] {
        let name = if conditional { "apply_if" } else { "apply" };
        group.bench_function(format!("{name}(1 key) x64 concurrent, per apply"), |b| {
            b.to_async(runtime).iter_custom(|iters| {
                let store = Arc::clone(&store);
                async move {
                    let started = Instant::now();
                    let batches = iters.div_ceil(64);
                    for _ in 0..batches {
                        let tasks: Vec<_> = (0..64u64)
                            .map(|i| {
                                let store = Arc::clone(&store);
                                tokio::spawn(async move {
                                    let mut change = Change::default();
                                    let name = format!("k{i}");
                                    if conditional {
                                        // As `update` writes: conditional on the value it
                                        // replaces (which holds: every write keeps it).
                                        change.expect(&name, Some(&i.to_le_bytes()));
                                    }
                                    change.set(name, i.to_le_bytes().to_vec());
                                    store.apply(&key, &change).await.expect("apply")
                                })
                            })
                            .collect();
                        for task in tasks {
                            let _ = task.await.expect("task");
                        }
                    }
                    started
                        .elapsed()
                        .mul_f64(iters as f64 / (batches * 64) as f64)
                }
            })
        });
    }
    group.finish();
}

fn stores(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("dir");
    let memory: Arc<dyn Store> = Arc::new(sessionkit_memory::MemoryStore::new());
    bench_store(c, &runtime, "memory", memory);
    let sqlite = runtime
        .block_on(sessionkit_sqlite::SqliteStore::open(
            dir.path().join("s.db"),
        ))
        .expect("sqlite");
    bench_store(c, &runtime, "sqlite", Arc::new(sqlite));
    let file = runtime
        .block_on(sessionkit_file::FileStore::open(dir.path().join("files")))
        .expect("file");
    bench_store(c, &runtime, "file", Arc::new(file));
    let redb = runtime
        .block_on(sessionkit_redb::RedbStore::open(dir.path().join("s.redb")))
        .expect("redb");
    bench_store(c, &runtime, "redb", Arc::new(redb));
    match runtime.block_on(sessionkit_testkit::postgres()) {
        Some(store) => bench_store(c, &runtime, "postgres", store),
        None => eprintln!("PostgreSQL is down: no postgres numbers"),
    }
    match runtime.block_on(sessionkit_testkit::mysql()) {
        Some(store) => bench_store(c, &runtime, "mysql", store),
        None => eprintln!("MariaDB is down: no mysql numbers"),
    }
}

/// Redis (standalone and cluster) and Memcached, each test in its own namespace.
fn cache_stores(c: &mut Criterion) {
    let runtime = runtime();
    let ns = sessionkit_testkit::scratch_table();
    let open = |url: String| runtime.block_on(sessionkit::open(&url));
    match open(format!("redis://127.0.0.1:6379?namespace={ns}")) {
        Ok(store) => bench_store(c, &runtime, "redis", store),
        Err(err) => eprintln!("no redis numbers: {err}"),
    }
    match open(format!(
        "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003?namespace={ns}"
    )) {
        Ok(store) => bench_store(c, &runtime, "redis-cluster", store),
        Err(err) => eprintln!("no redis cluster numbers: {err}"),
    }
    match open(format!(
        "memcached://127.0.0.1:11211,127.0.0.1:11212?namespace={ns}"
    )) {
        Ok(store) => bench_store(c, &runtime, "memcached", store),
        Err(err) => eprintln!("no memcached numbers: {err}"),
    }
}

/// The raw drivers: redis-rs (multiplexed, the store's driver) and fred (the candidate it was
/// measured against) doing one HGETALL and one HSET of a session-sized hash; and a bare socket
/// doing Memcached's get and cas-free set.
fn floor_caches(c: &mut Criterion) {
    use fred::prelude::{ClientLike, HashesInterface};
    let runtime = runtime();
    let key = "sessionkit-bench:floor";
    let fields: Vec<(&str, Vec<u8>)> = vec![
        ("__c", b"1".to_vec()),
        ("__e", b"9999999999999".to_vec()),
        ("d:profile", vec![b'p'; 150]),
        ("d:counter", vec![0; 8]),
    ];
    let Ok(client) = redis::Client::open("redis://127.0.0.1:6379") else {
        return;
    };
    let Ok(mut conn) = runtime.block_on(client.get_multiplexed_async_connection()) else {
        return;
    };
    runtime
        .block_on(
            redis::cmd("HSET")
                .arg(key)
                .arg(&fields)
                .query_async::<()>(&mut conn),
        )
        .expect("seed");
    let mut group = c.benchmark_group("floor-redis");
    group.bench_function("redis-rs HGETALL", |b| {
        b.to_async(&runtime).iter(|| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("HGETALL")
                    .arg(key)
                    .query_async::<Vec<Vec<u8>>>(&mut conn)
                    .await
                    .expect("hgetall")
            }
        })
    });
    group.bench_function("redis-rs HSET", |b| {
        b.to_async(&runtime).iter(|| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("HSET")
                    .arg(key)
                    .arg("d:counter")
                    .arg(&[1u8; 8][..])
                    .query_async::<()>(&mut conn)
                    .await
                    .expect("hset")
            }
        })
    });
    let fred_client = fred::prelude::Builder::default_centralized()
        .build()
        .expect("fred client");
    runtime.block_on(fred_client.init()).expect("fred connect");
    group.bench_function("fred HGETALL", |b| {
        b.to_async(&runtime).iter(|| async {
            fred_client
                .hgetall::<std::collections::HashMap<String, Vec<u8>>, _>(key)
                .await
                .expect("hgetall")
        })
    });
    group.bench_function("fred HSET", |b| {
        b.to_async(&runtime).iter(|| async {
            fred_client
                .hset::<(), _, _>(key, ("d:counter", vec![1u8; 8]))
                .await
                .expect("hset")
        })
    });
    for (name, concurrent) in [("redis-rs", true), ("fred", false)] {
        group.bench_function(format!("{name} HGETALL x64 concurrent, per op"), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let (conn, fred_client) = (conn.clone(), fred_client.clone());
                async move {
                    let started = Instant::now();
                    let batches = iters.div_ceil(64);
                    for _ in 0..batches {
                        let tasks: Vec<_> = (0..64)
                            .map(|_| {
                                let (mut conn, fred_client) = (conn.clone(), fred_client.clone());
                                tokio::spawn(async move {
                                    if concurrent {
                                        let _: Vec<Vec<u8>> = redis::cmd("HGETALL")
                                            .arg(key)
                                            .query_async(&mut conn)
                                            .await
                                            .expect("hgetall");
                                    } else {
                                        let _: std::collections::HashMap<String, Vec<u8>> =
                                            fred_client.hgetall(key).await.expect("hgetall");
                                    }
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("task");
                        }
                    }
                    started
                        .elapsed()
                        .mul_f64(iters as f64 / (batches * 64) as f64)
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("floor-memcached");
    let value = seeded_record().to_blob().expect("blob");
    let Ok(stream) = runtime.block_on(tokio::net::TcpStream::connect("127.0.0.1:11211")) else {
        return;
    };
    let stream = std::sync::Arc::new(tokio::sync::Mutex::new(tokio::io::BufReader::new(stream)));
    let exchange = |request: Vec<u8>, until: &'static [u8]| {
        let stream = std::sync::Arc::clone(&stream);
        async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            let mut stream = stream.lock().await;
            stream.get_mut().write_all(&request).await.expect("write");
            let mut reply = Vec::new();
            while !reply.ends_with(until) {
                stream.read_until(b'\n', &mut reply).await.expect("read");
            }
            reply
        }
    };
    let mut set = format!("set sessionkit-bench:floor 0 3600 {}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    runtime.block_on(exchange(set.clone(), b"STORED\r\n"));
    group.bench_function("get", |b| {
        b.to_async(&runtime)
            .iter(|| exchange(b"gets sessionkit-bench:floor\r\n".to_vec(), b"END\r\n"))
    });
    group.bench_function("set", |b| {
        b.to_async(&runtime)
            .iter(|| exchange(set.clone(), b"STORED\r\n"))
    });
    group.finish();
}

/// The stores' own drivers running the stores' own statements for the common case (a small
/// session, all inline) on the stores' own tables, without the stores: tokio-postgres with a
/// prepared statement for PostgreSQL, sqlx for MySQL.
fn floor_sql(c: &mut Criterion) {
    use sqlx::AssertSqlSafe;
    let runtime = runtime();
    let Some(pg) = runtime.block_on(sessionkit_testkit::postgres()) else {
        return;
    };
    let Some(my) = runtime.block_on(sessionkit_testkit::mysql()) else {
        return;
    };
    let key = SessionId::generate().expect("rng").key();
    runtime
        .block_on(pg.create(&key, &seeded_record()))
        .expect("create");
    runtime
        .block_on(my.create(&key, &seeded_record()))
        .expect("create");
    let k = key.as_bytes().to_vec();
    let table = |store: &Arc<dyn Store>| {
        let ddl = store.schema().expect("ddl");
        let start = ddl.find("EXISTS ").expect("table") + 7;
        ddl[start..]
            .split_whitespace()
            .next()
            .expect("name")
            .to_owned()
    };
    let (pt, mt) = (table(&pg), table(&my));
    let pg_client = runtime.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&sessionkit_testkit::postgres_url(), tokio_postgres::NoTls)
                .await
                .expect("pg");
        tokio::spawn(connection);
        client
    });
    let my_pool = runtime
        .block_on(sqlx::MySqlPool::connect(&sessionkit_testkit::mysql_url()))
        .expect("mysql");

    let mut group = c.benchmark_group("floor-postgres");
    let load = runtime
        .block_on(pg_client.prepare(&format!(
            "SELECT created_at, expires_at, owner, version, moved_to, data::text FROM {pt} WHERE key = $1 AND expires_at > $2"
        )))
        .expect("prepare");
    group.bench_function("load", |b| {
        b.to_async(&runtime).iter(|| async {
            pg_client
                .query(&load, &[&k, &Timestamp::now().as_millis()])
                .await
                .expect("load")
        })
    });
    let apply = runtime
        .block_on(pg_client.prepare(&format!(
            "UPDATE {pt} SET version = version + 1, data = data || $3::text::jsonb WHERE key = $1 AND expires_at > $2 AND moved_to IS NULL RETURNING version"
        )))
        .expect("prepare");
    group.bench_function("apply(1 key)", |b| {
        b.to_async(&runtime).iter(|| async {
            pg_client
                .query(
                    &apply,
                    &[&k, &Timestamp::now().as_millis(), &r#"{"counter":"AQ"}"#],
                )
                .await
                .expect("apply")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("floor-mysql");
    let load = format!(
        "SELECT created_at, expires_at, owner, version, moved_to, data FROM {mt} WHERE `key` = ? AND expires_at > ?"
    );
    group.bench_function("load", |b| {
        b.to_async(&runtime).iter(|| async {
            sqlx::query(AssertSqlSafe(load.clone()))
                .bind(&k)
                .bind(Timestamp::now().as_millis())
                .fetch_all(&my_pool)
                .await
                .expect("load")
        })
    });
    let apply = format!(
        "UPDATE {mt} SET version = LAST_INSERT_ID(version + 1), data = JSON_MERGE_PATCH(data, ?) WHERE `key` = ? AND expires_at > ? AND moved_to IS NULL"
    );
    group.bench_function("apply(1 key)", |b| {
        b.to_async(&runtime).iter(|| async {
            sqlx::query(AssertSqlSafe(apply.clone()))
                .bind(r#"{"counter":"AQ"}"#)
                .bind(&k)
                .bind(Timestamp::now().as_millis())
                .execute(&my_pool)
                .await
                .expect("apply")
        })
    });
    group.finish();
}

/// PostgreSQL: per-key rows (chosen) against one JSONB document patched with `jsonb_set`.
fn layout_postgres(c: &mut Criterion) {
    use sqlx::{AssertSqlSafe, Executor};
    let runtime = runtime();
    let Ok(pool) = runtime.block_on(sqlx::PgPool::connect(&sessionkit_testkit::postgres_url()))
    else {
        return;
    };
    let t = sessionkit_testkit::scratch_table();
    runtime
        .block_on(pool.execute(AssertSqlSafe(format!(
            "CREATE TABLE {t}_kv (session BYTEA NOT NULL, name TEXT NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (session, name));
             CREATE TABLE {t}_doc (key BYTEA PRIMARY KEY, version BIGINT NOT NULL, data JSONB NOT NULL);"
        ))))
        .expect("tables");
    let mut group = c.benchmark_group("postgres-layout");
    for (label, values, size) in [("small", 3usize, 60usize), ("1MiB", 16, 64 * 1024)] {
        let key = SessionId::generate()
            .expect("rng")
            .key()
            .as_bytes()
            .to_vec();
        let mut doc: Vec<(String, String)> = Vec::new();
        for i in 0..values {
            let value = "a".repeat(size);
            runtime
                .block_on(
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {t}_kv VALUES ($1, $2, $3)"
                    )))
                    .bind(&key)
                    .bind(format!("k{i}"))
                    .bind(value.as_bytes())
                    .execute(&pool),
                )
                .expect("kv");
            doc.push((format!("k{i}"), value));
        }
        let doc_text = format!(
            "{{{}}}",
            doc.iter()
                .map(|(k, v)| format!("\"{k}\": \"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        runtime
            .block_on(
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {t}_doc VALUES ($1, 1, $2::jsonb)"
                )))
                .bind(&key)
                .bind(&doc_text)
                .execute(&pool),
            )
            .expect("doc");
        let kv = format!(
            "INSERT INTO {t}_kv VALUES ($1, 'counter', $2) ON CONFLICT (session, name) DO UPDATE SET value = EXCLUDED.value"
        );
        group.bench_function(format!("{label}/per-key apply(1 key)"), |b| {
            b.to_async(&runtime).iter(|| async {
                sqlx::query(AssertSqlSafe(kv.clone()))
                    .bind(&key)
                    .bind(vec![1u8; 8])
                    .execute(&pool)
                    .await
                    .expect("kv")
            })
        });
        let patch = format!(
            "UPDATE {t}_doc SET version = version + 1, data = jsonb_set(data, '{{counter}}', to_jsonb($2::text)) WHERE key = $1"
        );
        group.bench_function(format!("{label}/jsonb apply(1 key)"), |b| {
            b.to_async(&runtime).iter(|| async {
                sqlx::query(AssertSqlSafe(patch.clone()))
                    .bind(&key)
                    .bind("12345678")
                    .execute(&pool)
                    .await
                    .expect("doc")
            })
        });
    }
    group.finish();
    let _ = runtime.block_on(pool.execute(AssertSqlSafe(format!("DROP TABLE {t}_kv, {t}_doc"))));
}

/// rusqlite on the same schema and statements the store uses.
fn floor_sqlite(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("floor.db");
    let store = runtime
        .block_on(sessionkit_sqlite::SqliteStore::open(&path))
        .expect("schema");
    let key = SessionId::generate().expect("rng").key();
    runtime
        .block_on(store.create(&key, &seeded_record()))
        .expect("create");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
    .expect("pragmas");
    let k = key.as_bytes().to_vec();
    let mut group = c.benchmark_group("floor-sqlite");
    group.bench_function("load", |b| {
        b.iter(|| {
            conn.prepare_cached("SELECT s.created_at, s.expires_at, s.owner, s.version, s.moved_to, v.name, v.value FROM sessions s LEFT JOIN sessions_values v ON v.session = s.key WHERE s.key = ?1 AND s.expires_at > ?2")
                .and_then(|mut s| s.query_map(rusqlite::params![k, Timestamp::now().as_millis()], |r| Ok((r.get::<_, Option<String>>(5)?, r.get::<_, Option<Vec<u8>>>(6)?)))?.collect::<Result<Vec<_>, _>>())
                .expect("load")
        })
    });
    group.bench_function("load_keys(1 of 3)", |b| {
        b.iter(|| {
            conn.prepare_cached(
                "SELECT value FROM sessions_values WHERE session = ?1 AND name = ?2",
            )
            .and_then(|mut s| {
                s.query_row(rusqlite::params![k, "counter"], |r| r.get::<_, Vec<u8>>(0))
            })
            .expect("load")
        })
    });
    let mut n = 0u64;
    group.bench_function("apply(1 key)", |b| {
        b.iter(|| {
            n += 1;
            let tx = conn.unchecked_transaction().expect("tx");
            tx.prepare_cached("UPDATE sessions SET version = version + 1 WHERE key = ?1 AND expires_at > ?2 AND moved_to IS NULL RETURNING version")
                .and_then(|mut s| s.query_row(rusqlite::params![k, Timestamp::now().as_millis()], |r| r.get::<_, i64>(0)))
                .expect("bump");
            tx.prepare_cached("INSERT INTO sessions_values (session, name, value) VALUES (?1, ?2, ?3) ON CONFLICT (session, name) DO UPDATE SET value = excluded.value")
                .and_then(|mut s| s.execute(rusqlite::params![k, "counter", n.to_le_bytes().to_vec()]))
                .expect("upsert");
            tx.commit().expect("commit");
        })
    });
    group.finish();
}

/// std::fs doing what the file store does: read a file; write temp, fsync, rename, fsync dir.
fn floor_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("session");
    let blob = seeded_record().to_blob().expect("blob");
    std::fs::write(&path, &blob).expect("seed");
    let mut group = c.benchmark_group("floor-file");
    group.bench_function("load", |b| {
        b.iter(|| Record::from_blob(&std::fs::read(&path).expect("read")).expect("decode"))
    });
    group.bench_function("apply(1 key)", |b| {
        b.iter(|| {
            let mut record =
                Record::from_blob(&std::fs::read(&path).expect("read")).expect("decode");
            record.data.insert("counter".into(), vec![1; 8]);
            let temp = dir.path().join(".tmp");
            let mut file = std::fs::File::create(&temp).expect("create");
            file.write_all(&record.to_blob().expect("blob"))
                .expect("write");
            file.sync_all().expect("fsync");
            std::fs::rename(&temp, &path).expect("rename");
            std::fs::File::open(dir.path())
                .and_then(|d| d.sync_all())
                .expect("fsync dir");
        })
    });
    group.finish();
}

/// redb transactions on one table keyed like the store's values table.
fn floor_redb(c: &mut Criterion) {
    const VALUES: redb::TableDefinition<(&[u8; 32], &str), &[u8]> =
        redb::TableDefinition::new("values");
    let dir = tempfile::tempdir().expect("dir");
    let db = redb::Database::create(dir.path().join("floor.redb")).expect("open");
    let key: SessionKey = SessionId::generate().expect("rng").key();
    let txn = db.begin_write().expect("write");
    {
        let mut table = txn.open_table(VALUES).expect("table");
        for (name, value) in &seeded_record().data {
            table
                .insert((key.as_bytes(), name.as_str()), value.as_slice())
                .expect("insert");
        }
    }
    txn.commit().expect("commit");
    let mut group = c.benchmark_group("floor-redb");
    group.bench_function("load", |b| {
        b.iter(|| {
            let txn = db.begin_read().expect("read");
            let table = txn.open_table(VALUES).expect("table");
            table
                .range((key.as_bytes(), "")..)
                .expect("range")
                .map(|e| e.expect("entry").1.value().to_vec())
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("apply(1 key)", |b| {
        b.iter(|| {
            let txn = db.begin_write().expect("write");
            {
                let mut table = txn.open_table(VALUES).expect("table");
                table
                    .insert((key.as_bytes(), "counter"), [1u8; 8].as_slice())
                    .expect("insert");
            }
            txn.commit().expect("commit");
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = stores, floor_sqlite, floor_file, floor_redb, floor_sql, layout_postgres, cache_stores, floor_caches
}
criterion_main!(benches);
