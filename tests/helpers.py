"""Helpers shared by the test files: running a script as a user would, reading its output, and
generated bAbI data."""
import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np

import memn2n

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the scripts' folder
BABI_DIR = os.environ.get("BABI_DIR")


def load_tool(name):
    """tools/NAME.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script, *args, env=None, timeout=600, quiet_tf=True):
    """Run one of the scripts as a user would; returns (exit code, stdout, stderr). quiet_tf=False: in the
    environment a new user has, without TF_CPP_MIN_LOG_LEVEL."""
    full_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    full_env.update(dict(TF_CPP_MIN_LOG_LEVEL="3") if quiet_tf else {}, **(env or {}))
    p = subprocess.run([sys.executable, os.path.join(HERE, script), *args], capture_output=True,
                       text=True, env=full_env, timeout=timeout, cwd=HERE)
    return p.returncode, p.stdout, p.stderr


TF_LOG = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} ")  # TF's import chatter


def assert_one_line_error(rc, err, *needles, status=2):
    assert rc == status, err
    assert "Traceback" not in err, err
    lines = [l for l in err.strip().splitlines() if l.strip() and not TF_LOG.match(l)]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def start_script(script, args, ignore_sigint=False):
    """One of the scripts in the background, its output piped, as a job scheduler or a background shell job
    starts it (SIGINT ignored there with ignore_sigint)."""
    pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([sys.executable, os.path.join(HERE, script), *map(str, args)], preexec_fn=pre,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


class Lines:
    """A process's stdout and stderr, each read by a thread (a full pipe cannot block it): until()
    waits for a line with a deadline, so a process that stops printing fails the test in a minute
    or two, with what it printed, instead of at pytest-timeout."""

    def __init__(self, p):
        self.q, self.seen, self.err = queue.Queue(), [], []
        threading.Thread(target=lambda: [self.q.put(ln) for ln in p.stdout] + [self.q.put(None)], daemon=True).start()
        self.err_reader = threading.Thread(target=lambda: self.err.extend(p.stderr), daemon=True)
        self.err_reader.start()

    def until(self, pred, timeout=120):
        deadline = time.time() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                raise AssertionError("no such line within %.0f s:\n%s" % (timeout, self.text[-3000:])) from None
            if line is None:
                raise AssertionError("the process ended first:\n" + self.text[-3000:])
            self.seen.append(line)
            if pred(line):
                return line

    def rest(self, p, timeout=120):
        """Wait for the process (at most `timeout` s); returns (all its stdout, all its stderr)."""
        p.wait(timeout)
        while (line := self.q.get(timeout=10)) is not None:
            self.seen.append(line)
        self.err_reader.join(10)
        return self.text, "".join(self.err)

    @property
    def text(self):
        return "".join(self.seen)


def memn2n_main(capsys, *args):
    """memn2n.main in this process (no TensorFlow import per call): (exit code, stdout, stderr).
    XLA is off unless asked for: its flags must be set before TensorFlow loads, which here it has."""
    argv = [str(a) for a in args] + ([] if "--xla" in args else ["--no-xla"])
    capsys.readouterr()
    rc = memn2n.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def a3c_main_ok(capsys, *argv):
    """a3c.main in this process (no TensorFlow start-up per call): exit 0, returns stdout."""
    import a3c
    assert a3c.main(list(argv)) == 0
    return capsys.readouterr().out


def result_of(out):
    line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def tree(path):
    """Every file under `path` with its bytes, to show that a refused run left them intact."""
    return {os.path.relpath(os.path.join(r, f), path): open(os.path.join(r, f), "rb").read()
            for r, _, files in os.walk(path) for f in files}


PEOPLE = ["mary", "john", "sandra", "daniel", "fred", "bill", "julie", "emma"]
PLACES = ["kitchen", "garden", "office", "hallway", "bedroom", "bathroom", "cellar", "garage"]


def write_task1_like(folder, n_stories, seed, name="qa1_single-supporting-fact"):
    """bAbI task 1 in its own format: 'X went to the Y.' ... 'Where is X?<TAB>Y<TAB>id'."""
    rng = np.random.RandomState(seed)
    for split, n in (("train", n_stories), ("test", n_stories // 2)):
        lines = []
        for _ in range(n):
            where, num = {}, 0
            for _ in range(5):
                for _ in range(2):
                    p, q = rng.choice(PEOPLE), rng.choice(PLACES)
                    num += 1
                    lines.append(f"{num} {p.capitalize()} went to the {q}.")
                    where[p] = (q, num)
                p = rng.choice(sorted(where))
                num += 1
                lines.append(f"{num} Where is {p.capitalize()}? \t{where[p][0]}\t{where[p][1]}")
        with open(os.path.join(folder, f"{name}_{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return str(folder)


TINY = ["--epochs", 2, "--ls-epochs", 1, "--batch-size", 16]
