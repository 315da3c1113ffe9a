"""Run the pipeline as a service: a Prefect server, the work pool, the deployments and a worker.

``atlas server`` starts ``prefect server start`` on loopback, waits for its
API, creates the process work pool if it is missing, applies ``prefect.yaml``
with ``prefect deploy --all`` and starts a worker, then supervises the
children until Ctrl-C (or SIGTERM from systemd) and stops them in order:
the worker first, so a run in progress can report its end, then the server.

Every child runs in its own process group so a terminal's Ctrl-C reaches
only this supervisor, which decides the order of shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.errors import AtlasError, ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
WORK_POOL = "atlas-process"
PROJECT_DIR_VARIABLE = "ATLAS_PROJECT_DIR"
PREFECT_FILE = "prefect.yaml"

# How long each child may take to stop on its own before it is killed. A worker
# told to stop waits for the flow run it is executing; the server only closes sockets.
WORKER_STOP_SECONDS = 60.0
SERVER_STOP_SECONDS = 20.0


class PrefectServiceError(AtlasError):
    """The Prefect server, ``prefect deploy`` or the worker failed to start, or exited."""


# --------------------------------------------------------------------------- the project checkout


def is_project_dir(path: Path) -> bool:
    """A checkout holds prefect.yaml and the flows the deployments point at."""
    return (path / PREFECT_FILE).is_file() and (path / "flows").is_dir()


def find_project_dir(explicit: str | os.PathLike[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> Path:
    """The checkout to deploy from and run flows in.

    An explicit folder (or ``ATLAS_PROJECT_DIR``) must be a checkout; without
    one, the checkout the ``atlas`` package is imported from (an editable
    install), then the current folder.
    """
    environ = os.environ if environ is None else environ
    named = explicit or environ.get(PROJECT_DIR_VARIABLE) or None
    if named:
        path = Path(named).expanduser().resolve()
        if not is_project_dir(path):
            source = "ATLAS_PROJECT_DIR" if not explicit else "the project folder"
            raise ConfigError(f"{source} {str(path)!r} is not a mecfs-atlas checkout "
                              f"(it needs {PREFECT_FILE} and flows/)")
        return path
    for candidate in (Path(__file__).resolve().parent.parent, Path.cwd().resolve()):
        if is_project_dir(candidate):
            return candidate
    raise ConfigError(f"no mecfs-atlas checkout found: set {PROJECT_DIR_VARIABLE} to the folder "
                      f"holding {PREFECT_FILE}, flows/ and policies/")


def enter_project_directory(directory: str = "") -> dict[str, str]:
    """Prefect pull step: run the flow from the project checkout.

    ``prefect.yaml`` passes ``{{ $ATLAS_PROJECT_DIR }}``, which Prefect turns
    into "" when the worker has no such variable; that falls back to the
    checkout of the installed package instead of the worker's empty scratch
    folder. Returns ``directory`` so Prefect records where the flow runs.
    """
    project = find_project_dir(directory or None)
    os.chdir(project)
    return {"directory": str(project)}


def _declared_deployments(prefect_file: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        document = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{prefect_file}: cannot read it: {error}") from error
    deployments = document.get("deployments") if isinstance(document, dict) else None
    if not isinstance(deployments, list) or not deployments:
        raise ConfigError(f"{prefect_file}: no `deployments` list")
    if not all(isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"] for item in deployments):
        raise ConfigError(f"{prefect_file}: every deployment needs a `name`")
    return deployments


def deployment_names(prefect_file: Path) -> list[str]:
    """The deployment names a prefect.yaml declares; a file without any is a config error."""
    return [item["name"] for item in _declared_deployments(prefect_file)]


def deployment_pools(prefect_file: Path) -> list[str]:
    """The work pools a prefect.yaml's deployments run on, each once; every deployment must name one."""
    pools: list[str] = []
    for item in _declared_deployments(prefect_file):
        pool = (item.get("work_pool") or {}).get("name")
        if not isinstance(pool, str) or not pool:
            raise ConfigError(f"{prefect_file}: deployment {item['name']!r} names no work_pool")
        if pool not in pools:
            pools.append(pool)
    return pools


# --------------------------------------------------------------------------- environment and URLs


def prefect_environment(base: Mapping[str, str], *, api_url: str | None = None,
                        project_dir: Path | None = None) -> dict[str, str]:
    """The children's environment: telemetry off unless asked for, the API URL, the checkout."""
    env = dict(base)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if project_dir is not None:
        env[PROJECT_DIR_VARIABLE] = str(project_dir)
    return env


def ensure_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, before the health check could reach that instead."""
    import socket

    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ConfigError(f"--host {host!r} is not an address this machine can bind: {error}") from error
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(f"{host}:{port} is already in use ({error.strerror}): another Prefect server? "
                              "Stop it or pick another --port") from error


def api_url_for(host: str, port: int) -> str:
    """The URL clients use; a wildcard bind address is reached over loopback."""
    connect = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in connect:
        connect = f"[{connect}]"
    return f"http://{connect}:{port}/api"


def _is_loopback(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def _prefect_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", "--no-prompt", *args]


# --------------------------------------------------------------------------- children


def start_server(host: str, port: int, env: Mapping[str, str]) -> subprocess.Popen:
    """``prefect server start`` in its own process group; its output goes where ours does (journald)."""
    return subprocess.Popen(_prefect_command("server", "start", "--host", host, "--port", str(port)),
                            env=dict(env), stdin=subprocess.DEVNULL, process_group=0)


def wait_until_healthy(api_url: str, process: subprocess.Popen | None = None, *, timeout: float = 120.0,
                       interval: float = 0.25) -> float:
    """Poll ``/health`` until the API answers true; returns the seconds waited.

    Fails at once, with the exit status, if the server process ends first
    (a port already in use, a broken database).
    """
    import httpx

    started = time.monotonic()
    last_error = "no answer yet"
    # A proxy from the environment must not intercept a loopback server.
    with httpx.Client(timeout=5.0, trust_env=not _is_loopback(api_url)) as http:
        while True:
            if process is not None and process.poll() is not None:
                raise PrefectServiceError(f"the Prefect server exited with status {process.returncode} "
                                          f"before its API at {api_url} was ready")
            try:
                response = http.get(f"{api_url}/health")
                if response.status_code == 200 and response.json() is True:
                    return time.monotonic() - started
                last_error = f"HTTP {response.status_code}"
            except (httpx.HTTPError, ValueError) as error:
                last_error = f"{type(error).__name__}: {error}"
            if time.monotonic() - started > timeout:
                raise PrefectServiceError(f"the Prefect API at {api_url} was not healthy after {timeout:.0f} s "
                                          f"({last_error})")
            time.sleep(interval)


def ensure_work_pool(api_url: str, name: str = WORK_POOL, *, concurrency_limit: int | None = 1) -> bool:
    """Create the process work pool unless it exists; True when it was created.

    The limit of 1 queues runs instead of letting two flows fight over the
    DuckDB write lock. An existing pool is left as its operator set it.
    """
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with SyncPrefectClient(api_url) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        pool = WorkPoolCreate(name=name, type=ProcessWorker.type,
                              base_job_template=ProcessWorker.get_default_base_job_template(),
                              concurrency_limit=concurrency_limit,
                              description="mecfs-atlas flows, run as subprocesses of the worker")
        try:
            client.create_work_pool(pool)
        except ObjectAlreadyExists:
            return False
        return True


@dataclass
class DeployResult:
    """What ``prefect deploy --all`` applied, as the server now stores it."""

    deployments: list[dict[str, Any]]
    output: str
    seconds: float


def deploy_all(api_url: str, project_dir: Path, env: Mapping[str, str], *,
               timeout: float = 600.0) -> DeployResult:
    """Apply every deployment in the checkout's prefect.yaml, then check the server has each one.

    ``prefect deploy`` reports a prefect.yaml it cannot validate only as a
    warning (and then fails for want of an entrypoint), so that warning is
    turned into the error, and success is judged by what the server holds.
    """
    prefect_file = project_dir / PREFECT_FILE
    expected = deployment_names(prefect_file)
    for pool in deployment_pools(prefect_file):
        ensure_work_pool(api_url, pool)
    # Prefect fills `{{ $NAME }}` in pull steps from the deploying environment when the variable is
    # set there, and leaves it for the worker otherwise: without it here, the worker's checkout wins.
    deploy_env = prefect_environment(env, api_url=api_url)
    deploy_env.pop(PROJECT_DIR_VARIABLE, None)
    started = time.monotonic()
    try:
        done = subprocess.run(_prefect_command("deploy", "--all", "--prefect-file", str(prefect_file)),
                              cwd=project_dir, env=deploy_env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise PrefectServiceError(f"prefect deploy did not finish in {timeout:.0f} s") from error
    output = (done.stdout or "") + (done.stderr or "")
    if "Skipping deployment configuration" in output:
        raise PrefectServiceError(f"{prefect_file} does not match Prefect's schema:\n{_tail(output)}")
    if done.returncode != 0:
        raise PrefectServiceError(f"prefect deploy failed (exit {done.returncode}):\n{_tail(output)}")
    stored = read_deployments(api_url, expected)
    missing = sorted(set(expected) - {item["name"] for item in stored})
    if missing:
        raise PrefectServiceError(f"prefect deploy did not create {', '.join(missing)}:\n{_tail(output)}")
    return DeployResult(deployments=stored, output=output, seconds=time.monotonic() - started)


def read_deployments(api_url: str, names: Iterable[str]) -> list[dict[str, Any]]:
    """The named deployments as the server stores them (schedules included)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with SyncPrefectClient(api_url) as client:
        found = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(names))))
        flows = {flow.id: flow.name for flow in client.read_flows()}
    rows = []
    for deployment in found:
        schedules = [
            {"cron": getattr(item.schedule, "cron", None), "timezone": getattr(item.schedule, "timezone", None),
             "active": item.active}
            for item in deployment.schedules
        ]
        rows.append({"name": deployment.name, "flow": flows.get(deployment.flow_id, "?"),
                     "entrypoint": deployment.entrypoint, "work_pool": deployment.work_pool_name,
                     "schedules": schedules, "id": str(deployment.id)})
    return sorted(rows, key=lambda row: row["name"])


def start_worker(env: Mapping[str, str], *, pool: str = WORK_POOL, limit: int = 1) -> subprocess.Popen:
    """``prefect worker start`` for the process pool, in its own process group.

    ``--limit 1``: one flow run at a time, as DuckDB allows one writer.
    """
    return subprocess.Popen(
        _prefect_command("worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit),
                         "--install-policy", "never"),
        env=dict(env), stdin=subprocess.DEVNULL, process_group=0)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- stopping


def process_tree(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields after the last ")" are fixed.
        fields = stat.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state != "Z"


def stop_process(process: subprocess.Popen, *, grace: float, hurry: threading.Event | None = None,
                 first_signal: int = signal.SIGINT) -> int:
    """Ask a child's process group to stop, wait up to ``grace``, then kill it and its descendants.

    Descendants that started their own process group (Prefect isolates each
    flow run) are found through /proc before signalling, so none outlive the
    supervisor. ``hurry`` (a second Ctrl-C) cuts the wait short.
    """
    tree = process_tree(process.pid)
    if process.poll() is None:
        _signal_group(process.pid, first_signal)
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                break
            try:
                process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    leftovers = [pid for pid in tree + process_tree(process.pid) if _alive(pid)]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    # SIGKILL is delivered asynchronously: return only once they are gone.
    deadline = time.monotonic() + 5.0
    while any(_alive(pid) for pid in leftovers) and time.monotonic() < deadline:
        time.sleep(0.02)
    return process.returncode


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- the service


@dataclass
class ServiceOptions:
    """What ``atlas server`` was asked for."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    worker: bool = True
    project_dir: Path | None = None
    startup_timeout: float = 120.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


class _Stop(Exception):
    """SIGTERM or SIGINT arrived: leave the supervision loop and stop the children."""


class _StopSignals:
    """SIGINT and SIGTERM: the first ends supervision, any later one asks for an immediate kill."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopping.is_set():
            self.hurry.set()
            return
        self.stopping.set()
        raise _Stop(signal.Signals(signum).name)

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle)
                              for signum in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_service(options: ServiceOptions, console: Any, *, poll_interval: float = 0.5,
                on_ready: Callable[[str], None] | None = None) -> int:
    """Start server, pool, deployments and worker; supervise until a signal; stop them in order.

    Returns 0 after a requested stop. A child that exits on its own, or a
    step that fails, raises ``PrefectServiceError`` after the others are stopped.
    """
    project_dir = find_project_dir(options.project_dir, options.environ)
    ensure_port_free(options.host, options.port)
    api_url = api_url_for(options.host, options.port)
    env = prefect_environment(options.environ, api_url=api_url, project_dir=project_dir)
    children: list[tuple[str, subprocess.Popen, float]] = []
    with _StopSignals() as signals:
        try:
            _start_children(options, api_url, project_dir, env, children, console)
            if on_ready is not None:
                on_ready(api_url)
            while True:
                for name, process, _ in children:
                    if process.poll() is not None:
                        raise PrefectServiceError(f"the {name} exited with status {process.returncode}")
                time.sleep(poll_interval)
        except _Stop as stop:
            order = ", then the ".join(name for name, _, _ in reversed(children)) or "nothing started yet"
            console.print(f"{stop}: stopping the {order} (send it again to kill at once)")
            return 0
        finally:
            signals.stopping.set()  # from here on a signal only hurries the shutdown below
            for name, process, grace in reversed(children):
                code = stop_process(process, grace=grace, hurry=signals.hurry)
                console.print(f"{name} stopped (exit {code})")


def _start_children(options: ServiceOptions, api_url: str, project_dir: Path, env: Mapping[str, str],
                    children: list[tuple[str, subprocess.Popen, float]], console: Any) -> None:
    home = env.get("PREFECT_HOME", "~/.prefect")
    console.print(f"[bold]Prefect server[/] on {options.host}:{options.port} "
                  f"(PREFECT_HOME={home}; its database is prefect.db there)")
    server = start_server(options.host, options.port, env)
    children.append(("Prefect server", server, SERVER_STOP_SECONDS))
    waited = wait_until_healthy(api_url, server, timeout=options.startup_timeout)
    console.print(f"[green]API healthy[/] at {api_url} after {waited:.1f} s")

    pools = deployment_pools(project_dir / PREFECT_FILE)
    for pool in pools:
        created = ensure_work_pool(api_url, pool)
        console.print(f"work pool [bold]{pool}[/] (process) {'created' if created else 'already there'}")

    console.print(f"deploying {project_dir / PREFECT_FILE} ...")
    result = deploy_all(api_url, project_dir, env)
    console.print(_deployments_table(result.deployments, result.seconds))

    for pool in pools:
        if options.worker:
            worker = start_worker(env, pool=pool)
            children.append(("worker" if len(pools) == 1 else f"worker for {pool}", worker, WORKER_STOP_SECONDS))
            console.print(f"worker started for pool [bold]{pool}[/], running flows in {project_dir}")
        else:
            console.print(f"[yellow]no worker[/]: runs wait until one polls the pool "
                          f"(prefect worker start --pool {pool})")
    console.print(f"[bold green]ready[/]: UI and API at {api_url.removesuffix('/api')}  (Ctrl-C stops everything)")


def _deployments_table(deployments: list[dict[str, Any]], seconds: float) -> Any:
    from rich.table import Table

    pools = sorted({row["work_pool"] or "no pool" for row in deployments})
    table = Table(title=f"deployed to {', '.join(pools)} in {seconds:.1f} s")
    for column in ("deployment", "entrypoint", "schedule"):
        table.add_column(column, overflow="fold")
    for row in deployments:
        schedule = ", ".join(f"{s['cron']} {s['timezone']}" + ("" if s["active"] else " (paused)")
                             for s in row["schedules"]) or "on demand"
        table.add_row(f"{row['flow']}/{row['name']}", row["entrypoint"] or "", schedule)
    return table


def deploy_to_configured_server(console: Any, *, project_dir: Path | None = None,
                                wait: float = 60.0) -> DeployResult:
    """``atlas deploy``: apply prefect.yaml to the server PREFECT_API_URL names.

    Waits up to ``wait`` seconds for the API, so it can run right after the
    server unit starts (systemd ExecStartPre of the worker).
    """
    api_url = configured_api_url()
    if not api_url:
        raise ConfigError("PREFECT_API_URL is not set: point it at a running server "
                          "(e.g. http://127.0.0.1:4200/api), or run `atlas server`")
    project = find_project_dir(project_dir)
    wait_until_healthy(api_url, timeout=wait)
    env = prefect_environment(os.environ, api_url=api_url, project_dir=project)
    console.print(f"deploying {project / PREFECT_FILE} to {api_url} ...")
    result = deploy_all(api_url, project, env)
    console.print(_deployments_table(result.deployments, result.seconds))
    return result
