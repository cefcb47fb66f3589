//! The pod worker: makes containerd's containers match the pods bound to this node and
//! reports their status. Every sync starts from containerd's own records (labels on the
//! containers), so a restarted agent adopts what runs and never starts a duplicate.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;

use super::images::{self, Images};
use super::network::{self, PodNet, PodNetwork};
use super::probes::{Probes, hooks};
use super::runtime::{self, ContainerRuntime, PodContainer, TaskState};
use super::spec;
use super::status::{self, ContainerView, Init, Observed};
use super::volumes;

const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;
const DEFAULT_GRACE_SECONDS: i64 = 30;

pub struct PodWorker {
    pub client: Client,
    pub runtime: ContainerRuntime,
    /// Pulls the containers' images (`imagePullPolicy`, registries config).
    pub images: Images,
    /// Startup, liveness and readiness probes of running containers.
    pub probes: Probes,
    /// Gives pods their network namespace and IP (`--pod-network`).
    pub network: Arc<dyn PodNetwork>,
    pub node_name: String,
    pub host_ip: String,
    pub root_dir: PathBuf,
    /// First CrashLoopBackOff delay; doubles per restart up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Pods (by UID) whose containers got SIGTERM, and when.
    pub terminating: HashMap<String, Instant>,
}

impl PodWorker {
    /// Watches the pods bound to this node and syncs on every change and every second.
    pub async fn run(mut self) -> Result<()> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let (reader, writer) = reflector::store();
        let changed = Arc::new(Notify::new());
        let notify = changed.clone();
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        tokio::spawn(async move {
            reflector::reflector(writer, watcher(api, config))
                .default_backoff()
                .for_each(|ev| {
                    if let Err(e) = ev {
                        tracing::warn!(error = %e, "watching pods");
                    }
                    notify.notify_one();
                    async {}
                })
                .await;
        });
        reader
            .wait_until_ready()
            .await
            .context("waiting for the pod list")?;
        tracing::info!(node = %self.node_name, "pod worker started");
        loop {
            if let Err(e) = self.sync(&reader).await {
                tracing::warn!(error = format!("{e:#}"), "pod sync");
            }
            tokio::select! {
                _ = changed.notified() => {}
                _ = self.images.wake.notified() => {}
                _ = self.probes.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn sync(&mut self, pods: &Store<Pod>) -> Result<()> {
        let mut by_pod: BTreeMap<String, Vec<PodContainer>> = BTreeMap::new();
        let listed = self.runtime.list().await?;
        // Probes stop with their container (a new attempt gets new ones).
        self.probes
            .retain(&listed.iter().map(|c| c.id.clone()).collect());
        for c in listed {
            by_pod.entry(c.pod_uid.clone()).or_default().push(c);
        }
        for list in by_pod.values_mut() {
            list.sort_by_key(|c| c.attempt);
        }
        let pods = pods.state();
        for pod in &pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let mine = by_pod.remove(&uid).unwrap_or_default();
            let result = if pod.metadata.deletion_timestamp.is_some() {
                self.terminate(pod, &mine).await
            } else {
                self.sync_pod(pod, &mine).await
            };
            if let Err(e) = result {
                tracing::warn!(
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    error = format!("{e:#}"),
                    "syncing pod"
                );
            }
        }
        // Containers of pods that no longer exist (deleted while the agent was away).
        for (uid, containers) in by_pod {
            tracing::info!(%uid, "removing the containers of a deleted pod");
            for c in &containers {
                self.runtime.kill(&c.id, SIGKILL).await?;
            }
            if self.all_stopped(&containers).await? {
                for c in &containers {
                    self.runtime.remove(&c.id).await?;
                }
                self.terminating.remove(&uid);
                self.network.teardown(&uid).await?;
            }
        }
        // Network state of pods that are gone and have no containers left.
        for uid in self.network.pods().await? {
            if !pods
                .iter()
                .any(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
                && let Err(e) = self.network.teardown(&uid).await
            {
                tracing::warn!(%uid, error = format!("{e:#}"), "pod network cleanup");
            }
        }
        Ok(())
    }

    async fn all_stopped(&self, containers: &[PodContainer]) -> Result<bool> {
        for c in containers {
            if matches!(
                self.runtime.task_state(&c.id).await?,
                TaskState::Running | TaskState::Created
            ) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Graceful termination: SIGTERM, SIGKILL after the grace period, then remove the
    /// containers and finish the deletion of the pod object.
    async fn terminate(&mut self, pod: &Pod, containers: &[PodContainer]) -> Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if !self.all_stopped(containers).await? {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(DEFAULT_GRACE_SECONDS)
                .max(0) as u64;
            match self.terminating.get(&uid) {
                None => {
                    self.stop_gracefully(pod, containers, grace).await?;
                    self.terminating.insert(uid.clone(), Instant::now());
                }
                Some(since) if since.elapsed() >= Duration::from_secs(grace) => {
                    for c in containers {
                        self.runtime.kill(&c.id, SIGKILL).await?;
                    }
                }
                Some(_) => {}
            }
            if grace > 0 {
                return Ok(());
            }
            if !self.all_stopped(containers).await? {
                return Ok(());
            }
        }
        for c in containers {
            self.runtime.remove(&c.id).await?;
        }
        self.terminating.remove(&uid);
        self.network.teardown(&uid).await?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = std::fs::remove_dir_all(self.pod_log_dir(pod));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("finishing the deletion of pod {ns}/{name}")),
        }
    }

    async fn sync_pod(&mut self, pod: &Pod, containers: &[PodContainer]) -> Result<()> {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".to_string());
        let (init_views, init) = self.sync_init_containers(pod, containers, &policy).await?;
        let mut views = Vec::new();
        for c in &spec.containers {
            if init != Init::Done {
                let image = normalize_image(c.image.as_deref().unwrap_or(""));
                views.push(ContainerView::waiting(&c.name, &image, "PodInitializing"));
                continue;
            }
            let attempts: Vec<&PodContainer> =
                containers.iter().filter(|x| x.name == c.name).collect();
            views.push(self.sync_container(pod, c, &attempts, &policy).await?);
        }
        // Service account tokens are renewed in place before they expire.
        if let Err(e) = volumes::projected::refresh(&self.client, pod, &self.pod_log_dir(pod)).await
        {
            tracing::warn!(
                pod = pod.metadata.name.as_deref().unwrap_or(""),
                error = format!("{e:#}"),
                "refreshing projected volumes"
            );
        }
        let mut want = status::pod_status(pod, &init_views, init, &views, &self.host_ip);
        // (A setup error shows on the containers as ContainerCreating.)
        if let Some(ip) = self.pod_net(pod).await.ok().and_then(|n| n.ip) {
            want.pod_ip = Some(ip.to_string());
            want.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP {
                ip: ip.to_string(),
            }]);
        }
        let old = serde_json::to_value(pod.status.clone().unwrap_or_default())?;
        let new = serde_json::to_value(&want)?;
        if old != new {
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or(""),
            );
            let name = pod.metadata.name.clone().unwrap_or_default();
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": new})),
            )
            .await
            .with_context(|| format!("updating the status of pod {name}"))?;
        }
        Ok(())
    }

    async fn sync_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempts: &[&PodContainer],
        policy: &str,
    ) -> Result<ContainerView> {
        let image = normalize_image(c.image.as_deref().unwrap_or(""));
        let mut view = ContainerView::waiting(&c.name, &image, "ContainerCreating");
        let Some(latest) = attempts.last() else {
            view.state = self.start(pod, c, &image, 0, &mut view).await;
            return Ok(view);
        };
        // Keep the latest attempt and the one before it (for lastState); drop older ones.
        let keep_from = attempts.len().saturating_sub(2);
        for old in &attempts[..keep_from] {
            self.runtime.remove(&old.id).await?;
        }
        view.restart_count = latest.attempt;
        view.container_id = Some(format!("containerd://{}", latest.id));
        view.image_id = latest.image_id.clone();
        if attempts.len() >= 2 {
            let prev = attempts[attempts.len() - 2];
            let state = self.runtime.task_state(&prev.id).await?;
            view.last = status::from_task(&state, prev.created_at);
        }
        match self.runtime.task_state(&latest.id).await? {
            TaskState::Running => {
                view.state = Observed::Running {
                    started_at: latest.created_at,
                };
                self.probe(pod, c, &latest.id, &mut view).await?;
            }
            TaskState::Missing | TaskState::Created => {
                // Left half-made (agent stopped between create and start): make it again.
                self.runtime.remove(&latest.id).await?;
                view.state = self.start(pod, c, &image, latest.attempt, &mut view).await;
            }
            TaskState::Stopped {
                exit_code,
                finished_at,
            } => {
                self.probes.forget(&latest.id);
                let ended = Observed::Terminated {
                    exit_code,
                    started_at: latest.created_at,
                    finished_at,
                };
                let restart = policy == "Always" || (policy == "OnFailure" && exit_code != 0);
                if !restart {
                    view.state = ended;
                    return Ok(view);
                }
                let delay = self.backoff(latest.attempt);
                let since_exit = finished_at
                    .map(|t| jiff::Timestamp::now().duration_since(t).unsigned_abs())
                    .unwrap_or_default();
                view.last = Some(ended);
                if since_exit >= delay {
                    if attempts.len() >= 2 {
                        self.runtime
                            .remove(&attempts[attempts.len() - 2].id)
                            .await?;
                    }
                    view.restart_count = latest.attempt + 1;
                    view.state = self
                        .start(pod, c, &image, latest.attempt + 1, &mut view)
                        .await;
                } else {
                    view.state = Observed::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!(
                            "back-off {}s restarting failed container={} pod={}",
                            delay.as_secs(),
                            c.name,
                            pod.metadata.name.as_deref().unwrap_or("")
                        )),
                    };
                }
            }
        }
        Ok(view)
    }

    /// The image for one attempt of container `c` (`id`), pulled as its policy says; the
    /// waiting state while it is not there. Pull events go to the pod.
    async fn image_for(
        &self,
        pod: &Pod,
        c: &Container,
        image_name: &str,
        id: &str,
    ) -> std::result::Result<runtime::ImageInfo, Observed> {
        let outcome = self
            .images
            .ensure(
                id,
                image_name,
                images::policy(c, image_name),
                &images::secrets::pod_credentials(&self.client, pod).await,
            )
            .await;
        if let Some((type_, reason, message)) = outcome.event {
            let mut reference = crate::controllers::events::reference("v1", "Pod", &pod.metadata);
            reference.field_path = Some(format!("spec.containers{{{}}}", c.name));
            crate::controllers::events::record(
                &self.client,
                reference,
                type_,
                reason,
                &message,
                "kubelet",
            )
            .await;
        }
        outcome.image
    }

    /// The pod's network (made on first use; the node's own for hostNetwork pods).
    async fn pod_net(&self, pod: &Pod) -> Result<PodNet> {
        if network::host_network(pod) {
            return Ok(PodNet::default());
        }
        let m = &pod.metadata;
        self.network
            .setup(
                m.uid.as_deref().unwrap_or(""),
                m.namespace.as_deref().unwrap_or(""),
                m.name.as_deref().unwrap_or(""),
            )
            .await
    }

    /// SIGTERM to the pod's running containers, after their preStop hooks (run in the
    /// background, within the grace period) when they have them.
    async fn stop_gracefully(
        &self,
        pod: &Pod,
        containers: &[PodContainer],
        grace: u64,
    ) -> Result<()> {
        let spec = pod.spec.clone().unwrap_or_default();
        let specs: Vec<&Container> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .collect();
        if !hooks::any_pre_stop(specs.iter().copied()) {
            for c in containers {
                self.runtime.kill(&c.id, SIGTERM).await?;
            }
            return Ok(());
        }
        let mut running = Vec::new();
        for c in containers {
            let Some(s) = specs.iter().find(|s| s.name == c.name) else {
                continue;
            };
            if self.runtime.task_state(&c.id).await? == TaskState::Running {
                running.push((c.id.clone(), (*s).clone()));
            }
        }
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| self.host_ip.clone());
        hooks::pre_stop_then_term(
            self.runtime.clone(),
            running,
            ip,
            Duration::from_secs(grace),
        );
        Ok(())
    }

    /// Runs the init containers in order (each after the previous one exited 0; a failed
    /// one restarts unless restartPolicy is Never); their views and how far they got.
    async fn sync_init_containers(
        &mut self,
        pod: &Pod,
        containers: &[PodContainer],
        policy: &str,
    ) -> Result<(Vec<ContainerView>, Init)> {
        let spec = pod.spec.clone().unwrap_or_default();
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        let mut views = Vec::new();
        let mut init = Init::Done;
        for c in spec.init_containers.iter().flatten() {
            if init != Init::Done {
                let image = normalize_image(c.image.as_deref().unwrap_or(""));
                views.push(ContainerView::waiting(&c.name, &image, "PodInitializing"));
                continue;
            }
            let attempts: Vec<&PodContainer> =
                containers.iter().filter(|x| x.name == c.name).collect();
            let mut view = self.sync_container(pod, c, &attempts, init_policy).await?;
            // An init container is ready once it has completed.
            let done = matches!(view.state, Observed::Terminated { exit_code: 0, .. });
            view.ready = done;
            view.started = matches!(view.state, Observed::Running { .. });
            init = match &view.state {
                _ if done => Init::Done,
                Observed::Terminated { .. } if init_policy == "Never" => Init::Failed,
                _ => Init::Running,
            };
            views.push(view);
        }
        Ok((views, init))
    }

    /// Applies the probes of running container `id` to `view`; a failed liveness or
    /// startup probe kills the container (its restart policy then applies).
    async fn probe(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        view: &mut ContainerView,
    ) -> Result<()> {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| self.host_ip.clone());
        let found = self.probes.observe(id, c, &ip);
        view.started = found.started;
        view.ready = found.started && found.ready;
        if let Some(why) = found.failed {
            view.ready = false;
            // Stopped as on deletion: preStop, SIGTERM, SIGKILL after the grace period.
            let grace = Duration::from_secs(
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(DEFAULT_GRACE_SECONDS)
                    .max(0) as u64,
            );
            match self.probes.killing_since(id) {
                None => {
                    tracing::info!(pod = pod.metadata.name.as_deref().unwrap_or(""), container = %c.name, %why, "stopping container");
                    let mut reference =
                        crate::controllers::events::reference("v1", "Pod", &pod.metadata);
                    reference.field_path = Some(format!("spec.containers{{{}}}", c.name));
                    let message = format!("Container {} {why}, will be restarted", c.name);
                    crate::controllers::events::record(
                        &self.client,
                        reference,
                        "Normal",
                        "Killing",
                        &message,
                        "kubelet",
                    )
                    .await;
                    hooks::pre_stop_then_term(
                        self.runtime.clone(),
                        vec![(id.to_string(), c.clone())],
                        ip,
                        grace,
                    );
                }
                Some(since) if since >= grace => self.runtime.kill(id, SIGKILL).await?,
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.backoff_max)
    }

    fn pod_log_dir(&self, pod: &Pod) -> PathBuf {
        let m = &pod.metadata;
        self.root_dir.join("pods").join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap_or(""),
            m.uid.as_deref().unwrap_or("")
        ))
    }

    /// Creates and starts attempt `attempt` of container `c`; the observed state it leads to.
    async fn start(
        &self,
        pod: &Pod,
        c: &Container,
        image_name: &str,
        attempt: u32,
        view: &mut ContainerView,
    ) -> Observed {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let id = container_id(&uid, &c.name, attempt);
        let image = match self.image_for(pod, c, image_name, &id).await {
            Ok(i) => i,
            Err(waiting) => return waiting,
        };
        let log_dir = self.pod_log_dir(pod).join(&c.name);
        let log = log_dir.join(format!("{attempt}.log"));
        // Leaf cgroups runc removes with the container (no per-pod parent yet).
        let cgroup = format!("/ros/{id}");
        // Kubernetes' CreateContainerConfigError: a missing ConfigMap/Secret or a bad volume.
        let inputs = async {
            let refs =
                volumes::PodRefs::fetch_for(&self.client, pod, &self.pod_log_dir(pod)).await?;
            let env = refs.env(c)?;
            let vols = volumes::prepare(pod, &refs, &self.pod_log_dir(pod))?;
            anyhow::Ok((env, volumes::mounts(c, &vols)?))
        }
        .await;
        let (env, mounts) = match inputs {
            Ok(x) => x,
            Err(e) => {
                return Observed::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(format!("{e:#}")),
                };
            }
        };
        let net = match self.pod_net(pod).await {
            Ok(net) => net,
            Err(e) => {
                return Observed::Waiting {
                    reason: "ContainerCreating".into(),
                    message: Some(format!("{e:#}")),
                };
            }
        };
        // The pod's own address for `status.podIP` env (the node's with host networking).
        let ips = spec::Addresses {
            host: self.host_ip.clone(),
            pod: net
                .ip
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| self.host_ip.clone()),
        };
        let mut spec = spec::runtime_spec(pod, c, &image.config, &ips, &cgroup, &env, mounts);
        network::join(&mut spec, &net);
        let labels: BTreeMap<String, String> = [
            (runtime::LABEL_POD_UID, uid.clone()),
            (
                runtime::LABEL_POD_NAMESPACE,
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
            (
                runtime::LABEL_POD_NAME,
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (runtime::LABEL_CONTAINER, c.name.clone()),
            (runtime::LABEL_ATTEMPT, attempt.to_string()),
            (runtime::LABEL_IMAGE_ID, image.digest.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let result = async {
            std::fs::create_dir_all(&log_dir)
                .with_context(|| format!("creating {}", log_dir.display()))?;
            // `stdin: true`: a FIFO kubectl attach writes to (see exec::attach).
            let stdin = (c.stdin == Some(true))
                .then(|| super::exec::attach::create_stdin_fifo(&log))
                .transpose()?;
            self.runtime
                .create_and_start(
                    &id,
                    image_name,
                    &image,
                    &spec,
                    labels,
                    &log,
                    stdin.as_deref(),
                )
                .await
        }
        .await;
        view.image_id = image.digest.clone();
        match result {
            Ok(()) => {
                tracing::info!(pod = pod.metadata.name.as_deref().unwrap_or(""), container = %c.name, attempt, %id, "started container");
                view.container_id = Some(format!("containerd://{id}"));
                // Without probes it is started and ready at once; with them, the next sync says.
                view.started = c.startup_probe.is_none();
                view.ready =
                    view.started && c.readiness_probe.is_none() && c.liveness_probe.is_none();
                Observed::Running {
                    started_at: Some(
                        jiff::Timestamp::new(jiff::Timestamp::now().as_second(), 0)
                            .unwrap_or_default(),
                    ),
                }
            }
            Err(e) => {
                let _ = self.runtime.remove(&id).await;
                Observed::Waiting {
                    reason: "RunContainerError".into(),
                    message: Some(format!("{e:#}")),
                }
            }
        }
    }
}

/// containerd's ID for attempt `attempt` of container `name` of pod `uid`: stable, so
/// creating it twice fails instead of duplicating.
pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    let h = ring::digest::digest(&ring::digest::SHA256, format!("{uid}/{name}").as_bytes());
    format!("{}-{attempt}", &runtime::hex(h.as_ref())[..32])
}

/// A Docker-style reference as containerd stores it: `busybox` -> `docker.io/library/busybox:latest`.
pub fn normalize_image(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let mut full = if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        name.to_string()
    } else {
        format!("docker.io/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !full.contains('@') {
        full.push_str(":latest");
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_normalize_like_docker() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize_image("org/app:1"), "docker.io/org/app:1");
        assert_eq!(
            normalize_image("127.0.0.1:5000/app"),
            "127.0.0.1:5000/app:latest"
        );
        assert_eq!(
            normalize_image("docker.io/library/testbox:1"),
            "docker.io/library/testbox:1"
        );
    }

    #[test]
    fn container_ids_are_stable_and_distinct() {
        assert_eq!(container_id("u", "c", 1), container_id("u", "c", 1));
        assert_ne!(container_id("u", "c", 1), container_id("u", "c", 2));
        assert_ne!(container_id("u", "c", 1), container_id("u", "d", 1));
        assert!(container_id("u", "c", 1).len() <= 76);
    }
}
