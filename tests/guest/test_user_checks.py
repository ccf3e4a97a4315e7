"""The user-space deployment's own check: its agent must serve to the end, unless a fault killed
it (an agent that quit once left 64 flows at their last rates while the run still counted)."""

from guest.net.schemes.user import User


def _user(alive: bool | None, faults: list[dict] = ()) -> User:
    scheme = User()
    scheme.agent_alive_at_end = alive
    scheme.agent_exit = {"exit": 4, "stderr": "lf_agent: receiving queries failed"}
    scheme.faults = list(faults)
    return scheme


def test_an_agent_that_quit_fails_the_check_with_its_exit():
    [(name, ok, detail)] = _user(False).checks()
    assert name == "the agent served to the end" and not ok
    assert "exit 4" in detail and "receiving queries failed" in detail


def test_an_agent_still_serving_passes():
    [(_, ok, _)] = _user(True).checks()
    assert ok


def test_no_check_when_a_fault_killed_the_agent_or_the_job_never_got_to_results():
    assert _user(False, [{"fault": "agent killed"}]).checks() == []
    assert _user(None).checks() == []
