"""The Dockerfile, checked without a Docker engine (none runs where the tests do): it is
parsed into instructions and checked against the repository, pyproject.toml,
.dockerignore and the manifests that run the image."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaler.cli import COMMANDS
from tests.deploy.kustomize import Obj, build
from tests.deploy.manifests import ROOT, container_ports, containers, of_kind, pod_spec

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    arguments: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and directives dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, arguments = joined.partition(" ")
        out.append(Instruction(start, keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return out


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions per stage (global ARGs before the first FROM are stage 0's)."""
    out: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM" or not out:
            out.append([])
        out[-1].append(instruction)
    return out


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    args = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables[m.group(1)], text)


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        candidates = [body, body.removeprefix("**/")]
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for p in [*prefixes, parts[-1]] for c in candidates):
            result = not negate
    return result


def manifest_workloads() -> list[Obj]:
    return of_kind(build(ROOT / "deploy" / "base"), "Deployment")


def test_only_known_instructions(instructions: list[Instruction]) -> None:
    assert instructions
    for instruction in instructions:
        assert instruction.keyword in INSTRUCTIONS, instruction


def test_a_slim_python_base_as_new_as_the_package_needs(
    instructions: list[Instruction], stages: list[list[Instruction]]
) -> None:
    args = global_args(instructions)
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 2  # build, then a runtime stage without the build's leftovers
    assert froms[0].arguments.endswith(" AS build")
    for instruction in froms:
        image = substitute(instruction.arguments.split()[0], args)
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", image)
        assert match, image
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        minimum = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
        assert minimum is not None
        assert (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2]))


def test_the_build_installs_the_package_from_the_context_pinned(
    stages: list[list[Instruction]],
) -> None:
    build_stage = stages[1] if stages[0][0].keyword == "ARG" else stages[0]
    copies = [shlex.split(i.arguments) for i in build_stage if i.keyword == "COPY"]
    assert copies == [[".", "."]]  # the context, as .dockerignore filters it
    patterns = dockerignore()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = ["pyproject.toml", "constraints.txt", pyproject["project"]["readme"]]
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        needed += [p.name for p in ROOT.glob(pattern) if (p / "__init__.py").is_file()]
    assert {"relay", "scaler"} <= set(needed)
    for path in needed:
        assert not ignored(path, patterns), f"{path} is excluded by .dockerignore"
        assert not ignored(f"{path}/__init__.py", patterns) or not (ROOT / path).is_dir()
    runs = " ".join(i.arguments for i in build_stage if i.keyword == "RUN")
    assert re.search(r"pip install .*-c constraints\.txt \.", runs)


def test_the_runtime_stage_runs_the_console_script_as_the_manifests_user(
    stages: list[list[Instruction]],
) -> None:
    runtime = stages[-1]
    keywords = [i.keyword for i in runtime]
    copies = [i for i in runtime if i.keyword == "COPY"]
    assert copies and all(i.arguments.startswith("--from=build ") for i in copies)
    (user,) = [i.arguments for i in runtime if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000  # numeric: runAsNonRoot can verify it
    created = " ".join(i.arguments for i in runtime if i.keyword == "RUN")
    assert f"--uid {uid}" in created and f"--gid {gid}" in created
    assert keywords.index("USER") > max(k for k, w in enumerate(keywords) if w == "RUN")
    (entrypoint,) = [exec_form(i.arguments) for i in runtime if i.keyword == "ENTRYPOINT"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert entrypoint == list(pyproject["project"]["scripts"])
    env = " ".join(i.arguments for i in runtime if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # read-only root filesystem
    for workload in manifest_workloads():
        context = pod_spec(workload)["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
        for container in containers(workload):
            # The command contract (README, "Command line"): `turnscale relay`, `turnscale scaler`.
            command = container["args"][0]
            assert command in ("relay", "scaler")
            assert command in COMMANDS or importlib.util.find_spec("relay.cli") is None


def test_exposed_ports_cover_the_container_ports(stages: list[list[Instruction]]) -> None:
    exposed = set()
    for instruction in stages[-1]:
        if instruction.keyword == "EXPOSE":
            for item in instruction.arguments.split():
                number, _, protocol = item.partition("/")
                exposed.add((int(number), (protocol or "tcp").upper()))
    used = {
        (number, protocol)
        for workload in manifest_workloads()
        for _, number, protocol in container_ports(workload)
    }
    assert used == exposed


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = dockerignore()
    for path in (".git", ".venv", "tests/scaler", "deploy/base", "relay/__pycache__/x.pyc"):
        assert ignored(path, patterns), path
    for path in ("relay/config.py", "scaler/kube/watch.py", "pyproject.toml", "README.md"):
        assert not ignored(path, patterns), path


def test_the_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile("# syntax=docker/dockerfile:1\nFROM x\nRUN a \\\n  # note\n  b\n")
    assert parsed == [Instruction(2, "FROM", "x"), Instruction(3, "RUN", "a b")]
