//! li3g's integration tests: one binary, one module per area. Artifacts come fresh from the
//! harness (`li3g_tests`), never from a stale build.

mod async_client;
mod atomic;
mod cli;
mod client;
mod client_review;
mod compat;
mod config;
mod conformance;
mod daemon;
mod deploy;
mod devtools;
mod dispatch;
mod first_run;
mod gearman_client;
mod harness;
mod install;
mod loading;
mod logging;
mod migrating;
mod monitor;
mod multi_server;
mod pools;
mod processes;
mod sandbox;
mod scaffold;
mod scheduler;
mod server;
mod setup;
mod state;
mod tls;
mod tls_faults;
mod tls_listen;
mod typed_client;
mod watching;
mod worker;
