#!/usr/bin/env python3
"""Writes k8s/monitoring/prometheusrule.yaml from k8s/monitoring/rules.yaml.

rules.yaml (plain Prometheus rule groups) is the source: promtool checks and unit-tests it.
The PrometheusRule is the same groups wrapped for the Prometheus Operator.
tests/deploy/test_manifests.py fails when the two differ; rerun this script after editing
rules.yaml:  python3 tests/deploy/gen_prometheusrule.py   (needs PyYAML)
"""

import pathlib
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = REPO / "k8s" / "monitoring" / "rules.yaml"
OUT = REPO / "k8s" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from rules.yaml by tests/deploy/gen_prometheusrule.py: edit rules.yaml, rerun it.
# Add the label your Prometheus selects rules by (e.g. release: kube-prometheus-stack) in an
# overlay if it filters.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    groups = yaml.safe_load(RULES.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "ssm-resync",
            "labels": {"app.kubernetes.io/name": "ssm-resync"},
        },
        "spec": groups,
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
