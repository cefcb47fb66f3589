//! Kernel modules: the image's list (`/etc/ros/modules`) closed over `modules.dep`, loaded
//! dependencies first, each exactly once, with finit_module. Problems are reported and boot
//! goes on.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::console::{debug, info, warning};
use crate::system::{System, errno};

pub const LIST_PATH: &str = "/etc/ros/modules";

/// `modules.dep` as a map from module name to (file, direct-and-indirect dependencies).
#[derive(Debug, Default, Clone)]
pub struct DepIndex {
    modules: HashMap<String, (String, Vec<String>)>,
}

impl DepIndex {
    pub fn parse(text: &str) -> Self {
        let mut modules = HashMap::new();
        for line in text.lines() {
            let Some((file, deps)) = line.split_once(':') else {
                continue;
            };
            let file = file.trim();
            if file.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(file), (file.to_string(), deps));
        }
        DepIndex { modules }
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }
}

/// `kernel/fs/squashfs/squashfs.ko.xz` or `virtio-net` -> `squashfs` / `virtio_net`
/// (the kernel treats `-` and `_` alike in module names).
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let base = ["xz", "zst", "gz"]
        .iter()
        .find_map(|ext| base.strip_suffix(&format!(".ko.{ext}")))
        .or_else(|| base.strip_suffix(".ko"))
        .unwrap_or(base);
    base.replace('-', "_")
}

/// The image's module list: one name per line, `#` comments.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// Names from `modules.builtin` (compiled into the kernel, nothing to load).
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStep {
    pub name: String,
    /// As written in modules.dep (relative to the modules directory).
    pub file: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    pub steps: Vec<LoadStep>,
    pub builtin: Vec<String>,
    pub problems: Vec<String>,
}

/// Orders `wanted` and everything it needs so that each module comes after its dependencies,
/// once. A missing module or a cycle is reported in `problems`; the rest still loads.
pub fn plan(wanted: &[String], index: &DepIndex, builtin: &HashSet<String>) -> LoadPlan {
    let mut planner = Planner {
        index,
        builtin,
        done: HashSet::new(),
        stack: Vec::new(),
        plan: LoadPlan::default(),
    };
    for name in wanted {
        planner.visit(name, None);
    }
    planner.plan
}

struct Planner<'a> {
    index: &'a DepIndex,
    builtin: &'a HashSet<String>,
    done: HashSet<String>,
    stack: Vec<String>,
    plan: LoadPlan,
}

impl Planner<'_> {
    fn visit(&mut self, name: &str, needed_by: Option<&str>) {
        if self.done.contains(name) {
            return;
        }
        if let Some(pos) = self.stack.iter().position(|n| n == name) {
            let mut cycle = self.stack[pos..].to_vec();
            cycle.push(name.to_string());
            self.plan.problems.push(format!(
                "dependency cycle {}; loading in list order",
                cycle.join(" -> ")
            ));
            return;
        }
        if self.builtin.contains(name) {
            self.done.insert(name.to_string());
            self.plan.builtin.push(name.to_string());
            return;
        }
        let Some((file, deps)) = self.index.modules.get(name) else {
            self.done.insert(name.to_string());
            self.plan.problems.push(match needed_by {
                Some(parent) => {
                    format!("module {name} (needed by {parent}) is not in modules.dep")
                }
                None => format!("module {name} is not in modules.dep"),
            });
            return;
        };
        self.stack.push(name.to_string());
        // modules.dep lists the deepest dependency last, as modprobe loads from the end.
        for dep in deps.iter().rev() {
            self.visit(dep, Some(name));
        }
        self.stack.pop();
        self.done.insert(name.to_string());
        self.plan.steps.push(LoadStep {
            name: name.to_string(),
            file: file.clone(),
        });
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// finit_module said EEXIST: already loaded or built in.
    pub present: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// Runs the plan; every failure is reported and the next module is tried.
pub fn load(sys: &mut impl System, plan: &LoadPlan, dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    for step in &plan.steps {
        let path = if step.file.starts_with('/') {
            PathBuf::from(&step.file)
        } else {
            dir.join(&step.file)
        };
        match sys.load_module(&path) {
            Ok(()) => {
                debug!("module {} loaded", step.name);
                report.loaded.push(step.name.clone());
            }
            Err(e) if errno(&e) == libc::EEXIST => report.present.push(step.name.clone()),
            Err(e) => {
                warning!("module {} ({}): {e}", step.name, path.display());
                report.failed.push((step.name.clone(), e.to_string()));
            }
        }
    }
    report
}

/// The whole step: read the list and modules.dep, plan, load, log a summary.
pub fn load_listed(sys: &mut impl System) {
    let list = match sys.read_to_string(Path::new(LIST_PATH)) {
        Ok(text) => parse_list(&text),
        Err(e) => {
            info!("modules: no list at {LIST_PATH} ({e}); loading none");
            return;
        }
    };
    if list.is_empty() {
        info!("modules: {LIST_PATH} is empty");
        return;
    }
    let dir = match modules_dir(sys) {
        Some(dir) => dir,
        None => {
            warning!(
                "modules: no /lib/modules/<release> directory; {} modules not loaded",
                list.len()
            );
            return;
        }
    };
    let index = match sys.read_to_string(&dir.join("modules.dep")) {
        Ok(text) => DepIndex::parse(&text),
        Err(e) => {
            warning!("modules: cannot read {}/modules.dep: {e}", dir.display());
            DepIndex::default()
        }
    };
    debug!("modules: modules.dep lists {} modules", index.len());
    let builtin = sys
        .read_to_string(&dir.join("modules.builtin"))
        .map(|t| parse_builtin(&t))
        .unwrap_or_default();
    let plan = plan(&list, &index, &builtin);
    for problem in &plan.problems {
        warning!("modules: {problem}");
    }
    let report = load(sys, &plan, &dir);
    info!(
        "modules: {} loaded, {} already present, {} built in, {} failed, {} not found",
        report.loaded.len(),
        report.present.len(),
        plan.builtin.len(),
        report.failed.len(),
        plan.problems.len()
    );
}

/// `/lib/modules/$(uname -r)`, or the only directory there if the release does not match.
fn modules_dir(sys: &impl System) -> Option<PathBuf> {
    if let Ok(release) = sys.kernel_release() {
        let dir = Path::new("/lib/modules").join(release.trim());
        if sys.exists(&dir.join("modules.dep")) {
            return Some(dir);
        }
        warning!("modules: {} has no modules.dep", dir.display());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeSystem, Op};

    const DEP: &str = "\
kernel/fs/squashfs/squashfs.ko:
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/block/loop.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
";

    fn names(plan: &LoadPlan) -> Vec<&str> {
        plan.steps.iter().map(|s| s.name.as_str()).collect()
    }

    fn position(plan: &LoadPlan, name: &str) -> usize {
        names(plan).iter().position(|n| *n == name).unwrap()
    }

    #[test]
    fn names_ignore_paths_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/fs/squashfs/squashfs.ko"), "squashfs");
        assert_eq!(module_name("a/b/virtio-net.ko.xz"), "virtio_net");
        assert_eq!(module_name("x.ko.zst"), "x");
        assert_eq!(module_name("virtio-blk"), "virtio_blk");
    }

    #[test]
    fn list_skips_comments_and_blanks() {
        let list = parse_list("# storage\nsquashfs\n\n virtio-blk  # disk\n");
        assert_eq!(list, vec!["squashfs", "virtio_blk"]);
    }

    #[test]
    fn dependencies_come_first_and_each_module_once() {
        let index = DepIndex::parse(DEP);
        assert_eq!(index.len(), 12);
        let wanted = parse_list("virtio_net\nvirtio_blk\nvirtio_pci\nsquashfs\nvirtio_net\n");
        let plan = plan(&wanted, &index, &HashSet::new());
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let order = names(&plan);
        let mut unique = order.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            order.len(),
            "a module is planned twice: {order:?}"
        );
        assert_eq!(order.len(), 10);
        for (module, dep) in [
            ("virtio_net", "virtio"),
            ("virtio_net", "virtio_ring"),
            ("virtio_net", "net_failover"),
            ("net_failover", "failover"),
            ("virtio_blk", "virtio"),
            ("virtio_pci", "virtio_pci_modern_dev"),
        ] {
            assert!(
                position(&plan, dep) < position(&plan, module),
                "{dep} before {module}: {order:?}"
            );
        }
        assert_eq!(
            plan.steps[position(&plan, "squashfs")].file,
            "kernel/fs/squashfs/squashfs.ko"
        );
    }

    #[test]
    fn missing_modules_are_reported_and_the_rest_planned() {
        let index = DepIndex::parse("a.ko: b.ko\nc.ko:\n");
        let wanted = vec!["nosuch".to_string(), "a".to_string(), "c".to_string()];
        let plan = plan(&wanted, &index, &HashSet::new());
        assert_eq!(names(&plan), vec!["a", "c"]);
        assert_eq!(
            plan.problems,
            vec![
                "module nosuch is not in modules.dep",
                "module b (needed by a) is not in modules.dep"
            ]
        );
    }

    #[test]
    fn cycles_are_reported_not_looped() {
        let index = DepIndex::parse("a.ko: b.ko\nb.ko: a.ko\n");
        let plan = plan(&["a".to_string()], &index, &HashSet::new());
        assert_eq!(names(&plan), vec!["b", "a"]);
        assert_eq!(plan.problems.len(), 1);
        assert!(
            plan.problems[0].contains("a -> b -> a"),
            "{:?}",
            plan.problems
        );
    }

    #[test]
    fn builtin_modules_are_not_loaded() {
        let index = DepIndex::parse("a.ko: b.ko\n");
        let builtin = parse_builtin("kernel/x/b.ko\nkernel/y/unix.ko\n");
        let plan = plan(&["a".into(), "unix".into()], &index, &builtin);
        assert_eq!(names(&plan), vec!["a"]);
        assert_eq!(plan.builtin, vec!["b", "unix"]);
        assert!(plan.problems.is_empty());
    }

    #[test]
    fn loading_reports_failures_and_goes_on() {
        let mut sys = FakeSystem::new();
        let dir = Path::new("/lib/modules/6.1.0-test");
        sys.fail_module(&dir.join("kernel/b.ko"), libc::ENOEXEC);
        sys.fail_module(&dir.join("kernel/c.ko"), libc::EEXIST);
        let index = DepIndex::parse("kernel/a.ko:\nkernel/b.ko:\nkernel/c.ko:\n/abs/d.ko:\n");
        let wanted: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let plan = plan(&wanted, &index, &HashSet::new());
        let report = load(&mut sys, &plan, dir);
        assert_eq!(report.loaded, vec!["a", "d"]);
        assert_eq!(report.present, vec!["c"]);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "b");
        let attempts: Vec<_> = sys
            .ops()
            .iter()
            .filter_map(|op| match op {
                Op::LoadModule(p) => Some(p.display().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            attempts,
            vec![
                "/lib/modules/6.1.0-test/kernel/a.ko",
                "/lib/modules/6.1.0-test/kernel/b.ko",
                "/lib/modules/6.1.0-test/kernel/c.ko",
                "/abs/d.ko"
            ]
        );
    }

    #[test]
    fn the_whole_step_reads_the_image_files() {
        let mut sys = FakeSystem::new();
        sys.add_file(LIST_PATH, "virtio_blk\n");
        sys.add_file("/lib/modules/6.1.0-test/modules.dep", DEP);
        load_listed(&mut sys);
        let loads: Vec<_> = sys
            .ops()
            .iter()
            .filter(|op| matches!(op, Op::LoadModule(_)))
            .cloned()
            .collect();
        assert_eq!(
            loads,
            vec![
                Op::LoadModule("/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio.ko".into()),
                Op::LoadModule(
                    "/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_ring.ko".into()
                ),
                Op::LoadModule("/lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko".into()),
            ]
        );
    }

    #[test]
    fn no_list_means_no_loads() {
        let mut sys = FakeSystem::new();
        load_listed(&mut sys);
        assert!(!sys.ops().iter().any(|op| matches!(op, Op::LoadModule(_))));
    }
}
