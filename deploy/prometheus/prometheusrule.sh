#!/usr/bin/env bash
# Writes deploy/kubernetes/prometheus-operator/prometheusrule.yaml: the rules of
# deploy/prometheus/alerts.yml wrapped in a PrometheusRule. Run it after changing alerts.yml;
# tests/deploy_manifests.rs fails while the two differ.
set -euo pipefail
cd "$(dirname "$0")/../.."
{
  cat <<'HEADER'
# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/prometheusrule.sh; edit
# alerts.yml and run the script. For the Prometheus Operator (PrometheusRule is its
# CustomResourceDefinition, monitoring.coreos.com/v1). Your Prometheus may select rules by a
# label (e.g. `release: prometheus`): add it.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: tributary
  labels:
    app.kubernetes.io/name: tributary
spec:
HEADER
  sed -n '/^groups:/,$p' deploy/prometheus/alerts.yml | sed 's/^./  &/'
} >deploy/kubernetes/prometheus-operator/prometheusrule.yaml
