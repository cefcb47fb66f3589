//! Images for the pods' containers: pulled from OCI registries (oci-client) into
//! containerd's content store and unpacked into snapshots, following imagePullPolicy, with
//! mirrors and credentials from `machine.registries`. Pulls run in the background; a failed
//! pull is retried with a doubling back-off, shown as `ErrImagePull` then `ImagePullBackOff`.

mod content;
mod pull;
pub mod registry;
pub mod secrets;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use ros_config::Registries;
use tokio::sync::Notify;

use super::runtime::{ContainerRuntime, ImageInfo};
use super::status::Observed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// The container's policy, defaulted as Kubernetes does: `Always` for `:latest` or no tag
/// (and no digest), `IfNotPresent` otherwise.
pub fn policy(c: &Container, normalized_image: &str) -> PullPolicy {
    match c.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ => {
            let raw = c.image.as_deref().unwrap_or("");
            let last = raw.rsplit('/').next().unwrap_or("");
            let untagged = !last.contains(':') && !raw.contains('@');
            if untagged || normalized_image.ends_with(":latest") {
                PullPolicy::Always
            } else {
                PullPolicy::IfNotPresent
            }
        }
    }
}

/// An event for the pod whose container asked for an image (type, reason, message).
pub type PodEvent = (&'static str, &'static str, String);

/// What [`Images::ensure`] found: the image, or the waiting state to report, and maybe an
/// event to record on the pod.
pub struct Outcome {
    pub image: Result<ImageInfo, Observed>,
    pub event: Option<PodEvent>,
}

enum Entry {
    /// Requesters (container attempts) that get the result when the pull ends.
    Pulling {
        waiters: HashSet<String>,
        last_error: Option<String>,
        /// Failed pulls before this one (for the back-off).
        failures: u32,
    },
    /// Requesters whose pull finished and who have not yet taken the image.
    Done { waiters: HashSet<String> },
    Failed {
        message: String,
        failures: u32,
        at: Instant,
        /// Requesters already told (ErrImagePull once, then ImagePullBackOff).
        told: HashMap<String, u8>,
        waiters: HashSet<String>,
    },
}

#[derive(Clone)]
pub struct Images {
    runtime: ContainerRuntime,
    registries: Arc<Registries>,
    snapshotter: String,
    pulls: Arc<Mutex<HashMap<String, Entry>>>,
    /// Woken when a pull ends, so the pod worker syncs at once.
    pub wake: Arc<Notify>,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl Images {
    pub fn new(
        runtime: ContainerRuntime,
        registries: Registries,
        snapshotter: &str,
        backoff_base: Duration,
    ) -> Images {
        Images {
            runtime,
            registries: Arc::new(registries),
            snapshotter: snapshotter.to_string(),
            pulls: Arc::default(),
            wake: Arc::new(Notify::new()),
            backoff_base,
            backoff_max: Duration::from_secs(300),
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        self.backoff_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.backoff_max)
    }

    /// The image `name` for `requester` (one attempt of one container: an `Always` pull
    /// happens once per attempt), pulling it when the policy says so.
    pub async fn ensure(
        &self,
        requester: &str,
        name: &str,
        policy: PullPolicy,
        pod_auth: &secrets::PodCredentials,
    ) -> Outcome {
        let local = match self.runtime.image(name).await {
            Ok(i) => i,
            Err(e) => {
                return Outcome {
                    image: Err(waiting("ErrImagePull", format!("{e:#}"))),
                    event: None,
                };
            }
        };
        match (policy, local) {
            (PullPolicy::Never, Some(i)) | (PullPolicy::IfNotPresent, Some(i)) => Outcome {
                image: Ok(i),
                event: None,
            },
            (PullPolicy::Never, None) => {
                let msg =
                    format!("Container image \"{name}\" is not present with pull policy of Never");
                Outcome {
                    image: Err(waiting("ErrImageNeverPull", msg.clone())),
                    event: Some(("Warning", "ErrImageNeverPull", msg)),
                }
            }
            (_, local) => self.pull_for(requester, name, local, pod_auth),
        }
    }

    fn pull_for(
        &self,
        requester: &str,
        image: &str,
        local: Option<ImageInfo>,
        pod_auth: &secrets::PodCredentials,
    ) -> Outcome {
        // Pulls with different credentials are different pulls (one may fail, one not).
        let key = pull_key(image, pod_auth);
        let name = key.as_str();
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        let mut retry = (None, 0, HashSet::new());
        match pulls.get_mut(name) {
            Some(Entry::Done { waiters }) if waiters.contains(requester) => {
                waiters.remove(requester);
                if waiters.is_empty() {
                    pulls.remove(name);
                }
                drop(pulls);
                return match local {
                    Some(i) => Outcome {
                        image: Ok(i),
                        event: Some((
                            "Normal",
                            "Pulled",
                            format!("Successfully pulled image \"{image}\""),
                        )),
                    },
                    // Removed right after the pull: pull again on the next sync.
                    None => Outcome {
                        image: Err(waiting("ContainerCreating", String::new())),
                        event: None,
                    },
                };
            }
            Some(Entry::Pulling {
                waiters,
                last_error,
                ..
            }) => {
                waiters.insert(requester.to_string());
                let image = match last_error {
                    Some(m) => waiting("ErrImagePull", m.clone()),
                    None => waiting("ContainerCreating", String::new()),
                };
                return Outcome {
                    image: Err(image),
                    event: None,
                };
            }
            Some(Entry::Failed {
                message,
                failures,
                at,
                told,
                waiters,
            }) => {
                if at.elapsed() < self.backoff(*failures) {
                    waiters.insert(requester.to_string());
                    let stage = told.entry(requester.to_string()).or_insert(0);
                    let before = *stage;
                    *stage = (before + 1).min(2);
                    if before == 0 {
                        return Outcome {
                            image: Err(waiting("ErrImagePull", message.clone())),
                            event: Some((
                                "Warning",
                                "Failed",
                                format!("Failed to pull image \"{image}\": {message}"),
                            )),
                        };
                    }
                    let msg = format!("Back-off pulling image \"{image}\": {message}");
                    return Outcome {
                        image: Err(waiting("ImagePullBackOff", msg.clone())),
                        event: (before == 1).then_some(("Normal", "BackOff", msg)),
                    };
                }
                retry = (Some(message.clone()), *failures, std::mem::take(waiters));
            }
            _ => {}
        }
        // Start a pull; those waiting on an earlier one wait for this one too.
        let (last_error, failures, mut waiters) = retry;
        if let Some(Entry::Done { waiters: w }) = pulls.remove(name) {
            waiters.extend(w);
        }
        waiters.insert(requester.to_string());
        pulls.insert(
            name.to_string(),
            Entry::Pulling {
                waiters,
                last_error: last_error.clone(),
                failures,
            },
        );
        drop(pulls);
        self.spawn_pull(name.to_string(), image.to_string(), pod_auth.clone());
        Outcome {
            image: Err(match &last_error {
                Some(m) => waiting("ErrImagePull", m.clone()),
                None => waiting("ContainerCreating", String::new()),
            }),
            event: Some(("Normal", "Pulling", format!("Pulling image \"{image}\""))),
        }
    }

    fn spawn_pull(&self, name: String, image: String, pod_auth: secrets::PodCredentials) {
        let this = self.clone();
        tokio::spawn(async move {
            let result = async {
                let endpoints = registry::endpoints(&this.registries, &image, &pod_auth)?;
                pull::pull(
                    &endpoints,
                    &image,
                    this.runtime.channel(),
                    this.runtime.namespace(),
                    &this.snapshotter,
                )
                .await
            }
            .await;
            let mut pulls = this.pulls.lock().unwrap_or_else(|e| e.into_inner());
            let (waiters, failures) = match pulls.remove(&name) {
                Some(Entry::Pulling {
                    waiters, failures, ..
                }) => (waiters, failures),
                _ => (HashSet::new(), 0),
            };
            match result {
                Ok(()) => {
                    tracing::info!(image = %name, "pulled");
                    pulls.insert(name, Entry::Done { waiters });
                }
                Err(e) => {
                    tracing::info!(image = %name, error = format!("{e:#}"), "pull failed");
                    pulls.insert(
                        name,
                        Entry::Failed {
                            message: format!("{e:#}"),
                            failures: failures + 1,
                            at: Instant::now(),
                            told: HashMap::new(),
                            waiters,
                        },
                    );
                }
            }
            drop(pulls);
            this.wake.notify_one();
        });
    }
}

/// The pull-state key: the image, plus the hosts and users of pod credentials.
fn pull_key(image: &str, pod_auth: &secrets::PodCredentials) -> String {
    let mut key = image.to_string();
    for (host, auth) in pod_auth {
        let user = match auth {
            oci_client::secrets::RegistryAuth::Basic(u, _) => u.as_str(),
            _ => "",
        };
        key.push_str(&format!(" {host}={user}"));
    }
    key
}

fn waiting(reason: &str, message: String) -> Observed {
    Observed::Waiting {
        reason: reason.to_string(),
        message: (!message.is_empty()).then_some(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn default_policy_follows_the_tag() {
        let p = |img: &str| {
            policy(
                &container(img, None),
                &crate::agent::pods::normalize_image(img),
            )
        };
        assert_eq!(p("busybox"), PullPolicy::Always);
        assert_eq!(p("busybox:latest"), PullPolicy::Always);
        assert_eq!(p("busybox:1.36"), PullPolicy::IfNotPresent);
        assert_eq!(p("127.0.0.1:5000/app"), PullPolicy::Always);
        assert_eq!(p("127.0.0.1:5000/app:2"), PullPolicy::IfNotPresent);
        assert_eq!(p("app@sha256:abcd"), PullPolicy::IfNotPresent);
        assert_eq!(
            policy(&container("busybox", Some("Never")), "x"),
            PullPolicy::Never
        );
    }
}
