//! The event loop's socket side: accepting peers, reading their requests (a bounded amount
//! per turn), writing their answers, holding answers until the store's commit and releasing or
//! withdrawing them after it, and closing peers (their jobs detached or requeued).
//!
//! It must not: decide what a request does (that is `handlers/`).

use super::jobs::Stored;
use super::peer::Peer;
use super::stream::Stream;
use super::{Server, HANDSHAKE_DEADLINE, READ_BUDGET};
use crate::gearman::packet::Packet;
use mio::{Interest, Token};
use std::io;
use std::time::Instant;

impl Server {
    /// Accepts the connections waiting on both listeners.
    pub(super) fn accept(&mut self) {
        self.accept_paused = false;
        self.accept_on(false);
        self.accept_on(true);
    }

    /// Accepts the connections waiting on the plain (`tls` false) or the TLS listener.
    fn accept_on(&mut self, tls: bool) {
        let listener = match (tls, &self.listener, &self.tls_listener) {
            (false, Some(listener), _) => listener,
            (true, _, Some((listener, _))) => listener,
            _ => return,
        };
        loop {
            match listener.accept() {
                Ok((mut stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if let Err(err) = self.poll.registry().register(&mut stream, token, Interest::READABLE) {
                        log::warn!("cannot watch a connection from {addr}: {err}");
                        continue;
                    }
                    let stream = match &self.tls_listener {
                        Some((_, config)) if tls => match rustls::ServerConnection::new(config.clone()) {
                            Ok(session) => {
                                self.handshakes.push_back((Instant::now() + HANDSHAKE_DEADLINE, token));
                                Stream::Tls(Box::new((stream, session)))
                            }
                            Err(err) => {
                                log::warn!("cannot start TLS with {addr}: {err}");
                                let _ = self.poll.registry().deregister(&mut stream);
                                continue;
                            }
                        },
                        _ => Stream::Plain(stream),
                    };
                    self.peers.insert(token, Peer::new(stream, addr));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: the listener is edge-triggered, so no new event may
                    // come for the connections already waiting. Try again when a connection
                    // closes, or after `ACCEPT_RETRY` (see `next_wait`), rather than spin.
                    log::warn!("accept: {e}");
                    self.accept_paused = true;
                    return;
                }
            }
        }
    }

    /// Disconnects the TLS clients whose handshake is not done by its deadline.
    pub(super) fn expire_handshakes(&mut self) {
        let now = Instant::now();
        while let Some(&(at, token)) = self.handshakes.front() {
            if at > now {
                return;
            }
            self.handshakes.pop_front();
            // Tokens are never reused: a closed connection's entry finds no peer.
            if let Some(peer) = self.peers.get(&token).filter(|peer| peer.stream.is_handshaking()) {
                log::info!("TLS with {} failed: no handshake within {HANDSHAKE_DEADLINE:?}", peer.addr);
                self.close(token);
            }
        }
    }

    /// Reads and dispatches what `token`'s peer sent, within the turn's budget; has what TLS
    /// wants written (handshake messages) flushed at the end of the turn.
    pub(super) fn read(&mut self, token: Token) {
        self.read_requests(token);
        if self.peers.get(&token).is_some_and(|peer| peer.stream.wants_write()) {
            self.touch(token);
        }
    }

    fn read_requests(&mut self, token: Token) {
        let max_body = self.options.max_body;
        let mut budget = READ_BUDGET;
        let mut drained = false;
        loop {
            loop {
                let Some(peer) = self.peers.get_mut(&token) else { return };
                if peer.closing {
                    return;
                }
                let Some(incoming) = peer.next_request(max_body) else { break };
                self.dispatch(token, incoming);
            }
            let Some(peer) = self.peers.get_mut(&token) else { return };
            if drained && !peer.read_closed {
                // The next bytes bring a new event. Reading goes on whatever output waits: a
                // client that writes everything before it reads must not deadlock (as
                // gearmand); a peer leaving more than `max_output` unread is cut off instead.
                return;
            }
            if budget == 0 {
                self.more.push(token);
                return;
            }
            match peer.read_chunk() {
                Ok((0, _)) => {
                    // The peer is done sending; answer what it asked, then close.
                    peer.closing = true;
                    return self.touch(token);
                }
                Ok((n, short)) => {
                    budget = budget.saturating_sub(n);
                    drained = short;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(err) = crate::tls::rustls_error(&e) {
                        log::info!("TLS with {} failed: {}", peer.addr, crate::tls::explain(err));
                        // The alert that says why is written before the connection closes.
                        let _ = peer.stream.flush_tls();
                    }
                    return self.close(token);
                }
            }
        }
    }

    /// Writes what `token` may be sent; closes it when it is closing and done, or failed.
    pub(super) fn flush(&mut self, token: Token) {
        let max_output = self.options.max_output;
        let Some(peer) = self.peers.get_mut(&token) else { return };
        peer.dirty = false;
        match peer.flush() {
            Ok(done) => {
                if peer.closing && done && !peer.is_held() {
                    return self.close(token);
                }
                // Watch for writability only while output is stuck.
                let stuck = !done;
                if stuck != peer.want_write {
                    let interest = if stuck { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
                    if self.poll.registry().reregister(peer.stream.socket(), token, interest).is_err() {
                        return self.close(token);
                    }
                    peer.want_write = stuck;
                }
                if peer.pending() > max_output {
                    log::warn!("{} leaves {} bytes unread: disconnected", peer.addr, peer.pending());
                    self.close(token);
                }
            }
            Err(_) => self.close(token),
        }
    }

    /// Marks `token` to be flushed at the end of the turn.
    pub(super) fn touch(&mut self, token: Token) {
        if let Some(peer) = self.peers.get_mut(&token) {
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(token);
            }
        }
    }

    /// Sends `packet` to `token`.
    pub(super) fn send(&mut self, token: Token, packet: &Packet) {
        if let Some(peer) = self.peers.get_mut(&token) {
            peer.send(packet);
            self.touch(token);
        }
    }

    /// Sends an ERROR and closes the connection once it is written.
    pub(super) fn refuse(&mut self, token: Token, code: &str, message: &str) {
        log::info!("disconnecting {token:?}: {code} {message}");
        self.send(token, &Packet::Error { code: code.as_bytes().to_vec(), message: message.as_bytes().to_vec() });
        if let Some(peer) = self.peers.get_mut(&token) {
            peer.closing = true;
        }
    }

    /// Commits the turn's store writes when due (or `force`d), then releases the answers held
    /// for them and queues the jobs that waited for it; on failure, takes those jobs back and
    /// refuses the submissions whose answers were held (`ERROR STORE_FAILED`).
    pub(super) fn commit(&mut self, force: bool) {
        let Some(store) = &mut self.store else { return };
        // Held answers and waiting jobs are released by a commit even when nothing is left to
        // write (their insert was cancelled by the job's end in the same turn).
        let waiting = !self.held.is_empty() || !self.awaiting_commit.is_empty();
        match store.due_in(Instant::now()) {
            Some(wait) if wait.is_zero() || force => {}
            _ if waiting => {}
            _ => return,
        }
        let result = store.commit();
        for (id, created) in std::mem::take(&mut self.awaiting_commit) {
            match &result {
                Ok(()) => {
                    if let Some(job) = self.jobs.get_mut(id) {
                        if job.stored == Stored::Pending {
                            job.stored = Stored::Yes;
                        }
                        if created {
                            self.queue(id, true);
                        }
                    }
                }
                Err(_) => self.take_back(id, created),
            }
        }
        if let Err(err) = &result {
            log::error!("{err}");
        }
        for token in std::mem::take(&mut self.held) {
            let Some(peer) = self.peers.get_mut(&token) else { continue };
            match &result {
                Ok(()) => peer.release(),
                Err(err) => {
                    peer.discard_held();
                    let message = err.to_string();
                    self.refuse(token, "STORE_FAILED", &message);
                }
            }
            self.touch(token);
        }
    }

    /// Closes a connection: its foreground jobs lose a client, its jobs in hand are requeued.
    pub(super) fn close(&mut self, token: Token) {
        let Some(mut peer) = self.peers.remove(&token) else { return };
        let _ = self.poll.registry().deregister(peer.stream.socket());
        drop(peer.stream);
        if self.accept_paused {
            // A descriptor is free again: serve the connections waiting since EMFILE.
            self.accept();
        }
        for id in peer.attached.drain() {
            self.detach(id, token);
        }
        for ability in &peer.abilities {
            if let Some(f) = self.functions.get_mut(&ability.function) {
                f.workers.retain(|&w| w != token);
            }
            self.functions.tidy(&ability.function);
        }
        for id in peer.in_hand.drain() {
            self.lost(id);
        }
    }

    /// Holds `token`'s output from here until the store commits.
    pub(super) fn hold(&mut self, token: Token) {
        if let Some(peer) = self.peers.get_mut(&token) {
            if !peer.is_held() {
                peer.hold();
                self.held.push(token);
            }
        }
    }
}
