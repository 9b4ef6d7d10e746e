"""memn2n.py, the paper: random noise, position encoding, equations (1)-(4) against NumPy, clipping, learning."""
import hashlib
import os
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import babi_data
import memn2n
import memn2n_models
import memn2n_checks
from helpers import BABI_DIR, memn2n_main, result_of, run_script


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
    cfg = memn2n_checks.finish(memn2n.parse_args(cfg_args), [1])
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
    _, meta = memn2n_models.read_model(folder)
    cfg = memn2n_checks.finish(memn2n.parse_args(["--seed", "3"]), [1])
    data = babi_data.Data([1], gen_dir, cfg.mem_size, cfg.noise)
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
    memn2n_models.read_model(str(tmp_path / runs[0] / "model"))                 # the default save: a fresh run folder


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


# --------------------------------------------------------------------------- the schedule (Sec. 4.2)
def _epoch_lrs(out):
    return [float(lr) for lr in re.findall(r"^epoch=\d+ lr=([\d.e-]+) ", out, re.M)]


def test_learning_rate_halves_every_anneal_every_epochs_after_linear_start(gen_dir, tmp_path, capsys):
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", gen_dir, "--ls-epochs", 2, "--epochs", 5,
                               "--anneal-every", 2, "--ls-lr", 0.004, "--logdir", tmp_path)
    assert rc == 0, err
    # two linear epochs at 0.004, then 5 epochs with the softmaxes: 0.004 0.004 0.002 0.002 0.001
    assert _epoch_lrs(out) == [0.004, 0.004, 0.004, 0.004, 0.002, 0.002, 0.001]
    assert "linear_start_end epoch=2" in out
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", gen_dir, "--no-ls", "--epochs", 3,
                               "--anneal-every", 1, "--lr", 0.02, "--logdir", tmp_path)
    assert rc == 0, err
    assert _epoch_lrs(out) == [0.02, 0.01, 0.005] and "linear_start_end" not in out   # --lr without LS


def test_paper_rule_ends_linear_start_when_the_validation_loss_stops_falling(gen_dir, tmp_path, capsys,
                                                                           monkeypatch):
    """--ls-epochs 0: the softmaxes go back in after the first epoch whose validation loss is not below the
    previous epoch's. The validation losses are scripted; everything else is the real training."""
    scripted, real = iter([3.0, 2.0, 1.5, 1.6, 1.0, 0.9, 0.8, 0.7, 0.6]), memn2n.evaluate

    def evaluate(sess, model, split, V, **kw):
        out = real(sess, model, split, V, **kw)
        return out._replace(loss=next(scripted)) if len(split.answers) == 150 else out  # val: 1,500 / 10
    monkeypatch.setattr(memn2n, "evaluate", evaluate)
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", gen_dir, "--ls-epochs", 0, "--epochs", 5,
                               "--logdir", tmp_path)                  # at most --epochs linear epochs: 5
    assert rc == 0, err
    assert re.findall(r"^epoch=\d+ .* val_loss=([\d.]+)", out, re.M)[:4] == ["3.0000", "2.0000", "1.5000", "1.6000"]
    assert "linear_start_end epoch=4" in out and out.count("linear_start_end") == 1
    assert len(_epoch_lrs(out)) == 4 + 5                                 # then the --epochs 5 with softmaxes


@pytest.mark.parametrize("flags,expected", [
    ([], dict(d=20, epochs=100, ls_epochs=20, anneal_every=25)),
    (["--joint"], dict(d=50, epochs=60, ls_epochs=30, anneal_every=15)),   # joint training (Sec. 4.2)
    (["--joint", "-d", "30", "--epochs", "7", "--ls-epochs", "0"], dict(d=30, epochs=7, ls_epochs=0, anneal_every=15)),
])
def test_joint_training_has_its_own_d_and_schedule(flags, expected):
    args = memn2n.parse_args(flags)
    assert {k: getattr(args, k) for k in expected} == expected
    _, model, sess = _memn2n_graph(flags)
    assert model.params[0].shape.as_list() == [12, expected["d"]]       # A_1 is V x d
    sess.close()
