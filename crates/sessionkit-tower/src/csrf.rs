//! The CSRF layer: refuses unsafe requests without a valid token before the handler runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use sessionkit_core::Session;
use sessionkit_core::csrf::{CsrfConfig, Plan, Refusal};
use sessionkit_core::web::{SessionFailure, default_error_page};
use tower_layer::Layer;
use tower_service::Service;

/// Checks every unsafe request (POST, PUT, PATCH, DELETE, …) for a same-site origin and a
/// valid CSRF token, as [`sessionkit_core::csrf`] describes, and answers a refused one with a
/// plain-text 403 (or 413 for a form over the limit) without calling the handler. That
/// response carries the [`Refusal`] in its extensions: a middleware between this layer and
/// the session layer can replace it with the app's own page.
///
/// It needs the request's [`Session`], so add it *inside* the [`SessionLayer`](crate::SessionLayer)
/// (in axum, call `.layer(CsrfLayer::new(..))` before `.layer(SessionLayer::new(..))`). The
/// request body must be buildable from [`Bytes`] (axum's `Body` is): the layer reads a form
/// body to find the token and hands the same bytes on.
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use sessionkit::SessionManager;
/// use sessionkit_tower::{CsrfConfig, CsrfLayer, SessionLayer};
///
/// # async fn run(manager: SessionManager) -> Result<(), Box<dyn std::error::Error>> {
/// let app: Router = Router::new()
///     .route("/cart", post(|| async { "added" }))
///     .layer(CsrfLayer::new(CsrfConfig::default())?)
///     .layer(SessionLayer::new(manager));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CsrfLayer {
    config: Arc<CsrfConfig>,
}

impl CsrfLayer {
    /// A layer with these settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for settings that
    /// [`CsrfConfig::validate`] refuses.
    pub fn new(config: CsrfConfig) -> sessionkit_core::Result<Self> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`CsrfLayer`] wraps around the inner one.
#[derive(Clone, Debug)]
pub struct CsrfService<S> {
    inner: S,
    config: Arc<CsrfConfig>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CsrfService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        let headers = request.headers();
        let plan = config.plan(request.method().as_str(), |name| {
            headers.get(name).and_then(|v| v.to_str().ok())
        });
        Box::pin(async move {
            let session = match (&plan, request.extensions().get::<Session>()) {
                (Plan::Pass, _) => return inner.call(request).await,
                (_, Some(session)) => session.clone(),
                (_, None) => {
                    tracing::error!(
                        "CsrfLayer needs the SessionLayer outside it; refusing the request"
                    );
                    let mut response =
                        Response::new(ResBody::from("session layer missing\n".into()));
                    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    return Ok(response);
                }
            };
            let (request, token) = match plan {
                Plan::Pass => return inner.call(request).await,
                Plan::Refuse(refusal) => return Ok(refuse(&config, &session, refusal)),
                Plan::Verify(token) => (request, token),
                Plan::ReadForm => match read_form(&config, request).await {
                    Ok((request, token)) => (request, token.unwrap_or_default()),
                    Err(refusal) => return Ok(refuse(&config, &session, refusal)),
                },
            };
            let token = (!token.is_empty()).then_some(token.as_str());
            match config.verify(&session, token).await {
                Ok(Ok(())) => inner.call(request).await,
                Ok(Err(refusal)) => Ok(refuse(&config, &session, refusal)),
                Err(err) => {
                    // The session layer outside renders its configured page and logs it.
                    let err = Arc::new(err);
                    let mut response = default_error_page(&err).into_http::<ResBody>();
                    response.extensions_mut().insert(SessionFailure(err));
                    Ok(response)
                }
            }
        })
    }
}

/// The refusal page, with the [`Refusal`] in its extensions for a middleware outside that
/// renders its own.
fn refuse<B: From<String>>(
    config: &CsrfConfig,
    session: &Session,
    refusal: Refusal,
) -> Response<B> {
    let mut response: Response<B> = config.refused(session, refusal).into_http();
    response.extensions_mut().insert(refusal);
    response
}

/// Reads the form body (up to the limit) and puts the same bytes back; the token field's value.
async fn read_form<B>(
    config: &CsrfConfig,
    request: Request<B>,
) -> Result<(Request<B>, Option<String>), Refusal>
where
    B: Body + From<Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, config.max_form_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => return Err(Refusal::FormTooLarge),
        Err(_) => return Err(Refusal::UnreadableForm),
    };
    let token = config.form_token(&bytes).map(str::to_owned);
    Ok((Request::from_parts(parts, B::from(bytes)), token))
}
