//! What the monitor asks other processes (each job server's admin `status`, Redis' schedule),
//! cached and asked off the request's path, so that neither many scrapes nor a dead source
//! stall an answer.
//!
//! Each source is a [`Cached`] value: asked at most once per [`MAX_AGE`] whatever the number of
//! requests (concurrent ones share the one question in flight), by a thread of its own, so a
//! request waits for it at most [`WAIT`]. A source that did not answer in that time (a
//! SIGSTOPped gearmand accepts the connection and never answers) is reported as down, with
//! what it was last seen to hold dropped; its question goes on, bounded by the source's own
//! timeouts ([`crate::status::ADMIN_TIMEOUT`], the Redis connection's), and no second question
//! is asked of it while one is in flight.

use crate::config::Config;
use crate::scheduler::schedule::{Dead, Pending};
use crate::scheduler::Schedule;
use crate::status::{self, SchedulerCounts, ServerQueues};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How old an answer may be before a request asks again.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// How long after a question was asked a request waits for its answer.
pub const WAIT: Duration = Duration::from_millis(1500);

struct Entry<T> {
    value: Option<T>,
    asked: Option<Instant>,
    in_flight: bool,
}

/// One source's last answer and the question in flight.
pub struct Cached<T> {
    shared: Arc<(Mutex<Entry<T>>, Condvar)>,
    questions: Arc<AtomicU64>,
}

/// What [`Cached::get`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// The source's answer, at most [`MAX_AGE`] old (or the one it just gave).
    Fresh(T),
    /// The source did not answer within the wait.
    Late,
}

impl<T: Clone + Send + 'static> Cached<T> {
    /// Nothing known yet.
    pub fn new() -> Cached<T> {
        Cached {
            shared: Arc::new((Mutex::new(Entry { value: None, asked: None, in_flight: false }), Condvar::new())),
            questions: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many questions were asked so far.
    pub fn questions(&self) -> u64 {
        self.questions.load(Ordering::Relaxed)
    }

    /// Forgets the answer: the next [`Cached::get`] asks (after an action changed the source).
    pub fn invalidate(&self) {
        if let Ok(mut entry) = self.shared.0.lock() {
            entry.asked = None;
        }
    }

    /// The answer: the cached one when it is at most `max_age` old, else `ask`'s (run on a
    /// thread of its own unless one is in flight), waited for until `wait` after it was asked.
    pub fn get(&self, max_age: Duration, wait: Duration, ask: impl FnOnce() -> T + Send + 'static) -> Answer<T> {
        let (lock, changed) = &*self.shared;
        let Ok(mut entry) = lock.lock() else { return Answer::Late };
        let stale = entry.asked.is_none_or(|at| at.elapsed() >= max_age);
        if stale && !entry.in_flight {
            entry.in_flight = true;
            entry.asked = Some(Instant::now());
            self.questions.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new().name("monitor-source".into()).spawn(move || {
                let value = ask();
                let (lock, changed) = &*shared;
                if let Ok(mut entry) = lock.lock() {
                    entry.value = Some(value);
                    entry.in_flight = false;
                    changed.notify_all();
                }
            });
            if spawned.is_err() {
                entry.in_flight = false;
                return Answer::Late;
            }
        }
        if entry.in_flight {
            // Until `wait` after the question was asked: while a source hangs, only the first
            // request waits; the others answer at once.
            let asked = entry.asked.unwrap_or_else(Instant::now);
            let left = (asked + wait).saturating_duration_since(Instant::now());
            let Ok((waited, _)) = changed.wait_timeout_while(entry, left, |e| e.in_flight) else {
                return Answer::Late;
            };
            entry = waited;
            if entry.in_flight {
                return Answer::Late;
            }
        }
        entry.value.clone().map_or(Answer::Late, Answer::Fresh)
    }
}

impl<T: Clone + Send + 'static> Default for Cached<T> {
    fn default() -> Self {
        Cached::new()
    }
}

/// The schedule as the dashboard lists it, or why Redis could not be read.
pub type Listing = Result<(Vec<Pending>, Vec<Dead>), String>;

/// Every source of one configuration.
pub struct Sources {
    config: Config,
    servers: Vec<Cached<ServerQueues>>,
    redis: Cached<Listing>,
}

impl Sources {
    /// The sources `config` names (its job servers, its Redis).
    pub fn new(config: &Config) -> Sources {
        Sources {
            config: config.clone(),
            servers: config.servers.iter().map(|_| Cached::new()).collect(),
            redis: Cached::new(),
        }
    }

    /// How many admin questions were asked of job server `i` so far.
    pub fn server_questions(&self, i: usize) -> u64 {
        self.servers.get(i).map_or(0, Cached::questions)
    }

    /// Each job server's queues; one that did not answer in time says so.
    pub fn queues(&self) -> Vec<ServerQueues> {
        // Ask all first (each on its thread), then wait: the waits overlap.
        let answers: Vec<_> = self
            .config
            .servers
            .iter()
            .zip(&self.servers)
            .map(|(server, cached)| {
                let addr = server.clone();
                (server, cached.get(MAX_AGE, WAIT, move || status::queues(&addr)))
            })
            .collect();
        answers
            .into_iter()
            .map(|(server, answer)| match answer {
                Answer::Fresh(queues) => queues,
                Answer::Late => ServerQueues {
                    server: server.to_string(),
                    error: Some(format!("no answer within {:.1}s", WAIT.as_secs_f64())),
                    functions: Vec::new(),
                },
            })
            .collect()
    }

    /// The schedule's pending and dead jobs, when Redis is configured.
    pub fn listing(&self) -> Option<Listing> {
        let url = self.config.redis.clone()?;
        let settings = self.config.scheduler.clone();
        let ask = move || -> Listing {
            let mut store = Schedule::open(&url, &settings).map_err(|e| e.to_string())?;
            Ok((store.pending().map_err(|e| e.to_string())?, store.dead().map_err(|e| e.to_string())?))
        };
        Some(match self.redis.get(MAX_AGE, WAIT, ask) {
            Answer::Fresh(listing) => listing,
            Answer::Late => Err(format!("Redis gave no answer within {:.1}s", WAIT.as_secs_f64())),
        })
    }

    /// The scheduler's counts, from [`Sources::listing`].
    pub fn scheduler(&self) -> Option<SchedulerCounts> {
        Some(match self.listing()? {
            Ok((pending, dead)) => status::scheduler_counts_of(&pending, &dead),
            Err(error) => SchedulerCounts { error: Some(error), pending: 0, leased: 0, dead: 0, next_due_ms: None },
        })
    }

    /// After an action on the schedule: the next listing is asked afresh.
    pub fn schedule_changed(&self) {
        self.redis.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn concurrent_gets_share_one_question_and_a_slow_one_is_late() {
        let cached: Arc<Cached<u32>> = Arc::new(Cached::new());
        let asked = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cached, asked) = (cached.clone(), asked.clone());
                std::thread::spawn(move || {
                    cached.get(Duration::from_secs(60), Duration::from_secs(5), move || {
                        asked.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        7
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Answer::Fresh(7));
        }
        assert_eq!((asked.load(Ordering::SeqCst), cached.questions()), (1, 1));

        // A source that does not answer: late within the wait, and not asked twice meanwhile.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let slow: Cached<u32> = Cached::new();
        let start = Instant::now();
        let wait = Duration::from_secs(1);
        let first = slow.get(Duration::ZERO, wait, move || {
            let _ = gate.lock().unwrap().recv();
            1
        });
        assert_eq!(first, Answer::Late);
        assert!(start.elapsed() >= wait && start.elapsed() < 10 * wait);
        // The wait counts from the question: a later request answers at once.
        let again = Instant::now();
        assert_eq!(slow.get(Duration::ZERO, wait, || 2), Answer::Late);
        assert!(again.elapsed() < wait / 2, "{:?}", again.elapsed());
        assert_eq!(slow.questions(), 1, "no second question while one is in flight");
        release.send(()).unwrap();
        assert_eq!(slow.get(Duration::from_secs(60), Duration::from_secs(5), || 3), Answer::Fresh(1));
    }
}
