"""Command-line machinery shared by memn2n.py and a3c.py: one-line errors, warnings, and times for ETAs.

A user's mistake (a bad flag, a missing file, a damaged checkpoint) is one line on stderr,
`<script>: error: <what is wrong>; <how to fix it>`, and exit status 2: never a traceback."""
import argparse
import sys


class UserError(Exception):
    """Printed as one line, exit status `code`: by default 2, bad input that the user can fix; also what
    stops a run for good (a failed final save, a failed actor-learner thread), with its own status."""

    def __init__(self, message, code=2):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse whose own complaints are one UserError line too, with no usage block."""

    def __init__(self, *args, error_suffix="", **kw):
        super().__init__(*args, **kw)
        self.error_suffix = error_suffix

    def error(self, message):
        raise UserError(f"{message}{self.error_suffix}")


def error(prog, message):
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def warn(prog, message):
    print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)


def run_main(prog, signals, body, on_interrupt, cleanup=None):
    """A script's main around body(): Ctrl-C and SIGTERM handled by `signals` (interrupts.Signals) while it
    runs, a UserError printed as one line with its exit status, a KeyboardInterrupt answered by
    on_interrupt(e) (which says what was saved and returns the exit status), then cleanup(), and the
    signal handlers the caller had are given back."""
    signals.install()
    try:
        return body()
    except UserError as e:
        error(prog, e)
        return e.code
    except KeyboardInterrupt as e:
        return on_interrupt(e)
    finally:
        signals.uninstall()
        if cleanup:
            cleanup()


def first_line(e):
    """'Type: message' on one line. TensorFlow's errors start with 'Graph execution error:', then the
    node and where it was defined; the line that says what went wrong comes after those."""
    text = [ln for ln in str(e).strip().splitlines() if any(c.isalnum() for c in ln)]  # no "=====" rules
    if text and text[0].startswith("Graph execution error"):
        header = (" ", "\t", "Graph execution", "Detected at", "Node:", "From /job:")
        text = [ln for ln in text if not ln.startswith(header)] or text
    return f"{type(e).__name__}: {text[0][:240]}" if text else type(e).__name__


def fmt_time(s):
    """Seconds as 1h02m or 3m05s, for ETAs; '?' when unknown."""
    if s != s or s == float("inf"):
        return "?"
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
