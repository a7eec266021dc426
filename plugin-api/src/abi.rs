//! The types that cross the boundary between the host and a plugin.
//!
//! Everything here is `#[repr(C)]` and derives [`StableAbi`], so that abi_stable can compare the
//! layout the host was compiled with against the layout a plugin was compiled with, type by
//! type, when the plugin is loaded. Task authors never touch these types: the [`plugin!`]
//! macro builds them and [`Job`](crate::Job) wraps the context. The host uses them directly.
//!
//! Growth rules: any change to a type in this module, an appended field included, bumps the
//! minor version (0.x), and plugins built against an older version must be rebuilt. abi_stable
//! checks the package version each type was built in (the same 0.y minor, a plugin patch no
//! lower than the host's), so a plugin of another minor is refused with a clear message.
//! [`PluginMod`] is a prefix type, but that does not let versions mix: the version check refuses
//! a plugin of a later minor, and the layout check refuses one whose `PluginMod` has fewer
//! fields than the host's ("too many fields"; a test shows it). See the crate docs.
//!
//! [`plugin!`]: crate::plugin

// `PluginMod_Ref` is abi_stable's naming convention.
#![allow(non_camel_case_types)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
    DynTrait, StableAbi,
};

/// The root module a plugin exports: who it is and what tasks it has.
///
/// Built by [`plugin!`](crate::plugin) when the host first asks for it (the "loader"); the host
/// keeps the reference for the life of the process (libraries are never unloaded).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginMod_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The plugin's name, by default its crate name.
    pub name: RStr<'static>,
    /// The plugin's own version, by default its crate version.
    pub version: RStr<'static>,
    /// Lists the plugin's tasks. Called once by the host after loading.
    #[sabi(last_prefix_field)]
    pub tasks: extern "C" fn() -> RVec<TaskDecl>,
    /// What settings the plugin takes, for listings: `RedisSettings { url, pool }`, empty when
    /// none. Appended in 0.3.
    #[cfg(not(feature = "__test_prefix_0_2"))]
    #[sabi(missing_field(option))]
    pub settings: extern "C" fn() -> RString,
    /// Builds the plugin's per-worker state from its settings (the JSON object of its
    /// configuration section, `{}` when it has none), or `None` when the plugin has no state.
    /// An error of kind [`TaskErrorKind::BadArguments`] means the settings do not fit; any
    /// other, that the constructor failed or panicked. Appended in 0.3.
    #[cfg(not(feature = "__test_prefix_0_2"))]
    #[sabi(missing_field(option))]
    pub connect: Option<extern "C" fn(RStr<'_>) -> RResult<PluginState, TaskError>>,
    /// The names of the tasks that take the state (the others never need it built). Appended
    /// in 0.3.
    #[cfg(not(feature = "__test_prefix_0_2"))]
    #[sabi(missing_field(option))]
    pub stateful_tasks: extern "C" fn() -> RVec<RString>,
}

/// The signature of a plugin's state constructor (see [`PluginMod::connect`]).
pub type ConnectFn = extern "C" fn(settings: RStr<'_>) -> RResult<PluginState, TaskError>;

impl RootModule for PluginMod_Ref {
    declare_root_module_statics! {PluginMod_Ref}

    const BASE_NAME: &'static str = "li3g_plugin";
    const NAME: &'static str = "li3g plugin";
    const VERSION_STRINGS: VersionStrings = interface_version();
}

#[cfg(not(feature = "__test_version_mismatch"))]
const fn interface_version() -> VersionStrings {
    abi_stable::package_version_strings!()
}

#[cfg(feature = "__test_version_mismatch")]
const fn interface_version() -> VersionStrings {
    // The release before this one (0.3 appended to `PluginMod`), so this host refuses it.
    VersionStrings::new("0.2.0")
}

/// The signature of a task's entry point.
///
/// `args` is a JSON array with the positional arguments. `Ok` carries the result as JSON text;
/// `Err` a [`TaskError`]. The function never unwinds: panics are caught before the boundary.
pub type TaskFn = for<'a, 'b> extern "C" fn(args: RStr<'a>, job: &'a JobCtx<'b>) -> RResult<RString, TaskError>;

/// One task of a plugin, as listed by [`PluginMod::tasks`].
#[repr(C)]
#[derive(StableAbi)]
pub struct TaskDecl {
    /// `Class::method`, where the class may carry a namespace (`app\tasks\Hello::say`).
    pub name: RString,
    /// The positional parameters, in order.
    pub params: RVec<Param>,
    /// A readable name of the result type, for listings.
    pub output: RString,
    /// The entry point, a [`TaskFn`] (spelled out: the derive must see the fn pointer).
    pub call: for<'a, 'b> extern "C" fn(RStr<'a>, &'a JobCtx<'b>) -> RResult<RString, TaskError>,
    /// Test-only: an incompatible layout (see the crate's features).
    #[cfg(feature = "__test_layout_mismatch")]
    pub mismatch: u64,
}

impl TaskDecl {
    /// Declares a task. Used by [`plugin!`](crate::plugin).
    pub fn new(name: &str, params: Vec<Param>, output: &str, call: TaskFn) -> Self {
        TaskDecl {
            name: name.into(),
            params: params.into(),
            output: output.into(),
            call,
            #[cfg(feature = "__test_layout_mismatch")]
            mismatch: 0,
        }
    }
}

/// A task parameter, for listings and error messages.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The name the author gave it, or empty when none was given.
    pub name: RString,
    /// A readable name of its Rust type (`String`, `Vec<u32>`).
    pub ty: RString,
}

/// What the host tells a task about the job it runs, and how the task reports back.
#[repr(C)]
#[derive(StableAbi)]
pub struct JobCtx<'a> {
    /// The task name as dispatched (`Hello::say`).
    pub task: RStr<'a>,
    /// The job id: given by whoever submitted the job, or generated.
    pub id: RStr<'a>,
    /// The environment name (`--environment`, or the envelope's), empty when none.
    pub environment: RStr<'a>,
    /// The job's other environment values: li3_gearman's `env` entries (`HTTP_HOST`, ...),
    /// which the original merged into `$_SERVER`. Sorted by name, names unique.
    pub env_vars: RSlice<'a, EnvVar<'a>>,
    /// The per-worker state of the task's plugin, when it declares one and it was built.
    pub state: Option<&'a PluginState>,
    /// Where progress and data go.
    pub sink: JobSink_TO<'a, abi_stable::sabi_types::RRef<'a, ()>>,
}

/// One environment value of a job: `HTTP_HOST` = `shop.example.com`.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvVar<'a> {
    /// Its name.
    pub name: RStr<'a>,
    /// Its value.
    pub value: RStr<'a>,
}

/// A plugin's per-worker state, opaque to the host: built by the plugin's constructor, handed
/// back to the plugin's tasks, and dropped (by the plugin's own destructor, through the
/// vtable) when the worker ends.
pub type PluginState = DynTrait<'static, RBox<()>, StateInterface>;

/// The (empty) interface of [`PluginState`]: the host can only hold it and drop it.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(impl_InterfaceType())]
pub struct StateInterface;

/// Receives what a running task reports. Implemented by the host.
///
/// The host's implementations must not panic: a panic here would cross the boundary.
#[sabi_trait]
pub trait JobSink {
    /// Progress: `numerator` of `denominator` done (Gearman `WORK_STATUS`).
    fn status(&self, numerator: u64, denominator: u64);
    /// A chunk of partial result data (Gearman `WORK_DATA`).
    fn data(&self, data: RSlice<'_, u8>);
    /// A warning for the client (Gearman `WORK_WARNING`).
    #[sabi(last_prefix_field)]
    fn warning(&self, data: RSlice<'_, u8>);
}

/// Why a task did not produce a result.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskErrorKind {
    /// The task ran and returned an error.
    Failed,
    /// The arguments did not fit the task's parameters (count or type).
    BadArguments,
    /// The task panicked; the message is the panic's.
    Panicked,
    /// The result could not be encoded as JSON.
    BadOutput,
}

/// A task's error: what kind, and a message for the caller.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    /// What went wrong.
    pub kind: TaskErrorKind,
    /// A message for the caller, naming the task.
    pub message: RString,
}

impl TaskError {
    /// A new error of `kind` with `message`.
    pub fn new(kind: TaskErrorKind, message: impl Into<String>) -> Self {
        TaskError { kind, message: RString::from(message.into()) }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}
