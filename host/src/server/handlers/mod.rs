//! What each request does: one `match` over what a peer sent ([`Server::dispatch`]), one arm per
//! request, and one file per packet family:
//!
//! - `submit.rs`: `SUBMIT_JOB*` (every priority, background, epoch), coalescing on unique keys;
//! - `status.rs`: `GET_STATUS`, `GET_STATUS_UNIQUE`;
//! - `abilities.rs`: `CAN_DO`, `CAN_DO_TIMEOUT`, `CANT_DO`, `RESET_ABILITIES`;
//! - `grab.rs`: `PRE_SLEEP` and the `GRAB_JOB` variants;
//! - `work.rs`: the worker's `WORK_*` reports, forwarded to the job's clients (and packets
//!   over the size limit);
//! - `session.rs`: `ECHO_REQ`, `OPTION_REQ`, `SET_CLIENT_ID`;
//! - `admin_commands.rs`: the text admin commands.
//!
//! A job's life cycle once created (queue, run, finish, requeue) is `lifecycle.rs`'s. Answers
//! are only appended to peers' output here; writing them, and committing the store before held
//! answers go out, is the event loop's (`mod.rs`, `net.rs`). It must not: do I/O.

mod abilities;
mod admin_commands;
mod grab;
mod session;
mod status;
mod submit;
mod work;

use super::peer::Incoming;
use super::Server;
use crate::gearman::packet::Packet;
use mio::Token;
use std::time::Duration;

impl Server {
    /// Handles one request from `token`.
    pub(super) fn dispatch(&mut self, token: Token, incoming: Incoming) {
        let packet = match incoming {
            Incoming::Packet(packet) => packet,
            Incoming::Admin(line) => return self.admin(token, &line),
            Incoming::Refused(kind) => {
                return self
                    .send(token, &error("INVALID_COMMAND", &format!("{kind:?} is not supported by this server")))
            }
            Incoming::Garbage(why) => return self.refuse(token, "INVALID_PACKET", &why),
            Incoming::WorkStatus(packet, body) => return self.work(token, packet, Some(body)),
            Incoming::TooBig { kind, size, handle } => return self.too_big(token, kind, size, &handle),
        };
        match packet {
            Packet::SubmitJob { .. } | Packet::SubmitJobEpoch { .. } => self.submit(token, packet),
            Packet::GetStatus { handle } => self.get_status(token, handle),
            Packet::GetStatusUnique { unique } => self.get_status_unique(token, unique),
            Packet::EchoReq { data } => self.send(token, &Packet::EchoRes { data }),
            Packet::OptionReq { option } => self.option(token, option),
            Packet::SetClientId { id } => self.set_client_id(token, &id),
            Packet::CanDo { function } => self.can_do(token, function, None),
            Packet::CanDoTimeout { function, timeout } => self.can_do(token, function, run_timeout(timeout)),
            Packet::CantDo { function } => self.cant_do(token, Some(&function)),
            Packet::ResetAbilities => self.cant_do(token, None),
            Packet::PreSleep => self.pre_sleep(token),
            Packet::GrabJob | Packet::GrabJobUniq | Packet::GrabJobAll => self.grab(token, &packet),
            Packet::WorkStatus { .. }
            | Packet::WorkData { .. }
            | Packet::WorkWarning { .. }
            | Packet::WorkComplete { .. }
            | Packet::WorkFail { .. }
            | Packet::WorkException { .. } => self.work(token, packet, None),
            // A response type sent as a request: answered, the connection kept (as gearmand).
            _ => self.send(token, &error("INVALID_COMMAND", "Command not expected")),
        }
    }
}

/// A `CAN_DO_TIMEOUT` in milliseconds as gearmand applies it: 0 is no timeout, anything
/// under a second is a second.
fn run_timeout(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(u64::from(ms.max(1000))))
}

/// An `ERROR` packet.
pub(super) fn error(code: &str, message: &str) -> Packet {
    Packet::Error { code: code.as_bytes().to_vec(), message: message.as_bytes().to_vec() }
}
