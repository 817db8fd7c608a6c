"""A hostile board's status message cannot stop the gateway's ingest.

Status messages (`terrapin/v1/<address>/status`, retained, unsigned) are JSON the
gateway parses in paho's network thread. `[[[[...` nested past the recursion
limit made json.loads raise RecursionError, which `_parse_status` did not catch
(found by `terrapin fuzz --parser status`): the exception left paho's callback,
its network thread died, and no board's readings were received or acked again.
Retained, the message did the same after every restart.
"""

from __future__ import annotations

from terrapin.tools.devkit.gatewayproc import GatewayProcess


def test_a_status_nested_too_deep_does_not_stop_ingest(gw_home, gw_broker, gw_board):
    gw = GatewayProcess(gw_home, settle=0.3)
    try:
        gw.start()
        gw_board.publish(gw_board.envelope(1), 1)
        assert gw_board.wait_settled([1], 15), gw.log_tail()
        attack = b"[" * 2000  # under the 4096 bytes the gateway reads of a status
        info = gw_board.client.publish(f"terrapin/v1/{gw_board.hex}/status", attack, qos=1)
        info.wait_for_publish(5)
        for seq in (2, 3):
            gw_board.publish(gw_board.envelope(seq), seq)
        assert gw_board.wait_settled([2, 3], 15), f"ingest stopped:\n{gw.log_tail()}"
        assert gw.running() and gw.status()["board_status"][gw_board.hex]["state"] == "unreadable"
    finally:
        gw.stop()
