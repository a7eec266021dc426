//! Which tasks a worker registers: all of them, only a pool's, or all but those the pools
//! claim (the default pool, when pools are configured).
//!
//! A [`TaskPattern`] is a task name, canonical as job names are (`Hello` is `Hello::run`, a
//! leading `\` is ignored), or `Class::*` for every task of a class. Two patterns
//! [overlap](TaskPattern::overlaps) when some task name matches both, which is decided from
//! the patterns alone: the supervisor checks pools at start without loading any plugin.
//!
//! Must not: load plugins or know about the configuration file; it only matches names.

use crate::plugins::canonical_task_name;

/// A task name or `Class::*`, canonical.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskPattern {
    /// Exactly this task (`Report::build`).
    Task(String),
    /// Every task of this class (`Report::*` holds `Report`).
    Class(String),
}

impl TaskPattern {
    /// Parses a pattern as written in the configuration.
    ///
    /// # Errors
    /// What is wrong with it (empty, a wildcard anywhere but as the whole method name).
    pub fn parse(text: &str) -> Result<TaskPattern, String> {
        let trimmed = text.trim();
        let name = trimmed.strip_prefix('\\').unwrap_or(trimmed);
        if name.is_empty() {
            return Err("an empty task name; expected `Class::method` or `Class::*`".into());
        }
        if let Some(class) = name.strip_suffix("::*") {
            if class.is_empty() || class.contains('*') || class.ends_with(':') {
                return Err(format!("{text:?}: expected `Class::*` with a class name"));
            }
            return Ok(TaskPattern::Class(class.to_string()));
        }
        if name.contains('*') {
            return Err(format!("{text:?}: a wildcard only stands for a whole method name, as in `Class::*`"));
        }
        let canonical = canonical_task_name(name);
        match canonical.split_once("::") {
            Some((class, method)) if !class.is_empty() && !method.is_empty() => Ok(TaskPattern::Task(canonical)),
            _ => Err(format!("{text:?}: expected `Class::method` or `Class::*`")),
        }
    }

    /// Whether the canonical task name `task` matches.
    pub fn matches(&self, task: &str) -> bool {
        match self {
            TaskPattern::Task(name) => name == task,
            TaskPattern::Class(class) => task.strip_prefix(class.as_str()).is_some_and(|rest| {
                rest.strip_prefix("::").is_some_and(|method| !method.is_empty() && !method.contains("::"))
            }),
        }
    }

    /// Whether some task name matches both patterns.
    pub fn overlaps(&self, other: &TaskPattern) -> bool {
        match (self, other) {
            (TaskPattern::Task(a), TaskPattern::Task(b)) => a == b,
            (TaskPattern::Class(a), TaskPattern::Class(b)) => a == b,
            (TaskPattern::Class(_), TaskPattern::Task(task)) => self.matches(task),
            (TaskPattern::Task(task), TaskPattern::Class(_)) => other.matches(task),
        }
    }
}

impl std::fmt::Display for TaskPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskPattern::Task(name) => f.write_str(name),
            TaskPattern::Class(class) => write!(f, "{class}::*"),
        }
    }
}

/// The tasks a worker registers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Selection {
    /// Every loaded task (no pools configured, or a default pool that serves everything).
    #[default]
    All,
    /// Only the tasks these patterns match (a pool's workers).
    Only(Vec<TaskPattern>),
    /// Every task but those these patterns match (the default pool next to pools that keep
    /// their tasks to themselves).
    Except(Vec<TaskPattern>),
}

impl Selection {
    /// Whether a worker with this selection registers the canonical task name `task`.
    pub fn selects(&self, task: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Only(patterns) => patterns.iter().any(|p| p.matches(task)),
            Selection::Except(patterns) => !patterns.iter().any(|p| p.matches(task)),
        }
    }

    /// The pattern that keeps `task` from this worker: a pool's, when the default pool does not
    /// serve it (`Except`), or `None` when this worker serves it or is itself a pool's worker.
    /// A job through li3_gearman's compatibility function names its task in the workload, so
    /// the default pool's workers check it here before they run it.
    pub fn kept_from(&self, task: &str) -> Option<&TaskPattern> {
        match self {
            Selection::Except(patterns) => patterns.iter().find(|p| p.matches(task)),
            Selection::All | Selection::Only(_) => None,
        }
    }

    /// Whether it registers li3_gearman's one compatibility function. That function carries the
    /// task's name in the workload, so the job server cannot route it to a pool by task: only
    /// the default pool registers it.
    pub fn serves_compat(&self) -> bool {
        !matches!(self, Selection::Only(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> TaskPattern {
        TaskPattern::parse(text).unwrap()
    }

    #[test]
    fn patterns_are_canonical_as_job_names_are() {
        assert_eq!(pattern("Hello"), TaskPattern::Task("Hello::run".into()));
        assert_eq!(pattern("\\Report::build"), TaskPattern::Task("Report::build".into()));
        assert_eq!(pattern("Report::*"), TaskPattern::Class("Report".into()));
        assert_eq!(pattern("\\app\\Report::*").to_string(), "app\\Report::*");
        for bad in ["", "*", "::*", "Re*::x", "Report::b*", "::x", "Report::"] {
            assert!(TaskPattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn matching_and_overlaps() {
        let class = pattern("Report::*");
        assert!(class.matches("Report::build"));
        assert!(!class.matches("Reporting::build"));
        assert!(!class.matches("Report::"));
        assert!(!class.matches("Mail::send"));
        assert!(class.overlaps(&pattern("Report::build")));
        assert!(pattern("Report::build").overlaps(&class));
        assert!(class.overlaps(&pattern("Report::*")));
        assert!(!class.overlaps(&pattern("Mail::*")));
        assert!(!pattern("Report::build").overlaps(&pattern("Report::send")));
    }

    #[test]
    fn selections() {
        let claimed = vec![pattern("Misbehave::sleep")];
        assert!(Selection::All.selects("Misbehave::sleep"));
        assert!(Selection::Only(claimed.clone()).selects("Misbehave::sleep"));
        assert!(!Selection::Only(claimed.clone()).selects("Misbehave::add"));
        assert!(!Selection::Except(claimed.clone()).selects("Misbehave::sleep"));
        assert!(Selection::Except(claimed.clone()).selects("Misbehave::add"));
        assert!(!Selection::Only(claimed.clone()).serves_compat());
        assert_eq!(Selection::Except(claimed.clone()).kept_from("Misbehave::sleep"), Some(&claimed[0]));
        assert_eq!(Selection::Except(claimed.clone()).kept_from("Misbehave::add"), None);
        assert_eq!(Selection::All.kept_from("Misbehave::sleep"), None);
        assert!(Selection::Except(claimed).serves_compat());
    }
}
