"""Build the container image offline and run containers the way ``deploy/base`` runs pods.

No image registry is reachable here, so the Dockerfile's ``PYTHON_IMAGE`` is a Debian
bookworm root filesystem made with ``debootstrap`` (python3, python3-venv, ca-certificates)
and imported as a local image: a stand-in for ``python:3.11-slim-bookworm``. Packages in
the build come from a wheelhouse the host makes from ``constraints.txt``, mounted for the
build only (``--no-index --find-links``); nothing of the host ends up in the image. The
root filesystem and the wheelhouse are cached, so a second build takes seconds.

podman 4.3 on these machines needs ``--runtime runc`` with ``--cgroup-manager=cgroupfs``
(crun refuses the hybrid cgroup layout) and limits no higher than the process has (it
lacks CAP_SYS_RESOURCE), for build and run alike.

``python -m tests.image.podman`` (``make image``) builds ``localhost/turnscale:dev``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
IMAGE: Final = "localhost/turnscale:dev"
BASE_IMAGE: Final = "localhost/turnscale-base:bookworm"
CACHE: Final = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "turnscale-image"
DEBIAN_PACKAGES: Final = ("python3", "python3-venv", "ca-certificates")
MIRROR: Final = "http://deb.debian.org/debian"
# Limits the build and the containers run with (see the module docstring).
ULIMITS: Final = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
BUILD_TIMEOUT: Final = 900.0


def podman(*args: str) -> list[str]:
    return ["podman", "--cgroup-manager=cgroupfs", "--runtime", "runc", *args]


def _run(command: Sequence[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


def base_image() -> str:
    """The Debian-built stand-in for the default base, imported once and cached."""
    if subprocess.run(podman("image", "exists", BASE_IMAGE), check=False).returncode == 0:
        return BASE_IMAGE
    tarball = CACHE / f"bookworm-{'-'.join(DEBIAN_PACKAGES)}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as work:
            rootfs = Path(work) / "rootfs"
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(DEBIAN_PACKAGES)}",
                    "bookworm",
                    str(rootfs),
                    MIRROR,
                ],
                BUILD_TIMEOUT,
            )
            partial = tarball.with_suffix(".partial")
            _run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], BUILD_TIMEOUT)
            partial.rename(tarball)
    _run(podman("import", str(tarball), BASE_IMAGE), BUILD_TIMEOUT)
    return BASE_IMAGE


def wheelhouse() -> Path:
    """Wheels of the pinned dependency set, turnscale's build backend included."""
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "-c",
            str(ROOT / "constraints.txt"),
            "--wheel-dir",
            str(wheels),
            "setuptools>=77",
            str(ROOT),
        ],
        BUILD_TIMEOUT,
    )
    return wheels


def build(tag: str = IMAGE) -> float:
    """Build the image from the Dockerfile as it is; the seconds it took."""
    started = time.monotonic()
    base = base_image()
    wheels = wheelhouse()
    _run(
        podman(
            "build",
            # No cached intermediate images: everything the build leaves has a name.
            "--layers=false",
            *ULIMITS,
            "--network",
            "host",
            "--volume",
            f"{wheels}:/wheels:ro",
            "--build-arg",
            f"PYTHON_IMAGE={base}",
            "--build-arg",
            "PIP_INSTALL_OPTIONS=--no-index --find-links /wheels",
            "--tag",
            tag,
            str(ROOT),
        ),
        BUILD_TIMEOUT,
    )
    return time.monotonic() - started


def image_size(tag: str = IMAGE) -> int:
    """Bytes, as podman counts them."""
    result = _run(podman("image", "inspect", "--format", "{{.Size}}", tag), 60)
    return int(result.stdout.strip())


# ---- containers as the manifests run pods ---------------------------------------------


@dataclass
class PodShape:
    """What a Deployment's pod template says about running its one container."""

    args: list[str]
    env: dict[str, str]
    user: str
    read_only: bool
    tmpfs: list[str]
    cap_drop: list[str]
    no_new_privileges: bool
    # mountPath -> {file name: Secret key}
    secret_mounts: dict[str, dict[str, str]] = field(default_factory=dict)


def pod_shape(workload: Mapping[str, Any], field_values: Mapping[str, str]) -> PodShape:
    """Read a Deployment; downward-API values come from ``field_values`` (by fieldPath)."""
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    security = container.get("securityContext", {})
    pod_security = spec.get("securityContext", {})
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            env[item["name"]] = field_values[item["valueFrom"]["fieldRef"]["fieldPath"]]
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    tmpfs: list[str] = []
    secrets: dict[str, dict[str, str]] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            tmpfs.append(mount["mountPath"])
        elif "secret" in volume:
            items = volume["secret"]["items"]
            secrets[mount["mountPath"]] = {item["path"]: item["key"] for item in items}
        else:
            raise ValueError(f"volume {mount['name']}: only emptyDir and secret are run here")
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    return PodShape(
        args=list(container.get("args", [])),
        env=env,
        user=f"{user}:{group}",
        read_only=bool(security.get("readOnlyRootFilesystem")),
        tmpfs=tmpfs,
        cap_drop=list(security.get("capabilities", {}).get("drop", [])),
        no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        secret_mounts=secrets,
    )


def run_args(
    shape: PodShape,
    name: str,
    *,
    secrets: Mapping[str, str],
    directory: Path,
    env: Mapping[str, str] | None = None,
    mounts: Mapping[str, Path] | None = None,
    tag: str = IMAGE,
) -> list[str]:
    """``podman run`` for ``shape``: Secret keys from ``secrets`` written as files under
    ``directory`` and mounted read-only where the pod mounts them; ``env`` overrides."""
    flags = ["run", "--detach", "--name", name, *ULIMITS, "--network", "host"]
    flags += ["--user", shape.user]
    if shape.read_only:
        flags.append("--read-only")
    for path in shape.tmpfs:
        flags += ["--tmpfs", path]
    for capability in shape.cap_drop:
        flags += ["--cap-drop", capability]
    if shape.no_new_privileges:
        flags += ["--security-opt", "no-new-privileges"]
    for index, (mount_path, files) in enumerate(shape.secret_mounts.items()):
        source = directory / f"{name}-secret-{index}"
        source.mkdir(parents=True, exist_ok=True)
        source.chmod(0o755)
        for file_name, key in files.items():
            target = source / file_name
            target.write_text(secrets[key])
            target.chmod(0o644)
        flags += ["--volume", f"{source}:{mount_path}:ro"]
    for mount_path, source in (mounts or {}).items():
        flags += ["--volume", f"{source}:{mount_path}:ro"]
    for key, value in {**shape.env, **(env or {})}.items():
        flags += ["--env", f"{key}={value}"]
    return podman(*flags, tag, *shape.args)


def remove(*names: str) -> None:
    """Remove these containers (by name, never any other), running or not."""
    for name in names:
        subprocess.run(
            podman("rm", "--force", "--time", "5", name), capture_output=True, check=False
        )


def remove_images(*tags: str) -> None:
    """Remove these images (by name, never any other); the root filesystem stays cached."""
    subprocess.run(podman("rmi", "--force", *tags), capture_output=True, check=False)


def main() -> None:
    took = build()
    print(f"built {IMAGE} in {took:.1f} s, {image_size() / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
