//! The MachineService handlers. Authorisation already happened in the auth layer; the role it
//! decided is in the request extensions (used here for redaction and maintenance limits).

use super::auth::{MAINTENANCE_DENIED, Role};
use super::sysinfo;
use crate::apply::{self, ApplyRequest};
use crate::controllers::timesync::TimeStatus;
use crate::logbuf::LogBuffer;
use crate::machine::Machine;
use crate::resources::{Change, Resource, canonical_type};
use ros_api::machine as pb;
use ros_api::machine::machine_service_server::MachineService;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct Api {
    pub machine: Arc<Machine>,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn role<T>(req: &Request<T>) -> Role {
    // The auth layer always inserts the role; a missing one means the layer was bypassed.
    req.extensions()
        .get::<Role>()
        .copied()
        .unwrap_or(Role::Maintenance)
}

fn io_status(what: &str, e: std::io::Error) -> Status {
    Status::internal(format!("{what}: {e}"))
}

impl Api {
    fn node(&self) -> String {
        self.machine.node_name()
    }

    fn to_pb(&self, r: &Resource, role: Role) -> pb::Resource {
        let mut spec = r.spec.clone();
        let sensitive = canonical_type(&r.kind).is_some_and(|t| t.sensitive);
        if sensitive && !role.sees_secrets() {
            crate::redact::redact(&mut spec);
        }
        pb::Resource {
            r#type: r.kind.clone(),
            id: r.id.clone(),
            version: r.version,
            spec_json: serde_json::to_string(&spec).unwrap_or_default(),
            spec_yaml: serde_yaml_ng::to_string(&spec).unwrap_or_default(),
            updated: r.updated.clone(),
        }
    }

    /// Resolves a type name, refusing non-discovery types in maintenance mode.
    fn resource_type(&self, name: &str, role: Role) -> Result<&'static str, Status> {
        let info = canonical_type(name).ok_or_else(|| {
            let known: Vec<&str> = crate::resources::TYPES.iter().map(|t| t.name).collect();
            Status::not_found(format!(
                "type: unknown resource type {name:?} (known: {})",
                known.join(", ")
            ))
        })?;
        if role == Role::Maintenance && !info.discovery {
            return Err(Status::permission_denied(format!(
                "{MAINTENANCE_DENIED}: only discovery resources can be read"
            )));
        }
        Ok(info.name)
    }

    /// Refreshes resources that are read on demand rather than maintained by controllers.
    fn refresh(&self, kind: &str) {
        if kind == "Addresses" {
            crate::controllers::address_status::refresh(&self.machine);
        }
        if kind == "Disks"
            && let Ok(disks) = sysinfo::disks(Path::new("/sys"))
        {
            let items = disks
                .into_iter()
                .map(|d| {
                    let spec = serde_json::json!({"size": d.size_bytes, "model": d.model, "serial": d.serial,
                        "rotational": d.rotational, "readOnly": d.read_only});
                    (d.name, spec)
                })
                .collect();
            self.machine.resources.replace_all("Disks", items);
        }
    }

    fn stream_log(&self, log: LogBuffer, follow: bool, tail: u32) -> Stream_<pb::LogChunk> {
        let node = self.node();
        let (lines, mut live) = log.snapshot(tail as usize);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            if !lines.is_empty() {
                let data = lines.join("\n") + "\n";
                if tx
                    .send(Ok(pb::LogChunk {
                        node: node.clone(),
                        data: data.into_bytes(),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                let line = match live.recv().await {
                    Ok(line) => line,
                    Err(RecvError::Lagged(n)) => format!("[{n} lines dropped: reader too slow]"),
                    Err(RecvError::Closed) => return,
                };
                let chunk = pb::LogChunk {
                    node: node.clone(),
                    data: format!("{line}\n").into_bytes(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl MachineService for Api {
    async fn version(
        &self,
        _req: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionReply>, Status> {
        Ok(Response::new(pb::VersionReply {
            node: self.node(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: option_env!("ROS_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
            arch: std::env::consts::ARCH.to_string(),
            mode: self.machine.mode().as_str().to_string(),
            platform: if self.machine.dev {
                "dev".into()
            } else {
                self.machine.platform.clone()
            },
        }))
    }

    async fn apply_configuration(
        &self,
        req: Request<pb::ApplyConfigurationRequest>,
    ) -> Result<Response<pb::ApplyConfigurationReply>, Status> {
        let r = req.into_inner();
        let yaml = String::from_utf8(r.data)
            .map_err(|_| Status::invalid_argument("data: config is not UTF-8"))?;
        let mode = pb::ApplyMode::try_from(r.mode)
            .map_err(|_| Status::invalid_argument("mode: unknown apply mode"))?;
        let try_timeout = match r.try_timeout_seconds {
            0 => apply::DEFAULT_TRY_TIMEOUT,
            s => std::time::Duration::from_secs(s as u64),
        };
        let reply = apply::apply(
            &self.machine,
            ApplyRequest {
                yaml,
                mode,
                dry_run: r.dry_run,
                try_timeout,
            },
        )
        .await?;
        Ok(Response::new(reply))
    }

    async fn get_machine_config(
        &self,
        req: Request<pb::GetMachineConfigRequest>,
    ) -> Result<Response<pb::GetMachineConfigReply>, Status> {
        let role = role(&req);
        let running = self
            .machine
            .running()
            .ok_or_else(|| Status::not_found("the node has no config"))?;
        let render = |json: &serde_json::Value| {
            let mut doc = json.clone();
            if !role.sees_secrets() {
                crate::redact::redact(&mut doc);
            }
            serde_yaml_ng::to_string(&doc).unwrap_or_default()
        };
        let yaml = if role.sees_secrets() {
            running.yaml.clone()
        } else {
            render(&running.json)
        };
        let staged_yaml = match crate::state::load(&self.machine.paths) {
            Ok(Some(stored)) if stored != running.yaml => {
                match crate::machine::Running::parse(&stored) {
                    Ok(s) if role.sees_secrets() => s.yaml.clone(),
                    Ok(s) => render(&s.json),
                    Err(_) => String::new(),
                }
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::GetMachineConfigReply {
            node: self.node(),
            yaml,
            staged_yaml,
            redacted: !role.sees_secrets(),
        }))
    }

    async fn resource_types(
        &self,
        _req: Request<pb::ResourceTypesRequest>,
    ) -> Result<Response<pb::ResourceTypesReply>, Status> {
        let types = crate::resources::TYPES
            .iter()
            .map(|t| pb::ResourceType {
                name: t.name.to_string(),
                aliases: t.aliases.iter().map(|a| a.to_string()).collect(),
                description: t.description.to_string(),
                sensitive: t.sensitive,
            })
            .collect();
        Ok(Response::new(pb::ResourceTypesReply {
            node: self.node(),
            types,
        }))
    }

    async fn get_resource(
        &self,
        req: Request<pb::GetResourceRequest>,
    ) -> Result<Response<pb::GetResourceReply>, Status> {
        let role = role(&req);
        let r = req.into_inner();
        let kind = self.resource_type(&r.r#type, role)?;
        self.refresh(kind);
        let res = self
            .machine
            .resources
            .get(kind, &r.id)
            .ok_or_else(|| Status::not_found(format!("{kind} {:?} not found", r.id)))?;
        Ok(Response::new(pb::GetResourceReply {
            node: self.node(),
            resource: Some(self.to_pb(&res, role)),
        }))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesReply>, Status> {
        let role = role(&req);
        let kind = self.resource_type(&req.get_ref().r#type, role)?;
        self.refresh(kind);
        let resources = self
            .machine
            .resources
            .list(kind)
            .iter()
            .map(|r| self.to_pb(r, role))
            .collect();
        Ok(Response::new(pb::ListResourcesReply {
            node: self.node(),
            resources,
        }))
    }

    type WatchResourcesStream = Stream_<pb::WatchResourcesReply>;

    async fn watch_resources(
        &self,
        req: Request<pb::WatchResourcesRequest>,
    ) -> Result<Response<Self::WatchResourcesStream>, Status> {
        let role = role(&req);
        let r = req.into_inner();
        let kind = self.resource_type(&r.r#type, role)?;
        self.refresh(kind);
        let (snapshot, mut live) = self.machine.resources.watch(kind);
        let api = Api {
            machine: self.machine.clone(),
        };
        let id = r.id;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let node = api.node();
            let item = |event: pb::WatchEventType, res: Option<pb::Resource>, node: &str| {
                pb::WatchResourcesReply {
                    node: node.to_string(),
                    event: event as i32,
                    resource: res,
                }
            };
            for res in snapshot.iter().filter(|res| id.is_empty() || res.id == id) {
                let msg = item(
                    pb::WatchEventType::Existing,
                    Some(api.to_pb(res, role)),
                    &node,
                );
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            if tx
                .send(Ok(item(pb::WatchEventType::Bookmark, None, &node)))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let event = match live.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::data_loss("watch fell behind; watch again")))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                };
                if event.resource.kind != kind || (!id.is_empty() && event.resource.id != id) {
                    continue;
                }
                let t = match event.change {
                    Change::Created => pb::WatchEventType::Created,
                    Change::Updated => pb::WatchEventType::Updated,
                    Change::Deleted => pb::WatchEventType::Deleted,
                };
                let msg = item(t, Some(api.to_pb(&event.resource, role)), &api.node());
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn service_list(
        &self,
        _req: Request<pb::ServiceListRequest>,
    ) -> Result<Response<pb::ServiceListReply>, Status> {
        let services = self
            .machine
            .supervisor
            .list()
            .into_iter()
            .map(|s| pb::ServiceInfo {
                healthy: s.is_up(),
                id: s.id,
                state: s.state.as_str().to_string(),
                pid: s.pid.map(|p| p as i32).unwrap_or(0),
                restarts: s.restarts,
                message: if s.state == crate::services::State::Running && s.healthy == Some(false) {
                    format!("unhealthy: {}", s.health_message)
                } else {
                    s.message
                },
                depends_on: s.depends_on,
                since: s.since,
            })
            .collect();
        Ok(Response::new(pb::ServiceListReply {
            node: self.node(),
            services,
        }))
    }

    async fn service_start(
        &self,
        req: Request<pb::ServiceActionRequest>,
    ) -> Result<Response<pb::ServiceActionReply>, Status> {
        let id = req.into_inner().id;
        let done = self.machine.supervisor.start(&id);
        service_action_reply(self.node(), id, "start", done)
    }

    async fn service_stop(
        &self,
        req: Request<pb::ServiceActionRequest>,
    ) -> Result<Response<pb::ServiceActionReply>, Status> {
        let id = req.into_inner().id;
        let done = self.machine.supervisor.stop(&id);
        service_action_reply(self.node(), id, "stop", done)
    }

    async fn service_restart(
        &self,
        req: Request<pb::ServiceActionRequest>,
    ) -> Result<Response<pb::ServiceActionReply>, Status> {
        let admin = role(&req) == Role::Admin;
        let id = req.into_inner().id;
        // ros.debug only: machined kills itself so init's restart can be tested (system/debug.rs).
        let cmdline = crate::intake::Cmdline::read();
        if crate::system::debug::self_kill_allowed(&id, self.machine.dev, admin, &cmdline) {
            crate::system::debug::kill_self_after(std::time::Duration::from_millis(500));
            return service_action_reply(
                self.node(),
                id,
                "restart (SIGKILL, ros.debug)",
                Ok::<(), String>(()),
            );
        }
        let done = self.machine.supervisor.restart(&id);
        service_action_reply(self.node(), id, "restart", done)
    }

    type LogsStream = Stream_<pb::LogChunk>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let log = if r.id == "machined" {
            self.machine.log.clone()
        } else {
            self.machine.supervisor.log(&r.id).ok_or_else(|| {
                Status::not_found(format!("id: no service {:?} (try `rosctl services`)", r.id))
            })?
        };
        Ok(Response::new(self.stream_log(log, r.follow, r.tail)))
    }

    type DmesgStream = Stream_<pb::LogChunk>;

    async fn dmesg(
        &self,
        req: Request<pb::DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.stream_log(
            self.machine.system.kernel_log(),
            r.follow,
            r.tail,
        )))
    }

    async fn reboot(
        &self,
        _req: Request<pb::RebootRequest>,
    ) -> Result<Response<pb::PowerReply>, Status> {
        let m = self.machine.clone();
        // Reply first; the node goes down right after.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if let Err(e) = m.reboot().await {
                m.events.publish("power", format!("reboot failed: {e}"));
            }
        });
        Ok(Response::new(pb::PowerReply {
            node: self.node(),
            message: "rebooting".into(),
        }))
    }

    async fn shutdown(
        &self,
        _req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::PowerReply>, Status> {
        let m = self.machine.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if let Err(e) = m.shutdown().await {
                m.events.publish("power", format!("shutdown failed: {e}"));
            }
        });
        Ok(Response::new(pb::PowerReply {
            node: self.node(),
            message: "powering off".into(),
        }))
    }

    async fn reset(
        &self,
        _req: Request<pb::ResetRequest>,
    ) -> Result<Response<pb::PowerReply>, Status> {
        let node = self.node();
        self.machine.reset().await.map_err(Status::internal)?;
        Ok(Response::new(pb::PowerReply {
            node,
            message: "reset: STATE and EPHEMERAL wiped, maintenance mode".into(),
        }))
    }

    async fn hostname(
        &self,
        _req: Request<pb::HostnameRequest>,
    ) -> Result<Response<pb::HostnameReply>, Status> {
        Ok(Response::new(pb::HostnameReply {
            node: self.node(),
            hostname: self.machine.system.hostname(),
        }))
    }

    async fn memory(
        &self,
        _req: Request<pb::MemoryRequest>,
    ) -> Result<Response<pb::MemoryReply>, Status> {
        let mut reply =
            sysinfo::memory(Path::new("/proc")).map_err(|e| io_status("/proc/meminfo", e))?;
        reply.node = self.node();
        Ok(Response::new(reply))
    }

    async fn load_avg(
        &self,
        _req: Request<pb::LoadAvgRequest>,
    ) -> Result<Response<pb::LoadAvgReply>, Status> {
        let mut reply =
            sysinfo::loadavg(Path::new("/proc")).map_err(|e| io_status("/proc/loadavg", e))?;
        reply.node = self.node();
        Ok(Response::new(reply))
    }

    async fn processes(
        &self,
        _req: Request<pb::ProcessesRequest>,
    ) -> Result<Response<pb::ProcessesReply>, Status> {
        let processes =
            sysinfo::processes(Path::new("/proc")).map_err(|e| io_status("/proc", e))?;
        Ok(Response::new(pb::ProcessesReply {
            node: self.node(),
            processes,
        }))
    }

    async fn mounts(
        &self,
        _req: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsReply>, Status> {
        let mounts =
            sysinfo::mounts(Path::new("/proc")).map_err(|e| io_status("/proc/self/mounts", e))?;
        Ok(Response::new(pb::MountsReply {
            node: self.node(),
            mounts,
        }))
    }

    async fn disks(
        &self,
        _req: Request<pb::DisksRequest>,
    ) -> Result<Response<pb::DisksReply>, Status> {
        let disks = sysinfo::disks(Path::new("/sys")).map_err(|e| io_status("/sys/block", e))?;
        Ok(Response::new(pb::DisksReply {
            node: self.node(),
            disks,
        }))
    }

    async fn network_device_stats(
        &self,
        _req: Request<pb::NetworkDeviceStatsRequest>,
    ) -> Result<Response<pb::NetworkDeviceStatsReply>, Status> {
        let devices =
            sysinfo::netdev(Path::new("/proc")).map_err(|e| io_status("/proc/net/dev", e))?;
        Ok(Response::new(pb::NetworkDeviceStatsReply {
            node: self.node(),
            devices,
        }))
    }

    async fn time(
        &self,
        _req: Request<pb::TimeRequest>,
    ) -> Result<Response<pb::TimeReply>, Status> {
        // No status yet (time sync has not run) reads as "not synced, nothing known".
        let status: TimeStatus = self
            .machine
            .resources
            .get("TimeStatus", "node")
            .and_then(|r| serde_json::from_value(r.spec).ok())
            .unwrap_or_default();
        Ok(Response::new(pb::TimeReply {
            node: self.node(),
            // The clock time sync disciplines (the dev system's is simulated).
            local_time: crate::clock::rfc3339_from_nanos(self.machine.system.now_nanos()),
            servers: status.servers,
            synced: status.synced,
            server: status.server.unwrap_or_default(),
            offset: status.offset.unwrap_or_default(),
            last_sync: status.last_sync.unwrap_or_default(),
            error: status.error.unwrap_or_default(),
        }))
    }

    type EventsStream = Stream_<pb::Event>;

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let (recent, mut live) = self.machine.events.subscribe(req.get_ref().tail as usize);
        let machine = self.machine.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let to_pb = |e: crate::events::Event, node: String| pb::Event {
                node,
                id: e.id,
                time: e.time,
                kind: e.kind,
                message: e.message,
            };
            for e in recent {
                if tx.send(Ok(to_pb(e, machine.node_name()))).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(e) => {
                        if tx.send(Ok(to_pb(e, machine.node_name()))).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn bootstrap(
        &self,
        _req: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::BootstrapReply>, Status> {
        let message = crate::cluster::bootstrap(&self.machine).await?;
        Ok(Response::new(pb::BootstrapReply {
            node: self.node(),
            message,
        }))
    }

    async fn kubeconfig(
        &self,
        _req: Request<pb::KubeconfigRequest>,
    ) -> Result<Response<pb::KubeconfigReply>, Status> {
        let kubeconfig = crate::cluster::admin_kubeconfig(&self.machine)?;
        Ok(Response::new(pb::KubeconfigReply {
            node: self.node(),
            kubeconfig,
        }))
    }

    async fn generate_client_configuration(
        &self,
        req: Request<pb::GenerateClientConfigurationRequest>,
    ) -> Result<Response<pb::GenerateClientConfigurationReply>, Status> {
        super::client_config::generate(&self.machine, req.get_ref()).map(Response::new)
    }
}

/// The reply shared by service start/stop/restart: an unknown service is NotFound.
fn service_action_reply<E: std::fmt::Display>(
    node: String,
    id: String,
    verb: &str,
    done: Result<(), E>,
) -> Result<Response<pb::ServiceActionReply>, Status> {
    done.map_err(|e| Status::not_found(e.to_string()))?;
    Ok(Response::new(pb::ServiceActionReply {
        node,
        message: format!("service {id} {verb} requested"),
        id,
    }))
}
