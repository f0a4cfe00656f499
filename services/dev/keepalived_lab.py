"""Real keepalived nodes in network namespaces, for tests and benchmarks.

Each node is a namespace with one interface, `vrrp0`, plugged into a bridge in a
hub namespace: nothing is added to the root namespace, and labs never meet,
since every name carries the creating pid and a random suffix. keepalived runs
inside its node's namespace; the files it shares with the outside (config, log,
notify FIFO) live in the lab's temp dir, so a reader in the root namespace (the
agent, which reaches the gateway on 127.0.0.1) can open the FIFO.

What keepalived 2.2.7 was seen to do here, and what users of the lab rely on:
- It creates `vrrp_notify_fifo` (mode 0600) when missing and unlinks it on a
  graceful stop, stranding a reader on the old inode. A FIFO made beforehand
  (`Node.make_fifo`) is left in place, so a reader keeps it across restarts.
- Its VRRP child opens the FIFO O_RDWR|O_NONBLOCK: keepalived never waits for a
  reader, a reader sees no EOF while keepalived runs, and lines written before
  a reader opened are still delivered to it.
- After SIGKILL the VIP stays on the dead node's interface until keepalived
  starts there again: `holds_vip` is the kernel's view, not a live owner.
- SIGKILL of the parent alone makes the VRRP child stop gracefully (a priority-0
  advert) a moment later, so `Node.kill` signals the whole process group.

If the process holding the lab dies without cleaning up, keepalived gets
SIGTERM from the kernel (tied to the thread that started it, so start nodes
from a thread that lives as long as the lab), and the next lab on the machine
deletes the orphaned namespaces (`remove_stale_labs`; it reads the owner's pid
from the name, so labs must share a pid namespace with the machine's others).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

import psutil

from schemas.ipv4 import parse_ipv4
from services.dev.embedded import exit_with_parent

NAMESPACE_PREFIX = "havip-lab-"
INTERFACE = "vrrp0"
INSTANCE = "VI_1"
_BRIDGE = "br0"
_OWNER = re.compile(rf"^{NAMESPACE_PREFIX}(\d+)-")


def _which(program: str) -> str | None:
    # Both live in /usr/sbin or /sbin, which a non-login PATH may lack.
    return shutil.which(program, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _ip(*args: str) -> str:
    return _run(_which("ip") or "ip", *args)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition") -> float:
    """Poll until `predicate()` holds and return the seconds it took; TimeoutError after `timeout` seconds."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not reached within {timeout:g} s")
        time.sleep(interval)
    return time.monotonic() - start


def _namespace_pids(namespace: str) -> list[int]:
    try:
        return [int(pid) for pid in _ip("netns", "pids", namespace).split()]
    except RuntimeError:
        return []  # the namespace is already gone


def _destroy_namespace(namespace: str) -> None:
    for pid in _namespace_pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # `ip netns del` only drops the name: the namespace, its addresses and any process in it live on.
    wait_until(lambda: not _namespace_pids(namespace), 10.0, what=f"processes in {namespace} gone")
    _ip("netns", "del", namespace)


def _orphaned(name: str) -> bool:
    owner = _OWNER.match(name)
    return owner is not None and not psutil.pid_exists(int(owner.group(1)))


def remove_stale_labs() -> list[str]:
    """Delete the namespaces and temp dirs of labs whose process died before cleaning up (SIGKILL, a CI timeout)."""
    removed = []
    for line in _ip("netns", "list").splitlines():
        name = line.split(" ", 1)[0]
        if _orphaned(name):
            try:
                _destroy_namespace(name)
            except (RuntimeError, TimeoutError):
                continue  # another lab removed it first, or it is stuck: never block a new lab on it
            removed.append(name)
    for directory in Path(tempfile.gettempdir()).glob(f"{NAMESPACE_PREFIX}*"):
        if _orphaned(directory.name):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(str(directory))
    return removed


def namespaces_unavailable_reason() -> str | None:
    """Why network namespaces and raw sockets cannot be used here (no keepalived needed), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, raw sockets)"
    if _which("ip") is None:
        return "`ip` not found (install iproute2)"
    return None


def lab_unavailable_reason() -> str | None:
    """Why a lab cannot run on this machine, or None when it can (for test skips)."""
    if os.geteuid() != 0:
        return "the keepalived lab needs root (network namespaces)"
    for program, package in (("ip", "iproute2"), ("keepalived", "keepalived")):
        if _which(program) is None:
            return f"`{program}` not found (install {package})"
    probe = f"{NAMESPACE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _ip("-n", probe, "link", "add", _BRIDGE, "type", "bridge")
        # Not "a": `ip link add a type ...` reads "a" as the abbreviation of "address".
        _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    except RuntimeError as exc:
        return f"cannot create a bridge and a veth pair: {exc}"
    finally:
        _destroy_namespace(probe)
    return None


@dataclass(frozen=True)
class NodeOptions:
    """What goes into a node's keepalived.conf beyond its addresses and priority."""

    nopreempt: bool = False
    # A command line; keepalived appends: INSTANCE VI_1 <STATE> <priority>. It runs inside the namespace.
    notify: str | None = None
    enable_script_security: bool = False
    extra_global: str = ""  # lines for global_defs
    extra_instance: str = ""  # lines for vrrp_instance VI_1


class Node:
    """One keepalived in its own namespace. Timestamps are wall-clock (`time.time()`), like the agent's reports."""

    def __init__(
        self,
        *,
        name: str,
        namespace: str,
        ip: str,
        priority: int,
        peers: Sequence[str],
        vip: str,
        vrid: int,
        directory: Path,
        options: NodeOptions,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.ip = ip
        self.priority = priority
        self.peers = list(peers)
        self.vip = vip
        self.vrid = vrid
        self.options = options
        self.config_path = directory / f"{name}.conf"
        self.fifo_path = directory / f"{name}.fifo"
        self.log_path = directory / f"{name}.log"
        self._pid_path = directory / f"{name}.pid"
        self._vrrp_pid_path = directory / f"{name}.vrrp.pid"
        self._process: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.killed_at: float | None = None
        self.stopped_at: float | None = None

    def config_text(self) -> str:
        options = self.options
        global_lines = [f"vrrp_notify_fifo {self.fifo_path}", "script_user root"]
        if options.enable_script_security:
            global_lines.append("enable_script_security")
        instance_lines = [
            "state BACKUP",
            f"interface {INTERFACE}",
            f"virtual_router_id {self.vrid}",
            f"priority {self.priority}",
            "advert_int 1",
            f"unicast_src_ip {self.ip}",
            "unicast_peer {",
            *(f"    {peer}" for peer in self.peers),
            "}",
            "virtual_ipaddress {",
            f"    {self.vip}/32 dev {INTERFACE}",
            "}",
        ]
        if options.nopreempt:
            instance_lines.append("nopreempt")
        if options.notify:
            instance_lines.append(f'notify "{options.notify}"')
        global_lines += options.extra_global.splitlines()
        instance_lines += options.extra_instance.splitlines()
        return "".join(
            [
                "global_defs {\n",
                *(f"    {line}\n" for line in global_lines),
                "}\n",
                f"vrrp_instance {INSTANCE} {{\n",
                *(f"    {line}\n" for line in instance_lines),
                "}\n",
            ]
        )

    def write_config(self, options: NodeOptions | None = None) -> Path:
        if options is not None:
            self.options = options
        self.config_path.write_text(self.config_text())
        return self.config_path

    def make_fifo(self) -> Path:
        """Create the notify FIFO, so that keepalived keeps it across restarts instead of unlinking its own."""
        if not self.fifo_path.exists():
            os.mkfifo(self.fifo_path, 0o600)
        return self.fifo_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, options: NodeOptions | None = None, timeout: float = 10.0) -> Node:
        if self.running:
            raise RuntimeError(f"{self.name}: keepalived already runs")
        self.write_config(options)
        for pid_file in (self._pid_path, self._vrrp_pid_path):
            # keepalived refuses to start while a pid file names a live process; a recycled pid could.
            pid_file.unlink(missing_ok=True)
        keepalived = _which("keepalived") or "keepalived"
        argv = [_which("ip") or "ip", "netns", "exec", self.namespace, keepalived, "--dont-fork", "--vrrp"]
        argv += ["--log-console", "--log-detail", "--no-syslog", "-f", str(self.config_path)]
        argv += ["-p", str(self._pid_path), "-r", str(self._vrrp_pid_path)]
        with open(self.log_path, "ab") as log:
            log.write(f"--- lab: start at {time.time():.3f}\n".encode())
            log.flush()
            self.started_at = time.time()
            self._process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # keepalived stops (and drops the VIP) if we die; its own group lets `kill` reach both processes.
                preexec_fn=exit_with_parent,
                start_new_session=True,
            )
        # The VRRP child writes its pid file once it runs: the point from which adverts can flow.
        wait_until(lambda: self._vrrp_pid_path.exists() or not self.running, timeout, what=f"{self.name} started")
        if not self.running:
            raise RuntimeError(f"{self.name}: keepalived exited at start:\n{self.tail()}")
        return self

    def kill(self) -> None:
        """SIGKILL parent and VRRP child at once: no priority-0 advert, peers learn only from missing adverts."""
        if self._process is None:
            return
        if self.running:
            self.killed_at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._wait_gone()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: keepalived sends a priority-0 advert, drops the VIP and writes STOP to the FIFO."""
        if self._process is None or not self.running:
            return
        self.stopped_at = time.time()
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._wait_gone()

    def _wait_gone(self) -> None:
        # The VRRP child is not ours to wait for; it is gone once nothing lives in the namespace.
        wait_until(lambda: not _namespace_pids(self.namespace), 10.0, what=f"{self.name} keepalived gone")

    def holds_vip(self) -> bool:
        """The ground truth: the VIP is on one of this node's interfaces (even if keepalived there was killed):
        `vrrp0`, or with `use_vmac` the macvlan keepalived makes on it (vrrp.VRID)."""
        links = json.loads(_ip("-n", self.namespace, "-j", "-4", "addr", "show") or "[]")
        return any(address.get("local") == self.vip for link in links for address in link.get("addr_info", []))

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class KeepalivedLab:
    """N keepalived nodes sharing one VRRP instance over unicast; everything is removed on exit."""

    def __init__(
        self,
        nodes: int = 2,
        priorities: Sequence[int] | None = None,
        vip: str | None = None,
        workdir: Path | None = None,
        options: NodeOptions | None = None,
        extra_config: Sequence[str] | None = None,
    ) -> None:
        if not 1 <= nodes <= 50:
            raise ValueError("a lab has 1 to 50 nodes")
        self.priorities = list(priorities) if priorities is not None else [100 - 10 * i for i in range(nodes)]
        self.extra_config = list(extra_config) if extra_config is not None else [""] * nodes
        if len(self.priorities) != nodes or len(self.extra_config) != nodes:
            raise ValueError("one priority and one extra config per node")
        token = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.prefix = f"{NAMESPACE_PREFIX}{token}"
        # Link-local and random per lab: several labs may run side by side, each in its own namespaces.
        self.subnet = f"169.254.{secrets.randbelow(254) + 1}"
        self.vip = str(parse_ipv4(vip)) if vip is not None else f"{self.subnet}.100"
        self.vrid = secrets.randbelow(255) + 1
        self.options = options or NodeOptions()
        self._node_count = nodes
        self._workdir = workdir
        self.directory: Path | None = None
        self.nodes: list[Node] = []
        # Nodes plugged in beside the VRRP instance's own (an intruder): on the bridge, not peers.
        self.strangers: list[Node] = []
        self.ports: dict[str, str] = {}  # node name -> its port (the veth's end on the bridge, in `hub`)
        self._namespaces: list[str] = []
        self.partitioned = False

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def create(self) -> KeepalivedLab:
        remove_stale_labs()
        # For a lab held outside a with-block, or by a fixture that is never resumed after a Ctrl-C.
        atexit.register(self.close)
        try:
            self.directory = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir=self._workdir))
            if " " in str(self.directory):
                raise ValueError(f"keepalived.conf cannot name a path with spaces: {self.directory}")
            self._add_namespace(self.hub)
            _ip("-n", self.hub, "link", "add", _BRIDGE, "type", "bridge")
            _ip("-n", self.hub, "link", "set", _BRIDGE, "up")
            addresses = [f"{self.subnet}.{index + 1}" for index in range(self._node_count)]
            for index, address in enumerate(addresses):
                node = Node(
                    name=f"n{index + 1}",
                    namespace=f"{self.prefix}-n{index + 1}",
                    ip=address,
                    priority=self.priorities[index],
                    peers=[peer for peer in addresses if peer != address],
                    vip=self.vip,
                    vrid=self.vrid,
                    directory=self.directory,
                    options=_with_extra(self.options, self.extra_config[index]),
                )
                self._plug(node, port=f"p{index + 1}")
                self.nodes.append(node)
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)

    def add_stranger(self, priority: int, peers: Sequence[str] = ()) -> Node:
        """One more keepalived on the bridge with the same VRID and VIP, that the nodes do not name as a peer.

        Its unicast adverts go to `peers` (default: an address nobody holds, so the lab's nodes
        never hear it, though its adverts are on the wire: a static neighbour entry spares them the
        ARP that nobody would answer), and it announces the VIP once it makes itself MASTER.
        """
        index = len(self.nodes) + len(self.strangers) + 1
        address = f"{self.subnet}.{index}"
        nobody = f"{self.subnet}.250"
        node = Node(
            name=f"n{index}",
            namespace=f"{self.prefix}-n{index}",
            ip=address,
            priority=priority,
            peers=list(peers) or [nobody],
            vip=self.vip,
            vrid=self.vrid,
            directory=self.directory or Path(tempfile.gettempdir()),
            options=self.options,
        )
        self._plug(node, port=f"p{index}")
        self.strangers.append(node)
        if not peers:
            _ip("-n", node.namespace, "neigh", "replace", nobody, "lladdr", "02:00:00:00:00:fa", "dev", INTERFACE)
        return node

    def mac_of(self, node: Node) -> str:
        """The MAC address of the node's interface (what the inventory would say of its port)."""
        (link,) = json.loads(_ip("-n", node.namespace, "-j", "link", "show", "dev", INTERFACE))
        return str(link["address"])

    def _plug(self, node: Node, port: str) -> None:
        self.ports[node.name] = port
        self._add_namespace(node.namespace)
        _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", INTERFACE, "netns", node.namespace)
        _ip("-n", self.hub, "link", "set", port, "master", _BRIDGE, "up")
        _ip("-n", node.namespace, "link", "set", "lo", "up")
        _ip("-n", node.namespace, "addr", "add", f"{node.ip}/24", "dev", INTERFACE)
        _ip("-n", node.namespace, "link", "set", INTERFACE, "up")
        # Strict reverse-path filtering, harmless while routes are true, is what makes `partition` drop adverts.
        rp_filter = "/proc/sys/net/ipv4/conf/{}/rp_filter"
        script = f"echo 1 > {rp_filter.format('all')} && echo 1 > {rp_filter.format(INTERFACE)}"
        _ip("netns", "exec", node.namespace, "sh", "-c", script)

    def close(self) -> None:
        """Kill every keepalived, delete every namespace and the temp dir; safe to call twice."""
        atexit.unregister(self.close)
        problems = []
        for node in [*self.nodes, *self.strangers]:
            try:
                node.kill()
            except Exception as exc:  # keep going: the namespaces below must go in any case
                problems.append(f"{node.name}: {exc}")
        for namespace in reversed(self._namespaces):
            try:
                _destroy_namespace(namespace)
            except Exception as exc:
                problems.append(f"{namespace}: {exc}")
        self._namespaces.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        if problems:
            raise RuntimeError("keepalived lab cleanup incomplete: " + "; ".join(problems))

    def __enter__(self) -> KeepalivedLab:
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def start_all(self) -> None:
        for node in self.nodes:
            node.start()

    def vip_holders(self) -> list[str]:
        return [node.name for node in self.nodes if node.holds_vip()]

    def wait_for_holders(self, names: Sequence[str], timeout: float = 15.0) -> float:
        """Wait until exactly these nodes hold the VIP; the seconds it took. TimeoutError says what each node did."""
        try:
            expected = set(names)
            return wait_until(lambda: set(self.vip_holders()) == expected, timeout, what=f"VIP held by {names}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; holders now {self.vip_holders()}\n{self.describe()}") from None

    def describe(self) -> str:
        return "\n".join(
            f"--- {node.name} ({node.namespace}, priority {node.priority}, running={node.running}):\n{node.tail()}"
            for node in [*self.nodes, *self.strangers]
        )

    def partition(self) -> None:
        """Every node stops hearing every other while all stay up: a split brain, both MASTER, both hold the VIP.

        Seen with keepalived 2.2.7: a blackhole route to the peer alone does not stop the adverts, they still
        leave through the interface. With strict rp_filter, though, the receiver drops every packet whose source
        routes back into a blackhole, before keepalived's raw socket sees it. Each node's neighbour entries for
        its peers are pinned meanwhile: ARP between them fails too, and once an entry expired a node would stop
        putting its unicast adverts on the wire at all, where a real split brain (a link lost between the
        nodes, not between a node and its host) goes on sending them.
        """
        macs = {node.ip: self.mac_of(node) for node in self.nodes}
        for node in self.nodes:
            for peer in node.peers:
                if peer in macs:
                    _ip(
                        "-n",
                        node.namespace,
                        "neigh",
                        "replace",
                        peer,
                        "lladdr",
                        macs[peer],
                        "nud",
                        "permanent",
                        "dev",
                        INTERFACE,
                    )
                _ip("-n", node.namespace, "route", "replace", "blackhole", f"{peer}/32")
        self.partitioned = True

    def heal(self) -> None:
        if not self.partitioned:
            return
        for node in self.nodes:
            for peer in node.peers:
                _ip("-n", node.namespace, "route", "del", "blackhole", f"{peer}/32")
                with contextlib.suppress(RuntimeError):  # a peer that is no node of the lab had no entry
                    _ip("-n", node.namespace, "neigh", "del", peer, "dev", INTERFACE)
        self.partitioned = False


def _with_extra(options: NodeOptions, extra_instance: str) -> NodeOptions:
    joined = "\n".join(part for part in (options.extra_instance, extra_instance) if part)
    return replace(options, extra_instance=joined)
