"""`havip bench observe`: one observer, many HAVIPs advertising once a second on its host.

The issue's target: one `havip observe`, 1,000 HAVIPs advertising once a second on its host,
uses at most 10% of a core and drops nothing, the packets generated in network namespaces.

What runs (root; no PostgreSQL, only the observer and an embedded broker):

- the inventory (a vSwitch, `havips / per_instance` instances on host `bench-observe-host`, the
  instance k on port `b<k+1>`) and one HaVipMappingChanged per HAVIP, attached to its instance,
  produced straight to `ens.inventory` and `havip.mappings` under a prefix of this run's own;
- a "host" namespace holding the host ends b1..bN of N veth pairs, whose other ends g1..gN all
  sit in ONE "guests" namespace (made with `ip -batch`: hundreds of veths in a second or two);
- `havip observe` (at log level INFO) watching b1..bN in the host namespace;
- a generator (`python -m services.dev.bench_observe --generate`, its own process in the guests
  namespace, so its CPU is not the observer's): one AF_PACKET socket per guest end, and each
  HAVIP's VRRPv2 advert (priority 100, interval 1 s, unicast to a peer, TTL 255) once a
  second, the N adverts spread evenly over the second as N independent keepalived timers would
  be. It prints what it sent as JSON lines, ten a second.

Before the first advert the observer idles for a few seconds with every port watched (its
broker feed and timers alone). After a warm-up (every HAVIP's first claim is published then)
the window is measured: the observer's CPU (user + system, as % of one core) and RSS from
psutil, adverts the generator sent against adverts the observer counted as a claimant's
(`havip_observe_frames_total`), the packet sockets' kernel drops (`ss -0 -m`), state changes
published (none may happen in steady state: no lapse, no new claim) and claims renewed (about
havips x seconds / renew interval). Once the generator stops, the whole run's totals must
match exactly: that, and no kernel drop, is "nothing dropped".

The kernel's side of delivering a frame (veth, the socket filter, the copy to the socket's
queue) runs in the sender's context here, so it is the generator's system time, not the
observer's: what is measured is the observer reading and judging the frames.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import math
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import psutil

from schemas import topics
from schemas.messages import (
    HaVipMappingChanged,
    HaVipStatus,
    InstanceChanged,
    InstanceStatus,
    MappedAttachment,
    Message,
    Route,
    VSwitchChanged,
)
from services.dev.bench_harness import bench_workdir
from services.dev.benchkit import Progress, format_table, metric_sum, plot_rates, spread, write_json
from services.dev.embedded import EmbeddedBroker, exit_with_parent
from services.dev.keepalived_lab import (
    NAMESPACE_PREFIX,
    _destroy_namespace,
    _ip,
    _which,
    namespaces_unavailable_reason,
    remove_stale_labs,
)
from services.dev.observe_lab import ObserverProcess
from services.observe.frames import internet_checksum
from services.runtime.kafka import ensure_topics, new_producer, topic_name, wait_for_broker
from services.runtime.settings import Settings

HOST_ID = "bench-observe-host"
TENANT = "tenant-bench-observe"
VPC = "vpc-bench-observe"
VSWITCH = "vsw-bench-observe"
CIDR = "10.0.0.0/8"
_FIRST_INSTANCE_IP = IPv4Address("10.0.1.0")
_FIRST_HAVIP_IP = IPv4Address("10.128.0.1")

PRIORITY = 100
INTERVAL_SECONDS = 1
TTL = 255
_IPPROTO_VRRP = 112
_FRAME_MINIMUM = 60  # Ethernet's minimum without the FCS: shorter frames are padded, as a NIC would

CPU_TARGET_PERCENT = 10.0
PORTS_WATCHED_TIMEOUT = 60.0
DRAIN_SECONDS = 0.5  # after the generator stops: the last adverts reach the observer's counter
PROGRESS_LINES_PER_SECOND = 10
IDLE_SECONDS = 5.0  # the observer's CPU with every port watched, before the first advert


# --- the plan: who is who, and the frames (pure) -----------------------------------------------


@dataclass(frozen=True)
class Plan:
    """HAVIP j is held by instance j // per_instance, whose port on the host is b<k+1>."""

    havips: int
    per_instance: int

    def __post_init__(self) -> None:
        if self.havips < 1:
            raise ValueError("--havips must be at least 1")
        if not 1 <= self.per_instance <= 255:
            raise ValueError("--per-instance must be 1 to 255 (each HAVIP of an instance needs a VRID of its own)")

    @property
    def instances(self) -> int:
        return math.ceil(self.havips / self.per_instance)

    def instance_of(self, j: int) -> int:
        return j // self.per_instance

    @staticmethod
    def havip_id(j: int) -> str:
        return f"havip-bobs-{j}"

    @staticmethod
    def instance_id(k: int) -> str:
        return f"i-bobs-{k}"

    @staticmethod
    def port(k: int) -> str:
        """The instance's port: the veth's end in the host namespace."""
        return f"b{k + 1}"

    @staticmethod
    def guest_port(k: int) -> str:
        """The instance's own end of its veth, in the guests namespace."""
        return f"g{k + 1}"

    @staticmethod
    def mac(k: int) -> str:
        return ":".join(f"{byte:02x}" for byte in (0x02, 0xB0, *k.to_bytes(4, "big")))

    @staticmethod
    def instance_ip(k: int) -> IPv4Address:
        return _FIRST_INSTANCE_IP + k

    @staticmethod
    def havip_ip(j: int) -> IPv4Address:
        return _FIRST_HAVIP_IP + j

    @staticmethod
    def vrid(j: int) -> int:
        """1..255, from the HAVIP's index: an instance's HAVIPs (at most 255) have VRIDs of their own."""
        return j % 255 + 1

    def peer(self, k: int) -> int:
        """Where instance k sends its unicast adverts: the next instance, as a backup would be."""
        return (k + 1) % self.instances

    def advert(self, j: int) -> bytes:
        """The frame keepalived on HAVIP j's instance sends while MASTER: a VRRPv2 advert to its peer."""
        k = self.instance_of(j)
        peer = self.peer(k)
        return vrrp_advert(
            vrid=self.vrid(j),
            priority=PRIORITY,
            address=self.havip_ip(j),
            interval=INTERVAL_SECONDS,
            src_mac=self.mac(k),
            dst_mac=self.mac(peer),
            src_ip=self.instance_ip(k),
            dst_ip=self.instance_ip(peer),
        )

    def inventory(self, revision: int) -> list[tuple[str, Message]]:
        """(key, record) for `ens.inventory`: the vSwitch and every instance, all on HOST_ID."""
        records: list[tuple[str, Message]] = [
            (
                VSWITCH,
                VSwitchChanged(
                    vswitch_id=VSWITCH,
                    tenant_id=TENANT,
                    vpc_id=VPC,
                    zone_id="edge-zone-bench",
                    cidr=CIDR,
                    revision=revision,
                ),
            )
        ]
        for k in range(self.instances):
            records.append(
                (
                    self.instance_id(k),
                    InstanceChanged(
                        instance_id=self.instance_id(k),
                        tenant_id=TENANT,
                        vpc_id=VPC,
                        vswitch_id=VSWITCH,
                        private_ip=str(self.instance_ip(k)),
                        status=InstanceStatus.RUNNING,
                        host_id=HOST_ID,
                        revision=revision,
                        port_name=self.port(k),
                        mac=self.mac(k),
                    ),
                )
            )
        return records

    def mapping(self, j: int, version: int) -> HaVipMappingChanged:
        k = self.instance_of(j)
        instance = self.instance_id(k)
        return HaVipMappingChanged(
            havip_id=self.havip_id(j),
            tenant_id=TENANT,
            vpc_id=VPC,
            vswitch_id=VSWITCH,
            ip_address=str(self.havip_ip(j)),
            status=HaVipStatus.IN_USE,
            owner=Route(instance_id=instance, private_ip=str(self.instance_ip(k)), host_id=HOST_ID),
            attachments=[MappedAttachment(target_id=instance, instance_id=instance)],
            version=version,
        )

    def batch_lines(self, guests: str) -> tuple[list[str], list[str]]:
        """`ip -batch` lines for the host namespace (the veths, the guest ends moved out at once) and the guests'."""
        host = [
            f"link add {self.port(k)} type veth peer name {self.guest_port(k)} address {self.mac(k)} netns {guests}"
            for k in range(self.instances)
        ]
        host += [f"link set {self.port(k)} up" for k in range(self.instances)]
        guest = ["link set lo up"] + [f"link set {self.guest_port(k)} up" for k in range(self.instances)]
        return host, guest


def vrrp_advert(
    *,
    vrid: int,
    priority: int,
    address: IPv4Address,
    interval: int,
    src_mac: str,
    dst_mac: str,
    src_ip: IPv4Address,
    dst_ip: IPv4Address,
) -> bytes:
    """An Ethernet frame with a VRRPv2 advert (RFC 3768 §5) for one address, checksums valid, padded to 60 bytes."""
    # Version 2, type 1 (advertisement); VRID; priority; one address; auth type 0; Adver Int; checksum.
    message = struct.pack("!BBBBBBH", 2 << 4 | 1, vrid, priority, 1, 0, interval, 0) + address.packed + bytes(8)
    message = message[:6] + struct.pack("!H", internet_checksum(message)) + message[8:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # IPv4, a 20-byte header
        0xC0,  # DSCP CS6 (network control), as keepalived sends
        20 + len(message),
        0,
        0,  # no fragmentation
        TTL,  # RFC 3768 §5.2.3: 255, else receivers discard it
        _IPPROTO_VRRP,
        0,
        src_ip.packed,
        dst_ip.packed,
    )
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    frame = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    frame += header + message
    return frame + bytes(max(0, _FRAME_MINIMUM - len(frame)))


def schedule(count: int, period: float = 1.0) -> list[float]:
    """When, within each period, each of `count` adverts is sent: evenly spread, the first at 0."""
    return [i * period / count for i in range(count)]


# --- reading what was measured (pure) ---------------------------------------------------------


def sent_by(progress: Sequence[tuple[float, int]], when: float) -> float:
    """Adverts the generator had sent at monotonic `when`, interpolated between its (at, sent) lines."""
    if not progress:
        return 0.0
    if when <= progress[0][0]:
        return float(progress[0][1])
    for (t0, n0), (t1, n1) in zip(progress, progress[1:], strict=False):
        if t0 <= when <= t1:
            return n0 + (n1 - n0) * ((when - t0) / (t1 - t0) if t1 > t0 else 1.0)
    return float(progress[-1][1])


_SKMEM_DROPS = re.compile(r"skmem:\(.*?\bd(\d+)\)")


def packet_socket_drops(ss_output: str) -> tuple[int, int]:
    """(sockets, drops summed) from `ss -0 -m` (each socket's skmem ends with d<drops>)."""
    drops = [int(m.group(1)) for m in _SKMEM_DROPS.finditer(ss_output)]
    return len(drops), sum(drops)


def cpu_percent(cpu_seconds: float, wall_seconds: float) -> float:
    return 100.0 * cpu_seconds / wall_seconds if wall_seconds > 0 else 0.0


# --- the network ------------------------------------------------------------------------------


class Network:
    """The host and guests namespaces and their veths; everything is removed by `close`, also at exit."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        prefix = f"{NAMESPACE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"  # remove_stale_labs finds orphans
        self.host = f"{prefix}-host"
        self.guests = f"{prefix}-guests"
        self._namespaces: list[str] = []

    def create(self) -> Network:
        atexit.register(self.close)
        try:
            for namespace in (self.host, self.guests):
                _ip("netns", "add", namespace)
                self._namespaces.append(namespace)
                # No IPv6: no router solicitations or MLD reports from the new links, nothing but the adverts.
                _ip("netns", "exec", namespace, "sh", "-c", _NO_IPV6)
            host, guest = self.plan.batch_lines(self.guests)
            self._batch(self.host, host)
            self._batch(self.guests, guest)
        except BaseException:
            self.close()
            raise
        return self

    def _batch(self, namespace: str, lines: list[str]) -> None:
        path = self.workdir / f"ip-batch-{namespace.rsplit('-', 1)[-1]}.txt"
        path.write_text("\n".join(lines) + "\n")
        _ip("-n", namespace, "-batch", str(path))

    def kernel_drops(self) -> tuple[int, int] | None:
        """(packet sockets, drops) in the host namespace: the observer's sockets; None if `ss` cannot tell."""
        ss = _which("ss")
        if ss is None:
            return None
        done = subprocess.run(
            [_which("ip") or "ip", "netns", "exec", self.host, ss, "-0", "-m", "-n"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        return packet_socket_drops(done.stdout) if done.returncode == 0 else None

    def host_ports_received(self) -> int:
        """Frames the host ends received, summed (the kernel's count, before any socket)."""
        links = json.loads(_ip("-n", self.host, "-s", "-j", "link", "show"))
        return sum(int(link["stats64"]["rx"]["packets"]) for link in links if link.get("ifname", "").startswith("b"))

    def close(self) -> None:
        atexit.unregister(self.close)
        for namespace in reversed(self._namespaces):
            with contextlib.suppress(Exception):
                _destroy_namespace(namespace)  # its veths go with it, both ends
        self._namespaces.clear()


_NO_IPV6 = (
    "for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6;"
    ' do [ -w "$f" ] && echo 1 > "$f"; done; true'
)


# --- the generator: its own process, in the guests namespace ------------------------------------


class Generator:
    """`python -m services.dev.bench_observe --generate` in the guests namespace, and what it says it sent."""

    def __init__(self, plan: Plan, netns: str, log_path: Path) -> None:
        self.plan = plan
        self.netns = netns
        self.log_path = log_path
        self.progress: list[tuple[float, int]] = []  # (monotonic, sent so far)
        self.final: dict[str, Any] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Generator:
        argv = [_which("ip") or "ip", "netns", "exec", self.netns, sys.executable, "-m", "services.dev.bench_observe"]
        argv += ["--generate", "--havips", str(self.plan.havips), "--per-instance", str(self.plan.per_instance)]
        with open(self.log_path, "ab") as log:
            # `ip netns exec` execs the command: this pid is the generator's own.
            self.process = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=exit_with_parent,
                start_new_session=True,  # Ctrl-C reaches only the bench, which stops it
            )
        self._reader = threading.Thread(target=self._read, name="generator output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = json.loads(raw)
            if line.get("final"):
                self.final = line
            else:
                self.progress.append((line["at"], line["sent"]))

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.progress:
            if not self.running():
                raise RuntimeError(f"the generator exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the generator sent nothing within {timeout:g} s: {self.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(5)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""


def generate(plan: Plan) -> int:
    """Send every HAVIP's advert once a second, evenly spread, until SIGTERM; JSON lines on stdout."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    sockets = []
    for k in range(plan.instances):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: sends, never receives
        sock.bind((plan.guest_port(k), 0))
        sockets.append(sock)
    # Built once: the loop does nothing but wait and send.
    frames = [(sockets[plan.instance_of(j)], plan.advert(j)) for j in range(plan.havips)]
    offsets = schedule(plan.havips, INTERVAL_SECONDS)
    every = max(1, plan.havips // PROGRESS_LINES_PER_SECOND)
    late_us: list[float] = []
    sent = errors = 0
    start = time.monotonic() + 0.05
    k = 0
    while not stopping.is_set():
        round_, j = divmod(k, plan.havips)
        due = start + round_ * INTERVAL_SECONDS + offsets[j]
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
            continue
        sock, frame = frames[j]
        try:
            sock.send(frame)
            sent += 1
        except OSError:
            errors += 1
        late_us.append((now - due) * 1e6)
        k += 1
        if k % every == 0:
            _say({"at": time.monotonic(), "sent": sent, "errors": errors})
    late = spread(late_us) if late_us else None
    _say(
        {
            "final": True,
            "at": time.monotonic(),
            "sent": sent,
            "errors": errors,
            "late_ms": {"p50": late.p50 / 1000, "p99": late.p99 / 1000, "max": late.max / 1000} if late else None,
            "late_over_10ms": sum(1 for v in late_us if v > 10_000),
        }
    )
    return 0


def _say(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


# --- the bench --------------------------------------------------------------------------------


@dataclass
class ObserveRun:
    havips: int
    per_instance: int
    instances: int
    seconds: float
    warmup: float
    renew_seconds: float
    setup_seconds: dict[str, float]
    window: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    cpu_per_second: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    generator: dict[str, Any] | None = None
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    observer_log: str = ""
    idle_cpu_percent: float | None = None
    fetch_max_wait_ms: int = 0  # the observer's feed polls the broker this often when nothing is new


def run_observe_bench(
    settings: Settings,
    havips: int = 1000,
    per_instance: int = 5,
    seconds: float = 60.0,
    warmup: float = 10.0,
    out_dir: Path | None = None,
) -> int:
    from services.dev.benchkit import default_out_dir

    try:
        plan = Plan(havips, per_instance)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if seconds <= 0 or warmup < 0:
        raise SystemExit("--seconds must be positive, --warmup not negative")
    unavailable = namespaces_unavailable_reason()
    if unavailable is not None:
        print(f"cannot run the observe bench here: {unavailable}")
        return 2
    remove_stale_labs()
    workdir = bench_workdir("a broker")
    network = Network(plan, workdir)
    # SIGTERM as Ctrl-C: the finally blocks remove the namespaces.
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        started = time.monotonic()
        with EmbeddedBroker(workdir) as broker:
            broker_seconds = time.monotonic() - started
            run_settings = settings.model_copy(
                update={"kafka_bootstrap": broker.bootstrap, "topic_prefix": f"bench-observe-{secrets.token_hex(3)}."}
            )
            run = asyncio.run(_bench(run_settings, plan, network, workdir, seconds, warmup, broker_seconds))
    except KeyboardInterrupt:
        network.close()
        print(f"\ninterrupted: the observer, the generator and the namespaces are gone (logs in {workdir})")
        return 130
    finally:
        network.close()
        signal.signal(signal.SIGTERM, previous)
    _report(run, out_dir or default_out_dir("observe"))
    return 0


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


async def _bench(
    settings: Settings, plan: Plan, network: Network, workdir: Path, seconds: float, warmup: float, broker_s: float
) -> ObserveRun:
    setup: dict[str, float] = {"broker": broker_s}
    mark = time.monotonic()
    await wait_for_broker(settings)
    await ensure_topics(settings)
    setup["topics"] = time.monotonic() - mark

    mark = time.monotonic()
    await _publish(settings, plan)
    setup["publish inventory and mappings"] = time.monotonic() - mark

    mark = time.monotonic()
    print(f"making {plan.instances} veth pairs (host and guests namespaces) ...", flush=True)
    await asyncio.to_thread(network.create)
    setup["namespaces and veths"] = time.monotonic() - mark

    # At INFO, as deployed: the keepalived lab's DEBUG (a line per frame) would be measured too.
    observer = ObserverProcess(settings, HOST_ID, netns=network.host, directory=workdir, log_level="INFO")
    generator = Generator(plan, network.guests, workdir / "generator.log")
    run = ObserveRun(
        havips=plan.havips,
        per_instance=plan.per_instance,
        instances=plan.instances,
        seconds=seconds,
        warmup=warmup,
        renew_seconds=settings.observe_renew_seconds,
        setup_seconds=setup,
        observer_log=str(observer.log_path),
        fetch_max_wait_ms=settings.kafka_operations_fetch_max_wait_ms,
    )
    try:
        mark = time.monotonic()
        print("starting havip observe ...", flush=True)
        observer.start()
        await observer.wait_ready()
        setup["observer ready"] = time.monotonic() - mark
        mark = time.monotonic()
        await _wait_ports(observer, plan.instances)
        setup["observer watching every port"] = time.monotonic() - mark

        watched = {"observer": psutil.Process(observer.pid)}
        # Its cost with every port watched and no advert: the broker feed and the timers, beneath the adverts.
        print(f"observer idle for {IDLE_SECONDS:g} s (every port watched, no advert) ...", flush=True)
        idle_cpu, idle_from = _cpu_seconds(watched["observer"]), time.monotonic()
        await asyncio.sleep(IDLE_SECONDS)
        run.idle_cpu_percent = cpu_percent(_cpu_seconds(watched["observer"]) - idle_cpu, time.monotonic() - idle_from)
        print(
            f"generating {plan.havips:,} adverts a second on {plan.instances} ports; warm-up {warmup:g} s ...",
            flush=True,
        )
        generator.start()
        await asyncio.to_thread(generator.wait_started)
        assert generator.process is not None
        watched["generator"] = psutil.Process(generator.process.pid)
        await asyncio.sleep(warmup)
        first_claims = metric_sum(await observer.metrics(), "havip_observe_reports_total")

        before = await _snapshot(observer, network, watched)
        progress = Progress("measuring", seconds, unit=" s", rate=False)
        cpu_last, wall_last = before["cpu"]["observer"], before["at"]
        while time.monotonic() < before["at"] + seconds:
            await asyncio.sleep(min(1.0, before["at"] + seconds - time.monotonic()))
            if not observer.running or not generator.running():
                raise RuntimeError(f"a process ended early:\n{observer.tail()}\n{generator.tail()}")
            now, used = time.monotonic(), _cpu_seconds(watched["observer"])
            run.cpu_per_second.append(cpu_percent(used - cpu_last, now - wall_last))
            run.rss_mb.append(watched["observer"].memory_info().rss / 2**20)
            cpu_last, wall_last = used, now
            progress.update(now - before["at"])
        progress.finish(seconds)
        after = await _snapshot(observer, network, watched)
        run.window = _window(plan, settings, before, after, generator.progress, first_claims)

        generator.stop()
        await asyncio.sleep(DRAIN_SECONDS)
        text = await observer.metrics()
        run.generator = generator.final
        sent_total = int(generator.final["sent"]) if generator.final else None
        counted_total = metric_sum(text, "havip_observe_frames_total", kind="vrrp", outcome="claimant")
        run.totals = {
            "sent": sent_total,
            "send_errors": generator.final["errors"] if generator.final else None,
            "counted_claimant": counted_total,
            "counted_all_frames": metric_sum(text, "havip_observe_frames_total"),
            "dropped": None if sent_total is None else sent_total - counted_total,
            "host_ports_received": network.host_ports_received(),
            "kernel_drops": _drops(network),
        }
        run.load_average = os.getloadavg()
    finally:
        generator.stop()
        observer.stop()
    return run


async def _publish(settings: Settings, plan: Plan) -> None:
    producer = new_producer(settings)
    await producer.start()
    try:
        inventory, mappings = topic_name(settings, topics.INVENTORY), topic_name(settings, topics.MAPPINGS)
        revision = version = time.time_ns() // 1000
        sent = [
            await producer.send(inventory, key=key.encode(), value=topics.encode(record))
            for key, record in plan.inventory(revision)
        ]
        for j in range(plan.havips):
            mapping = plan.mapping(j, version)
            sent.append(await producer.send(mappings, key=mapping.havip_id.encode(), value=topics.encode(mapping)))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _wait_ports(observer: ObserverProcess, ports: int) -> None:
    deadline = time.monotonic() + PORTS_WATCHED_TIMEOUT
    while True:
        watched = metric_sum(await observer.metrics(), "havip_observe_ports", state="watched")
        if watched == ports:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the observer watches {watched:.0f} of {ports} ports:\n{observer.tail()}")
        await asyncio.sleep(0.2)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _snapshot(observer: ObserverProcess, network: Network, watched: dict[str, psutil.Process]) -> dict[str, Any]:
    """The observer's counters, every process's CPU and the kernel's drops, as of one moment."""
    cpu = {name: _cpu_seconds(process) for name, process in watched.items()}
    asked = time.monotonic()
    text = await observer.metrics()
    answered = time.monotonic()
    return {
        "at": (asked + answered) / 2,  # the counters were read somewhere in between
        "cpu": cpu,
        "claimant": metric_sum(text, "havip_observe_frames_total", kind="vrrp", outcome="claimant"),
        "frames": metric_sum(text, "havip_observe_frames_total"),
        "reports": metric_sum(text, "havip_observe_reports_total"),
        "renewed": metric_sum(text, "havip_observe_renewed_claims_total"),
        "host_ports_received": network.host_ports_received(),
        "kernel_drops": _drops(network),
    }


def _drops(network: Network) -> int | None:
    found = network.kernel_drops()
    return None if found is None else found[1]


def _window(
    plan: Plan,
    settings: Settings,
    before: dict[str, Any],
    after: dict[str, Any],
    progress: list[tuple[float, int]],
    first_claims: float,
) -> dict[str, Any]:
    wall = after["at"] - before["at"]
    snapshot = list(progress)
    sent = sent_by(snapshot, after["at"]) - sent_by(snapshot, before["at"])
    drops = None
    if after["kernel_drops"] is not None and before["kernel_drops"] is not None:
        drops = after["kernel_drops"] - before["kernel_drops"]
    return {
        "wall_seconds": wall,
        "cpu_percent": {name: cpu_percent(after["cpu"][name] - before["cpu"][name], wall) for name in after["cpu"]},
        "sent": sent,
        "counted_claimant": after["claimant"] - before["claimant"],
        "counted_other": (after["frames"] - before["frames"]) - (after["claimant"] - before["claimant"]),
        "host_ports_received": after["host_ports_received"] - before["host_ports_received"],
        "kernel_drops": drops,
        "state_changes": after["reports"] - before["reports"],
        "first_claims_in_warmup": first_claims,
        "renewed": after["renewed"] - before["renewed"],
        "renewed_expected": plan.havips * wall / settings.observe_renew_seconds,
    }


def _report(run: ObserveRun, out_dir: Path) -> None:
    w, totals = run.window, run.totals
    observer_cpu = w["cpu_percent"]["observer"]
    worst_second = max(run.cpu_per_second, default=None)
    rss = max(run.rss_mb, default=None)
    # At the window's edges a frame may still wait in a socket's queue (counted in the next window):
    # up to 50 ms of adverts is timing, not loss. Loss is judged on the whole run, after a drain.
    edge = max(10.0, run.havips / 20)
    window_gap = w["sent"] - w["counted_claimant"]
    nothing_dropped = totals.get("dropped") == 0 and not totals.get("send_errors") and not totals.get("kernel_drops")
    cpu_met = observer_cpu <= CPU_TARGET_PERCENT
    steady = w["state_changes"] == 0
    late = (run.generator or {}).get("late_ms") or {}
    rows: list[list[Any]] = [
        ["observer CPU, % of one core (window)", observer_cpu, f"<= {CPU_TARGET_PERCENT:g}%", cpu_met],
        ["observer CPU, worst second (%)", worst_second, None, None],
        [f"observer CPU, idle before the adverts ({IDLE_SECONDS:g} s, %)", run.idle_cpu_percent, None, None],
        ["observer RSS, max (MB)", rss, None, None],
        ["adverts sent in the window", round(w["sent"]), None, None],
        [
            "adverts counted (claimant) in the window",
            round(w["counted_claimant"]),
            f"= sent (+-{edge:.0f})",
            abs(window_gap) <= edge,
        ],
        ["other frames counted in the window", round(w["counted_other"]), "0", w["counted_other"] == 0],
        ["kernel drops, observer's sockets (window)", w["kernel_drops"], "0", None],
        ["frames the host ends received (window)", w["host_ports_received"], None, None],
        ["adverts sent, whole run", totals.get("sent"), None, None],
        ["adverts counted, whole run", round(totals["counted_claimant"]), "= sent", None],
        ["send errors / kernel drops, whole run", _pair(totals), "0 / 0", None],
        ["nothing dropped", nothing_dropped, "yes", nothing_dropped],
        ["state changes published (window)", round(w["state_changes"]), "0", steady],
        ["first claims published (warm-up)", round(w["first_claims_in_warmup"]), f"{run.havips:,}", None],
        [
            "claims renewed (window)",
            round(w["renewed"]),
            f"~{w['renewed_expected']:,.0f}",
            abs(w["renewed"] - w["renewed_expected"]) <= run.havips,
        ],
        ["generator lateness p50 / p99 / max (ms)", _triple(late), None, None],
        ["generator CPU, % of one core", w["cpu_percent"].get("generator"), None, None],
    ]
    met = cpu_met and nothing_dropped and steady
    print(
        f"\nobserve: one observer, {run.havips:,} HAVIPs advertising once a second on {run.instances} ports"
        f" ({run.per_instance} per instance), {w['wall_seconds']:.1f} s measured after {run.warmup:g} s warm-up"
    )
    print(format_table(["measure", "measured", "target", "met?"], rows))
    setup_rows = [[phase, seconds] for phase, seconds in run.setup_seconds.items()]
    setup_rows.append(["total", sum(run.setup_seconds.values())])
    print("\n" + format_table(["setup", "seconds"], setup_rows))
    load = run.load_average
    print(
        f"\ntarget (<= {CPU_TARGET_PERCENT:g}% of a core, nothing dropped, no state change):"
        f" {'met' if met else 'missed'}"
        f"; {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )
    print(f"observer log: {run.observer_log} (its feed waits {run.fetch_max_wait_ms} ms per fetch)")
    pngs = plot_rates(out_dir, "observe-cpu", {"havip observe": run.cpu_per_second}, "% of one core")
    path = write_json(
        out_dir,
        {
            "havips": run.havips,
            "per_instance": run.per_instance,
            "instances": run.instances,
            "seconds": run.seconds,
            "warmup": run.warmup,
            "renew_seconds": run.renew_seconds,
            "kafka_fetch_max_wait_ms": run.fetch_max_wait_ms,
            "cpus": os.cpu_count(),
            "load_average_end": load,
            "setup_seconds": run.setup_seconds,
            "window": w,
            "totals": totals,
            "generator": run.generator,
            "observer_cpu_percent_per_second": run.cpu_per_second,
            "observer_idle_cpu_percent": run.idle_cpu_percent,
            "observer_rss_mb_per_second": run.rss_mb,
            "targets": [
                dict(zip(["measure", "measured", "target", "met"], row, strict=True)) for row in rows if row[2]
            ],
            "met": met,
        },
    )
    print(f"\nwrote {path}" + "".join(f"\n      {png}" for png in pngs))


def _pair(totals: dict[str, Any]) -> str:
    return f"{totals.get('send_errors')} / {totals.get('kernel_drops')}"


def _triple(late: dict[str, float]) -> str | None:
    if not late:
        return None
    return f"{late['p50']:.2f} / {late['p99']:.2f} / {late['max']:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the observe bench's advert generator (runs in the guests netns)")
    parser.add_argument("--generate", action="store_true", required=True)
    parser.add_argument("--havips", type=int, required=True)
    parser.add_argument("--per-instance", type=int, required=True)
    args = parser.parse_args(argv)
    return generate(Plan(args.havips, args.per_instance))


if __name__ == "__main__":
    sys.exit(main())
