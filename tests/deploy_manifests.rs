//! The deployment files agree with each other and with the binary: the PrometheusRule carries
//! exactly the rules of `deploy/prometheus/alerts.yml`, the ConfigMap's config passes
//! `tributary check` and names the ports the Deployment exposes, and
//! `kubectl apply -f deploy/kubernetes/` creates no Secret. (CI validates the manifests against
//! the Kubernetes schemas with `kubernetes-validate`, and the rules with `promtool`.)

mod common;

use std::{path::Path, process::Command};

use common::process::binary;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The text of `path` from its first line that starts with `start`.
fn from_line<'a>(text: &'a str, start: &str) -> &'a str {
    let at = text
        .match_indices(start)
        .find(|(i, _)| *i == 0 || text.as_bytes()[i - 1] == b'\n')
        .unwrap_or_else(|| panic!("no line starts with `{start}`"))
        .0;
    &text[at..]
}

#[test]
fn the_prometheus_rule_wraps_exactly_the_alert_rules() {
    let rules = read("deploy/prometheus/alerts.yml");
    let wrapped = read("deploy/kubernetes/prometheus-operator/prometheusrule.yaml");
    assert!(wrapped.contains("\nkind: PrometheusRule\n"));
    let spec = from_line(&wrapped, "spec:\n")
        .strip_prefix("spec:\n")
        .unwrap();
    let unwrapped: String = spec
        .lines()
        .map(|line| line.strip_prefix("  ").unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        unwrapped == from_line(&rules, "groups:"),
        "deploy/kubernetes/prometheus-operator/prometheusrule.yaml differs from \
         deploy/prometheus/alerts.yml: run deploy/prometheus/prometheusrule.sh"
    );
}

/// The `tributary.toml` of the ConfigMap at `path`.
fn configmap_config_at(path: &str) -> String {
    let configmap = read(path);
    let block = from_line(&configmap, "  tributary.toml: |\n");
    block
        .lines()
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect()
}

/// The `tributary.toml` of the single-replica ConfigMap.
fn configmap_config() -> String {
    configmap_config_at("deploy/kubernetes/configmap.yaml")
}

#[test]
fn the_configmaps_config_passes_check() {
    for path in [
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/cluster/configmap.yaml",
    ] {
        check_passes(path, &configmap_config_at(path));
    }
}

fn check_passes(path: &str, config: &str) {
    assert!(config.contains("[sources."), "{config}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tributary.toml"), config).unwrap();
    let mut command = Command::new(binary());
    command
        .args(["check", "--config"])
        .arg(dir.path().join("tributary.toml"));
    for reference in config.split("${env:").skip(1) {
        command.env(reference.split('}').next().unwrap(), "placeholder");
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{path}: the ConfigMap's config is invalid:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_deployment_exposes_the_configured_listeners() {
    let config = configmap_config();
    let deployment = read("deploy/kubernetes/deployment.yaml");
    for key in ["listen", "webhook_listen"] {
        let line = config
            .lines()
            .find(|line| line.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("the ConfigMap sets no `server.{key}`"));
        let port = line.trim_end_matches('"').rsplit(':').next().unwrap();
        assert!(
            deployment.contains(&format!("containerPort: {port}\n")),
            "deployment.yaml does not expose `{key}`'s port {port}"
        );
    }
    for probe in ["startupProbe:", "livenessProbe:", "readinessProbe:"] {
        assert!(deployment.contains(probe), "deployment.yaml lacks {probe}");
    }
}

#[test]
fn applying_the_folder_creates_no_secret() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut manifests = 0;
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml" && e != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.lines().any(|line| line.trim() == "kind: Secret"),
            "{} holds a Secret: `kubectl apply -f deploy/kubernetes/` would overwrite the user's",
            path.display()
        );
        manifests += 1;
    }
    assert!(manifests >= 4, "deploy/kubernetes holds the manifests");
}
