"""The machine beside the curves: the training process's memory, the CUDA caching allocator's counters and,
where `nvidia-ml-py` is installed, what NVML says about the GPUs this process uses.

Two clocks, two threads:
- `SystemStats.sample(now)` runs on the training thread, at most once per `SAMPLE_S`, inside a step's
  bookkeeping: it reads RSS (one small read of /proc) and the allocator's host-side counters (no device sync,
  no CUDA call that waits), and merges the newest NVML figures. What it returns joins that step's scalars, so
  every figure is aligned with a training step and travels the way the loss does (wire, recording, rules).
- `SystemStats.poll()` runs on the probe's I/O thread, about once a second: NVML calls can take milliseconds
  and must never delay a training step.

Never imports torch: a framework that already imported it is read from `sys.modules`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from .errors import report_once

# A sample every SAMPLE_STEPS steps, so that the rules see the same steps on any machine; and at least one
# every SAMPLE_S seconds when steps are slow (the I/O thread polls NVML at its own SYSTEM_POLL_S).
SAMPLE_STEPS = 10
SAMPLE_S = 1.0
# At most this many CUDA devices are reported per process (a process drives one, sometimes a few).
MAX_DEVICES = 16

try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):
    _PAGE = 4096


def _psutil_rss() -> int | None:
    try:
        import psutil  # optional: macOS and Windows

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None


class Statm:
    """This process's resident set size, read on the training thread every SAMPLE_STEPS steps: /proc/self/statm
    kept open and read with one pread (1.7 µs, where opening, reading and closing it takes 10.5: most of what
    `log()` spent on memory figures). A forked child opens its own (the inherited descriptor reads the parent).
    Closed by its owner's thread, the one that reads it (`Run.close`): closed by another, its number could be
    reused under a read."""

    def __init__(self) -> None:
        self._fd = -1
        self._pid = 0

    def rss(self) -> int | None:
        try:
            if self._pid != os.getpid():
                self.close()
                self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
                self._pid = os.getpid()
            return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            self.close()
            return _psutil_rss()  # no /proc here (macOS, Windows)

    def close(self) -> None:
        fd, self._fd, self._pid = self._fd, -1, 0
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def rss_bytes() -> int | None:
    """The resident set size of this process, or None where neither /proc nor psutil can tell (a one-off read)."""
    statm = Statm()
    try:
        return statm.rss()
    finally:
        statm.close()


def _torch_cuda() -> Any:
    """torch.cuda when a framework imported torch and initialised CUDA in this process, else None."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        return cuda if cuda is not None and cuda.is_initialized() else None
    except Exception:
        return None


class Nvml:
    """NVML figures for a set of devices (by PCI bus id), polled on the I/O thread; `latest` is replaced
    whole at each poll, so the training thread reads a consistent dict without a lock."""

    def __init__(self) -> None:
        self.latest: dict[str, float] = {}
        self.off = False
        self._lib: Any = None
        self._watch: dict[int, str | None] = {}  # torch device index → PCI bus id
        self._handles: dict[int, Any] = {}
        self._lock = threading.Lock()

    def watch(self, devices: dict[int, str | None]) -> None:
        """The devices to report, named by the index the training process uses (called from the training thread)."""
        with self._lock:
            self._watch = dict(devices)

    def poll(self) -> None:
        if self.off:
            return
        with self._lock:
            watch = dict(self._watch)
        if not watch:
            return
        try:
            if self._lib is None:
                import pynvml  # nvidia-ml-py, optional

                pynvml.nvmlInit()
                self._lib = pynvml
            nv = self._lib
            out: dict[str, float] = {}
            for index, bus in watch.items():
                h = self._handles.get(index)
                if h is None:
                    try:
                        h = nv.nvmlDeviceGetHandleByPciBusId(bus) if bus else nv.nvmlDeviceGetHandleByIndex(index)
                    except nv.NVMLError:
                        # A bus id NVML spells differently; the index is right unless CUDA_VISIBLE_DEVICES
                        # reorders devices, which the bus id is there to survive.
                        h = nv.nvmlDeviceGetHandleByIndex(index)
                    self._handles[index] = h
                out[f"gpu_util/{index}"] = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
                out[f"gpu_mem_used/{index}"] = float(nv.nvmlDeviceGetMemoryInfo(h).used)
                out[f"gpu_temp/{index}"] = float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
                try:
                    out[f"gpu_power/{index}"] = nv.nvmlDeviceGetPowerUsage(h) / 1000.0  # mW → W
                except Exception:
                    pass  # not every board reports power
            n = len(watch)
            per = {key: [v for k, v in out.items() if k.startswith(key + "/")] for key in
                   ("gpu_util", "gpu_mem_used", "gpu_temp", "gpu_power")}
            # The process's figures over its devices, for the charts: mean use, summed memory and power, the
            # hottest temperature. The per-device ones stay for the rules and the CSV.
            for key, how in (("gpu_util", lambda v: sum(v) / n), ("gpu_mem_used", sum), ("gpu_temp", max),
                             ("gpu_power", sum)):
                if per[key]:
                    out[key] = float(how(per[key]))
            self.latest = out
        except ImportError:
            self.off = True  # not installed: the allocator's counters and RSS still come
        except Exception as exc:
            self.off = True
            report_once("nvml", f"GPU figures from NVML are off ({type(exc).__name__}: {exc}); memory counters go on")

    def close(self) -> None:
        if self._lib is not None:
            try:
                self._lib.nvmlShutdown()
            except Exception:
                pass
            self._lib = None


class SystemStats:
    """What `sample` adds to a step's scalars (bytes, %, °C, W), for the steps `due` picks:

    - `rss`: the training process's resident memory;
    - `cuda_allocated/<i>`, `cuda_max_allocated/<i>`, `cuda_reserved/<i>`: the caching allocator's counters
      for each device this process has memory on;
    - `gpu_util/<i>`, `gpu_mem_used/<i>`, `gpu_temp/<i>`, `gpu_power/<i>`: NVML, where installed;
    - `cuda_allocated`, `cuda_reserved`, `gpu_util`, `gpu_mem_used`, `gpu_temp`, `gpu_power`: the same over the
      process's devices (summed; mean utilisation, hottest temperature), what the System tab draws.

    `facts()` says once what the figures are measured against: each device's name and total memory.
    """

    def __init__(self, every_s: float = SAMPLE_S) -> None:
        self.every_s = every_s
        self.next_at = 0.0
        self.nvml = Nvml()
        self.devices: dict[int, dict[str, Any]] = {}  # device index → {"name", "total"}
        self._bus: dict[int, str | None] = {}  # device index → PCI bus id, as NVML spells it
        self.new_facts = False
        self.off = False
        self.statm = Statm()

    def due(self, step: int, now: float) -> bool:
        """Whether `step` gets a sample: every SAMPLE_STEPS steps, and after `every_s` seconds without one."""
        return not self.off and (step % SAMPLE_STEPS == 0 or now >= self.next_at)

    def sample(self, now: float | None = None) -> dict[str, float]:
        """The figures now; never raises."""
        now = time.monotonic() if now is None else now
        self.next_at = now + self.every_s
        out: dict[str, float] = {}
        try:
            rss = self.statm.rss()
            if rss is not None:
                out["rss"] = float(rss)
            cuda = _torch_cuda()
            if cuda is not None:
                self._cuda(cuda, out)
            out.update(self.nvml.latest)
        except Exception as exc:
            self.off = True
            report_once("system", f"system figures are off after an internal error: {exc!r}")
        return out

    def _cuda(self, cuda: Any, out: dict[str, float]) -> None:
        allocated = reserved_all = 0.0
        for i in range(min(cuda.device_count(), MAX_DEVICES)):
            reserved = cuda.memory_reserved(i)
            if not reserved and i not in self.devices:
                continue  # a device this process never allocated on: another rank's
            out[f"cuda_allocated/{i}"] = float(cuda.memory_allocated(i))
            out[f"cuda_max_allocated/{i}"] = float(cuda.max_memory_allocated(i))
            out[f"cuda_reserved/{i}"] = float(reserved)
            allocated += out[f"cuda_allocated/{i}"]
            reserved_all += reserved
            if i not in self.devices:
                props = cuda.get_device_properties(i)
                self.devices[i] = {"name": str(props.name), "total": int(props.total_memory)}
                self._bus[i] = _bus_id(props)
                self.new_facts = True
                self.nvml.watch(dict(self._bus))
        if self.devices:
            out["cuda_allocated"], out["cuda_reserved"] = allocated, reserved_all  # the process's, for the charts

    def facts(self) -> dict[str, Any] | None:
        """`{"devices": {...}}` once new devices were seen since the last call, else None."""
        if not self.new_facts:
            return None
        self.new_facts = False
        return {"devices": {str(i): d for i, d in self.devices.items()}}

    def poll(self) -> None:
        """The I/O thread's part: NVML, about once a second."""
        self.nvml.poll()

    def stop_polling(self) -> None:
        """The I/O thread's part, at its end."""
        self.nvml.close()

    def close(self) -> None:
        """Everything, from the thread that samples (see `Statm`); no figures after it."""
        self.off = True
        self.nvml.close()
        self.statm.close()


def _bus_id(props: Any) -> str | None:
    """NVML's spelling of a device's PCI address, from torch's device properties (torch ≥ 2.1 has them)."""
    try:
        return f"{int(props.pci_domain_id):08x}:{int(props.pci_bus_id):02x}:{int(props.pci_device_id):02x}.0"
    except (AttributeError, TypeError, ValueError):
        return None
