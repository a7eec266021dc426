//! gearmand's text admin protocol, both sides: no I/O here.
//!
//! A command is a line (`status`, `workers`, `version`) sent on the same port as the binary
//! protocol (the first byte is not NUL). `version` answers one line; `status` and `workers`
//! answer lines ending with a line holding a single `.`.
//!
//! The client side parses answers ([`parse_status`], [`parse_workers`]); the server side (the
//! embedded job server) parses commands ([`Command::parse`]) and writes answers
//! ([`write_status`], [`write_workers`]) in gearmand's exact format, so `gearadmin` reads them.

/// One line of `status`: a function and its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStatus {
    /// The function name.
    pub function: String,
    /// Jobs queued or running.
    pub total: u64,
    /// Jobs running.
    pub running: u64,
    /// Workers that registered it.
    pub workers: u64,
}

/// One line of `workers`: a connection and what it can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The server's file descriptor for the connection.
    pub fd: String,
    /// The peer's address.
    pub ip: String,
    /// The id it set with `SET_CLIENT_ID`, `-` when none.
    pub client_id: String,
    /// The functions it registered.
    pub functions: Vec<String>,
}

/// Why an admin answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed admin answer line: {0:?}")]
pub struct Malformed(pub String);

/// Whether `line` ends a multi-line answer.
pub fn is_end(line: &str) -> bool {
    line.trim_end_matches(['\r', '\n']) == "."
}

/// The answer's lines without line ends, blank lines dropped.
fn answer_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    lines.into_iter().map(|line| line.trim_end_matches(['\r', '\n'])).filter(|line| !line.is_empty())
}

/// Parses the lines of a `status` answer (without the final `.`).
///
/// # Errors
/// [`Malformed`] naming the first line that is not `function TAB total TAB running TAB workers`.
pub fn parse_status<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Vec<FunctionStatus>, Malformed> {
    answer_lines(lines)
        .map(|line| {
            let bad = || Malformed(line.to_string());
            let mut parts = line.split('\t');
            let function = parts.next().ok_or_else(bad)?.to_string();
            let mut next = || parts.next().and_then(|p| p.trim().parse().ok()).ok_or_else(bad);
            Ok(FunctionStatus { function, total: next()?, running: next()?, workers: next()? })
        })
        .collect()
}

/// Parses the lines of a `workers` answer (without the final `.`).
///
/// # Errors
/// [`Malformed`] naming the first line that is not `FD IP CLIENT-ID : FUNCTION...`.
pub fn parse_workers<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Vec<WorkerStatus>, Malformed> {
    answer_lines(lines)
        .map(|line| {
            let bad = || Malformed(line.to_string());
            // Function names contain `::` and IPv6 addresses `:`: the separator is a lone `:`.
            let cut = line.find(" : ").or_else(|| line.strip_suffix(" :").map(str::len)).ok_or_else(bad)?;
            let (who, functions) = (&line[..cut], line[cut + 2..].trim_start());
            let mut who = who.split_whitespace();
            let (fd, ip, client_id) = (who.next(), who.next(), who.next());
            Ok(WorkerStatus {
                fd: fd.ok_or_else(bad)?.to_string(),
                ip: ip.ok_or_else(bad)?.to_string(),
                client_id: client_id.ok_or_else(bad)?.to_string(),
                functions: functions.split_whitespace().map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The longest command line a server accepts; longer is garbage (the peer is disconnected).
pub const MAX_COMMAND_LINE: usize = 4096;

/// An admin command, as a server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `status`: every function's queue.
    Status,
    /// `workers`: every connection and its functions.
    Workers,
    /// `version`.
    Version,
    /// `getpid`.
    Getpid,
    /// `maxqueue FUNCTION [N]`: cap a function's queue (no N, or a negative one: unlimited).
    MaxQueue {
        /// The function.
        function: String,
        /// The cap.
        max: Option<u64>,
    },
    /// `shutdown [graceful]`: stop the server (graceful: once no job runs).
    Shutdown {
        /// Whether to let running jobs finish.
        graceful: bool,
    },
    /// A command the server does not know (answered `ERR UNKNOWN_COMMAND`).
    Unknown(String),
}

impl Command {
    /// Parses one command line (its line end optional).
    pub fn parse(line: &str) -> Command {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        match (verb, rest.as_slice()) {
            ("status", []) => Command::Status,
            ("workers", []) => Command::Workers,
            ("version", []) => Command::Version,
            ("getpid", []) => Command::Getpid,
            ("shutdown", []) => Command::Shutdown { graceful: false },
            ("shutdown", ["graceful"]) => Command::Shutdown { graceful: true },
            ("maxqueue", [function]) => Command::MaxQueue { function: function.to_string(), max: None },
            // gearmand also takes one size per priority (high, normal, low): the smallest caps all.
            // As in gearmand, 0 (or a negative size) means no limit.
            ("maxqueue", [function, sizes @ ..]) if sizes.len() <= 3 => {
                match sizes.iter().map(|s| s.parse::<i64>()).collect::<Result<Vec<_>, _>>() {
                    Ok(sizes) => Command::MaxQueue {
                        function: function.to_string(),
                        max: sizes.into_iter().filter(|&n| n > 0).min().and_then(|n| u64::try_from(n).ok()),
                    },
                    Err(_) => Command::Unknown(line.trim_end().to_string()),
                }
            }
            _ => Command::Unknown(line.trim_end().to_string()),
        }
    }
}

/// The answer to an unknown command, as gearmand words it.
pub const UNKNOWN_COMMAND: &str = "ERR UNKNOWN_COMMAND Unknown+server+command\n";

/// Writes a `status` answer, final `.` included.
pub fn write_status(functions: &[FunctionStatus]) -> String {
    let mut out = String::new();
    for f in functions {
        out.push_str(&format!("{}\t{}\t{}\t{}\n", f.function, f.total, f.running, f.workers));
    }
    out.push_str(".\n");
    out
}

/// Writes a `workers` answer, final `.` included.
pub fn write_workers(workers: &[WorkerStatus]) -> String {
    let mut out = String::new();
    for w in workers {
        out.push_str(&format!("{} {} {} :", w.fd, w.ip, w.client_id));
        for f in &w.functions {
            out.push(' ');
            out.push_str(f);
        }
        out.push('\n');
    }
    out.push_str(".\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_workers_as_gearmand_prints_them() {
        let status = parse_status(["Hello::say\t3\t1\t2\n", "ping\t0\t0\t4"]).unwrap();
        assert_eq!(status[0], FunctionStatus { function: "Hello::say".into(), total: 3, running: 1, workers: 2 });
        assert_eq!(status[1].workers, 4);
        let workers = parse_workers(["33 127.0.0.1 host:42 : Hello::say ping\n", "34 ::1 - :"]).unwrap();
        assert_eq!(workers[0].client_id, "host:42");
        assert_eq!(workers[0].functions, ["Hello::say", "ping"]);
        assert!(workers[1].functions.is_empty());
        assert!(parse_status(["nonsense"]).is_err());
        assert!(is_end(".\n") && !is_end("..\n"));
    }

    #[test]
    fn server_side_round_trips_through_the_client_side() {
        let status = vec![FunctionStatus { function: "Hello::say".into(), total: 3, running: 1, workers: 2 }];
        let text = write_status(&status);
        assert!(text.ends_with("\n.\n"));
        assert_eq!(parse_status(text.lines().take_while(|l| !is_end(l))).unwrap(), status);
        let workers = vec![
            WorkerStatus { fd: "7".into(), ip: "127.0.0.1".into(), client_id: "-".into(), functions: vec![] },
            WorkerStatus {
                fd: "8".into(),
                ip: "::1".into(),
                client_id: "h:1".into(),
                functions: vec!["a::b".into(), "c".into()],
            },
        ];
        let text = write_workers(&workers);
        assert_eq!(parse_workers(text.lines().take_while(|l| !is_end(l))).unwrap(), workers);
    }

    #[test]
    fn commands() {
        assert_eq!(Command::parse("status\r\n"), Command::Status);
        assert_eq!(Command::parse("maxqueue f 10"), Command::MaxQueue { function: "f".into(), max: Some(10) });
        assert_eq!(Command::parse("maxqueue f 10 5 7"), Command::MaxQueue { function: "f".into(), max: Some(5) });
        assert_eq!(Command::parse("maxqueue f -1"), Command::MaxQueue { function: "f".into(), max: None });
        // 0 is no limit, as in gearmand (it used to refuse every job).
        assert_eq!(Command::parse("maxqueue f 0"), Command::MaxQueue { function: "f".into(), max: None });
        assert_eq!(Command::parse("maxqueue f 0 5 0"), Command::MaxQueue { function: "f".into(), max: Some(5) });
        assert_eq!(Command::parse("maxqueue f"), Command::MaxQueue { function: "f".into(), max: None });
        assert_eq!(Command::parse("shutdown graceful"), Command::Shutdown { graceful: true });
        assert_eq!(Command::parse("bogus x"), Command::Unknown("bogus x".into()));
        assert_eq!(Command::parse("maxqueue f x"), Command::Unknown("maxqueue f x".into()));
    }
}
