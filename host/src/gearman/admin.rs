//! gearmand's text admin protocol, parsed: no I/O here.
//!
//! A command is a line (`status`, `workers`, `version`) sent on the same port as the binary
//! protocol (the first byte is not NUL). `version` answers one line; `status` and `workers`
//! answer lines ending with a line holding a single `.`.

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
}
