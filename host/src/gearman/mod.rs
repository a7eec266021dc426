//! The Gearman protocol: our own blocking implementation.
//!
//! - [`packet`]: the binary protocol's codec, bytes to typed packets and back, free of I/O, so
//!   that the worker, the client and the embedded job server (`crate::server`) share it.
//! - [`client`]: submitting jobs and waiting for results, over several servers.
//! - [`conn`]: one blocking connection to a job server; [`transport`]: its plain or TLS stream.
//! - [`admin_protocol`]: the text admin protocol: commands and answers, for both sides.
//!
//! Why hand-written, and why blocking: li3g's worker processes fork, per job under `--atomic`,
//! and forking is only safe from a single-threaded process. Every Rust Gearman crate we know
//! of either sits on an async runtime (which starts threads) or is unmaintained, so li3g
//! speaks the protocol itself over blocking sockets, one connection per server, multiplexed
//! with `poll(2)` where a worker serves several servers.

pub mod admin_protocol;
pub mod client;
pub mod conn;
pub mod packet;
pub mod transport;
