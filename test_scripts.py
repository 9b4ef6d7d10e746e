"""Test suite: python -m pytest -q test_scripts.py

Offline. Real-data checks run when BABI_DIR points at the bAbI `en` folder (.ci/run sets it).
memn2n.py and babi_data.py first, then atari_env.py and a3c.py."""
import functools
import hashlib
import http.server
import io
import json
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


def _graph(*flags, obs_shape=(4,), n_actions=2, threads=1, partial_run=False):
    """a3c.py's graph for a vector env, in the current default graph, with a fresh session."""
    args = a3c.parse_args(["--env", "CartPole-v1", *flags])
    a3c.fill_defaults(args, obs_shape)
    g = a3c.build_global(obs_shape, n_actions, args)
    nets = [a3c.build_local(f"thread_{i}", g, obs_shape, n_actions, args) for i in range(threads)]
    prs = [a3c.build_partial_run(f"thread_{i}", g, obs_shape, n_actions, args) for i in range(threads)] \
        if partial_run else None
    probe = a3c.build_local("probe", g, obs_shape, n_actions, args, learner=False)  # reads theta after a copy
    sess = a3c.session(args)
    sess.run(tf.global_variables_initializer())
    return args, g, nets, prs, probe, sess


def _run_learner(args, sess, net, g, env, max_steps, prs=None):
    args.max_steps = max_steps
    shared = a3c.Shared(int(sess.run(g.T)), 1, prs)
    a3c.actor_learner(0, sess, net, g, env, args, shared, threading.Event())
    return shared


def test_policy_gradient_moves_toward_the_better_arm():
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, probe, sess = _graph("--lr", "1e-2", "--t-max", "1")
        obs = np.ones((1, 4), np.float32)
        sess.run(probe.copy_from_global)
        before = sess.run(probe.pi, {probe.s_ph: obs})[0, 1]
        _run_learner(args, sess, net, g, Bandit(), 300)
        sess.run(probe.copy_from_global)
        after = sess.run(probe.pi, {probe.s_ph: obs})[0, 1]
    assert 0.3 < before < 0.7 and after > 0.9, (before, after)   # a wrong sign drives it to 0


def test_entropy_bonus_raises_entropy_when_advantage_is_zero():
    with tf.Graph().as_default():
        args, g, (net,), _, probe, sess = _graph("--beta", "1.0")
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
        args, g, (net,), (pr,), _, sess = _graph("--partial-run", "--beta", "0.3", partial_run=True)
        sess.run(net.copy_from_global)
        rng = np.random.default_rng(1)
        for n in (5, 3):                                   # a full rollout and one cut short by a terminal
            S = rng.normal(size=(n, 4)).astype(np.float32)
            a, R = rng.integers(0, 2, n), rng.normal(size=n).astype(np.float32)
            batched = sess.run(net.grads, {net.s_ph: S, net.a_ph: a, net.R_ph: R})
            fd = {pr.s[k]: (S[k] if k < n else np.zeros(4, np.float32))[None] for k in range(args.t_max)}
            fd.update({pr.a_ph: np.pad(a, (0, 5 - n)), pr.R_ph: np.pad(R, (0, 5 - n)),
                       pr.mask_ph: (np.arange(5) < n).astype(np.float32)})
            per_step = sess.run(pr.grads, fd)
            for x, y in zip(batched, per_step):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
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
        args, g, (net,), _, _, sess = _graph()
        local = tf.trainable_variables("thread_0/")
        shared = _run_learner(args, sess, net, g, FixedLengthEnv(50), 5)
        assert sess.run(g.T) == shared.T == 5              # T counts agent steps
        changed = [not np.array_equal(lv, gv) for lv, gv in zip(sess.run(local), sess.run(g.theta))]
        assert any(changed)                                # the update went to the global weights only
        sess.run(net.copy_from_global)
        for lv, gv in zip(sess.run(local), sess.run(g.theta)):
            np.testing.assert_array_equal(lv, gv)


def test_lstm_update_unrolls_as_acting_did():
    """Acting one step at a time, carrying (c, h), gives the same pi and V as the update's unroll of
    the rollout's states from the state it began with."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, _, sess = _graph("--lstm")
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

    class Spy(a3c.Session):
        def run(self, fetches, feed_dict=None, **kw):
            if isinstance(fetches, tuple) and len(fetches) == 2:  # acting: (pi, state)
                fed.append(float(np.abs(feed_dict[net.state_ph[1]]).sum()))
            return super().run(fetches, feed_dict, **kw)

    with tf.Graph().as_default():
        args, g, (net,), _, _, sess = _graph("--lstm")
        sess.__class__ = Spy
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
        args, g, (net,), (pr,), _, sess = _graph("--partial-run", partial_run=True)
        env = FixedLengthEnv(1)                             # every rollout ends after 1 of t_max=5 steps
        shared = a3c.Shared(0, 1, [pr])
        obs, rng = env.reset(), np.random.default_rng(0)
        for _ in range(300):
            obs = a3c.partial_run_rollout(sess, pr, net, g, env, obs, rng, 1e-3, args, shared, 0)
        start = _rss_mb()
        for _ in range(1500):
            obs = a3c.partial_run_rollout(sess, pr, net, g, env, obs, rng, 1e-3, args, shared, 0)
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


# ---------------------------------------------------------------- training runs
def events(logdir):
    """{tag: [steps]} from the TensorBoard event files under logdir, read as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _main_ok(capsys, *argv):
    """a3c.main in this process (no TensorFlow start-up per call): exit 0, returns stdout."""
    assert a3c.main(list(argv)) == 0
    return capsys.readouterr().out


def test_cartpole_defaults_learn_evaluate_log_and_play(tmp_path, capsys):
    # The MLP's default lr and RMSProp eps on a fixed step budget (--max-steps also shortens the
    # lr schedule): a random policy scores ~22.
    ck, tb = tmp_path / "ck", tmp_path / "tb"
    out = _main_ok(capsys, "--env", "CartPole-v1", "--threads", "2", "--max-steps", "30000", "--eval-every", "15000",
                   "--seed", "1", "--checkpoint-dir", str(ck), "--logdir", str(tb))
    res = result(out)
    assert float(res["mean_return"]) >= 150 and float(res["eval_return"]) >= 150, out[-1500:]
    assert re.search(r"^global_step=\d+ progress=\d+\.\d% eta=\S+ fps=", out, re.M)
    evals = [int(m) for m in re.findall(r"^eval global_step=(\d+) eval_return=", out, re.M)]
    assert len(evals) >= 2 and evals[0] >= 15000 and evals[-1] == int(res["global_step"])
    tags = events(tb)
    for tag in ["charts/episodic_return", "charts/episodic_length", "charts/fps", "charts/lr",
                "losses/policy", "losses/value", "losses/entropy", "eval/episodic_return", "eval/episodic_return_std"]:
        assert tag in tags and tags[tag], (tag, sorted(tags))
        assert all(0 <= s <= int(res["global_step"]) for s in tags[tag])
    assert tags["eval/episodic_return"] == evals
    res = result(_main_ok(capsys, "--play", str(ck), "--episodes", "3"))
    assert res["env"] == "CartPole-v1" and res["episodes"] == "3" and float(res["mean_return"]) >= 100


def test_lstm_cartpole_learns(tmp_path, capsys):
    out = _main_ok(capsys, "--env", "CartPole-v1", "--lstm", "--threads", "2", "--max-steps", "20000",
                   "--eval-every", "0", "--seed", "1", "--checkpoint-dir", str(tmp_path / "ck"), "--logdir", str(tmp_path))
    assert float(result(out)["mean_return"]) >= 80, out[-1500:]


@pytest.mark.parametrize("env,flags", [("Breakout-v0", []), (PAPER_ENV, ["--lstm"])])
def test_breakout_smoke_checkpoint_resume_play(tmp_path, capsys, env, flags):
    ck = str(tmp_path / "ck")
    common = ["--env", env, "--threads", "2", "--eval-every", "0", "--checkpoint-dir", ck, "--logdir", str(tmp_path), *flags]
    out = _main_ok(capsys, *common, "--max-steps", "600")
    path = "ALE skips 2-4 frames at random" if env == "Breakout-v0" else "AtariVectorEnv"
    assert path in out.splitlines()[0]
    res = result(out)
    assert res["env"] == env and 600 <= int(res["global_step"]) < 600 + 2 * 5
    out = _main_ok(capsys, *common, "--max-steps", "900", "--resume")
    assert 900 <= int(result(out)["global_step"]) < 900 + 2 * 5   # continued from T, not from 0
    assert result(_main_ok(capsys, "--play", ck, "--episodes", "1"))["episodes"] == "1"
    if flags:
        assert "add --lstm" in _main_error(capsys, *common[:-1], "--max-steps", "1000", "--resume")
    else:
        for bad in (str(tmp_path / "no" / "such" / "dir" / "x.mp4"), str(tmp_path / "x.unknown")):
            assert "--record cannot write" in _main_error(capsys, "--play", ck, "--record", bad)


def test_interrupt_saves_checkpoint_and_exits(tmp_path):
    """SIGINT and SIGTERM, also when started the way a background job is (SIGINT ignored)."""
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        ck = tmp_path / f"ck{sig}"
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "a3c.py"), "--env", "CartPole-v1", "--threads", "2",
                              "--log-interval", "0.5", "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "runs")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        for line in p.stdout:                              # wait until the threads are training
            if line.startswith("global_step=") and int(line.split()[0].split("=")[1]) > 0:
                break
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        assert "interrupted: saving checkpoint" in err and "Traceback" not in err
        with open(ck / "latest.json") as f:
            assert json.load(f)["T"] == int(result(out)["global_step"]) > 0


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
    with pytest.raises(SystemExit) as e:
        a3c.main(["--env", "CartPole-v1", "--threads", "2", "--max-steps", "100000", "--checkpoint-dir",
                  str(tmp_path / "ck"), "--logdir", str(tmp_path / "tb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and err == ["a3c.py: error: actor-learner 1 failed: ValueError: boom"]


# ---------------------------------------------------------------- bad input: one line, nothing destroyed
def _one_line_error(p, *needles):
    assert p.returncode not in (0, None)
    assert "Traceback" not in p.stderr, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.strip() and "WARNING" not in ln and not ln.startswith(("I0000", "E0000"))]
    assert len(errors) == 1 and errors[0].startswith("a3c.py: error: "), p.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def _main_error(capsys, *argv):
    """a3c.main in this process: exit status 2 and exactly one error line."""
    with pytest.raises(SystemExit) as e:
        a3c.main(list(argv))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("a3c.py: error: "), err
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


def test_checkpoints_never_destroy_and_broken_ones_fail_in_one_line(tmp_path, capsys):
    ck = tmp_path / "ck"
    run = ["--env", "CartPole-v1", "--threads", "1", "--max-steps", "200", "--eval-every", "0",
           "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb")]
    assert a3c.main(run) == 0
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
    latest = json.loads((ck / "latest.json").read_text())
    model = ck / latest["dir"]
    for text, needle in [("{not json", "unreadable or incomplete"), ("", "unreadable or incomplete"),
                         ('{"env": "CartPole-v1"}', "unreadable or incomplete"),
                         (json.dumps(dict(latest, dir="../../etc")), "not a saved model inside"),
                         (json.dumps(dict(latest, dir="step-999")), "not a saved model inside")]:
        (ck / "latest.json").write_text(text)
        assert needle in _main_error(capsys, "--play", str(ck))
    (ck / "latest.json").write_text(json.dumps(latest))
    data = [f for f in model.iterdir() if f.name.startswith("model.data")][0]
    data.write_bytes(data.read_bytes()[:100])               # truncated model file
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
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "a3c.py"), "--env", "CartPole-v1", "--threads", "1",
                          "--max-steps", "3000", "--eval-every", "0", "--log-interval", "0.2", "--save-interval", "0.1",
                          "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in p.stdout:
        if line.startswith("global_step="):
            break
    ck.rename(tmp_path / "moved")
    ck.write_text("now a file")                             # saving under it fails
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert "a3c.py: warning: checkpoint not saved" in err and "final checkpoint could not be written" in err
    assert int(result(out)["global_step"]) >= 3000          # training finished regardless


# ---------------------------------------------------------------- cluster mode on localhost
def _alive(marker):
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0


def test_cluster_localhost_trains_checkpoints_and_leaves_nothing(tmp_path):
    ck = tmp_path / "ck"
    p = run_a3c("--env", "CartPole-v1", "--workers", "2", "--threads", "1", "--max-steps", "3000", "--seed", "1",
                "--eval-every", "0", "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb"), cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT env=CartPole-v1 global_step="), last
    assert int(result(p.stdout)["global_step"]) >= 3000
    w1 = [ln for ln in p.stdout.splitlines() if ln.startswith("[worker 1] RESULT worker=1 ")]
    assert w1 and int(w1[0].split("fps=")[1].split()[0]) > 0   # worker 1 stepped too: T grew from both
    assert json.loads((ck / "latest.json").read_text())["T"] >= 3000
    assert not _alive(str(ck))                              # no ps or worker left running


def test_cluster_worker_death_stops_the_run(tmp_path):
    import signal
    import time
    ck = tmp_path / "ck"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "a3c.py"), "--env", "CartPole-v1", "--workers", "2",
                          "--threads", "1", "--log-interval", "0.5", "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in p.stdout:
        if line.startswith("[worker 1] global_step="):
            break
    pid = subprocess.run(["pgrep", "-f", f"{ck} .*--task-index 1"], capture_output=True, text=True).stdout.split()
    os.kill(int(pid[0]), signal.SIGKILL)
    t0 = time.time()
    out, err = p.communicate(timeout=120)
    assert time.time() - t0 < 60
    _one_line_error(subprocess.CompletedProcess([], p.returncode, out, err), "worker 1 exited with status -9")
    assert not _alive(str(ck))
