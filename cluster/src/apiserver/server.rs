//! Accepting TLS connections and routing each request.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::auth::{self, Attributes, PeerIdentity};
use super::connections::{ConnectionLimits, PendingSlot, PrefaceDeadline};
use super::handlers::{self, Call};
use super::http::{self as h, Body};
use super::request::{self, Query, Target};
use super::status::{ApiError, ApiResult};
use super::tls::ClientVerifier;
use super::{ApiServer, authz, discovery, openapi, openapi_v3};

/// The largest request body accepted (Kubernetes' limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    verifier: Arc<ClientVerifier>,
    api: Arc<ApiServer>,
    limits: ConnectionLimits,
) {
    let acceptor = TlsAcceptor::from(tls);
    let pending = Arc::new(Semaphore::new(limits.max_pending.max(1)));
    loop {
        // A slot first: with every slot taken, new clients wait in the kernel's backlog.
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = PendingSlot::new(permit);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let verifier = verifier.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(limits.handshake_timeout(), acceptor.accept(tcp))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {peer}: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake with {peer}: timed out");
                    return;
                }
            };
            let user = match tls.get_ref().1.peer_certificates() {
                None | Some([]) => PeerIdentity::None,
                Some(chain) if verifier.chains_to_ca(chain) => {
                    match auth::user_from_certificate(&chain[0]) {
                        Some(u) => PeerIdentity::User(u),
                        None => PeerIdentity::Invalid,
                    }
                }
                Some(_) => PeerIdentity::Invalid,
            };
            let first_request = slot.clone();
            let service = service_fn(move |req| {
                first_request.release();
                let api = api.clone();
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(api, user, req).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.header_timeout)
                .keep_alive_timeout(limits.header_timeout.min(Duration::from_secs(20)));
            let io = PrefaceDeadline::new(tls, limits.header_timeout);
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .await
            {
                tracing::debug!("connection from {peer}: {e}");
            }
            slot.release();
        });
    }
}

async fn handle(api: Arc<ApiServer>, user: PeerIdentity, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = AssertUnwindSafe(route(api, user, req)).catch_unwind().await;
    let resp = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => h::error(&e),
        Err(_) => h::error(&ApiError::internal(format!(
            "the server panicked handling {method} {path}"
        ))),
    };
    tracing::debug!("{method} {path} -> {}", resp.status().as_u16());
    resp
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn route(
    api: Arc<ApiServer>,
    user: PeerIdentity,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_string();
    let mut query = Query::parse(req.uri().query());
    // Writes without a field manager are recorded under the client's name, as upstream does.
    if !query.0.contains_key("fieldManager")
        && !header_str(&req, header::CONTENT_TYPE).contains("apply-patch")
    {
        let agent = header_str(&req, header::USER_AGENT);
        let name = agent.split('/').next().unwrap_or("").trim();
        query.0.insert(
            "fieldManager".into(),
            if name.is_empty() {
                "unknown".into()
            } else {
                name.to_string()
            },
        );
    }
    let accept = header_str(&req, header::ACCEPT);
    let content_type = header_str(&req, header::CONTENT_TYPE);
    let method = req.method().clone();

    let user = match user {
        PeerIdentity::User(u) => Some(u),
        PeerIdentity::Invalid => return Err(ApiError::unauthorized()),
        PeerIdentity::None => match bearer_token(&header_str(&req, header::AUTHORIZATION)) {
            Some(token) => Some(
                api.authenticate_token(token)
                    .await
                    .ok_or_else(ApiError::unauthorized)?,
            ),
            None => None,
        },
    };
    let Some(user) = user else {
        if auth::is_public_path(&path) {
            // Anonymous users may only read these (upstream's system:public-info-viewer).
            if method != Method::GET && method != Method::HEAD {
                return Err(ApiError::forbidden(format!(
                    "forbidden: User \"system:anonymous\" cannot {} path \"{path}\"",
                    method.as_str().to_lowercase()
                )));
            }
            return simple(request::parse_path(&path)?, &accept);
        }
        return Err(ApiError::unauthorized());
    };
    let user = super::impersonation::apply(&api, user, req.headers()).await?;
    let target = request::parse_path(&path)?;
    if matches!(
        target,
        Target::SelfSubjectAccessReview
            | Target::SelfSubjectRulesReview
            | Target::SelfSubjectReview
    ) {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not allowed on {path}"
            )));
        }
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
            .to_bytes();
        let (content_type, body) = super::objects::yaml_body_to_json(content_type, body).await?;
        let review = super::objects::parse_body(&content_type, &body)?;
        return Ok(h::json(
            201,
            &super::reviews::answer(&api, &target, review, &user).await?,
        ));
    }
    let Target::Resource(r) = target else {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not allowed on {path}"
            )));
        }
        return simple(target, &accept);
    };
    if handlers::exec::is_streaming(&r) {
        return handlers::exec::serve(api, &user, r, req).await;
    }
    let watch = query.flag("watch");
    let attrs = Attributes {
        verb: verb(&method, r.name.is_some(), watch),
        group: r.def.group,
        resource: r.def.plural,
        subresource: r.subresource.as_deref(),
        namespace: r.namespace.as_deref(),
        name: r.name.as_deref(),
    };
    authz::check(&api, &user, &attrs).await?;
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(ApiError::too_large(format!(
                    "the request body is larger than {MAX_BODY} bytes"
                )));
            }
            return Err(ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let (content_type, body) = super::objects::yaml_body_to_json(content_type, body).await?;
    if matches!(attrs.verb, "create" | "update" | "patch") {
        authz::admit(&api, &user, &attrs, &content_type, &body).await?;
    }
    let call = Call::new(api, r, query, accept, content_type, body);
    handlers::dispatch(call, &method).await
}

/// Discovery, OpenAPI, version and health.
fn simple(target: Target, accept: &str) -> ApiResult<Response<Body>> {
    Ok(match target {
        Target::Version => h::json(200, &discovery::version()),
        Target::Health => h::respond(200, "text/plain; charset=utf-8", "ok"),
        Target::ApiVersions if discovery::wants_aggregated(accept) => h::respond(
            200,
            discovery::AGGREGATED_CONTENT_TYPE,
            discovery::aggregated(true).to_string(),
        ),
        Target::ApiGroups if discovery::wants_aggregated(accept) => h::respond(
            200,
            discovery::AGGREGATED_CONTENT_TYPE,
            discovery::aggregated(false).to_string(),
        ),
        Target::ApiVersions => h::json(200, &discovery::api_versions()),
        Target::ApiGroups => h::json(200, &discovery::api_group_list()),
        Target::ApiGroup(g) => h::json(
            200,
            &discovery::api_group(&g)
                .ok_or_else(|| ApiError::path_not_found(&format!("/apis/{g}")))?,
        ),
        Target::ResourceList { group, version } => h::json(
            200,
            &discovery::resource_list(&group, &version)
                .ok_or_else(|| ApiError::path_not_found(&format!("{group}/{version}")))?,
        ),
        Target::OpenApiV2 if accept.contains("protobuf") => {
            h::respond(200, openapi::PROTOBUF_CONTENT_TYPE, openapi::v2_protobuf())
        }
        Target::OpenApiV2 => h::json(200, &openapi::v2_json()),
        Target::OpenApiV3(p) if p.is_empty() => h::json(200, &openapi_v3::index()),
        Target::OpenApiV3(p) => h::respond(
            200,
            "application/json",
            openapi_v3::document(&p)
                .ok_or_else(|| ApiError::path_not_found(&format!("/openapi/v3/{p}")))?
                .to_vec(),
        ),
        Target::Resource(_)
        | Target::SelfSubjectAccessReview
        | Target::SelfSubjectRulesReview
        | Target::SelfSubjectReview => {
            return Err(ApiError::internal("resource requests are routed elsewhere"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc "), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token(""), None);
    }
}
