//! Test images and a real registry for tests: small OCI images made here from Debian's
//! busybox-static (a gzip tar layer, a config and a manifest, optionally under an index),
//! pushed with oci-client to Debian's `docker-registry` listening on 127.0.0.1:<free port>
//! (plain HTTP), started with its own config and storage and killed by PID on drop.
//!
//! Needs the Debian packages docker-registry and busybox-static.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const BUSYBOX: &str = "/bin/busybox";

pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A `docker-registry` process on 127.0.0.1; killed on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`: the registry part of image references.
    pub host: String,
    /// Username and password the registry demands (htpasswd), if any.
    pub credentials: Option<(String, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_inner(None)
    }

    /// A registry that demands HTTP basic authentication as `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(credentials: Option<(String, String)>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "these tests need {REGISTRY_BIN} (Debian package docker-registry)"
        );
        let dir = tempfile::Builder::new()
            .prefix("registry")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &credentials {
            let hash = bcrypt::hash(password, 4).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let r = Registry {
            child,
            dir,
            host,
            credentials,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while r.get("/v2/").is_none() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up on {}: {}",
                r.host,
                r.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The status line of a plain GET, when the registry answers.
    fn get(&self, path: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(&self.host).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines().next().map(String::from)
    }

    /// `127.0.0.1:<port>/<repository>:<tag>`.
    pub fn image(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.host)
    }

    /// Builds `image` and pushes it as `<repository>:<tag>`; returns the full reference.
    pub fn push(&self, image: &TestImage) -> String {
        let name = self.image(&image.repository, &image.tag);
        let built = image.build();
        let reference: Reference = name.parse().unwrap();
        // reqwest (under oci-client) takes the process-wide rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let auth = match &self.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        rt.block_on(async {
            let client = Client::new(ClientConfig {
                protocol: ClientProtocol::Http,
                ..Default::default()
            });
            client
                .auth(&reference, &auth, RegistryOperation::Push)
                .await
                .unwrap();
            client
                .push_blob(&reference, built.layer.clone(), &built.layer_digest)
                .await
                .unwrap();
            let manifests: &[&Manifest] = if image.index {
                &[&built.amd64, &built.arm64]
            } else {
                &[&built.amd64]
            };
            for m in manifests {
                client
                    .push_blob(&reference, m.config.clone(), &m.config_digest)
                    .await
                    .unwrap();
                let target = if image.index {
                    reference.clone_with_digest(m.manifest_digest.clone())
                } else {
                    reference.clone()
                };
                client
                    .push_manifest_raw(&target, m.manifest.clone(), MANIFEST_TYPE.parse().unwrap())
                    .await
                    .unwrap();
            }
            if image.index {
                client
                    .push_manifest_raw(&reference, built.index.clone(), INDEX_TYPE.parse().unwrap())
                    .await
                    .unwrap();
            }
        });
        name
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What goes into a test image: busybox with every applet in /bin, an entrypoint/cmd, env,
/// and extra files.
#[derive(Clone)]
pub struct TestImage {
    pub repository: String,
    pub tag: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// (path inside the image, contents, mode)
    pub files: Vec<(String, String, u32)>,
    /// Push an image index over a linux/arm64 and a linux/amd64 manifest.
    pub index: bool,
}

impl TestImage {
    pub fn new(repository: &str, tag: &str) -> TestImage {
        TestImage {
            repository: repository.to_string(),
            tag: tag.to_string(),
            cmd: vec!["/bin/sh".into()],
            env: vec!["PATH=/bin".into()],
            files: Vec::new(),
            index: false,
        }
    }

    /// The image as the registry holds it. Each config has `ARCH=<architecture>` in its env,
    /// so a container shows which platform's manifest was pulled.
    pub fn build(&self) -> Built {
        let layer = gzip(&layer_tar(&self.files));
        let diff_id = sha256(&gunzip(&layer));
        let layer_digest = sha256(&layer);
        let for_arch = |arch: &str| {
            let mut env = self.env.clone();
            env.push(format!("ARCH={arch}"));
            let config = serde_json::to_vec(&serde_json::json!({
                "architecture": arch, "os": "linux",
                "config": {"Env": env, "Cmd": self.cmd, "WorkingDir": "/"},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }))
            .unwrap();
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": sha256(&config), "size": config.len()},
                "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": layer.len()}],
            }))
            .unwrap();
            Manifest {
                config_digest: sha256(&config),
                config,
                manifest_digest: sha256(&manifest),
                manifest,
            }
        };
        let amd64 = for_arch("amd64");
        let arm64 = for_arch("arm64");
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [
                {"mediaType": MANIFEST_TYPE, "digest": arm64.manifest_digest, "size": arm64.manifest.len(),
                 "platform": {"os": "linux", "architecture": "arm64"}},
                {"mediaType": MANIFEST_TYPE, "digest": amd64.manifest_digest, "size": amd64.manifest.len(),
                 "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }))
        .unwrap();
        Built {
            layer,
            layer_digest,
            diff_id,
            index_digest: sha256(&index),
            index,
            amd64,
            arm64,
        }
    }
}

pub struct Manifest {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

pub struct Built {
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub diff_id: String,
    pub amd64: Manifest,
    /// Only referenced from the index.
    pub arm64: Manifest,
    pub index: Vec<u8>,
    pub index_digest: String,
}

pub fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The root filesystem: /bin/busybox with a symlink per applet, /tmp, /etc, /www and `files`.
fn layer_tar(files: &[(String, String, u32)]) -> Vec<u8> {
    assert!(
        Path::new(BUSYBOX).exists(),
        "the test images need {BUSYBOX} (Debian package busybox-static)"
    );
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    for dir in ["bin", "tmp", "etc", "www", "proc", "sys", "dev"] {
        let mut h = header(
            tar::EntryType::Directory,
            if dir == "tmp" { 0o1777 } else { 0o755 },
            0,
        );
        b.append_data(&mut h, dir, std::io::empty()).unwrap();
    }
    let busybox = std::fs::read(BUSYBOX).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", busybox.as_slice())
        .unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    for (path, text, mode) in files {
        let mut h = header(tar::EntryType::Regular, *mode, text.len() as u64);
        b.append_data(&mut h, path.trim_start_matches('/'), text.as_bytes())
            .unwrap();
    }
    b.into_inner().unwrap()
}
