# The figures of a finished run: the unix port prints them as its `--stats`
# line (`TP-STATS {json}`), which the tests and the board bench read. Built
# once, after the main loop has returned (firmware/app.py, main), so a running
# board never holds this module.


def stats(app, n):
    # The figures of this run from the app's counters (`n` reading times).
    times = sorted(app.times[:n])
    up = app.uplink
    ob = app.outbox
    return {
        "readings": app.readings,
        "last_seq": app.last_seq,
        "pending": ob.pending,
        "dropped": ob.dropped,
        "corrupt": ob.corrupt,
        "torn": ob.torn,
        "bytes_written": ob.bytes_written,
        "published": up.published,
        "republished": up.republished,
        "acked": up.acked,
        "rejected": up.rejected,
        "connects": up.connects,
        "sensor_failures": app.sensor_failures,
        "reading_us_median": times[n // 2] if n else 0,
        "live_peak": app.peak_alloc,
        "envelope_bytes": ob.envelope_bytes,
        "live_at_100": app.live_100,
        "live_last": app.live_last,
        "mem_errors": app.mem_errors,
        "heap_free": app.board.heap_free(),
    }
