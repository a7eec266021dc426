//! What a worker says it can do: `CAN_DO`, `CAN_DO_TIMEOUT`, `CANT_DO`, `RESET_ABILITIES`.

use crate::server::peer::Ability;
use crate::server::Server;
use mio::Token;
use std::time::Duration;

/// Most functions one connection may register: memory stays bounded whatever a peer sends.
const MAX_ABILITIES: usize = 4096;

impl Server {
    /// `CAN_DO function` (`timeout` `None`) or `CAN_DO_TIMEOUT function timeout`.
    pub(super) fn can_do(&mut self, token: Token, function: Vec<u8>, timeout: Option<Duration>) {
        let Some(peer) = self.peers.get_mut(&token) else { return };
        if let Some(ability) = peer.abilities.iter_mut().find(|a| a.function == function) {
            ability.timeout = timeout;
            return;
        }
        if peer.abilities.len() >= MAX_ABILITIES {
            return self.refuse(token, "TOO_MANY_FUNCTIONS", "a connection may register 4096 functions");
        }
        peer.abilities.push(Ability { function: function.clone(), timeout });
        self.functions.entry(&function).workers.push(token);
    }

    /// `CANT_DO function`, or `RESET_ABILITIES` (`None`).
    pub(super) fn cant_do(&mut self, token: Token, function: Option<&[u8]>) {
        let Some(peer) = self.peers.get_mut(&token) else { return };
        let (gone, kept): (Vec<Ability>, Vec<Ability>) =
            peer.abilities.drain(..).partition(|a| function.is_none_or(|f| a.function == f));
        peer.abilities = kept;
        for ability in gone {
            if let Some(f) = self.functions.get_mut(&ability.function) {
                f.workers.retain(|&w| w != token);
            }
            self.functions.tidy(&ability.function);
        }
    }
}
