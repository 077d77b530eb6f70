"""The one clock of the service's decisions: the running event loop's monotonic time.

Pure decisions take ``now`` as an argument; the adapters read it here, so a test can drive
a decision with any time it likes and the adapters agree with one another.
"""

from __future__ import annotations

import asyncio


def now() -> float:
    """Seconds on the running loop's monotonic clock (raises outside a running loop)."""
    return asyncio.get_running_loop().time()
