"""a3c.py's threads seen from the main thread: started, watched, stopped, their errors caught.

The main thread only waits, logs and saves; Ctrl-C (KeyboardInterrupt, interrupts.Signals) stops
the threads at the end of their rollout so that the checkpoint after it holds a finished update."""
import contextlib
import sys
import threading
import time

from cli import UserError, first_line


def run_threads(learners, others, stop, interval, every, signals, save, status=None, started=None):
    """Start `learners` and `others`, then started(); call each of `every` every `interval` s until
    the learners end (they reach T_max, or `stop` is set). Returns whether Ctrl-C stopped them.
    A thread that raises sets `stop`: the others finish their rollout, save() keeps what they
    learnt, and a UserError ends the run: one line naming the thread and its error, status
    `status(exception)` (default 1)."""
    errors = []

    def on_error(e):
        what = str(e.exc_value) if isinstance(e.exc_value, UserError) else \
            f"{e.thread.name} failed: {first_line(e.exc_value)}"  # a UserError names its own cause
        errors.append((what, status(e.exc_value) if status else 1))
        stop.set()

    threading.excepthook, excepthook = on_error, threading.excepthook
    interrupted = False
    for t in learners + others:
        t.start()
    if started:
        started()
    try:
        try:
            while any(t.is_alive() for t in learners):
                wait_for(learners, stop, interval)
                if stop.is_set():                          # done, or a thread failed: the others finish their rollout
                    for t in learners:
                        t.join()
                for f in every:
                    f()
        except KeyboardInterrupt:
            interrupted = True
            signals.ignore()                               # a second Ctrl-C must not break the final save
            print("interrupted: saving checkpoint", file=sys.stderr, flush=True)
            stop.set()
            for t in learners:
                t.join()
        stop.set()
        for t in others:
            t.join()
    finally:
        threading.excepthook = excepthook
    if errors:
        signals.ignore()                                   # nothing may break the save
        save()
        raise UserError(*errors[0])                        # one line, status 1 (or status(e))
    return interrupted


def wait_for(learners, stop, interval, poll=0.1):
    """Up to `interval` s, but no longer than the learners run: a run that reaches T_max mid-interval
    ends then, not at the next log line (a 300-step run took 5 s, the default --log-interval)."""
    deadline = time.monotonic() + interval
    while not stop.is_set() and any(t.is_alive() for t in learners) and time.monotonic() < deadline:
        stop.wait(min(poll, max(0.0, deadline - time.monotonic())))


@contextlib.contextmanager
def ctrl_c_skips():
    """Ctrl-C (or SIGTERM) in the block skips the rest of it, not what comes after (the final save)."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted: saving checkpoint", file=sys.stderr, flush=True)
