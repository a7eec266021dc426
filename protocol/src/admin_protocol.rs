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

/// An admin command, as a server reads it: verbs and their words are case-insensitive, as in
/// gearmand (`strcasecmp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `status`: every function's queue.
    Status,
    /// `prioritystatus`: every function's queued jobs by priority (high, normal, low), workers.
    PriorityStatus,
    /// `workers`: every connection and its functions.
    Workers,
    /// `version`.
    Version,
    /// `getpid`.
    Getpid,
    /// `verbose`: the server's log level.
    Verbose,
    /// `show jobs`: every job (handle, retries, ignored, queued).
    ShowJobs,
    /// `show unique jobs`: every job's unique key.
    ShowUniqueJobs,
    /// `show` with other words (`ERR UNKNOWN_SHOW_ARGUMENTS`).
    ShowUnknown,
    /// `create function NAME`.
    CreateFunction(String),
    /// `drop function NAME`.
    DropFunction(String),
    /// `cancel job HANDLE`: fail a job that no worker runs.
    CancelJob(String),
    /// `maxqueue FUNCTION [N | HIGH NORMAL LOW]`: cap a function's jobs, per priority (0, a
    /// negative or a missing size: no limit; one size caps all three).
    MaxQueue {
        /// The function.
        function: String,
        /// High, normal, low; 0 is no limit.
        sizes: [u32; 3],
    },
    /// A known verb without the words it needs (`ERR INVALID_ARGUMENTS`).
    InvalidArguments(String),
    /// A command the server does not know (`ERR UNKNOWN_COMMAND`, which names it).
    Unknown(String),
}

impl Command {
    /// Parses one command line (its line end optional).
    pub fn parse(line: &str) -> Command {
        let words: Vec<&str> = line.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        let verb = words.first().copied().unwrap_or("");
        match lower.as_slice() {
            ["status", ..] => Command::Status,
            ["prioritystatus", ..] => Command::PriorityStatus,
            ["workers", ..] => Command::Workers,
            ["version", ..] => Command::Version,
            ["getpid", ..] => Command::Getpid,
            ["verbose", ..] => Command::Verbose,
            ["show", "jobs"] => Command::ShowJobs,
            ["show", "unique", "jobs"] => Command::ShowUniqueJobs,
            ["show", _, ..] => Command::ShowUnknown,
            ["cancel", "job", _] => Command::CancelJob(words[2].to_string()),
            ["create", "function", _] => Command::CreateFunction(words[2].to_string()),
            ["create", ..] => Command::InvalidArguments(verb.to_string()),
            ["drop", "function", _] => Command::DropFunction(words[2].to_string()),
            ["drop", ..] => Command::InvalidArguments(verb.to_string()),
            ["maxqueue"] => Command::InvalidArguments(verb.to_string()),
            ["maxqueue", _, sizes @ ..] => {
                // gearmand: `atoi` of each size, a negative one is 0 (no limit); one size (or
                // none) applies to every priority.
                let size = |i: usize| sizes.get(i).map_or(0, |s| u32::try_from(atoi_i64(s).max(0)).unwrap_or(u32::MAX));
                let sizes = if sizes.len() <= 1 { [size(0); 3] } else { [size(0), size(1), size(2)] };
                Command::MaxQueue { function: words[1].to_string(), sizes }
            }
            _ => Command::Unknown(verb.to_string()),
        }
    }

    /// The answer when the command succeeds without data (`OK`, with gearmand's `\r\n`).
    pub const OK: &'static str = "OK\r\n";
}

fn atoi_i64(text: &str) -> i64 {
    crate::packet::atoi(text.as_bytes())
}

/// The answer to an unknown command, as gearmand words it (the command's name appended).
pub fn unknown_command(verb: &str) -> String {
    format!("ERR UNKNOWN_COMMAND Unknown+server+command{verb}\r\n")
}

/// The answer to a command missing its arguments, as gearmand words it.
pub fn invalid_arguments(verb: &str) -> String {
    format!("ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+{verb}\r\n")
}

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
        assert_eq!(Command::parse("STATUS"), Command::Status, "case-insensitive, as gearmand");
        assert_eq!(Command::parse("maxqueue f 10"), Command::MaxQueue { function: "f".into(), sizes: [10; 3] });
        assert_eq!(Command::parse("maxqueue f 10 5 7"), Command::MaxQueue { function: "f".into(), sizes: [10, 5, 7] });
        assert_eq!(Command::parse("maxqueue f -1"), Command::MaxQueue { function: "f".into(), sizes: [0; 3] });
        assert_eq!(Command::parse("maxqueue f"), Command::MaxQueue { function: "f".into(), sizes: [0; 3] });
        assert_eq!(Command::parse("maxqueue f x"), Command::MaxQueue { function: "f".into(), sizes: [0; 3] });
        assert_eq!(Command::parse("maxqueue"), Command::InvalidArguments("maxqueue".into()));
        assert_eq!(Command::parse("Show Unique Jobs"), Command::ShowUniqueJobs);
        assert_eq!(Command::parse("show foo"), Command::ShowUnknown);
        assert_eq!(Command::parse("cancel job H:x:1"), Command::CancelJob("H:x:1".into()));
        assert_eq!(Command::parse("cancel job"), Command::Unknown("cancel".into()));
        assert_eq!(Command::parse("drop function F"), Command::DropFunction("F".into()));
        assert_eq!(Command::parse("shutdown"), Command::Unknown("shutdown".into()), "no shutdown, as gearmand");
        assert_eq!(unknown_command("bogus"), "ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n");
    }
}
