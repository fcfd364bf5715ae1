//! The admin API (`[admin] listen`, off when absent): HTTP and JSON, on its own
//! listener, behind a bearer token (`[admin] token`; required unless the listener is
//! on a loopback address, which the configuration checks).
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 `ok`: the process is up |
//! | `GET /ready` | 200 `ready`: the logs are open and recovered (the API starts after) |
//! | `GET /clients?offset=&limit=` | the connected clients, oldest first, `limit` ≤ 1000 |
//! | `GET /clients/{client_id}` | that client's connection, or 404 |
//! | `DELETE /clients/{client_id}` | closes it (MQTT 5: DISCONNECT 0x98), 202; or 404 |
//!
//! Owns: the routes and the token check. What it shows is `clients.rs`'s.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::clients::Clients;

/// The most clients one page lists.
pub const PAGE_MAX: usize = 1000;

#[derive(Debug, Clone)]
struct AdminState {
    clients: Arc<Clients>,
    token: Option<Arc<str>>,
}

/// Serve the admin API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, clients: Arc<Clients>, token: Option<String>) {
    let state = AdminState {
        clients,
        token: token.map(Arc::from),
    };
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(|| async { "ready\n" }))
        .route("/clients", get(list_clients))
        .route("/clients/{client_id}", get(get_client).delete(kick_client))
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

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn list_clients(State(state): State<AdminState>, Query(page): Query<Page>) -> Response {
    let limit = page.limit.unwrap_or(100).min(PAGE_MAX);
    let (total, clients) = state.clients.page(page.offset, limit);
    json(
        StatusCode::OK,
        &serde_json::json!({ "total": total, "offset": page.offset, "clients": clients }),
    )
}

async fn get_client(State(state): State<AdminState>, Path(client_id): Path<String>) -> Response {
    match state
        .clients
        .by_client_id(&client_id)
        .into_iter()
        .next_back()
    {
        Some(c) => json(StatusCode::OK, &c),
        None => not_found(&client_id),
    }
}

async fn kick_client(State(state): State<AdminState>, Path(client_id): Path<String>) -> Response {
    match state.clients.kick(&client_id) {
        0 => not_found(&client_id),
        n => {
            tracing::info!(client_id, connections = n, "closed by the admin API");
            json(StatusCode::ACCEPTED, &serde_json::json!({ "closing": n }))
        }
    }
}

fn not_found(client_id: &str) -> Response {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({ "error": format!("no client {client_id:?} is connected") }),
    )
}
