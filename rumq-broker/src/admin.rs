//! The admin API (`[admin] listen`, off when absent): HTTP and JSON, on its own
//! listener, behind a bearer token (`[admin] token`; required unless the listener is
//! on a loopback address, which the configuration checks).
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 `ok`: the process is up |
//! | `GET /ready` | 200 `ready`: the logs are open and recovered (the API starts after); in a cluster, also a leader of the metadata group is known (else 503) |
//! | `GET /clients?offset=&limit=` | the connected clients, oldest first, `limit` ≤ 1000 |
//! | `GET /clients/{client_id}` | that client's connection, or 404 |
//! | `DELETE /clients/{client_id}` | closes it (MQTT 5: DISCONNECT 0x98), 202; or 404 |
//! | `GET /sessions?offset=&limit=` | sessions, online and offline, in client id order |
//! | `GET /sessions/{client_id}` | that session, or 404 |
//! | `GET /subscriptions?filter=&topic=&offset=&limit=` | subscriptions: all, one filter's, or those a topic matches |
//! | `GET /topics?prefix=&offset=&limit=` | topics: messages published here, retained or not |
//! | `GET /cluster` | in a cluster: this node's log, its followers' lag and links, the replicas here, the metadata group's leader and term; 404 on one node |
//!
//! Every list is a page: `limit` (default 100) is at most [`PAGE_MAX`], and the
//! answer says the `total`. What the router holds (sessions, subscriptions, topic
//! counts) is read on the router's thread between its iterations, as a metrics
//! scrape is ([`ToRouter::Inspect`]).
//!
//! Owns: the routes and the token check. What it shows of connections is
//! `clients.rs`'s, of the router's state `router::Router`'s `inspect` module's.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use commitlog::Log;
use router::{Router, SubscriptionQuery};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::clients::Clients;
use crate::driver::RouterTx;
use rumq_broker::interner::TopicInterner;

/// The most entries one page lists.
pub const PAGE_MAX: usize = 1000;

/// What the API reads from.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The connected clients.
    pub clients: Arc<Clients>,
    /// The router's channel.
    pub router: RouterTx,
    /// The topics the connections interned.
    pub topics: Arc<TopicInterner>,
    /// The bearer token, if one is required.
    pub token: Option<Arc<str>>,
    /// In a cluster: the metadata group.
    pub meta: Option<meta::Meta>,
}

/// Serve the admin API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/clients", get(list_clients))
        .route("/clients/{client_id}", get(get_client).delete(kick_client))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{client_id}", get(get_session))
        .route("/subscriptions", get(list_subscriptions))
        .route("/topics", get(list_topics))
        .route("/cluster", get(cluster))
        .layer(middleware::from_fn_with_state(state.clone(), bearer))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin API failed");
    }
}

/// Refuse (401) a request without the token, when there is one.
async fn bearer(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response()
    }
}

/// Compare without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

impl Page {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).min(PAGE_MAX)
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn busy() -> Response {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "error": "the router did not answer in time" }),
    )
}

/// A page of a list, as every list answers.
fn page_of(total: usize, offset: usize, key: &str, items: &impl serde::Serialize) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({ "total": total, "offset": offset, key: items }),
    )
}

async fn list_clients(State(state): State<AdminState>, Query(page): Query<Page>) -> Response {
    let (total, clients) = state.clients.page(page.offset, page.limit());
    // Each with its session's in-flight and queued counts, read in one request.
    let ids: Vec<String> = clients.iter().map(|c| c.client_id.clone()).collect();
    let sessions = state
        .router
        .inspect(move |r| ids.iter().map(|id| r.session_info(id)).collect::<Vec<_>>())
        .await
        .unwrap_or_default();
    let listed: Vec<serde_json::Value> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| with_session(c, sessions.get(i).cloned().flatten()))
        .collect();
    page_of(total, page.offset, "clients", &listed)
}

/// A client's entry with its session's in-flight and queued counts.
fn with_session(
    client: &crate::clients::ClientInfo,
    session: Option<router::SessionInfo>,
) -> serde_json::Value {
    let mut value = serde_json::to_value(client).unwrap_or_default();
    if let (Some(map), Some(s)) = (value.as_object_mut(), session) {
        map.insert("inflight".into(), s.inflight.into());
        map.insert("queued".into(), s.queued.into());
    }
    value
}

async fn get_client(State(state): State<AdminState>, Path(client_id): Path<String>) -> Response {
    let Some(client) = state
        .clients
        .by_client_id(&client_id)
        .into_iter()
        .next_back()
    else {
        return not_found("client", &client_id);
    };
    let id = client_id.clone();
    let session = state
        .router
        .inspect(move |r| r.session_info(&id))
        .await
        .flatten();
    json(StatusCode::OK, &with_session(&client, session))
}

async fn kick_client(State(state): State<AdminState>, Path(client_id): Path<String>) -> Response {
    match state.clients.kick(&client_id) {
        0 => not_found("client", &client_id),
        n => {
            tracing::info!(client_id, connections = n, "closed by the admin API");
            json(StatusCode::ACCEPTED, &serde_json::json!({ "closing": n }))
        }
    }
}

/// 404: no `what` (client, session) of that id.
fn not_found(what: &str, client_id: &str) -> Response {
    let error = match what {
        "client" => format!("no client {client_id:?} is connected"),
        _ => format!("no {what} {client_id:?}"),
    };
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({ "error": error }),
    )
}

async fn list_sessions(State(state): State<AdminState>, Query(page): Query<Page>) -> Response {
    let (offset, limit) = (page.offset, page.limit());
    match state
        .router
        .inspect(move |r| r.sessions_page(offset, limit))
        .await
    {
        Some((total, sessions)) => page_of(total, offset, "sessions", &sessions),
        None => busy(),
    }
}

async fn get_session(State(state): State<AdminState>, Path(client_id): Path<String>) -> Response {
    let id = client_id.clone();
    match state.router.inspect(move |r| r.session_info(&id)).await {
        Some(Some(session)) => json(StatusCode::OK, &session),
        Some(None) => not_found("session", &client_id),
        None => busy(),
    }
}

#[derive(Debug, Deserialize)]
struct SubscriptionsQuery {
    filter: Option<String>,
    topic: Option<String>,
    // Not a flattened `Page`: serde's flatten reads numbers in a query string as
    // strings and refuses them.
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn list_subscriptions(
    State(state): State<AdminState>,
    Query(q): Query<SubscriptionsQuery>,
) -> Response {
    let page = Page {
        offset: q.offset,
        limit: q.limit,
    };
    let (offset, limit) = (page.offset, page.limit());
    let (filter, topic) = (q.filter, q.topic);
    let read = move |r: &Router<Log>| {
        let query = SubscriptionQuery {
            filter: filter.as_deref(),
            topic: topic.as_deref(),
        };
        r.subscriptions_page(query, offset, limit)
    };
    match state.router.inspect(read).await {
        Some((total, subscriptions)) => page_of(total, offset, "subscriptions", &subscriptions),
        None => busy(),
    }
}

#[derive(Debug, Deserialize)]
struct TopicsQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn list_topics(State(state): State<AdminState>, Query(q): Query<TopicsQuery>) -> Response {
    let page = Page {
        offset: q.offset,
        limit: q.limit,
    };
    let (offset, limit) = (page.offset, page.limit());
    // Copied and sorted here, off the router's thread; it walks them in order and
    // builds only the page.
    let mut names = state.topics.with_prefix(&q.prefix);
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let prefix = q.prefix;
    let read = move |r: &Router<Log>| r.topics(&prefix, &names, (offset, limit));
    match state.router.inspect(read).await {
        Some((total, topics)) => page_of(total, offset, "topics", &topics),
        None => busy(),
    }
}

async fn cluster(State(state): State<AdminState>) -> Response {
    let Some(router) = state.router.stats().await else {
        return busy();
    };
    match crate::metrics::cluster_of(&router, state.meta.as_ref()) {
        Some(view) => json(StatusCode::OK, &view),
        None => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "this broker is not in a cluster" }),
        ),
    }
}

/// Ready to serve: the logs are recovered (this API starts only after), and in a
/// cluster the metadata group has a leader, without which no client id can be
/// claimed here (a node cut off from a majority of the nodes is not ready).
async fn ready(State(state): State<AdminState>) -> Response {
    match state.meta.as_ref().map(meta::Meta::leader) {
        None | Some(Some(_)) => (StatusCode::OK, "ready\n").into_response(),
        Some(None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader of the cluster's metadata group is known (a majority of the nodes is not reachable)\n",
        )
            .into_response(),
    }
}
