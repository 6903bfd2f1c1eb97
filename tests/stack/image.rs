//! The container image `make image` builds (scripts/image.sh, an OCI layout in target/image/),
//! run for real: unpacked by umoci into an OCI runtime bundle, started under runc (Debian's)
//! as the image says (its user, entrypoint, cmd and env), with a read-only root filesystem and
//! the host's network, against the local stack; a signed Parameter Store Change posted to it
//! ends at the Secret ESO writes. Also: the image's config matches the Dockerfile's, its root
//! filesystem holds no shell, and its tags are the names the manifests use.
//!
//! Needs `make image` first (scripts/test.sh runs it). A missing image, umoci or runtime fails
//! these tests; they never skip.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

const LAYOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/image/oci");
/// What k8s/overlays/local names (`make image` builds it).
const LOCAL_REF: &str = "ssm-resync:dev";
/// The image's user: distroless's nonroot, k8s/base's runAsUser.
const UID: u32 = 65532;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a tool the image tests need; a missing one fails with how to get it.
fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}. The image tests need Debian's umoci and runc \
                 (scripts/image.sh, run by `make image`, installs them)"
            )
        })
}

/// The OCI runtime: runc unless SSM_RESYNC_OCI_RUNTIME names another (Debian's crun 1.8
/// refuses this machine kind's hybrid cgroup hierarchy).
fn runtime() -> String {
    let rt = std::env::var("SSM_RESYNC_OCI_RUNTIME").unwrap_or_else(|_| "runc".to_owned());
    let out = tool(&rt, &["--version"]);
    assert!(
        out.status.success(),
        "{rt} --version failed: {}",
        text(&out.stderr)
    );
    rt
}

fn layout() -> &'static Path {
    let p = Path::new(LAYOUT);
    assert!(
        p.join("index.json").is_file(),
        "no image at {LAYOUT}: run `make image` first (scripts/test.sh does)"
    );
    p
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn blob(digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    layout().join("blobs/sha256").join(hex)
}

/// The layout's tags: ref name -> manifest digest.
fn tags() -> BTreeMap<String, String> {
    let index = read_json(&layout().join("index.json"));
    index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .filter_map(|m| {
            Some((
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()?
                    .to_owned(),
                m["digest"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The manifest and the image config of `LOCAL_REF`.
fn manifest_and_config() -> (Value, Value) {
    let tags = tags();
    let digest = tags
        .get(LOCAL_REF)
        .unwrap_or_else(|| panic!("{LAYOUT} has no tag {LOCAL_REF}: {tags:?}"));
    let manifest = read_json(&blob(digest));
    let config = read_json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    (manifest, config)
}

/// `umoci unpack`: the image as an OCI runtime bundle (rootfs/ and a config.json made from the
/// image config) under `dir/bundle`.
fn unpack(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    let image = format!("{}:{LOCAL_REF}", layout().display());
    let out = tool(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "umoci unpack --image {image} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    bundle
}

/// Every path under `root`, relative, with its metadata (symlinks not followed).
fn walk(root: &Path) -> Vec<(String, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            out.push((rel, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The Dockerfile's final stage: instruction -> arguments, continuation lines joined, comments
/// dropped (LABEL may repeat: its arguments are concatenated).
fn dockerfile_final_stage() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("{REPO}/Dockerfile")).unwrap();
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                logical.push(std::mem::take(&mut cur));
            }
        }
    }
    let last_from = logical
        .iter()
        .rposition(|l| l.to_uppercase().starts_with("FROM "))
        .expect("a FROM in the Dockerfile");
    let mut stage = BTreeMap::<String, String>::new();
    for l in &logical[last_from + 1..] {
        let (instr, args) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let slot = stage.entry(instr.to_uppercase()).or_default();
        if !slot.is_empty() {
            slot.push(' ');
        }
        slot.push_str(args.trim());
    }
    stage
}

/// The config `make image` built says what the Dockerfile says: user, working directory,
/// exposed ports, entrypoint, cmd and labels (the Dockerfile's runtime stage is distroless
/// `nonroot`, whose user the Dockerfile repeats).
#[test]
fn image_config_matches_the_dockerfile() {
    let stage = dockerfile_final_stage();
    let (manifest, config) = manifest_and_config();
    let c = &config["config"];
    let field = |k: &str| -> &str {
        stage
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in the Dockerfile's final stage: {stage:?}"))
    };

    assert_eq!(c["User"], json!(field("USER")), "USER");
    assert_eq!(c["User"], json!(format!("{UID}:{UID}")), "the nonroot user");
    assert_eq!(c["WorkingDir"], json!(field("WORKDIR")), "WORKDIR");
    let entrypoint: Value =
        serde_json::from_str(field("ENTRYPOINT")).expect("exec-form ENTRYPOINT");
    assert_eq!(c["Entrypoint"], entrypoint, "ENTRYPOINT");
    assert_eq!(c["Entrypoint"], json!(["/ssm-resync"]));
    let cmd: Value = serde_json::from_str(field("CMD")).expect("exec-form CMD");
    assert_eq!(c["Cmd"], cmd, "CMD");
    assert_eq!(c["Cmd"], json!(["serve"]));

    let docker_ports: Vec<String> = field("EXPOSE")
        .split_whitespace()
        .map(|p| {
            if p.contains('/') {
                p.to_owned()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    let mut image_ports: Vec<String> = c["ExposedPorts"]
        .as_object()
        .expect("ExposedPorts")
        .keys()
        .cloned()
        .collect();
    image_ports.sort();
    assert_eq!(image_ports, docker_ports, "EXPOSE");
    assert_eq!(image_ports, ["8080/tcp", "9090/tcp"]);

    let label = regex::Regex::new(r#"([A-Za-z0-9._-]+)="([^"]*)""#).unwrap();
    let docker_labels: BTreeMap<&str, &str> = label
        .captures_iter(field("LABEL"))
        .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
        .collect();
    assert!(docker_labels.len() >= 3, "{docker_labels:?}");
    for (k, v) in &docker_labels {
        assert_eq!(c["Labels"][k], json!(v), "LABEL {k}");
    }

    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1, "one layer");
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .contains(&json!("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")),
        "{c}"
    );
}

/// The layout and the archives carry the names the manifests use: ssm-resync:dev
/// (k8s/overlays/local) and ghcr.io/example/ssm-resync:<version> (k8s/overlays/eks, the
/// chart's default repository and appVersion), one manifest behind them all.
#[test]
fn image_is_tagged_with_the_names_the_manifests_use() {
    let tags = tags();
    let value_of = |file: &str, key: &str| -> String {
        let text = std::fs::read_to_string(format!("{REPO}/{file}")).unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in {file}"))
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    let local = format!(
        "{}:{}",
        value_of("k8s/overlays/local/kustomization.yaml", "newName"),
        value_of("k8s/overlays/local/kustomization.yaml", "newTag")
    );
    assert_eq!(local, LOCAL_REF);
    let eks = format!(
        "{}:{}",
        value_of("k8s/overlays/eks/kustomization.yaml", "newName"),
        value_of("k8s/overlays/eks/kustomization.yaml", "newTag")
    );
    let chart = format!(
        "{}:{}",
        value_of("charts/ssm-resync/values.yaml", "repository"),
        value_of("charts/ssm-resync/Chart.yaml", "appVersion")
    );
    assert_eq!(eks, chart, "the eks overlay and the chart name one image");
    let digest = &tags[LOCAL_REF];
    assert_eq!(
        tags.get(&eks),
        Some(digest),
        "{LAYOUT} should tag {eks} as {LOCAL_REF}: {tags:?}"
    );

    // The OCI archive holds the same manifest, byte for byte, under the local name.
    let archive = format!("{REPO}/target/image/ssm-resync-oci.tar");
    let out = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{archive}:{LOCAL_REF}"),
        ],
    );
    assert!(
        out.status.success(),
        "skopeo inspect {archive}: {}",
        text(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        std::fs::read(blob(digest)).unwrap(),
        "{archive} holds another manifest than {LAYOUT}"
    );
    let docker = PathBuf::from(format!("{REPO}/target/image/ssm-resync-docker.tar"));
    assert!(
        docker
            .metadata()
            .map(|m| m.len() > 1_000_000)
            .unwrap_or(false),
        "{} missing or empty",
        docker.display()
    );
}

/// The root filesystem is the binary, what it loads, the CA bundle and the user database:
/// no shell, no package manager, no other program.
#[test]
fn image_rootfs_has_no_shell_and_nothing_but_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = unpack(tmp.path()).join("rootfs");
    let entries = walk(&rootfs);
    let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();

    let top: Vec<&str> = names.iter().copied().filter(|p| !p.contains('/')).collect();
    assert_eq!(
        top,
        ["etc", "home", "lib", "lib64", "ssm-resync", "tmp", "usr"],
        "{names:#?}"
    );
    for shell in ["sh", "bash", "dash", "ash", "busybox", "toybox"] {
        assert!(
            !names
                .iter()
                .any(|p| Path::new(p).file_name().unwrap() == shell),
            "{shell} in the image: {names:#?}"
        );
    }
    for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "usr/local", "var"] {
        assert!(!rootfs.join(dir).exists(), "/{dir} in the image");
    }
    // Executables: the service and the dynamic loader / libc (which are executable files).
    let executables: Vec<&str> = entries
        .iter()
        .filter(|(_, m)| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .map(|(p, _)| p.as_str())
        .collect();
    for e in &executables {
        assert!(
            *e == "ssm-resync" || e.starts_with("lib/x86_64-linux-gnu/"),
            "unexpected executable /{e} in the image: {executables:?}"
        );
    }
    assert!(executables.contains(&"ssm-resync"));

    // The loader the binary names, the CA bundle rustls-native-certs reads, the user.
    assert!(
        rootfs.join("lib64/ld-linux-x86-64.so.2").exists(),
        "the binary's ELF interpreter"
    );
    let bundle = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("Debian's CA bundle at /etc/ssl/certs/ca-certificates.crt");
    let certs = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certs > 100, "only {certs} CA certificates");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("nonroot:x:{UID}:{UID}:"))),
        "{passwd}"
    );
    for pkg in ["libc6", "libgcc-s1", "ca-certificates"] {
        assert!(
            rootfs
                .join(format!("usr/share/doc/{pkg}/copyright"))
                .is_file(),
            "{pkg}'s licence"
        );
    }
}

/// A container of the image under an OCI runtime, killed and deleted on drop.
struct Container {
    runtime: String,
    id: String,
    child: Child,
    url: String,
    admin: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Container {
    /// Unpacks the image, keeps the process the image config makes (user, entrypoint + cmd,
    /// env) and adds: flags after the cmd, the stack's environment, the kubeconfig and the
    /// signing certificate mounted read-only, a read-only root filesystem, the host's network
    /// (the service listens on loopback, where the stack is).
    fn start(stack: &Stack, topic: &str) -> Container {
        let runtime = runtime();
        let dir = tempfile::Builder::new()
            .prefix("ssm-resync-image-")
            .tempdir()
            .unwrap();
        let bundle = unpack(dir.path());
        let config_path = bundle.join("config.json");
        let mut config = read_json(&config_path);

        let process = &mut config["process"];
        assert_eq!(
            process["user"],
            json!({"uid": UID, "gid": UID}),
            "the image's user, as umoci made the runtime config from it"
        );
        assert_eq!(
            process["args"],
            json!(["/ssm-resync", "serve"]),
            "entrypoint + cmd"
        );

        // Files the container reads, owned by its user, read-only (as a Secret volume).
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        let kubeconfig = files.join("kubeconfig");
        std::fs::copy(stack.get("KUBECONFIG"), &kubeconfig).unwrap();
        let cert_url = stack.cert_url().to_owned();
        let cert_src = stack
            .get("SSM_RESYNC_SNS_SIGNING_CERT")
            .strip_prefix(&format!("{cert_url}="))
            .expect("SSM_RESYNC_SNS_SIGNING_CERT is <url>=<file>")
            .to_owned();
        let cert = files.join("sns-cert.pem");
        std::fs::copy(&cert_src, &cert).unwrap();
        for f in [&kubeconfig, &cert] {
            std::os::unix::fs::chown(f, Some(UID), Some(UID)).unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o400)).unwrap();
        }

        let (port, admin) = (free_port(), free_port());
        let args = process["args"].as_array_mut().unwrap();
        args.extend(
            [
                format!("--listen=127.0.0.1:{port}"),
                format!("--admin-listen=127.0.0.1:{admin}"),
                format!("--topic-arn={topic}"),
                "--sweep-interval=0s".to_owned(),
            ]
            .map(Value::from),
        );
        let env = process["env"].as_array_mut().unwrap();
        env.push(json!("KUBECONFIG=/etc/ssm-resync/kubeconfig"));
        env.push(json!(format!(
            "SSM_RESYNC_SNS_SIGNING_CERT={cert_url}=/etc/ssm-resync/sns-cert.pem"
        )));
        env.push(json!("RUST_LOG=info,ssm_resync=debug"));
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            env.push(json!(format!("{k}={}", stack.get(k))));
        }
        process["terminal"] = json!(false);
        // As k8s/base runs it: capabilities drop ALL, no privilege escalation.
        process["capabilities"] = json!({
            "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
        });
        process["noNewPrivileges"] = json!(true);
        config["root"]["readonly"] = json!(true);
        let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "network");
        let mounts = config["mounts"].as_array_mut().unwrap();
        for (f, dest) in [(&kubeconfig, "kubeconfig"), (&cert, "sns-cert.pem")] {
            mounts.push(json!({
                "destination": format!("/etc/ssm-resync/{dest}"),
                "type": "bind",
                "source": f,
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
            }));
        }
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        let id = format!(
            "ssm-resync-image-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let log = dir.path().join("container.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&runtime)
            .args(["run", "--bundle", bundle.to_str().unwrap(), &id])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {runtime} run: {e}"));
        Container {
            runtime,
            id,
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
            _dir: dir,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/readyz`; fails at once with the log if the runtime or the service exited.
    async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.admin)).await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} run {} exited ({status}) before the service was ready; log:\n{}",
                    self.runtime,
                    self.id,
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the container's service not ready within {within:?}; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The container's first process, as the host sees it (`<runtime> state`).
    fn pid(&self) -> u32 {
        let out = tool(&self.runtime, &["state", &self.id]);
        assert!(
            out.status.success(),
            "{} state: {}",
            self.runtime,
            text(&out.stderr)
        );
        let state: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(state["status"], "running", "{state}");
        state["pid"].as_u64().unwrap() as u32
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = tool(&self.runtime, &["kill", &self.id, "KILL"]);
        let _ = self.child.wait();
        let _ = tool(&self.runtime, &["delete", "--force", &self.id]);
        if std::thread::panicking() {
            eprintln!("--- container log ---\n{}", self.logs());
        }
    }
}

/// The image as a container: it serves `/healthz` and `/readyz` as the image's user with a
/// read-only root and no capabilities, and a signed Parameter Store Change POSTed to it makes ESO write the new
/// value into the Secret (the ExternalSecret's refreshInterval is an hour: nothing else would).
#[tokio::test]
async fn container_from_the_image_force_syncs_a_secret() {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::new("image").await;
    let parameter = param("/image/db/password");
    synced_reader(&stack, &kube, &ns, "db", &[&parameter]).await;

    let mut container = Container::start(&stack, &topic);
    container.wait_ready(Duration::from_secs(30)).await;

    let health = reqwest::get(format!("{}/healthz", container.admin))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap().trim(), "ok");

    // Seen from the host: the image's user, a read-only root.
    let pid = container.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(uids, vec![UID.to_string().as_str(); 4], "{status}");
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:"));
    assert_eq!(
        cap_eff.map(str::trim),
        Some("0000000000000000"),
        "no capabilities"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in the container's mountinfo:\n{mountinfo}"));
    let options = root.split(' ').nth(5).unwrap();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "root not read-only: {root}"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline.split(|b| *b == 0).take(2).map(text).collect();
    assert_eq!(
        argv,
        ["/ssm-resync", "serve"],
        "the image's entrypoint and cmd"
    );

    stack.put_parameter(&parameter, "rotated-in-image").await;
    let (code, body) = post_sns(&container.url, &signed_change(&stack, &topic, &parameter)).await;
    assert_eq!(
        (code, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert_eq!(body["patched"], json!([format!("ExternalSecret {ns}/db")]));
    let took = wait_secret(
        &kube,
        &ns,
        "db",
        "k0",
        "rotated-in-image",
        Duration::from_secs(20),
    )
    .await;
    eprintln!("container: POST /sns -> Secret updated in {took:?}");
    assert_eq!(
        scrape(
            &container.admin,
            r#"ssm_resync_patches_total{result="applied"}"#
        )
        .await,
        1.0
    );
    assert!(
        container.logs().contains("spec.data[0].remoteRef.key"),
        "the container's log names the matching reference:\n{}",
        container.logs()
    );
}
