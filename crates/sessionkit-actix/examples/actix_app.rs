//! A minimal actix-web app with sessions: a visit counter, login and logout.
//!
//! Run:  `cargo run -p sessionkit-actix --example actix_app`
//! Then: `curl -c jar -b jar http://127.0.0.1:3001/` (repeat to count visits),
//!       `curl -c jar -b jar http://127.0.0.1:3001/login/alice`, `.../logout`.
//! Sessions are kept in `actix_app.db` (SQLite) in the working directory.

use actix_web::{App, HttpResponse, HttpServer, web};
use sessionkit::SessionManager;
use sessionkit_actix::{Session, SessionError, SessionMiddleware};

async fn visits(session: Session) -> Result<String, SessionError> {
    let n = session
        .update("visits", |n: &mut u64| {
            *n += 1;
            *n
        })
        .await?;
    let user: Option<String> = session.get("user").await?;
    Ok(format!(
        "visit {n} as {}\n",
        user.as_deref().unwrap_or("guest")
    ))
}

async fn login(session: Session, user: web::Path<String>) -> Result<HttpResponse, SessionError> {
    if !valid_user_name(&user) {
        return Ok(HttpResponse::BadRequest()
            .body("user names are 1 to 32 letters, digits, '.', '_' or '-'\n"));
    }
    session.cycle_id().await?; // a new id at every privilege change
    session.set_owner(Some(&user)).await?;
    session.insert("user", &*user).await?;
    Ok(HttpResponse::Ok().body(format!("logged in as {user}\n")))
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

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = sessionkit::open("sqlite://actix_app.db").await?;
    let manager = SessionManager::builder(store).build()?;
    println!("listening on http://127.0.0.1:3001");
    HttpServer::new(move || {
        App::new()
            .wrap(SessionMiddleware::new(manager.clone()))
            .route("/", web::get().to(visits))
            .route("/login/{user}", web::get().to(login))
            .route("/logout", web::get().to(logout))
    })
    .bind(("127.0.0.1", 3001))?
    .run()
    .await?;
    Ok(())
}
