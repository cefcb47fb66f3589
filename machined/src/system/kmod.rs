//! Kernel modules: which files to load, in which order, for a module name (from the
//! `modules.dep` of the running kernel's module tree), and which modules are loaded already
//! (`/proc/modules`, `modules.builtin`). The parsing is pure, so it is tested on a temp dir;
//! only the Linux backend calls `finit_module`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The kernel's name for a module file or a configured name: no directory, no `.ko[.xz|.zst|.gz]`,
/// `-` read as `_` (the kernel treats them alike).
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = base.split_once(".ko").map_or(base, |(s, _)| s);
    stem.replace('-', "_")
}

/// The module tree of one kernel: its `modules.dep` by module name.
pub struct ModuleTree {
    dir: PathBuf,
    /// Module name -> (file relative to `dir`, the names of the modules it needs).
    deps: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

impl ModuleTree {
    /// Reads `dir/modules.dep` (required) and `dir/modules.builtin` (optional).
    pub fn open(dir: &Path) -> Result<Self, String> {
        let dep_file = dir.join("modules.dep");
        let text = std::fs::read_to_string(&dep_file)
            .map_err(|e| format!("reading {}: {e}", dep_file.display()))?;
        let mut deps = HashMap::new();
        for line in text.lines() {
            let Some((file, needs)) = line.split_once(':') else {
                continue;
            };
            let file = file.trim();
            if file.is_empty() {
                continue;
            }
            let needs = needs.split_whitespace().map(module_name).collect();
            deps.insert(module_name(file), (file.to_string(), needs));
        }
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .map(|t| t.lines().map(module_name).collect())
            .unwrap_or_default();
        Ok(Self {
            dir: dir.to_path_buf(),
            deps,
            builtin,
        })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_name(name))
    }

    /// The files to load for `name`, dependencies first, each once, leaving out modules in
    /// `loaded` and built-in ones.
    pub fn load_order(
        &self,
        name: &str,
        loaded: &HashSet<String>,
    ) -> Result<Vec<(String, PathBuf)>, String> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&module_name(name), loaded, &mut seen, &mut order, 0)?;
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        loaded: &HashSet<String>,
        seen: &mut HashSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        depth: usize,
    ) -> Result<(), String> {
        if loaded.contains(name) || self.builtin.contains(name) || !seen.insert(name.to_string()) {
            return Ok(());
        }
        // modules.dep has no cycles (depmod refuses them); the bound guards a corrupt file.
        if depth > 64 {
            return Err(format!("module {name}: dependency chain too deep"));
        }
        let (file, needs) = self
            .deps
            .get(name)
            .ok_or_else(|| format!("module {name} not found in {}", self.dir.display()))?;
        for dep in needs {
            self.visit(dep, loaded, seen, order, depth + 1)?;
        }
        order.push((name.to_string(), self.dir.join(file)));
        Ok(())
    }
}

/// Names of the loaded modules in a `/proc/modules` text.
pub fn loaded_modules(proc_modules: &str) -> HashSet<String> {
    proc_modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(module_name)
        .collect()
}

/// Loads one module file with `finit_module(2)`. Compressed files are handed to the kernel to
/// decompress (MODULE_INIT_COMPRESSED_FILE, Linux 6.4+). A module that is there already is fine.
pub fn finit_module(path: &std::path::Path, params: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;
    let file = std::fs::File::open(path)?;
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".ko") {
        0
    } else {
        MODULE_INIT_COMPRESSED_FILE
    };
    let params = std::ffi::CString::new(params)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: the fd and the NUL-terminated parameter string outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, ModuleTree) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/net/bridge/br_netfilter.ko.zst: kernel/net/bridge/bridge.ko.zst kernel/net/802/stp.ko.zst kernel/net/llc/llc.ko.zst\n\
             kernel/net/bridge/bridge.ko.zst: kernel/net/802/stp.ko.zst kernel/net/llc/llc.ko.zst\n\
             kernel/net/802/stp.ko.zst: kernel/net/llc/llc.ko.zst\n\
             kernel/net/llc/llc.ko.zst:\n\
             kernel/drivers/net/wireguard/wireguard.ko: kernel/lib/crypto/libchacha20poly1305.ko\n\
             kernel/lib/crypto/libchacha20poly1305.ko:\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/block/loop.ko\n",
        )
        .unwrap();
        let t = ModuleTree::open(dir.path()).unwrap();
        (dir, t)
    }

    fn names(order: &[(String, PathBuf)]) -> Vec<&str> {
        order.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn dependencies_come_first_once_each() {
        let (dir, t) = tree();
        let order = t.load_order("br-netfilter", &HashSet::new()).unwrap();
        assert_eq!(names(&order), ["llc", "stp", "bridge", "br_netfilter"]);
        assert_eq!(
            order[3].1,
            dir.path().join("kernel/net/bridge/br_netfilter.ko.zst")
        );
    }

    #[test]
    fn loaded_and_builtin_modules_are_skipped() {
        let (_dir, t) = tree();
        let loaded = loaded_modules("llc 16384 1 stp, Live 0x0\nstp 12288 0 - Live 0x0\n");
        assert_eq!(
            loaded,
            HashSet::from(["llc".to_string(), "stp".to_string()])
        );
        let order = t.load_order("br_netfilter", &loaded).unwrap();
        assert_eq!(names(&order), ["bridge", "br_netfilter"]);
        assert!(t.is_builtin("loop"));
        assert!(t.load_order("loop", &HashSet::new()).unwrap().is_empty());
        let all = HashSet::from(["wireguard".to_string()]);
        assert!(t.load_order("wireguard", &all).unwrap().is_empty());
    }

    #[test]
    fn unknown_modules_and_missing_trees_are_named() {
        let (_dir, t) = tree();
        let err = t.load_order("nosuch", &HashSet::new()).unwrap_err();
        assert!(err.contains("module nosuch not found"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = ModuleTree::open(empty.path()).err().unwrap();
        assert!(err.contains("modules.dep"), "{err}");
    }

    #[test]
    fn names_drop_directories_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/x/nf-nat.ko.xz"), "nf_nat");
        assert_eq!(module_name("dm_mod"), "dm_mod");
        assert_eq!(module_name("virtio_net.ko"), "virtio_net");
    }
}
