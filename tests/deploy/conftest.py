"""Shared loaders for the deployment checks (run by scripts/check-deploy.sh)."""

import functools
import os
import pathlib
import subprocess

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions

REPO = pathlib.Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MODULE = INFRA / "modules" / "ssm-resync"
FORWARDER = INFRA / "modules" / "ssm-resync-forwarder"
EXAMPLES = INFRA / "examples"
K8S = REPO / "k8s"
CHART = REPO / "charts" / "ssm-resync"

# Plain values: no comment or block markers, strings without their HCL quotes
# (expressions stay "${...}").
_HCL = SerializationOptions(
    with_comments=False,
    explicit_blocks=False,
    strip_string_quotes=True,
    preserve_heredocs=False,
)


@functools.lru_cache(maxsize=None)
def parse_tf(path: pathlib.Path) -> dict:
    with path.open() as f:
        return hcl2.load(f, serialization_options=_HCL)


def tf_files() -> list[pathlib.Path]:
    return sorted(INFRA.rglob("*.tf"))


class Module:
    """The blocks of one Terraform directory, by kind."""

    def __init__(self, directory: pathlib.Path):
        self.docs = {p.name: parse_tf(p) for p in sorted(directory.glob("*.tf"))}

    def _typed(self, kind: str) -> dict[tuple[str, str], dict]:
        out = {}
        for doc in self.docs.values():
            for entry in doc.get(kind, []):
                for typ, named in entry.items():
                    for name, body in named.items():
                        assert (typ, name) not in out, f"duplicate {kind} {typ}.{name}"
                        out[(typ, name)] = body
        return out

    def resources(self) -> dict[tuple[str, str], dict]:
        return self._typed("resource")

    def resource(self, typ: str, name: str) -> dict:
        return self.resources()[(typ, name)]

    def data(self, typ: str, name: str) -> dict:
        return self._typed("data")[(typ, name)]

    def policy_documents(self) -> dict[str, dict]:
        return {name: body for (typ, name), body in self._typed("data").items() if typ == "aws_iam_policy_document"}

    def locals(self) -> dict:
        out = {}
        for doc in self.docs.values():
            for entry in doc.get("locals", []):
                out.update(entry)
        return out

    def variables(self) -> dict[str, dict]:
        out = {}
        for doc in self.docs.values():
            for entry in doc.get("variable", []):
                out.update(entry)
        return out

    def outputs(self) -> dict[str, dict]:
        out = {}
        for doc in self.docs.values():
            for entry in doc.get("output", []):
                out.update(entry)
        return out

    def modules(self) -> dict[str, dict]:
        """module blocks by name."""
        out = {}
        for doc in self.docs.values():
            for entry in doc.get("module", []):
                for name, body in entry.items():
                    assert name not in out, f"duplicate module {name}"
                    out[name] = body
        return out

    def providers(self) -> dict[str, dict]:
        """provider blocks by alias ("" for the default one), for the aws provider."""
        out = {}
        for doc in self.docs.values():
            for entry in doc.get("provider", []):
                for typ, body in entry.items():
                    assert typ == "aws", typ
                    alias = body.get("alias", "")
                    assert alias not in out, f"duplicate provider aws.{alias}"
                    out[alias] = body
        return out


@functools.lru_cache(maxsize=None)
def load_module(directory: pathlib.Path) -> Module:
    """A Terraform directory by path (a module or an example), parsed once."""
    return Module(directory)


@pytest.fixture(scope="session")
def module() -> Module:
    return load_module(MODULE)


@pytest.fixture(scope="session")
def forwarder() -> Module:
    return load_module(FORWARDER)


@pytest.fixture(scope="session")
def multi_example() -> Module:
    return load_module(EXAMPLES / "multi-region-multi-account")


@functools.lru_cache(maxsize=None)
def render(overlay: str) -> tuple:
    """`kubectl kustomize k8s/<overlay>` as a tuple of objects."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def objects(overlay: str, kind: str) -> list[dict]:
    return [o for o in render(overlay) if o["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict:
    found = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


@functools.lru_cache(maxsize=None)
def helm_bin() -> str:
    """helm: $SSM_RESYNC_HELM (scripts/check-deploy.sh passes the one it used), else the one
    `scripts/build-go-tool.sh helm` prints (cached after its first build). No helm fails the
    tests that need it; they never skip."""
    if os.environ.get("SSM_RESYNC_HELM"):
        return os.environ["SSM_RESYNC_HELM"]
    out = subprocess.run(
        [str(REPO / "scripts" / "build-go-tool.sh"), "helm"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1]


@functools.lru_cache(maxsize=None)
def helm_render(values_file: str = "", *sets: str) -> tuple:
    """`helm template ssm-resync charts/ssm-resync -n ssm-resync [--values charts/ssm-resync/<values_file>] [--set ...]`
    as a tuple of objects."""
    args = [helm_bin(), "template", "ssm-resync", str(CHART), "--namespace", "ssm-resync"]
    if values_file:
        args += ["--values", str(CHART / values_file)]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)
