//! The server side of the text admin protocol: answers `status`, `workers`, `version`,
//! `getpid`, `maxqueue` and `shutdown` from the server's state, in gearmand's format (the
//! parsing and formatting are `crate::gearman::admin_protocol`'s). It must not: change jobs.

use crate::gearman::admin_protocol::{self, Command, FunctionStatus, WorkerStatus};
use crate::server::Server;
use mio::Token;
use std::os::fd::AsRawFd;

impl Server {
    /// Answers one admin command line from `token`.
    pub(super) fn admin(&mut self, token: Token, line: &str) {
        let answer = match Command::parse(line) {
            Command::Status => {
                let mut status: Vec<FunctionStatus> = self
                    .functions
                    .0
                    .iter()
                    .map(|(name, f)| FunctionStatus {
                        function: String::from_utf8_lossy(name).into_owned(),
                        total: f.total(),
                        running: f.running,
                        workers: f.workers.len() as u64,
                    })
                    .collect();
                status.sort_by(|a, b| a.function.cmp(&b.function));
                admin_protocol::write_status(&status)
            }
            Command::Workers => {
                let mut workers: Vec<(i32, WorkerStatus)> = self
                    .peers
                    .values()
                    .map(|peer| {
                        let fd = peer.stream.as_raw_fd();
                        let status = WorkerStatus {
                            fd: fd.to_string(),
                            ip: peer.addr.ip().to_string(),
                            client_id: peer.shown_id(),
                            functions: peer
                                .abilities
                                .iter()
                                .map(|a| String::from_utf8_lossy(&a.function).into_owned())
                                .collect(),
                        };
                        (fd, status)
                    })
                    .collect();
                workers.sort_by_key(|(fd, _)| *fd);
                admin_protocol::write_workers(&workers.into_iter().map(|(_, w)| w).collect::<Vec<_>>())
            }
            Command::Version => format!("OK {} (li3g)\n", env!("CARGO_PKG_VERSION")),
            Command::Getpid => format!("OK {}\n", std::process::id()),
            Command::MaxQueue { function, max } => {
                self.functions.entry(function.as_bytes()).max_queue = max;
                self.functions.tidy(function.as_bytes());
                "OK\n".into()
            }
            Command::Shutdown { graceful } => {
                self.shutdown = Some(graceful);
                if let Some(mut listener) = self.listener.take() {
                    let _ = self.poll.registry().deregister(&mut listener);
                }
                "OK\n".into()
            }
            Command::Unknown(_) => admin_protocol::UNKNOWN_COMMAND.into(),
        };
        if let Some(peer) = self.peers.get_mut(&token) {
            peer.send_text(&answer);
            self.touch(token);
        }
    }
}
