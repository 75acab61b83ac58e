//! The conformance suite against PostgreSQL and MariaDB/MySQL, each test in its own table.
//! Required under CI=true; skipped loudly elsewhere when a server is down.

use sessionkit_conformance::server_unavailable;
use sessionkit_core::ErrorKind;
use sessionkit_sql::testing::{drop_stale_tables, mysql_url, postgres_url, scratch_table};
use sessionkit_sql::{MySqlStore, PostgresStore};
use tokio::sync::OnceCell;

static PG_SWEPT: OnceCell<()> = OnceCell::const_new();
static MY_SWEPT: OnceCell<()> = OnceCell::const_new();

/// A PostgreSQL store on a fresh table, or `None` (skip) when the server is down outside CI.
pub async fn postgres() -> Option<PostgresStore> {
    let base = postgres_url();
    if let Err(err) = PG_SWEPT.get_or_try_init(|| drop_stale_tables(&base)).await {
        return server_unavailable("PostgreSQL", &base, err);
    }
    let url = format!(
        "{base}?table={}&setup=true&max_connections=8",
        scratch_table()
    );
    match PostgresStore::open(&url).await {
        Ok(store) => Some(store),
        Err(err) if err.kind() == ErrorKind::Unavailable => {
            server_unavailable("PostgreSQL", &base, err)
        }
        Err(err) => panic!("opening PostgreSQL: {err}"),
    }
}

/// A MySQL store on a fresh table, or `None` (skip) when the server is down outside CI.
pub async fn mysql() -> Option<MySqlStore> {
    let base = mysql_url();
    if let Err(err) = MY_SWEPT.get_or_try_init(|| drop_stale_tables(&base)).await {
        return server_unavailable("MariaDB/MySQL", &base, err);
    }
    let url = format!(
        "{base}?table={}&setup=true&max_connections=8",
        scratch_table()
    );
    match MySqlStore::open(&url).await {
        Ok(store) => Some(store),
        Err(err) if err.kind() == ErrorKind::Unavailable => {
            server_unavailable("MariaDB/MySQL", &base, err)
        }
        Err(err) => panic!("opening MySQL: {err}"),
    }
}

mod pg {
    use super::*;
    sessionkit_conformance::conformance_suite!(postgres());
}

mod my {
    use super::*;
    sessionkit_conformance::conformance_suite!(mysql());
}
