"""A Lambda-like runtime loop: one JSON event per stdin line, one reply per stdout line.

Between invocations the test freezes this process (SIGSTOP) and kills it, as a
platform that recycles a frozen container does; nothing here says goodbye.
"""

from __future__ import annotations

import json
import sys

from functions.aws_lambda import handler
from functions.core import get_core

get_core()  # the init phase
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    print(json.dumps(handler(json.loads(line), None)), flush=True)
