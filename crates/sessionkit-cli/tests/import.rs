//! `sessionkit migrate --from tower-sessions+…` and `--from actix-session+redis://`: live
//! sessions of tower-sessions' and actix-session's stores, imported into a sessionkit store and
//! read back through sessionkit (tower-sessions' `SessionStore` over it, and sessionkit's own
//! `Session` after the cut-over).
//!
//! The Redis sessions are created by the real stores (tower-sessions-redis-store,
//! actix-session's `RedisSessionStore` behind its middleware). tower-sessions-sqlx-store cannot
//! be built here (its sqlx 0.8 links another SQLite than rusqlite), so the SQL tests create its
//! tables and write its rows with its own DDL and upsert statements, quoted from its source,
//! and tower-sessions' own `Record` in MessagePack (rmp-serde), as it does.
#![cfg(feature = "import")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sessionkit::{SessionManager, SqliteStore, Store};
use sessionkit_cli::import::{Skip, Source, Summary, actix_session_key, import};
use sessionkit_cli::{Cli, run};
use sessionkit_tower_sessions::{TowerSessionsStore, session_key};
use time::OffsetDateTime;
use tower_sessions_core::SessionStore;
use tower_sessions_core::session::{Id, Record};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn ada() -> User {
    User {
        id: 7,
        name: "ada".into(),
    }
}

/// A tower-sessions record with a user and a counter, ending `seconds` from now.
fn record(seconds: i64) -> Record {
    Record {
        id: Id::default(),
        data: HashMap::from([
            ("user".to_owned(), json!(ada())),
            ("visits".to_owned(), json!(3)),
        ]),
        expiry_date: OffsetDateTime::now_utc() + time::Duration::seconds(seconds),
    }
}

/// What each SQL test writes: live sessions (more than one page), an expired one and a row
/// whose data is not a record.
struct Fixture {
    live: Vec<Record>,
    expired: Record,
    corrupt: Id,
}

/// More than one page of the importer (500 rows).
const LIVE: usize = 520;

fn fixture() -> Fixture {
    Fixture {
        live: (0..LIVE).map(|_| record(3600)).collect(),
        expired: record(-60),
        corrupt: Id::default(),
    }
}

impl Fixture {
    /// Every row as tower-sessions-sqlx-store writes it: the id's cookie form, the rmp-serde
    /// record, the deadline.
    fn rows(&self) -> Vec<(String, Vec<u8>, OffsetDateTime)> {
        let mut rows: Vec<_> = self
            .live
            .iter()
            .chain([&self.expired])
            .map(|r| {
                let bytes = rmp_serde::to_vec(r).expect("encode a record");
                (r.id.to_string(), bytes, r.expiry_date)
            })
            .collect();
        rows.push((
            self.corrupt.to_string(),
            b"not a record".to_vec(),
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        ));
        rows
    }

    /// Imports from `from` into a fresh SQLite store, through the command, then again through
    /// the library (finding everything already there), and checks what is read back.
    async fn import_and_check(&self, from: &str) {
        let (dir, failed, again) = import_twice(from).await;
        assert_eq!(
            failed,
            "1 session(s) were not imported: 1 not a tower-sessions record (MessagePack)"
        );
        let mut expected = Summary::default();
        expected.already_there = LIVE as u64;
        expected.expired = 1;
        expected.skipped.insert(Skip::NotATowerRecord, 1);
        assert_eq!(again, expected);

        let store = TowerSessionsStore::new(sqlite(dir.path()).await);
        for live in &self.live {
            let loaded = store.load(&live.id).await.expect("load").expect("imported");
            assert_eq!(loaded.data, live.data);
            let lag = live.expiry_date - loaded.expiry_date;
            assert!(lag < time::Duration::milliseconds(1), "{lag}");
        }
        for gone in [self.expired.id, self.corrupt] {
            assert!(
                store
                    .store()
                    .load(&session_key(&gone))
                    .await
                    .expect("load")
                    .is_none(),
                "expired and corrupt sessions are not imported"
            );
        }
        // The cut-over: the browser's tower-sessions cookie moves the session to a sessionkit
        // id, and sessionkit's own Session reads the values as their types.
        let cookie = self.live[0].id.to_string();
        let carried = store
            .carry_over(&cookie)
            .await
            .expect("carry over")
            .expect("a live session");
        let manager = SessionManager::builder(store.store().clone())
            .build()
            .expect("manager");
        let session = manager.session(Some(carried.id.expose().as_str()));
        assert_eq!(session.get::<User>("user").await.expect("get"), Some(ada()));
        assert_eq!(session.get::<u64>("visits").await.expect("get"), Some(3));
    }
}

fn destination(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("sessionkit.db").display())
}

async fn sqlite(dir: &Path) -> std::sync::Arc<dyn Store> {
    std::sync::Arc::new(
        SqliteStore::open(dir.join("sessionkit.db"))
            .await
            .expect("the destination"),
    )
}

/// Imports `from` into a fresh SQLite store through the command (which must fail: every test
/// has a record that does not decode), then again through the library: the store's directory,
/// the command's error, and the second run's summary.
async fn import_twice(from: &str) -> (tempfile::TempDir, String, Summary) {
    let dir = tempfile::tempdir().expect("dir");
    let to = destination(dir.path());
    let failed = run(migrate(from, &to)).await.expect_err("a corrupt record");
    let source = Source::parse(from).expect("a source").expect("an import");
    let again = import(&source, &to).await.expect("import again");
    (dir, failed.0, again)
}

fn migrate(from: &str, to: &str) -> Cli {
    Cli::parse_from(["sessionkit", "migrate", "--from", from, "--to", to])
}

#[tokio::test(flavor = "multi_thread")]
async fn tower_sessions_postgres_tables_are_imported() {
    let url = sessionkit_testkit::postgres_url();
    let (client, driver) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok(connected) => connected,
        Err(err) => {
            sessionkit_conformance::server_unavailable::<()>("PostgreSQL", &url, err);
            return;
        }
    };
    tokio::spawn(driver);
    let schema = sessionkit_testkit::scratch_table();
    // tower-sessions-sqlx-store 0.15, PostgresStore::migrate and save_with_conn.
    client
        .batch_execute(&format!(
            r#"create schema if not exists "{schema}";
            create table if not exists "{schema}"."session"
            (
                id text primary key not null,
                data bytea not null,
                expiry_date timestamptz not null
            )"#
        ))
        .await
        .expect("create the table");
    let upsert = format!(
        r#"insert into "{schema}"."session" (id, data, expiry_date)
        values ($1, $2, to_timestamp($3))
        on conflict (id) do update
        set data = excluded.data, expiry_date = excluded.expiry_date"#
    );
    let fixture = fixture();
    for (id, data, expiry) in fixture.rows() {
        let seconds = expiry.unix_timestamp_nanos() as f64 / 1e9;
        client
            .execute(&upsert, &[&id, &data, &seconds])
            .await
            .expect("insert a row");
    }
    fixture
        .import_and_check(&format!("tower-sessions+{url}?table={schema}.session"))
        .await;
    client
        .batch_execute(&format!(r#"drop schema "{schema}" cascade"#))
        .await
        .expect("drop the schema");
}

#[tokio::test(flavor = "multi_thread")]
async fn tower_sessions_mysql_tables_are_imported() {
    use sqlx::Connection as _;
    let url = sessionkit_testkit::mysql_url();
    let mut connection = match sqlx::MySqlConnection::connect(&url).await {
        Ok(connection) => connection,
        Err(err) => {
            sessionkit_conformance::server_unavailable::<()>("MySQL", &url, err);
            return;
        }
    };
    let table = sessionkit_testkit::scratch_table();
    // tower-sessions-sqlx-store 0.15, MySqlStore::migrate and save_with_conn, in the test
    // database rather than a schema of its own (`?table=test.…`).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create table if not exists `{table}`
        (
            id char(22) primary key not null,
            data blob not null,
            expiry_date timestamp(6) not null
        )"
    )))
    .execute(&mut connection)
    .await
    .expect("create the table");
    let upsert = format!(
        "insert into `{table}` (id, data, expiry_date) values (?, ?, from_unixtime(?))
        on duplicate key update data = values(data), expiry_date = values(expiry_date)"
    );
    let fixture = fixture();
    for (id, data, expiry) in fixture.rows() {
        sqlx::query(sqlx::AssertSqlSafe(upsert.as_str()))
            .bind(id)
            .bind(data)
            .bind(expiry.unix_timestamp())
            .execute(&mut connection)
            .await
            .expect("insert a row");
    }
    let database = url.rsplit('/').next().expect("a database in the URL");
    fixture
        .import_and_check(&format!("tower-sessions+{url}?table={database}.{table}"))
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("drop table `{table}`")))
        .execute(&mut connection)
        .await
        .expect("drop the table");
}

#[tokio::test(flavor = "multi_thread")]
async fn tower_sessions_sqlite_tables_are_imported() {
    let dir = tempfile::tempdir().expect("dir");
    let path: PathBuf = dir.path().join("tower.db");
    let connection = rusqlite::Connection::open(&path).expect("open");
    // tower-sessions-sqlx-store 0.15, SqliteStore::migrate and save_with_conn; sqlx 0.8 binds
    // the deadline as RFC 3339 text.
    connection
        .execute_batch(
            "create table if not exists tower_sessions
            (
                id text primary key not null,
                data blob not null,
                expiry_date integer not null
            )",
        )
        .expect("create the table");
    let fixture = fixture();
    for (id, data, expiry) in fixture.rows() {
        let expiry = expiry
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format");
        connection
            .execute(
                "insert into tower_sessions (id, data, expiry_date) values (?, ?, ?)
                on conflict(id) do update set data = excluded.data, expiry_date = excluded.expiry_date",
                rusqlite::params![id, data, expiry],
            )
            .expect("insert a row");
    }
    drop(connection);
    fixture
        .import_and_check(&format!("tower-sessions+sqlite://{}", path.display()))
        .await;
}

fn redis_url() -> String {
    std::env::var("SESSIONKIT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A plain redis-rs connection for the test's own writes and cleanup; `None` (skip) when the
/// server is down outside CI.
async fn redis_connection(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let connected = match redis::Client::open(url) {
        Ok(client) => client.get_multiplexed_async_connection().await,
        Err(err) => Err(err),
    };
    match connected {
        Ok(connection) => Some(connection),
        Err(err) => sessionkit_conformance::server_unavailable("Redis", url, err),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tower_sessions_redis_sessions_are_imported() {
    use tower_sessions_redis_store::RedisStore;
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config};

    // tower-sessions-redis-store keeps bare ids, with no prefix: this test has database 13 of
    // the test server to itself.
    let url = format!("{}/13", redis_url());
    let Some(mut raw) = redis_connection(&url).await else {
        return;
    };
    let client = tower_sessions_redis_store::fred::prelude::Client::new(
        Config::from_url(&url).expect("a fred config"),
        None,
        None,
        None,
    );
    client.init().await.expect("connect fred");
    let tower = RedisStore::new(client.clone());
    let mut live = [record(3600), record(3600)];
    for record in &mut live {
        tower
            .create(record)
            .await
            .expect("create through tower-sessions");
    }
    // A record past its deadline that Redis still holds (its key outlives it), and a value
    // that is not a record under an id-shaped key: written as the store writes, by hand.
    let expired = record(-60);
    let corrupt = Id::default().to_string();
    let _: () = redis::pipe()
        .set_ex(
            expired.id.to_string(),
            rmp_serde::to_vec(&expired).expect("encode"),
            60,
        )
        .set_ex(&corrupt, "not a record", 60)
        .set_ex("not-a-session", "other data", 60)
        .query_async(&mut raw)
        .await
        .expect("write by hand");

    let (dir, failed, again) = import_twice(&format!("tower-sessions+{url}")).await;
    assert!(
        failed.ends_with("not a tower-sessions record (MessagePack)") && !failed.contains(&corrupt),
        "{failed}"
    );
    assert!(again.already_there >= 2 && again.expired >= 1, "{again:?}");
    assert_eq!(again.imported, 0, "{again:?}");

    let store = TowerSessionsStore::new(sqlite(dir.path()).await);
    for record in &live {
        let loaded = store
            .load(&record.id)
            .await
            .expect("load")
            .expect("imported");
        assert_eq!(loaded.data, record.data);
    }
    assert!(store.load(&expired.id).await.expect("load").is_none());
    let _: () = redis::pipe()
        .del(live[0].id.to_string())
        .del(live[1].id.to_string())
        .del(expired.id.to_string())
        .del(&corrupt)
        .del("not-a-session")
        .query_async(&mut raw)
        .await
        .expect("clean up");
}

#[actix_web::test]
async fn actix_session_redis_sessions_are_imported() {
    use actix_session::storage::RedisSessionStore;
    use actix_session::{Session, SessionMiddleware};
    use actix_web::cookie::{CookieJar, Key};
    use actix_web::{App, HttpResponse, test, web};

    let url = redis_url();
    let Some(mut raw) = redis_connection(&url).await else {
        return;
    };
    let prefix = format!("{}:", sessionkit_testkit::scratch_table());
    let keygen_prefix = prefix.clone();
    let actix_store = RedisSessionStore::builder(url.clone())
        .cache_keygen(move |key| format!("{keygen_prefix}{key}"))
        .build()
        .await
        .expect("actix-session's Redis store");
    let secret = Key::generate();
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(actix_store, secret.clone()))
            .route(
                "/login",
                web::post().to(|session: Session| async move {
                    session.insert("user", ada())?;
                    session.insert("visits", 3u64)?;
                    Ok::<_, actix_web::Error>(HttpResponse::Ok().finish())
                }),
            ),
    )
    .await;
    let response =
        test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
    assert!(response.status().is_success());
    let cookie = response
        .response()
        .cookies()
        .find(|c| c.name() == "id")
        .expect("actix-session's cookie")
        .into_owned();
    // What the app does at the cut-over: read its session key out of the cookie with its Key
    // (actix-session encrypts the cookie by default).
    let mut jar = CookieJar::new();
    jar.add_original(cookie);
    let session_key = jar
        .private(&secret)
        .get("id")
        .expect("the cookie decrypts with the app's key")
        .value()
        .to_owned();

    // A state that is not JSON, and one without a time to live, under session-shaped keys.
    let corrupt = format!("{prefix}{}", "c".repeat(64));
    let lasting = format!("{prefix}{}", "d".repeat(64));
    let _: () = redis::pipe()
        .set_ex(&corrupt, "not json", 60)
        .set(&lasting, r#"{"visits":"1"}"#)
        .query_async(&mut raw)
        .await
        .expect("write by hand");

    let (dir, failed, again) = import_twice(&format!("actix-session+{url}?prefix={prefix}")).await;
    assert_eq!(
        failed,
        "2 session(s) were not imported: 1 not an actix-session state (a JSON object of strings), 1 no time to live"
    );
    assert_eq!((again.imported, again.already_there), (0, 1), "{again:?}");

    // Read through sessionkit's own Session after moving the session to a sessionkit id.
    let store = sqlite(dir.path()).await;
    let carried = TowerSessionsStore::new(store.clone())
        .carry_over_key(&actix_session_key(&session_key))
        .await
        .expect("carry over")
        .expect("an imported session");
    let manager = SessionManager::builder(store).build().expect("manager");
    let session = manager.session(Some(carried.id.expose().as_str()));
    assert_eq!(session.get::<User>("user").await.expect("get"), Some(ada()));
    assert_eq!(session.get::<u64>("visits").await.expect("get"), Some(3));

    let _: () = redis::pipe()
        .del(format!("{prefix}{session_key}"))
        .del(&corrupt)
        .del(&lasting)
        .query_async(&mut raw)
        .await
        .expect("clean up");
}
