"""Test suite: python -m pytest -q test_scripts.py

Offline. Real-data checks run when BABI_DIR points at the bAbI `en` folder (.ci/run sets it).
memn2n.py and babi_data.py first, then atari_env.py and a3c.py."""
import functools
import hashlib
import http.server
import io
import os
import re
import subprocess
import sys
import tarfile
import threading

import gymnasium as gym
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import a3c
import atari_env
import babi_data
import memn2n

HERE = os.path.dirname(os.path.abspath(__file__))
BABI_DIR = os.environ.get("BABI_DIR")


def run_script(script, *args, env=None, timeout=600):
    """Run one of the scripts as a user would; returns (exit code, stdout, stderr)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    p = subprocess.run([sys.executable, os.path.join(HERE, script), *args], capture_output=True,
                       text=True, env=full_env, timeout=timeout, cwd=HERE)
    return p.returncode, p.stdout, p.stderr


def assert_one_line_error(rc, err, *needles):
    assert rc != 0
    assert "Traceback" not in err, err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


# --------------------------------------------------------------------------- generated bAbI data
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


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    return write_task1_like(tmp_path_factory.mktemp("babi_gen"), 300, seed=0)


# --------------------------------------------------------------------------- parsing
STORY = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Mary got the milk there.
5 Mary picked up the apple.
6 What is Mary carrying?\tmilk,apple\t4 5
1 Sandra went to the garden.
2 Where is Sandra?\tgarden\t1
"""


def test_parse_handwritten_story(tmp_path):
    path = tmp_path / "qa8_lists-sets_train.txt"
    path.write_text(STORY)
    exs = babi_data.parse_stories(str(path))
    assert len(exs) == 3
    assert exs[0]["story"] == [["mary", "moved", "to", "the", "bathroom"], ["john", "went", "to", "the", "hallway"]]
    assert exs[0]["question"] == ["where", "is", "mary"] and exs[0]["answer"] == "bathroom"
    assert exs[0]["support"] == [0]
    # question lines are not memories: line 4 and 5 are statements 2 and 3 of the story
    assert len(exs[1]["story"]) == 4 and exs[1]["support"] == [2, 3]
    assert exs[1]["answer"] == "milk,apple"          # a list answer is one answer word
    assert exs[2]["story"] == [["sandra", "went", "to", "the", "garden"]]  # line 1 resets the story
    vocab = babi_data.build_vocab(exs)
    assert "milk,apple" in vocab and min(vocab.values()) == 1  # 0 is the nil word


def test_memory_truncation_and_reverse_temporal_order():
    story = [[f"w{i}"] for i in range(8)]           # w0 oldest ... w7 newest
    ex = {"story": story, "question": ["q"], "answer": "w7", "support": [7]}
    vocab = babi_data.build_vocab([ex])
    S, Q, A, L = babi_data.vectorize([ex], vocab, sentence_size=2, mem_size=5)
    assert L[0] == 5
    # slot 0 holds the most recent sentence (x_1 in the paper), the oldest 3 are dropped
    assert [S[0, i, 0] for i in range(5)] == [vocab[f"w{i}"] for i in (7, 6, 5, 4, 3)]
    assert (S[0, :, 1] == 0).all() and A[0] == vocab["w7"]


def test_random_noise_inserts_empty_memories_and_keeps_order():
    rng = np.random.RandomState(0)
    n, M = 200, 30
    L = rng.randint(1, 20, n)
    S = np.zeros((n, M, 1), np.int32)
    for i in range(n):
        S[i, :L[i], 0] = np.arange(1, L[i] + 1)      # sentence ids, newest first
    S2, L2 = memn2n.add_random_noise(S, L, rng, 0.1)
    added = L2 - L
    assert (added >= 0).all() and 0.05 < added.sum() / L.sum() < 0.15
    for i in range(n):
        kept = S2[i, :L2[i], 0]
        assert list(kept[kept > 0]) == list(range(1, L[i] + 1))   # same sentences, same order
        assert (kept == 0).sum() == added[i] and (S2[i, L2[i]:] == 0).all()


def test_split_validation_is_deterministic():
    exs = list(range(1000))
    a, b = babi_data.split_validation(exs), babi_data.split_validation(exs)
    assert a == b and len(a[1]) == 100 and not set(a[0]) & set(a[1])


# --------------------------------------------------------------------------- the model's math
def test_position_encoding_matches_formulas():
    S, d = 7, 20
    paper, matlab = memn2n.position_encoding(S, d, "paper"), memn2n.position_encoding(S, d, "matlab")
    for J in range(1, S + 1):
        for j in range(1, S + 1):
            for k in range(1, d + 1):
                want = (1 - j / J) - (k / d) * (1 - 2 * j / J) if j <= J else 0.0
                assert abs(paper[J, j - 1, k - 1] - want) < 1e-6
                want = 1 + 4 * (k - (d + 1) / 2) * (j - (S + 1) / 2) / (d * S) if j <= J else 0.0
                assert abs(matlab[J, j - 1, k - 1] - want) < 1e-6


def _small_model(gen_dir, **overrides):
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    cfg = memn2n.parse_args(["--task", "1", *sum(([f"--{k}", str(v)] for k, v in overrides.items()), [])])
    data = memn2n.Data([1], gen_dir, cfg.mem_size, cfg.noise)
    V = len(data.word_idx) + 1
    graph = tf.Graph()
    with graph.as_default():
        g = memn2n.build_graph(cfg, V, data.sentence_size, data.mem_slots)
    sess = tf.Session(graph=graph)
    sess.run(g["init"])
    return cfg, data, V, g, sess


def test_nil_embedding_stays_zero_and_gradients_are_clipped(gen_dir):
    # a large init makes the raw gradients far larger than 40, so the clip has work to do
    cfg, data, V, g, sess = _small_model(gen_dir, **{"init-std": 3.0})
    S, Q, A, L = data.splits["train"][:4]
    fd = memn2n.feed(g, S[:256], Q[:256], A[:256], V)
    tf = g["tf"]
    with sess.graph.as_default():
        raw = tf.gradients(g["loss"], sess.graph.get_collection("trainable_variables"))
        raw_norms = [tf.norm(tf.convert_to_tensor(r)) for r in raw]
    raw_norms, clipped = sess.run([raw_norms, g["grads"]], fd)
    assert max(raw_norms) > 40.0
    assert all(np.linalg.norm(c) <= 40.0 * (1 + 1e-5) for c in clipped)
    g["linear"].load(False, sess)
    for i in range(0, 320, 32):
        sess.run(g["train_op"], memn2n.feed(g, S[i:i + 32], Q[i:i + 32], A[i:i + 32], V))
    for E in sess.run(g["nil_vars"]):
        assert np.all(E[0] == 0.0)                   # the nil word's embedding is still zero
        assert np.abs(E[1:]).sum() > 0


def test_untrained_model_is_at_chance(gen_dir):
    cfg, data, V, g, sess = _small_model(gen_dir)
    _, correct = memn2n.evaluate(sess, g, data.splits["test"], V)
    assert correct.mean() < 0.4                      # 8 places: chance is about 1/8


def test_end_to_end_learns_generated_task_and_reloads(gen_dir, tmp_path):
    save = str(tmp_path / "model")
    rc, out, err = run_script("memn2n.py", "--task", "1", "--data-dir", gen_dir, "--epochs", "30",
                              "--ls-epochs", "10", "--seed", "3", "--save", save, "--logdir", str(tmp_path))
    assert rc == 0, err
    assert "epoch=1 lr=0.005" in out and "examples_per_sec=" in out
    result = out.strip().splitlines()[-1]
    assert result.startswith("RESULT task=1 test_acc=")
    acc = float(result.split("test_acc=")[1].split()[0])
    assert acc >= 0.95, result                       # an untrained model is near 1/8 (test above)
    logs = [d for d in os.listdir(tmp_path) if d.startswith("memn2n_task1__3__")]
    assert logs and any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / logs[0]))
    rc, out2, err = run_script("memn2n.py", "--task", "1", "--data-dir", gen_dir, "--load", save, "--show", "2")
    assert rc == 0, err
    assert out2.strip().splitlines()[-1].split("wall_s")[0] == result.split("wall_s")[0]
    assert "hop1" in out2 and "hop3" in out2 and "predicted:" in out2


@pytest.mark.skipif(not BABI_DIR, reason="BABI_DIR not set: real bAbI data not available")
def test_real_task1_reaches_99_percent(tmp_path):
    rc, out, err = run_script("memn2n.py", "--task", "1", "--data-dir", BABI_DIR, "--logdir", str(tmp_path))
    assert rc == 0, err
    acc = float(out.strip().splitlines()[-1].split("test_acc=")[1].split()[0])
    assert acc >= 0.99, out[-500:]


@pytest.mark.skipif(not BABI_DIR, reason="BABI_DIR not set: real bAbI data not available")
def test_real_data_files_parse_and_match_checksums():
    for t in range(1, 21):
        train, test = babi_data.load_task(BABI_DIR, t)
        assert len(train) == 1000 and len(test) == 1000
    for name, want in babi_data.EN_SHA256.items():
        with open(os.path.join(BABI_DIR, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == want


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("task", ["0", "21", "x"])
def test_bad_task(task, gen_dir):
    rc, _, err = run_script("memn2n.py", "--task", task, "--data-dir", gen_dir)
    assert_one_line_error(rc, err, f"unknown task '{task}'", "1 to 20")


def test_missing_data_folder_and_missing_task_file(tmp_path, gen_dir):
    rc, _, err = run_script("memn2n.py", "--data-dir", str(tmp_path / "nope"))
    assert_one_line_error(rc, err, "does not exist", "--data-dir")
    rc, _, err = run_script("memn2n.py", "--task", "2", "--data-dir", gen_dir)
    assert_one_line_error(rc, err, os.path.join(gen_dir, "qa2_two-supporting-facts_train.txt"), "--data-dir")


def test_malformed_line_names_file_and_line(tmp_path):
    write_task1_like(tmp_path, 4, seed=1)
    path = tmp_path / "qa1_single-supporting-fact_train.txt"
    lines = path.read_text().splitlines()
    lines[6] = "7 Where is Mary?\tkitchen"                # a question line with two fields
    path.write_text("\n".join(lines) + "\n")
    rc, _, err = run_script("memn2n.py", "--task", "1", "--data-dir", str(tmp_path))
    assert_one_line_error(rc, err, f"{path}:7:", "question<TAB>answer<TAB>supporting ids")


def test_no_network_and_no_data(tmp_path):
    env = {"BABI_DIR": "", "XDG_CACHE_HOME": str(tmp_path), "BABI_URL": "http://127.0.0.1:9/tasks.tar.gz"}
    rc, _, err = run_script("memn2n.py", "--task", "1", env=env)
    assert_one_line_error(rc, err, "cannot download", "127.0.0.1:9", "--data-dir")
    assert os.listdir(tmp_path / "babi") == []       # nothing half-written left in the cache


def test_load_missing_checkpoint(tmp_path, gen_dir):
    rc, _, err = run_script("memn2n.py", "--data-dir", gen_dir, "--load", str(tmp_path / "none"))
    assert_one_line_error(rc, err, "no checkpoint at", "--save")


# --------------------------------------------------------------------------- download
def _archive(files, extra=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra:
            tar.addfile(extra, io.BytesIO(b"x") if extra.isfile() else None)
    return buf.getvalue()


@pytest.fixture
def served(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 for the download tests."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


CONTENT = {"qa1_single-supporting-fact_train.txt": b"1 Mary went to the hall.\n2 Where is Mary?\thall\t1\n"}
MANIFEST = {n: hashlib.sha256(d).hexdigest() for n, d in CONTENT.items()}


def test_download_good_archive(served, tmp_path):
    www, base = served
    (www / "good.tar.gz").write_bytes(_archive({f"tasks_1-20_v1-2/en/{n}": d for n, d in CONTENT.items()}))
    cache = tmp_path / "cache"
    cache.mkdir()
    got = babi_data.download(f"{base}/good.tar.gz", str(cache), MANIFEST)
    assert got == str(cache / "tasks_1-20_v1-2" / "en")
    assert (cache / "tasks_1-20_v1-2/en/qa1_single-supporting-fact_train.txt").read_bytes() == \
        CONTENT["qa1_single-supporting-fact_train.txt"]
    assert sorted(os.listdir(cache)) == ["tasks_1-20_v1-2"]  # no temporary files left


def test_download_bad_checksum_keeps_nothing(served, tmp_path):
    www, base = served
    (www / "bad.tar.gz").write_bytes(_archive({"tasks_1-20_v1-2/en/qa1_single-supporting-fact_train.txt": b"1 x\n"}))
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(babi_data.DataError, match="checksum mismatch"):
        babi_data.download(f"{base}/bad.tar.gz", str(cache), MANIFEST)
    assert os.listdir(cache) == []                   # no partial folder, no temporary files


@pytest.mark.parametrize("evil", ["../escape.txt", "/tmp/abs.txt", "link"])
def test_download_rejects_escaping_members(served, tmp_path, evil):
    www, base = served
    info = tarfile.TarInfo(evil)
    if evil == "link":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        info.size = 1
    good = {f"tasks_1-20_v1-2/en/{n}": d for n, d in CONTENT.items()}
    (www / "evil.tar.gz").write_bytes(_archive(good, extra=info))
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(babi_data.DataError, match="unsafe member"):
        babi_data.download(f"{base}/evil.tar.gz", str(cache), MANIFEST)
    assert not (tmp_path / "escape.txt").exists()
    assert os.listdir(cache) == []


# =========================================================================== A3C and Atari
PAPER_ENV = "BreakoutNoFrameskip-v4"


def run_a3c(*argv, timeout=300, cwd=None):
    return subprocess.run([sys.executable, os.path.join(HERE, "a3c.py"), *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def result(stdout):
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


# ---------------------------------------------------------------- preprocessing
def test_obs_shape_dtype_and_stacking_order():
    env = atari_env.AtariEnv(PAPER_ENV, seed=0)
    obs = env.reset()
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    prev = obs
    for t in range(8):
        obs, _, _, info = env.step(t % 4)
        assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
        assert np.array_equal(obs[:, :, :3], prev[:, :, 1:])  # oldest frame drops out, newest goes last
        assert info["frames"] == 4                             # action repeat 4 on a NoFrameskip id
        prev = obs
    assert obs.max() > 0


def test_max_over_two_frames():
    a = np.zeros((210, 160), np.uint8)
    b = np.zeros((210, 160), np.uint8)
    a[:100, :] = 200    # a sprite drawn only on the earlier frame (flicker)
    b[150:, :] = 100    # another drawn only on the later one
    out = atari_env.preprocess(a, b)
    assert out.shape == (84, 84) and out.dtype == np.uint8
    assert out[10, 40] == 200 and out[80, 40] == 100 and out[50, 40] == 0
    assert not np.array_equal(out, atari_env.preprocess(b, b))  # b alone loses the first sprite


def test_noop_reset():
    frames = set()
    for seed in range(6):
        env = atari_env.AtariEnv(PAPER_ENV, seed=seed)
        env.reset()
        assert 0 <= env.noops <= 30
        assert env.frame_number == 4 * (env.noops + 1)      # no-ops then FIRE, 4 raw frames each
        frames.add(env.noops)
    assert len(frames) > 1                                  # random, not a fixed count
    env = atari_env.AtariEnv(PAPER_ENV, seed=0, noop_max=0)
    env.reset()
    assert env.noops == 0 and env.frame_number == 4


def _play_until_done(env, max_steps=2000):
    env.reset()
    for t in range(max_steps):
        obs, reward, done, info = env.step(0)               # NOOP after FIRE: the ball is missed
        if done or info["lives"] < 5:
            return t, done, info
    raise AssertionError("no life lost")


def test_life_loss_ends_training_episode_only():
    env = atari_env.AtariEnv(PAPER_ENV, seed=0, noop_max=0)
    t, done, info = _play_until_done(env)
    assert done and not info["game_over"] and info["lives"] == 4
    frame_number = env.frame_number
    env.step(1)
    assert env.frame_number == frame_number + 4 and env.lives == 4  # the game went on, no reset
    ev = atari_env.AtariEnv(PAPER_ENV, seed=0, noop_max=0, training=False)
    t2, done2, info2 = _play_until_done(ev)
    assert t2 == t and info2["lives"] == 4 and not done2    # evaluation: a life lost ends nothing


def test_reward_clipping_keeps_raw_score():
    env = atari_env.AtariEnv("SpaceInvadersNoFrameskip-v4", seed=0)  # kills score 5-30 points
    env.reset()
    rng = np.random.default_rng(0)
    total_raw, total_clipped = 0.0, 0.0
    for _ in range(3000):
        _, reward, _, info = env.step(int(rng.integers(env.action_space.n)))
        assert reward == np.sign(info["raw_reward"])
        total_raw += info["raw_reward"]
        total_clipped += reward
        if info["game_over"]:
            assert info["episode_return"] == total_raw      # reported score is raw
            break
    assert total_raw > total_clipped > 0


def test_vector_env_same_shape_dtype_meaning():
    a = atari_env.AtariEnv(PAPER_ENV, seed=3, noop_max=0)
    b = atari_env.VectorAtariEnv(PAPER_ENV, seed=3, noop_max=0)
    oa, ob = a.reset(), b.reset()
    assert oa.shape == ob.shape == (84, 84, 4) and oa.dtype == ob.dtype == np.uint8
    diffs, lives_lost = [], []
    for t in range(60):
        act = [1, 2, 3, 0][t % 4]
        oa, ra, da, ia = a.step(act)
        ob, rb, db, ib = b.step(act)
        assert ia["frames"] == ib["frames"] == 4 and ra == rb
        diffs.append(np.abs(oa.astype(int) - ob).mean())
        lives_lost.append((da, db, ia["lives"], ib["lives"]))
    # same game, same actions: the same picture up to a one-frame FIRE offset at reset
    assert np.mean(diffs[10:]) < 1.0, np.mean(diffs[10:])
    assert all(x[0] == x[1] and x[2] == x[3] for x in lives_lost) and any(x[0] for x in lives_lost)
    with pytest.raises(atari_env.EnvError):
        atari_env.VectorAtariEnv("Breakout-v0")             # random frameskip has no native equivalent


# ---------------------------------------------------------------- algorithm
def test_n_step_returns():
    r, gamma = [1.0, 0.0, -1.0, 2.0], 0.9
    for R_boot in (0.0, 5.0):                              # terminal, bootstrap from V(s_t)
        ref = [sum(gamma ** (k - i) * r[k] for k in range(i, len(r))) + gamma ** (len(r) - i) * R_boot
               for i in range(len(r))]
        np.testing.assert_allclose(a3c.n_step_returns(r, R_boot, gamma), ref, rtol=1e-6)


class FixedLengthEnv:
    """Vector-observation env whose episodes last `length` steps; observations depend on the actions."""
    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length, seed=0):
        self.length, self.rng = length, np.random.default_rng(seed)

    def reset(self, seed=None):
        self.t, self.obs = 0, self.rng.normal(size=4).astype(np.float32)
        return self.obs

    def step(self, a):
        self.t += 1
        self.obs = (self.obs * 0.9 + (a - 0.5) + self.rng.normal(size=4) * 0.1).astype(np.float32)
        info = dict(raw_reward=float(a), game_over=self.t >= self.length, truncated=False, frames=1)
        obs = self.obs
        if info["game_over"]:
            info.update(final_obs=obs, episode_return=0.0, episode_length=self.t)
            obs = self.reset()
        return obs, float(a), info["game_over"], info


def _graph(obs_shape=(4,), n_actions=2, threads=1, extra=()):
    args = a3c.parse_args(["--env", "CartPole-v1", *extra])
    g = a3c.build_global(obs_shape, n_actions, args)
    nets = [a3c.build_thread(i, obs_shape, n_actions, g, args) for i in range(threads)]
    sess = tf.Session()
    sess.run(tf.global_variables_initializer())
    return args, g, nets, sess


@pytest.mark.parametrize("length", [3, 50])               # episode ends before t_max / bootstrap case
def test_partial_run_and_recompute_same_gradients(length):
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), sess = _graph()
        sess.run(net["copy_from_global"])
        before = sess.run(g["vars"])
        out = {}
        for mode in (True, False):
            env = FixedLengthEnv(length, seed=1)
            obs = env.reset()
            rng = np.random.default_rng(2)
            for _ in range(2):                              # two rollouts: the 2nd starts mid-episode
                obs, vals, _, _ = a3c.rollout(sess, net, g, env, obs, rng, 0.0, args, mode, net["grads"])
            out[mode] = vals
        for x, y in zip(out[True][4:], out[False][4:]):     # the accumulated gradients
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
        assert any(np.abs(x).sum() > 0 for x in out[True][4:])
        for w, w0 in zip(sess.run(g["vars"]), before):      # lr = 0: global weights unchanged
            np.testing.assert_array_equal(w, w0)


def test_update_changes_global_not_before_copy():
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), sess = _graph()
        local = tf.trainable_variables("thread_0/")
        sess.run(net["copy_from_global"])
        for lv, gv in zip(sess.run(local), sess.run(g["vars"])):
            np.testing.assert_array_equal(lv, gv)           # local == global after copy_from_global
        env = FixedLengthEnv(50)
        a3c.rollout(sess, net, g, env, env.reset(), np.random.default_rng(0), 1e-2, args, True)
        assert sess.run(g["T"]) == args.t_max              # T counts agent steps
        changed = [not np.array_equal(lv, gv) for lv, gv in zip(sess.run(local), sess.run(g["vars"]))]
        assert any(changed)                                 # the update went to the global weights
        sess.run(net["copy_from_global"])
        for lv, gv in zip(sess.run(local), sess.run(g["vars"])):
            np.testing.assert_array_equal(lv, gv)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def test_partial_run_memory_flat_over_short_episodes():
    with tf.Graph().as_default():
        args, g, (net,), sess = _graph()
        env = FixedLengthEnv(1)                             # every rollout ends after 1 of t_max=5 steps
        obs, rng = env.reset(), np.random.default_rng(0)
        for _ in range(300):
            obs, *_ = a3c.rollout(sess, net, g, env, obs, rng, 1e-3, args, True)
        start = _rss_mb()
        for _ in range(1500):
            obs, *_ = a3c.rollout(sess, net, g, env, obs, rng, 1e-3, args, True)
        finished = _rss_mb() - start
        # control: the same number of handles left unfinished does leak (~48 KB each here)
        start = _rss_mb()
        feeds = net["s"] + [net["a"], net["R"], net["mask"], g["lr"]]
        for _ in range(1500):
            h = sess.partial_run_setup(net["pi"] + [net["v_boot"]] + net["train"], feeds)
            sess.partial_run(h, net["pi"][0], {net["s"][0]: obs[None]})
        abandoned = _rss_mb() - start
    assert finished < 10, finished
    assert abandoned > 3 * max(finished, 5), (finished, abandoned)


def test_worker_error_stops_all_threads():
    import threading
    import time
    stop = threading.Event()

    def loops():
        while not stop.is_set():
            time.sleep(0.01)

    def fails():
        time.sleep(0.1)
        raise ValueError("boom")

    t0 = time.time()
    with pytest.raises(a3c.WorkerError, match="worker 1 failed: ValueError: boom"):
        a3c.run_workers([loops, fails, loops], stop, lambda: None, 0.05)
    assert time.time() - t0 < 5 and stop.is_set()


# ---------------------------------------------------------------- command line
def test_breakout_short_run_checkpoint_and_resume(tmp_path):
    ck = str(tmp_path / "ck")
    common = ["--env", "Breakout-v0", "--threads", "2", "--checkpoint-dir", ck, "--logdir", str(tmp_path / "runs")]
    p = run_a3c(*common, "--max-steps", "1000", "--partial-run", cwd=tmp_path)  # the slides' path
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Breakout-v0: ALE skips 2-4 frames at random" in p.stdout
    res = result(p.stdout)
    assert res["env"] == "Breakout-v0" and 1000 <= int(res["global_step"]) < 1000 + 2 * 5
    assert os.path.isfile(os.path.join(ck, "latest.json"))
    assert os.listdir(tmp_path / "runs")                  # TensorBoard events
    p2 = run_a3c(*common, "--max-steps", "1500", "--resume", cwd=tmp_path)
    assert p2.returncode == 0, p2.stderr[-2000:]
    steps = [int(m) for m in re.findall(r"^global_step=(\d+)", p2.stdout, re.M)] + [int(result(p2.stdout)["global_step"])]
    assert steps[0] > int(res["global_step"]) and steps[-1] >= 1500   # continued from T, not from 0
    assert int(steps[-1]) - int(res["global_step"]) < 600


def test_cartpole_learns_and_plays(tmp_path):
    # Fixed step budget (not time): a random policy scores ~22; 40k steps at lr 1e-2 reach > 150.
    ck = str(tmp_path / "ck")
    p = run_a3c("--env", "CartPole-v1", "--threads", "2", "--max-steps", "40000", "--lr", "1e-2",
                "--seed", "1", "--checkpoint-dir", ck, "--logdir", str(tmp_path / "runs"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(result(p.stdout)["mean_return"]) >= 150, p.stdout[-1500:]
    q = run_a3c("--play", ck, "--episodes", "3", cwd=tmp_path)
    assert q.returncode == 0, q.stderr[-2000:]
    res = result(q.stdout)
    assert res["env"] == "CartPole-v1" and res["episodes"] == "3" and float(res["mean_return"]) >= 100


def _one_line_error(p, *needles):
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_bad_inputs(tmp_path):
    _one_line_error(run_a3c("--env", "Breakout-v9", cwd=tmp_path), "unknown env id", "did you mean")
    _one_line_error(run_a3c("--env", "Pendulum-v1", cwd=tmp_path), "continuous action space")
    _one_line_error(run_a3c("--env", "CartPole-v1", "--threads", "0", cwd=tmp_path), "--threads")
    _one_line_error(run_a3c("--play", str(tmp_path / "nothing"), cwd=tmp_path), "no checkpoint")
    _one_line_error(run_a3c("--env", "CartPole-v1", "--resume", "--checkpoint-dir", str(tmp_path / "none"),
                            cwd=tmp_path), "no checkpoint")
    ck = str(tmp_path / "ck")
    p = run_a3c("--env", "CartPole-v1", "--threads", "1", "--max-steps", "50", "--checkpoint-dir", ck,
                "--logdir", str(tmp_path / "runs"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    _one_line_error(run_a3c("--play", ck, "--env", "Acrobot-v1", cwd=tmp_path), "is for CartPole-v1")
    _one_line_error(run_a3c("--env", "Acrobot-v1", "--resume", "--checkpoint-dir", ck, cwd=tmp_path),
                    "is for CartPole-v1")


def test_memn2n_ctrl_c_saves_and_exits(gen_dir, tmp_path):
    import signal
    save = tmp_path / "model"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "memn2n.py"), "--task", "1", "--data-dir", gen_dir,
                          "--epochs", "1000", "--save", str(save), "--logdir", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    for line in p.stdout:                                  # wait until training is under way
        if line.startswith("epoch=3 "):
            break
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted: saved the current model to" in err and "Traceback" not in err
    assert (save / "config.json").is_file() and any(f.startswith("model") for f in os.listdir(save))


def test_a3c_ctrl_c_saves_checkpoint_and_exits(tmp_path):
    import signal
    ck = tmp_path / "ck"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "a3c.py"), "--env", "CartPole-v1", "--threads", "2",
                          "--max-steps", "10000000", "--log-interval", "1", "--checkpoint-dir", str(ck),
                          "--logdir", str(tmp_path / "runs")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in p.stdout:                                  # wait until the threads are training
        if line.startswith("global_step=") and int(line.split()[0].split("=")[1]) > 0:
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    assert "interrupted: saving checkpoint" in err and "Traceback" not in err
    res = result(out)
    assert int(res["global_step"]) > 0
    with open(ck / "latest.json") as f:
        assert f'"T": {res["global_step"]}' in f.read()   # the checkpoint holds the last step T
