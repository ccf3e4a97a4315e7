"""Third-party chatter goes to the run's log, the harness's own lines to the terminal."""

import subprocess
import sys
import textwrap

from testbed.store import REPO_ROOT


def test_fd_and_python_level_chatter_go_to_the_log_and_say_to_the_console(tmp_path):
    log = tmp_path / "logs" / "host.log"
    script = textwrap.dedent(f"""
        import os, sys
        from common.console import captured, say
        from common.progress import Progress
        with captured(__import__("pathlib").Path({str(log)!r})):
            os.write(1, b"fully_quantize: 0, inference_type: 6\\n")   # C++ writing to the fd
            os.write(2, b"oneDNN banner\\n")
            print("Saved artifact at '/tmp/x'")                       # Python-level chatter
            print("a warning", file=sys.stderr)
            say("engine [1/2] repetition 1/1: host")
            with Progress("build").step("compile"):
                pass
        print("after the capture")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    console = done.stdout + done.stderr
    assert "engine [1/2] repetition 1/1: host" in console and "after the capture" in console
    assert "compile" in console
    for chatter in ("fully_quantize", "oneDNN banner", "Saved artifact", "a warning"):
        assert chatter not in console
        assert chatter in log.read_text()


def test_a_log_handler_created_under_one_capture_still_logs_in_the_next(tmp_path):
    """TensorFlow's logger handler is born in the first run's capture; the second run's warning
    must land in the second run's log, not crash on the first log's closed file."""
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    script = textwrap.dedent(f"""
        import logging, pathlib, sys
        from common.console import captured
        logger = logging.getLogger("converter")
        with captured(pathlib.Path({str(first)!r})):
            logger.addHandler(logging.StreamHandler(sys.stderr))
            logger.warning("first warning")
        with captured(pathlib.Path({str(second)!r})):
            logger.warning("second warning")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "first warning" in first.read_text()
    assert "second warning" in second.read_text()
    assert "Logging error" not in first.read_text() + second.read_text() + done.stderr
