"""The observer's view of its host: whose port is which, and who may claim which address."""

from __future__ import annotations

from ipaddress import IPv4Address

from schemas.messages import (
    EniChanged,
    HaVipMappingChanged,
    HaVipStatus,
    InstanceChanged,
    InstanceStatus,
    MappedAttachment,
    VSwitchChanged,
)
from services.observe.claims import ClaimKey
from services.observe.hostview import HostView, Standing


def instance(
    iid: str,
    host: str,
    port: str | None,
    revision: int = 1,
    tenant: str = "t-1",
    status: InstanceStatus = InstanceStatus.RUNNING,
) -> InstanceChanged:
    return InstanceChanged(
        instance_id=iid,
        tenant_id=tenant,
        vpc_id="vpc-1",
        vswitch_id="vsw-1",
        private_ip="10.0.0.5",
        status=status,
        host_id=host,
        revision=revision,
        port_name=port,
    )


def havip(
    hid: str,
    ip: str,
    attached: list[str],
    version: int = 1,
    tenant: str = "t-1",
    vpc: str = "vpc-1",
    status: HaVipStatus = HaVipStatus.IN_USE,
) -> HaVipMappingChanged:
    return HaVipMappingChanged(
        havip_id=hid,
        tenant_id=tenant,
        vpc_id=vpc,
        vswitch_id="vsw-1",
        ip_address=ip,
        status=status,
        attachments=[MappedAttachment(target_id=i, instance_id=i) for i in attached],
        version=version,
    )


def view_with(*records: InstanceChanged | EniChanged | VSwitchChanged | HaVipMappingChanged) -> HostView:
    view = HostView("host-a")
    for record in records:
        if isinstance(record, HaVipMappingChanged):
            view.apply_mapping(record)
        else:
            view.apply_inventory(record)
    return view


def test_ports_are_those_of_this_hosts_instances_and_their_enis() -> None:
    view = view_with(
        instance("i-1", "host-a", "tap1"),
        instance("i-2", "host-b", "tap2"),
        instance("i-3", "host-a", None),
        VSwitchChanged(
            vswitch_id="vsw-9", tenant_id="t-1", vpc_id="vpc-1", zone_id="z", cidr="10.9.0.0/24", revision=1
        ),
        EniChanged(
            eni_id="eni-1",
            instance_id="i-1",
            tenant_id="t-1",
            vswitch_id="vsw-9",
            private_ip="10.9.0.4",
            revision=1,
            port_name="tap1e",
        ),
    )
    ports = view.ports()
    assert sorted(ports) == ["tap1", "tap1e"]
    assert (ports["tap1e"].instance_id, ports["tap1e"].eni_id) == ("i-1", "eni-1")


def test_an_older_revision_changes_nothing_and_a_deleted_instance_has_no_port() -> None:
    view = view_with(instance("i-1", "host-a", "tap1", revision=5))
    assert not view.apply_inventory(instance("i-1", "host-a", "tapOLD", revision=4))
    assert list(view.ports()) == ["tap1"]
    view.apply_inventory(instance("i-1", "host-a", "tap1", revision=6, status=InstanceStatus.DELETED))
    assert view.ports() == {}


def test_an_instance_that_moved_away_is_no_longer_watched() -> None:
    view = view_with(instance("i-1", "host-a", "tap1"))
    view.apply_inventory(instance("i-1", "host-b", "tap1", revision=2))
    assert view.ports() == {}


def test_judge_attached_unattached_other_tenant_and_unknown_addresses() -> None:
    view = view_with(
        instance("i-1", "host-a", "tap1"),
        instance("i-2", "host-a", "tap2"),
        havip("hv-1", "10.0.0.100", ["i-1"]),
        havip("hv-x", "10.0.0.200", ["i-9"], tenant="t-2"),
        havip("hv-other-vpc", "10.0.0.50", ["i-1"], vpc="vpc-2"),
    )
    tap1, tap2 = view.ports()["tap1"], view.ports()["tap2"]
    claim = view.judge(tap1, IPv4Address("10.0.0.100"))
    assert claim.standing is Standing.CLAIMANT and claim.havip is not None and claim.havip.havip_id == "hv-1"
    intruder = view.judge(tap2, IPv4Address("10.0.0.100"))
    assert intruder.standing is Standing.UNEXPECTED and "not attached" in intruder.reason
    assert view.judge(tap1, IPv4Address("10.0.0.200")).standing is Standing.UNEXPECTED
    # The same address in another VPC is another network; an address no HAVIP holds is not ours.
    assert view.judge(tap1, IPv4Address("10.0.0.50")).standing is Standing.NOT_A_HAVIP
    assert view.judge(tap1, IPv4Address("10.0.0.7")).standing is Standing.NOT_A_HAVIP


def test_mappings_take_only_newer_versions_and_a_deleted_havip_is_forgotten() -> None:
    view = view_with(instance("i-1", "host-a", "tap1"), havip("hv-1", "10.0.0.100", ["i-1"], version=3))
    tap1 = view.ports()["tap1"]
    view.apply_mapping(havip("hv-1", "10.0.0.100", [], version=2))
    assert view.judge(tap1, IPv4Address("10.0.0.100")).standing is Standing.CLAIMANT
    assert view.possible(ClaimKey("hv-1", "i-1", "t-1"))
    view.apply_mapping(havip("hv-1", "10.0.0.100", [], version=4))
    assert view.judge(tap1, IPv4Address("10.0.0.100")).standing is Standing.UNEXPECTED
    assert not view.possible(ClaimKey("hv-1", "i-1", "t-1"))
    view.apply_mapping(havip("hv-1", "10.0.0.100", [], version=5, status=HaVipStatus.DELETED))
    assert view.judge(tap1, IPv4Address("10.0.0.100")).standing is Standing.NOT_A_HAVIP
