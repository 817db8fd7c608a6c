# A board whose serial uplink never answers: the firmware app on the unix port,
# its link's open request going to a file and its answers expected from a FIFO
# the host never writes. The TP1 console is on stdin, as on a board's UART0.
#
#     micropython -X heapsize=222k hil_tests/mp_silent_link_board.py REPO FIFO main.py-options...
#
# Used by test_link_down.py: the main loop must keep sampling, signing, storing
# and answering the console while the link's opening waits for an answer.

import sys

sys.path.insert(0, sys.argv[1] + "/.cache/mpy-%d" % sys.implementation._mpy)  # noqa: UP031
_FIFO = sys.argv[2]
del sys.argv[1:3]

from firmware import app  # noqa: E402
from firmware.board import unix  # noqa: E402
from firmware.seriallink import SerialLink  # noqa: E402


class SilentLinkBoard(unix.Board):
    def open_socket(self, host, port, tls=False, ca_file=None):
        rx = open(_FIFO, "rb")  # noqa: SIM115 - the link keeps it; the host never writes
        tx = open(self.root + "/link.out", "ab")  # noqa: SIM115 - the link keeps it
        return SerialLink(rx, tx, host, port, wait=tls)


def main():
    opts = unix.parse_args(sys.argv[1:])
    return app.main(SilentLinkBoard(opts), opts.get("--max-readings", -1), False)


code = main()
if code:
    sys.exit(code)
