//! The [`plugin!`](crate::plugin) macro and the runtime support it expands to.
//!
//! Everything under `__private` is used by the macro's expansion only; its shape may change
//! in any release.

use crate::abi::{Param, PluginMod, TaskError, TaskErrorKind, TaskFn};
use crate::task::{Signature, Task};
use crate::Job;
use abi_stable::prefix_type::PrefixTypeTrait;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};

/// A plugin linked into the program itself rather than loaded from a `.so`: the `LI3G_PLUGIN`
/// constant that [`plugin!`](crate::plugin) defines, which the test kit
/// ([`testing`](crate::testing)) takes.
#[derive(Clone, Copy)]
pub struct PluginEntry {
    pub(crate) root_module: fn() -> Result<crate::abi::PluginMod_Ref, abi_stable::std_types::RBoxError>,
}

impl PluginEntry {
    /// Builds the plugin's root module as loading its `.so` would (its `init` run, its
    /// declarations checked), for a host that links a plugin in.
    ///
    /// # Errors
    /// The refusal the host would report for the file.
    pub fn load(&self) -> Result<crate::abi::PluginMod_Ref, abi_stable::std_types::RBoxError> {
        (self.root_module)()
    }
}

/// Checks a task name: `Class::method`, where the class may carry a `\`-separated namespace.
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn validate_task_name(name: &str) -> Result<(), String> {
    const MAX: usize = 512; // gearmand's limit on function names
    if name.len() > MAX {
        return Err(format!("task name {name:?} is longer than {MAX} bytes"));
    }
    let Some((class, method)) = name.split_once("::") else {
        return Err(format!("task name {name:?} is not of the form Class::method"));
    };
    let ident = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    let class_ok = class.split('\\').all(ident);
    if !class_ok || !ident(method) {
        return Err(format!(
            "task name {name:?} is not of the form Class::method (namespace parts separated by \\, \
             identifiers of letters, digits and _)"
        ));
    }
    Ok(())
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    pub use crate::abi::{JobCtx, PluginMod_Ref, PluginState, TaskDecl, TaskError};
    use crate::task::readable_type_name;
    pub use abi_stable::library::{__call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult};
    pub use abi_stable::std_types::{RBoxError, RResult, RStr, RString, RVec};
    use serde::de::DeserializeOwned;

    /// Declares the plugin's state functions: `__li3g_ctor`, `__li3g_settings`, `__LI3G_CONNECT`.
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __li3g_state {
        ($plugin:expr;) => {
            // A macro, not a fn: a fn would have to name the constructor's type, and an opaque
            // `impl Constructor` would hide the state type the tasks are checked against.
            macro_rules! __li3g_ctor {
                () => {
                    $crate::__private::no_state as fn(_) -> _
                };
            }
            extern "C" fn __li3g_settings() -> $crate::__private::RString {
                $crate::__private::describe(__li3g_ctor!(), false)
            }
            const __LI3G_CONNECT: ::std::option::Option<$crate::__private::ConnectFnPtr> = None;
        };
        ($plugin:expr; $state:path) => {
            macro_rules! __li3g_ctor {
                () => {
                    $state as fn(_) -> _
                };
            }
            extern "C" fn __li3g_settings() -> $crate::__private::RString {
                $crate::__private::describe(__li3g_ctor!(), true)
            }
            #[allow(improper_ctypes_definitions)]
            extern "C" fn __li3g_connect(
                settings: $crate::__private::RStr<'_>,
            ) -> $crate::__private::RResult<$crate::__private::PluginState, $crate::__private::TaskError> {
                $crate::__private::connect($plugin, __li3g_ctor!(), settings)
            }
            const __LI3G_CONNECT: ::std::option::Option<$crate::__private::ConnectFnPtr> = Some(__li3g_connect);
        };
    }

    /// Picks the given value, or the default when none was given.
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __li3g_or {
        (; $default:expr) => {
            $default
        };
        ($value:expr; $default:expr) => {
            $value
        };
    }

    /// Declares one task: its name, its parameters (typed by `F`, named by `names`), its entry.
    ///
    /// # Errors
    /// When the names do not match the function's parameters (reported by [`root_module`]).
    pub fn declare<C: Constructor, M, F: Task<C::State, M>>(
        name: &str,
        names: &[&str],
        _f: F,
        _ctor: C,
        call: TaskFn,
    ) -> Result<TaskDecl, String> {
        let types = F::param_types();
        if !names.is_empty() && names.len() != types.len() {
            return Err(format!(
                "task {name}: {} parameter names given, but its function takes {} arguments",
                names.len(),
                types.len()
            ));
        }
        let params = types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| Param { name: names.get(i).copied().unwrap_or("").into(), ty: ty.into() })
            .collect();
        Ok(TaskDecl::new(name, params, &F::output_type(), call))
    }

    /// The list the macro builds: one declaration, or one error, per task.
    pub type TaskList = fn() -> Vec<Result<TaskDecl, String>>;

    /// Runs a task: decodes the arguments, calls it, catches a panic, encodes the result.
    pub fn call<'a, 'b: 'a, C: Constructor, M, F: Task<C::State, M>>(
        task: &str,
        names: &[&str],
        f: F,
        _ctor: C,
        args: RStr<'a>,
        ctx: &'a JobCtx<'b>,
    ) -> RResult<RString, TaskError> {
        let sig = Signature { task, names };
        let job = Job::new(ctx);
        // The host hands a plugin only its own state, which this plugin built with `C`.
        let state = ctx.state.and_then(|state| state.downcast_as::<Guarded<C::State>>().ok()).map(|g| &*g.state);
        let outcome = catching_panics(&format!("task {task}"), || {
            let args = parse_args(task, args.as_str())?;
            f.invoke(&sig, &job, state, args)
        });
        match outcome {
            Ok(value) => RResult::ROk(RString::from(value.to_string())),
            Err(err) => RResult::RErr(err),
        }
    }

    /// Lists the tasks for the host, never unwinding across the boundary.
    pub fn tasks(list: TaskList) -> RVec<TaskDecl> {
        // `list` only builds vectors of names; should it still panic, an empty list is the
        // answer the host can live with (it then reports a plugin without tasks).
        panic::catch_unwind(list).map(|decls| decls.into_iter().filter_map(Result::ok).collect()).unwrap_or_default()
    }

    /// The root module loader: installs the panic hook, runs the author's `init`, checks the
    /// declarations, and builds the module.
    pub fn root_module(
        name: &'static str,
        version: &'static str,
        init: fn() -> Result<(), String>,
        list: TaskList,
        entries: Entries,
    ) -> Result<PluginMod_Ref, RBoxError> {
        #[cfg_attr(feature = "__test_prefix_0_2", allow(unused_variables))]
        let Entries { tasks, settings, connect, stateful_tasks } = entries;
        let fail = |err: String| RBoxError::from_fmt(&format!("plugin {name}: {err}"));
        install_panic_hook();
        catching_panics("init", || init().map_err(|err| TaskError::new(TaskErrorKind::Failed, err)))
            .map_err(|err| fail(format!("init failed: {}", err.message)))?;
        let mut seen = std::collections::HashSet::new();
        for decl in list() {
            let decl = decl.map_err(fail)?;
            validate_task_name(&decl.name).map_err(fail)?;
            if !seen.insert(decl.name.clone()) {
                return Err(fail(format!("task {} is declared twice", decl.name)));
            }
        }
        Ok(PluginMod {
            name: RStr::from_str(name),
            version: RStr::from_str(version),
            tasks,
            #[cfg(not(feature = "__test_prefix_0_2"))]
            settings,
            #[cfg(not(feature = "__test_prefix_0_2"))]
            connect,
            #[cfg(not(feature = "__test_prefix_0_2"))]
            stateful_tasks,
        }
        .leak_into_prefix())
    }

    /// A plugin linked into the program itself, for the test kit: see [`crate::PluginEntry`].
    pub const fn entry(root_module: fn() -> Result<PluginMod_Ref, RBoxError>) -> crate::PluginEntry {
        crate::PluginEntry { root_module }
    }

    /// The plugin's entry points the macro generates, for [`root_module`].
    pub struct Entries {
        /// [`crate::abi::PluginMod::tasks`].
        pub tasks: extern "C" fn() -> RVec<TaskDecl>,
        /// [`crate::abi::PluginMod::settings`].
        pub settings: extern "C" fn() -> RString,
        /// [`crate::abi::PluginMod::connect`].
        pub connect: Option<ConnectFnPtr>,
        /// [`crate::abi::PluginMod::stateful_tasks`].
        pub stateful_tasks: extern "C" fn() -> RVec<RString>,
    }

    /// [`crate::abi::PluginMod::connect`]'s type.
    pub type ConnectFnPtr = extern "C" fn(RStr<'_>) -> RResult<PluginState, TaskError>;

    /// Whether task function `f` takes the state its plugin's constructor `C` builds.
    pub fn takes_state<C: Constructor, M, F: Task<C::State, M>>(_f: F, _ctor: C) -> bool {
        F::takes_state()
    }

    /// A plugin's state constructor: a `fn(Settings) -> Result<State, E>`, `Settings` decoded
    /// with serde from the plugin's configuration section.
    pub trait Constructor: Copy {
        /// What the constructor takes.
        type Settings: DeserializeOwned;
        /// What it builds: the state its tasks take as `&State`.
        type State: 'static;
        /// Runs it; the error as text.
        fn build(self, settings: Self::Settings) -> Result<Self::State, String>;
    }

    impl<Set: DeserializeOwned, S: 'static, E: std::fmt::Display> Constructor for fn(Set) -> Result<S, E> {
        type Settings = Set;
        type State = S;
        fn build(self, settings: Set) -> Result<S, String> {
            self(settings).map_err(|err| format!("{err:#}"))
        }
    }

    /// The state of a plugin that declares none.
    pub struct NoState;

    /// The "constructor" of a plugin without state (never called by the host).
    pub fn no_state(_: serde::de::IgnoredAny) -> Result<NoState, std::convert::Infallible> {
        Ok(NoState)
    }

    /// Decodes `settings` (JSON) into the constructor's type and runs it, catching a panic.
    pub fn connect<C: Constructor>(plugin: &str, ctor: C, settings: RStr<'_>) -> RResult<PluginState, TaskError> {
        let outcome = decode_settings::<C::Settings>(settings.as_str()).and_then(|settings| {
            catching_panics(&format!("the state constructor of plugin {plugin}"), || {
                ctor.build(settings).map_err(|err| TaskError::new(TaskErrorKind::Failed, err))
            })
        });
        match outcome {
            Ok(state) => RResult::ROk(PluginState::from_value(Guarded {
                state: std::mem::ManuallyDrop::new(state),
                plugin: plugin.to_string(),
            })),
            Err(err) => RResult::RErr(err),
        }
    }

    /// A plugin's state as the host holds it: its destructor runs with panics caught, since a
    /// panic unwinding into the host's `extern "C"` drop would abort the process. The panic is
    /// reported on stderr, naming the plugin; the rest of the state is leaked.
    pub struct Guarded<T> {
        state: std::mem::ManuallyDrop<T>,
        plugin: String,
    }

    impl<T> Drop for Guarded<T> {
        fn drop(&mut self) {
            let what = format!("the state destructor of plugin {}", self.plugin);
            let outcome = catching_panics(&what, || {
                // SAFETY: dropped once, here, in `Drop`; `state` is never used afterwards.
                unsafe { std::mem::ManuallyDrop::drop(&mut self.state) };
                Ok(())
            });
            if let Err(err) = outcome {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "{}", err.message);
            }
        }
    }

    /// `Settings` from JSON; the error names the key (`pool.size: invalid type: ...`, `.` for
    /// the section itself: `.: missing field \`url\``).
    pub fn decode_settings<T: DeserializeOwned>(json: &str) -> Result<T, TaskError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = format!("{path}: {inner}");
            // serde_json appends where in its input the error is; our input is no file.
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            TaskError::new(TaskErrorKind::BadArguments, message)
        })
    }

    /// What settings `C` takes, for listings: `Type { field, field }`, `Type`, or empty.
    pub fn describe<C: Constructor>(_ctor: C, has_state: bool) -> RString {
        if !has_state {
            return RString::new();
        }
        let name = readable_type_name::<C::Settings>();
        match fields_of::<C::Settings>() {
            Some(fields) if fields.is_empty() => format!("{name} {{}}").into(),
            Some(fields) => format!("{name} {{ {} }}", fields.join(", ")).into(),
            None => name.into(),
        }
    }
}

/// The field names of a struct type, read from its `Deserialize` impl without any input.
/// (serde tells a deserializer a struct's fields up front; no crate does only this.)
fn fields_of<T: serde::de::DeserializeOwned>() -> Option<Vec<&'static str>> {
    use serde::de::{self, Visitor};
    struct Tracer(Option<&'static [&'static str]>);
    impl<'de> de::Deserializer<'de> for &mut Tracer {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("traced"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut tracer = Tracer(None);
    let _ = T::deserialize(&mut tracer);
    tracer.0.map(<[&str]>::to_vec)
}

thread_local! {
    /// Set while a task runs, so that the hook records the panic's location instead of printing.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records where a task panicked. This plugin has its own copy of std, so the hook is this
/// plugin's alone; panics outside tasks still go to the previous (default) hook.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(Cell::get) {
                let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                PANIC_LOCATION.with(|cell| *cell.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an error: `{what} panicked at {location}: {message}`.
fn catching_panics<T>(what: &str, f: impl FnOnce() -> Result<T, TaskError>) -> Result<T, TaskError> {
    IN_TASK.with(|flag| flag.set(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    IN_TASK.with(|flag| flag.set(false));
    outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_string());
        // A payload whose destructor panics would unwind out of here: keep it.
        std::mem::forget(payload);
        let at = PANIC_LOCATION.with(|cell| cell.borrow_mut().take()).map(|l| format!(" at {l}")).unwrap_or_default();
        Err(TaskError::new(TaskErrorKind::Panicked, format!("{what} panicked{at}: {message}")))
    })
}

fn parse_args(task: &str, args: &str) -> Result<Vec<serde_json::Value>, TaskError> {
    match serde_json::from_str(args) {
        Ok(serde_json::Value::Array(list)) => Ok(list),
        Ok(other) => Ok(vec![other]),
        Err(err) => {
            Err(TaskError::new(TaskErrorKind::BadArguments, format!("{task}: the arguments are not valid JSON: {err}")))
        }
    }
}

/// Exports a plugin: its tasks, and optionally its name, version and an init function.
///
/// ```
/// fn run() {}
/// fn say(name: String) -> String {
///     format!("Hello {name}")
/// }
///
/// li3g_plugin_api::plugin! {
///     tasks: {
///         "Hello::run" => run,
///         "Hello::say"(name) => say,
///     }
/// }
/// ```
///
/// - Each task is `"Class::method" => function`. The optional list after the name gives the
///   parameters' names for error messages and listings; without it they are numbered.
/// - `name:` and `version:` default to the crate's name and version.
/// - `init: path,` names a `fn() -> Result<(), E: Display>` run once when the host loads the
///   plugin; an error rejects the plugin with that message. It must not start threads.
/// - `state: path,` names the plugin's state constructor, a `fn(Settings) -> Result<State, E>`
///   where `Settings: Deserialize` (decoded from the plugin's configuration section) and
///   `E: Display`. Tasks then may take `&State` first (before `&Job`). See the crate docs.
///
/// Use it once per crate, at the crate root, in a crate built as a `cdylib`. It also defines
/// `pub const LI3G_PLUGIN`, the plugin for the test kit ([`testing`](crate::testing)).
#[macro_export]
macro_rules! plugin {
    (
        $(name: $name:expr,)?
        $(version: $version:expr,)?
        $(init: $init:path,)?
        $(state: $state:path,)?
        tasks: {
            $( $task:literal $( ( $($arg:ident),* $(,)? ) )? => $func:path ),* $(,)?
        } $(,)?
    ) => {
        $crate::__li3g_state!($crate::__li3g_or!($($name)?; env!("CARGO_PKG_NAME")); $($state)?);

        fn __li3g_task_list() -> ::std::vec::Vec<
            ::std::result::Result<$crate::__private::TaskDecl, ::std::string::String>,
        > {
            ::std::vec![$({
                extern "C" fn call<'a, 'b>(
                    args: $crate::__private::RStr<'a>,
                    job: &'a $crate::__private::JobCtx<'b>,
                ) -> $crate::__private::RResult<$crate::__private::RString, $crate::__private::TaskError> {
                    $crate::__private::call($task, &[$($(stringify!($arg)),*)?], $func, __li3g_ctor!(), args, job)
                }
                $crate::__private::declare($task, &[$($(stringify!($arg)),*)?], $func, __li3g_ctor!(), call)
            }),*]
        }

        extern "C" fn __li3g_tasks() -> $crate::__private::RVec<$crate::__private::TaskDecl> {
            $crate::__private::tasks(__li3g_task_list)
        }

        extern "C" fn __li3g_stateful_tasks() -> $crate::__private::RVec<$crate::__private::RString> {
            let mut names = $crate::__private::RVec::new();
            $(
                if $crate::__private::takes_state($func, __li3g_ctor!()) {
                    names.push($crate::__private::RString::from($task));
                }
            )*
            names
        }

        fn __li3g_init() -> ::std::result::Result<(), ::std::string::String> {
            $( return $init().map_err(|err| ::std::string::ToString::to_string(&err)); )?
            #[allow(unreachable_code)]
            Ok(())
        }

        fn __li3g_root_module() -> ::std::result::Result<
            $crate::__private::PluginMod_Ref,
            $crate::__private::RBoxError,
        > {
            $crate::__private::root_module(
                $crate::__li3g_or!($($name)?; env!("CARGO_PKG_NAME")),
                $crate::__li3g_or!($($version)?; env!("CARGO_PKG_VERSION")),
                __li3g_init,
                __li3g_task_list,
                $crate::__private::Entries {
                    tasks: __li3g_tasks,
                    settings: __li3g_settings,
                    connect: __LI3G_CONNECT,
                    stateful_tasks: __li3g_stateful_tasks,
                },
            )
        }

        /// This plugin, linked into the program (its own tests): what
        /// `li3g_plugin_api::testing::Harness::new` takes.
        pub const LI3G_PLUGIN: $crate::PluginEntry = $crate::__private::entry(__li3g_root_module);

        /// The header abi_stable looks for when the host loads this library. The symbol name
        /// is abi_stable's `ROOT_MODULE_LOADER_NAME` (checked by a test in li3g-plugin-api).
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn erased() -> $crate::__private::RootModuleResult {
                $crate::__private::__call_root_module_loader(__li3g_root_module)
            }
            // SAFETY: `from_constructor::<M>` requires the constructor's erased module to be
            // a `PrefixRef<M>`: `erased` returns what `__call_root_module_loader` made of
            // `__li3g_root_module`'s `PluginMod_Ref`, which is `M` here (as abi_stable's own
            // `export_root_module` expands).
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::__private::PluginMod_Ref>(
                    erased,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::__private::*;
    use crate::abi::{JobSink, JobSink_TO, TaskErrorKind};
    use crate::Job;
    use abi_stable::sabi_trait::TD_Opaque;
    use abi_stable::std_types::RSlice;
    use std::cell::Cell;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Settings {
        start: u64,
        #[serde(default)]
        pool: Pool,
    }

    #[derive(serde::Deserialize, Default)]
    #[allow(dead_code)]
    struct Pool {
        size: u32,
    }

    struct Counter(Cell<u64>);

    fn open(settings: Settings) -> Result<Counter, String> {
        if settings.start == 13 {
            return Err("unlucky".into());
        }
        if settings.start == 666 {
            panic!("constructor exploded");
        }
        Ok(Counter(Cell::new(settings.start)))
    }

    fn next(counter: &Counter, job: &Job, by: u64) -> u64 {
        assert_eq!(job.task(), "C::next");
        counter.0.set(counter.0.get() + by);
        counter.0.get()
    }

    struct Quiet;
    impl JobSink for Quiet {
        fn status(&self, _: u64, _: u64) {}
        fn data(&self, _: RSlice<'_, u8>) {}
        fn warning(&self, _: RSlice<'_, u8>) {}
    }

    /// The error of a constructor that must fail (the state is not `Debug`, so no `unwrap_err`).
    fn failed(settings: &str) -> TaskError {
        match connect("counter", open as fn(_) -> _, RStr::from_str(settings)) {
            RResult::ROk(_) => panic!("{settings}: the constructor succeeded"),
            RResult::RErr(err) => err,
        }
    }

    fn run(state: Option<&PluginState>, args: &str) -> Result<String, TaskError> {
        let sink = Quiet;
        let ctx = JobCtx {
            task: RStr::from_str("C::next"),
            id: RStr::from_str("1"),
            environment: RStr::from_str(""),
            env_vars: RSlice::from_slice(&[]),
            state,
            sink: JobSink_TO::from_ptr(&sink, TD_Opaque),
        };
        call("C::next", &["by"], next, open as fn(_) -> _, RStr::from_str(args), &ctx).into_result().map(Into::into)
    }

    #[test]
    fn typed_settings_build_a_state_that_tasks_share() {
        let RResult::ROk(state) = connect("counter", open as fn(_) -> _, RStr::from_str(r#"{"start": 40}"#)) else {
            panic!("the constructor failed")
        };
        assert_eq!(run(Some(&state), "[1]").unwrap(), "41");
        assert_eq!(run(Some(&state), "[1]").unwrap(), "42");
        // Without its state the task fails with a message, it does not crash.
        let err = run(None, "[1]").unwrap_err();
        assert!(err.message.contains("the plugin's state was not built"), "{}", err.message);
    }

    #[test]
    fn settings_errors_name_the_key_and_constructor_failures_are_kept_apart() {
        let err = failed(r#"{"start": "x"}"#);
        assert_eq!(err.kind, TaskErrorKind::BadArguments);
        assert_eq!(err.message, "start: invalid type: string \"x\", expected u64");
        let err = failed(r#"{"start": 1, "pool": {"size": -1}}"#);
        assert!(err.message.starts_with("pool.size: invalid value"), "{}", err.message);
        let err = failed("{}");
        assert_eq!(err.message, ".: missing field `start`");
        let err = failed(r#"{"start": 13}"#);
        assert_eq!((err.kind, err.message.as_str()), (TaskErrorKind::Failed, "unlucky"));
        let err = failed(r#"{"start": 666}"#);
        assert_eq!(err.kind, TaskErrorKind::Panicked);
        assert!(err.message.contains("the state constructor of plugin counter panicked"), "{}", err.message);
        assert!(err.message.ends_with("constructor exploded"), "{}", err.message);
    }

    #[test]
    fn which_tasks_take_the_state() {
        fn plain(by: u64) -> u64 {
            by
        }
        fn with_job(_: &Job, by: u64) -> u64 {
            by
        }
        fn with_state(counter: &Counter) -> u64 {
            counter.0.get()
        }
        assert!(takes_state(next, open as fn(_) -> _));
        assert!(takes_state(with_state, open as fn(_) -> _));
        assert!(!takes_state(plain, open as fn(_) -> _));
        assert!(!takes_state(with_job, open as fn(_) -> _));
    }

    #[test]
    fn settings_are_described_by_type_and_fields() {
        assert_eq!(describe(open as fn(_) -> _, true).as_str(), "Settings { start, pool }");
        assert_eq!(describe(no_state as fn(_) -> _, false).as_str(), "");
    }
}
