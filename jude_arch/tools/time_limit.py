"""Run a command under a time limit and, when the limit passes, leave the Python stacks of where it hangs.

`run_with_limit` starts the command in a session of its own, with PYTHONFAULTHANDLER=1 and PYTHONUNBUFFERED=1 in
its environment (inherited by every Python process below it), and copies its output into a log line by line as
it comes. When the limit passes it
1. sends SIGABRT to every process below the command, deepest first: Python's faulthandler writes the stack of
   every thread of each to its stderr, which its parent is still reading (the tests' subprocess helper puts the
   output's tail, stacks included, into the failure it reports);
2. gives the command GRACE_S to report that, then sends SIGABRT to the command itself (its own stacks, into the
   log);
3. sends SIGKILL to all of them and to what is left of the command's session.
Core files are switched off for the processes it starts (`no_core_files`), so SIGABRT leaves none behind.
"""
import os
import resource
import signal
import subprocess
import threading
import time
from collections import deque

GRACE_S = 2.0
TAIL_LINES = 400


def no_core_files():
    """Switch core files off for this process and the processes it starts (SIGABRT would write one each)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def process_age_s():
    """Seconds since this process started, from /proc (0 where there is none): a budget counts the
    interpreter's start-up and imports too."""
    try:
        with open('/proc/self/stat') as f:
            start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
        with open('/proc/uptime') as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf('SC_CLK_TCK'))


def descendants(pid):
    """PIDs of the processes below `pid`, parents before their children, from /proc ([] where there is none).
    It follows parenthood, not sessions: the tests start their subprocesses in sessions of their own."""
    children = {}
    try:
        entries = [entry for entry in os.listdir('/proc') if entry.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(f'/proc/{entry}/stat') as f:
                parent = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
        children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), ()):
            found.append(child)
            queue.append(child)
    return found


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:  # it ended meanwhile
        pass


def _wait(proc, seconds):
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def stop_with_stacks(proc, log):
    """Stacks of `proc` and the processes below it (SIGABRT, faulthandler), then SIGKILL (see the module
    docstring)."""
    below = descendants(proc.pid)
    log.write(f'--- time limit passed: Python stacks of process {proc.pid} and the {len(below)} below it follow '
              '(SIGABRT, faulthandler), then they are killed ---\n')
    for pid in reversed(below):
        _signal(pid, signal.SIGABRT)
    if below:
        _wait(proc, GRACE_S)
    if proc.poll() is None:
        _signal(proc.pid, signal.SIGABRT)
        _wait(proc, GRACE_S)
    for pid in [proc.pid, *below]:
        _signal(pid, signal.SIGKILL)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def run_with_limit(command, limit_s, log, env=None, cwd=None):
    """Run `command`, its output (stdout and stderr) written to `log` as it comes, for at most `limit_s` seconds.

    Args:
        command (list): the program and its arguments.
        limit_s (float): seconds before its stacks are dumped and it is killed.
        log (io.TextIOBase): where its output goes, line by line.
        env (dict | None): variables added to this process's environment.
        cwd (str | Path | None): its working folder.

    Returns:
        tuple[int, str, bool]: exit status (negative: the signal that ended it), the last TAIL_LINES lines of
        its output, and whether it ran out of time.
    """
    env = {**os.environ, **(env or {}), 'PYTHONFAULTHANDLER': '1', 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors='replace', env=env, cwd=cwd, start_new_session=True)
    tail = deque(maxlen=TAIL_LINES)

    def copy_output():
        for line in proc.stdout:
            log.write(line)
            tail.append(line)

    reader = threading.Thread(target=copy_output, daemon=True)
    reader.start()
    deadline = time.monotonic() + limit_s
    timed_out = False
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_with_stacks(proc, log)
    else:
        try:  # what it left running in its session would hold the output pipe open
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    reader.join(timeout=5)
    return proc.returncode, ''.join(tail), timed_out
