//! Where a node's first config comes from, by platform: `metal` (`ros.config=` URL or path on
//! the kernel command line), `qemu` (fw_cfg entry `opt/ros/config`), `nocloud` (a `cidata`
//! volume's `user-data`). No config means maintenance mode.

mod cmdline;
mod http;
mod nocloud;
mod qemu;

pub use cmdline::Cmdline;

use std::path::Path;

/// Fetches the platform's config. `Ok(None)`: the platform offers none.
pub fn fetch(platform: &str, cmdline: &Cmdline) -> Result<Option<String>, String> {
    // An explicit `ros.config=` wins on every platform.
    if let Some(source) = cmdline.get("ros.config") {
        return fetch_source(source).map(Some);
    }
    match platform {
        "qemu" => qemu::read(Path::new(qemu::FW_CFG_CONFIG)),
        "nocloud" => nocloud::read(),
        "metal" | "" => Ok(None),
        other => Err(format!(
            "ros.platform: unknown platform {other:?} (metal, qemu, nocloud)"
        )),
    }
}

/// `http://...` or a path.
pub fn fetch_source(source: &str) -> Result<String, String> {
    if source.starts_with("http://") {
        http::get(source)
    } else if source.starts_with("https://") {
        Err(format!(
            "ros.config={source}: https is not supported yet, use http:// or a path"
        ))
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("ros.config={source}: {e}"))
    }
}
