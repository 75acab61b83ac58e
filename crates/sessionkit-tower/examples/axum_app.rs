//! A minimal axum app with sessions: a visit counter, login and logout.
//!
//! Run:  `cargo run -p sessionkit-tower --example axum_app`
//! Then: `curl -c jar -b jar http://127.0.0.1:3000/` (repeat to count visits),
//!       `curl -c jar -b jar http://127.0.0.1:3000/login/alice`, `.../logout`.
//! Sessions are kept in `axum_app.db` (SQLite) in the working directory.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use sessionkit::SessionManager;
use sessionkit_tower::{Session, SessionError, SessionLayer};

async fn visits(session: Session) -> Result<String, SessionError> {
    let n = session.update("visits", |n: &mut u64| {
        *n += 1;
        *n
    });
    let user: Option<String> = session.get("user").await?;
    Ok(format!(
        "visit {} as {}\n",
        n.await?,
        user.as_deref().unwrap_or("guest")
    ))
}

async fn login(
    session: Session,
    Path(user): Path<String>,
) -> Result<(StatusCode, String), SessionError> {
    if !valid_user_name(&user) {
        let message = "user names are 1 to 32 letters, digits, '.', '_' or '-'\n";
        return Ok((StatusCode::BAD_REQUEST, message.to_owned()));
    }
    session.cycle_id().await?; // a new id at every privilege change
    session.set_owner(Some(&user)).await?;
    session.insert("user", &user).await?;
    Ok((StatusCode::OK, format!("logged in as {user}\n")))
}

/// User names a client may choose: 1 to 32 letters, digits, '.', '_' or '-'. Validate what a
/// client sends before it reaches the session: an over-long owner or value would otherwise be
/// a session error (a 500), and nothing would bound what a client makes the store keep.
fn valid_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("logged out\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = sessionkit::open("sqlite://axum_app.db").await?;
    let manager = SessionManager::builder(store).build()?;
    let app = Router::new()
        .route("/", get(visits))
        .route("/login/{user}", get(login))
        .route("/logout", get(logout))
        .layer(SessionLayer::new(manager));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
