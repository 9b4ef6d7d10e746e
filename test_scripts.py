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
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

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


TF_LOG = re.compile(r"WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} ")  # TF's import chatter


def assert_one_line_error(rc, err, *needles, status=2):
    assert rc == status, err
    assert "Traceback" not in err, err
    lines = [l for l in err.strip().splitlines() if l.strip() and not TF_LOG.match(l)]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def memn2n_main(capsys, *args):
    """memn2n.main in this process (no TensorFlow import per call): (exit code, stdout, stderr).
    XLA is off unless asked for: its flags must be set before TensorFlow loads, which here it has."""
    argv = [str(a) for a in args] + ([] if "--xla" in args else ["--no-xla"])
    capsys.readouterr()
    rc = memn2n.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def result_of(out):
    line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def tree(path):
    """Every file under `path` with its bytes, to show that a refused run left them intact."""
    return {os.path.relpath(os.path.join(r, f), path): open(os.path.join(r, f), "rb").read()
            for r, _, files in os.walk(path) for f in files}


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


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """All 20 task files, each a small task-1-like set: enough for --joint and several tasks."""
    folder = tmp_path_factory.mktemp("babi_tiny")
    for t, name in babi_data.TASK_NAMES.items():
        write_task1_like(folder, 24, seed=t, name=f"qa{t}_{name}")
    return str(folder)


TINY = ["--epochs", 2, "--ls-epochs", 1, "--batch-size", 16]


@pytest.fixture(scope="module")
def trained(gen_dir, tmp_path_factory):
    """A model trained in this process on the generated task 1: (its folder, its RESULT)."""
    tmp = tmp_path_factory.mktemp("trained")
    argv = ["--task", "1", "--data-dir", gen_dir, "--epochs", "15", "--ls-epochs", "5", "--seed", "3",
            "--save", str(tmp / "model"), "--logdir", str(tmp / "runs"), "--no-xla"]
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        rc = memn2n.main(argv)
    finally:
        sys.stdout = real
    assert rc == 0
    return str(tmp / "model"), result_of(out.getvalue()), out.getvalue()


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


def test_parse_user_story_babi_and_plain_forms():
    babi = babi_data.parse_user_story(STORY.splitlines(), "s")
    plain = babi_data.parse_user_story(["Mary moved to the bathroom.", "John went to the hallway.",
                                        "Where is Mary?", "", "Sandra went to the garden.", "Where is Sandra?"], "p")
    assert [e["question_text"] for e in babi] == ["Where is Mary?", "What is Mary carrying?", "Where is Sandra?"]
    assert babi[1]["answer"] == "milk,apple" and babi[1]["support"] == [2, 3]
    assert babi[1]["story_text"][2] == "Mary got the milk there."
    assert [e["answer"] for e in plain] == [None, None]
    assert plain[0]["story_text"] == ["Mary moved to the bathroom.", "John went to the hallway."]
    assert plain[1]["story_text"] == ["Sandra went to the garden."]   # a blank line starts a new story
    with pytest.raises(babi_data.DataError, match="no questions"):
        babi_data.parse_user_story(["Mary went home."], "x")


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


def test_validation_split_is_a_random_tenth_of_the_training_set():
    exs = list(range(1000))
    train, val = babi_data.split_validation(exs)
    assert len(val) == 100 and sorted(train + val) == exs           # a partition: nothing lost or doubled
    assert train == sorted(train) and val == sorted(val)            # story order kept within each part
    assert val != exs[-100:] and max(val) - min(val) > 500          # random, not the last 10 % (Matlab code)


def test_validation_folds_partition_the_training_set():
    vals = []
    for fold in range(10):
        train, val = babi_data.validation_indices(1000, fold=fold)
        assert len(val) == 100 and sorted(np.r_[train, val]) == list(range(1000))
        vals.append(set(val))
    assert set().union(*vals) == set(range(1000)) and sum(map(len, vals)) == 1000   # each example held out once
    assert list(babi_data.validation_indices(1000, fold=10)[1]) == sorted(vals[0])     # fold 10 wraps to fold 0
    assert sorted(vals[0]) == sorted(np.random.RandomState(0).permutation(1000)[:100])  # fold 0: the paper's split
    for n in (15, 1006):                                                   # any size: each example once
        held = np.concatenate([babi_data.validation_indices(n, fold=k)[1] for k in range(10)])
        assert sorted(held) == list(range(n))


def test_hold_out_gives_each_fold_its_own_validation_questions(tiny_dir):
    data = memn2n.Data([1, 2], tiny_dir, 50, 0.1)
    for name in ("train", "val"):  # fold 0, as the construction leaves it: each task's split_validation, in order
        exs = [e for t in (1, 2) for e in babi_data.split_validation(babi_data.load_task(tiny_dir, t)[0])[name == "val"]]
        want = babi_data.vectorize(exs, data.word_idx, data.sentence_size, data.mem_slots)
        for got, expected in zip(data.splits[name], want):
            np.testing.assert_array_equal(got, expected)
    first = data.splits["val"]
    data.hold_out(3)
    train, val = data.splits["train"], data.splits["val"]
    whole = sum(len(p.answers) for p in data.train_val.values())
    assert len(train.answers) + len(val.answers) == whole and set(val.task_ids) == {1, 2}
    assert not set(map(id, val.examples)) & set(map(id, first.examples))            # another tenth
    assert not set(map(id, val.examples)) & set(map(id, train.examples))            # never trained on
    for split in (train, val):                                                     # arrays and text agree
        assert (split.answers == [data.word_idx[e["answer"]] for e in split.examples]).all()
    data.hold_out(0)
    assert [id(e) for e in data.splits["val"].examples] == [id(e) for e in first.examples]


# --------------------------------------------------------------------------- the model's math
def test_position_encoding_values_worked_by_hand():
    # J = 4 words, d = 2. Paper: l_kj = (1 - j/J) - (k/d)(1 - 2j/J); k = 1, j = 1: 0.75 - 0.25
    paper = memn2n.position_encoding(4, 2, "paper")
    assert paper[4, 0, 0] == pytest.approx(0.5)       # k=1, j=1
    assert paper[4, 3, 1] == pytest.approx(1.0)       # k=2, j=4: 0 - 1 * (1 - 2)
    assert paper[4, 1, 0] == pytest.approx(0.5)       # k=1, j=2: 0.5 - 0.5 * 0
    assert paper[2, 0, 1] == pytest.approx(0.5)       # J=2, k=2, j=1: 0.5 - 1 * 0
    assert (paper[2, 2:] == 0).all()                   # no weights past the sentence's own length
    # Matlab code: 1 + 4(k - (d+1)/2)(j - (J+1)/2)/(dJ), J = the longest sentence (4) for every row
    matlab = memn2n.position_encoding(4, 2, "matlab")
    assert matlab[4, 0, 0] == pytest.approx(1.375)     # 1 + 4(-0.5)(-1.5)/8
    assert matlab[4, 3, 1] == pytest.approx(1.375)     # 1 + 4(0.5)(1.5)/8
    assert matlab[2, 0, 0] == pytest.approx(1.375) and matlab[4, 1, 1] == pytest.approx(0.875)
    assert memn2n.position_encoding(4, 2)[4, 0, 0] == matlab[4, 0, 0]   # the default is the command line's


def _memn2n_graph(cfg_args, V=12, S=5, M=7):
    tf.disable_v2_behavior()
    cfg = memn2n.finish_args(memn2n.parse_args(cfg_args), [1])
    graph = tf.Graph()
    with graph.as_default():
        model = memn2n.build_graph(cfg, V, S, M)
    sess = tf.Session(graph=graph)
    sess.run(model.init)
    return cfg, model, sess


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_memn2n(cfg, params, stories, question, linear=False):
    """Equations (1)-(4) in NumPy, written from the paper (Sec. 2, 4.1), not from the graph."""
    K, te = cfg.hops, float(cfg.te)
    S = stories.shape[-1]
    l = memn2n.position_encoding(S, cfg.d, cfg.pe_formula) if cfg.pe else np.ones((S + 1, S, cfg.d))

    def embed(E, x):                                   # sum_j l_j * E x_j, for a sentence x of word ids
        return sum(l[(x > 0).sum()][j] * E[x[j]] for j in range(S))

    if cfg.tying == "adjacent":                        # A^{k+1} = C^k, B = A^1, W^T = C^K
        C = [params[f"C_{k}:0"] for k in range(1, K + 1)]
        A, B, W = [params["A_1:0"]] + C[:-1], params["A_1:0"], C[-1].T
        T_C = [params[f"T_C_{k}:0"] for k in range(1, K + 1)]
        T_A, H = [params["T_A_1:0"]] + T_C[:-1], None
    else:                                              # layer-wise: one A, one C, and u^{k+1} = H u^k + o^k
        A, C, B, W = [params["A:0"]] * K, [params["C:0"]] * K, params["B:0"], params["W:0"]
        T_A, T_C, H = [params["T_A:0"]] * K, [params["T_C:0"]] * K, params["H:0"]
    logits, attention = [], [[] for _ in range(K)]
    for x, q in zip(stories, question):
        u = embed(B, q)
        for k in range(K):
            full = [i for i in range(len(x)) if (x[i] > 0).any()]   # empty slots stay zero vectors
            m = np.array([embed(A[k], x[i]) + (te * T_A[k][i] if i in full else 0) for i in range(len(x))])
            c = np.array([embed(C[k], x[i]) + (te * T_C[k][i] if i in full else 0) for i in range(len(x))])
            p = m @ u if linear else _softmax(m @ u)                 # p_i = softmax(u^T m_i)   (1)
            o = p @ c                                                # o = sum_i p_i c_i        (2)
            u = (u @ H if H is not None else u) + o                  # u^{k+1} = u^k + o^k      (4)
            attention[k].append(p)
        logits.append(u @ W)                                         # a_hat = softmax(W(o^K + u^K)) (3)
    return np.array(logits), [np.array(p) for p in attention]


@pytest.mark.parametrize("flags", [["--hops", "1"], ["--hops", "3"], ["--hops", "3", "--tying", "layerwise"],
                                   ["--hops", "2", "--no-pe", "--no-te"], ["--hops", "2", "--pe-formula", "paper"]])
def test_graph_matches_numpy_reference_of_equations_1_to_4(flags):
    cfg, model, sess = _memn2n_graph(flags + ["--init-std", "0.3"])
    rng = np.random.RandomState(0)
    # sentences of 1-5 words, nil-padded after their last word as vectorize() writes them
    stories = rng.randint(1, 12, (6, 7, 5)) * (np.arange(5) < rng.randint(1, 6, (6, 7, 1)))
    stories[:, 5:] = 0                                                 # two empty memory slots
    question = rng.randint(1, 12, (6, 5)) * (np.arange(5) < rng.randint(1, 6, (6, 1)))
    answers = rng.randint(1, 12, 6)
    params = {v.name: value for v, value in zip(model.params, sess.run(model.params))}
    for linear in (False, True):                                       # after and during linear start
        model.linear.load(linear, sess)
        fd = memn2n.feed(model, stories, question, answers, 12)
        a_hat, attention, loss = sess.run([model.a_hat, model.attention, model.loss], fd)
        logits, want_p = reference_memn2n(cfg, params, stories, question, linear)
        np.testing.assert_allclose(a_hat, _softmax(logits), rtol=2e-4, atol=1e-6)
        for got, want in zip(attention, want_p):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)
        log_a_hat = logits - logits.max(1, keepdims=True)
        log_a_hat -= np.log(np.exp(log_a_hat).sum(1, keepdims=True))
        assert loss == pytest.approx(-log_a_hat[np.arange(6), answers].sum(), rel=1e-4)  # summed (Sec. 4.2)


def test_gradients_clipped_per_matrix_and_nil_embedding_stays_zero():
    cfg, model, sess = _memn2n_graph(["--init-std", "3.0"])                  # raw gradients far above 40
    rng = np.random.RandomState(1)
    stories, question = rng.randint(0, 12, (64, 7, 5)), rng.randint(0, 12, (64, 5))
    fd = memn2n.feed(model, stories, question, rng.randint(1, 12, 64), 12)
    with sess.graph.as_default():
        raw = [tf.norm(tf.convert_to_tensor(g)) for g in tf.gradients(model.loss, model.params)]
    assert max(sess.run(raw, fd)) > 40.0
    model.linear.load(False, sess)
    model.lr.load(1.0, sess)                                            # one step moves each matrix by its gradient
    before = sess.run(model.params)
    sess.run(model.train_op, fd)
    steps = [np.linalg.norm(b - a) for a, b in zip(sess.run(model.params), before)]
    assert max(steps) == pytest.approx(40.0, rel=1e-4)                # clipped to 40 ...
    assert all(s <= 40.0 * (1 + 1e-4) for s in steps)                  # ... each matrix on its own
    for _ in range(5):
        sess.run(model.train_op, fd)
    for v, value in zip(model.params, sess.run(model.params)):
        if v.name[0] in "AC":                                           # A_1, C_k: embeddings with a nil row
            assert np.all(value[0] == 0.0) and np.abs(value[1:]).sum() > 0, v.name


# --------------------------------------------------------------------------- training, saving, loading
def test_training_learns_what_an_untrained_model_cannot(trained, gen_dir):
    folder, res, out = trained
    assert float(res["test_acc"]) >= 0.95, out[-500:]
    _, meta = memn2n.read_model(folder)
    cfg = memn2n.finish_args(memn2n.parse_args(["--seed", "3"]), [1])
    data = memn2n.Data([1], gen_dir, cfg.mem_size, cfg.noise)
    sess, model, V = memn2n.open_model(cfg, meta)
    sess.run(model.init)
    model.linear.load(False, sess)
    untrained = (memn2n.evaluate(sess, model, data.splits["test"], V)[2] == data.splits["test"].answers).mean()
    assert untrained < 0.5                                               # 8 places: chance is about 1/8


def test_load_reproduces_result_and_shows_attention(trained, gen_dir, capsys):
    folder, res, _ = trained
    rc, out, err = memn2n_main(capsys, "--data-dir", gen_dir, "--load", folder, "--show", 2)
    assert rc == 0, err
    assert result_of(out)["test_acc"] == res["test_acc"]
    assert "hop1" in out and "hop3" in out and out.count("predicted:") == 2


def test_end_to_end_cli_with_xla_logs_and_tensorboard(gen_dir, tmp_path):
    rc, out, err = run_script("memn2n.py", "--task", "1", "--data-dir", gen_dir, "--epochs", "10",
                              "--ls-epochs", "5", "--logdir", str(tmp_path))
    assert rc == 0, err
    assert "epoch=1 lr=0.005" in out and "examples_per_sec=" in out and "linear_start_end epoch=5" in out
    assert float(result_of(out)["test_acc"]) >= 0.9, out[-500:]
    runs = [d for d in os.listdir(tmp_path) if d.startswith("memn2n_task1__1__")]
    assert len(runs) == 1 and any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / runs[0]))
    memn2n.read_model(str(tmp_path / runs[0] / "model"))                 # the default save: a fresh run folder


@pytest.mark.skipif(not BABI_DIR, reason="BABI_DIR not set: real bAbI data not available")
def test_real_task1_reaches_99_percent(tmp_path):
    rc, out, err = run_script("memn2n.py", "--task", "1", "--data-dir", BABI_DIR, "--logdir", str(tmp_path))
    assert rc == 0, err
    assert float(result_of(out)["test_acc"]) >= 0.99, out[-500:]


@pytest.mark.skipif(not BABI_DIR, reason="BABI_DIR not set: real bAbI data not available")
def test_real_data_files_parse_and_match_checksums():
    for t in range(1, 21):
        train, test = babi_data.load_task(BABI_DIR, t)
        assert len(train) == 1000 and len(test) == 1000
    for name, want in babi_data.EN_SHA256.items():
        with open(os.path.join(BABI_DIR, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == want


def _config(folder):
    return memn2n.read_model(folder)[1]


def _variables(folder):
    sub, meta = memn2n.read_model(folder)
    return {n for n, _ in tf.train.list_variables(os.path.join(sub, meta["members"][0]))}


VARIANTS = {  # flag -> what the run must show for it
    "layerwise": (["--tying", "layerwise"], lambda out, m: _config(m)["tying"] == "layerwise" and "H" in _variables(m)),
    "no-pe": (["--no-pe"], lambda out, m: _config(m)["pe"] is False),
    "no-te": (["--no-te"], lambda out, m: _config(m)["te"] is False),
    "no-ls": (["--no-ls"], lambda out, m: "epoch=1 lr=0.01 " in out and "linear_start_end" not in out),
    "no-rn": (["--no-rn"], lambda out, m: _config(m)["mem_slots"] == 10),   # 10 statements, no room for noise
    "rn": ([], lambda out, m: _config(m)["mem_slots"] == 11 and "linear_start_end epoch=1" in out),
    "joint": (["--joint"], lambda out, m: _config(m)["tasks"] == list(range(1, 21))
              and result_of(out)["tasks"] == "20" and "joint PE LS RN" in out),
    "runs-val": (["--runs", 2, "--select", "val"], lambda out, m: out.count("val_error=") == 2
                 and _config(m)["members"] == ["model"] and out.rstrip().endswith("runs=2 select=val")),
    "runs-train": (["--runs", 2], lambda out, m: out.count("train_error=") == 2
                   and out.rstrip().endswith("runs=2 select=train")),
    "val-folds": (["--runs", 2, "--select", "val", "--val-folds"], lambda out, m: _config(m)["val_folds"] is True
                  and out.rstrip().endswith("runs=2 select=val val_folds=1")),
    "no-val-folds": (["--runs", 2, "--select", "ensemble", "--no-val-folds"], lambda out, m:
                     _config(m)["val_folds"] is False and out.rstrip().endswith("runs=2 select=ensemble")),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_saves_and_reports(variant, tiny_dir, tmp_path, capsys):
    flags, check = VARIANTS[variant]
    task = [] if variant == "joint" else ["--task", 1]                   # --joint takes no --task
    args = [*task, "--data-dir", tiny_dir, *TINY, "--save", tmp_path / "m", "--logdir", tmp_path, *flags]
    rc, out, err = memn2n_main(capsys, *args)
    assert rc == 0, err
    assert check(out, str(tmp_path / "m")), out[-1500:]


@pytest.mark.parametrize("select", ["train", "val"])
def test_select_keeps_the_run_with_the_lowest_error(select, gen_dir, tmp_path, capsys):
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", gen_dir, *TINY, "--runs", 3, "--select", select,
                               "--save", tmp_path / "m", "--logdir", tmp_path)
    assert rc == 0, err
    rows = re.findall(r"^run=\d train_error=([\d.]+) val_error=([\d.]+)$", out, re.M)
    printed = [float(row[0 if select == "train" else 1]) for row in rows]
    assert len(printed) == 3 and len(set(printed)) > 1, out             # the runs differ
    sub, meta = memn2n.read_model(str(tmp_path / "m"))
    cfg = memn2n.finish_args(memn2n.parse_args([]), [1])
    data = memn2n.Data([1], gen_dir, cfg.mem_size, cfg.noise, meta)
    sess, model, V = memn2n.open_model(cfg, meta)
    memn2n.restore(sess, model, sub, "model")
    split = data.splits[select]
    kept = 100 * (1 - (memn2n.evaluate(sess, model, split, V)[2] == split.answers).mean())
    assert kept == pytest.approx(min(printed), abs=0.051)               # the kept run is the best one


@pytest.mark.parametrize("flag,folds", [([], [0, 1, 2]), (["--no-val-folds"], [0, 0, 0])])
def test_an_ensembles_runs_hold_out_their_own_tenths(flag, folds, tiny_dir, tmp_path, capsys, monkeypatch):
    used, real = [], memn2n.Data.hold_out
    monkeypatch.setattr(memn2n.Data, "hold_out", lambda self, fold: (used.append(fold), real(self, fold))[1])
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--runs", 3, "--select",
                               "ensemble", "--logdir", tmp_path, *flag)
    assert rc == 0, err
    assert used == [0] + folds                                          # Data() sets fold 0, then each run its own


def test_ensemble_averages_the_runs_answer_distributions(tiny_dir, tmp_path, capsys):
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--runs", 3, "--select",
                               "ensemble", "--save", tmp_path / "m", "--logdir", tmp_path)
    assert rc == 0, err
    assert out.rstrip().endswith("runs=3 select=ensemble val_folds=1")   # each run held out its own tenth
    sub, meta = memn2n.read_model(str(tmp_path / "m"))
    assert meta["members"] == ["model-1", "model-2", "model-3"]
    cfg = memn2n.finish_args(memn2n.parse_args([]), [1])
    data = memn2n.Data([1], tiny_dir, cfg.mem_size, cfg.noise, meta)
    sess, model, V = memn2n.open_model(cfg, meta)
    test = data.splits["test"]
    each = []
    for member in meta["members"]:                                       # the runs differ ...
        memn2n.restore(sess, model, sub, member)
        each.append(memn2n.evaluate(sess, model, test, V)[1])
    assert not np.allclose(each[0], each[1])
    a_hat, prediction, _ = memn2n.predict(sess, model, sub, meta["members"], test, V)
    np.testing.assert_allclose(a_hat, np.mean(each, 0), rtol=1e-6)     # ... and the ensemble is their mean
    assert (prediction == np.mean(each, 0).argmax(1)).all()
    error = 100 * (1 - (prediction == test.answers).mean())
    rc, out2, err = memn2n_main(capsys, "--data-dir", tiny_dir, "--load", tmp_path / "m")
    assert rc == 0, err
    assert float(result_of(out2)["test_error"]) == pytest.approx(error, abs=0.05) == float(result_of(out)["test_error"])


def test_several_tasks_in_worker_processes_then_load_them(tiny_dir, tmp_path, capsys):
    save = tmp_path / "tasks"
    rc, out, err = run_script("memn2n.py", "--task", "2,1", "--data-dir", tiny_dir, *map(str, TINY), "--jobs", "2",
                              "--save", str(save), "--logdir", str(tmp_path), "--no-xla")
    assert rc == 0, err
    assert re.search(r"task=1 test_error=[\d.]+ wall_s=", out) and re.search(r"task=2 test_error=", out)
    res = result_of(out)
    assert res["tasks"] == "2" and "single-supporting-fact" in out and "two-supporting-facts" in out
    rc, out2, err = memn2n_main(capsys, "--data-dir", tiny_dir, "--load", save, "--task", 2)   # one of them
    assert rc == 0, err
    assert re.search(rf"^ +2 +two-supporting-facts +{result_of(out2)['test_error']} ", out, re.M)


# --------------------------------------------------------------------------- --ask
ASK_STORY = """Mary went to the kitchen.
John went to the garden.
Where is Mary?
Mary went to the zorblax.
Sandra went to the office.
Where is Sandra?
"""


def test_ask_answers_own_story_warns_about_unknown_words_and_long_stories(trained, tmp_path, capsys):
    folder, _, _ = trained
    long = [f"{i} Mary went to the {PLACES[i % 8]}." for i in range(1, 21)] + ["21 Where is Mary?\tbedroom\t20"]
    for name, text in (("plain.txt", ASK_STORY), ("long.txt", "\n".join(long))):
        (tmp_path / name).write_text(text)
    rc, out, err = memn2n_main(capsys, "--load", folder, "--ask", tmp_path / "plain.txt")
    assert rc == 0, err
    questions = [l for l in out.splitlines() if l.startswith("question=")]
    assert questions[0].startswith('question="Where is Mary?" answer=kitchen p=')
    assert questions[1].startswith('question="Where is Sandra?" answer=office p=')
    assert 0.5 < float(questions[1].split("p=")[1]) <= 1.0
    assert err.count("\n") == 1 and "warning: words the model never saw" in err and "zorblax" in err
    assert "Traceback" not in err and "hop3" in out
    rc, out, err = memn2n_main(capsys, "--load", folder, "--ask", tmp_path / "long.txt")  # 20 lines, memory 11
    assert rc == 0, err
    assert "only the 11 most recent sentences" in err and err.count("\n") == 1
    assert out.splitlines()[0].startswith('question="Where is Mary?" answer=bedroom') and "true=bedroom" in out
    assert len([l for l in out.splitlines() if "Mary went to the" in l]) == 11   # the attention table


def test_ask_reads_stdin(trained, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ASK_STORY.encode())))
    rc, out, err = memn2n_main(capsys, "--load", trained[0], "--ask", "-")
    assert rc == 0, err
    assert out.count("question=") == 2


# --------------------------------------------------------------------------- bad input: one line, exit 2
BAD_FLAGS = [  # (arguments, what the one error line must say)
    (["--task", "0"], "unknown task '0'"), (["--task", "21"], "1 to 20"), (["--task", "x"], "'all'"),
    (["--task", "1,"], "unknown task"), (["--epochs", "0"], "--epochs 0 is out of range"),
    (["--epochs", "-3"], "--epochs"), (["--embedding-size", "0"], "--embedding-size 0"),
    (["-d", "-1"], "--embedding-size"), (["--hops", "0"], "--hops"), (["--hops", "100"], "1 to 10"),
    (["--mem-size", "0"], "--mem-size"), (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "5000"], "more than the 1350 training questions"), (["--runs", "0"], "--runs"),
    (["--jobs", "0"], "--jobs"), (["--noise", "1"], "--noise"), (["--noise", "-0.1"], "[0, 1)"),
    (["--lr", "-0.01"], "--lr -0.01 must be a positive number"), (["--ls-lr", "0"], "--ls-lr"),
    (["--lr", "nan"], "--lr nan"), (["--init-std", "inf"], "--init-std"), (["--max-grad-norm", "0"], "--max-grad"),
    (["--anneal-every", "0"], "--anneal-every"), (["--ls-epochs", "-1"], "--ls-epochs"),
    (["--log-every", "0"], "--log-every"), (["--show", "-1"], "--show"), (["--seed", "-5"], "--seed"),
    (["--epochs", "x"], "invalid int value"), (["--bogus"], "unrecognized arguments: --bogus"),
    (["--tying", "x"], "invalid choice"), (["--select", "best"], "invalid choice"),
    (["--ask", "story.txt"], "--ask needs a trained model"), (["--overwrite"], "--overwrite applies to --save"),
    (["--joint", "--task", "3"], "drop --task"), (["--val-folds"], "add --runs N"), (["--load", "x", "--save", "y"], "--load only evaluates"),
]


@pytest.mark.parametrize("args,needle", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_exit_2(args, needle, gen_dir, tmp_path, capsys):
    rc, out, err = memn2n_main(capsys, "--data-dir", gen_dir, "--logdir", tmp_path / "runs", *args)
    assert_one_line_error(rc, err, "memn2n.py: error:", needle)
    assert not (tmp_path / "runs").exists()                              # refused before anything was made


def test_batch_size_check_counts_each_runs_own_training_tenths(tmp_path, capsys):
    folder = write_task1_like(tmp_path, 5, seed=1)                  # 25 training questions
    assert [len(babi_data.validation_indices(25, fold=k)[0]) for k in range(3)] == [23, 22, 22]
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", folder, "--logdir", tmp_path / "runs",
                               "--batch-size", 23, "--runs", 3, "--select", "ensemble")
    assert_one_line_error(rc, err, "--batch-size 23 is more than the 22 training questions")


def _data_dir(tmp_path, edit):
    write_task1_like(tmp_path, 4, seed=1)
    path = tmp_path / "qa1_single-supporting-fact_train.txt"
    edit(path)
    return str(tmp_path), str(path)


def _lines(path, i, text):
    lines = path.read_text().splitlines()
    lines[i] = text
    path.write_text("\n".join(lines) + "\n")


BAD_DATA = {  # name -> (how to break the train file, what the error line says)
    "question with two fields": (lambda p: _lines(p, 6, "7 Where is Mary?\tkitchen"),
                                 ["qa1_single-supporting-fact_train.txt:7:", "question<TAB>answer<TAB>supporting ids"]),
    "undecodable bytes": (lambda p: p.write_bytes(p.read_bytes()[:50] + b"\xff\xfe went\n"),
                          ["_train.txt:2: not UTF-8 text (byte 0xff)"]),
    "unreadable file": (lambda p: (p.unlink(), p.symlink_to("/proc/self/mem")), ["cannot read", "_train.txt"]),
    "line numbers skip": (lambda p: _lines(p, 2, "5 Mary went to the kitchen."), [":3: line number 5 after 2"]),
    "200k-word sentence": (lambda p: _lines(p, 1, "2 " + "word " * 200000), [":2: a sentence of 200000 words",
                                                                             "100 allowed"]),
    "no questions": (lambda p: p.write_text("1 Mary went home.\n"), ["no question lines"]),
    "support id of a later line": (lambda p: _lines(p, 2, "3 Where is Mary?\tkitchen\t9"), ["supporting ids"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_broken_data_is_one_line_exit_2(case, tmp_path, capsys):
    edit, needles = BAD_DATA[case]
    data_dir, _ = _data_dir(tmp_path, edit)
    t0 = time.time()
    rc, _, err = memn2n_main(capsys, "--task", 1, "--data-dir", data_dir, "--logdir", tmp_path / "runs")
    assert_one_line_error(rc, err, *needles)
    assert time.time() - t0 < 20                                        # no 2.9 TiB allocation first


def test_missing_data_folder_task_file_or_network(tmp_path, gen_dir, capsys, monkeypatch):
    for args, needles in ((["--data-dir", tmp_path / "nope"], ["does not exist", "--data-dir"]),
                          (["--data-dir", os.path.join(gen_dir, "qa1_single-supporting-fact_test.txt")],
                           ["is not a folder"]),
                          (["--task", 2, "--data-dir", gen_dir],
                           [os.path.join(gen_dir, "qa2_two-supporting-facts_train.txt"), "--data-dir"])):
        rc, _, err = memn2n_main(capsys, *args)
        assert_one_line_error(rc, err, *needles)
    env = {"BABI_DIR": "", "XDG_CACHE_HOME": str(tmp_path), "BABI_URL": "http://127.0.0.1:9/tasks.tar.gz"}
    rc, _, err = run_script("memn2n.py", "--task", "1", env=env)
    assert_one_line_error(rc, err, "cannot download", "127.0.0.1:9", "--data-dir")
    assert os.listdir(tmp_path / "babi") == []       # nothing half-written left in the cache


def _damage(kind, folder):
    sub, meta = memn2n.read_model(folder)
    if kind == "config not JSON":
        (open(os.path.join(sub, "config.json"), "w")).write("{'tasks': [1")
    elif kind == "config lacks word_idx":
        del meta["word_idx"]
        json.dump(meta, open(os.path.join(sub, "config.json"), "w"))
    elif kind == "config impossible":
        json.dump(dict(meta, hops=-2), open(os.path.join(sub, "config.json"), "w"))
    elif kind == "config size does not match weights":
        json.dump(dict(meta, d=50), open(os.path.join(sub, "config.json"), "w"))
    elif kind == "pointer damaged":
        open(os.path.join(folder, "memn2n.json"), "w").write("garbage")
    elif kind == "pointer leaves the folder":
        json.dump({"written_by": "memn2n.py", "model": "../../etc"}, open(os.path.join(folder, "memn2n.json"), "w"))
    elif kind == "index missing":
        os.remove(os.path.join(sub, "model.index"))
    elif kind == "weights truncated":
        data = [f for f in os.listdir(sub) if f.startswith("model.data")][0]
        with open(os.path.join(sub, data), "r+b") as f:
            f.truncate(100)
    elif kind == "weights missing":
        os.remove(os.path.join(sub, [f for f in os.listdir(sub) if f.startswith("model.data")][0]))


BAD_CHECKPOINTS = {"config not JSON": "config.json", "config lacks word_idx": "'word_idx' missing",
                   "config impossible": "impossible values", "config size does not match weights": "does not match",
                   "pointer damaged": "memn2n.json is damaged", "pointer leaves the folder": "names no model subfolder",
                   "index missing": "model.index is missing", "weights truncated": "damaged",
                   "weights missing": "damaged"}


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_broken_checkpoint_is_one_line_exit_2(kind, trained, gen_dir, tmp_path, capsys):
    folder = str(tmp_path / "model")
    shutil.copytree(trained[0], folder)
    _damage(kind, folder)
    (tmp_path / "story.txt").write_text("Mary went to the kitchen.\nWhere is Mary?\n")
    for extra in ([], ["--ask", tmp_path / "story.txt"]):
        rc, _, err = memn2n_main(capsys, "--data-dir", gen_dir, "--load", folder, *extra)
        assert_one_line_error(rc, err, BAD_CHECKPOINTS[kind], "--save")


def test_load_of_nothing_or_of_several_tasks_with_ask(tmp_path, gen_dir, capsys):
    rc, _, err = memn2n_main(capsys, "--data-dir", gen_dir, "--load", tmp_path / "none")
    assert_one_line_error(rc, err, "no checkpoint at", "--save")
    (tmp_path / "tasks" / "task1").mkdir(parents=True)
    (tmp_path / "tasks" / "memn2n.json").write_text('{"written_by": "memn2n.py", "tasks": true}')
    rc, _, err = memn2n_main(capsys, "--load", tmp_path / "tasks", "--ask", "-")
    assert_one_line_error(rc, err, "one model per task", "task<t>")
    rc, _, err = memn2n_main(capsys, "--data-dir", gen_dir, "--load", tmp_path / "tasks", "--task", "2")
    assert_one_line_error(rc, err, "has no model for task 2")


# --------------------------------------------------------------------------- never destroy what the run did not create
def _foreign(path):
    (path / ".git").mkdir(parents=True)
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "thesis.tex").write_text("chapter 1")
    return tree(path)


SAVE_REFUSALS = {  # name -> (prepare tmp_path, --save target, extra flags, what the error says)
    "someone's folder": (lambda t: _foreign(t / "d"), "d", [], "was not written by memn2n.py"),
    "someone's folder, --overwrite": (lambda t: _foreign(t / "d"), "d", ["--overwrite"], "--overwrite only replaces"),
    "someone's config.json, --overwrite": (lambda t: (t / "d").mkdir() or (t / "d" / "config.json").write_text(
        '{"name": "my project"}'), "d", ["--overwrite"], "was not written by memn2n.py"),
    "a file": (lambda t: (t / "d").write_text("notes"), "d", [], "is a file"),
    "under a file": (lambda t: (t / "f").write_text("notes"), "f/d", [], "cannot write --save"),
    "a memn2n model, no --overwrite": (lambda t: shutil.copytree(TRAINED[0], t / "d"), "d", [], "pass --overwrite"),
    "a model as the folder of several tasks": (lambda t: shutil.copytree(TRAINED[0], t / "d"), "d",
                                               ["--task", "1,2", "--overwrite"], "not the models of several tasks"),
    "logdir under a file": (lambda t: (t / "f").write_text("notes"), "d", ["--logdir", "{work}/f/runs"],
                            "cannot write --logdir"),
}
TRAINED = []


@pytest.mark.parametrize("case", list(SAVE_REFUSALS))
def test_save_refuses_what_it_did_not_write(case, trained, tiny_dir, tmp_path, capsys):
    TRAINED[:] = trained
    prepare, target, flags, needle = SAVE_REFUSALS[case]
    (tmp_path / "work").mkdir()
    prepare(tmp_path / "work")
    before, entries = tree(tmp_path / "work"), sorted(os.listdir(tmp_path / "work"))
    args = ["--task", 1, "--data-dir", tiny_dir, *TINY, "--logdir", tmp_path / "work" / "runs",
            "--save", tmp_path / "work" / target, *[f.format(work=tmp_path / "work") for f in flags]]
    rc, _, err = memn2n_main(capsys, *args)
    assert_one_line_error(rc, err, needle)
    assert tree(tmp_path / "work") == before                             # everything as it was ...
    assert sorted(os.listdir(tmp_path / "work")) == entries               # ... and nothing added


def test_overwrite_replaces_only_its_own_model(trained, tiny_dir, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(trained[0], model)
    old_sub = memn2n.read_model(str(model))[0]
    (model / "notes.txt").write_text("mine")                             # the user's file inside the folder
    for sibling in ("m.tmp", "m.old"):                                   # earlier versions deleted these
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "keep").write_text("x")
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--save", model, "--overwrite",
                               "--logdir", tmp_path / "runs")
    assert rc == 0, err
    new_sub, meta = memn2n.read_model(str(model))
    assert new_sub != old_sub and not os.path.exists(old_sub)            # the old model is gone, the new one complete
    assert (model / "notes.txt").read_text() == "mine"
    assert (tmp_path / "m.tmp" / "keep").exists() and (tmp_path / "m.old" / "keep").exists()
    assert sorted(os.listdir(model)) == sorted(["memn2n.json", "notes.txt", os.path.basename(new_sub)])


def test_model_saved_by_earlier_versions_loads_and_is_replaced(trained, gen_dir, tiny_dir, tmp_path, capsys):
    sub, meta = memn2n.read_model(trained[0])
    legacy = tmp_path / "old"                                           # config.json and model.* in the folder
    shutil.copytree(sub, legacy)
    meta.pop("members"), meta.pop("joint")
    (legacy / "config.json").write_text(json.dumps(meta))
    (legacy / "checkpoint").write_text('model_checkpoint_path: "model"\n')
    rc, out, err = memn2n_main(capsys, "--data-dir", gen_dir, "--load", legacy)
    assert rc == 0, err
    assert result_of(out)["test_acc"] == trained[1]["test_acc"]
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--save", legacy, "--overwrite",
                               "--logdir", tmp_path / "runs")
    assert rc == 0, err
    new_sub, _ = memn2n.read_model(str(legacy))
    assert sorted(os.listdir(legacy)) == ["memn2n.json", os.path.basename(new_sub)]


def test_failed_final_save_says_where_the_model_went(tiny_dir, tmp_path, capsys, monkeypatch):
    real, calls = memn2n.save_model, []

    def disk_full_once(sess, model, folder, *a):
        calls.append(folder)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(sess, model, folder, *a)
    monkeypatch.setattr(memn2n, "save_model", disk_full_once)
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--save", tmp_path / "m",
                               "--logdir", tmp_path / "runs")
    assert_one_line_error(rc, err, f"could not save the model to {tmp_path / 'm'} (No space left on device)",
                          f"it was saved to {calls[1]} instead", status=1)
    assert "RESULT task=1" in out                                        # and it was still evaluated
    memn2n.read_model(calls[1])
    shutil.rmtree(calls[1])


@pytest.mark.parametrize("crash_at", ["saver", "config", "pointer"])
def test_crashed_save_keeps_old_model_and_no_temp_folder(crash_at, trained, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    shutil.copytree(trained[0], folder)
    old_sub, meta = memn2n.read_model(str(folder))
    cfg = memn2n.finish_args(memn2n.parse_args([]), [1])
    sess, model, V = memn2n.open_model(cfg, meta)
    memn2n.restore(sess, model, old_sub, "model")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    if crash_at == "saver":
        monkeypatch.setattr(model.saver, "save", boom)
    elif crash_at == "config":
        monkeypatch.setattr(memn2n.json, "dump", boom)
    else:
        monkeypatch.setattr(memn2n.os, "replace", boom)
    with pytest.raises(OSError):
        memn2n.save_model(sess, model, str(folder), meta, [sess.run(model.params)])
    monkeypatch.undo()
    assert memn2n.read_model(str(folder))[0] == old_sub                  # the old model, complete
    memn2n.restore(sess, model, old_sub, "model")
    assert sorted(os.listdir(folder)) == ["memn2n.json", os.path.basename(old_sub)]   # no .tmp-* left


def test_second_ctrl_c_during_save_waits_until_the_model_is_complete(trained, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(trained[0], folder)
    sub, meta = memn2n.read_model(str(folder))
    cfg = memn2n.finish_args(memn2n.parse_args([]), [1])
    sess, model, V = memn2n.open_model(cfg, meta)
    memn2n.restore(sess, model, sub, "model")
    real_save = model.saver.save

    def save_then_ctrl_c(*a, **k):
        path = real_save(*a, **k)
        os.kill(os.getpid(), signal.SIGINT)                              # in the middle of the save
        time.sleep(0.05)
        return path
    memn2n.SIGNALS.install()
    try:
        model.saver.save = save_then_ctrl_c
        new = memn2n.save_model(sess, model, str(folder), meta, [sess.run(model.params)])  # no KeyboardInterrupt
        assert memn2n.SIGNALS.received == signal.SIGINT
    finally:
        memn2n.SIGNALS.uninstall()
    assert memn2n.read_model(str(folder))[0] == new and not os.path.exists(sub)
    memn2n.restore(sess, model, new, "model")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")   # the dropped KeyboardInterrupt
def test_a_signal_whose_interrupt_python_dropped_still_stops_training(trained, gen_dir):
    """Python drops an exception raised in a __del__; if the signal handler's KeyboardInterrupt fires
    there, training must stop anyway, at its next batch, not after --epochs."""
    sub, meta = memn2n.read_model(trained[0])
    cfg = memn2n.finish_args(memn2n.parse_args(["--epochs", "300", "--no-xla"]), [1])
    sess, model, V = memn2n.open_model(cfg, meta)
    memn2n.restore(sess, model, sub, "model")
    data = memn2n.Data([1], gen_dir, cfg.mem_size, 0.0, meta)

    class Dropper:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)                                             # the handler raises here, and is dropped
    memn2n.SIGNALS.install()
    try:
        Dropper()
        assert memn2n.SIGNALS.received == signal.SIGINT
        t0 = time.time()
        with pytest.raises(KeyboardInterrupt):
            memn2n.train(sess, model, data, cfg, np.random.RandomState(0), None)
        assert time.time() - t0 < 5
    finally:
        memn2n.SIGNALS.uninstall()
        sess.close()
    assert memn2n.SIGNALS.received is None                               # uninstall leaves no stale signal behind


# --------------------------------------------------------------------------- signals
def _start(args, ignore_sigint=False):
    """memn2n.py as a job scheduler or a background shell job starts it (SIGINT ignored there)."""
    pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([sys.executable, os.path.join(HERE, "memn2n.py"), *map(str, args)], preexec_fn=pre,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _wait_for(p, pattern, count=1):
    seen = set()
    for line in p.stdout:
        m = re.match(pattern, line)
        if m:
            seen.add(m.group(1))
            if len(seen) >= count:
                return


@pytest.mark.parametrize("sig,ignored,status", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)])
def test_signal_saves_model_and_exits(sig, ignored, status, gen_dir, tmp_path):
    save = tmp_path / "model"
    p = _start(["--task", 1, "--data-dir", gen_dir, "--epochs", 1000, "--save", save, "--logdir", tmp_path,
                "--no-xla"], ignore_sigint=ignored)
    _wait_for(p, r"epoch=(3) ")                                          # training is under way
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert_one_line_error(p.returncode, err, "interrupted: saved the model trained so far to", str(save),
                          status=status)
    memn2n.read_model(str(save))


@pytest.mark.parametrize("sig,ignored,status", [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)])
def test_signal_stops_every_task_and_says_which_saved(sig, ignored, status, tiny_dir, tmp_path):
    save = tmp_path / "tasks"
    p = _start(["--task", "all", "--jobs", 2, "--data-dir", tiny_dir, "--epochs", 10000, "--log-every", 1,
                "--save", save, "--logdir", tmp_path, "--no-xla"], ignore_sigint=ignored)
    _wait_for(p, r"task=(\d+) epoch=", count=2)                          # two tasks training, 18 waiting
    t0 = time.time()
    p.send_signal(sig)                                                   # to the main process only
    _, err = p.communicate(timeout=120)
    assert time.time() - t0 < 30, err[-3000:]                            # promptly, not after 10000 epochs
    assert_one_line_error(p.returncode, err, "interrupted: finished tasks: none", "stopped without a model: ",
                          status=status)
    saved = re.findall(r"(\d+) \(([^)]*)\)", err.split("saved what they had trained:")[1])
    assert len(saved) == 2 and all(memn2n.read_model(path) for _, path in saved)
    assert len(err.split("stopped without a model: ")[1].split()) == 18
    assert sorted(os.listdir(save)) == sorted(["memn2n.json"] + [f"task{t}" for t, _ in saved])


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


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """/trickle sends a byte every 0.3 s; /big sends 2 MB without saying how long it is."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        try:
            if self.path == "/trickle":
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.3)
            else:
                self.wfile.write(b"x" * 2_000_000)
        except OSError:
            pass

    def log_message(self, *a):
        pass


@pytest.fixture
def served(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 for the download tests (and /trickle, /big on another port)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (handler, SlowHandler)]
    for s in servers:
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    yield www, f"http://127.0.0.1:{servers[0].server_port}", f"http://127.0.0.1:{servers[1].server_port}"
    for s in servers:
        s.shutdown()


CONTENT = {"qa1_single-supporting-fact_train.txt": b"1 Mary went to the hall.\n2 Where is Mary?\thall\t1\n"}
MANIFEST = {n: hashlib.sha256(d).hexdigest() for n, d in CONTENT.items()}


def test_download_good_archive_keeps_only_listed_files_and_clears_stale_partials(served, tmp_path):
    www, base, _ = served
    files = {f"tasks_1-20_v1-2/en/{n}": d for n, d in CONTENT.items()}
    files["tasks_1-20_v1-2/en/unlisted.sh"] = b"rm -rf ~\n"                 # not in the manifest: not kept
    (www / "good.tar.gz").write_bytes(_archive(files))
    cache = tmp_path / "cache"
    for name, age in ((".partial-dead", 10_000), (".partial-live", 0)):   # a killed download, a running one
        (cache / name).mkdir(parents=True)
        (cache / name / "archive.tar.gz").write_bytes(b"x")
        old = time.time() - age
        for p in (cache / name / "archive.tar.gz", cache / name):
            os.utime(p, (old, old))
    got = babi_data.download(f"{base}/good.tar.gz", str(cache), MANIFEST)
    assert got == str(cache / "tasks_1-20_v1-2" / "en")
    assert os.listdir(got) == list(CONTENT)
    assert (cache / "tasks_1-20_v1-2/en/qa1_single-supporting-fact_train.txt").read_bytes() == \
        CONTENT["qa1_single-supporting-fact_train.txt"]
    assert sorted(os.listdir(cache)) == [".partial-live", "tasks_1-20_v1-2"]


@pytest.mark.parametrize("case", ["deadline", "size from header", "size while streaming", "unwritable cache"])
def test_download_gives_up_in_time_and_keeps_nothing(case, served, tmp_path):
    www, base, slow = served
    (www / "good.tar.gz").write_bytes(_archive({f"tasks_1-20_v1-2/en/{n}": d for n, d in CONTENT.items()}))
    cache = tmp_path / "cache"
    url, kw, needle = {"deadline": (f"{slow}/trickle", dict(deadline_s=1.5), "took longer than 1.5 s"),
                       "size from header": (f"{base}/good.tar.gz", dict(max_bytes=50), "would be"),
                       "size while streaming": (f"{slow}/big", dict(max_bytes=100_000), "passed 100000 bytes"),
                       "unwritable cache": (f"{base}/good.tar.gz", {}, "cannot write the download cache")}[case]
    if case == "unwritable cache":
        (tmp_path / "file").write_text("x")
        cache = tmp_path / "file" / "cache"
    t0 = time.time()
    with pytest.raises(babi_data.DataError, match=re.escape(needle)):
        babi_data.download(url, str(cache), MANIFEST, timeout=5, **kw)
    assert time.time() - t0 < 8
    assert case == "unwritable cache" or os.listdir(cache) == []


def test_download_bad_checksum_keeps_nothing(served, tmp_path):
    www, base, _ = served
    (www / "bad.tar.gz").write_bytes(_archive({"tasks_1-20_v1-2/en/qa1_single-supporting-fact_train.txt": b"1 x\n"}))
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(babi_data.DataError, match="checksum mismatch"):
        babi_data.download(f"{base}/bad.tar.gz", str(cache), MANIFEST)
    assert os.listdir(cache) == []                   # no partial folder, no temporary files


@pytest.mark.parametrize("evil", ["../escape.txt", "/tmp/abs.txt", "link"])
def test_download_rejects_escaping_members(served, tmp_path, evil):
    www, base, _ = served
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


def test_babi_data_command_line_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        babi_data.main(["--bogus"])
    assert e.value.code == 2
    assert babi_data.main(["--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err and "babi_data.py: error: data folder" in err


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


@pytest.mark.parametrize("make", [lambda: atari_env.AtariEnv(PAPER_ENV, seed=5),
                                  lambda: atari_env.VectorAtariEnv(PAPER_ENV, seed=5),
                                  lambda: atari_env.VectorObsEnv("CartPole-v1", seed=5)], ids=["opencv", "vector", "obs"])
def test_reset_seeds_only_the_first_game(make):
    """The evaluator resets its env before every evaluation: a reseed would replay the same starts."""
    env, seeds = make(), []
    real = env.env.reset
    env.env.reset = lambda seed=None, **kw: (seeds.append(seed), real(seed=seed, **kw))[1]
    env.reset()
    env.reset()
    assert seeds == [5, None], seeds


@pytest.mark.parametrize("vector", [False, True], ids=["opencv", "vector"])
def test_game_over_on_the_time_limit_step_is_terminal(vector):
    """A game that ends (terminated) on the step that also hits the frame limit is a real end: R = 0."""
    env = (atari_env.VectorAtariEnv if vector else atari_env.AtariEnv)(PAPER_ENV, seed=0)
    env.reset()
    real = env.env.step

    def step(a):                                           # the emulator says: game over and time limit, at once
        obs, r, term, trunc, info = real(a)
        if vector:
            return obs, r, np.array([True]), np.array([True]), dict(info, final_obs=obs)
        return obs, r, True, True, info

    env.env.step = step
    _, _, done, info = env.step(0)
    assert done and info["game_over"] and not info["truncated"]


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
    # The MLP's defaults on a short budget (--max-steps also shortens the lr schedule). A short run's
    # policy rises and can fall again before the end (30k steps, 2 threads, seed 1, five runs here:
    # final training means 88-186, best evaluations 134-344; with the earlier value weight 0.5, ten
    # runs: 20-180 and 63-312), so learning is judged by the best evaluation of a snapshot of theta.
    # A random policy's 20-game mean is 22 +- 3.
    ck, tb = tmp_path / "ck", tmp_path / "tb"
    out = _main_ok(capsys, "--env", "CartPole-v1", "--threads", "2", "--max-steps", "30000", "--eval-every", "10000",
                   "--seed", "1", "--checkpoint-dir", str(ck), "--logdir", str(tb))
    res = result(out)
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
    # The saved theta is the one the final evaluation scored: --play with the run's seed replays its 20 games.
    played = result(_main_ok(capsys, "--play", str(ck), "--episodes", "20", "--seed", "1"))
    assert played["env"] == "CartPole-v1" and played["episodes"] == "20" and played["mean_return"] == res["eval_return"]


def test_lstm_cartpole_learns(tmp_path, capsys):
    # The LSTM starts slower: 43-83 after 20k steps here, against ~22 for a random policy.
    out = _main_ok(capsys, "--env", "CartPole-v1", "--lstm", "--threads", "2", "--max-steps", "25000",
                   "--eval-every", "0", "--seed", "1", "--checkpoint-dir", str(tmp_path / "ck"), "--logdir", str(tmp_path))
    assert float(result(out)["mean_return"]) >= 35, out[-1500:]


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
        p = run_a3c("--play", ck, "--record", str(tmp_path / "x.unknown"))  # OpenCV's own C++ message goes to fd 2
        assert p.returncode == 2 and "Assertion failed" not in p.stderr and "--record cannot write" in p.stderr, p.stderr


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
    ([], (84, 84, 4), dict(lr=7e-4, rms_eps=1e-5, value_coef=0.5, beta=0.01, max_steps=80_000_000)),
    ([], (4,), dict(lr=3e-3, rms_eps=0.1, value_coef=0.01, beta=0.02, max_steps=500_000)),
    (["--lstm"], (4,), dict(lr=3e-3, value_coef=0.5, beta=0.01)),    # what the LSTM agent's runs used
    (["--lstm", "--beta", "0.03", "--value-coef", "0.2"], (4,), dict(value_coef=0.2, beta=0.03)),
    (["--beta", "0", "--lr", "1e-3"], (84, 84, 4), dict(beta=0.0, lr=1e-3, value_coef=0.5)),
])
def test_defaults_follow_the_network_and_flags_win(flags, obs_shape, expected):
    """The defaults README's flag table lists for each network; a flag given on the command line wins."""
    args = a3c.parse_args(["--env", "CartPole-v1", *flags])
    a3c.fill_defaults(args, obs_shape)
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
                         (json.dumps(dict(latest, obs_shape=4)), "unreadable or incomplete"),   # was a TypeError
                         (json.dumps(dict(latest, lstm="no")), "unreadable or incomplete"),
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


FAKE_JOB = """import os, signal, sys, time
def save(*_):                                              # a chief whose final save takes a while
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
    code = f"import sys; sys.path.insert(0, {HERE!r}); import a3c_runtime; " \
           f"sys.exit(a3c_runtime.launch_local({str(tmp_path / 'job.py')!r}, [], 1))"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, FAKE_OUT=str(tmp_path / "saved")))
    for line in p.stdout:
        if line.startswith("[worker 0] started"):
            break
    p.send_signal(signal.SIGINT)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)                           # while the chief saves
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "Traceback" not in err, err
    assert (tmp_path / "saved").read_text() == "saved"


def test_cluster_bench_counts_each_workers_frames_once():
    """bench/a3c_cluster.py reads the launcher's output, where the chief's RESULT line comes twice."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("a3c_cluster", os.path.join(HERE, "bench", "a3c_cluster.py"))
    a3c_cluster = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(a3c_cluster)
    tail = "episodes=1 mean_return=1.00 eval_return=nan"
    launcher = (f"[worker 0] RESULT env=E global_step=9 {tail} fps=100 wall_s=10.0\n"
                f"[worker 1] RESULT worker=1 env=E global_step=9 {tail} fps=50 wall_s=8.0\n"
                f"RESULT env=E global_step=9 {tail} fps=100 wall_s=10.0\n")
    assert a3c_cluster.frames_per_s(launcher) == pytest.approx((100 * 10.0 + 50 * 8.0) / 10.0)
    assert a3c_cluster.frames_per_s(f"RESULT env=E global_step=9 {tail} fps=300 wall_s=2.0\n") == 300
    assert a3c_cluster.frames_per_s("a3c.py: error: boom\n") is None


def test_thread_error_line_names_tensorflows_cause():
    """A failing thread's one-line error: for TF's 'Graph execution error:' the line with the cause,
    not the header (a cluster worker once stopped with only 'AbortedError: Graph execution error:')."""
    import a3c_runtime
    import tensorflow.compat.v1 as tf
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None])
        with tf.control_dependencies([tf.debugging.assert_positive(x, message="x must be positive")]):
            y = tf.identity(x)
        with tf.Session() as sess, pytest.raises(tf.errors.InvalidArgumentError) as e:
            sess.run(y, {x: [-1.0]})
    line = a3c_runtime.first_line(e.value)
    assert line.startswith("InvalidArgumentError: assertion failed: [x must be positive") and "\n" not in line, line
    assert a3c_runtime.first_line(ValueError("bad\nmore")) == "ValueError: bad"
    # a cluster worker once stopped with only 'CancelledError: ====================='
    assert a3c_runtime.first_line(RuntimeError("=====================\nthe cause")) == "RuntimeError: the cause"


def test_cluster_thread_retries_one_aborted_step_but_not_a_second_soon_after(capsys):
    import a3c_runtime

    class Aborted(Exception):
        pass

    calls = []

    def learner(*args):                                    # aborts on its first call, returns on its second
        calls.append(args)
        if len(calls) == 1:
            raise Aborted("Graph execution error:\nFrom /job:worker/replica:0/task:1:\nthe cause")
        return "done"
    assert a3c_runtime.retry_aborted(learner, Aborted)(1, 2) == "done" and calls == [(1, 2), (1, 2)]
    assert "Aborted: the cause; it starts a fresh rollout" in capsys.readouterr().err

    def always(*args):
        raise Aborted("again")
    with pytest.raises(Aborted):                           # a second abort within 5 minutes stops the thread
        a3c_runtime.retry_aborted(always, Aborted)()


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


def test_cluster_stalled_ps_makes_the_launcher_restart_from_the_checkpoint(tmp_path):
    """A ps that stops answering (SIGSTOP here; TF's gRPC runtime has left long runs blocked the same
    way, README): each worker's watchdog exits with status 3 after --stall-timeout, and the launcher
    restarts the cluster with --resume, so T goes on from the chief's last checkpoint."""
    ck = tmp_path / "ck"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "a3c.py"), "--env", "CartPole-v1", "--workers", "2",
                          "--threads", "1", "--eval-every", "0", "--log-interval", "0.5", "--save-interval", "1",
                          "--stall-timeout", "3", "--checkpoint-dir", str(ck), "--logdir", str(tmp_path / "tb")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines = iter(p.stdout)
    for line in lines:                                     # train until the chief has saved
        if line.startswith("[worker 0] global_step=") and (ck / "latest.json").exists():
            break
    ps = subprocess.run(["pgrep", "-f", f"{ck} .*--job-name ps"], capture_output=True, text=True).stdout.split()
    os.kill(int(ps[0]), signal.SIGSTOP)
    T_saved, seen = None, []
    for line in lines:
        seen.append(line)
        if line.startswith("[worker 0] resumed "):
            T_saved = int(line.split("global_step=")[1])
        elif T_saved is not None and line.startswith("[worker 0] global_step="):
            if int(line.split("global_step=")[1].split()[0]) > T_saved:
                break                                      # the restarted cluster trains on from the checkpoint
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=180)
    assert T_saved is not None, "".join(seen)[-3000:] + err
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


def test_value_torso_own_trains_plays_and_is_refused_where_it_does_not_apply(tmp_path, capsys):
    """--value-torso own (V with its own MLP torso): the checkpoint says so, --play rebuilds that
    network, --resume with the other torso is refused, and Atari or --lstm get one line."""
    ck = str(tmp_path / "ck")
    common = ["--env", "CartPole-v1", "--threads", "2", "--eval-every", "0", "--checkpoint-dir", ck, "--logdir", str(tmp_path)]
    res = result(_main_ok(capsys, *common, "--max-steps", "2000", "--value-torso", "own"))
    assert int(res["global_step"]) >= 2000
    assert json.loads(open(os.path.join(ck, "latest.json")).read())["value_torso"] == "own"
    assert result(_main_ok(capsys, "--play", ck, "--episodes", "2"))["episodes"] == "2"
    assert "--value-torso own; resume it with that" in _main_error(capsys, *common, "--max-steps", "3000", "--resume")
    for flags in (["--env", "Breakout-v0"], ["--env", "CartPole-v1", "--lstm"]):
        msg = _main_error(capsys, *flags, "--value-torso", "own", "--checkpoint-dir", str(tmp_path / "x"), "--logdir", str(tmp_path))
        assert "--value-torso own is for the feed-forward MLP" in msg, msg
