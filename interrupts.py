"""Ctrl-C and SIGTERM for memn2n.py and a3c.py: both save what was trained and exit cleanly.

The handlers are installed explicitly: a background job of a non-interactive shell starts with
SIGINT ignored, and SIGTERM would otherwise kill without saving. The first signal raises
KeyboardInterrupt in the main thread. Inside held() it is only noted (`received`): a save finishes
first, and a training loop that asks for it stops at its next batch, a point where stopping is safe;
raised at any bytecode, a KeyboardInterrupt can land in a TensorFlow object's __del__ and be
dropped. After ignore(), later signals do nothing (a second Ctrl-C must not break a final save)."""
import contextlib
import signal

SIGNALS_HANDLED = (signal.SIGINT, signal.SIGTERM)


class Signals:
    def __init__(self):
        self.received, self.holding, self.active, self.previous = None, False, True, {}

    def handle(self, signum, frame):
        first = self.received is None
        self.received = self.received or signum
        if first and self.active and not self.holding:
            raise KeyboardInterrupt

    def install(self, active=True):
        """Take over SIGINT and SIGTERM; `active=False` only notes them (a worker process between tasks)."""
        self.received, self.holding, self.active = None, False, active
        self.previous = {s: signal.signal(s, self.handle) for s in SIGNALS_HANDLED}

    def uninstall(self):
        """Give back the handlers install() replaced (an in-process caller gets its own back)."""
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous, self.received = {}, None

    def ignore(self):
        """From here on both signals are ignored (uninstall() still gives the old handlers back)."""
        for s in SIGNALS_HANDLED:
            signal.signal(s, signal.SIG_IGN)

    @contextlib.contextmanager
    def held(self):
        holding, self.holding = self.holding, True
        try:
            yield
        finally:
            self.holding = holding

    def exit_status(self):
        return 128 + (self.received or signal.SIGINT)             # 130 for SIGINT, 143 for SIGTERM


SIGNALS = Signals()  # the process's own: memn2n.py, its task processes and its model folders share it
