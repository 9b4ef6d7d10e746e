"""End-To-End Memory Networks on the bAbI QA tasks, in TensorFlow (tf.compat.v1 graph style).

Sukhbaatar, Szlam, Weston, Fergus, "End-To-End Memory Networks", NIPS 2015.
Paper: https://arxiv.org/abs/1503.08895 (Sections 2 and 4; equations cited below as (1)-(4)).

    python memn2n.py --task 1                 # one task, the paper's best per-task model
    python memn2n.py --task all               # Table 1's PE LS RN column, task by task
    python memn2n.py --joint                  # one model for all 20 tasks (d = 50)
    python memn2n.py --task 1 --show 3        # the attention of each hop, as in Figure 2

Defaults are the paper's PE LS RN model: position encoding, linear start, random noise,
K = 3 hops, adjacent weight tying, d = 20, batch 32, N(0, 0.1) init, gradients clipped to 40;
SGD at lr 0.005 for 20 linear epochs, then 100 epochs with the softmaxes, halved every 25.
"""
import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import babi_data
from babi_data import DataError

# Table 1, bAbI 1k, PE LS RN column (test error %), for the table printed after --task all.
PAPER_PE_LS_RN = [0.0, 8.3, 40.3, 2.8, 13.1, 7.6, 17.3, 10.0, 13.2, 15.1,
                  0.9, 0.2, 0.4, 1.7, 0.0, 1.3, 51.0, 11.1, 82.8, 0.0]
PAPER_MEAN = {"task": 13.9, "joint": 12.4}  # both columns fail 11 tasks
MODEL_KEYS = ("d", "hops", "tying", "pe", "pe_formula", "te")  # what a checkpoint must match


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="1", help="bAbI task 1-20, or 'all' to run each task in turn (default 1)")
    p.add_argument("--joint", action="store_true", help="train one model on all 20 tasks (Sec. 4.2)")
    p.add_argument("--data-dir", help="extracted tasks_1-20_v1-2/en (or en-10k) folder; default $BABI_DIR, "
                   "else downloaded into ~/.cache/babi")
    p.add_argument("--hops", type=int, default=3, help="memory hops K (default 3)")
    p.add_argument("--embedding-size", "-d", type=int, help="d (default 20, 50 with --joint)")
    p.add_argument("--mem-size", type=int, default=50, help="most recent sentences kept in memory (default 50)")
    p.add_argument("--tying", choices=["adjacent", "layerwise"], default="adjacent",
                   help="weight tying (Sec. 2.2): adjacent A^{k+1}=C^k, or layer-wise with u^{k+1} = H u^k + o^k")
    p.add_argument("--pe", action=argparse.BooleanOptionalAction, default=True,
                   help="position encoding; --no-pe gives bag of words (default on)")
    p.add_argument("--pe-formula", choices=["paper", "matlab"], default="matlab",
                   help="'matlab' (default): the official code's 1+4(k-(d+1)/2)(j-(J+1)/2)/(dJ), J = longest "
                   "sentence; 'paper': the printed l_kj = (1-j/J)-(k/d)(1-2j/J), J = words in the sentence, "
                   "about half as large, which fails tasks 15 and 16 here (see README)")
    p.add_argument("--te", action=argparse.BooleanOptionalAction, default=True,
                   help="temporal encoding T_A, T_C (default on)")
    p.add_argument("--ls", action=argparse.BooleanOptionalAction, default=True,
                   help="linear start: the memory softmaxes removed at first (default on)")
    p.add_argument("--ls-epochs", type=int,
                   help="linear-start epochs, as in the official code (default 20, 30 with --joint); 0 = the "
                   "paper's rule, end when the validation loss stops falling (too early here, see README)")
    p.add_argument("--rn", action=argparse.BooleanOptionalAction, default=True,
                   help="random noise: 10%% empty memories added at training time (default on)")
    p.add_argument("--noise", type=float, default=0.1, help="fraction of empty memories for --rn (default 0.1)")
    p.add_argument("--epochs", type=int, help="epochs after linear start (default 100, 60 with --joint)")
    p.add_argument("--anneal-every", type=int, help="halve lr every N epochs (default 25, 15 with --joint)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate with --no-ls (default 0.01)")
    p.add_argument("--ls-lr", type=float, default=0.005,
                   help="learning rate of LS training, both phases (default 0.005)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--init-std", type=float, default=0.1, help="weights drawn from N(0, std) (default 0.1)")
    p.add_argument("--max-grad-norm", type=float, default=40.0, help="clip each gradient matrix to this l2 norm")
    p.add_argument("--runs", type=int, default=1, help="restarts with different seeds; the best is kept (paper: 10)")
    p.add_argument("--select", choices=["train", "val"], default="train",
                   help="which run --runs keeps: lowest training error (paper) or validation error")
    p.add_argument("--seed", type=int, default=1, help="seeds numpy and TensorFlow (default 1)")
    p.add_argument("--save", metavar="DIR", help="write the final model here (default: <run dir>/model)")
    p.add_argument("--load", metavar="DIR", help="restore a model saved by --save and evaluate it (no training)")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print N test stories with each hop's attention")
    p.add_argument("--logdir", default="runs", help="TensorBoard logs go under this folder (default runs/)")
    p.add_argument("--log-every", type=int, help="print a line every N epochs (default 1; 20 for --task all)")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True,
                   help="compile the graph with XLA: the same math, 2-4x faster on a CPU (default on)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="--task all: tasks trained at once, one process each (default: cores)")
    args = p.parse_args(argv)
    if args.joint:
        args.tasks = list(range(1, 21))
    elif args.task == "all":
        args.tasks = list(range(1, 21))
    elif args.task.isdigit() and 1 <= int(args.task) <= 20:
        args.tasks = [int(args.task)]
    else:
        raise DataError(f"unknown task {args.task!r}: choose a number from 1 to 20, or 'all'")
    for name in ("hops", "mem_size", "batch_size", "runs", "jobs"):
        if getattr(args, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1")
    args.d = args.embedding_size or (50 if args.joint else 20)
    args.epochs = args.epochs or (60 if args.joint else 100)
    if args.ls_epochs is None:
        args.ls_epochs = 30 if args.joint else 20
    args.anneal_every = args.anneal_every or (15 if args.joint else 25)
    # "In LS training, the initial learning rate is set to 0.005" (Sec. 4.2): after the linear
    # phase too, as in the official code; without LS it is 0.01
    args.main_lr = args.ls_lr if args.ls else args.lr
    args.log_every = args.log_every or (20 if args.task == "all" and not args.joint else 1)
    return args


# --------------------------------------------------------------------------- the model
def position_encoding(sentence_size, d, formula="paper"):
    """Table [sentence_size + 1, sentence_size, d]: row J holds l_j for a sentence of J words.

    Paper (Sec. 4.1): l_kj = (1 - j/J) - (k/d)(1 - 2j/J), j, k 1-based, J = words in THIS
    sentence. The official Matlab code uses 1 + 4(k - (d+1)/2)(j - (J+1)/2)/(dJ) with J = the
    longest sentence, which is about 2x the paper's (the author: "mostly a constant factor").
    DEVIATION: the default is the code's: with the printed formula linear start fails tasks
    15 and 16 (40.6 % and 52.0 % error vs 0.0 % and 0.7 %; twice the printed formula works
    too, so it is the scale); --pe-formula paper gives the printed one."""
    table = np.zeros((sentence_size + 1, sentence_size, d), np.float32)
    j = np.arange(1, sentence_size + 1)[:, None]
    k = np.arange(1, d + 1)[None, :]
    for J in range(1, sentence_size + 1):
        if formula == "paper":
            l = (1 - j / J) - (k / d) * (1 - 2 * j / J)
        else:
            Jm = sentence_size
            l = 1 + 4 * (k - (d + 1) / 2) * (j - (Jm + 1) / 2) / (d * Jm)
        table[J, :J] = l[:J]  # words past the sentence are nil, whose embedding is zero anyway
    return table


def build_graph(cfg, vocab_size, sentence_size, mem_slots):
    """Placeholders, variables A, B, C, W (+ T_A, T_C, H), the loss and the clipped optimizer."""
    import tensorflow.compat.v1 as tf
    d, K, V, M, S = cfg.d, cfg.hops, vocab_size, mem_slots, sentence_size
    tf.set_random_seed(cfg.seed)

    # --- placeholders: the slides' three
    sentences = tf.placeholder(tf.int32, [None, M, S], name="sentences")  # x_ij, [b, M, S]; x_1 newest
    question = tf.placeholder(tf.int32, [None, S], name="question")        # q, [b, S]
    answer = tf.placeholder(tf.float32, [None, V], name="answer")          # one-hot a, [b, V]
    lr = tf.Variable(cfg.ls_lr if cfg.ls else cfg.lr, trainable=False, name="lr")  # lowered by the loop
    linear = tf.Variable(bool(cfg.ls), trainable=False, name="linear_start")

    # --- variables, N(0, 0.1) (Sec. 4.2). The nil word (id 0) has a zero embedding: its row
    # starts at zero and its gradient is masked below, so padding never adds to m_i, c_i or u.
    normal = tf.random_normal_initializer(stddev=cfg.init_std)

    def nil_zero(shape, dtype=tf.float32, partition_info=None):
        return tf.concat([tf.zeros([1, shape[1]], dtype), normal(shape, dtype)[1:]], 0)

    def embedding(name):
        return tf.get_variable(name, [V, d], initializer=nil_zero)

    def temporal(name):
        return tf.get_variable(name, [M, d], initializer=normal)

    H = None
    if cfg.tying == "adjacent":  # A^{k+1} = C^k, B = A^1, W^T = C^K (Sec. 2.2): K + 1 matrices
        E = [embedding("A_1")] + [embedding(f"C_{k}") for k in range(1, K + 1)]
        A, C, B, W = E[:K], E[1:], E[0], tf.transpose(E[K])
        TE = [temporal("T_A_1")] + [temporal(f"T_C_{k}") for k in range(1, K + 1)]
        T_A, T_C = TE[:K], TE[1:]
        nil_vars = E
    else:  # layer-wise (RNN-like): one A, one C for every hop, separate B and W, and H
        A, C, B = [embedding("A")] * K, [embedding("C")] * K, embedding("B")
        W = tf.get_variable("W", [d, V], initializer=normal)
        T_A, T_C = [temporal("T_A")] * K, [temporal("T_C")] * K
        H = tf.get_variable("H", [d, d], initializer=normal)
        nil_vars = [A[0], C[0], B]

    pe = tf.constant(position_encoding(S, d, cfg.pe_formula) if cfg.pe else
                     np.ones((S + 1, S, d), np.float32))

    def encode(E, x):
        """sum_j l_j * A x_ij: [..., S] word ids -> [..., d] (position encoding, Sec. 4.1)."""
        J = tf.reduce_sum(tf.cast(x > 0, tf.int32), -1)           # words in each sentence
        return tf.reduce_sum(tf.nn.embedding_lookup(E, x) * tf.gather(pe, J), -2)

    mask = tf.cast(tf.reduce_any(sentences > 0, -1), tf.float32)   # [b, M], 1 where a sentence is
    te = float(cfg.te)

    def memory(E, T):
        """m_i = sum_j l_j * A x_ij + T_A(i) (or c_i with C, T_C), [b, M, d]. T_A(1) is the newest.
        Empty slots (padding, random noise) get no T: they stay zero vectors"""
        return encode(E, sentences) + te * T * mask[..., None]

    u = encode(B, question)                                        # u^1 = B q, [b, d]
    hops, c = [], None
    for k in range(K):
        # adjacent tying makes m^{k+1} = c^k exactly (A^{k+1} = C^k, T_A^{k+1} = T_C^k): reuse it
        m = c if cfg.tying == "adjacent" and c is not None else memory(A[k], T_A[k])
        c = memory(C[k], T_C[k])
        scores = tf.matmul(u[:, None, :], m, adjoint_b=True)[:, 0]   # u^T m_i, [b, M]
        # p_i = softmax(u^T m_i) (1); linear start removes the softmax. Empty slots (m_i = 0,
        # score 0) stay in the softmax, as in the official code: they give the attention
        # somewhere to go when no sentence matches, which the yes/no tasks 6, 9, 10, 18 need
        # (masking them out doubles their error here)
        p = tf.where(linear, scores, tf.nn.softmax(scores))
        o = tf.matmul(p[:, None, :], c)[:, 0]                        # o = sum_i p_i c_i (2), [b, d]
        u = (tf.matmul(u, H) if H is not None else u) + o            # u^{k+1} = u^k + o^k (4)
        hops.append(p)
    logits = tf.matmul(u, W)                                       # a_hat = softmax(W(o^K + u^K)) (3), [b, V]
    losses = tf.nn.softmax_cross_entropy_with_logits(labels=answer, logits=logits)  # [b]
    loss = tf.reduce_sum(losses)                                   # summed over the batch (Sec. 4.2)
    prediction = tf.argmax(logits, 1, output_type=tf.int32)

    # --- the clipped optimizer, in the slides' two steps: compute, change, apply
    opt = tf.train.GradientDescentOptimizer(lr)
    grads_and_vars = opt.compute_gradients(loss)
    nil_mask = tf.constant(np.r_[0.0, np.ones(V - 1)].astype(np.float32)[:, None])
    clipped = []
    for g, v in grads_and_vars:
        g = tf.convert_to_tensor(g)                                # IndexedSlices -> dense [V, d]
        if any(v is n for n in nil_vars):
            g = g * nil_mask                                       # the nil word's embedding stays zero
        # each matrix clipped on its own to l2 norm 40 (footnote 5; the Matlab code differs)
        clipped.append((tf.clip_by_norm(g, cfg.max_grad_norm), v))
    train_op = opt.apply_gradients(clipped)

    return dict(tf=tf, sentences=sentences, question=question, answer=answer, lr=lr,
                linear=linear, loss=loss, losses=losses, prediction=prediction, hops=hops, train_op=train_op,
                grads=[g for g, _ in clipped], nil_vars=nil_vars, init=tf.global_variables_initializer(),
                saver=tf.train.Saver(max_to_keep=1))


# --------------------------------------------------------------------------- data helpers
def add_random_noise(S, L, rng, rate):
    """Random noise (Sec. 4.1): insert ~rate*L empty memories at random places in each story,
    which shifts the older sentences to later time slots and regularises T_A. An empty memory
    is a zero vector with no T_A(i), like padding: the official code's "gaps in the time
    index". Vectorised: sort the real memories (keys 0.5, 1.5, ...) with the empty ones."""
    n, M, _ = S.shape
    n_empty = rng.binomial(L, rate)
    real_keys = np.where(np.arange(M) < L[:, None], np.arange(M) + 0.5, np.inf)
    empty_keys = np.where(np.arange(M) < n_empty[:, None], rng.uniform(0, L[:, None], (n, M)), np.inf)
    order = np.argsort(np.concatenate([real_keys, empty_keys], 1), 1, kind="stable")[:, :M]
    S_pad = np.concatenate([S, np.zeros_like(S)], 1)               # index >= M is an empty memory
    return S_pad[np.arange(n)[:, None], order], np.minimum(L + n_empty, M)


class Data:
    """Vectorised splits plus what the model needs to know about them."""

    def __init__(self, tasks, data_dir, mem_size, noise, saved=None):
        train, val, test, vocab_lists = {}, {}, {}, []
        for t in tasks:
            tr, te = babi_data.load_task(data_dir, t)
            train[t], val[t] = babi_data.split_validation(tr)
            test[t] = te
            vocab_lists += [tr, te]
        exs = [e for split in (train, val, test) for t in tasks for e in split[t]]
        longest = max(len(e["story"]) for e in exs)
        self.word_idx = babi_data.build_vocab(*vocab_lists)
        self.sentence_size = max(max([len(s) for s in e["story"]] + [len(e["question"])]) for e in exs)
        # as few slots as the data needs (the math is the same, it is just faster), plus room
        # for the random-noise memories, capped at the paper's 50
        self.mem_slots = min(mem_size, longest + int(np.ceil(noise * longest)))
        if saved:  # a loaded model fixes the vocabulary and the array sizes
            self.word_idx, self.sentence_size, self.mem_slots = (
                saved["word_idx"], saved["sentence_size"], saved["mem_slots"])
        self.splits = {}
        for name, split in (("train", train), ("val", val), ("test", test)):
            exs = [e for t in tasks for e in split[t]]
            arrays = babi_data.vectorize(exs, self.word_idx, self.sentence_size, self.mem_slots)
            self.splits[name] = arrays + (np.concatenate([[t] * len(split[t]) for t in tasks]), exs)


# --------------------------------------------------------------------------- train / evaluate
def feed(g, S, Q, A, V):
    return {g["sentences"]: S, g["question"]: Q, g["answer"]: np.eye(V, dtype=np.float32)[A]}


def evaluate(sess, g, split, V, batch=100):
    """(mean loss, per-example correctness) over a whole split, in chunks of one fixed size
    (the last one padded with repeats) so that XLA compiles a single shape."""
    S, Q, A = split[:3]
    n = len(A)
    idx = np.arange(n + (-n % batch)) % n
    losses, preds = [], []
    for i in range(0, len(idx), batch):
        b = idx[i:i + batch]
        loss, pred = sess.run([g["losses"], g["prediction"]], feed(g, S[b], Q[b], A[b], V))
        losses.append(loss)
        preds.append(pred)
    return np.concatenate(losses)[:n].mean(), np.concatenate(preds)[:n] == A


def scalar(writer, tag, value, step):
    import tensorflow.compat.v1 as tf
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=value)]), step)


def train(sess, g, data, cfg, rng, writer, prefix=""):
    """One run (Sec. 4.2): linear start, then --epochs epochs with the softmaxes back in and the
    learning rate halved every --anneal-every epochs. Returns (training error, validation error)."""
    S, Q, A, L = data.splits["train"][:4]
    V, n = len(data.word_idx) + 1, len(A)
    ls_active, ls_epochs, prev_val_loss, epoch, main_epoch = cfg.ls, 0, np.inf, 0, 0
    while main_epoch < cfg.epochs:
        epoch += 1
        if ls_active:
            ls_epochs += 1
            lr = cfg.ls_lr
        else:
            main_epoch += 1
            lr = cfg.main_lr * 0.5 ** ((main_epoch - 1) // cfg.anneal_every)
        g["lr"].load(lr, sess)
        S_ep = add_random_noise(S, L, rng, cfg.noise)[0] if cfg.rn else S
        order, t0, total_loss, correct = rng.permutation(n), time.time(), 0.0, 0
        for i in range(0, n - cfg.batch_size + 1, cfg.batch_size):  # the last partial batch waits
            b = order[i:i + cfg.batch_size]                        # for the next shuffle (as the code does)
            _, loss, pred = sess.run([g["train_op"], g["loss"], g["prediction"]],
                                     feed(g, S_ep[b], Q[b], A[b], V))
            total_loss += loss
            correct += int((pred == A[b]).sum())
        seen = n - n % cfg.batch_size
        speed = seen / (time.time() - t0)
        val_loss, val_correct = evaluate(sess, g, data.splits["val"], V)
        stats = dict(lr=lr, train_loss=total_loss / seen, train_acc=correct / seen, val_loss=val_loss,
                     val_acc=val_correct.mean(), examples_per_sec=speed)
        if epoch % cfg.log_every == 0 or main_epoch == cfg.epochs:
            print(f"{prefix}epoch={epoch} lr={lr:g} train_loss={stats['train_loss']:.4f} "
                  f"train_acc={stats['train_acc']:.3f} val_loss={val_loss:.4f} "
                  f"val_acc={stats['val_acc']:.3f} examples_per_sec={speed:.0f}", flush=True)
        if writer is not None:
            for k, v in stats.items():
                scalar(writer, ("losses/" if "loss" in k else "charts/") + k, v, epoch)
        # linear start ends when the validation loss stops falling (paper) or after a fixed
        # number of epochs (official code, --ls-epochs); the softmaxes go back in and training
        # recommences with the full schedule
        if ls_active and ((cfg.ls_epochs and ls_epochs >= cfg.ls_epochs) or
                          (not cfg.ls_epochs and val_loss >= prev_val_loss) or ls_epochs >= cfg.epochs):
            ls_active = False
            g["linear"].load(False, sess)
            print(f"{prefix}linear_start_end epoch={epoch}", flush=True)
        prev_val_loss = val_loss
    return 1.0 - evaluate(sess, g, data.splits["train"], V)[1].mean(), 1.0 - val_correct.mean()


def checkpoint_dir(cfg, root, tasks):
    """--save / --load DIR: the model itself, or DIR/task<t> for each task of --task all."""
    return os.path.join(root, f"task{tasks[0]}") if cfg.task == "all" and not cfg.joint else root


def save_model(sess, g, path, meta):
    """Write a checkpoint atomically: build it in a temporary folder, then rename it into place."""
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    g["saver"].save(sess, os.path.join(tmp, "model"), write_meta_graph=False)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(meta, f)
    old = path.rstrip("/") + ".old"
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def show_attention(sess, g, data, n_show, V):
    """The paper's Figure 2 as text: each story with the attention p_i of every hop."""
    S, Q, A, L, _, exs = data.splits["test"]
    idx = np.arange(min(n_show, len(A)))
    hops, pred = sess.run([g["hops"], g["prediction"]], feed(g, S[idx], Q[idx], A[idx], V))
    words = {i: w for w, i in data.word_idx.items()}
    for j in idx:
        ex = exs[j]
        n = int(L[j])                                              # memories used, newest in slot 0
        first = len(ex["story"]) - n
        print(f"\nstory {j + 1}" + " " * 38 + "".join(f"hop{k + 1:<3}" for k in range(len(hops))))
        for s, sent in enumerate(ex["story"][first:]):             # oldest first, as read
            support = "*" if first + s in ex["support"] else " "   # * marks a supporting fact
            print(f" {support} {' '.join(sent)[:42]:<44}" + "".join(f"{h[j, n - 1 - s]:<6.2f}" for h in hops))
        print(f"   question: {' '.join(ex['question'])}?  predicted: {words.get(int(pred[j]), '<nil>')}"
              f"  true: {ex['answer']}")


def run(cfg, tasks, data_dir, name):
    """Train (or load) one model on `tasks` and return per-task test error in percent."""
    import tensorflow.compat.v1 as tf
    t0 = time.time()
    saved = None
    if cfg.load:
        with open(os.path.join(checkpoint_dir(cfg, cfg.load, tasks), "config.json")) as f:
            saved = json.load(f)
        if saved["tasks"] != tasks:
            raise DataError(f"checkpoint {cfg.load} was trained on tasks {saved['tasks']}, not {tasks}")
        for k in MODEL_KEYS:
            setattr(cfg, k, saved[k])
    data = Data(tasks, data_dir, cfg.mem_size, cfg.noise if cfg.rn else 0.0, saved)
    meta = dict(tasks=tasks, word_idx=data.word_idx, sentence_size=data.sentence_size,
                mem_slots=data.mem_slots, **{k: getattr(cfg, k) for k in MODEL_KEYS})
    V = len(data.word_idx) + 1
    graph = tf.Graph()
    with graph.as_default():
        g = build_graph(cfg, V, data.sentence_size, data.mem_slots)
    config = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    if cfg.xla:  # fuses the many small ops of this model; per-op overhead dominates otherwise
        config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
    sess = tf.Session(graph=graph, config=config)
    save_dir = checkpoint_dir(cfg, cfg.save, tasks) if cfg.save else os.path.join(cfg.logdir, name, "model")
    if cfg.load:
        g["saver"].restore(sess, os.path.join(checkpoint_dir(cfg, cfg.load, tasks), "model"))
    else:
        writer = tf.summary.FileWriter(os.path.join(cfg.logdir, name), graph)
        best = None
        for r in range(cfg.runs):
            rng = np.random.RandomState(cfg.seed + r)
            sess.run(g["init"])                                    # each run draws fresh N(0, 0.1) weights
            prefix = (f"task={tasks[0]} " if cfg.task == "all" and not cfg.joint else "") + \
                     (f"run={r + 1} " if cfg.runs > 1 else "")
            try:
                train_err, val_err = train(sess, g, data, cfg, rng, writer if r == 0 else None, prefix)
            except KeyboardInterrupt:
                save_model(sess, g, save_dir, meta)
                print(f"\ninterrupted: saved the current model to {save_dir}", file=sys.stderr)
                raise
            key = train_err if cfg.select == "train" else val_err
            if cfg.runs > 1:
                print(f"{prefix}train_error={100 * train_err:.1f} val_error={100 * val_err:.1f}", flush=True)
            if best is None or key < best[0]:
                best = (key, sess.run(graph.get_collection("trainable_variables")))
        for v, value in zip(graph.get_collection("trainable_variables"), best[1]):
            v.load(value, sess)                                    # keep the selected run
        writer.close()
        save_model(sess, g, save_dir, meta)
    _, correct = evaluate(sess, g, data.splits["test"], V)
    task_ids = data.splits["test"][4]
    errors = {t: 100.0 * (1.0 - correct[task_ids == t].mean()) for t in tasks}
    if cfg.show:
        show_attention(sess, g, data, cfg.show, V)
    sess.close()
    return errors, time.time() - t0


def load_tf(cfg):
    """Import TensorFlow in graph mode; XLA's flags must be set before it loads."""
    if cfg.xla:  # CPU auto-clustering is off by default
        os.environ["TF_XLA_FLAGS"] = (os.environ.get("TF_XLA_FLAGS", "") +
                                      " --tf_xla_auto_jit=2 --tf_xla_cpu_global_jit").strip()
    import tensorflow.compat.v1 as tf
    tf.get_logger().setLevel("ERROR")
    tf.disable_v2_behavior()


def task_worker(cfg, t, data_dir, stamp):
    """--task all: one task in a process of its own (it inherits main's environment)."""
    load_tf(cfg)
    errors, wall = run(cfg, [t], data_dir, f"memn2n_task{t}__{cfg.seed}__{stamp}")
    print(f"task={t} test_error={errors[t]:.1f} wall_s={wall:.1f}", flush=True)
    return errors


def print_table(errors, paper_mean):
    print(f"\n{'task':>4}  {'name':<24} {'ours':>6} {'paper':>6}   (paper: Table 1, per-task PE LS RN)")
    for t, e in errors.items():
        print(f"{t:>4}  {babi_data.TASK_NAMES[t]:<24} {e:>6.1f} {PAPER_PE_LS_RN[t - 1]:>6.1f}")
    failed = sum(e > 5.0 for e in errors.values())
    print(f"{'mean':>4}  {'':<24} {np.mean(list(errors.values())):>6.1f} {paper_mean:>6.1f}")
    print(f"{'failed (> 5 %)':<30} {failed:>6d} {11:>6d}")
    return failed


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t_start = time.time()
    try:
        cfg = parse_args(argv)
        data_dir = babi_data.resolve_data_dir(cfg.data_dir)
        for t in cfg.tasks:
            babi_data.load_task(data_dir, t)                       # bad data fails here, before TF loads
        for t in cfg.tasks if cfg.load else []:
            meta = os.path.join(checkpoint_dir(cfg, cfg.load, [t]), "config.json")
            if not os.path.isfile(meta):
                raise DataError(f"no checkpoint at {cfg.load} (expected {meta}); train one with --save DIR")
        stamp = int(time.time())
        if cfg.joint or len(cfg.tasks) == 1:
            load_tf(cfg)
            name = "joint" if cfg.joint else f"task{cfg.tasks[0]}"
            errors, _ = run(cfg, cfg.tasks, data_dir, f"memn2n_{name}__{cfg.seed}__{stamp}")
        else:  # tasks are independent: --jobs processes train them at once, one core each
            pool = ProcessPoolExecutor(min(cfg.jobs, len(cfg.tasks)), multiprocessing.get_context("spawn"))
            try:
                futures = [pool.submit(task_worker, cfg, t, data_dir, stamp) for t in cfg.tasks]
                errors = {}
                for f in futures:
                    errors.update(f.result())                      # re-raises a task's error here
            except BaseException:
                pool.shutdown(cancel_futures=True)                 # Ctrl-C: tasks in flight save
                raise
            pool.shutdown()
    except DataError as e:
        print(f"memn2n.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    wall = time.time() - t_start
    if len(errors) == 1:
        (t, e), = errors.items()
        print(f"RESULT task={t} test_acc={1 - e / 100:.3f} test_error={e:.1f} wall_s={wall:.1f}")
    else:
        failed = print_table(errors, PAPER_MEAN["joint" if cfg.joint else "task"])
        print(f"RESULT tasks={len(errors)} mean_error={np.mean(list(errors.values())):.1f} "
              f"failed={failed} wall_s={wall:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
