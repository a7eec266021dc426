//! Running one task: the job context a plugin sees, the call across the ABI, and the result's
//! bytes. The code lives in `li3g_plugin_api::dispatch`, shared with the plugin authors' test
//! kit (`li3g_plugin_api::testing`), so a task runs in a plugin's tests as it runs here.

pub use li3g_plugin_api::dispatch::{invoke, JobEvents, JobInfo, TaskOutput};
