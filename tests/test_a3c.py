"""a3c.py, the paper: n-step returns, the policy gradient and entropy signs, batched against per-step
gradients, the clipped shared-RMSProp update, the learning-rate anneal, the time-limit bootstrap,
the LSTM, learning."""
import os
import re
import threading

import gymnasium as gym
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import a3c
import a3c_log
from a3c_cli import read_actions
from helpers import a3c_main_ok, load_tool, result_of


@pytest.mark.parametrize("R_boot", [0.0, 5.0], ids=["terminal", "bootstrap"])
def test_n_step_returns(R_boot):
    r, gamma = [1.0, 0.0, -1.0, 2.0], 0.9
    ref = [sum(gamma ** (k - i) * r[k] for k in range(i, len(r))) + gamma ** (len(r) - i) * R_boot
           for i in range(len(r))]
    np.testing.assert_allclose(a3c.n_step_returns(r, R_boot, gamma), ref, rtol=1e-6)


class FixedLengthEnv:
    """Vector-observation env whose episodes last `length` steps; observations depend on the actions."""
    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    truncated = False                                      # True: the episode ends on a time limit, not a terminal

    def __init__(self, length, seed=0):
        self.length, self.rng = length, np.random.default_rng(seed)

    def reset(self, seed=None):
        self.t, self.obs = 0, self.rng.normal(size=4).astype(np.float32)
        return self.obs

    def step(self, a):
        self.t += 1
        self.obs = (self.obs * 0.9 + (a - 0.5) + self.rng.normal(size=4) * 0.1).astype(np.float32)
        info = dict(raw_reward=float(a), game_over=self.t >= self.length, truncated=self.truncated, frames=1)
        obs = self.obs
        if info["game_over"]:
            info.update(final_obs=obs, episode_return=0.0, episode_length=self.t)
            obs = self.reset()
        return obs, float(a), info["game_over"], info


class Bandit(FixedLengthEnv):
    """Two arms, one-step episodes: arm 1 pays 1, arm 0 pays 0."""

    def __init__(self):
        super().__init__(1)

    def reset(self, seed=None):
        self.t, self.obs = 0, np.ones(4, np.float32)
        return self.obs

    def step(self, a):
        obs, _, done, info = super().step(a)
        return self.reset(), float(a), done, info


def _graph(*flags, obs_shape=(4,), n_actions=2, threads=1, continuous=False, bound=1.0):
    """a3c.py's graph for a vector env, in the current default graph, with a fresh session.
    With --partial-run each learner's net.pr is the slides' per-step copy; continuous: a Box
    action of n_actions dimensions in [-bound, bound], the Gaussian policy."""
    args = a3c.parse_args(["--env", "CartPole-v1", *flags])
    read_actions(args, gym.spaces.Box(-bound, bound, (n_actions,)) if continuous else gym.spaces.Discrete(n_actions))
    a3c.fill_defaults(args, obs_shape, a3c.DEFAULTS, a3c.MLP_LSTM)
    g = a3c.build_global(obs_shape, n_actions, args)
    nets = [a3c.build_local(f"thread_{i}", g, obs_shape, n_actions, args) for i in range(threads)]
    probe = a3c.build_local("probe", g, obs_shape, n_actions, args, learner=False)  # reads theta after a copy
    sess = a3c.session(args.threads)
    sess.run(tf.global_variables_initializer())
    return args, g, nets, probe, sess


def _run_learner(args, sess, net, g, env, max_steps):
    args.max_steps = max_steps
    shared = a3c.Shared(int(sess.run(g.T)), 1)
    a3c.LEARNERS[args.method](0, sess, net, g, env, args, shared, threading.Event())  # the --method's loop
    return shared


def _spy(sess, record):
    """Make `sess` call record(fetches, feed_dict, result) on every run."""
    class Spy(type(sess)):
        def run(self, fetches, feed_dict=None, **kw):
            out = super().run(fetches, feed_dict, **kw)
            record(fetches, feed_dict, out)
            return out
    sess.__class__ = Spy


def test_policy_gradient_moves_toward_the_better_arm():
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), probe, sess = _graph("--lr", "1e-2", "--t-max", "1")
        obs = np.ones((1, 4), np.float32)
        sess.run(probe.copy_from_global)
        before = sess.run(probe.pi, {probe.s_ph: obs})[0, 1]
        _run_learner(args, sess, net, g, Bandit(), 300)
        sess.run(probe.copy_from_global)
        after = sess.run(probe.pi, {probe.s_ph: obs})[0, 1]
    assert 0.3 < before < 0.7 and after > 0.9, (before, after)   # a wrong sign drives it to 0


def test_entropy_bonus_raises_entropy_when_advantage_is_zero():
    with tf.Graph().as_default():
        args, g, (net,), probe, sess = _graph("--beta", "1.0")
        pi_b = [v for v in g.theta if v.name == "global/pi/b:0"][0]
        sess.run(pi_b.assign([2.0, -2.0]))                 # a confident policy: low entropy
        sess.run(net.copy_from_global)
        S = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        H = lambda p: -(p * np.log(p)).sum(1).mean()  # noqa: E731
        before = H(sess.run(net.pi, {net.s_ph: S}))
        for _ in range(30):                                # R = V(s): advantage and value loss are zero
            v = sess.run(net.v, {net.s_ph: S})
            sess.run(net.train, {net.s_ph: S, net.a_ph: [0] * 5, net.R_ph: v, g.lr_ph: 0.1})
            sess.run(net.copy_from_global)
        after = H(sess.run(net.pi, {net.s_ph: S}))
    assert after > 1.5 * before, (before, after)           # the wrong sign would lower it


def test_gradients_batched_equal_per_step_and_numpy_reference():
    """The default update (one batch of n states through one copy) against the slides' t_max
    copies (per-step graph) and, for the heads' biases, against the loss differentiated by hand."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, sess = _graph("--partial-run", "--beta", "0.3", "--max-grad-norm", "0.05")
        pr = net.pr
        sess.run(net.copy_from_global)
        rng = np.random.default_rng(1)
        for n in (5, 3):                                   # a full rollout and one cut short by a terminal
            S = rng.normal(size=(n, 4)).astype(np.float32)
            a, R = rng.integers(0, 2, n), rng.normal(size=n).astype(np.float32)
            batched, batched_clipped = sess.run((net.grads, net.clipped), {net.s_ph: S, net.a_ph: a, net.R_ph: R})
            fd = {pr.s[k]: (S[k] if k < n else np.zeros(4, np.float32))[None] for k in range(args.t_max)}
            fd.update({pr.a_ph: np.pad(a, (0, 5 - n)), pr.R_ph: np.pad(R, (0, 5 - n)),
                       pr.mask_ph: (np.arange(5) < n).astype(np.float32)})
            per_step, per_step_clipped = sess.run((pr.grads, pr.clipped), fd)
            for x, y in zip(batched, per_step):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
            norm = np.sqrt(sum((x ** 2).sum() for x in batched))
            assert norm > args.max_grad_norm, norm             # the clip is active: what reaches RMSProp is clipped
            for x, y in zip(batched_clipped, per_step_clipped):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
            # NumPy: dL/dz_i = -(R_i - V_i)(onehot(a_i) - p_i) + beta p_i (log p_i + H_i);  dL/dV_i = 2 c (V_i - R_i)
            p, V = sess.run([net.pi, net.v], {net.s_ph: S})
            Hs = -(p * np.log(p)).sum(1, keepdims=True)
            dz = -(R - V)[:, None] * (np.eye(2)[a] - p) + args.beta * p * (np.log(p) + Hs)
            names = [v.name for v in tf.trainable_variables("thread_0/")]
            np.testing.assert_allclose(batched[names.index("thread_0/pi/b:0")], dz.sum(0), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(batched[names.index("thread_0/v/b:0")], [2 * args.value_coef * (V - R).sum()],
                                       rtol=1e-4)


def test_update_changes_global_not_local_until_copy():
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, sess = _graph()
        local = tf.trainable_variables("thread_0/")
        theta_before = sess.run(g.theta)
        shared = _run_learner(args, sess, net, g, FixedLengthEnv(50), 5)   # one rollout: copy, act, update
        assert sess.run(g.T) == shared.T == 5              # T counts agent steps
        for lv, before in zip(sess.run(local), theta_before):   # theta' still holds what copy_from_global gave it
            np.testing.assert_array_equal(lv, before)
        assert all(not np.array_equal(gv, before) for gv, before in zip(sess.run(g.theta), theta_before))
        sess.run(net.copy_from_global)
        for lv, gv in zip(sess.run(local), sess.run(g.theta)):
            np.testing.assert_array_equal(lv, gv)


@pytest.mark.parametrize("max_grad_norm", [0.05, 1e6], ids=["clipped", "unclipped"])
def test_update_is_clipped_shared_rmsprop_against_numpy(max_grad_norm):
    """theta <- theta - lr d / sqrt(ms + eps), ms <- rho ms + (1 - rho) d^2 with TF's ms starting at
    ones, d = the gradient clipped to a global norm of --max-grad-norm; two updates, so the second
    uses the first's statistics."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, sess = _graph("--max-grad-norm", str(max_grad_norm), "--rms-eps", "0.1",
                                          "--rms-decay", "0.9")
        rng = np.random.default_rng(0)
        theta = sess.run(g.theta)
        ms = [np.ones_like(w) for w in theta]
        for lr in (0.01, 0.003):
            sess.run(net.copy_from_global)
            S = rng.normal(size=(5, 4)).astype(np.float32)
            fd = {net.s_ph: S, net.a_ph: rng.integers(0, 2, 5), net.R_ph: rng.normal(size=5).astype(np.float32) * 10}
            grads = sess.run(net.grads, fd)
            norm = np.sqrt(sum((d.astype(np.float64) ** 2).sum() for d in grads))
            assert (norm > max_grad_norm) == (max_grad_norm < 1), norm   # the case is the one it is named for
            d = [x * min(1.0, max_grad_norm / norm) for x in grads]
            stats = sess.run(net.train, {**fd, g.lr_ph: lr})
            assert stats["grad_norm"] == pytest.approx(norm, rel=1e-4)    # losses/grad_norm: before the clip
            ms = [0.9 * m + 0.1 * x ** 2 for m, x in zip(ms, d)]
            theta = [w - lr * x / np.sqrt(m + 0.1) for w, x, m in zip(theta, d, ms)]
            for got, want in zip(sess.run(g.theta), theta):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_learning_rate_anneals_linearly_to_zero_and_each_update_gets_it():
    args = a3c.parse_args(["--env", "CartPole-v1", "--lr", "0.004", "--max-steps", "20"])
    assert [a3c.learning_rate(args, T) for T in (0, 5, 10, 20, 25)] == pytest.approx([0.004, 0.003, 0.002, 0, 0])
    fed = []
    with tf.Graph().as_default():
        args, g, (net,), _, sess = _graph("--lr", "0.004")
        _spy(sess, lambda fetches, fd, out: fed.append(fd[g.lr_ph]) if fetches is net.train else None)
        _run_learner(args, sess, net, g, FixedLengthEnv(50), 20)   # rollouts of 5 start at T = 0, 5, 10, 15
    assert fed == pytest.approx([0.004, 0.003, 0.002, 0.001])


@pytest.mark.parametrize("truncated", [True, False], ids=["time-limit", "terminal"])
def test_episode_end_bootstraps_from_final_obs_only_on_a_time_limit(truncated):
    """An episode cut by a time limit is not over: R = V(final_obs; theta'_v), of the episode's last
    observation, not the next one's first; a terminal s_t gives R = 0 (Algorithm 3)."""
    env = FixedLengthEnv(3)                                # shorter than t_max: the rollout ends with it
    env.truncated = truncated
    finals, values, updates = [], [], []
    real_step = env.step

    def step(a):
        out = real_step(a)
        if out[2]:
            finals.append(out[3]["final_obs"].copy())
        return out
    env.step = step
    with tf.Graph().as_default():
        args, g, (net,), _, sess = _graph("--gamma", "0.5")

        def record(fetches, fd, out):
            if fetches is net.v:                           # the bootstrap V(s_t)
                values.append((fd[net.s_ph].copy(), float(out[0])))
            elif fetches is net.train:
                updates.append((np.asarray(fd[net.a_ph], np.float32), fd[net.R_ph]))
        _spy(sess, record)
        _run_learner(args, sess, net, g, env, 3)
    assert len(updates) == 1 and len(finals) == 1
    if truncated:
        assert len(values) == 1
        np.testing.assert_array_equal(values[0][0], finals[0][None])   # V of the final observation
        R = values[0][1]
        assert R != 0.0
    else:
        assert values == []                                # no V(s_t) at all
        R = 0.0
    rewards, fed = updates[0]                              # this env pays the action as its reward
    want = []
    for r in rewards[::-1]:                                # R <- r_i + gamma R
        R = r + 0.5 * R
        want.insert(0, R)
    np.testing.assert_allclose(fed, want, rtol=1e-6)


def test_live_units_count_the_fc_outputs_that_depend_on_s_and_read_zero_for_a_dead_torso():
    """losses/live_units: the share of the CNN's fc units whose output differs between a rollout's
    states, against NumPy on the same activations. Two ways to die: the fc ReLUs off for every input,
    or the first conv layer off, so that the fc units that still fire give one output for all states."""
    args, g, nets, probe, sess = _graph(obs_shape=(84, 84, 4), n_actions=4)
    net = nets[0]
    live = net.train["live_units"]                          # part of every update's statistics
    fc = tf.get_default_graph().get_tensor_by_name("thread_0/fc:0")
    s = np.random.default_rng(0).integers(0, 256, (5, 84, 84, 4), np.uint8)
    h, got = sess.run((fc, a3c_log.torso_stats("thread_0")["live_units"]), {net.s_ph: s})
    assert 0 < got < 1 and got == pytest.approx(np.mean(h.max(axis=0) > h.min(axis=0)))
    bias = {v.op.name: v for v in tf.global_variables("thread_0/")}
    for dead in ({"fc": -1e3}, {"conv1": -1e3, "fc": 0.1}):  # biases; the second as the dead Pong run had
        sess.run(net.copy_from_global)                      # theta' back to the untrained theta
        sess.run([bias[f"thread_0/{k}/b"].assign(tf.fill(bias[f"thread_0/{k}/b"].shape, v)) for k, v in dead.items()])
        h, got = sess.run((fc, live), {net.s_ph: s})
        assert got == 0, dead
    assert (h > 0).all(), "with conv1 dead the fc units still fire, with one output for every state"
    assert a3c_log.torso_stats("no_such_scope") == {}      # the MLP (tanh, no fc) reports nothing


def test_value_torso_own_has_its_own_variables():
    """--value-torso own: V reads a torso of its own, so changing pi's torso moves pi but not V,
    while with the shared torso (the paper's) it moves both."""
    S = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    moved = {}
    for torso in ("shared", "own"):
        with tf.Graph().as_default():
            tf.set_random_seed(0)
            args, g, (net,), probe, sess = _graph("--value-torso", torso)
            names = [v.name for v in g.theta]
            assert ("global/v_fc1/w:0" in names) == (torso == "own"), names
            sess.run(probe.copy_from_global)
            before = sess.run((probe.pi, probe.v), {probe.s_ph: S})
            fc1 = [v for v in g.theta if v.name == "global/fc1/w:0"][0]
            sess.run(fc1.assign(fc1 * 3.0))
            sess.run(probe.copy_from_global)
            after = sess.run((probe.pi, probe.v), {probe.s_ph: S})
            moved[torso] = [not np.allclose(x, y) for x, y in zip(before, after)]
    assert moved == {"shared": [True, True], "own": [True, False]}, moved


def test_lstm_update_unrolls_as_acting_did():
    """Acting one step at a time, carrying (c, h), gives the same pi and V as the update's unroll of
    the rollout's states from the state it began with."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, sess = _graph("--lstm")
        sess.run(net.copy_from_global)
        S = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
        state = start = (np.random.default_rng(1).normal(size=(1, 256)).astype(np.float32),) * 2
        step_pi, step_v = [], []
        for s in S:
            (pi, v, state) = sess.run((net.pi, net.v, net.state), a3c.feed(net, s[None], state))
            step_pi.append(pi[0])
            step_v.append(v[0])
        pi, v = sess.run((net.pi, net.v), a3c.feed(net, S, start))
        np.testing.assert_allclose(pi, step_pi, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v, step_v, rtol=1e-5, atol=1e-6)


def test_lstm_state_carried_across_rollouts_and_reset_on_episode_end():
    fed = []

    def record(fetches, feed_dict, out):
        if isinstance(fetches, tuple) and len(fetches) == 2:  # acting: (pi, state)
            fed.append(float(np.abs(feed_dict[net.state_ph[1]]).sum()))

    with tf.Graph().as_default():
        args, g, (net,), _, sess = _graph("--lstm")
        _spy(sess, record)
        _run_learner(args, sess, net, g, FixedLengthEnv(7), 21)   # 3 episodes of 7 steps, rollouts of 5
    # steps 0..6 of each episode: fresh (zero) state at step 0 only, carried into the second rollout (step 5)
    assert len(fed) == 21
    for k, h in enumerate(fed):
        assert (h == 0) == (k % 7 == 0), (k, fed)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def test_partial_run_memory_flat_over_short_episodes():
    with tf.Graph().as_default():
        args, g, (net,), _, sess = _graph("--partial-run")
        pr = net.pr
        env = FixedLengthEnv(1)                             # every rollout ends after 1 of t_max=5 steps
        shared = a3c.Shared(0, 1)
        obs, rng = env.reset(), np.random.default_rng(0)
        for _ in range(300):
            obs = a3c.partial_run_rollout(sess, pr, net, g, env, obs, rng, 1e-3, args, shared, 0, a3c)
        start = _rss_mb()
        for _ in range(1500):
            obs = a3c.partial_run_rollout(sess, pr, net, g, env, obs, rng, 1e-3, args, shared, 0, a3c)
        finished = _rss_mb() - start
        # control: the same number of handles left unfinished does leak (~48 KB each here)
        start = _rss_mb()
        feeds = pr.s + [pr.a_ph, pr.R_ph, pr.mask_ph, g.lr_ph]
        for _ in range(1500):
            h = sess.partial_run_setup(pr.pi + [pr.v_boot] + list(pr.train.values()), feeds)
            sess.partial_run(h, pr.pi[0], {pr.s[0]: obs[None]})
        abandoned = _rss_mb() - start
    assert shared.T == 1800
    assert finished < 10, finished
    assert abandoned > 3 * max(finished, 5), (finished, abandoned)


def test_partial_run_trains_end_to_end(tmp_path, capsys):
    """--partial-run through main: a short CartPole run trains, evaluates and saves like the default."""
    rc = a3c.main(["--env", "CartPole-v1", "--partial-run", "--threads", "2", "--max-steps", "3000", "--eval-every",
                   "0", "--seed", "1", "--checkpoint-dir", str(tmp_path / "ck"), "--logdir", str(tmp_path / "tb")])
    out = capsys.readouterr().out
    assert rc == 0, out[-2000:]
    res = result_of(out)
    assert 3000 <= int(res["global_step"]) < 3000 + 2 * 5 and int(res["episodes"]) > 0, res
    assert (tmp_path / "ck" / "latest.json").exists()


# ---------------------------------------------------------------- learning, with the defaults
def events(logdir):
    """{tag: [steps]} from the TensorBoard event files under logdir, read as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_cartpole_defaults_learn_evaluate_log_and_play(tmp_path, capsys):
    # The MLP's defaults on a short budget (--max-steps also shortens the lr schedule). A short run's
    # policy rises and can fall again before the end (30k steps, 2 threads, seed 1, five runs here:
    # final training means 88-186, best evaluations 134-344; with the earlier value weight 0.5, ten
    # runs: 20-180 and 63-312), so learning is judged by the best evaluation of a snapshot of theta.
    # A random policy's 20-game mean is 22 +- 3.
    ck, tb = tmp_path / "ck", tmp_path / "tb"
    out = a3c_main_ok(capsys, "--env", "CartPole-v1", "--threads", "2", "--max-steps", "30000", "--eval-every", "10000",
                   "--seed", "1", "--checkpoint-dir", str(ck), "--logdir", str(tb))
    res = result_of(out)
    evals = [(int(t), float(r)) for t, r in re.findall(r"^eval global_step=(\d+) eval_return=(\S+)", out, re.M)]
    assert max(r for _, r in evals) >= 50, out[-1500:]
    assert re.search(r"^global_step=\d+ progress=\d+\.\d% eta=\S+ fps=", out, re.M)
    assert len(evals) >= 2 and evals[0][0] >= 10000 and evals[-1] == (int(res["global_step"]), float(res["eval_return"]))
    tags = events(tb)
    for tag in ["charts/episodic_return", "charts/episodic_length", "charts/fps", "charts/lr",
                "losses/policy", "losses/value", "losses/entropy", "eval/episodic_return", "eval/episodic_return_std"]:
        assert tag in tags and tags[tag], (tag, sorted(tags))
        assert all(0 <= s <= int(res["global_step"]) for s in tags[tag])
    assert tags["eval/episodic_return"] == [t for t, _ in evals]
    # tools/plot_curve.py --csv keeps the evaluations as text, and reads them back as it reads event files.
    plot_curve = load_tool("plot_curve")
    plot_curve.write_csv(tmp_path / "run.csv", *plot_curve.curves([str(tb)], 1))
    (_, train_mean), (x, m, _) = plot_curve.curves([str(tmp_path / "run.csv")], 1)
    assert list(zip(x.astype(int), m)) == evals and len(train_mean) >= 1
    # The saved theta is the one the final evaluation scored: --play with the run's seed replays its 20 games.
    played = result_of(a3c_main_ok(capsys, "--play", str(ck), "--episodes", "20", "--seed", "1"))
    assert played["env"] == "CartPole-v1" and played["episodes"] == "20" and played["mean_return"] == res["eval_return"]


def test_lstm_cartpole_learns(tmp_path, capsys):
    # One thread, so the run does not hang on how two threads interleave on a loaded machine (two
    # threads gave 9-24 there, 71-142 on a quiet one). Seeds 1-3 reach 80-93 after 25k steps here,
    # against ~22 for a random policy.
    out = a3c_main_ok(capsys, "--env", "CartPole-v1", "--lstm", "--threads", "1", "--max-steps", "25000",
                   "--eval-every", "0", "--seed", "1", "--checkpoint-dir", str(tmp_path / "ck"), "--logdir", str(tmp_path))
    assert float(result_of(out)["mean_return"]) >= 35, out[-1500:]
