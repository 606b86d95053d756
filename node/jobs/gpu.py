"""Whether this node can compute on a CUDA GPU, learned without importing torch into the node
process. Answering a plan used to import torch for `torch.cuda.is_available()`: seconds of CPU in
the middle of the Offer handler (on a busy machine the sender's call timed out, and the plan's
other statements queued behind it) and ~200 MB kept resident on every node, executor or not.

    probe = GpuProbe()
    probe.start()        # no GPU device files: False at once; else a torch subprocess, in the background
    probe.available      # False until known

Without a GPU driver's device files there is no device for `torch.cuda` to find, so most
machines get their answer without any subprocess; an operator who asks for `--device cuda`
always gets the subprocess's answer. Until the subprocess answers the node bids as
a CPU node: a bid that claims less than the machine has is only ever passed over, never wrong.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# Present whenever a GPU driver torch can use is loaded: NVIDIA's (also in containers given a
# GPU), WSL2's GPU bridge, ROCm's (torch.cuda covers ROCm builds too).
GPU_MARKERS = ("/proc/driver/nvidia/gpus", "/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")
PROBE_CODE = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
PROBE_TIMEOUT_S = 120.0


class GpuProbe:
    """:param markers: paths whose existence means a GPU driver may be present
    :param always: ask torch (in a subprocess) even when no marker exists
    """

    def __init__(self, markers: Sequence[str] = GPU_MARKERS, always: bool = False) -> None:
        self.markers = tuple(markers)
        self.always = always
        self._result: bool | None = None
        self._done = threading.Event()

    def start(self) -> None:
        if not self.always and not any(Path(m).exists() for m in self.markers):
            self._finish(False)
            return
        threading.Thread(target=self._probe, name="gpu-probe", daemon=True).start()

    def _probe(self) -> None:
        try:
            done = subprocess.run([sys.executable, "-c", PROBE_CODE], capture_output=True, timeout=PROBE_TIMEOUT_S)
            found = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not tell whether this machine has a usable GPU (%s); bidding as a CPU node", exc)
            found = False
        log.info("CUDA GPU %s", "available" if found else "not available")
        self._finish(found)

    def _finish(self, found: bool) -> None:
        self._result = found
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the answer is known within `timeout` seconds."""
        return self._done.wait(timeout)

    @property
    def available(self) -> bool:
        return bool(self._result)
