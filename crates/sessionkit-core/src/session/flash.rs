//! Flash messages: set now, shown once on a later request (typically the page a redirect leads
//! to).
//!
//! They live in the session under a reserved key, as a bounded list. Adding is an
//! [`Session::update`] (never lost); taking removes the list with a conditional write of its
//! own, right away, and returns only what that write removed: a message added while another
//! request shows the list is never lost, and a message is shown by one request only, however
//! many pages load at once.

use serde::{Deserialize, Serialize};

use super::{Loaded, Session, UPDATE_ATTEMPTS, updates};
use crate::change::{ApplyOutcome, Change};
use crate::codec::{decode_value, encode_value};
use crate::error::{Error, Result};
use crate::lifecycle::ManagerInner;
use crate::metrics::UpdateFailure;

/// The session key holding the queued messages.
pub(super) const FLASH_KEY: &str = "__sessionkit.flash";
/// How many messages a session queues: adding one more drops the oldest, so a client that
/// triggers messages without ever reading them cannot grow its session.
pub const MAX_FLASHES: usize = 16;
/// The longest message text, in bytes.
pub const MAX_FLASH_BYTES: usize = 1024;

/// How a flash message is meant to be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashLevel {
    /// Neutral information.
    Info,
    /// Something the user asked for worked.
    Success,
    /// Worked, but the user should look at something.
    Warning,
    /// Something the user asked for failed.
    Error,
}

impl FlashLevel {
    /// The level's name in lower case (`"info"`, `"success"`, `"warning"`, `"error"`): a CSS
    /// class, say.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Success => "success",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }

    /// The level named `name`, as [`as_str`](Self::as_str) names it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Info, Self::Success, Self::Warning, Self::Error]
            .into_iter()
            .find(|level| level.as_str() == name)
    }
}

/// A flash message, as [`Session::take_flashes`] returns it. The text is what the application
/// set: escape it when rendering HTML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    /// How to show it.
    pub level: FlashLevel,
    /// The text.
    pub message: String,
    /// Tells this message from an equal one queued twice, so that reading removes exactly the
    /// messages read.
    id: u64,
}

/// The flash messages queued for the request's session, taken (each shown once) as
/// [`Session::take_flashes`] takes them: an extractor for axum (feature `axum`) and actix-web
/// (feature `actix`), a request guard for Rocket (feature `rocket`). Extract it in the handler
/// that renders them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flashes(pub Vec<Flash>);

impl Session {
    /// Queues a flash message for the next page that shows them (the next call of
    /// [`Session::take_flashes`] in this session, on this request or a later one). A session
    /// holds up to [`MAX_FLASHES`]; adding one more drops the oldest. On a request without a
    /// session, the message starts one (it needs somewhere to live until the next request).
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) for a message over
    /// [`MAX_FLASH_BYTES`]; as [`Session::update`] otherwise. Nothing is queued on error.
    pub async fn flash(&self, level: FlashLevel, message: impl Into<String>) -> Result<()> {
        let message = message.into();
        if message.len() > MAX_FLASH_BYTES {
            return Err(Error::TooLarge {
                what: "flash message".into(),
                size: message.len(),
                limit: MAX_FLASH_BYTES,
            });
        }
        let flash = Flash {
            level,
            message,
            id: rand::random(),
        };
        self.update_any_key(FLASH_KEY, move |queued: &mut Vec<Flash>| {
            queued.push(flash.clone());
            let over = queued.len().saturating_sub(MAX_FLASHES);
            queued.drain(..over);
        })
        .await
    }

    /// The queued flash messages, oldest first, removed from the session. Each message is
    /// returned by one call only, even when several requests of the session take at once: the
    /// removal is written to the store right away (one conditional write, retried on a
    /// conflict), not at commit, and returns what it removed. Changes nothing (and creates no
    /// session) when none are queued.
    ///
    /// # Errors
    /// A store error; [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) after
    /// [`UPDATE_ATTEMPTS`] conflicting rounds; a stored list that does not decode is an
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) error and stays in place. Nothing is
    /// taken on error.
    pub async fn take_flashes(&self) -> Result<Vec<Flash>> {
        let mut loaded = self.lock_loaded(Some(&[])).await?;
        let queued = queued(loaded.data.get(FLASH_KEY))?;
        if queued.is_empty() {
            return Ok(queued);
        }
        let manager = &*self.shared.manager;
        match loaded.current.as_ref().map(|c| c.key) {
            Some(key) if !loaded.flashes_pending() => {
                let _turn = manager.update_turn(&key).lock().await;
                let taken = take_stored(manager, &key, loaded.data.get(FLASH_KEY).cloned()).await?;
                loaded.data.remove(FLASH_KEY);
                Ok(taken)
            }
            // This request changed the list (or the session is not stored yet): the removal
            // joins its pending change, as an update of the list (so messages other requests
            // add meanwhile stay), and is written at commit.
            _ => {
                let shown: Vec<u64> = queued.iter().map(|f| f.id).collect();
                let empty = encode_value(FLASH_KEY, &Vec::<Flash>::new())?;
                let replay = updates::replay(move |now: &mut Vec<Flash>| {
                    now.retain(|f| !shown.contains(&f.id));
                });
                loaded.put_updated(FLASH_KEY, empty, replay);
                Ok(queued)
            }
        }
    }
}

impl Loaded {
    /// Whether this request changed the flash list (its changes are not stored yet).
    fn flashes_pending(&self) -> bool {
        self.change.set.contains_key(FLASH_KEY) || self.change.removed.contains(FLASH_KEY)
    }
}

fn queued(bytes: Option<&Vec<u8>>) -> Result<Vec<Flash>> {
    bytes.map_or_else(|| Ok(Vec::new()), |bytes| decode_value(FLASH_KEY, bytes))
}

/// Removes the stored list of the session under `key` if it still is `seen`, else reads it
/// again and tries again; returns the messages the successful removal removed (none if the
/// session is gone meanwhile).
async fn take_stored(
    manager: &ManagerInner,
    key: &crate::SessionKey,
    mut seen: Option<Vec<u8>>,
) -> Result<Vec<Flash>> {
    for _ in 0..UPDATE_ATTEMPTS {
        let queued = queued(seen.as_ref())?;
        if queued.is_empty() {
            return Ok(queued);
        }
        let mut change = Change::default();
        change.remove(FLASH_KEY);
        change.expect(FLASH_KEY, seen.as_deref());
        match manager.store.apply(key, &change).await? {
            ApplyOutcome::Applied { .. } => return Ok(queued),
            ApplyOutcome::Gone => return Ok(Vec::new()),
            ApplyOutcome::Conflict => {
                manager.meters.conflict();
                manager.meters.retry();
                let Some(record) = manager.store.load_keys(key, &[FLASH_KEY]).await? else {
                    return Ok(Vec::new());
                };
                seen = record.data.get(FLASH_KEY).cloned();
            }
        }
    }
    manager.meters.update_failed(UpdateFailure::Attempts);
    Err(Error::conflict(format!(
        "taking the flash messages conflicted with other requests {UPDATE_ATTEMPTS} times in a row"
    )))
}
