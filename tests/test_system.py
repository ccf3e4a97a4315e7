import pytest

from common import system


def test_present_commands_and_files_need_nothing(tmp_path):
    header = tmp_path / "present.h"
    header.write_text("")
    assert system.ensure_tools({"sh": "dash", str(header): "some-dev"}) == []


def test_missing_tool_without_root_names_the_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    with pytest.raises(system.MissingToolError, match="apt-get install -y --no-install-recommends lf-missing-dev"):
        system.ensure_tools({str(tmp_path / "absent.h"): "lf-missing-dev"})
