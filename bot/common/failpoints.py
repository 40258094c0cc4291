"""Named crash points for the crash-safety tests.

    HUGGINGTWEETS_FAILPOINT=reply_sent huggingtweets run --once   # dies with SIGKILL right after a reply is posted

With the variable unset (always, outside the tests) `failpoint()` does nothing.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("HUGGINGTWEETS_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
