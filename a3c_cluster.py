"""a3c.py's cluster mode: TensorFlow's parameter-server runtime (docs/cluster.md).

A ps holds theta, T and RMSProp's slots; each worker runs --threads actor-learner threads whose
local networks pull theta and push gradients over gRPC; worker 0, the chief, initialises, logs,
evaluates and saves. Here: the cluster flags, this process's server (join_cluster), the retry of
a step gRPC aborted, the watchdog for a worker gRPC left blocked, and the --workers launcher that
runs a ps and N workers on this machine and restarts them from the last checkpoint."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types

from a3c_cli import PROG, fill_dirs
from cli import UserError, error, first_line, warn
from interrupts import Signals
from tf_setup import quiet_stderr

RESTART = 3  # exit status of a worker that TF's gRPC runtime failed (stalled, or errors twice); --workers restarts


def add_flags(p):
    cl = p.add_argument_group("cluster mode (TensorFlow's parameter-server runtime; docs/cluster.md)")
    cl.add_argument("--workers", type=int, help="start a ps and N worker processes on localhost and run them")
    cl.add_argument("--ps-hosts", help="host:port[,host:port...] of the parameter servers")
    cl.add_argument("--worker-hosts", help="host:port,host:port... of the workers (worker 0 is the chief)")
    cl.add_argument("--job-name", choices=["ps", "worker"], help="what this process is")
    cl.add_argument("--task-index", type=int, help="this process's index within its job")
    cl.add_argument("--stall-timeout", type=float, default=300.0, help="seconds without an update before a "
                    "worker exits with status 3; --workers then restarts all from the last checkpoint "
                    "(default 300, 0 = never)")


def grpc_errors():
    """What TF's gRPC runtime raises for a passing failure of one step (docs/cluster.md: known problem)."""
    import tensorflow.compat.v1 as tf
    return tf.errors.AbortedError, tf.errors.CancelledError, tf.errors.UnavailableError


def retry_aborted(actor_learner, aborted_error):
    """Cluster mode: TensorFlow's gRPC runtime may abort or cancel one step (AbortedError and the
    like, `aborted_error`), a passing failure that its MonitoredSession retries too. The thread then
    runs `actor_learner` again from its start: the game in progress is dropped (the env starts a
    new one) and the thread's random generator restarts from its seed. The same again within
    5 minutes, or any other error, ends the thread."""
    def run(*args):
        last = -1e9
        while True:
            try:
                return actor_learner(*args)
            except aborted_error as e:
                if time.time() - last < 300:
                    raise
                last = time.time()
                warn(PROG, f"{threading.current_thread().name}: {first_line(e)}; its actor-learner starts over: "
                           f"a new game, its random generator from its seed")
    return run


def failure_status(exc):
    """A thread that gRPC failed again: the worker exits with RESTART, which --workers answers."""
    return RESTART if isinstance(exc, grpc_errors()) else 1


def stall_watchdog(shared, timeout, learners, who):
    """Cluster mode: TF 2.21's gRPC runtime can leave a worker's session.run calls blocked for good
    (docs/cluster.md: known problem). No update for `timeout` s while a learner thread is alive: one error line,
    and exit status RESTART (blocked threads cannot be joined); the --workers launcher then restarts."""
    seen, since = shared.T, time.time()
    while any(t.is_alive() for t in learners):             # also after a stop: they must finish their rollout
        time.sleep(1.0)
        if shared.T != seen:
            seen, since = shared.T, time.time()
        elif time.time() - since > timeout:
            error(PROG, f"{who}: no update for {timeout:g} s: stalled in TensorFlow's gRPC runtime (docs/cluster.md); "
                        f"continue with --resume")
            os._exit(RESTART)


def watchdog(args, task_index):
    """What starts a worker's stall_watchdog thread once its learners run: (shared, learners) -> starter."""
    def for_learners(shared, learners):
        def start():
            if args.stall_timeout:                         # TF's gRPC runtime can block for good (docs/cluster.md)
                threading.Thread(target=stall_watchdog, name="watchdog", daemon=True,
                                 args=(shared, args.stall_timeout, learners, f"worker {task_index}")).start()
        return start
    return for_learners


def parse_hosts(text, flag):
    hosts = [h.strip() for h in (text or "").split(",") if h.strip()]
    for h in hosts:
        host, _, port = h.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"{flag}: {h!r} is not host:port (e.g. 10.0.0.2:2222)")
    if not hosts:
        raise UserError(f"{flag} is required with --job-name (host:port[,host:port...])")
    return hosts


LOCAL = types.SimpleNamespace(chief=True, task_index=0, target="", config=None, worker_device=None, ps_device=None,
                              retry=lambda actor_learner: actor_learner, status=None,
                              watchdog=lambda shared, learners: None, role="")  # one process: its own chief


def join_cluster(args):
    """Start this process's TF server (--job-name, --task-index). A ps serves until its process ends
    (TF has no shutdown); a worker gets what a3c.main needs to place and run its graph. Without
    --job-name: LOCAL, one process that is its own chief (no server, no devices, no retries)."""
    import tensorflow.compat.v1 as tf
    if not args.job_name:
        return LOCAL
    hosts = {"ps": parse_hosts(args.ps_hosts, "--ps-hosts"),
             "worker": parse_hosts(args.worker_hosts, "--worker-hosts")}
    if args.task_index is None or not 0 <= args.task_index < len(hosts[args.job_name]):
        raise UserError(f"--task-index must be 0..{len(hosts[args.job_name]) - 1} for --job-name {args.job_name} "
                        f"(got {args.task_index})")
    me = f"/job:{args.job_name}/task:{args.task_index}"
    # Without device filters a worker waits for every other worker, and the ps dials workers that are not up.
    config = tf.ConfigProto(device_filters=["/job:ps"] if args.job_name == "ps" else ["/job:ps", me])
    try:
        with quiet_stderr():                               # "failed call to cuInit" on machines without a GPU
            server = tf.distribute.Server(tf.train.ClusterSpec(hosts), args.job_name, args.task_index, config=config)
    except tf.errors.OpError as e:                         # e.g. the port is taken
        where = hosts[args.job_name][args.task_index]
        raise UserError(f"cannot start this {args.job_name}'s server at {where}: {first_line(e)}") from None
    if args.job_name == "ps":
        while True:
            time.sleep(3600)
    return types.SimpleNamespace(chief=args.task_index == 0, task_index=args.task_index, target=server.target,
                                 config=config, worker_device=me,  # theta, T, slots on the ps (round-robin):
                                 ps_device=tf.train.replica_device_setter(len(hosts["ps"]), worker_device=me),
                                 retry=lambda f: retry_aborted(f, grpc_errors()), status=failure_status,
                                 watchdog=watchdog(args, args.task_index),
                                 role="" if args.task_index == 0 else f"worker={args.task_index} ")  # RESULT's


def launch(args, argv, script):
    """--workers N: this machine runs the whole cluster, script = a3c.py."""
    if args.job_name or args.ps_hosts or args.worker_hosts:
        raise UserError("--workers launches its own cluster on this machine; drop --job-name/--ps-hosts/--worker-hosts")
    fill_dirs(args)                                        # the same dirs for every worker and every restart
    argv = [*(sys.argv[1:] if argv is None else argv), "--checkpoint-dir", args.checkpoint_dir, "--logdir", args.logdir]
    return launch_local(os.path.abspath(script), argv, args.workers, args.checkpoint_dir)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _strip(argv, flag):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def _die_with_parent():
    try:  # Linux: children die with the launcher even if it is killed with SIGKILL (no orphans)
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def launch_local(script, argv, n_workers, checkpoint_dir=None, restarts=5):
    """--workers N: a ps and N workers on free localhost ports, logs prefixed, all stopped together.
    The ps has no shutdown: it runs until this launcher kills it, after the chief's last save.
    A worker that TF's gRPC runtime failed (exit status RESTART) makes it restart them all from the
    chief's last checkpoint (--resume), up to `restarts` times."""
    for attempt in range(restarts + 1):
        failed, restart, chief, result = _run_cluster(script, argv, n_workers)
        can_resume = checkpoint_dir and os.path.exists(os.path.join(checkpoint_dir, "latest.json"))
        if not (restart and can_resume and attempt < restarts and failed != "interrupted"):
            break
        warn(PROG, f"{failed}; restarting the cluster from the last checkpoint ({attempt + 1} of {restarts})")
        argv = [a for a in argv if a not in ("--resume", "--overwrite")] + ["--resume"]
    if failed == "interrupted":
        saved = "the chief saved a checkpoint" if chief.returncode == 0 else \
            f"the chief exited with status {chief.returncode}: see its log above for its checkpoint"
        print(f"interrupted: {saved}", file=sys.stderr, flush=True)
        return 0
    if failed:
        raise UserError(failed, 1)
    if result:
        print(result[-1], flush=True)                      # the chief's RESULT line, last
    return 0


def _run_cluster(script, argv, n_workers):
    """Start a ps and n_workers workers, wait until the workers end, one fails, or Ctrl-C; stop them all.
    Returns (what failed or None, whether it asked for a restart, the chief's process, its RESULT lines)."""
    signals = Signals()                                    # a note, not KeyboardInterrupt, which could strike while
    signals.install(active=False)                          # the processes or their log readers are being started
    ps_port, *worker_ports = free_ports(n_workers + 1)
    common = [sys.executable, script, *_strip(argv, "--workers"), "--ps-hosts", f"localhost:{ps_port}",
              "--worker-hosts", ",".join(f"localhost:{p}" for p in worker_ports)]
    names = ["ps"] + [f"worker {i}" for i in range(n_workers)]
    procs, result = {}, []
    for name in names:                                     # own session: the terminal's Ctrl-C reaches us only
        job, i = ("ps", 0) if name == "ps" else ("worker", int(name.split()[1]))
        procs[name] = subprocess.Popen(common + ["--job-name", job, "--task-index", str(i)], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                       preexec_fn=_die_with_parent)
    last_line = {n: "" for n in names}

    def stream(name):
        for line in procs[name].stdout:
            if line.startswith("RESULT ") and name == "worker 0":
                result.append(line.rstrip("\n"))
            if line.strip():
                last_line[name] = line.strip()
            print(f"[{name}] {line}", end="", flush=True)

    readers = [threading.Thread(target=stream, args=(n,), daemon=True) for n in names]
    for r in readers:
        r.start()
    workers = [procs[n] for n in names[1:]]

    def first_failure():                                   # (what, whether it asks for a restart), or None
        for name in names:
            code = procs[name].poll()
            if code not in (None, 0) or (name == "ps" and code is not None):
                time.sleep(0.2)                            # let its reader print its last line
                return f"{name} exited with status {code}: {last_line[name][:200]}", code == RESTART

    failure = None
    while not failure and any(p.poll() is None for p in workers) and not signals.received:
        time.sleep(0.2)
        failure = first_failure()
    failed, restart = failure or first_failure() or (None, False)
    if signals.received:
        failed = "interrupted"
    signals.ignore()                                       # a second Ctrl-C must not kill the chief mid-save
    for p in workers:                                      # the chief saves a checkpoint on SIGTERM
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 120
    for p in workers:
        try:
            p.wait(max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    procs["ps"].kill()
    procs["ps"].wait()
    for r in readers:
        r.join(5)
    return failed, restart, workers[0], result
