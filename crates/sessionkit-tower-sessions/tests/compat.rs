//! tower-sessions' own layer, axum-login's own login flow, and a switch to sessionkit's layer,
//! over the compat store on real sessionkit stores, through real HTTP.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, login_required};
use serde::{Deserialize, Serialize};
use sessionkit_core::codec::decode_value;
use sessionkit_core::{Store, Timestamp};
use sessionkit_tower_sessions::{TowerSessionsStore, session_key_for_cookie};
use support::{TOWER_COOKIE, get_tower, serve, start, status};
use tower_sessions::{ExpiredDeletion, Expiry, Session, SessionManagerLayer, SessionStore};

type Handled<T> = Result<T, (StatusCode, String)>;

fn failed(err: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Cart {
    items: Vec<String>,
    total_cents: u64,
}

fn cart() -> Cart {
    Cart {
        items: vec!["tea".into(), "scones".into()],
        total_cents: 1250,
    }
}

// ---- tower-sessions' own layer ----

async fn tower_read(session: Session, Path(key): Path<String>) -> Handled<(StatusCode, String)> {
    Ok(match session.get::<String>(&key).await.map_err(failed)? {
        Some(value) => (StatusCode::OK, value),
        None => (StatusCode::NOT_FOUND, String::new()),
    })
}

async fn tower_write(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Handled<&'static str> {
    session.insert(&key, value).await.map_err(failed)?;
    Ok("ok")
}

async fn tower_remove(session: Session, Path(key): Path<String>) -> Handled<&'static str> {
    let _: Option<String> = session.remove(&key).await.map_err(failed)?;
    Ok("ok")
}

async fn tower_cycle(session: Session) -> Handled<&'static str> {
    session.cycle_id().await.map_err(failed)?;
    Ok("ok")
}

async fn tower_flush(session: Session) -> Handled<&'static str> {
    session.flush().await.map_err(failed)?;
    Ok("ok")
}

async fn tower_cart(session: Session) -> Handled<&'static str> {
    session.insert("cart", cart()).await.map_err(failed)?;
    session.insert("visits", 3u32).await.map_err(failed)?;
    Ok("ok")
}

fn tower_routes() -> Router {
    Router::new()
        .route("/get/{key}", get(tower_read))
        .route("/set/{key}/{value}", get(tower_write))
        .route("/remove/{key}", get(tower_remove))
        .route("/cycle", get(tower_cycle))
        .route("/flush", get(tower_flush))
        .route("/cart", get(tower_cart))
}

/// tower-sessions' layer over the compat store, with its default cookie name and expiry
/// (`OnSessionEnd`) unless `expiry` is given.
async fn serve_tower(compat: TowerSessionsStore, expiry: Option<Expiry>) -> String {
    let mut layer = SessionManagerLayer::new(compat).with_secure(false);
    if let Some(expiry) = expiry {
        layer = layer.with_expiry(expiry);
    }
    serve(tower_routes().layer(layer)).await
}

async fn stored(store: &Arc<dyn Store>, cookie: &str) -> Option<sessionkit_core::Record> {
    let key = session_key_for_cookie(cookie).expect("a tower-sessions id");
    store.load(&key).await.expect("load")
}

async fn set_get_cycle_flush(store: Arc<dyn Store>) {
    let base = serve_tower(TowerSessionsStore::new(Arc::clone(&store)), None).await;

    let anonymous = get_tower(&base, "/get/a", None).await;
    assert_eq!(anonymous.status, 404, "{anonymous:?}");
    assert!(anonymous.cookie(TOWER_COOKIE).is_none(), "{anonymous:?}");

    let first = get_tower(&base, "/set/a/one", None).await;
    assert_eq!(first.status, 200, "{first:?}");
    let c1 = first
        .cookie(TOWER_COOKIE)
        .expect("a first write sets the cookie");
    assert_eq!(get_tower(&base, "/get/a", Some(&c1)).await.body, "one");
    assert_eq!(status(&base, "/set/b/two", Some(&c1)).await, 200);

    // The store holds the id's hash, never the id, and each value in sessionkit's codec.
    let record = stored(&store, &c1)
        .await
        .expect("stored under the id's hash");
    assert_eq!(
        decode_value::<String>("a", &record.data["a"]).expect("sessionkit's codec"),
        "one"
    );
    let listed = format!("{record:?}");
    assert!(!listed.contains(&c1), "the record holds no id: {listed}");

    // Whole-record saves: a removed key is gone from the store too.
    assert_eq!(status(&base, "/remove/b", Some(&c1)).await, 200);
    assert_eq!(status(&base, "/get/b", Some(&c1)).await, 404);
    let record = stored(&store, &c1).await.expect("still stored");
    assert_eq!(record.data.keys().collect::<Vec<_>>(), ["a"]);

    // cycle_id: a new id holds the session, the old one is gone at once.
    let cycled = get_tower(&base, "/cycle", Some(&c1)).await;
    let c2 = cycled.cookie(TOWER_COOKIE).expect("a cycled id is sent");
    assert_ne!(c1, c2);
    assert_eq!(get_tower(&base, "/get/a", Some(&c2)).await.body, "one");
    assert_eq!(status(&base, "/get/a", Some(&c1)).await, 404);
    assert!(stored(&store, &c1).await.is_none());

    // flush: the session is deleted and the cookie removed.
    let flushed = get_tower(&base, "/flush", Some(&c2)).await;
    assert_eq!(flushed.status, 200, "{flushed:?}");
    assert!(flushed.removes(TOWER_COOKIE), "{flushed:?}");
    assert_eq!(status(&base, "/get/a", Some(&c2)).await, 404);
    assert!(stored(&store, &c2).await.is_none());
}

async fn idle_sessions_expire(store: Arc<dyn Store>) {
    let compat = TowerSessionsStore::new(Arc::clone(&store));
    let idle = Expiry::OnInactivity(time::Duration::seconds(1));
    let base = serve_tower(compat.clone(), Some(idle)).await;
    let cookie = start(&base, "/set/a/one").await;
    // Activity within the idle window keeps it (each save moves the deadline).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(&base, "/set/b/two", Some(&cookie)).await, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get_tower(&base, "/get/a", Some(&cookie)).await.body, "one");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(status(&base, "/get/a", Some(&cookie)).await, 404);
    assert!(stored(&store, &cookie).await.is_none(), "expired is absent");
    // tower-sessions' cleanup runs the store's batched delete_expired.
    compat.delete_expired().await.expect("delete_expired");
    if store.capabilities().iterable && !store.capabilities().native_ttl {
        assert_eq!(store.count_expired().await.expect("count"), 0);
    }
}

// ---- the store's contract, called directly ----

fn record_with(data: &[(&str, serde_json::Value)]) -> tower_sessions::session::Record {
    tower_sessions::session::Record {
        id: tower_sessions::session::Id::default(),
        data: data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(10),
    }
}

async fn the_session_store_contract(store: Arc<dyn Store>) {
    let compat = TowerSessionsStore::new(Arc::clone(&store));
    let mut record = record_with(&[("a", serde_json::json!({"n": 1, "s": "x"}))]);
    compat.create(&mut record).await.expect("create");
    let loaded = compat.load(&record.id).await.expect("load").expect("found");
    assert_eq!(loaded.data, record.data);
    // Milliseconds are what sessionkit keeps.
    let drift = (loaded.expiry_date - record.expiry_date).abs();
    assert!(drift < time::Duration::milliseconds(1), "{drift}");

    // create is insert-only: the same id again draws a new one, and both sessions live.
    let mut twin = record_with(&[("b", serde_json::json!(2))]);
    twin.id = record.id;
    compat
        .create(&mut twin)
        .await
        .expect("create on a taken id");
    assert_ne!(twin.id, record.id, "a taken id is answered with a new one");
    assert_eq!(
        compat
            .load(&record.id)
            .await
            .expect("load")
            .expect("kept")
            .data,
        record.data
    );
    assert!(compat.load(&twin.id).await.expect("load").is_some());

    // save on a session that is gone re-creates it (tower-sessions' upsert) by default...
    compat.delete(&record.id).await.expect("delete");
    assert!(compat.load(&record.id).await.expect("load").is_none());
    compat
        .delete(&record.id)
        .await
        .expect("deleting twice is fine");
    compat.save(&record).await.expect("save");
    assert!(compat.load(&record.id).await.expect("load").is_some());
    // ... and is dropped with recreate_gone(false), as sessionkit's own layer does.
    let strict = TowerSessionsStore::new(Arc::clone(&store)).recreate_gone(false);
    strict.delete(&record.id).await.expect("delete");
    strict
        .save(&record)
        .await
        .expect("a dropped save is not an error");
    assert!(strict.load(&record.id).await.expect("load").is_none());

    // An expired record is absent.
    let mut old = record_with(&[("a", serde_json::json!(1))]);
    old.expiry_date = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
    compat.create(&mut old).await.expect("create");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(compat.load(&old.id).await.expect("load").is_none());
}

async fn keys_sessionkit_cannot_keep_are_refused(store: Arc<dyn Store>) {
    let compat = TowerSessionsStore::new(store);
    for key in ["__sessionkit.expiry", ""] {
        let mut record = record_with(&[(key, serde_json::json!(1))]);
        let err = compat.create(&mut record).await.expect_err("refused");
        assert!(
            matches!(err, tower_sessions::session_store::Error::Encode(_)),
            "{err:?}"
        );
        assert!(compat.load(&record.id).await.expect("load").is_none());
    }
    let long = "k".repeat(sessionkit_core::MAX_KEY_LEN + 1);
    let mut record = record_with(&[(&long, serde_json::json!(1))]);
    let err = compat.save(&record).await.expect_err("refused");
    assert!(err.to_string().contains("255"), "{err}");
    compat.create(&mut record).await.expect_err("refused");

    // An owner sessionkit's stores cannot index.
    let compat = compat.with_owner_at("user", "");
    let owner = "o".repeat(sessionkit_core::MAX_OWNER_LEN + 1);
    let mut record = record_with(&[("user", serde_json::json!(owner))]);
    let err = compat.create(&mut record).await.expect_err("refused");
    assert!(
        matches!(err, tower_sessions::session_store::Error::Encode(_)),
        "{err:?}"
    );
}

async fn undecodable_values_are_decode_errors_without_the_id(store: Arc<dyn Store>) {
    let compat = TowerSessionsStore::new(Arc::clone(&store));
    let record = record_with(&[]);
    let cookie = record.id.to_string();
    let key = session_key_for_cookie(&cookie).expect("an id");
    let mut raw = sessionkit_core::Record::new(
        Timestamp::now(),
        Timestamp::now().saturating_add(Duration::from_secs(60)),
    );
    // 0xc1 is never valid MessagePack.
    raw.data.insert("a".into(), vec![0xc1]);
    store.create(&key, &raw).await.expect("create");
    let err = compat.load(&record.id).await.expect_err("undecodable");
    assert!(
        matches!(err, tower_sessions::session_store::Error::Decode(_)),
        "{err:?}"
    );
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&cookie), "{shown}");
    assert!(shown.contains("\"a\""), "names the data key: {shown}");
}

// ---- axum-login's own flow ----

#[derive(Clone, Debug)]
struct User {
    id: i64,
    name: String,
    password: String,
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

#[derive(Clone)]
struct Users(Arc<HashMap<i64, User>>);

impl Users {
    fn new() -> Self {
        let alice = User {
            id: 42,
            name: "alice".into(),
            password: "wonderland".into(),
        };
        Self(Arc::new(HashMap::from([(alice.id, alice)])))
    }
}

impl AuthnBackend for Users {
    type User = User;
    type Credentials = (String, String);
    type Error = Infallible;

    async fn authenticate(
        &self,
        (name, password): (String, String),
    ) -> Result<Option<User>, Infallible> {
        Ok(self
            .0
            .values()
            .find(|u| u.name == name && u.password == password)
            .cloned())
    }

    async fn get_user(&self, id: &i64) -> Result<Option<User>, Infallible> {
        Ok(self.0.get(id).cloned())
    }
}

async fn login(
    mut auth: AuthSession<Users>,
    Path((name, password)): Path<(String, String)>,
) -> Handled<StatusCode> {
    let Some(user) = auth.authenticate((name, password)).await.map_err(failed)? else {
        return Ok(StatusCode::UNAUTHORIZED);
    };
    auth.login(&user).await.map_err(failed)?;
    Ok(StatusCode::OK)
}

async fn logout(mut auth: AuthSession<Users>) -> Handled<StatusCode> {
    auth.logout().await.map_err(failed)?;
    Ok(StatusCode::OK)
}

async fn protected(auth: AuthSession<Users>) -> String {
    auth.user
        .map(|u| format!("hello {}", u.name))
        .unwrap_or_default()
}

async fn serve_axum_login(compat: TowerSessionsStore) -> String {
    let sessions = SessionManagerLayer::new(compat).with_secure(false);
    let auth = AuthManagerLayerBuilder::new(Users::new(), sessions).build();
    let app = Router::new()
        .route("/protected", get(protected))
        .route_layer(login_required!(Users))
        .route("/login/{name}/{password}", get(login))
        .route("/logout", get(logout))
        .merge(tower_routes())
        .layer(auth);
    serve(app).await
}

async fn axum_login_flow(store: Arc<dyn Store>) {
    let compat =
        TowerSessionsStore::new(Arc::clone(&store)).with_owner_at("axum-login.data", "/user_id");
    let base = serve_axum_login(compat).await;
    let owner_index = store.capabilities().owner_index;
    let sessions_of_alice = async || store.by_owner("42").await.expect("by_owner").len();

    // Anonymous: the protected route says 401.
    assert_eq!(status(&base, "/protected", None).await, 401);
    // An anonymous session (something in the cart before login).
    let anonymous = start(&base, "/set/cart/tea").await;
    assert_eq!(status(&base, "/protected", Some(&anonymous)).await, 401);
    assert_eq!(
        status(&base, "/login/alice/wrong", Some(&anonymous)).await,
        401
    );

    // Login: a new session id (fixation defence), the protected route answers.
    let reply = get_tower(&base, "/login/alice/wonderland", Some(&anonymous)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let signed_in = reply.cookie(TOWER_COOKIE).expect("login sends a new id");
    assert_ne!(signed_in, anonymous, "the id changes at login");
    let page = get_tower(&base, "/protected", Some(&signed_in)).await;
    assert_eq!((page.status, page.body.as_str()), (200, "hello alice"));
    assert_eq!(
        get_tower(&base, "/get/cart", Some(&signed_in)).await.body,
        "tea",
        "the session's data survives the login"
    );
    assert_eq!(
        status(&base, "/protected", Some(&anonymous)).await,
        401,
        "the pre-login id is dead"
    );
    if owner_index {
        assert_eq!(sessions_of_alice().await, 1, "filed under alice's user id");
    }

    // Logout: the protected route says 401 again, with the same cookie.
    let out = get_tower(&base, "/logout", Some(&signed_in)).await;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(status(&base, "/protected", Some(&signed_in)).await, 401);
    if owner_index {
        assert_eq!(sessions_of_alice().await, 0);
        // Log out everywhere through sessionkit's owner index.
        let a = start(&base, "/login/alice/wonderland").await;
        let b = start(&base, "/login/alice/wonderland").await;
        assert_eq!(sessions_of_alice().await, 2);
        assert_eq!(store.delete_by_owner("42").await.expect("revoke"), 2);
        for cookie in [a, b] {
            assert_eq!(status(&base, "/protected", Some(&cookie)).await, 401);
        }
    }
}

// ---- a full switch to sessionkit's own layer ----

#[cfg(feature = "axum")]
use switch::a_full_switch_carries_the_session_and_its_values_over;

#[cfg(feature = "axum")]
mod switch {
    use super::*;
    use axum::middleware::from_fn_with_state;
    use sessionkit_core::SessionManager;
    use sessionkit_tower::{SessionError, SessionLayer};
    use sessionkit_tower_sessions::{CarryOver, carry_over};

    /// sessionkit's default cookie name.
    const SESSIONKIT_COOKIE: &str = "sessionkit";

    async fn sessionkit_read(
        session: sessionkit_core::Session,
        Path(key): Path<String>,
    ) -> Result<(StatusCode, String), SessionError> {
        Ok(match session.get::<String>(&key).await? {
            Some(value) => (StatusCode::OK, value),
            None => (StatusCode::NOT_FOUND, String::new()),
        })
    }

    async fn sessionkit_cart(session: sessionkit_core::Session) -> Result<String, SessionError> {
        let cart: Option<Cart> = session.get("cart").await?;
        let visits: Option<u32> = session.get("visits").await?;
        Ok(format!("{cart:?} {visits:?}"))
    }

    pub(super) async fn a_full_switch_carries_the_session_and_its_values_over(
        store: Arc<dyn Store>,
    ) {
        let compat = TowerSessionsStore::new(Arc::clone(&store));
        let before = serve_tower(compat.clone(), None).await;
        let tower_cookie = start(&before, "/set/a/one").await;
        assert_eq!(status(&before, "/cart", Some(&tower_cookie)).await, 200);

        // After the switch: sessionkit's layer on the same store, the cut-over middleware in front.
        let manager = SessionManager::builder(Arc::clone(&store))
            .build()
            .expect("manager");
        let app = Router::new()
            .route("/get/{key}", get(sessionkit_read))
            .route("/cart", get(sessionkit_cart))
            .layer(SessionLayer::new(manager))
            .layer(from_fn_with_state(CarryOver::new(compat), carry_over));
        let after = serve(app).await;

        let first = get_tower(&after, "/cart", Some(&tower_cookie)).await;
        assert_eq!(first.status, 200, "{first:?}");
        assert_eq!(
            first.body,
            format!("{:?} {:?}", Some(cart()), Some(3u32)),
            "values written through tower-sessions read as their types through sessionkit"
        );
        let new_id = first
            .cookie(SESSIONKIT_COOKIE)
            .expect("the browser gets a sessionkit id");
        assert_eq!(new_id.len(), sessionkit_core::ID_LEN);
        assert!(first.removes(TOWER_COOKIE), "{first:?}");

        let read = support::get(&after, "/get/a", &[(SESSIONKIT_COOKIE, &new_id)]).await;
        assert_eq!((read.status, read.body.as_str()), (200, "one"));
        // The tower-sessions id no longer reaches the session, through either layer.
        assert!(stored(&store, &tower_cookie).await.is_none());
        let replay = get_tower(&after, "/get/a", Some(&tower_cookie)).await;
        assert_eq!(replay.status, 404, "{replay:?}");
        assert!(replay.cookie(SESSIONKIT_COOKIE).is_none(), "{replay:?}");
        assert!(
            replay.removes(TOWER_COOKIE),
            "a dead tower-sessions cookie is removed"
        );
        assert_eq!(status(&before, "/get/a", Some(&tower_cookie)).await, 404);
    }
}

async fn carry_over_ignores_what_is_not_a_live_tower_session(store: Arc<dyn Store>) {
    let compat = TowerSessionsStore::new(store);
    for value in ["", "garbage", &"A".repeat(32)] {
        assert!(compat.carry_over(value).await.expect("no error").is_none());
    }
    let unknown = tower_sessions::session::Id::default().to_string();
    assert!(
        compat
            .carry_over(&unknown)
            .await
            .expect("no error")
            .is_none()
    );
}

macro_rules! on_store {
    ($name:ident, $store:expr) => {
        mod $name {
            use super::*;

            async fn store() -> Option<Arc<dyn Store>> {
                $store.await
            }

            on_store!(@tests
                set_get_cycle_flush,
                idle_sessions_expire,
                the_session_store_contract,
                keys_sessionkit_cannot_keep_are_refused,
                undecodable_values_are_decode_errors_without_the_id,
                axum_login_flow,
                #[cfg(feature = "axum")]
                a_full_switch_carries_the_session_and_its_values_over,
                carry_over_ignores_what_is_not_a_live_tower_session
            );
        }
    };
    (@tests $($(#[$cfg:meta])* $test:ident),*) => {
        $(
            $(#[$cfg])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let Some(store) = store().await else { return };
                super::$test(store).await;
            }
        )*
    };
}

on_store!(memory, sessionkit_testkit::memory());
on_store!(sqlite, sessionkit_testkit::sqlite());
on_store!(postgres, sessionkit_testkit::postgres());
on_store!(redis, sessionkit_testkit::redis());

#[test]
fn debug_names_the_store_and_nothing_else() {
    let compat = TowerSessionsStore::new(sessionkit_memory::MemoryStore::new());
    assert_eq!(
        format!("{compat:?}"),
        "TowerSessionsStore { store: \"memory\", owner_index: false, recreate_gone: true }"
    );
}
