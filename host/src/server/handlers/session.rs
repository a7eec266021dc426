//! Requests about the connection itself rather than a job: `OPTION_REQ` and `SET_CLIENT_ID`
//! (`ECHO_REQ` is answered in the dispatch `match`).

use super::error;
use crate::gearman::packet::Packet;
use crate::server::Server;
use mio::Token;

/// The longest client id kept (`SET_CLIENT_ID`).
const MAX_CLIENT_ID: usize = 256;

impl Server {
    /// `OPTION_REQ`: only `exceptions` is known (forward `WORK_EXCEPTION` to this client).
    pub(super) fn option(&mut self, token: Token, option: Vec<u8>) {
        if option.eq_ignore_ascii_case(b"exceptions") {
            if let Some(peer) = self.peers.get_mut(&token) {
                peer.exceptions = true;
            }
            self.send(token, &Packet::OptionRes { option });
        } else {
            self.send(token, &error("UNKNOWN_OPTION", "Server does not recognize given option"));
        }
    }

    /// `SET_CLIENT_ID`: the id shown by the admin `workers` command.
    pub(super) fn set_client_id(&mut self, token: Token, id: &[u8]) {
        if let Some(peer) = self.peers.get_mut(&token) {
            let id = &id[..id.len().min(MAX_CLIENT_ID)];
            peer.client_id = Some(String::from_utf8_lossy(id).trim().to_string());
        }
    }
}
