//! The server side of the text admin protocol, as gearmand 1.1.20 answers it: `status`,
//! `prioritystatus`, `workers`, `version`, `getpid`, `verbose`, `show jobs`, `show unique
//! jobs`, `create function`, `drop function`, `cancel job`, `maxqueue` (the parsing and
//! formatting are `crate::gearman::admin_protocol`'s). There is no `shutdown`: as gearmand,
//! the server is stopped by a signal, never by whoever reaches its port.

use crate::gearman::admin_protocol::{self, Command, FunctionStatus, WorkerStatus};
use crate::gearman::packet::Packet;
use crate::server::jobs::JobState;
use crate::server::Server;
use mio::Token;
use std::fmt::Write;
use std::os::fd::AsRawFd;

impl Server {
    /// Answers one admin command line from `token`.
    pub(super) fn admin(&mut self, token: Token, line: &str) {
        let answer = match Command::parse(line) {
            Command::Status => self.status_text(),
            Command::PriorityStatus => self.priority_status_text(),
            Command::Workers => self.workers_text(),
            Command::Version => format!("OK {} (li3g)\n", env!("CARGO_PKG_VERSION")),
            Command::Getpid => format!("OK {}\n", std::process::id()),
            Command::Verbose => format!("OK {}\n", verbose_name()),
            Command::ShowJobs => self.show_jobs_text(),
            Command::ShowUniqueJobs => self.show_unique_jobs_text(),
            Command::ShowUnknown => "ERR UNKNOWN_SHOW_ARGUMENTS\r\n".into(),
            Command::CreateFunction(name) => {
                self.functions.entry(name.as_bytes()).created = true;
                Command::OK.into()
            }
            Command::DropFunction(name) => self.drop_function(&name),
            Command::CancelJob(handle) => self.cancel_job(handle.as_bytes()),
            Command::MaxQueue { function, sizes } => {
                self.functions.entry(function.as_bytes()).max_queue = sizes;
                self.functions.tidy(function.as_bytes());
                Command::OK.into()
            }
            Command::InvalidArguments(verb) => admin_protocol::invalid_arguments(&verb),
            Command::Unknown(verb) => admin_protocol::unknown_command(&verb),
        };
        if let Some(peer) = self.peers.get_mut(&token) {
            peer.send_text(&answer);
            self.touch(token);
        }
    }

    fn status_text(&self) -> String {
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

    /// `function TAB high TAB normal TAB low TAB workers`: jobs waiting in each queue.
    fn priority_status_text(&self) -> String {
        let mut names: Vec<&Vec<u8>> = self.functions.0.keys().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            let f = &self.functions.0[name];
            let waiting = |rank: usize| {
                f.queues[rank]
                    .iter()
                    .filter(|&&id| self.jobs.get(id).is_some_and(|job| job.state == JobState::Queued))
                    .count()
            };
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                String::from_utf8_lossy(name),
                waiting(0),
                waiting(1),
                waiting(2),
                f.workers.len()
            );
        }
        out.push_str(".\n");
        out
    }

    fn workers_text(&self) -> String {
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

    /// `handle TAB retries TAB ignored TAB queued` per job (ignored is always 0: a cancelled
    /// job is gone at once; queued is 1 for every job the server holds, running or not, as
    /// gearmand's `job_queued` stays set until the job ends).
    fn show_jobs_text(&self) -> String {
        let mut out = String::new();
        for job in self.jobs.all() {
            let _ = writeln!(out, "{}\t{}\t0\t1", String::from_utf8_lossy(&self.jobs.handle(job.id)), job.retries);
        }
        out.push_str(".\n");
        out
    }

    fn show_unique_jobs_text(&self) -> String {
        let mut out = String::new();
        for job in self.jobs.all() {
            let _ = writeln!(out, "{}", String::from_utf8_lossy(&job.unique));
        }
        out.push_str(".\n");
        out
    }

    /// `drop function NAME` (its name compared case-insensitively, as gearmand): refused while
    /// workers have it or jobs of it run; its waiting jobs are failed to their clients.
    fn drop_function(&mut self, name: &str) -> String {
        let Some(key) = self.functions.0.keys().find(|k| k.eq_ignore_ascii_case(name.as_bytes())).cloned() else {
            return "ERR function not found\r\n".into();
        };
        let f = &self.functions.0[&key];
        if !f.workers.is_empty() || f.running > 0 {
            return "ERR there are still connected workers or executing clients\r\n".into();
        }
        let waiting: Vec<u64> = self.jobs.all().filter(|job| job.function == key).map(|job| job.id).collect();
        for id in waiting {
            self.fail(id);
        }
        self.functions.0.remove(&key);
        Command::OK.into()
    }

    /// `cancel job HANDLE`: the job's clients get `WORK_FAIL`, and the job is gone (from the
    /// store too); a worker still running it is answered `ERROR JOB_NOT_FOUND` when it reports.
    fn cancel_job(&mut self, handle: &[u8]) -> String {
        let Some(id) = self.jobs.id_of(handle) else { return "ERR UNKNOWN_JOB\r\n".into() };
        self.fail(id);
        Command::OK.into()
    }

    /// Sends `WORK_FAIL` to every client of job `id` and ends it.
    pub(in crate::server) fn fail(&mut self, id: u64) {
        let handle = self.jobs.handle(id);
        let clients = self.jobs.get(id).map(|job| job.clients.clone()).unwrap_or_default();
        for client in clients {
            self.send(client, &Packet::WorkFail { handle: handle.clone() });
        }
        self.finish(id);
    }
}

/// gearmand's name for the log level in force.
fn verbose_name() -> &'static str {
    match log::max_level() {
        // Errors always reach stderr, logger or not (gearmand's default is ERROR too).
        log::LevelFilter::Off | log::LevelFilter::Error => "ERROR",
        log::LevelFilter::Warn => "WARNING",
        log::LevelFilter::Info => "INFO",
        log::LevelFilter::Debug | log::LevelFilter::Trace => "DEBUG",
    }
}
