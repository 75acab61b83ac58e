//! The session life cycle without a web framework: create, read, update, cycle, destroy.
//!
//! Run: `cargo run -p sessionkit --example basic`

use sessionkit::{CookieUpdate, SessionManager};

#[tokio::main(flavor = "current_thread")]
async fn main() -> sessionkit::Result<()> {
    let manager = SessionManager::builder(sessionkit::open("memory:").await?).build()?;

    // First request: no cookie. Writing creates the session; commit says which cookie to set.
    let session = manager.session(None);
    session.insert("cart", &vec!["tea"]).await?;
    let CookieUpdate::Set { id, expires_at } = session.commit().await?.cookie else {
        unreachable!("a new session with data always sets its cookie");
    };
    let cookie = id.expose();
    println!(
        "new session, stored under key {} until {expires_at:?}",
        id.key().short()
    );

    // Second request: the cookie comes back; a nested mutation persists.
    let session = manager.session(Some(&cookie));
    session
        .update("cart", |cart: &mut Vec<String>| cart.push("milk".into()))
        .await?;
    session.set_owner(Some("alice")).await?;
    session.cycle_id().await?; // login: new id, same data
    let CookieUpdate::Set { id, .. } = session.commit().await?.cookie else {
        unreachable!("cycling sets the new id");
    };
    let cookie = id.expose();

    // Third request: read it back, then log out.
    let session = manager.session(Some(&cookie));
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    println!("cart: {cart:?}, owner: {:?}", session.owner().await?);
    println!(
        "alice has {} live session(s)",
        manager.sessions_of("alice").await?.len()
    );
    session.destroy().await?;
    println!("logout: {:?}", session.commit().await?.cookie);
    Ok(())
}
