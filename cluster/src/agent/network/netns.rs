//! Pod network namespaces: made by a short-lived thread that unshares its network namespace
//! and bind-mounts it onto a file (as `ip netns add` does), so the namespace outlives the
//! thread and runc can join it by path. Work inside a namespace runs on a thread that
//! entered it, never on the agent's runtime threads.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Creates the namespace file `path` (no-op if it already holds a namespace).
pub fn create(path: &Path) -> Result<()> {
    if is_netns(path) {
        return Ok(());
    }
    let dir = path.parent().context("netns path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .context("unshare(CLONE_NEWNET) (the agent needs CAP_SYS_ADMIN)")?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting the new netns onto {}", target.display()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmounts and removes the namespace file (the namespace goes when its last user does).
pub fn remove(path: &Path) -> Result<()> {
    if is_netns(path) {
        nix::mount::umount2(path, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", path.display()))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Whether `path` is a mounted network namespace (nsfs), not just an empty file.
pub fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Runs `f` on a new thread inside the namespace at `netns` (the caller's own when None).
pub fn run_in<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(p) = &netns {
                let fd = File::open(p).with_context(|| format!("opening netns {}", p.display()))?;
                nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering netns {}", p.display()))?;
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
    })
}

/// Runs `f` with a fresh rtnetlink connection made inside `netns` (netlink sockets stay
/// bound to the namespace they were created in), on a thread with its own runtime.
pub fn with_netlink<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T>>,
{
    run_in(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("netlink runtime")?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
            let task = tokio::spawn(conn);
            let out = f(handle).await;
            task.abort();
            out
        })
    })
}

/// Writes a sysctl under /proc/sys (of the namespace the calling thread is in).
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("setting {key}={value}"))
}
