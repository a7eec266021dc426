//! The dashboard: server-rendered HTML (maud templates, compiled in; no JavaScript), refreshing
//! itself every few seconds. Pages: Busy (the children and their jobs in hand), Queues (per
//! server and function), Scheduled (cancel), Failed (the scoreboard's ring, with messages) and
//! Dead (retry, delete). Every button is a POST form carrying the monitor's CSRF token.

use crate::scheduler::schedule::{Dead, Pending};
use crate::status::Report;
use maud::{html, Markup, DOCTYPE};
use std::time::{Duration, UNIX_EPOCH};

/// A page of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Children and their jobs.
    Busy,
    /// Job servers' queues.
    Queues,
    /// Scheduled jobs.
    Scheduled,
    /// The last failures.
    Failed,
    /// The dead set.
    Dead,
}

impl Page {
    /// Every page, in the navigation's order.
    pub const ALL: [Page; 5] = [Page::Busy, Page::Queues, Page::Scheduled, Page::Failed, Page::Dead];

    /// Its path.
    pub fn path(self) -> &'static str {
        match self {
            Page::Busy => "/",
            Page::Queues => "/queues",
            Page::Scheduled => "/scheduled",
            Page::Failed => "/failed",
            Page::Dead => "/dead",
        }
    }

    /// Its title.
    pub fn title(self) -> &'static str {
        match self {
            Page::Busy => "Busy",
            Page::Queues => "Queues",
            Page::Scheduled => "Scheduled",
            Page::Failed => "Failed",
            Page::Dead => "Dead",
        }
    }

    /// The page at `path`.
    pub fn at(path: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|p| p.path() == path)
    }
}

/// What a page needs besides the report.
pub struct View<'a> {
    /// The report.
    pub report: &'a Report,
    /// Pending scheduled jobs (Scheduled), when Redis is configured.
    pub pending: &'a [Pending],
    /// The dead set (Dead).
    pub dead: &'a [Dead],
    /// The CSRF token forms carry.
    pub csrf: &'a str,
    /// `?token=...` to append to links and form actions when the bearer token came that way.
    pub query: &'a str,
    /// A line to show at the top (an action's result).
    pub notice: Option<&'a str>,
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))).to_string()
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}nav a{margin-right:1em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f0f0f0}.busy{background:#fff6d6}.msg{color:#a00}form{display:inline}h1{font-size:1.3em}\
.notice{background:#e8f4e8;padding:.4em}";

/// The whole HTML page.
pub fn render(page: Page, view: &View<'_>) -> String {
    let r = view.report;
    let body = match page {
        Page::Busy => busy(view),
        Page::Queues => queues(view),
        Page::Scheduled => scheduled(view),
        Page::Failed => failed(view),
        Page::Dead => dead(view),
    };
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                // Reloads the page's own address: after a POST (an action's answer) a plain
                // refresh would GET the action's address, which is refused.
                meta http-equiv="refresh" content={ "5; url=" (page.path()) (view.query) };
                title { "li3g: " (page.title()) }
                style { (STYLE) }
            }
            body {
                h1 { "li3g " (r.daemon.version) " · PID " (r.daemon.pid) " · up "
                     (humantime::format_duration(Duration::from_secs(r.daemon.uptime_seconds as u64))) }
                nav {
                    @for p in Page::ALL {
                        a href={ (p.path()) (view.query) } id={ "nav-" (p.title().to_lowercase()) } {
                            @if p == page { strong { (p.title()) } } @else { (p.title()) }
                        }
                    }
                }
                @if let Some(notice) = view.notice { p.notice { (notice) } }
                main id={ "page-" (page.title().to_lowercase()) } { (body) }
            }
        }
    }
    .into_string()
}

fn busy(view: &View<'_>) -> Markup {
    html! {
        table id="children" {
            tr { th { "kind" } th { "pool" } th { "#" } th { "PID" } th { "state" } th { "job" } th { "id" } th { "seconds" }
                 th { "done" } th { "failed" } th { "RSS MiB" } }
            @for c in &view.report.children {
                tr class=[(c.job.is_some()).then_some("busy")] {
                    td { (c.kind.name()) } td { (c.pool.as_deref().unwrap_or("")) } td { (c.number) } td { (c.pid) } td { (c.state.name()) }
                    @if let Some(j) = &c.job {
                        td.task { (j.task) } td.id { (j.id) } td { (format!("{:.1}", j.seconds)) }
                    } @else { td {} td {} td {} }
                    td { (c.completed) } td { (c.failed) }
                    td { @if c.rss_bytes == 0 { "-" } @else { (format!("{:.1}", c.rss_bytes as f64 / 1048576.0)) } }
                }
            }
        }
    }
}

fn queues(view: &View<'_>) -> Markup {
    html! {
        @for s in &view.report.servers {
            h2 { (s.server) }
            @if let Some(err) = &s.error { p.msg { (err) } }
            table.queue data-server=(s.server) {
                tr { th { "function" } th { "queued" } th { "running" } th { "workers" } }
                @for f in &s.functions {
                    tr { td.function { (f.function) } td.queued { (f.queued) } td { (f.running) } td { (f.workers) } }
                }
            }
        }
    }
}

fn button(view: &View<'_>, action: &str, label: &str) -> Markup {
    html! {
        form method="post" action={ (action) (view.query) } {
            input type="hidden" name="csrf" value=(view.csrf);
            button type="submit" { (label) }
        }
    }
}

/// Why Redis could not be read, when it could not.
fn redis_error(view: &View<'_>) -> Markup {
    html! {
        @if let Some(err) = view.report.scheduler.as_ref().and_then(|s| s.error.as_ref()) {
            p.msg id="redis-error" { "Redis: " (err) }
        }
    }
}

fn scheduled(view: &View<'_>) -> Markup {
    html! {
        (redis_error(view))
        @if let Some(s) = &view.report.scheduler {
            p { "pending " (s.pending) " · leased " (s.leased) " · dead " (s.dead) }
        } @else { p { "No Redis configured: nothing is scheduled." } }
        table id="scheduled" {
            tr { th { "id" } th { "task" } th { "due" } th { "retry" } th {} }
            @for j in view.pending {
                tr { td.id { (j.id) } td { (j.task) } td { (time(j.at_ms)) } td { (j.retry) }
                     td { (button(view, &format!("/scheduled/{}/cancel", super::encode(&j.id)), "Cancel")) } }
            }
        }
    }
}

fn failed(view: &View<'_>) -> Markup {
    html! {
        table id="failures" {
            tr { th { "at" } th { "task" } th { "id" } th { "handle" } th { "server" } th { "message" } }
            @for f in &view.report.failures {
                tr { td { (time(f.at_ms as i64)) } td { (f.task) } td.id { (f.id) } td { (f.handle) } td { (f.server) }
                     td.msg { (f.message) @if let Some(sig) = f.signal { " (signal " (sig) ")" } } }
            }
        }
    }
}

fn dead(view: &View<'_>) -> Markup {
    html! {
        (redis_error(view))
        table id="dead" {
            tr { th { "id" } th { "task" } th { "died" } th { "retry" } th { "error" } th {} }
            @for j in view.dead {
                tr { td.id { (j.id) } td { (j.task) } td { (time(j.at_ms)) } td { (j.retry) } td.msg { (j.error) }
                     td { (button(view, &format!("/dead/{}/retry", super::encode(&j.id)), "Retry"))
                          (button(view, &format!("/dead/{}/delete", super::encode(&j.id)), "Delete")) } }
            }
        }
    }
}
