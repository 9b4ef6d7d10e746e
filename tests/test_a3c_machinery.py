"""a3c.py's machinery: training runs end to end, checkpoints, interrupts, bad input, cluster mode on Ray."""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import types

import numpy as np
import pytest

import a3c
import a3c_checkpoints
import a3c_cluster
import a3c_threads
import atari_env
import cli
from helpers import Lines, a3c_main_ok, assert_one_line_error, load_tool, result_of, start_script

PAPER_ENV = "BreakoutNoFrameskip-v4"
result = result_of


def start_a3c(*argv, ignore_sigint=False):
    """a3c.py in the background (helpers.start_script), its output read by Lines."""
    p = start_script("a3c.py", argv, ignore_sigint)
    return p, Lines(p)




# ---------------------------------------------------------------- training runs
@pytest.mark.parametrize("env,flags", [("Breakout-v0", []), (PAPER_ENV, ["--lstm"])])
def test_breakout_smoke_checkpoint_resume_play(tmp_path, capfd, env, flags):
    capsys = capfd                                         # file descriptors: OpenCV's C++ writes to fd 2
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
        capfd.readouterr()
        assert a3c.main(["--play", ck, "--record", str(tmp_path / "x.unknown")]) == 2
        err = capfd.readouterr().err
        assert "Assertion failed" not in err and "--record cannot write" in err, err  # OpenCV's own C++: hidden
        load_tool("torso").report(ck, 50)                  # an untrained torso is alive
        out = capfd.readouterr().out
        conv1, varies = re.search(r"all 51 frames: conv1 (\d+)%.* varies across the frames (\d+)%", out).groups()
        assert int(conv1) < 50 and int(varies) > 10, out


def test_interrupt_saves_checkpoint_and_exits(tmp_path):
    """SIGINT and SIGTERM, also when started the way a background job is (SIGINT ignored); the two runs
    side by side, so that the suite waits for one TensorFlow start-up, not two."""
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        (tmp_path / sig.name).mkdir()
        ck = tmp_path / sig.name / "ck"
        runs[sig] = ck, *start_a3c("--env", "CartPole-v1", "--threads", "2", "--log-interval", "0.5", "--checkpoint-dir",
                                   str(ck), "--logdir", str(tmp_path / sig.name / "runs"), ignore_sigint=True)
    for sig, (ck, p, lines) in runs.items():
        lines.until(lambda ln: ln.startswith("global_step=") and int(ln.split()[0].split("=")[1]) > 0)  # training
        p.send_signal(sig)
        out, err = lines.rest(p)
        assert p.returncode == 0, (sig.name, err[-2000:])
        assert "interrupted: saving checkpoint" in err and "Traceback" not in err, (sig.name, err[-2000:])
        with open(ck / "latest.json") as f:
            assert json.load(f)["T"] == int(result(out)["global_step"]) > 0, sig.name


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
    (["--env", "Pendulum-v1", "--method", "nstep-q"], "--method nstep-q needs discrete actions"),
    (["--env", "Pendulum-v1", "--partial-run"], "--partial-run needs discrete actions"),
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
    (["--threads", "two"], "invalid int value"),
    (["--lstm", "--partial-run"], "--partial-run is for the feed-forward network"),
    (["--ray-address", "auto"], "--ray-address needs --workers N"),
    (["--workers", "2", "--partial-run"], "--partial-run runs in one process"),
    (["--env", "CartPole-v1", "--workers", "2", "--ray-address", "nohost"], "is not HOST:PORT or auto"),
    (["--env", "CartPole-v1", "--workers", "2", "--ray-address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
])
def test_bad_flags_one_line(capsys, tmp_path, argv, needle):
    msg = _main_error(capsys, *argv, "--checkpoint-dir", str(tmp_path / "ck"), "--logdir", str(tmp_path / "tb"))
    assert needle in msg, msg
    assert not (tmp_path / "ck" / "latest.json").exists()


@pytest.mark.parametrize("flags, obs_shape, expected", [
    ([], (84, 84, 4), dict(lr=0.0002, rms_eps=0.00001, value_coef=0.5, beta=0.01, max_steps=80000000,
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


# ---------------------------------------------------------------- cluster mode: a local Ray instance
RAY_PROCESSES = "ray::|/raylet|/gcs_server"


def _ray_left():
    """Ray's processes still running, after a grace period for them to exit."""
    for _ in range(20):
        found = subprocess.run(["pgrep", "-af", RAY_PROCESSES], capture_output=True, text=True).stdout.strip()
        if not found:
            return ""
        time.sleep(0.5)
    return found


def _cluster(tmp_path, *flags):
    ck = tmp_path / "ck"
    p, lines = start_a3c("--env", "CartPole-v1", "--workers", "2", "--threads", "1", "--seed", "1", "--eval-every", "0",
                         "--log-interval", "0.5", "--checkpoint-dir", ck, "--logdir", tmp_path / "tb", *flags)
    return ck, p, lines


def _pid(name):
    pids = subprocess.run(["pgrep", "-f", f"^ray::{name}"], capture_output=True, text=True).stdout.split()
    assert pids, f"no ray::{name} process"
    return int(pids[0])


def _steps(out):
    """The chief's `cluster ...` line: each worker's agent steps, and Ray's restarts."""
    line = [ln for ln in out.splitlines() if ln.startswith("cluster workers=")][-1]
    kv = dict(x.split("=") for x in line.split()[1:])
    return [int(n) for n in kv["worker_steps"].split(",")], int(kv["restarts"])


class _Here:
    """A Ray actor handle's stand-in: handle.method.remote(*a) calls obj.method(*a) in this process."""

    def __init__(self, obj):
        self.obj = obj

    def __getattr__(self, name):
        return types.SimpleNamespace(remote=getattr(self.obj, name))


def test_cluster_update_through_the_parameter_server_is_the_one_process_update(monkeypatch):
    """A worker's update (compute_gradients -> clip in its graph, the clipped d_theta pushed, RMSProp in
    the parameter server's graph) leaves theta, theta_v, T and RMSProp's slots where the one-process
    update (apply_gradients onto the global variables) leaves them; two updates, clip active."""
    import ray
    import tensorflow.compat.v1 as tf
    monkeypatch.setattr(ray, "get", lambda x, **kw: x)    # the stand-in's answers are the values themselves
    args = a3c.parse_args(["--env", "CartPole-v1", "--workers", "1", "--max-grad-norm", "0.5"])
    a3c.fill_defaults(args, (4,), a3c.DEFAULTS, a3c.MLP_LSTM)
    ps = a3c_cluster.ParameterServer(args, (4,), 2)
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        g = a3c.build_global((4,), 2, args)
        net = a3c.build_local("thread_0", g, (4,), 2, args)
        sess = a3c.session(1)
        sess.run(tf.global_variables_initializer())
        held = a3c_checkpoints.saved_variables(g)        # the checkpoint's names: the parameter server's own
        names = list(held)
        ps.set_state(dict(zip(names, sess.run(list(held.values())))))
        remote = a3c_cluster.RemoteSession(sess, _Here(ps), g, [net])
        for lr in (0.01, 0.003):
            remote.run(net.copy_from_global)               # theta' <- the parameter server's theta
            fd = {net.s_ph: rng.normal(size=(5, 4)).astype(np.float32), net.a_ph: rng.integers(0, 2, 5),
                  net.R_ph: rng.normal(size=5).astype(np.float32) * 10, g.lr_ph: lr}
            T_remote = remote.run(net.train, fd)["T"]      # pushed: the parameter server applies it
            T_here = sess.run(net.train, fd)["T"]          # the same gradient applied in this graph
            assert T_remote == T_here == ps.get_T()
            want, got = dict(zip(names, sess.run(list(held.values())))), ps.get_state()
            assert set(want) == set(got) and any("RMSProp" in n for n in got)
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)
        assert remote.steps == 10


def test_cluster_worker_killed_is_restarted_and_the_run_finishes(tmp_path):
    """1 parameter server + 2 workers: T grows from both, a worker killed with SIGKILL is restarted
    by Ray and the run goes on to its end: exit 0, RESULT, a checkpoint, no process left."""
    ck, p, lines = _cluster(tmp_path, "--max-steps", "8000")
    lines.until(lambda ln: ln.startswith("global_step="), timeout=180)
    os.kill(_pid("Worker"), signal.SIGKILL)
    out, err = lines.rest(p, timeout=240)
    assert p.returncode == 0, out[-2000:] + err[-2000:]
    assert "Traceback" not in err and "a3c.py: warning: worker " in err and "died; Ray restarts it (1 of 3)" in err, err
    assert out.strip().splitlines()[-1].startswith("RESULT env=CartPole-v1 method=a3c global_step="), out[-500:]
    steps, restarts = _steps(out)
    T = int(result(out)["global_step"])
    assert json.loads((ck / "latest.json").read_text())["T"] == T >= 8000
    # both pushed updates; the killed process's steps since its last report to the chief are not counted
    assert restarts == 1 and min(steps) > 0 and 0.9 * T <= sum(steps) <= T, (steps, restarts, T)
    assert not _ray_left()


def test_cluster_parameter_server_killed_ends_the_run_in_one_line(tmp_path):
    ck, p, lines = _cluster(tmp_path, "--max-steps", "500000", "--save-interval", "1")
    lines.until(lambda ln: ln.startswith("global_step=") and (ck / "latest.json").exists(), timeout=180)
    saved = json.loads((ck / "latest.json").read_text())
    os.kill(_pid("ParameterServer"), signal.SIGKILL)
    out, err = lines.rest(p, timeout=120)
    last = json.loads((ck / "latest.json").read_text())
    assert_one_line_error(p.returncode, err, "a3c.py: error: the parameter server died (", "the last checkpoint is "
                          f"{ck / last['dir']}; continue with --resume", status=1)
    assert last["T"] >= saved["T"] and (ck / last["dir"] / "model.index").exists()
    assert not _ray_left()


def test_cluster_ctrl_c_stops_everything_and_saves(tmp_path):
    ck, p, lines = _cluster(tmp_path, "--max-steps", "500000")
    lines.until(lambda ln: ln.startswith("global_step="), timeout=180)
    p.send_signal(signal.SIGINT)
    out, err = lines.rest(p, timeout=120)
    assert p.returncode == 0 and "Traceback" not in err and "interrupted: saving checkpoint" in err, err
    T = int(result(out)["global_step"])
    assert 0 < T < 500000 and json.loads((ck / "latest.json").read_text())["T"] == T
    assert min(_steps(out)[0]) > 0
    assert not _ray_left()


def test_main_thread_ends_with_the_learners_not_at_the_next_log_line():
    """run_threads' wait between log lines ends when the learners do (T_max reached mid-interval):
    with a 60 s interval a learner of 0.2 s ends the run in well under a minute, logged once more."""
    learner, logged = threading.Thread(target=time.sleep, args=(0.2,)), []
    t0 = time.monotonic()
    assert a3c_threads.run_threads([learner], [], threading.Event(), 60.0, [lambda: logged.append(1)], None,
                                   lambda: None) is False
    assert time.monotonic() - t0 < 30 and not learner.is_alive() and logged == [1]


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


def test_checkpoint_holds_rmsprop_statistics_and_an_older_one_resumes_without(tmp_path, capsys):
    """The slots each w of theta has in the shared RMSProp are saved (as global/<w>/RMSProp, _1); a
    checkpoint written before they were resumes with one warning, its statistics afresh."""
    import tensorflow.compat.v1 as tf
    ck = tmp_path / "ck"
    run = ["--env", "CartPole-v1", "--threads", "1", "--eval-every", "0", "--checkpoint-dir", str(ck), "--logdir",
           str(tmp_path / "tb")]
    a3c_main_ok(capsys, *run, "--max-steps", "300")
    model = str(ck / json.loads((ck / "latest.json").read_text())["dir"] / "model")
    names = dict(tf.train.list_variables(model))
    ms = tf.train.load_variable(model, "global/fc1/w/RMSProp")  # TF starts it at ones
    assert "global/fc1/w/RMSProp_1" in names and ms.shape == (4, 64) and not np.allclose(ms, 1.0)
    with tf.Graph().as_default():                          # the same checkpoint as an older a3c.py wrote it
        old = [tf.Variable(tf.train.load_variable(model, n), name=n) for n in names if "RMSProp" not in n]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(old).save(sess, model, write_meta_graph=False, write_state=False)
    assert a3c.main(run + ["--max-steps", "400", "--resume"]) == 0
    out, err = capsys.readouterr()
    assert f"a3c.py: warning: {ck} holds no RMSProp statistics (saved by an older a3c.py): they start afresh" in err
    assert int(result(out)["global_step"]) >= 400


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
