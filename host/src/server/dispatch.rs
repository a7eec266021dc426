//! What each request does: one `match` over the request packets, then the job life cycle
//! (submit, coalesce, grab, forward, finish, requeue or fail) on the server's state.
//!
//! Answers are only appended to connections' output here; writing them, and committing the
//! store before held answers go out, is the event loop's (`mod.rs`). It must not: do I/O.

use super::conn::{Ability, Incoming};
use super::jobs::{Job, JobId, JobState};
use super::queue::rank;
use super::store::Row;
use super::Server;
use crate::gearman::packet::{Packet, Priority};
use mio::Token;
use std::time::{Duration, Instant};

/// gearmand's limits: function names up to 512 bytes, unique keys up to 64.
const MAX_FUNCTION: usize = 512;
const MAX_UNIQUE: usize = 64;
/// The longest client id kept (`SET_CLIENT_ID`).
const MAX_CLIENT_ID: usize = 256;
/// Most functions one connection may register: memory stays bounded whatever a peer sends.
const MAX_ABILITIES: usize = 4096;

/// A submission, whatever packet carried it.
struct Submit {
    priority: Priority,
    background: bool,
    function: Vec<u8>,
    unique: Vec<u8>,
    workload: Vec<u8>,
    /// Unix milliseconds, for `SUBMIT_JOB_EPOCH`.
    when_ms: Option<u64>,
}

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
        };
        match packet {
            Packet::SubmitJob { priority, background, function, unique, workload } => {
                self.submit(token, Submit { priority, background, function, unique, workload, when_ms: None })
            }
            Packet::SubmitJobEpoch { function, unique, epoch, workload } => self.submit(
                token,
                Submit {
                    priority: Priority::Normal,
                    background: true,
                    function,
                    unique,
                    workload,
                    when_ms: Some(epoch.saturating_mul(1000)),
                },
            ),
            Packet::GetStatus { handle } => {
                let answer = match self.jobs.id_of(&handle).and_then(|id| self.jobs.get(id)) {
                    Some(job) => Packet::StatusRes {
                        handle,
                        known: true,
                        running: matches!(job.state, JobState::Running { .. }),
                        numerator: job.numerator,
                        denominator: job.denominator,
                    },
                    None => Packet::StatusRes { handle, known: false, running: false, numerator: 0, denominator: 0 },
                };
                self.send(token, &answer);
            }
            Packet::GetStatusUnique { unique } => {
                let answer = match self.jobs.find_unique_any(&unique) {
                    Some(job) => Packet::StatusResUnique {
                        known: true,
                        running: matches!(job.state, JobState::Running { .. }),
                        numerator: job.numerator,
                        denominator: job.denominator,
                        clients: job.clients.len() as u64,
                        unique,
                    },
                    None => Packet::StatusResUnique {
                        unique,
                        known: false,
                        running: false,
                        numerator: 0,
                        denominator: 0,
                        clients: 0,
                    },
                };
                self.send(token, &answer);
            }
            Packet::EchoReq { data } => self.send(token, &Packet::EchoRes { data }),
            Packet::OptionReq { option } => {
                if option == b"exceptions" {
                    if let Some(conn) = self.conns.get_mut(&token) {
                        conn.exceptions = true;
                    }
                    self.send(token, &Packet::OptionRes { option });
                } else {
                    self.send(token, &error("UNKNOWN_OPTION", "Server does not recognize given option"));
                }
            }
            Packet::SetClientId { id } => {
                if let Some(conn) = self.conns.get_mut(&token) {
                    let id = &id[..id.len().min(MAX_CLIENT_ID)];
                    conn.client_id = Some(String::from_utf8_lossy(id).trim().to_string());
                }
            }
            Packet::CanDo { function } => self.can_do(token, function, None),
            Packet::CanDoTimeout { function, timeout } => {
                self.can_do(token, function, Some(Duration::from_millis(u64::from(timeout))))
            }
            Packet::CantDo { function } => self.cant_do(token, Some(&function)),
            Packet::ResetAbilities => self.cant_do(token, None),
            Packet::PreSleep => self.pre_sleep(token),
            Packet::GrabJob | Packet::GrabJobUniq | Packet::GrabJobAll => self.grab(token, &packet),
            Packet::WorkStatus { .. }
            | Packet::WorkData { .. }
            | Packet::WorkWarning { .. }
            | Packet::WorkComplete { .. }
            | Packet::WorkFail { .. }
            | Packet::WorkException { .. } => self.work(token, packet),
            other => self.refuse(token, "INVALID_COMMAND", &format!("{:?} is not a request", other.kind())),
        }
    }

    fn submit(&mut self, token: Token, submit: Submit) {
        if submit.function.is_empty() || submit.function.len() > MAX_FUNCTION {
            return self.send(token, &error("INVALID_FUNCTION_NAME", "function name empty or over 512 bytes"));
        }
        if submit.unique.len() > MAX_UNIQUE {
            return self.send(token, &error("ARGUMENT_TOO_LARGE", "unique key over 64 bytes"));
        }
        if let Some(id) = self.jobs.find_unique(&submit.function, &submit.unique, &submit.workload) {
            let job = self.jobs.get_mut(id).expect("the unique map names live jobs");
            if !submit.background && !job.clients.contains(&token) {
                job.clients.push(token);
            }
            if submit.background && !job.background {
                // A background submission that joins a foreground job makes it a background
                // job: it must outlive its foreground clients and, under --store, be durable
                // before this JOB_CREATED, like any background job.
                job.background = true;
                if let (Some(store), false) = (&mut self.store, job.stored) {
                    let when_ms = match job.state {
                        JobState::Scheduled(at) => Some(at),
                        _ => None,
                    };
                    store.insert(Row {
                        id,
                        function: job.function.clone(),
                        unique: job.unique.clone(),
                        priority: job.priority,
                        workload: job.workload.clone(),
                        when_ms,
                    });
                    job.stored = true;
                }
            }
            let stored = job.stored;
            if let Some(conn) = self.conns.get_mut(&token) {
                if !submit.background {
                    conn.attached.insert(id);
                }
            }
            // The job it joins may still wait for this turn's commit.
            if stored && self.store.as_ref().is_some_and(|s| s.has_inserts()) {
                self.hold(token);
            }
            let handle = self.jobs.handle(id);
            return self.send(token, &Packet::JobCreated { handle });
        }
        let f = self.functions.entry(&submit.function);
        if f.max_queue.is_some_and(|max| f.queued >= max) {
            self.functions.tidy(&submit.function);
            return self.send(token, &error("QUEUE_FULL", "Job queue is full"));
        }
        let id = self.jobs.next_id();
        let now = super::now_ms();
        let state = match submit.when_ms {
            Some(at) if at > now => JobState::Scheduled(at),
            _ => JobState::Queued,
        };
        let stored = submit.background && self.store.is_some();
        if let Some(store) = &mut self.store {
            if stored {
                store.insert(Row {
                    id,
                    function: submit.function.clone(),
                    unique: submit.unique.clone(),
                    priority: submit.priority,
                    workload: submit.workload.clone(),
                    when_ms: submit.when_ms,
                });
            }
        }
        let mut clients = Vec::new();
        if !submit.background {
            clients.push(token);
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.attached.insert(id);
            }
        }
        if stored {
            self.hold(token);
        }
        let handle = self.jobs.handle(id);
        self.send(token, &Packet::JobCreated { handle });
        let job = Job {
            id,
            function: submit.function,
            unique: submit.unique,
            workload: submit.workload,
            priority: submit.priority,
            background: submit.background,
            stored,
            clients,
            state,
            numerator: 0,
            denominator: 0,
            retries: 0,
        };
        self.enqueue(job, true);
    }

    /// Holds `token`'s output from here until the store commits.
    fn hold(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(&token) {
            if !conn.is_held() {
                conn.hold();
                self.held.push(token);
            }
        }
    }

    /// Adds a job to the table and to its queue or timer; wakes its workers when asked.
    pub(super) fn enqueue(&mut self, job: Job, wake: bool) {
        let (id, function, state, rank) = (job.id, job.function.clone(), job.state, rank(job.priority));
        self.jobs.insert(job);
        let f = self.functions.entry(&function);
        match state {
            JobState::Scheduled(at) => {
                f.scheduled += 1;
                self.timers.schedule(at, id);
            }
            _ => {
                f.queued += 1;
                f.queues[rank].push_back(id);
                if wake {
                    self.wake(&function);
                }
            }
        }
    }

    /// Sends NOOP to every sleeping worker of `function` not yet woken.
    pub(super) fn wake(&mut self, function: &[u8]) {
        let Server { functions, conns, dirty, .. } = self;
        let Some(f) = functions.get(function) else { return };
        for token in &f.workers {
            let Some(conn) = conns.get_mut(token) else { continue };
            if conn.sleeping && !conn.noop_sent {
                conn.noop_sent = true;
                conn.send(&Packet::Noop);
                if !conn.dirty {
                    conn.dirty = true;
                    dirty.push(*token);
                }
            }
        }
    }

    fn can_do(&mut self, token: Token, function: Vec<u8>, timeout: Option<Duration>) {
        if function.is_empty() || function.len() > MAX_FUNCTION {
            return self.send(token, &error("INVALID_FUNCTION_NAME", "function name empty or over 512 bytes"));
        }
        let Some(conn) = self.conns.get_mut(&token) else { return };
        if let Some(ability) = conn.abilities.iter_mut().find(|a| a.function == function) {
            ability.timeout = timeout;
            return;
        }
        if conn.abilities.len() >= MAX_ABILITIES {
            return self.refuse(token, "TOO_MANY_FUNCTIONS", "a connection may register 4096 functions");
        }
        conn.abilities.push(Ability { function: function.clone(), timeout });
        self.functions.entry(&function).workers.push(token);
    }

    /// `CANT_DO function`, or `RESET_ABILITIES` (`None`).
    fn cant_do(&mut self, token: Token, function: Option<&[u8]>) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let (gone, kept): (Vec<Ability>, Vec<Ability>) =
            conn.abilities.drain(..).partition(|a| function.is_none_or(|f| a.function == f));
        conn.abilities = kept;
        for ability in gone {
            if let Some(f) = self.functions.get_mut(&ability.function) {
                f.workers.retain(|&w| w != token);
            }
            self.functions.tidy(&ability.function);
        }
    }

    fn pre_sleep(&mut self, token: Token) {
        let Server { functions, conns, .. } = self;
        let Some(conn) = conns.get_mut(&token) else { return };
        conn.sleeping = true;
        conn.noop_sent = false;
        let work_waits = conn.abilities.iter().any(|a| functions.get(&a.function).is_some_and(|f| f.queued > 0));
        if work_waits {
            conn.noop_sent = true;
            conn.send(&Packet::Noop);
            self.touch(token);
        }
    }

    fn grab(&mut self, token: Token, how: &Packet) {
        let Server { functions, conns, jobs, timers, assignments, .. } = self;
        let Some(conn) = conns.get_mut(&token) else { return };
        conn.sleeping = false;
        let n = conn.abilities.len();
        let mut found = None;
        'search: for r in 0..3 {
            for k in 0..n {
                let i = (conn.rotate + k) % n;
                let ability = &conn.abilities[i];
                let Some(f) = functions.get_mut(&ability.function) else { continue };
                while let Some(id) = f.queues[r].pop_front() {
                    // Dropped jobs stay in the deque until popped here.
                    let Some(job) = jobs.get_mut(id) else { continue };
                    if job.state != JobState::Queued {
                        continue;
                    }
                    *assignments += 1;
                    let since = Instant::now();
                    job.state = JobState::Running { worker: token, assignment: *assignments, since };
                    f.queued -= 1;
                    f.running += 1;
                    if let Some(timeout) = ability.timeout {
                        timers.deadline(since + timeout, id, *assignments);
                    }
                    found = Some(id);
                    conn.rotate = (i + 1) % n;
                    break 'search;
                }
            }
        }
        let answer = match found {
            None => Packet::NoJob,
            Some(id) => {
                conn.in_hand.insert(id);
                let job = jobs.get(id).expect("just assigned");
                let (handle, function, workload) = (jobs.handle(id), job.function.clone(), job.workload.clone());
                match how {
                    Packet::GrabJob => Packet::JobAssign { handle, function, workload },
                    Packet::GrabJobUniq => {
                        Packet::JobAssignUniq { handle, function, unique: job.unique.clone(), workload }
                    }
                    _ => {
                        Packet::JobAssignAll { handle, function, unique: job.unique.clone(), reducer: vec![], workload }
                    }
                }
            }
        };
        self.send(token, &answer);
    }

    /// A `WORK_*` packet from a worker: forwarded to the job's clients; the last ones end it.
    fn work(&mut self, token: Token, packet: Packet) {
        let handle = match &packet {
            Packet::WorkStatus { handle, .. }
            | Packet::WorkData { handle, .. }
            | Packet::WorkWarning { handle, .. }
            | Packet::WorkComplete { handle, .. }
            | Packet::WorkFail { handle }
            | Packet::WorkException { handle, .. } => handle,
            _ => return,
        };
        let Some(id) = self.jobs.id_of(handle) else { return };
        let Some(job) = self.jobs.get_mut(id) else { return };
        // A report from a worker that no longer holds the job (it timed out) is dropped.
        if !matches!(job.state, JobState::Running { worker, .. } if worker == token) {
            return;
        }
        if let Packet::WorkStatus { numerator, denominator, .. } = &packet {
            job.numerator = *numerator;
            job.denominator = *denominator;
        }
        let clients = job.clients.clone();
        for client in clients {
            let exceptions = self.conns.get(&client).is_some_and(|c| c.exceptions);
            match &packet {
                Packet::WorkException { handle, .. } if !exceptions => {
                    self.send(client, &Packet::WorkFail { handle: handle.clone() })
                }
                _ => self.send(client, &packet),
            }
        }
        if matches!(packet, Packet::WorkComplete { .. } | Packet::WorkFail { .. } | Packet::WorkException { .. }) {
            self.finish(id);
        }
    }

    /// Removes a job that ended (or was dropped) everywhere it is known.
    fn finish(&mut self, id: JobId) {
        let Some(job) = self.jobs.remove(id) else { return };
        if let Some(f) = self.functions.get_mut(&job.function) {
            match job.state {
                JobState::Queued => f.queued -= 1,
                JobState::Scheduled(_) => f.scheduled -= 1,
                JobState::Running { worker, .. } => {
                    f.running -= 1;
                    if let Some(conn) = self.conns.get_mut(&worker) {
                        conn.in_hand.remove(&id);
                    }
                }
            }
        }
        self.functions.tidy(&job.function);
        for client in &job.clients {
            if let Some(conn) = self.conns.get_mut(client) {
                conn.attached.remove(&id);
            }
        }
        if job.stored {
            if let Some(store) = &mut self.store {
                store.delete(id);
            }
        }
    }

    /// Client `token` left: a foreground job no one waits for any more is dropped unless running.
    pub(super) fn detach(&mut self, id: JobId, token: Token) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        job.clients.retain(|&c| c != token);
        if !job.background && job.clients.is_empty() && !matches!(job.state, JobState::Running { .. }) {
            self.finish(id);
        }
    }

    /// The worker running job `id` vanished or ran out of time (the caller took the job out
    /// of its hands): requeue it, or fail it after `job_retries` requeues.
    pub(super) fn lost(&mut self, id: JobId) {
        let job_retries = self.options.job_retries;
        let Some(job) = self.jobs.get_mut(id) else { return };
        if !matches!(job.state, JobState::Running { .. }) {
            return;
        }
        if !job.background && job.clients.is_empty() {
            return self.finish(id);
        }
        job.retries += 1;
        if job.retries > job_retries {
            let handle = self.jobs.handle(id);
            let job = self.jobs.get(id).expect("looked up above");
            log::warn!(
                "job {} ({}) lost its worker {} times: failed",
                String::from_utf8_lossy(&handle),
                String::from_utf8_lossy(&job.function),
                job.retries
            );
            for client in job.clients.clone() {
                self.send(client, &Packet::WorkFail { handle: handle.clone() });
            }
            return self.finish(id);
        }
        job.state = JobState::Queued;
        let (function, rank) = (job.function.clone(), rank(job.priority));
        let f = self.functions.entry(&function);
        f.running -= 1;
        f.queued += 1;
        f.queues[rank].push_front(id);
        self.wake(&function);
    }
}

fn error(code: &str, message: &str) -> Packet {
    Packet::Error { code: code.as_bytes().to_vec(), message: message.as_bytes().to_vec() }
}
