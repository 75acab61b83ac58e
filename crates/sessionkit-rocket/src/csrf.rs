//! The CSRF check: refuses unsafe requests without a valid token before any route of the app
//! runs.

use std::sync::Arc;

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::http::{Method, Status};
use rocket::route::{Handler, Outcome, Route};
use rocket::{Build, Data, Request, Rocket};
use sessionkit_core::csrf::{CsrfConfig, FORM_PREFIX_BYTES, Plan, Refusal};
use sessionkit_core::web::{ErrorPage, RocketSession, SessionError};
use sessionkit_core::{Result, Session};

/// The rank of the check's routes: before every route of the app.
const CHECK_RANK: isize = isize::MIN;

/// The methods the check's routes are mounted for: every unsafe one Rocket routes.
const UNSAFE_METHODS: [Method; 5] = [
    Method::Post,
    Method::Put,
    Method::Patch,
    Method::Delete,
    Method::Connect,
];

/// What this check can read of a body: Rocket's peek window (`Data::peek` returns at most
/// 512 bytes), which core's [`Refusal::TokenNotFirst`] names.
const PEEK_BYTES: usize = FORM_PREFIX_BYTES;

/// Checks every unsafe request (POST, PUT, PATCH, DELETE, …) for a same-site origin and a
/// valid CSRF token, as [`sessionkit_core::csrf`] describes, and answers a refused one with a
/// plain-text 403 (or 413 for a form over the limit, 400 for one that could not be read)
/// without running the app's route. [`CsrfFairing::refusal`] tells a response fairing or a
/// catcher why, to render the app's own page.
///
/// It needs the request's [`Session`], so attach the
/// [`SessionFairing`](crate::SessionFairing) too (without it, unsafe requests get a 500 and
/// an error line in the log).
///
/// How it works: Rocket's fairings cannot answer a request, so at ignite this one mounts, for
/// each unsafe method, a route on every path (`/<_..>`) ranked before every other route. It
/// forwards a request that passes (with its body untouched) and answers one that does not.
///
/// **Forms.** Rocket lets a route that forwards look at only the first 512 bytes of the body
/// ([`Data::peek`]), so for an `application/x-www-form-urlencoded` body:
/// - a body of up to 512 bytes is searched whole, like tower's and actix-web's layers do;
/// - a longer one must have the token field among the complete fields of its first 512
///   bytes, otherwise it is refused with [`Refusal::TokenNotFirst`] (403, saying so). Put the
///   hidden token field first in the form: browsers send fields in document order;
/// - a `Content-Length` over [`CsrfConfig::max_form_bytes`] is refused (413) without reading.
///   A chunked form without a length is not measured here (Rocket's own form limits apply in
///   the handler).
///
/// Scripts send the token in the header ([`CsrfConfig::header`]), which is checked whatever
/// the body. Rocket's method override (a form's first field `_method=put`) happens before the
/// check, which sees the overridden method: an override to a safe method makes the request a
/// GET, which needs no token.
///
/// ```no_run
/// use rocket::post;
/// use sessionkit::SessionManager;
/// use sessionkit_rocket::{CsrfConfig, CsrfFairing, SessionFairing};
///
/// #[post("/cart")]
/// fn add() -> &'static str {
///     "added"
/// }
///
/// # fn app(manager: SessionManager) -> Result<(), Box<dyn std::error::Error>> {
/// let app = rocket::build()
///     .attach(SessionFairing::new(manager))
///     .attach(CsrfFairing::new(CsrfConfig::default())?)
///     .mount("/", rocket::routes![add]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CsrfFairing {
    config: Arc<CsrfConfig>,
}

/// Why the check refused the request, in its local cache.
struct Refused(Option<Refusal>);

impl CsrfFairing {
    /// A fairing with these settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for settings that
    /// [`CsrfConfig::validate`] refuses.
    pub fn new(config: CsrfConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Why the CSRF check refused `request`, if it did: for a response fairing (attached
    /// after this one) or a catcher that renders the app's own page. Ask only once the
    /// request has been routed.
    pub fn refusal(request: &Request<'_>) -> Option<Refusal> {
        request.local_cache(|| Refused(None)).0
    }
}

#[rocket::async_trait]
impl Fairing for CsrfFairing {
    fn info(&self) -> Info {
        Info {
            name: "sessionkit CSRF",
            kind: Kind::Ignite | Kind::Singleton,
        }
    }

    /// Mounts the check's routes.
    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        let routes: Vec<Route> = UNSAFE_METHODS
            .into_iter()
            .map(|method| {
                let check = CsrfCheck {
                    config: Arc::clone(&self.config),
                };
                let mut route = Route::ranked(CHECK_RANK, method, "/<_..>", check);
                route.name = Some("sessionkit CSRF check".into());
                route
            })
            .collect();
        Ok(rocket.mount("/", routes))
    }
}

/// The route handler that checks one request.
#[derive(Clone)]
struct CsrfCheck {
    config: Arc<CsrfConfig>,
}

/// Passes the request on to the app's routes, body untouched (404 if none matches).
fn pass<'r>(data: Data<'r>) -> Outcome<'r> {
    Outcome::Forward((data, Status::NotFound))
}

#[rocket::async_trait]
impl Handler for CsrfCheck {
    async fn handle<'r>(&self, request: &'r Request<'_>, mut data: Data<'r>) -> Outcome<'r> {
        let headers = request.headers();
        let plan = self
            .config
            .plan(request.method().as_str(), |name| headers.get_one(name));
        if plan == Plan::Pass {
            return pass(data);
        }
        let state = RocketSession::of(request);
        let Some(session) = state.session() else {
            tracing::error!("CsrfFairing needs the SessionFairing; refusing the request");
            let page = ErrorPage {
                status: 500,
                content_type: "text/plain; charset=utf-8",
                body: "session fairing missing\n".into(),
            };
            return Outcome::Success(page.to_rocket());
        };
        let token = match plan {
            Plan::Pass => return pass(data),
            Plan::Refuse(refusal) => return refuse(request, &self.config, session, refusal),
            Plan::Verify(token) => token,
            Plan::ReadForm => match form_token(&self.config, request, &mut data).await {
                Ok(token) => token.unwrap_or_default(),
                Err(refusal) => return refuse(request, &self.config, session, refusal),
            },
        };
        let token = (!token.is_empty()).then_some(token.as_str());
        match self.config.verify(session, token).await {
            Ok(Ok(())) => pass(data),
            Ok(Err(refusal)) => refuse(request, &self.config, session, refusal),
            // The session fairing renders its configured page and logs it.
            Err(err) => Outcome::from(request, SessionError::from(err)),
        }
    }
}

/// The refusal page (logged), with the reason kept for [`CsrfFairing::refusal`].
fn refuse<'r>(
    request: &'r Request<'_>,
    config: &CsrfConfig,
    session: &Session,
    refusal: Refusal,
) -> Outcome<'r> {
    request.local_cache(|| Refused(Some(refusal)));
    Outcome::Success(config.refused(session, refusal).to_rocket())
}

/// The token field of a form body, from what Rocket lets a route see of it without taking it
/// (see [`CsrfFairing`]).
async fn form_token(
    config: &CsrfConfig,
    request: &Request<'_>,
    data: &mut Data<'_>,
) -> std::result::Result<Option<String>, Refusal> {
    let declared = request
        .headers()
        .get_one("content-length")
        .and_then(|length| length.trim().parse::<usize>().ok());
    if declared.is_some_and(|length| length > config.max_form_bytes) {
        return Err(Refusal::FormTooLarge);
    }
    let peeked = data.peek(PEEK_BYTES).await.len();
    let complete = data.peek_complete() || declared == Some(peeked);
    let body = data.peek(peeked).await;
    if complete {
        if body.len() > config.max_form_bytes {
            return Err(Refusal::FormTooLarge);
        }
        return Ok(config.form_token(body).map(str::to_owned));
    }
    if body.len() < PEEK_BYTES {
        // Neither the whole body nor the full window: reading it failed.
        return Err(Refusal::UnreadableForm);
    }
    // Only fields that end within the window are whole.
    let whole = body
        .iter()
        .rposition(|&b| b == b'&')
        .map_or(&[][..], |end| &body[..end]);
    match config.form_token(whole) {
        Some(token) => Ok(Some(token.to_owned())),
        None => Err(Refusal::TokenNotFirst),
    }
}
