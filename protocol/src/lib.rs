//! The Gearman protocol as li3g speaks it, for every side of it: li3g's worker host, its
//! embedded job server, and the client crate (`li3g-client`) that services use to trigger jobs.
//!
//! - [`packet`]: the binary protocol's codec, bytes to typed packets and back, free of I/O.
//! - [`admin_protocol`]: the text admin protocol (`status`, `workers`, ...): commands and
//!   answers, for both sides, free of I/O.
//! - [`conn`]: one blocking connection to a job server ([`conn::Conn`]) and a server's address
//!   ([`conn::ServerAddr`], `tls://` for TLS).
//! - [`connecting`]: a connection being opened without blocking (TCP connect, TLS handshake),
//!   driven by the caller's `poll(2)`; the blocking connect waits for the same steps.
//! - [`transport`]: what a connection reads and writes through: plain TCP or TLS (rustls).
//! - [`tls`]: TLS settings: PEM certificates and keys, rustls' client and server
//!   configurations, and a TLS failure's cause in words.
//!
//! Why hand-written, and why blocking: li3g's worker processes fork, per job under `--atomic`,
//! and forking is only safe from a single-threaded process. Every Rust Gearman crate we know
//! of either sits on an async runtime (which starts threads) or is unmaintained, so li3g
//! speaks the protocol itself over blocking sockets, one connection per server, multiplexed
//! with `poll(2)` where a worker serves several servers.

pub mod admin_protocol;
pub mod conn;
pub mod connecting;
pub mod packet;
pub mod tls;
pub mod transport;
