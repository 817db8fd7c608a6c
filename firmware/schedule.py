# When to take the next reading: a fixed period without drift.
#
# The next due time is the previous due time plus the period (not "now plus
# the period"), so readings stay on their grid even when a sample or a
# publish takes a while. When the board falls more than a period behind
# (long outage, debugger, slow flash) the missed slots are skipped, not
# taken in a burst. Pure logic: works on ticks given by the caller.

from .compat import ticks_add, ticks_diff


class Schedule:
    def __init__(self, period_ms, now):
        if period_ms < 1:
            raise ValueError("period must be at least 1 ms")
        self.period = period_ms
        self.due = now
        self.skipped = 0

    def ready(self, now):
        # True (and advance) when a reading is due at tick `now`.
        late = ticks_diff(now, self.due)
        if late < 0:
            return False
        if late >= self.period:
            missed = late // self.period
            self.skipped += missed
            self.due = ticks_add(self.due, missed * self.period)
        self.due = ticks_add(self.due, self.period)
        return True

    def wait_ms(self, now):
        # Milliseconds until the next reading is due (0 if it is due).
        left = ticks_diff(self.due, now)
        return left if left > 0 else 0
