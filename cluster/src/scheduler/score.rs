//! Ranking the nodes a pod fits on: least allocated (cpu and memory, equally weighted) plus
//! spreading the pods of one controller across nodes.

use k8s_openapi::api::core::v1::Pod;

use super::filter::{self, NodeInfo};

/// Requests below this count as this much, so pods without requests still spread
/// (kube-scheduler uses the same non-zero defaults: 100m cpu, 200Mi memory).
const DEFAULT_CPU_MILLI: i128 = 100;
const DEFAULT_MEMORY: i128 = 200 << 20;

/// A score in 0..=200 (higher is better).
pub fn score(pod: &Pod, info: &NodeInfo) -> i128 {
    score_with(
        filter::request(pod),
        filter::controller_uid(pod).as_deref(),
        info,
    )
}

/// `score` with the pod's request and controller computed once by the caller.
fn score_with(want: filter::Request, owner: Option<&str>, info: &NodeInfo) -> i128 {
    let free = |cap: Option<i128>, used: i128, want: i128| -> i128 {
        match cap {
            Some(cap) if cap > 0 => ((cap - used - want).max(0) * 100) / cap,
            _ => 50,
        }
    };
    let used_cpu = info.requested.cpu_milli + info.pods as i128 * DEFAULT_CPU_MILLI;
    let used_mem = info.requested.memory + info.pods as i128 * DEFAULT_MEMORY;
    let least = (free(
        info.allocatable("cpu"),
        used_cpu,
        want.cpu_milli.max(DEFAULT_CPU_MILLI),
    ) + free(
        info.allocatable("memory"),
        used_mem,
        want.memory.max(DEFAULT_MEMORY),
    )) / 2;
    let spread = match owner {
        Some(uid) => {
            let same = *info.by_owner.get(uid).unwrap_or(&0) as i128;
            100 / (1 + same)
        }
        None => 100,
    };
    least + spread
}

/// The best node among `feasible` (ties go to the fewest pods, then the name, so a batch of
/// pods without requests still spreads deterministically).
pub fn pick<'a>(pod: &Pod, feasible: &[&'a NodeInfo]) -> Option<&'a NodeInfo> {
    let want = filter::request(pod);
    let owner = filter::controller_uid(pod);
    let owner = owner.as_deref();
    feasible.iter().copied().max_by_key(|n| {
        (
            score_with(want, owner, n),
            std::cmp::Reverse(n.pods),
            std::cmp::Reverse(n.name()),
        )
    })
}
