//! The two listeners: the public webhook (`POST /sns` only) and the admin port
//! (`/healthz`, `/readyz`, `/metrics`), which is never exposed. `server` owns connections,
//! `routes` what is answered on them.

mod routes;
mod server;

pub use routes::{Admin, SMALL_BODY_BYTES, Webhook, admin_router, public_router};
pub use server::{IDLE_CLOSE_GRACE, LISTEN_BACKLOG, MAX_HEADER_BYTES, ServeOptions, bind, serve};
