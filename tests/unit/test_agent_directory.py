"""The agent directory decides from memory: its answers, how it is kept current, and when it stops trusting itself."""

from __future__ import annotations

from services.gateway.directory import AgentDirectory
from services.gateway.tokens import Principal
from services.readmodel.reporters import ReporterStanding

ATTACHED, NOT_ATTACHED, UNKNOWN = (
    ReporterStanding.ATTACHED,
    ReporterStanding.NOT_ATTACHED,
    ReporterStanding.UNKNOWN_HAVIP,
)
WEB1 = Principal("agent", "tenant-a", "i-web1", token_id="tok-web1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def loaded(clock: Clock | None = None) -> AgentDirectory:
    clock = clock or Clock()
    directory = AgentDirectory(clock=clock, trusted_for=600, following_within=3)
    directory.replace(
        {"sha-web1": WEB1},
        {"havip-1": "tenant-a", "havip-2": "tenant-a", "havip-b": "tenant-b"},
        {"i-web1": {"havip-1"}, "i-b": {"havip-b"}},
    )
    directory.confirm(clock.now)
    return directory


def test_a_held_token_and_attachment_are_answered_from_memory() -> None:
    directory = loaded()
    assert directory.principal("sha-web1") == WEB1
    assert directory.principal("sha-unknown") is None  # a miss: the caller asks the database
    assert directory.standing("tenant-a", "i-web1", ["havip-1", "havip-2", "havip-nowhere"]) == {
        "havip-1": ATTACHED,
        "havip-2": NOT_ATTACHED,
        "havip-nowhere": UNKNOWN,
    }


def test_another_tenants_havip_is_answered_exactly_like_one_that_does_not_exist() -> None:
    directory = loaded()
    # i-b really is attached to havip-b, but tenant-a's agent must learn nothing of it.
    assert directory.standing("tenant-a", "i-b", ["havip-b", "havip-nowhere"]) == {
        "havip-b": UNKNOWN,
        "havip-nowhere": UNKNOWN,
    }


def test_an_agents_own_tenant_rate_is_not_carried() -> None:
    directory = AgentDirectory()
    directory.replace({"sha": Principal("agent", "t", "i-1", token_id="tok-1", requests_per_second=3.0)}, {}, {})
    directory.confirm(directory.now())
    held = directory.principal("sha")
    assert held is not None and held.requests_per_second is None  # agents share the gateway's agent rate


def test_re_reads_replace_what_changed_and_drop_what_is_gone() -> None:
    directory = loaded()
    directory.update_attachments(["i-web1", "i-web2"], {"i-web2": {"havip-1", "havip-2"}})
    assert directory.standing("tenant-a", "i-web1", ["havip-1"]) == {"havip-1": NOT_ATTACHED}  # detached
    assert directory.standing("tenant-a", "i-web2", ["havip-1", "havip-2"]) == {
        "havip-1": ATTACHED,
        "havip-2": ATTACHED,
    }

    directory.update_havips(["havip-3", "havip-2"], {"havip-3": "tenant-a"})
    assert directory.standing("tenant-a", "i-web2", ["havip-2", "havip-3"]) == {
        "havip-2": UNKNOWN,
        "havip-3": NOT_ATTACHED,
    }

    web2 = Principal("agent", "tenant-a", "i-web2", token_id="tok-web2")
    directory.update_tokens(["tok-web1", "tok-web2"], {"tok-web2": ("sha-web2", web2)})
    assert directory.principal("sha-web1") is None  # revoked elsewhere: the re-read no longer finds it
    assert directory.principal("sha-web2") == web2


def test_a_token_revoked_here_never_comes_back_from_a_read_that_began_before() -> None:
    directory = loaded()
    directory.forget_token("tok-web1")
    assert directory.principal("sha-web1") is None
    # A re-read or full load started before the revocation committed still holds the token.
    directory.update_tokens(["tok-web1"], {"tok-web1": ("sha-web1", WEB1)})
    assert directory.principal("sha-web1") is None
    directory.replace({"sha-web1": WEB1}, {}, {})
    assert directory.principal("sha-web1") is None
    directory.learn_token("sha-web1", WEB1, read_at_epoch=directory.epoch)
    assert directory.principal("sha-web1") is None


def test_what_a_miss_learned_is_kept_only_if_nothing_changed_during_the_read() -> None:
    directory = loaded()
    web2 = Principal("agent", "tenant-a", "i-web2", token_id="tok-web2")
    before = directory.epoch
    directory.learn_token("sha-web2", web2, read_at_epoch=before)
    assert directory.principal("sha-web2") == web2

    # The read began, then a notification was applied (perhaps the revocation of what it read).
    web3 = Principal("agent", "tenant-a", "i-web3", token_id="tok-web3")
    before = directory.epoch
    directory.update_tokens(["tok-web3"], {})
    directory.learn_token("sha-web3", web3, read_at_epoch=before)
    assert directory.principal("sha-web3") is None

    before = directory.epoch
    directory.learn_attachment("tenant-a", "i-web1", "havip-2", read_at_epoch=before)
    assert directory.standing("tenant-a", "i-web1", ["havip-1", "havip-2"]) == {
        "havip-1": ATTACHED,
        "havip-2": ATTACHED,
    }
    before = directory.epoch
    directory.update_attachments(["i-web1"], {"i-web1": {"havip-1"}})  # detached during the read
    directory.learn_attachment("tenant-a", "i-web1", "havip-2", read_at_epoch=before)
    assert directory.standing("tenant-a", "i-web1", ["havip-2"]) == {"havip-2": NOT_ATTACHED}


def test_tenant_tokens_are_never_learned() -> None:
    directory = loaded()
    directory.learn_token("sha-t", Principal("tenant", "tenant-a", token_id="tok-t"), read_at_epoch=directory.epoch)
    assert directory.principal("sha-t") is None


def test_following_for_seconds_trusted_for_minutes_then_nothing_is_decided() -> None:
    clock = Clock()
    directory = loaded(clock)
    assert directory.following and directory.trusted and directory.age == 0

    clock.now += 3.5  # the database stopped answering: misses no longer wait for it
    assert not directory.following and directory.trusted
    assert directory.principal("sha-web1") == WEB1
    assert directory.standing("tenant-a", "i-web1", ["havip-1"]) == {"havip-1": ATTACHED}

    clock.now += 600  # cut off longer than it may be trusted: a hit is no longer an answer
    assert not directory.trusted
    assert directory.principal("sha-web1") is None
    assert directory.standing("tenant-a", "i-web1", ["havip-1"]) is None

    directory.confirm(clock.now - 1)  # following again
    assert directory.following
    directory.lose()  # the connection that keeps it current failed: misses do not wait for the database
    assert not directory.following and directory.principal("sha-web1") == WEB1
    directory.confirm(clock.now - 1)
    assert directory.following and directory.principal("sha-web1") == WEB1
    directory.confirm(clock.now - 100)  # an older confirmation never moves it back
    assert directory.age == 1


def test_before_the_first_load_nothing_is_trusted() -> None:
    directory = AgentDirectory()
    assert directory.age is None and not directory.trusted and not directory.following
    assert directory.standing("t", "i", ["havip-1"]) is None
