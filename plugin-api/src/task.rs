//! Turning plain Rust functions into tasks.
//!
//! A task is any function whose parameters implement `serde::Deserialize` and whose result
//! implements [`Output`], optionally taking its plugin's state `&S` and/or a
//! [`&Job`](crate::Job) first (in that order):
//!
//! ```text
//! fn say(name: String) -> String
//! fn add(a: i64, b: i64) -> Result<i64, String>
//! fn report(job: &Job, steps: u32) -> ()
//! fn save(db: &Db, job: &Job, row: Row) -> Result<u64, DbError>
//! ```
//!
//! [`Task`] is implemented for such functions of up to eight parameters (the same trick as
//! axum's handlers: a marker type parameter keeps the impls apart). It decodes the job's JSON
//! arguments one by one, so an error can name the task, the position, the parameter's name
//! when the author gave one, and its type. A missing trailing argument is decoded from `null`,
//! so `Option<T>` parameters are optional.

use crate::{Job, TaskError, TaskErrorKind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Marker for tasks that do not take the job context.
pub enum Plain {}
/// Marker for tasks that take `&Job` as their first parameter.
pub enum WithJob {}
/// Marker for tasks that take the plugin's state `&S` as their first parameter.
pub enum WithState {}
/// Marker for tasks that take `&S` and then `&Job` first.
pub enum WithStateAndJob {}

/// A function the host can run as a task of a plugin whose state type is `S`. Implemented for
/// you; see the module docs.
///
/// `M` is a marker that only serves to tell the implementations apart.
pub trait Task<S, M> {
    /// The readable type names of the JSON parameters, in order (`&S` and `&Job` not included).
    fn param_types() -> Vec<String>;
    /// The readable type name of the result.
    fn output_type() -> String;
    /// Whether the function takes the plugin's state (`&S` first).
    fn takes_state() -> bool;
    /// Decodes `args`, runs the function (with `state` when it takes it) and encodes its result.
    fn invoke(
        &self,
        sig: &Signature<'_>,
        job: &Job<'_>,
        state: Option<&S>,
        args: Vec<Value>,
    ) -> Result<Value, TaskError>;
}

/// The state a task takes, or the error saying it is not there.
fn need_state<'s, S>(sig: &Signature<'_>, state: Option<&'s S>) -> Result<&'s S, TaskError> {
    state.ok_or_else(|| {
        TaskError::new(
            TaskErrorKind::Failed,
            format!("{}: the plugin's state was not built in this process (its constructor failed?)", sig.task),
        )
    })
}

/// What error messages need to know about a task: its name and its parameters' names.
pub struct Signature<'a> {
    /// `Class::method`.
    pub task: &'a str,
    /// Parameter names the author gave, possibly none.
    pub names: &'a [&'a str],
}

impl Signature<'_> {
    fn describe(&self, index: usize, ty: &str) -> String {
        match self.names.get(index) {
            Some(name) => format!("{} ({name}: {ty})", index + 1),
            None => format!("{} ({ty})", index + 1),
        }
    }

    fn too_many(&self, types: &[String], got: usize) -> TaskError {
        let list: Vec<String> = (0..types.len())
            .map(|i| match self.names.get(i) {
                Some(name) => format!("{name}: {}", types[i]),
                None => types[i].clone(),
            })
            .collect();
        let plural = if types.len() == 1 { "" } else { "s" };
        TaskError::new(
            TaskErrorKind::BadArguments,
            format!("{} takes {} argument{plural} ({}), got {got}", self.task, types.len(), list.join(", ")),
        )
    }
}

/// Decodes argument `index`; a missing one is decoded from `null`.
fn decode<A: DeserializeOwned>(sig: &Signature<'_>, index: usize, value: Option<Value>) -> Result<A, TaskError> {
    let missing = value.is_none();
    serde_json::from_value(value.unwrap_or(Value::Null)).map_err(|err| {
        let which = sig.describe(index, &readable_type_name::<A>());
        let message = if missing {
            format!("{}: missing argument {which}", sig.task)
        } else {
            format!("{}: argument {which}: {err}", sig.task)
        };
        TaskError::new(TaskErrorKind::BadArguments, message)
    })
}

macro_rules! impl_task {
    ($($arg:ident),*) => {
        impl_task!(@one Plain, [], |f, _job, _state| f; $($arg),*);
        impl_task!(@one WithJob, [&Job<'_>,], |f, job, _state| f, job; $($arg),*);
        impl_task!(@one WithState, [&S,], |f, _job, state| f, state; $($arg),*);
        impl_task!(@one WithStateAndJob, [&S, &Job<'_>,], |f, job, state| f, state, job; $($arg),*);
    };
    (@one $marker:ident, [$($first:tt)*], |$f:ident, $job:ident, $state:ident| $call:ident $(, $pre:ident)*; $($arg:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables, unused_assignments)]
        impl<S, F, R, $($arg,)*> Task<S, ($marker, ($($arg,)*), R)> for F
        where
            F: Fn($($first)* $($arg),*) -> R,
            R: Output,
            $($arg: DeserializeOwned,)*
        {
            fn param_types() -> Vec<String> {
                vec![$(readable_type_name::<$arg>()),*]
            }
            fn output_type() -> String {
                R::type_name()
            }
            fn takes_state() -> bool {
                impl_task!(@takes $marker)
            }
            fn invoke(
                &self,
                sig: &Signature<'_>,
                $job: &Job<'_>,
                $state: Option<&S>,
                args: Vec<Value>,
            ) -> Result<Value, TaskError> {
                let types = <Self as Task<S, ($marker, ($($arg,)*), R)>>::param_types();
                if args.len() > types.len() {
                    return Err(sig.too_many(&types, args.len()));
                }
                impl_task!(@state $marker, sig, $state);
                let mut args = args.into_iter();
                let mut index = 0;
                $(
                    let $arg: $arg = decode(sig, index, args.next())?;
                    index += 1;
                )*
                let $f = self;
                ($call)($($pre,)* $($arg),*).into_output(sig.task)
            }
        }
    };
    (@takes Plain) => { false };
    (@takes WithJob) => { false };
    (@takes WithState) => { true };
    (@takes WithStateAndJob) => { true };
    (@state Plain, $sig:ident, $state:ident) => {};
    (@state WithJob, $sig:ident, $state:ident) => {};
    (@state WithState, $sig:ident, $state:ident) => { let $state = need_state($sig, $state)?; };
    (@state WithStateAndJob, $sig:ident, $state:ident) => { let $state = need_state($sig, $state)?; };
}

impl_task!();
impl_task!(A1);
impl_task!(A1, A2);
impl_task!(A1, A2, A3);
impl_task!(A1, A2, A3, A4);
impl_task!(A1, A2, A3, A4, A5);
impl_task!(A1, A2, A3, A4, A5, A6);
impl_task!(A1, A2, A3, A4, A5, A6, A7);
impl_task!(A1, A2, A3, A4, A5, A6, A7, A8);

/// What a task may return: a serializable value, or a `Result` whose error becomes the job's
/// exception message.
///
/// Implemented for the common types and for `Result<T, E>` with `T: Serialize` and
/// `E: Display`. To return your own `Serialize` type, wrap it in [`Json`] or return it in a
/// `Result`. (A blanket impl over `Serialize` is impossible: `Result` is `Serialize` too.)
pub trait Output {
    /// Encodes the value; `Err` is the failure message.
    fn into_output(self, task: &str) -> Result<Value, TaskError>;
    /// A readable name of the type, for listings.
    fn type_name() -> String;
}

fn encode<T: Serialize + ?Sized>(value: &T, task: &str) -> Result<Value, TaskError> {
    serde_json::to_value(value).map_err(|err| {
        TaskError::new(TaskErrorKind::BadOutput, format!("{task}: cannot encode the result as JSON: {err}"))
    })
}

impl<T: Serialize, E: std::fmt::Display> Output for Result<T, E> {
    fn into_output(self, task: &str) -> Result<Value, TaskError> {
        match self {
            Ok(value) => encode(&value, task),
            Err(err) => Err(TaskError::new(TaskErrorKind::Failed, format!("{err:#}"))),
        }
    }
    fn type_name() -> String {
        readable_type_name::<T>()
    }
}

/// Wraps any `Serialize` value so that a task can return it directly.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize> Output for Json<T> {
    fn into_output(self, task: &str) -> Result<Value, TaskError> {
        encode(&self.0, task)
    }
    fn type_name() -> String {
        readable_type_name::<T>()
    }
}

macro_rules! impl_output {
    ($($ty:ty),* $(,)?) => {$(
        impl Output for $ty {
            fn into_output(self, task: &str) -> Result<Value, TaskError> {
                encode(&self, task)
            }
            fn type_name() -> String {
                readable_type_name::<$ty>()
            }
        }
    )*};
}

impl_output!(
    (),
    bool,
    char,
    String,
    &'static str,
    Value,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    f32,
    f64,
);

macro_rules! impl_output_generic {
    ($($ty:ty => [$($param:ident),*]),* $(,)?) => {$(
        impl<$($param: Serialize),*> Output for $ty {
            fn into_output(self, task: &str) -> Result<Value, TaskError> {
                encode(&self, task)
            }
            fn type_name() -> String {
                readable_type_name::<$ty>()
            }
        }
    )*};
}

impl_output_generic!(
    Vec<T> => [T],
    Option<T> => [T],
    std::collections::BTreeMap<K, V> => [K, V],
    std::collections::HashMap<K, V> => [K, V],
    (A, B) => [A, B],
    (A, B, C) => [A, B, C],
);

/// `std::any::type_name` without module paths: `Vec<String>`, not `alloc::vec::Vec<alloc::string::String>`.
pub fn readable_type_name<T: ?Sized>() -> String {
    shorten_type_name(std::any::type_name::<T>())
}

fn shorten_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear(); // drop the path so far, keep the last segment
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(readable_type_name::<String>(), "String");
        assert_eq!(readable_type_name::<Vec<Option<String>>>(), "Vec<Option<String>>");
        assert_eq!(readable_type_name::<std::collections::HashMap<String, u8>>(), "HashMap<String, u8>");
        assert_eq!(readable_type_name::<(u8, &str)>(), "(u8, &str)");
    }
}
