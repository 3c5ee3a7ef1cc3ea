"""``python tools/wait_for_server.py PORT PID``: wait until http://127.0.0.1:PORT/health answers (the recipes' reward
server), failing at once if process PID exits first, and after 300 s otherwise."""

import os
import sys
import time
import urllib.request

port, pid = sys.argv[1], int(sys.argv[2])
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        sys.exit(0)
    except OSError:
        if not os.path.exists(f"/proc/{pid}"):
            sys.exit("reward server exited before it was up: see its log above")
        time.sleep(1)
sys.exit("reward server not up after 300 s")
