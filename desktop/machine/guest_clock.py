"""Which clock source the guest kernel counts time with, per accelerator.

Under TCG the guest's TSC is the host's, but the guest kernel measures its
frequency at boot against the emulated PIT, and on a busy host that
measurement is far off; `tsc=reliable` (kept for boot time) also stops the
kernel's watchdog from noticing. Measured here (offset sampled every 10 s for
150 s, NTP-style through the guest's clock service):

    tsc      +6 ppm on a quiet boot, +1,692,000 ppm on a busy one (17 s gained
             every 10 s); 0.70 us per time.time() (vDSO)
    hpet     +6 ppm (noise: readings scatter by ~1 ms); 6.95 us per read
    acpi_pm  -8 ppm (noise, likewise); 2.16 us per read

HPET and the ACPI PM timer are counters QEMU derives from the host's
monotonic clock: nothing to calibrate, so nothing to get wrong. Both need a
system call per read (no vDSO); the PM timer's is a third of the HPET's, and
QEMU's idle CPU was the same with either (0.75-0.78 % of a core). Its 24-bit
counter wraps every 4.7 s, which the kernel covers by reading it at least
every 2 s, and the periodic clock check (desktop/clock_sync.py) would step
away a wrap lost to a vCPU starved that long.

With KVM, HVF or WHPX the kernel's own choice (kvm-clock, an invariant TSC) is
right and a PM timer read would be a VM exit, so only TCG gets this.
"""

from __future__ import annotations

TCG_CLOCKSOURCE = "acpi_pm"


def clock_arguments(accel: str) -> list[str]:
    """Kernel command-line words that choose the guest's clock source under `accel`."""
    return [f"clocksource={TCG_CLOCKSOURCE}"] if accel == "tcg" else []
