//! Leader election through Leases: of two candidates exactly one acts; when the leader goes
//! away the other takes over after the lease expires; a leader whose lease is taken stops.
//! And `cluster server` holds the scheduler and controller-manager leases.

mod controllers_support;
mod kubectl_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cluster::leader::{Elector, Timing};
use controllers_support::{client, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kubectl_support::Server;
use serde_json::json;

/// Clears the flag when the leader's work is stopped (its future dropped).
struct Acting(Arc<AtomicBool>);

impl Drop for Acting {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry: Duration::from_millis(300),
    }
}

fn candidate(c: &kube::Client, id: &str, flag: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let e = Elector::new(c.clone(), "kube-system", "test-election", id, timing());
    tokio::spawn(e.run(move || {
        let flag = flag.clone();
        async move {
            let _acting = Acting(flag.clone());
            flag.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await
        }
    }))
}

async fn holder(leases: &Api<Lease>) -> String {
    leases
        .get("test-election")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_candidate_acts_and_the_other_takes_over() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    let a = Arc::new(AtomicBool::new(false));
    let b = Arc::new(AtomicBool::new(false));
    let ta = candidate(&c, "a", a.clone());
    let tb = candidate(&c, "b", b.clone());

    wait_for("a leader", || async {
        (a.load(Ordering::SeqCst) || b.load(Ordering::SeqCst)).then_some(())
    })
    .await;
    // Over several renewals, never both and never neither.
    for _ in 0..40 {
        let (x, y) = (a.load(Ordering::SeqCst), b.load(Ordering::SeqCst));
        assert!(x ^ y, "exactly one acts (a={x}, b={y})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, leader_task, follower, follower_name) = if a.load(Ordering::SeqCst) {
        (a.clone(), ta, b.clone(), "b")
    } else {
        (b.clone(), tb, a.clone(), "a")
    };
    assert_ne!(holder(&leases).await, follower_name);

    // The leader stops: the follower takes over once the lease has expired.
    leader_task.abort();
    let _ = leader_task.await;
    assert!(!leader.load(Ordering::SeqCst));
    wait_for("the follower to take over", || async {
        follower.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert_eq!(holder(&leases).await, follower_name);
    let lease = leases.get("test-election").await.unwrap().spec.unwrap();
    assert!(lease.lease_transitions.unwrap_or(0) >= 1, "{lease:?}");

    // Someone else takes the lease (as a partitioned-away leader would see): the holder
    // notices on its next renewal and stops acting.
    leases
        .patch(
            "test-election",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "intruder",
                "renewTime": jiff::Timestamp::now().to_string()}})),
        )
        .await
        .unwrap();
    wait_for("the old holder to stop", || async {
        (!follower.load(Ordering::SeqCst)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_server_holds_scheduler_and_controller_manager_leases() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    for (name, component) in [
        ("kube-scheduler", "kube-scheduler"),
        ("kube-controller-manager", "kube-controller-manager"),
    ] {
        let holder = wait_for(name, || async {
            leases.get_opt(name).await.unwrap()?.spec?.holder_identity
        })
        .await;
        assert!(holder.contains(component), "{holder}");
    }
    let out = s.ok(&["get", "leases", "-n", "kube-system"]);
    assert!(
        out.contains("kube-scheduler") && out.contains("kube-controller-manager"),
        "{out}"
    );
}
