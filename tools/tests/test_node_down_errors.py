"""A chain node that does not answer is one sentence for `rewards compute` (and
publish and claim, same wrapper) and `device bind --rpc`, never urllib3's paragraph
or a traceback."""

from __future__ import annotations

from terrapin.gateway.chain.node import ChainError
from terrapin.gateway.home import init_home
from terrapin.tools.board.provision import chain_binding
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.broker import free_port

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ANCHOR = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
OWNER = "0x" + "ab" * 20


def _sentence(url: str) -> str:
    return f"the chain node at {url} does not answer (connection refused)"


def test_rewards_compute_with_the_node_down_says_one_sentence(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    init_home(tmp_path, mqtt_port=free_port(), api_port=free_port())
    config = tmp_path / "gateway.toml"
    with config.open("a") as f:
        f.write(f'\n[chain]\nnetwork = "{dead}"\nregistry = "{REGISTRY}"\nanchor = "{ANCHOR}"\n')
        f.write(f'\n[rewards]\ncontract = "{ANCHOR}"\n')
    capsys.readouterr()
    for args in (["rewards", "compute", "--epoch", "1"], ["rewards", "compute", "--epoch", "0"]):
        code = main([*args, "--config", str(config)])
        err = capsys.readouterr().err
        assert code == 1, (args, err)
        lines = err.strip().splitlines()
        assert lines[0] == f"error: {_sentence(dead)}", (args, err)
        assert lines[1].startswith("hint: is the node running") and len(lines) == 2, err
        assert "Traceback" not in err and "HTTPConnectionPool" not in err


def test_device_bind_to_a_dead_rpc_says_one_sentence():
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        chain_binding(OWNER, REGISTRY, dead, "SOME_KEY_ENV")
    except ChainError as exc:
        assert str(exc) == _sentence(dead)
        assert "Max retries" not in str(exc) and exc.__cause__ is None
    else:
        raise AssertionError("chain_binding reached a node that is not there")


def test_rewards_publish_and_claim_with_the_node_down_say_one_sentence(
    tmp_path, capsys, monkeypatch
):
    """A distribution is on disk and the keys are set; only the node is missing. publish
    used to say "publishing epoch 1 would revert: HTTPConnectionPool(...)"."""
    from terrapin.gateway.rewards import distribution
    from terrapin.gateway.rewards import tables as rewards_tables

    dead = f"http://127.0.0.1:{free_port()}"
    init_home(tmp_path, mqtt_port=free_port(), api_port=free_port())
    config = tmp_path / "gateway.toml"
    with config.open("a") as f:
        f.write(f'\n[chain]\nnetwork = "{dead}"\nregistry = "{REGISTRY}"\nanchor = "{ANCHOR}"\n')
        f.write(f'\n[rewards]\ncontract = "{ANCHOR}"\n')
    out = tmp_path / "rewards"
    dist = distribution.build(1, {OWNER: 10**18})
    distribution.write(dist, rewards_tables.distribution_path(out, 1))
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", "0x" + "11" * 32)
    monkeypatch.setenv("TERRAPIN_OWNER_KEY", "0x" + "22" * 32)
    capsys.readouterr()
    for args in (
        ["rewards", "publish", "--epoch", "1"],
        ["rewards", "claim", "--owner", OWNER],
        ["rewards", "claim", "--owner", OWNER, "--epoch", "1"],
    ):
        code = main([*args, "--config", str(config), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 1, (args, err)
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]
        assert lines[0] == f"error: {_sentence(dead)}", (args, err)
        assert lines[1].startswith("hint: is the node running") and len(lines) == 2, err
        assert "Traceback" not in err and "HTTPConnectionPool" not in err and "revert" not in err
