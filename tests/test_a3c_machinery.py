"""a3c.py's machinery: training runs end to end, checkpoints, interrupts, bad input, cluster mode."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import a3c
import a3c_cluster
import atari_env
import cli
from helpers import HERE, Lines, a3c_main_ok, assert_one_line_error, result_of, run_script, start_script

PAPER_ENV = "BreakoutNoFrameskip-v4"
result = result_of


def start_a3c(*argv, ignore_sigint=False):
    """a3c.py in the background (helpers.start_script), its output read by Lines."""
    p = start_script("a3c.py", argv, ignore_sigint)
    return p, Lines(p)




# ---------------------------------------------------------------- training runs
@pytest.mark.parametrize("env,flags", [("Breakout-v0", []), (PAPER_ENV, ["--lstm"])])
def test_breakout_smoke_checkpoint_resume_play(tmp_path, capsys, env, flags):
    ck = str(tmp_path / "ck")
    common = ["--env", env, "--threads", "2", "--eval-every", "0", "--checkpoint-dir", ck, "--logdir", str(tmp_path), *flags]
    out = a3c_main_ok(capsys, *common, "--max-steps", "600")
    path = "ALE skips 2-4 frames at random" if env == "Breakout-v0" else "AtariVectorEnv"
    assert path in out.splitlines()[0]
    res = result(out)
    assert res["env"] == env and 600 <= int(res["global_step"]) < 600 + 2 * 5
    out = a3c_main_ok(capsys, *common, "--max-steps", "900", "--resume")
    assert 900 <= int(result(out)["global_step"]) < 900 + 2 * 5   # continued from T, not from 0
    assert result(a3c_main_ok(capsys, "--play", ck, "--episodes", "1"))["episodes"] == "1"
    if flags:
        assert "add --lstm" in _main_error(capsys, *common[:-1], "--max-steps", "1000", "--resume")
    else:
        for bad in (str(tmp_path / "no" / "such" / "dir" / "x.mp4"), str(tmp_path / "x.unknown")):
            assert "--record cannot write" in _main_error(capsys, "--play", ck, "--record", bad)
        rc, _, err = run_script("a3c.py", "--play", ck, "--record", str(tmp_path / "x.unknown"))  # OpenCV's own
        assert rc == 2 and "Assertion failed" not in err and "--record cannot write" in err, err  # C++: hidden


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_checkpoint_and_exits(tmp_path, sig):
    """SIGINT and SIGTERM, also when started the way a background job is (SIGINT ignored)."""
    ck = tmp_path / "ck"
    p, lines = start_a3c("--env", "CartPole-v1", "--threads", "2", "--log-interval", "0.5", "--checkpoint-dir", str(ck),
                         "--logdir", str(tmp_path / "runs"), ignore_sigint=True)
    lines.until(lambda ln: ln.startswith("global_step=") and int(ln.split()[0].split("=")[1]) > 0)  # training
    p.send_signal(sig)
    out, err = lines.rest(p)
    assert p.returncode == 0, err[-2000:]
    assert "interrupted: saving checkpoint" in err and "Traceback" not in err
    with open(ck / "latest.json") as f:
        assert json.load(f)["T"] == int(result(out)["global_step"]) > 0


def test_ctrl_c_during_the_final_evaluation_still_saves(tmp_path, monkeypatch, capsys):
    """The final evaluation runs after training, in the main thread: Ctrl-C there skips it and saves."""
    real = a3c.play_games

    def play_games(*a, **kw):
        if threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt                        # as Ctrl-C or SIGTERM would, mid-game
        return real(*a, **kw)

    monkeypatch.setattr(a3c, "play_games", play_games)
    ck = tmp_path / "ck"
    rc = a3c.main(["--env", "CartPole-v1", "--threads", "1", "--max-steps", "300", "--eval-every", "100000",
                   "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb")])
    out, err = capsys.readouterr()
    assert rc == 0 and "interrupted: saving checkpoint" in err and "Traceback" not in err, err
    assert json.loads((ck / "latest.json").read_text())["T"] == int(result(out)["global_step"]) >= 300


def test_failing_thread_stops_the_run_with_its_error(tmp_path, monkeypatch, capsys):
    real = atari_env.make_env

    def make_env(env_id, seed=0, **kw):
        env = real(env_id, seed, **kw)
        if seed == 2:                                      # thread 1 (seed 1 + 1) fails at its 50th step
            step, n = env.step, [0]

            def failing(a):
                n[0] += 1
                if n[0] == 50:
                    raise ValueError("boom")
                return step(a)
            env.step = failing
        return env

    monkeypatch.setattr(atari_env, "make_env", make_env)
    rc = a3c.main(["--env", "CartPole-v1", "--threads", "2", "--max-steps", "100000", "--checkpoint-dir",
                   str(tmp_path / "ck"), "--logdir", str(tmp_path / "tb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == ["a3c.py: error: actor-learner 1 failed: ValueError: boom"]


# ---------------------------------------------------------------- bad input: one line, nothing destroyed
def _main_error(capsys, *argv):
    """a3c.main in this process: exit status 2 and exactly one error line, which it returns."""
    capsys.readouterr()
    rc = a3c.main(list(argv))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("a3c.py: error: "), (rc, err)
    return err[0]


@pytest.mark.parametrize("argv,needle", [
    (["--env", "Breakout-v9"], "did you mean"),
    (["--env", "Pendulum-v1"], "continuous action space"),
    (["--env", "FrozenLake-v1"], "observation space"),
    (["--env", "Blackjack-v1"], "observation space"),
    (["--env", "Breakout-v0", "--vector-env"], "fixed frameskip"),
    (["--env", "CartPole-v1", "--vector-env"], "Atari ids only"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--t-max", "0"], "--t-max must be >= 1"),
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--rms-eps", "0"], "--rms-eps must be > 0"),
    (["--eval-episodes", "0"], "--eval-episodes must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--lr", "-0.001"], "--lr must be > 0"),
    (["--gamma", "1.5"], "--gamma must be in [0, 1]"),
    (["--log-interval", "0"], "--log-interval must be >= 0.1"),
    (["--episodes", "0"], "--episodes must be >= 1"),
    (["--eval-every", "-5"], "--eval-every must be >= 0"),
    (["--stall-timeout", "-1"], "--stall-timeout must be >= 0"),
    (["--threads", "two"], "invalid int value"),
    (["--lstm", "--partial-run"], "--partial-run is for the feed-forward network"),
    (["--job-name", "worker", "--ps-hosts", "localhost:2222", "--worker-hosts", "localhost:2223"], "--task-index must be 0..0"),
    (["--job-name", "worker", "--task-index", "3", "--ps-hosts", "a:1", "--worker-hosts", "a:2,a:3"], "--task-index must be 0..1"),
    (["--job-name", "ps", "--task-index", "0", "--ps-hosts", "nohost", "--worker-hosts", "a:2"], "'nohost' is not host:port"),
    (["--job-name", "worker", "--task-index", "0", "--ps-hosts", "a:1"], "--worker-hosts is required"),
    (["--workers", "2", "--job-name", "ps"], "--workers launches its own cluster"),
])
def test_bad_flags_one_line(capsys, tmp_path, argv, needle):
    msg = _main_error(capsys, *argv, "--checkpoint-dir", str(tmp_path / "ck"), "--logdir", str(tmp_path / "tb"))
    assert needle in msg, msg
    assert not (tmp_path / "ck" / "latest.json").exists()


@pytest.mark.parametrize("flags, obs_shape, expected", [
    ([], (84, 84, 4), dict(lr=0.0007, rms_eps=0.00001, value_coef=0.5, beta=0.01, max_steps=80000000,
                           eval_every=250000, eval_episodes=10, gamma=0.99, t_max=5, max_grad_norm=40.0,
                           rms_decay=0.99, threads=8)),
    ([], (4,), dict(lr=0.003, rms_eps=0.1, value_coef=0.01, beta=0.02, max_steps=500000, eval_every=25000,
                    eval_episodes=20)),
    (["--lstm"], (4,), dict(lr=3e-3, value_coef=0.5, beta=0.01)),    # what the LSTM agent's runs used
    (["--lstm", "--beta", "0.03", "--value-coef", "0.2"], (4,), dict(value_coef=0.2, beta=0.03)),
    (["--beta", "0", "--lr", "1e-3"], (84, 84, 4), dict(beta=0.0, lr=1e-3, value_coef=0.5)),
])
def test_defaults_follow_the_network_and_flags_win(flags, obs_shape, expected):
    """The defaults README's flag table lists for each network; a flag given on the command line wins."""
    args = a3c.parse_args(["--env", "CartPole-v1", *flags])
    assert a3c.fill_defaults(args, obs_shape, a3c.DEFAULTS, a3c.MLP_LSTM) == ("cnn" if len(obs_shape) == 3 else "mlp")
    assert {k: getattr(args, k) for k in expected} == expected


def test_main_gives_back_the_signal_handlers_it_replaced(capsys):
    """main() installs its own SIGINT/SIGTERM handlers; an in-process caller gets its own back."""
    sigs = (signal.SIGINT, signal.SIGTERM)
    saved = [signal.getsignal(s) for s in sigs]
    try:
        for s in sigs:
            signal.signal(s, signal.SIG_DFL)               # not a3c.py's default_int_handler
        _main_error(capsys, "--threads", "0")
        assert [signal.getsignal(s) for s in sigs] == [signal.SIG_DFL] * 2
    finally:
        for s, handler in zip(sigs, saved):
            signal.signal(s, handler)


@pytest.fixture(scope="module")
def trained_ck(tmp_path_factory):
    """A 200-step CartPole checkpoint, trained once for the tests below, which each work on a copy."""
    ck = tmp_path_factory.mktemp("trained") / "ck"
    assert a3c.main(["--env", "CartPole-v1", "--threads", "1", "--max-steps", "200", "--eval-every", "0",
                     "--checkpoint-dir", str(ck), "--logdir", str(ck.parent / "tb")]) == 0
    return ck


def _copy_of(trained_ck, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(trained_ck, ck)
    return ck


def test_checkpoints_never_destroy_what_they_did_not_write(trained_ck, tmp_path, capsys):
    ck = _copy_of(trained_ck, tmp_path)
    run = ["--env", "CartPole-v1", "--threads", "1", "--max-steps", "200", "--eval-every", "0",
           "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb")]
    (ck / "step-999").mkdir()                               # somebody else's files in the same folder
    (ck / "step-999" / "thesis.txt").write_text("keep me")
    (ck / "notes.txt").write_text("keep me too")
    before = (ck / "latest.json").read_text()
    assert "--resume" in _main_error(capsys, *run)        # the same command again: refused, nothing touched
    assert (ck / "latest.json").read_text() == before
    assert a3c.main(run + ["--resume", "--max-steps", "400"]) == 0
    assert a3c.main(run + ["--overwrite"]) == 0
    assert (ck / "step-999" / "thesis.txt").read_text() == "keep me" and (ck / "notes.txt").exists()
    assert json.loads((ck / "latest.json").read_text())["T"] <= 205
    assert "is for CartPole-v1" in _main_error(capsys, "--play", str(ck), "--env", "Acrobot-v1")
    assert "is for CartPole-v1" in _main_error(capsys, *run[2:], "--env", "Acrobot-v1", "--resume")
    assert "holds a feed-forward network" in _main_error(capsys, *run, "--lstm", "--resume")
    assert "no checkpoint in" in _main_error(capsys, "--play", str(tmp_path / "nothing"))


@pytest.mark.parametrize("edit, needle", [
    (lambda latest: "{not json", "unreadable or incomplete"),
    (lambda latest: "", "unreadable or incomplete"),
    (lambda latest: '{"env": "CartPole-v1"}', "unreadable or incomplete"),
    (lambda latest: json.dumps(dict(latest, obs_shape=4)), "unreadable or incomplete"),   # was a TypeError
    (lambda latest: json.dumps(dict(latest, lstm="no")), "unreadable or incomplete"),
    (lambda latest: json.dumps(dict(latest, dir="../../etc")), "not a saved model inside"),
    (lambda latest: json.dumps(dict(latest, dir="notes")), "not a saved model inside"),
], ids=["not-json", "empty", "incomplete", "obs-shape-int", "lstm-str", "dir-outside", "dir-not-a-model"])
def test_broken_latest_json_fails_in_one_line(trained_ck, tmp_path, capsys, edit, needle):
    ck = _copy_of(trained_ck, tmp_path)
    (ck / "notes").mkdir()
    (ck / "latest.json").write_text(edit(json.loads((ck / "latest.json").read_text())))
    assert needle in _main_error(capsys, "--play", str(ck))


def test_truncated_model_fails_in_one_line(trained_ck, tmp_path, capsys):
    ck = _copy_of(trained_ck, tmp_path)
    model = ck / json.loads((ck / "latest.json").read_text())["dir"]
    data = [f for f in model.iterdir() if f.name.startswith("model.data")][0]
    data.write_bytes(data.read_bytes()[:100])
    assert "cannot restore" in _main_error(capsys, "--play", str(ck))


def test_unwritable_outputs_found_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "--checkpoint-dir" in _main_error(capsys, "--env", "CartPole-v1", "--checkpoint-dir", str(blocker / "ck"),
                                             "--logdir", str(tmp_path / "tb"))
    assert "--logdir" in _main_error(capsys, "--env", "CartPole-v1", "--checkpoint-dir", str(tmp_path / "ck"),
                                     "--logdir", str(blocker / "tb"))


def test_failed_saves_warn_and_never_kill_the_run(tmp_path):
    """The checkpoint folder disappears under a running job: periodic saves warn, training goes on,
    the final save says so and the run exits 1 (not SIGABRT)."""
    ck = tmp_path / "ck"
    p, lines = start_a3c("--env", "CartPole-v1", "--threads", "1", "--max-steps", "6000", "--eval-every", "0",
                         "--log-interval", "0.2", "--save-interval", "0.1", "--checkpoint-dir", str(ck),
                         "--logdir", str(tmp_path / "tb"))
    lines.until(lambda ln: ln.startswith("global_step="))
    ck.rename(tmp_path / "moved")
    ck.write_text("now a file")                             # saving under it fails
    lines.until(lambda ln: ln.startswith("global_step="))   # a periodic save is due at each log line from here
    lines.until(lambda ln: ln.startswith("global_step="))
    out, err = lines.rest(p)
    assert p.returncode == 1 and "Traceback" not in err, err[-2000:]
    warnings = [ln for ln in err.splitlines() if ln.startswith("a3c.py: warning: checkpoint not saved")]
    assert len(warnings) >= 2, err                          # periodic ones, not only the final save's
    assert err.strip().splitlines()[-1] == \
        "a3c.py: error: the final checkpoint could not be written (see the warning above)", err
    assert int(result(out)["global_step"]) >= 6000          # training finished regardless


# ---------------------------------------------------------------- cluster mode on localhost
def _alive(marker):
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0


def test_cluster_localhost_trains_checkpoints_and_leaves_nothing(tmp_path):
    ck = tmp_path / "ck"
    rc, out, err = run_script("a3c.py", "--env", "CartPole-v1", "--workers", "2", "--threads", "1", "--max-steps",
                              "3000", "--seed", "1", "--eval-every", "0", "--checkpoint-dir", str(ck), "--logdir",
                              str(tmp_path / "tb"), timeout=280)
    assert rc == 0, out[-2000:] + err[-2000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("RESULT env=CartPole-v1 global_step="), last
    assert int(result(out)["global_step"]) >= 3000
    w1 = [ln for ln in out.splitlines() if ln.startswith("[worker 1] RESULT worker=1 ")]
    assert w1 and int(w1[0].split("fps=")[1].split()[0]) > 0   # worker 1 stepped too: T grew from both
    assert json.loads((ck / "latest.json").read_text())["T"] >= 3000
    assert not _alive(str(ck))                              # no ps or worker left running


FAKE_JOB = """import os, signal, sys, time
def save(*_):                                              # a chief whose final save takes a while
    print("saving", flush=True)
    time.sleep(1.5)
    open(os.environ["FAKE_OUT"], "w").write("saved")
    print("RESULT env=fake", flush=True)
    sys.exit(0)
if sys.argv[sys.argv.index("--job-name") + 1] == "worker":
    signal.signal(signal.SIGTERM, save)
print("started", flush=True)
while True:
    time.sleep(0.1)
"""


def test_launcher_second_ctrl_c_waits_for_the_chiefs_save(tmp_path):
    """--workers: Ctrl-C makes the launcher SIGTERM the workers and wait; a second Ctrl-C must not
    kill it (its workers die with it) while the chief is still saving."""
    (tmp_path / "job.py").write_text(FAKE_JOB)
    code = f"import sys; sys.path.insert(0, {HERE!r}); import a3c_cluster; " \
           f"sys.exit(a3c_cluster.launch_local({str(tmp_path / 'job.py')!r}, [], 1))"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, FAKE_OUT=str(tmp_path / "saved")))
    lines = Lines(p)
    lines.until(lambda ln: ln.startswith("[worker 0] started"))
    p.send_signal(signal.SIGINT)
    lines.until(lambda ln: ln.startswith("[worker 0] saving"))   # the chief got SIGTERM and is saving now
    assert not (tmp_path / "saved").exists()
    p.send_signal(signal.SIGINT)                           # the second Ctrl-C, during the save
    out, err = lines.rest(p, timeout=60)
    assert p.returncode == 0 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted: the chief saved a checkpoint", err
    assert (tmp_path / "saved").read_text() == "saved"


def test_cluster_bench_counts_each_workers_frames_once():
    """bench/a3c_cluster.py reads the launcher's output, where the chief's RESULT line comes twice."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_a3c_cluster", os.path.join(HERE, "bench", "a3c_cluster.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tail = "episodes=1 mean_return=1.00 eval_return=nan"
    launcher = (f"[worker 0] RESULT env=E global_step=9 {tail} fps=100 wall_s=10.0\n"
                f"[worker 1] RESULT worker=1 env=E global_step=9 {tail} fps=50 wall_s=8.0\n"
                f"RESULT env=E global_step=9 {tail} fps=100 wall_s=10.0\n")
    assert bench.frames_per_s(launcher) == pytest.approx((100 * 10.0 + 50 * 8.0) / 10.0)
    assert bench.frames_per_s(f"RESULT env=E global_step=9 {tail} fps=300 wall_s=2.0\n") == 300
    assert bench.frames_per_s("a3c.py: error: boom\n") is None


def test_thread_error_line_names_tensorflows_cause():
    """A failing thread's one-line error: for TF's 'Graph execution error:' the line with the cause,
    not the header (a cluster worker once stopped with only 'AbortedError: Graph execution error:')."""
    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None])
        with tf.control_dependencies([tf.debugging.assert_positive(x, message="x must be positive")]):
            y = tf.identity(x)
        with tf.Session() as sess, pytest.raises(tf.errors.InvalidArgumentError) as e:
            sess.run(y, {x: [-1.0]})
    line = cli.first_line(e.value)
    assert line.startswith("InvalidArgumentError: assertion failed: [x must be positive") and "\n" not in line, line
    assert cli.first_line(ValueError("bad\nmore")) == "ValueError: bad"
    # a cluster worker once stopped with only 'CancelledError: ====================='
    assert cli.first_line(RuntimeError("=====================\nthe cause")) == "RuntimeError: the cause"


def test_cluster_thread_retries_one_aborted_step_but_not_a_second_soon_after(capsys):
    """The retry runs actor_learner again from its start; the warning says what that drops."""
    class Aborted(Exception):
        pass

    calls = []

    def learner(*args):                                    # aborts on its first call, returns on its second
        calls.append(args)
        if len(calls) == 1:
            raise Aborted("Graph execution error:\nFrom /job:worker/replica:0/task:1:\nthe cause")
        return "done"
    assert a3c_cluster.retry_aborted(learner, Aborted)(1, 2) == "done" and calls == [(1, 2), (1, 2)]
    assert capsys.readouterr().err == "a3c.py: warning: MainThread: Aborted: the cause; its actor-learner starts " \
        "over: a new game, its random generator from its seed\n"

    def always(*args):
        raise Aborted("again")
    with pytest.raises(Aborted):                           # a second abort within 5 minutes stops the thread
        a3c_cluster.retry_aborted(always, Aborted)()


def test_cluster_worker_death_stops_the_run(tmp_path):
    ck = tmp_path / "ck"
    p, lines = start_a3c("--env", "CartPole-v1", "--workers", "2", "--threads", "1", "--log-interval", "0.5",
                         "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb"))
    lines.until(lambda ln: ln.startswith("[worker 1] global_step="))
    pid = subprocess.run(["pgrep", "-f", f"{ck} .*--task-index 1"], capture_output=True, text=True).stdout.split()
    os.kill(int(pid[0]), signal.SIGKILL)
    t0 = time.time()
    out, err = lines.rest(p)
    assert time.time() - t0 < 60
    assert_one_line_error(p.returncode, err, "a3c.py: error: ", "worker 1 exited with status -9", status=1)
    assert not _alive(str(ck))


def test_cluster_stalled_ps_makes_the_launcher_restart_from_the_checkpoint(tmp_path):
    """A ps that stops answering (SIGSTOP here; TF's gRPC runtime has left long runs blocked the same
    way, README): each worker's watchdog exits with status 3 after --stall-timeout, and the launcher
    restarts the cluster with --resume, so T goes on from the chief's last checkpoint."""
    ck = tmp_path / "ck"
    p, lines = start_a3c("--env", "CartPole-v1", "--workers", "2", "--threads", "1", "--eval-every", "0",
                         "--log-interval", "0.5", "--save-interval", "1", "--stall-timeout", "3",
                         "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb"))
    lines.until(lambda ln: ln.startswith("[worker 0] global_step=") and (ck / "latest.json").exists())  # saved once
    ps = subprocess.run(["pgrep", "-f", f"{ck} .*--job-name ps"], capture_output=True, text=True).stdout.split()
    os.kill(int(ps[0]), signal.SIGSTOP)
    start = len(lines.seen)
    T_saved = int(lines.until(lambda ln: ln.startswith("[worker 0] resumed ")).split("global_step=")[1])
    lines.until(lambda ln: ln.startswith("[worker 0] global_step=") and  # the restarted cluster trains on from it
                int(ln.split("global_step=")[1].split()[0]) > T_saved)
    seen = lines.seen[start:]
    p.send_signal(signal.SIGTERM)
    out, err = lines.rest(p, timeout=180)
    stalled = [ln for ln in seen if "a3c.py: error: worker" in ln]
    assert stalled and "no update for 3 s: stalled in TensorFlow's gRPC runtime" in stalled[0], "".join(seen)[-3000:]
    assert "restarting the cluster from the last checkpoint (1 of 5)" in err, err
    assert p.returncode == 0 and "Traceback" not in err, err
    assert not _alive(str(ck))


def test_cluster_port_in_use_one_line(capsys):
    import socket
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        msg = _main_error(capsys, "--env", "CartPole-v1", "--job-name", "ps", "--task-index", "0",
                          "--ps-hosts", f"localhost:{port}", "--worker-hosts", "localhost:1")
    assert f"cannot start this ps's server at localhost:{port}" in msg, msg


def test_value_torso_own_trains_plays_and_resumes_only_as_own(tmp_path, capsys):
    """--value-torso own (V with its own MLP torso; test_a3c checks the network): the checkpoint
    says so, --play rebuilds that network, --resume with the other torso is refused."""
    ck = str(tmp_path / "ck")
    common = ["--env", "CartPole-v1", "--threads", "2", "--eval-every", "0", "--checkpoint-dir", ck, "--logdir", str(tmp_path)]
    res = result(a3c_main_ok(capsys, *common, "--max-steps", "2000", "--value-torso", "own"))
    assert int(res["global_step"]) >= 2000
    assert json.loads(open(os.path.join(ck, "latest.json")).read())["value_torso"] == "own"
    assert result(a3c_main_ok(capsys, "--play", ck, "--episodes", "2"))["episodes"] == "2"
    assert "--value-torso own; resume it with that" in _main_error(capsys, *common, "--max-steps", "3000", "--resume")


@pytest.mark.parametrize("flags", [["--env", "Breakout-v0"], ["--env", "CartPole-v1", "--lstm"]], ids=["cnn", "lstm"])
def test_value_torso_own_is_refused_where_it_does_not_apply(tmp_path, capsys, flags):
    msg = _main_error(capsys, *flags, "--value-torso", "own", "--checkpoint-dir", str(tmp_path / "x"),
                      "--logdir", str(tmp_path))
    assert "--value-torso own is for the feed-forward MLP" in msg, msg
