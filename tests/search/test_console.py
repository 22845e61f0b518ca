"""What the user watches: the live view on a terminal, plain lines in a log file, no library noise."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
from types import SimpleNamespace

from search.console import STATUS_EVERY_S, LiveConsole, guard_terminal

from .conftest import REPO, TINY_SPACE, cli, cli_env

KEYS = ["lr", "cycle_weight", "batch_size"]
BASELINE = {"lr": 1e-4, "cycle_weight": 0.01, "batch_size": 64}
ESCAPE = re.compile(r"\x1b\[")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trial(trial_id: str, config: dict, last_result: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={**config, "epochs": 3}, last_result=last_result or {}, path=None)


def drive(console: LiveConsole, clock: FakeClock) -> None:
    """A baseline trial completing 3 epochs, a better one pruned after 1, a third one failing."""
    console.setup()
    base = trial("base0001", BASELINE)
    other = trial("othr0002", {"lr": 3e-3, "cycle_weight": 0.05, "batch_size": 16})
    broken = trial("brkn0003", {"lr": 2e-2, "cycle_weight": 0.2, "batch_size": 32})
    console.on_trial_start(0, [], base)
    console.on_trial_start(0, [], other)
    for epoch, (a, b) in enumerate([(0.40, 0.70), (0.45, None), (0.42, None)], start=1):
        clock.now += 10
        console.on_trial_result(0, [], base, {"epoch": epoch, "val_acc": a})
        if b is not None:
            console.on_trial_result(0, [], other, {"epoch": epoch, "val_acc": b})
            other.last_result = {"epoch": epoch, "val_acc": b, "nsm_status": "running"}
            console.on_trial_complete(0, [], other)  # ASHA stopped it after epoch 1
            console.on_trial_start(0, [], broken)
            console.on_trial_error(0, [], broken)
        console.on_step_begin(0, [])
    base.last_result = {"epoch": 3, "val_acc": 0.42, "nsm_status": "running"}
    console.on_trial_complete(0, [], base)
    clock.now += STATUS_EVERY_S
    console.on_step_begin(0, [])
    console.on_experiment_end([])


def test_plain_lines_when_not_a_terminal():
    clock, out = FakeClock(), io.StringIO()
    console = LiveConsole("exp", "val_acc", 4, 3, KEYS, BASELINE, stream=out, tty=False, clock=clock)
    drive(console, clock)
    text = out.getvalue()
    assert "\r" not in text and not ESCAPE.search(text)
    lines = text.splitlines()
    assert any("trial base0001 started (baseline): lr=1.00e-04 cycle_weight=0.0100 batch_size=64" in line for line in lines)
    assert any("trial othr0002 pruned at epoch 1: best val_acc 0.7000" in line for line in lines)
    assert any("trial base0001 completed 3 epochs: best val_acc 0.4500" in line for line in lines)
    assert any("trial brkn0003 FAILED" in line for line in lines)
    assert any("new best: val_acc 0.7000 at epoch 1, trial othr0002" in line for line in lines)
    # The periodic status line: finished / budget, ETA, best and baseline.
    assert lines[-1].endswith("3/4 trials finished, 0 running; elapsed 1:00, ETA 0:20; best val_acc 0.7000 (othr0002); "
                              "baseline val_acc 0.4500")
    assert len(lines) < 3 * 4  # trials x epochs: at most a few lines per trial-epoch


def test_terminal_block_is_redrawn_in_place():
    clock, out = FakeClock(), io.StringIO()
    console = LiveConsole("exp", "val_acc", 4, 3, KEYS, BASELINE, stream=out, tty=True, clock=clock, width=200)
    drive(console, clock)
    text = out.getvalue()
    final = console.render(clock.now, width=200)
    # Each redraw first moves up over the block drawn before and clears it: one screen, updated.
    assert re.search(r"\x1b\[\d+F\x1b\[J", text)
    assert text.endswith("".join(f"{line}\n" for line in final))
    assert "started" not in text  # no per-event lines on a terminal, except failures
    assert "trial brkn0003 FAILED" in text
    assert final[0] == "exp: 3/4 trials finished, 0 running; elapsed 1:00, ETA 0:20"
    assert final[1].startswith("  best     val_acc 0.7000 at epoch 1  othr0002  lr=3.00e-03 cycle_weight=0.0500 batch_size=16")
    assert final[2].startswith("  baseline val_acc 0.4500  base0001  lr=1.00e-04")
    table = "\n".join(final[3:])
    assert re.search(r"base0001 .* 3/3 +0\.4200 +0\.4500  completed \*", table)
    assert re.search(r"othr0002 .* 1/3 +0\.7000 +0\.7000  pruned", table)
    assert re.search(r"brkn0003 .* 0/3 +nan +nan  error", table)
    assert all(len(line) <= 60 for line in console.render(clock.now, width=60))


def test_foreign_output_erases_the_block_before_it_is_written(monkeypatch):
    """A worker's log line or an error Ray logs is never overwritten by the next redraw."""
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Tty()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    clock = FakeClock()
    console = LiveConsole("exp", "val_acc", 2, 3, KEYS, BASELINE, clock=clock)
    with guard_terminal(True):
        console.setup()
        console.on_trial_start(0, [], trial("base0001", BASELINE))
        drawn = console.render(clock.now)
        print("(train_nsm pid=1) a worker says something", file=sys.stderr)
        clock.now += 5
        console.on_step_begin(0, [])
    text = screen.getvalue()
    block = "".join(f"{line}\n" for line in drawn)
    erase = f"\x1b[{len(drawn)}F\x1b[J"
    assert f"{block}{erase}(train_nsm pid=1) a worker says something\n" in text
    assert text.count(erase) == 1  # the redraw after it starts below the foreign line, erasing nothing
    assert sys.stdout is screen


def test_the_live_view_on_a_pseudo_terminal(tmp_path):
    """A real terminal: the view detects it (isatty) and redraws with cursor movements, no carriage returns."""
    script = tmp_path / "view.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.search.test_console import FakeClock, drive, KEYS, BASELINE
        from search.console import LiveConsole
        clock = FakeClock()
        drive(LiveConsole("exp", "val_acc", 4, 3, KEYS, BASELINE, clock=clock), clock)
    """))
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave, cwd=REPO)
    os.close(slave)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 0, output.decode(errors="replace")
    text = output.decode().replace("\r\n", "\n")  # the terminal itself turns \n into \r\n
    assert "\r" not in text
    assert re.search(r"\x1b\[\d+F\x1b\[J", text)
    assert "exp: 3/4 trials finished" in text and "  baseline val_acc 0.4500" in text


def test_a_redirected_search_prints_plain_lines_without_library_noise(tmp_path):
    """The CLI with stdout and stderr in a file: events and the summary, every failed trial named, no noise."""
    space = tmp_path / "space.yaml"
    # A device choice that fails on this CPU machine makes a trial that errors (after its retries).
    space.write_text(textwrap.dedent(TINY_SPACE) + "  device: {type: choice, values: [auto, cuda]}\n")
    log = tmp_path / "search.log"
    with log.open("w") as handle:
        code = subprocess.run(
            cli("--domain", "planning", "--space", str(space), "--storage-path", str(tmp_path), "--name", "quiet",
                "--num-samples", "3", "--max-epochs", "2", "--cpus-per-trial", "1", "--gpus-per-trial", "0",
                "--wandb", "offline"),
            stdout=handle, stderr=subprocess.STDOUT, env=cli_env(), cwd=tmp_path, timeout=600).returncode
    text = log.read_text()
    assert code == 0, text
    summary = json.loads((tmp_path / "quiet" / "summary.json").read_text())
    assert "\r" not in text and not ESCAPE.search(text.replace("\x1b[36m", "").replace("\x1b[39m", "").replace("\x1b[0m", ""))
    for noise in ("╭", "│", "+---", "Trial status:", "reinit", "Checkpoint successfully created", "core_worker",
                  "SystemExit", "A new study created", "on_trial_result operation took", "Token authentication"):
        assert noise not in text, noise
    assert "summary: " in text and "ranked by val_acc" in text  # the final summary
    failed = [row["trial_id"] for row in summary["trials"] if row["status"] == "error"]
    assert failed, "the space was meant to make one trial fail"
    for trial_id in failed:
        assert f"trial {trial_id} FAILED" in text
    # Apart from the failed trials' tracebacks (real errors, shown in full), a few lines per trial-epoch.
    plain = [line for line in _without_tracebacks(text.splitlines())]
    trial_epochs = sum(max(1, row["epochs"]) for row in summary["trials"])
    assert len(plain) < 3 * trial_epochs + 25, "\n".join(plain)  # + the fixed header and summary table


def _without_tracebacks(lines: list[str]) -> list[str]:
    kept, inside = [], False
    for line in lines:
        if "ERROR tune_controller" in line:
            inside = True
            continue
        if inside and (line.startswith(("Traceback", " ", "ray.exceptions", "nsm.errors")) or not line):
            continue
        inside = False
        kept.append(line)
    return kept


def test_quiet_prints_only_the_summary(tmp_path, tiny_space, ray_session, capsys):
    from search.run import main

    code = main(["-q", "--domain", "planning", "--space", str(tiny_space), "--storage-path", str(tmp_path),
                 "--name", "q", "--num-samples", "2", "--max-epochs", "1", "--cpus-per-trial", "1",
                 "--gpus-per-trial", "0", "--wandb", "disabled"])
    assert code == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    # (The session's Ray declares a logical GPU, so the CPU fallback, which quiet still says, is not said here.)
    assert lines[0].startswith("q: planning, 2 trials") and lines[-1].startswith("summary: ")
    assert not any(line.startswith(("[", "budget:", "starting")) for line in lines)
