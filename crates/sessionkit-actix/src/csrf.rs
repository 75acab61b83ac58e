//! The CSRF middleware: refuses unsafe requests without a valid token before the handler runs.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::HttpMessage as _;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use sessionkit_core::Session;
use sessionkit_core::csrf::{CsrfConfig, Plan, Refusal};
use sessionkit_core::web::{ErrorPage, SessionError};

/// Checks every unsafe request (POST, PUT, PATCH, DELETE, …) for a same-site origin and a
/// valid CSRF token, as [`sessionkit_core::csrf`] describes, and answers a refused one with a
/// plain-text 403 (or 413 for a form over the limit) without calling the handler. That
/// response carries the [`Refusal`] in its extensions: a middleware between this one and the
/// session middleware can replace it with the app's own page.
///
/// It needs the request's [`Session`], so it must run *inside* the
/// [`SessionMiddleware`](crate::SessionMiddleware): actix-web runs the last `wrap` first, so
/// `wrap` the CSRF middleware before the session middleware. It reads a form body to find the
/// token and hands the same bytes on.
///
/// ```no_run
/// use actix_web::{App, web};
/// use sessionkit::SessionManager;
/// use sessionkit_actix::{CsrfConfig, CsrfMiddleware, SessionMiddleware};
///
/// # fn app(manager: SessionManager) -> Result<(), Box<dyn std::error::Error>> {
/// let csrf = CsrfMiddleware::new(CsrfConfig::default())?;
/// let app = App::new()
///     .wrap(csrf)
///     .wrap(SessionMiddleware::new(manager))
///     .route("/cart", web::post().to(|| async { "added" }));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CsrfMiddleware {
    config: Arc<CsrfConfig>,
}

impl CsrfMiddleware {
    /// Middleware with these settings.
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

impl<S, B> Transform<S, ServiceRequest> for CsrfMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = CsrfMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CsrfMiddlewareService {
            service: Rc::new(service),
            config: Arc::clone(&self.config),
        }))
    }
}

/// The service [`CsrfMiddleware`] wraps around the app.
pub struct CsrfMiddlewareService<S> {
    service: Rc<S>,
    config: Arc<CsrfConfig>,
}

impl<S, B> Service<ServiceRequest> for CsrfMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        let headers = request.headers();
        let plan = self.config.plan(request.method().as_str(), |name| {
            headers.get(name).and_then(|v| v.to_str().ok())
        });
        let (service, config) = (Rc::clone(&self.service), Arc::clone(&self.config));
        Box::pin(async move {
            let found = request.extensions().get::<Session>().cloned();
            let session = match (&plan, found) {
                (Plan::Pass, _) => return pass(&service, request).await,
                (_, Some(session)) => session,
                (_, None) => {
                    tracing::error!(
                        "CsrfMiddleware needs the SessionMiddleware outside it; refusing the request"
                    );
                    let page = ErrorPage {
                        status: 500,
                        content_type: "text/plain; charset=utf-8",
                        body: "session middleware missing\n".into(),
                    };
                    return Ok(replace(request, &page));
                }
            };
            let token = match plan {
                Plan::Pass => return pass(&service, request).await,
                Plan::Refuse(refusal) => return Ok(refuse(request, &config, &session, refusal)),
                Plan::Verify(token) => Some(token),
                Plan::ReadForm => match read_form(&config, &mut request).await {
                    Ok(token) => token,
                    Err(refusal) => return Ok(refuse(request, &config, &session, refusal)),
                },
            };
            let token = token.filter(|t| !t.is_empty());
            match config.verify(&session, token.as_deref()).await {
                Ok(Ok(())) => pass(&service, request).await,
                Ok(Err(refusal)) => Ok(refuse(request, &config, &session, refusal)),
                // The session middleware outside renders its configured page and logs it.
                Err(err) => Ok(request
                    .error_response(SessionError::from(err))
                    .map_into_right_body()),
            }
        })
    }
}

async fn pass<S, B>(
    service: &S,
    request: ServiceRequest,
) -> actix_web::Result<ServiceResponse<EitherBody<B>>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    Ok(service.call(request).await?.map_into_left_body())
}

fn replace<B>(request: ServiceRequest, page: &ErrorPage) -> ServiceResponse<EitherBody<B>> {
    request.into_response(page.to_actix()).map_into_right_body()
}

/// The refusal page, with the [`Refusal`] in its extensions for a middleware outside that
/// renders its own.
fn refuse<B>(
    request: ServiceRequest,
    config: &CsrfConfig,
    session: &Session,
    refusal: Refusal,
) -> ServiceResponse<EitherBody<B>> {
    let mut response = config.refused(session, refusal).to_actix();
    response.extensions_mut().insert(refusal);
    request.into_response(response).map_into_right_body()
}

/// Reads the form body (up to the limit) and puts the same bytes back; the token field's value.
async fn read_form(
    config: &CsrfConfig,
    request: &mut ServiceRequest,
) -> Result<Option<String>, Refusal> {
    let mut payload = request.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Refusal::UnreadableForm)?;
        if body.len() + chunk.len() > config.max_form_bytes {
            return Err(Refusal::FormTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let body: Bytes = body.freeze();
    let token = config.form_token(&body).map(str::to_owned);
    request.set_payload(Payload::from(body));
    Ok(token)
}
