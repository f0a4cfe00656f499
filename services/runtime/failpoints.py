"""Named points where a test can make a process die on purpose.

Set `HAVIP_FAILPOINTS=name[,name...]` in a service's environment and the
process kills itself (SIGKILL, as the kernel's OOM killer or a node failure
would) when it reaches that point. It proves what a crash at the worst
moment does, which no amount of reasoning about the code can. Unset (always
in production) it costs one set lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_ACTIVE = frozenset(name for name in os.environ.get("HAVIP_FAILPOINTS", "").split(",") if name)


def failpoint(name: str) -> None:
    if name in _ACTIVE:
        log.critical("failpoint %s reached: killing this process", name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
