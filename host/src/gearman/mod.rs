//! The Gearman protocol, from the crates the client shares: li3g-protocol's codec
//! ([`packet`], free of I/O), admin protocol ([`admin_protocol`]) and blocking connection
//! ([`conn`], over [`transport`]: plain or TLS), and li3g-client's protocol-level client ([`client`]: submit, wait, status,
//! failover). Re-exported here so that the host's modules (and its tests) name them as before.

pub use li3g_client::gearman as client;
pub use li3g_protocol::{admin_protocol, conn, connecting, packet, transport};
