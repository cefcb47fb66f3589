//! The store test suite, shared by every backend: `store_suite!(make)` expands to one test per
//! case, each on a fresh store from `make().await` (which returns the store and a guard that
//! keeps its resources, e.g. an etcd process, alive).

pub mod cases;
pub mod etcd_server;

#[macro_export]
macro_rules! store_suite {
    ($make:path) => {
        $crate::store_suite!(@cases $make,
            revisions_increase,
            get_at_revision,
            range_prefix_limit_continue,
            create_if_absent,
            cas_conflict,
            delete_returns_value,
            watch_history_then_live,
            watch_concurrent_writers,
            watch_slow_consumer,
            watch_after_compaction,
            leases_expire,
            lease_revoke_deletes_keys
        );
    };
    (@cases $make:path, $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                $crate::support::cases::$case(store).await;
            }
        )+
    };
}
