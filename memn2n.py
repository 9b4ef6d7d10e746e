"""End-To-End Memory Networks on the bAbI QA tasks, in TensorFlow (tf.compat.v1 graph style).

Sukhbaatar, Szlam, Weston, Fergus, "End-To-End Memory Networks", NIPS 2015.
Paper: https://arxiv.org/abs/1503.08895 (Sections 2 and 4; equations cited below as (1)-(4)).

    python memn2n.py --task 1                 # one task, the paper's best per-task model
    python memn2n.py --task all               # Table 1's PE LS RN column, task by task
    python memn2n.py --task all --runs 10     # the paper's protocol: the best of 10 runs per task
    python memn2n.py --task all --runs 10 --select ensemble   # the 10 runs averaged (README: recommended)
    python memn2n.py --joint                  # one model for all 20 tasks (d = 50)
    python memn2n.py --task 1 --show 3        # the attention of each hop, as in Figure 2
    python memn2n.py --task 1 --save m1       # then: python memn2n.py --load m1 --ask story.txt

Defaults are the paper's PE LS RN model: position encoding, linear start, random noise,
K = 3 hops, adjacent weight tying, d = 20, batch 32, N(0, 0.1) init, gradients clipped to 40;
SGD at lr 0.005 for 20 linear epochs, then 100 epochs with the softmaxes, halved every 25.
"""
import argparse
import collections
import contextlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

import numpy as np

import babi_data
from babi_data import DataError

# Table 1, bAbI 1k, PE LS RN column (test error %), for the table printed after --task all.
PAPER_PE_LS_RN = [0.0, 8.3, 40.3, 2.8, 13.1, 7.6, 17.3, 10.0, 13.2, 15.1,
                  0.9, 0.2, 0.4, 1.7, 0.0, 1.3, 51.0, 11.1, 82.8, 0.0]
PAPER_JOINT = (12.4, 11)  # joint PE LS RN: mean error, failed tasks (its per-task column is not kept here)
MODEL_KEYS = ("d", "hops", "tying", "pe", "pe_formula", "te")  # what a checkpoint fixes


# --------------------------------------------------------------------------- flags
class ArgumentError(Exception):
    """A bad flag: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own complaints: one line too, no usage block
        raise ArgumentError(f"{message}; see --help")


# the range of every integer flag, (lowest, highest)
INT_RANGES = {"hops": (1, 10), "embedding_size": (1, 1000), "mem_size": (1, 1000), "ls_epochs": (0, 10000),
              "epochs": (1, 10000), "anneal_every": (1, 10000), "batch_size": (1, 100000), "runs": (1, 100),
              "seed": (0, 2 ** 31 - 101), "show": (0, 1000), "log_every": (1, 10000), "jobs": (1, 256)}


def parse_args(argv=None):
    p = Parser(prog="memn2n.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", help="bAbI task 1-20, a list such as 2,3,16, or 'all' to run each task in turn "
                   "(default 1; with --load, the checkpoint's)")
    p.add_argument("--joint", action="store_true", help="train one model on all 20 tasks (Sec. 4.2)")
    p.add_argument("--data-dir", help="extracted tasks_1-20_v1-2/en (or en-10k) folder; default $BABI_DIR, "
                   "else downloaded into ~/.cache/babi")
    p.add_argument("--hops", type=int, default=3, help="memory hops K, 1-10 (default 3)")
    p.add_argument("--embedding-size", "-d", type=int, help="d, 1-1000 (default 20, 50 with --joint)")
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
    p.add_argument("--noise", type=float, default=0.1, help="fraction of empty memories for --rn, in [0, 1) "
                   "(default 0.1)")
    p.add_argument("--epochs", type=int, help="epochs after linear start (default 100, 60 with --joint)")
    p.add_argument("--anneal-every", type=int, help="halve lr every N epochs (default 25, 15 with --joint)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate with --no-ls (default 0.01)")
    p.add_argument("--ls-lr", type=float, default=0.005,
                   help="learning rate of LS training, both phases (default 0.005)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32, at most the training set")
    p.add_argument("--init-std", type=float, default=0.1, help="weights drawn from N(0, std) (default 0.1)")
    p.add_argument("--max-grad-norm", type=float, default=40.0, help="clip each gradient matrix to this l2 norm")
    p.add_argument("--runs", type=int, default=1, help="training runs per model, each from a fresh "
                   "initialisation (seeds --seed, --seed+1, ...); --select says what is kept (paper: 10)")
    p.add_argument("--select", choices=["train", "val", "ensemble"], default="train",
                   help="with --runs N: keep the run with the lowest training error (the paper), the lowest "
                   "validation error, or all N as an ensemble that averages their answer distributions")
    p.add_argument("--val-folds", action=argparse.BooleanOptionalAction,
                   help="with --runs N: run i holds out tenth i-1 (mod 10) of one fixed shuffle of the training "
                   "set for validation instead of the same tenth for every run (run 1 has the default split), so "
                   "that ten runs together learn from all of it (default: on for --select ensemble; off for train "
                   "and val, which compare the runs on one held-out 10 %%, as the paper does)")
    p.add_argument("--seed", type=int, default=1, help="seeds numpy and TensorFlow (default 1)")
    p.add_argument("--save", metavar="DIR", help="write the final model here (default: a new folder "
                   "<logdir>/<run name>/model); DIR must be new or empty, see --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="let --save replace a model that memn2n.py wrote earlier (nothing else is ever replaced)")
    p.add_argument("--load", metavar="DIR", help="restore a model saved by --save and evaluate it (no training)")
    p.add_argument("--ask", metavar="FILE", help="with --load: answer the questions of your own story in FILE "
                   "('-' for stdin), bAbI lines or plain sentences, a question ends with '?'")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print N test stories with each hop's attention")
    p.add_argument("--logdir", default="runs", help="TensorBoard logs go under this folder (default runs/)")
    p.add_argument("--log-every", type=int, help="print a line every N epochs (default 1; 20 for several tasks)")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True,
                   help="compile the graph with XLA: the same model, about 3x less CPU per training step "
                   "after a 1-2 s compile (default on; see README)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="several tasks: tasks trained at once, one process each (default: cores)")
    args = p.parse_args(argv)

    for name, (lo, hi) in INT_RANGES.items():
        value = getattr(args, name)
        if value is not None and not lo <= value <= hi:
            raise ArgumentError(f"--{name.replace('_', '-')} {value} is out of range; use {lo} to {hi}")
    for name in ("lr", "ls_lr", "init_std", "max_grad_norm"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ArgumentError(f"--{name.replace('_', '-')} {value} must be a positive number; "
                                f"the default is {p.get_default(name)}")
    if not (0 <= args.noise < 1):
        raise ArgumentError(f"--noise {args.noise} is out of range; use a fraction in [0, 1), e.g. 0.1")
    if args.ask and not args.load:
        raise ArgumentError("--ask needs a trained model; add --load DIR (a folder written by --save)")
    if args.load and (args.save or args.overwrite):
        raise ArgumentError("--load only evaluates, it writes nothing; drop --save/--overwrite")
    if args.overwrite and not args.save:
        raise ArgumentError("--overwrite applies to --save DIR; add --save, or drop --overwrite "
                            "(the default folder is always new)")
    if args.val_folds and args.runs < 2:
        raise ArgumentError("--val-folds gives each of several runs its own validation tenth; add --runs N "
                            "(N >= 2), or drop --val-folds")
    if args.val_folds is None:
        args.val_folds = args.select == "ensemble" and args.runs > 1
    if args.joint and args.task is not None:
        raise ArgumentError("--joint trains one model on all 20 tasks; drop --task")

    if args.joint or args.task == "all":
        args.tasks = list(range(1, 21))
    elif args.task is None:
        args.tasks = None if args.load else [1]  # a loaded model brings its own tasks
    else:
        args.tasks = []
        for t in args.task.split(","):
            if not (t.strip().isdigit() and 1 <= int(t) <= 20):
                raise ArgumentError(f"unknown task {args.task!r}: choose a number from 1 to 20, a list such "
                                    f"as 2,3,16, or 'all'")
            if int(t) not in args.tasks:
                args.tasks.append(int(t))
    args.d = args.embedding_size or (50 if args.joint else 20)
    args.epochs = args.epochs or (60 if args.joint else 100)
    if args.ls_epochs is None:
        args.ls_epochs = 30 if args.joint else 20
    args.anneal_every = args.anneal_every or (15 if args.joint else 25)
    # "In LS training, the initial learning rate is set to 0.005" (Sec. 4.2): after the linear
    # phase too, as in the official code; without LS it is 0.01
    args.main_lr = args.ls_lr if args.ls else args.lr
    return args


def finish_args(args, tasks):
    """The defaults that depend on the tasks, once they are known (with --load, from the checkpoint)."""
    args.tasks = tasks
    args.sweep = len(tasks) > 1 and not args.joint  # several independent models, one per task
    args.log_every = args.log_every or (20 if args.sweep else 1)
    return args


# --------------------------------------------------------------------------- data
# one split, vectorised: stories [n, M, S] word ids with slot 0 the newest sentence, questions
# [n, S], answers [n] word ids, lengths [n] memories used, task_ids [n], examples (the parsed text)
Split = collections.namedtuple("Split", "stories questions answers lengths task_ids examples")


class Data:
    """The train / val / test splits of `tasks`, vectorised, and the sizes the model needs;
    train_val holds each task's whole training file, which hold_out(fold) splits into train and val."""

    def __init__(self, tasks, data_dir, mem_size, noise, saved=None):
        train_file, test, vocab_lists = {}, {}, []
        for t in tasks:
            train_file[t], test[t] = babi_data.load_task(data_dir, t)  # train + val, parsed
            vocab_lists += [train_file[t], test[t]]
        every = [e for examples in (train_file, test) for t in tasks for e in examples[t]]
        longest = max(len(e["story"]) for e in every)
        self.word_idx = babi_data.build_vocab(*vocab_lists)
        self.sentence_size = max(max([len(s) for s in e["story"]] + [len(e["question"])]) for e in every)
        # as many slots as the longest story needs, plus room for the random-noise memories, at
        # most --mem-size (the official code sizes its memory to the data too; the empty slots
        # take part in the attention softmax, so this is part of the model)
        self.mem_slots = min(mem_size, longest + int(np.ceil(noise * longest)))
        if saved:  # a loaded model fixes the vocabulary and the array sizes
            unseen = sorted(set(self.word_idx) - set(saved["word_idx"]))
            if unseen:
                warn(f"{len(unseen)} words of the data are not in the model's vocabulary and are left out: "
                     f"{' '.join(unseen[:10])}{' ...' if len(unseen) > 10 else ''}")
            self.word_idx, self.sentence_size, self.mem_slots = (
                saved["word_idx"], saved["sentence_size"], saved["mem_slots"])
        self.vocab_size = len(self.word_idx) + 1                   # V, with the nil word 0
        n_arrays = len(every) + sum(len(train_file[t]) for t in tasks)  # training questions twice, about
        size = 4 * n_arrays * self.mem_slots * self.sentence_size
        if size > 4 * 2 ** 30:
            raise DataError(f"the stories would take {size / 2 ** 30:.1f} GiB as arrays ({n_arrays} questions x "
                            f"{self.mem_slots} memories x {self.sentence_size} words); lower --mem-size")

        def as_split(t, examples):
            arrays = babi_data.vectorize(examples, self.word_idx, self.sentence_size, self.mem_slots)
            return Split(*arrays, np.full(len(examples), t), examples)
        self.train_val = {t: as_split(t, train_file[t]) for t in tasks}
        self.splits = {"test": concat([as_split(t, test[t]) for t in tasks])}
        self.hold_out(0)

    def hold_out(self, fold):
        """Set the train and val splits: each task's fold-th tenth of its training questions is
        held out for validation (fold 0 for every run is the paper's protocol; see --val-folds)."""
        parts = {"train": [], "val": []}
        for split in self.train_val.values():
            train_idx, val_idx = babi_data.validation_indices(len(split.answers), fold=fold)
            parts["train"].append(take(split, train_idx))
            parts["val"].append(take(split, val_idx))
        self.splits.update({name: concat(p) for name, p in parts.items()})


def take(split, idx):
    """The rows `idx` of a split."""
    return Split(*(field[idx] for field in split[:-1]), [split.examples[i] for i in idx])


def concat(splits):
    """Splits one after another, as one."""
    return Split(*(np.concatenate(field) for field in list(zip(*splits))[:-1]),
                 [e for split in splits for e in split.examples])


def add_random_noise(stories, lengths, rng, rate):
    """Random noise (Sec. 4.1): insert ~rate*L empty memories at random places in each story,
    which shifts the older sentences to later time slots and regularises T_A. An empty memory
    is a zero vector with no T_A(i), like padding: the official code's "gaps in the time
    index". Vectorised: sort the real memories (keys 0.5, 1.5, ...) with the empty ones."""
    n, M, _ = stories.shape
    n_empty = rng.binomial(lengths, rate)
    real_keys = np.where(np.arange(M) < lengths[:, None], np.arange(M) + 0.5, np.inf)
    empty_keys = np.where(np.arange(M) < n_empty[:, None], rng.uniform(0, lengths[:, None], (n, M)), np.inf)
    order = np.argsort(np.concatenate([real_keys, empty_keys], 1), 1, kind="stable")[:, :M]
    padded = np.concatenate([stories, np.zeros_like(stories)], 1)  # index >= M is an empty memory
    return padded[np.arange(n)[:, None], order], np.minimum(lengths + n_empty, M)


# --------------------------------------------------------------------------- the model
def position_encoding(sentence_size, d, formula="matlab"):
    """Table [sentence_size + 1, sentence_size, d]: row J holds l_j for a sentence of J words.

    Paper (Sec. 4.1): l_kj = (1 - j/J) - (k/d)(1 - 2j/J), j, k 1-based, J = words in THIS
    sentence. The official Matlab code (the default): 1 + 4(k - (d+1)/2)(j - (J+1)/2)/(dJ) with
    J = the longest sentence, about twice as large; the printed formula fails tasks 15 and 16
    here (see README)."""
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


# what build_graph gives its callers: the three placeholders, the two schedule variables, the
# outputs (a_hat = softmax of eq. (3), its argmax, the attention p of every hop), the training op
Model = collections.namedtuple("Model", "sentences question answer lr linear loss losses a_hat prediction "
                                        "attention train_op params init saver")


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

    pe = position_encoding(S, d, cfg.pe_formula) if cfg.pe else np.ones((S + 1, S, d), np.float32)
    # only the paper's l_j depends on the sentence's own length J; with the code's formula (or
    # none) one row serves every sentence, since the words past J are nil, with zero embedding
    by_length = cfg.pe and cfg.pe_formula == "paper"
    pe = tf.constant(pe if by_length else pe[S])                   # [S + 1, S, d] or [S, d]

    def encode(E, x):
        """sum_j l_j * A x_ij: [..., S] word ids -> [..., d] (position encoding, Sec. 4.1)."""
        l = tf.gather(pe, tf.reduce_sum(tf.cast(x > 0, tf.int32), -1)) if by_length else pe  # l_j of J words
        return tf.reduce_sum(tf.nn.embedding_lookup(E, x) * l, -2)

    mask = tf.cast(tf.reduce_any(sentences > 0, -1), tf.float32)   # [b, M], 1 where a sentence is
    te = float(cfg.te)

    def memory(E, T):
        """m_i = sum_j l_j * A x_ij + T_A(i) (or c_i with C, T_C), [b, M, d]. T_A(1) is the newest.
        Empty slots (padding, random noise) get no T: they stay zero vectors"""
        return encode(E, sentences) + te * T * mask[..., None]

    u = encode(B, question)                                        # u^1 = B q, [b, d]
    attention, c = [], None
    for k in range(K):
        # adjacent tying makes m^{k+1} = c^k exactly (A^{k+1} = C^k, T_A^{k+1} = T_C^k): reuse it
        m = c if cfg.tying == "adjacent" and c is not None else memory(A[k], T_A[k])
        c = memory(C[k], T_C[k])
        scores = tf.matmul(u[:, None, :], m, adjoint_b=True)[:, 0]   # u^T m_i, [b, M]
        # p_i = softmax(u^T m_i) (1); linear start removes the softmax. Empty slots (m_i = 0,
        # score 0) stay in the softmax, as in the official code: the yes/no tasks need them (see README)
        p = tf.where(linear, scores, tf.nn.softmax(scores))
        o = tf.matmul(p[:, None, :], c)[:, 0]                        # o = sum_i p_i c_i (2), [b, d]
        u = (tf.matmul(u, H) if H is not None else u) + o            # u^{k+1} = u^k + o^k (4)
        attention.append(p)
    logits = tf.matmul(u, W)                                       # W(o^K + u^K), [b, V]
    a_hat = tf.nn.softmax(logits)                                  # a_hat = softmax(W(o^K + u^K)) (3)
    losses = tf.nn.softmax_cross_entropy_with_logits(labels=answer, logits=logits)  # [b]
    loss = tf.reduce_sum(losses)                                   # summed over the batch (Sec. 4.2)
    prediction = tf.argmax(logits, 1, output_type=tf.int32)

    # --- the clipped optimizer, in the slides' three steps: compute, clip, apply
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

    params = tf.trainable_variables()
    return Model(sentences, question, answer, lr, linear, loss, losses, a_hat, prediction, attention, train_op,
                 params, tf.global_variables_initializer(), tf.train.Saver(params, max_to_keep=None))


# --------------------------------------------------------------------------- training
def feed(model, stories, questions, answers, V):
    one_hot = np.zeros((len(answers), V), np.float32)
    one_hot[np.arange(len(answers)), answers] = 1.0
    return {model.sentences: stories, model.question: questions, model.answer: one_hot}


def scalar(writer, tag, value, step):
    import tensorflow.compat.v1 as tf
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=value)]), step)


def train(sess, model, data, cfg, rng, writer, prefix=""):
    """One run (Sec. 4.2): linear start, then --epochs epochs with the softmaxes back in and the
    learning rate halved every --anneal-every epochs. Returns (training error, validation error)."""
    split, V = data.splits["train"], data.vocab_size
    n = len(split.answers)
    linear_start, linear_epochs, prev_val_loss, epoch, main_epoch = cfg.ls, 0, np.inf, 0, 0
    while main_epoch < cfg.epochs:
        epoch += 1
        if linear_start:
            linear_epochs += 1
            lr = cfg.ls_lr
        else:
            main_epoch += 1
            lr = cfg.main_lr * 0.5 ** ((main_epoch - 1) // cfg.anneal_every)
        model.lr.load(lr, sess)
        stories = add_random_noise(split.stories, split.lengths, rng, cfg.noise)[0] if cfg.rn else split.stories
        order, t0, total_loss, correct = rng.permutation(n), time.time(), 0.0, 0
        # batches without replacement; the last partial batch waits for the next shuffle (the
        # official code instead draws every batch at random, with replacement)
        for i in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            SIGNALS.stop_if_received()
            b = order[i:i + cfg.batch_size]
            _, loss, pred = sess.run([model.train_op, model.loss, model.prediction],
                                     feed(model, stories[b], split.questions[b], split.answers[b], V))
            total_loss += loss
            correct += int((pred == split.answers[b]).sum())
        seen = n - n % cfg.batch_size
        speed = seen / (time.time() - t0)
        val_loss, _, val_pred = evaluate(sess, model, data.splits["val"], V)
        val_acc = (val_pred == data.splits["val"].answers).mean()
        stats = dict(lr=lr, train_loss=total_loss / seen, train_acc=correct / seen, val_loss=val_loss,
                     val_acc=val_acc, examples_per_sec=speed)
        if epoch % cfg.log_every == 0 or main_epoch == cfg.epochs:
            print(f"{prefix}epoch={epoch} lr={lr:g} train_loss={stats['train_loss']:.4f} "
                  f"train_acc={stats['train_acc']:.3f} val_loss={val_loss:.4f} "
                  f"val_acc={val_acc:.3f} examples_per_sec={speed:.0f}", flush=True)
        if writer is not None:
            for k, v in stats.items():
                scalar(writer, ("losses/" if "loss" in k else "charts/") + k, v, epoch)
        # linear start ends when the validation loss stops falling (paper) or after a fixed
        # number of epochs (official code, --ls-epochs); the softmaxes go back in and training
        # recommences with the full schedule
        if linear_start and ((cfg.ls_epochs and linear_epochs >= cfg.ls_epochs) or
                             (not cfg.ls_epochs and val_loss >= prev_val_loss) or linear_epochs >= cfg.epochs):
            linear_start = False
            model.linear.load(False, sess)
            print(f"{prefix}linear_start_end epoch={epoch}", flush=True)
        prev_val_loss = val_loss
    train_pred = evaluate(sess, model, split, V)[2]
    return 1.0 - (train_pred == split.answers).mean(), 1.0 - val_acc


# --------------------------------------------------------------------------- evaluation
def evaluate(sess, model, split, V, batch=100, fetch_attention=False):
    """(mean loss, a_hat [n, V], prediction [n]) over a whole split, plus the attention [K, n, M]
    if asked, in chunks of one fixed size (the last one padded with repeats) so that XLA
    compiles a single shape."""
    n = len(split.answers)
    idx = np.arange(n + (-n % batch)) % n
    fetches = [model.losses, model.a_hat, model.prediction] + (model.attention if fetch_attention else [])
    outs = [sess.run(fetches, feed(model, split.stories[b], split.questions[b], split.answers[b], V))
            for b in np.split(idx, len(idx) // batch)]
    losses, a_hat, prediction, *attention = [np.concatenate(column)[:n] for column in zip(*outs)]
    if fetch_attention:
        return losses.mean(), a_hat, prediction, attention
    return losses.mean(), a_hat, prediction


def restore(sess, model, folder, member):
    """Load one saved run (an ensemble has several) into the graph's variables."""
    import tensorflow.compat.v1 as tf
    try:
        model.saver.restore(sess, os.path.join(folder, member))
    except (tf.errors.OpError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(f"checkpoint {folder} is damaged or does not match its config.json ({first}); "
                        f"train the model again with --save") from None
    model.linear.load(False, sess)                                 # a trained model has its softmaxes


def predict(sess, model, folder, members, split, V, fetch_attention=False):
    """The answer distribution of a saved model on `split`: one run's a_hat, or an ensemble's
    mean of its runs' a_hat (the attention shown is the first run's)."""
    a_hat, attention = 0.0, None
    for i, member in enumerate(members):
        restore(sess, model, folder, member)
        out = evaluate(sess, model, split, V, fetch_attention=fetch_attention and i == 0)
        a_hat = a_hat + out[1] / len(members)
        attention = out[3] if len(out) > 3 else attention
    prediction = out[2] if len(members) == 1 else np.argmax(a_hat, 1)
    return a_hat, prediction, attention


def print_attention(lines, support, attention):
    """The paper's Figure 2 as text: each memory line, oldest first, with p_i of every hop."""
    print((" " * 49 + "".join(f"hop{k + 1:<3}" for k in range(len(attention)))).rstrip())
    for s, text in enumerate(lines):
        print((f" {'*' if s in support else ' '} {text[:44]:<46}" + "".join(f"{p[s]:<6.2f}" for p in attention)).rstrip())


def show_attention(data, n_show, a_hat, prediction, attention):
    """The first n_show test stories with their attention (* marks a supporting fact)."""
    split = data.splits["test"]
    words = {i: w for w, i in data.word_idx.items()}
    for j in range(min(n_show, len(split.answers))):
        ex, n = split.examples[j], int(split.lengths[j])           # memories used, newest in slot 0
        first = len(ex["story"]) - n
        print(f"\nstory {j + 1}")
        print_attention([" ".join(s) for s in ex["story"][first:]], [s - first for s in ex["support"]],
                        [p[j, :n][::-1] for p in attention])
        print(f"   question: {' '.join(ex['question'])}?  predicted: {words.get(int(prediction[j]), '<nil>')}"
              f" p={a_hat[j, prediction[j]]:.2f}  true: {ex['answer']}")


def ask(cfg):
    """--ask FILE: answer the questions of a user's story with a saved model."""
    folder, meta = read_model(cfg.load)
    name = "stdin" if cfg.ask == "-" else cfg.ask
    lines = (babi_data.decode_lines(sys.stdin.buffer.read(), name) if cfg.ask == "-"
             else babi_data.read_lines(cfg.ask))
    examples = babi_data.parse_user_story(lines, name)                # a bad story fails before TF loads
    load_tf(cfg)
    sess, model, V = open_model(cfg, meta)
    restore(sess, model, folder, meta["members"][0])               # a damaged model fails here, first
    word_idx, S, M = meta["word_idx"], meta["sentence_size"], meta["mem_slots"]
    unseen = {w for ex in examples for s in ex["story"] + [ex["question"]] for w in s} - set(word_idx)
    if unseen:
        warn(f"words the model never saw are left out, as if they were the nil word: {' '.join(sorted(unseen))}")
    long = [str(i + 1) for i, ex in enumerate(examples) if len(ex["story"]) > M]
    if long:
        warn(f"the model's memory holds {M} sentences: for question {', '.join(long)} only the {M} most "
             f"recent sentences before it are used")
    if any(len(s) > S for ex in examples for s in ex["story"] + [ex["question"]]):
        warn(f"the model reads at most {S} words per sentence; the words past that are dropped")
    for ex in examples:
        ex["answer"] = ex["answer"] or ""
    split = Split(*babi_data.vectorize(examples, word_idx, S, M), np.zeros(len(examples)), examples)
    a_hat, prediction, attention = predict(sess, model, folder, meta["members"], split, V, fetch_attention=True)
    words = {i: w for w, i in word_idx.items()}
    for j, ex in enumerate(examples):
        n = int(split.lengths[j])
        first = len(ex["story"]) - n
        true = f" true={ex['answer']}" if ex["answer"] else ""
        print(f"question={json.dumps(ex['question_text'])} answer={words.get(int(prediction[j]), '<nil>')} "
              f"p={a_hat[j, prediction[j]]:.2f}{true}")
        print_attention(ex["story_text"][first:], [s - first for s in ex["support"]],
                        [p[j, :n][::-1] for p in attention])
    sess.close()


# --------------------------------------------------------------------------- one model: train or load, save, test
def open_model(cfg, meta):
    """A session holding the graph of a model with `meta`'s sizes."""
    import tensorflow.compat.v1 as tf
    for k in MODEL_KEYS:
        setattr(cfg, k, meta[k])
    V = len(meta["word_idx"]) + 1
    graph = tf.Graph()
    with graph.as_default():
        model = build_graph(cfg, V, meta["sentence_size"], meta["mem_slots"])
    # one op never spans cores (the --task pool runs one process per core), and a negative inter-op
    # count runs every op in the calling thread: for a graph this small the hand-over to TF's pool
    # cost about 0.1 ms of a 0.4-1.1 ms training step
    config = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=-1)
    if cfg.xla:  # fuses the many small ops of this model; per-op overhead dominates otherwise
        config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
        # with XLA fusing the graph, grappler's rewrites only add to each new run signature's set-up
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    return tf.Session(graph=graph, config=config), model, V


Run = collections.namedtuple("Run", "train_error val_error params")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; `saved` is where its model went (None: nowhere)."""

    def __init__(self, saved=None):
        super().__init__(saved)
        self.saved = saved


def run(cfg, tasks, data_dir, run_dir=None, save_dir=None, load_dir=None, prefix=""):
    """Train (or load) one model on `tasks`; returns ({task: test error in percent}, wall seconds)."""
    t0 = time.time()
    folder, saved = read_model(load_dir) if load_dir else (None, None)
    data = Data(tasks, data_dir, cfg.mem_size, cfg.noise if cfg.rn else 0.0, saved)
    meta = saved or dict(tasks=tasks, joint=cfg.joint, word_idx=data.word_idx, sentence_size=data.sentence_size,
                         mem_slots=data.mem_slots, **{k: getattr(cfg, k) for k in MODEL_KEYS})
    sess, model, V = open_model(cfg, meta)
    if not load_dir:
        folder, meta = train_and_save(cfg, sess, model, data, meta, run_dir, save_dir, prefix)
    try:
        a_hat, prediction, attention = predict(sess, model, folder, meta["members"], data.splits["test"], V,
                                               fetch_attention=cfg.show > 0)
        task_ids = data.splits["test"].task_ids
        correct = prediction == data.splits["test"].answers
        errors = {t: 100.0 * (1.0 - correct[task_ids == t].mean()) for t in tasks}
        if cfg.show:
            show_attention(data, cfg.show, a_hat, prediction, attention)
    except KeyboardInterrupt:
        raise Interrupted(None if load_dir else os.path.dirname(folder)) from None
    sess.close()
    return errors, time.time() - t0


def run_fold(cfg, r):
    """The validation tenth run r holds out: its own with --val-folds, else the paper's (fold 0)."""
    return r if cfg.val_folds else 0


def train_and_save(cfg, sess, model, data, meta, run_dir, save_dir, prefix):
    """--runs fresh initialisations (the paper keeps the one with the lowest training error),
    then save what --select keeps. Ctrl-C or SIGTERM saves what was trained so far."""
    import tensorflow.compat.v1 as tf
    writer = tf.summary.FileWriter(run_dir, sess.graph)
    runs, interrupted = [], False
    try:
        for r in range(cfg.runs):
            rng = np.random.RandomState(cfg.seed + r)
            data.hold_out(run_fold(cfg, r))                        # this run's validation tenth
            sess.run(model.init)                                   # each run draws fresh N(0, 0.1) weights
            run_prefix = prefix + (f"run={r + 1} " if cfg.runs > 1 else "")
            with SIGNALS.held():  # a signal is noted, and train() stops at its next batch
                train_error, val_error = train(sess, model, data, cfg, rng, writer if r == 0 else None, run_prefix)
            runs.append(Run(train_error, val_error, sess.run(model.params)))
            if cfg.runs > 1:
                print(f"{run_prefix}train_error={100 * train_error:.1f} val_error={100 * val_error:.1f}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    with SIGNALS.held():                                           # from here on a signal waits
        writer.close()
        if not runs:  # stopped during the first run: keep what it has learnt so far
            runs.append(Run(np.nan, np.nan, sess.run(model.params)))
        if cfg.select == "ensemble":
            kept = runs
        else:
            kept = [min(runs, key=lambda r: r.train_error if cfg.select == "train" else r.val_error)]
        meta = dict(meta, runs=len(runs), select=cfg.select, val_folds=cfg.val_folds,
                    members=["model"] if len(kept) == 1 else [f"model-{i + 1}" for i in range(len(kept))])
        try:
            folder = save_model(sess, model, save_dir, meta, [r.params for r in kept])
        except (OSError, tf.errors.OpError) as e:  # say where the model can still be found
            fallback = tempfile.mkdtemp(prefix="memn2n-model-")
            folder = save_model(sess, model, fallback, meta, [r.params for r in kept])
            print(f"memn2n.py: error: could not save the model to {save_dir} ({getattr(e, 'strerror', None) or e}); "
                  f"it was saved to {fallback} instead", file=sys.stderr, flush=True)
            SAVE_FAILED.append(fallback)
            save_dir = fallback
    if interrupted or SIGNALS.received:
        raise Interrupted(save_dir)
    return folder, meta


# --------------------------------------------------------------------------- checkpoints
# A model folder DIR holds memn2n.json, {"written_by": "memn2n.py", "model": "<subfolder>"}, and
# that subfolder: config.json (sizes, vocabulary, runs) and the TensorFlow checkpoint of each
# kept run. A new save writes a new subfolder, then replaces memn2n.json with os.replace: a
# crash at any point leaves the old model or the new one, complete. The folder of several
# tasks (--task all) holds memn2n.json {"written_by": "memn2n.py", "tasks": true} and task<t>/.
MARKER = "memn2n.json"
CONFIG_TYPES = {"tasks": list, "word_idx": dict, "sentence_size": int, "mem_slots": int, "d": int, "hops": int,
                "tying": str, "pe": bool, "pe_formula": str, "te": bool, "members": list}


def read_marker(folder):
    """memn2n.json of `folder` as a dict, None if there is none; DataError if it is damaged."""
    path = os.path.join(folder, MARKER)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            marker = json.load(f)
        assert isinstance(marker, dict) and marker.get("written_by") == "memn2n.py"
    except (OSError, ValueError, AssertionError):
        raise DataError(f"{path} is damaged (not the JSON that memn2n.py writes); train the model again "
                        f"with --save") from None
    return marker


def is_old_layout(folder):
    """A model saved by earlier versions: config.json and model.* directly in the folder."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and {"word_idx", "sentence_size", "mem_slots", "hops"} <= set(meta)
            and os.path.isfile(os.path.join(folder, "model.index")))


def folder_kind(folder):
    """'model', 'tasks' (a --task all folder), or None if memn2n.py did not write `folder`."""
    marker = read_marker(folder)
    if marker is not None:
        return "tasks" if marker.get("tasks") else "model"
    return "model" if is_old_layout(folder) else None


def read_model(folder):
    """(the subfolder holding the checkpoint, its config) of a model folder; one DataError
    naming what is wrong with a damaged one."""
    damaged = f"checkpoint {folder} is damaged or incomplete"
    if not os.path.isdir(folder):
        raise DataError(f"no checkpoint at {folder}; train one with --save DIR")
    marker = read_marker(folder)
    if marker is not None and marker.get("tasks"):
        raise DataError(f"{folder} holds one model per task; pass --load {os.path.join(folder, 'task<t>')}")
    if marker is None:
        if not is_old_layout(folder):
            raise DataError(f"no checkpoint at {folder} (no {MARKER}); train one with --save DIR")
        sub = folder                                              # the layout of earlier versions
    else:
        name = marker.get("model")
        if not (isinstance(name, str) and re.fullmatch(r"model-[\w.-]+", name)):
            raise DataError(f"{damaged} ({MARKER} names no model subfolder); train it again with --save")
        sub = os.path.join(folder, name)
    try:
        with open(os.path.join(sub, "config.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{damaged} (config.json: {getattr(e, 'strerror', None) or e}); train it again "
                        f"with --save") from None
    if not isinstance(meta, dict):
        raise DataError(f"{damaged} (config.json is not a JSON object); train it again with --save")
    meta.setdefault("members", ["model"])
    meta.setdefault("joint", len(meta.get("tasks") or []) > 1)
    for key, kind in CONFIG_TYPES.items():
        if not isinstance(meta.get(key), kind) or (kind is int and isinstance(meta[key], bool)):
            raise DataError(f"{damaged} (config.json: {key!r} missing or not a {kind.__name__}); train it "
                            f"again with --save")
    ids = sorted(meta["word_idx"].values()) if all(isinstance(i, int) for i in meta["word_idx"].values()) else None
    sane = (ids == list(range(1, len(ids) + 1)) and meta["tasks"] and set(meta["tasks"]) <= set(range(1, 21))
            and 1 <= meta["d"] <= 1000 and 1 <= meta["hops"] <= 10 and 1 <= meta["sentence_size"] <= babi_data.MAX_WORDS
            and 1 <= meta["mem_slots"] <= 1000 and meta["tying"] in ("adjacent", "layerwise")
            and meta["pe_formula"] in ("paper", "matlab") and meta["members"]
            and all(isinstance(m, str) and re.fullmatch(r"model(-\d+)?", m) for m in meta["members"]))
    if not sane:
        raise DataError(f"{damaged} (config.json holds impossible values); train it again with --save")
    for m in meta["members"]:
        if not os.path.isfile(os.path.join(sub, m + ".index")):
            raise DataError(f"{damaged} ({m}.index is missing); train it again with --save")
    return sub, meta


def save_model(sess, model, folder, meta, members):
    """Write the kept runs' weights and config.json into a new subfolder of `folder`, then point
    memn2n.json at it (os.replace, atomic), then remove the subfolder it pointed at before.
    Signals wait until it is done, so a second Ctrl-C cannot leave half a model."""
    with SIGNALS.held():
        os.makedirs(folder, exist_ok=True)
        old, old_layout = read_marker(folder), is_old_layout(folder)
        tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
        os.mkdir(tmp)
        try:
            for name, params in zip(meta["members"], members):
                for v, value in zip(model.params, params):
                    v.load(value, sess)
                model.saver.save(sess, os.path.join(tmp, name), write_meta_graph=False, write_state=False)
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(meta, f)
            sub = "model-" + time.strftime("%Y%m%d-%H%M%S-") + os.path.basename(tmp)[len(".tmp-"):]
            os.rename(tmp, os.path.join(folder, sub))
            with open(tmp + ".json", "w") as f:
                json.dump({"written_by": "memn2n.py", "model": sub}, f)
            os.replace(tmp + ".json", os.path.join(folder, MARKER))  # the moment the new model replaces the old
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if "sub" in locals():
                shutil.rmtree(os.path.join(folder, sub), ignore_errors=True)
            with contextlib.suppress(OSError):
                os.remove(tmp + ".json")
            raise
        # the model it replaces (only ever one memn2n.py wrote: see check_save_dir)
        if old and old.get("model") and old["model"] != sub:
            shutil.rmtree(os.path.join(folder, old["model"]), ignore_errors=True)
        elif old_layout:  # earlier versions' layout: their files directly in the folder
            for name in os.listdir(folder):
                if name in ("config.json", "checkpoint") or re.fullmatch(r"model\.(index|data-\d+-of-\d+)", name):
                    os.remove(os.path.join(folder, name))
    return os.path.join(folder, sub)


def check_save_dir(path, overwrite, tasks_folder):
    """Never replace what this script did not write: --save DIR must be new, empty, or (with
    --overwrite) a folder of the same kind that memn2n.py wrote."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ArgumentError(f"--save {path} is a file, not a folder; choose another path")
    if not os.path.isdir(path) or not os.listdir(path):
        return
    kind, want = folder_kind(path), "tasks" if tasks_folder else "model"
    what = {"model": "a memn2n model", "tasks": "the models of several tasks"}
    if kind is None:
        raise ArgumentError(f"--save {path} exists and was not written by memn2n.py; choose another folder "
                            f"(--overwrite only replaces a memn2n model)")
    if kind != want:
        raise ArgumentError(f"--save {path} holds {what[kind]}, not {what[want]}; choose another folder")
    if not overwrite:
        raise ArgumentError(f"--save {path} already holds {what[kind]}; pass --overwrite to replace it, or "
                            f"choose another folder")
    if tasks_folder:
        for name in os.listdir(path):
            sub = os.path.join(path, name)
            if re.fullmatch(r"task\d+", name) and os.path.isdir(sub) and os.listdir(sub) and folder_kind(sub) != "model":
                raise ArgumentError(f"--save {path}: {sub} was not written by memn2n.py; choose another folder")


def make_writable_dir(path, flag, created):
    """Create `path` (noting in `created` what did not exist) and prove it can be written, so a
    model is never trained only to find it cannot be saved."""
    missing, p = [], os.path.abspath(path)
    while not os.path.exists(p):
        missing.append(p)
        p = os.path.dirname(p)
    try:
        os.makedirs(path, exist_ok=True)
        created.extend(reversed(missing))
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ArgumentError(f"cannot write {flag} {path} ({e.strerror or e}); choose a folder you can "
                            f"write to") from None


# --------------------------------------------------------------------------- several tasks, signals, main
def load_tf(cfg):
    """Import TensorFlow in graph mode; XLA's flags must be set before it loads."""
    if cfg.xla:  # CPU auto-clustering is off by default
        os.environ["TF_XLA_FLAGS"] = (os.environ.get("TF_XLA_FLAGS", "") +
                                      " --tf_xla_auto_jit=2 --tf_xla_cpu_global_jit").strip()
    import tensorflow.compat.v1 as tf
    tf.get_logger().setLevel("ERROR")
    tf.disable_v2_behavior()


class Signals:
    """SIGINT and SIGTERM raise KeyboardInterrupt, installed explicitly: a background job of a
    non-interactive shell starts with SIGINT ignored, and SIGTERM would kill without saving.
    Only the first signal interrupts. Inside held() it is only noted: a save finishes first, and
    training stops at its next batch (stop_if_received), a point where stopping is safe; raised at
    any bytecode, the KeyboardInterrupt can land in a TensorFlow object's __del__ and be dropped."""

    def __init__(self):
        self.received, self.holding, self.active, self.previous = None, False, True, {}

    def handle(self, signum, frame):
        first = self.received is None
        self.received = self.received or signum
        if first and self.active and not self.holding:
            raise KeyboardInterrupt

    def install(self, active=True):
        self.received, self.holding, self.active = None, False, active
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def uninstall(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.received = None                                       # an in-process caller's next run starts clean

    def stop_if_received(self):
        if self.received:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self):
        holding, self.holding = self.holding, True
        try:
            yield
        finally:
            self.holding = holding

    def exit_status(self):
        return 128 + (self.received or signal.SIGINT)             # 130 for SIGINT, 143 for SIGTERM


SIGNALS = Signals()
SAVE_FAILED = []  # where models went whose --save folder could not be written (exit status 1)


def warn(message):
    print(f"memn2n.py: warning: {message}", file=sys.stderr, flush=True)


def worker_init():
    """A task process: signals are noted while idle and interrupt only a task in progress."""
    SIGNALS.install(active=False)


def task_worker(cfg, t, data_dir, run_dir, save_dir, load_dir):
    """One task of several, in a process of its own (it inherits main's environment)."""
    if SIGNALS.received:                                           # the sweep is stopping
        return dict(task=t, status="not started")
    SAVE_FAILED.clear()
    load_tf(cfg)
    SIGNALS.active = True
    try:
        if SIGNALS.received:
            return dict(task=t, status="not started")
        errors, wall = run(cfg, [t], data_dir, run_dir, save_dir, load_dir, prefix=f"task={t} ")
    except Interrupted as e:
        return dict(task=t, status="interrupted", saved=e.saved)
    except KeyboardInterrupt:
        return dict(task=t, status="interrupted", saved=None)
    finally:
        SIGNALS.active = False
    print(f"task={t} test_error={errors[t]:.1f} wall_s={wall:.1f}", flush=True)
    return dict(task=t, status="done", errors=errors, save_failed=bool(SAVE_FAILED))


def task_cost(data_dir, t):
    """Questions x memory slots x sentence length: the training cost of a task, roughly."""
    train, test = babi_data.load_task(data_dir, t)
    longest = max(len(e["story"]) for e in train + test)
    words = max(max([len(s) for s in e["story"]] + [len(e["question"])]) for e in train + test)
    return len(train) * min(50, longest) * words


def run_tasks(cfg, data_dir, run_dir, save_root, load_root):
    """Several tasks, independent: --jobs processes train them at once, the longest first so
    that the last to finish is a short one. Ctrl-C / SIGTERM stops them all; each saves."""
    order = sorted(cfg.tasks, key=lambda t: -task_cost(data_dir, t))
    sub = lambda root, t: os.path.join(root, f"task{t}") if root else None
    pool = ProcessPoolExecutor(min(cfg.jobs, len(order)), multiprocessing.get_context("spawn"),
                               initializer=worker_init)
    futures = {t: pool.submit(task_worker, cfg, t, data_dir, sub(run_dir, t), sub(save_root, t), sub(load_root, t))
               for t in order}
    try:
        wait(futures.values(), return_when=FIRST_EXCEPTION)
        results = {t: f.result() for t, f in futures.items()}      # re-raises a task's error here
    except BaseException:
        for p in multiprocessing.active_children():               # SIGTERM reaches only us: pass it on
            os.kill(p.pid, signal.SIGINT)
        with SIGNALS.held():
            pool.shutdown(wait=True, cancel_futures=True)
        if not SIGNALS.received:
            raise
        done = {t: f.result() for t, f in futures.items() if f.done() and not f.cancelled() and not f.exception()}
        finished = [t for t in cfg.tasks if done.get(t, {}).get("status") == "done"]
        saved = [f"{t} ({done[t]['saved']})" for t in cfg.tasks if done.get(t, {}).get("saved")]
        rest = [t for t in cfg.tasks if t not in finished and not done.get(t, {}).get("saved")]
        print(f"memn2n.py: interrupted: finished tasks: {' '.join(map(str, finished)) or 'none'}; saved what "
              f"they had trained: {', '.join(saved) or 'none'}; stopped without a model: "
              f"{' '.join(map(str, rest)) or 'none'}", file=sys.stderr, flush=True)
        raise Interrupted() from None
    pool.shutdown()
    if any(r.get("save_failed") for r in results.values()):
        SAVE_FAILED.append(True)
    return {t: results[t]["errors"][t] for t in cfg.tasks}


def print_table(errors, joint):
    tasks = list(errors)
    paper = [PAPER_PE_LS_RN[t - 1] for t in tasks]
    print(f"\n{'task':>4}  {'name':<24} {'ours':>6} {'paper':>6}   (paper: Table 1, per-task PE LS RN)")
    for t, p in zip(tasks, paper):
        print(f"{t:>4}  {babi_data.TASK_NAMES[t]:<24} {errors[t]:>6.1f} {p:>6.1f}")
    failed = sum(e > 5.0 for e in errors.values())
    paper_mean, paper_failed = PAPER_JOINT if joint else (np.mean(paper), sum(p > 5.0 for p in paper))
    print(f"{'mean':>4}  {'':<24} {np.mean(list(errors.values())):>6.1f} {paper_mean:>6.1f}"
          + ("   (paper: joint PE LS RN)" if joint else ""))
    print(f"{'failed (> 5 %)':<30} {failed:>6d} {paper_failed:>6d}")
    return failed


def resolve_load(cfg):
    """--load DIR: the tasks it covers (checked against --task) and each task's model folder."""
    kind = folder_kind(cfg.load) if os.path.isdir(cfg.load) else None
    if kind == "tasks":
        present = sorted(int(n[4:]) for n in os.listdir(cfg.load) if re.fullmatch(r"task\d+", n)
                         and 1 <= int(n[4:]) <= 20 and os.path.isdir(os.path.join(cfg.load, n)))
        tasks = cfg.tasks or present
        missing = [t for t in tasks if t not in present]
        if missing:
            raise DataError(f"{cfg.load} has no model for task {missing[0]}; it holds tasks "
                            f"{','.join(map(str, present)) or 'none'}")
        for t in tasks:
            read_model(os.path.join(cfg.load, f"task{t}"))
        if len(tasks) == 1:                                        # one of them: load it as one model
            cfg.load = os.path.join(cfg.load, f"task{tasks[0]}")
        return finish_args(cfg, tasks)
    _, meta = read_model(cfg.load)
    if cfg.tasks and cfg.tasks != meta["tasks"]:
        raise DataError(f"checkpoint {cfg.load} was trained on tasks {','.join(map(str, meta['tasks']))}, not "
                        f"{','.join(map(str, cfg.tasks))}; drop --task or pass a matching one")
    cfg.joint = meta["joint"]
    finish_args(cfg, meta["tasks"])
    cfg.sweep = False                                              # one model, whatever its tasks
    return cfg


def new_run_dir(cfg, created):
    """A fresh folder for this run's TensorBoard logs (and, by default, its model)."""
    what = "joint" if cfg.joint else f"task{cfg.tasks[0]}" if len(cfg.tasks) == 1 else "tasks"
    make_writable_dir(cfg.logdir, "--logdir", created)
    base = os.path.join(cfg.logdir, f"memn2n_{what}__{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}")
    for i in range(1, 1000):
        path = base if i == 1 else f"{base}-{i}"
        try:
            os.mkdir(path)
            created.append(os.path.abspath(path))
            return path
        except FileExistsError:
            continue
    raise ArgumentError(f"cannot make a new run folder under --logdir {cfg.logdir}; pass another --logdir")


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t_start = time.time()
    SIGNALS.install()
    SAVE_FAILED.clear()
    created = []                                                   # folders this run made
    try:
        cfg = parse_args(argv)
        if cfg.ask:                                                # needs the model, not the data
            ask(cfg)
            return 0
        if cfg.load:
            resolve_load(cfg)
        else:
            finish_args(cfg, cfg.tasks)
        data_dir = babi_data.resolve_data_dir(cfg.data_dir)
        for t in cfg.tasks:
            babi_data.load_task(data_dir, t)                       # bad data fails here, before TF loads
        if not cfg.load:
            folds = {run_fold(cfg, r) for r in range(cfg.runs)}      # each run's own split: the smallest counts
            n_train = {t: min(len(babi_data.validation_indices(len(babi_data.load_task(data_dir, t)[0]), fold=k)[0])
                              for k in folds) for t in cfg.tasks}
            groups = [(f"task {t}", n_train[t]) for t in cfg.tasks] if cfg.sweep else \
                     [("the tasks" if cfg.joint else f"task {cfg.tasks[0]}", sum(n_train.values()))]
            for what, n in groups:
                if n < cfg.batch_size:
                    raise ArgumentError(f"--batch-size {cfg.batch_size} is more than the {n} training questions "
                                        f"of {what}; use --batch-size {max(n, 1)} or less")
            if cfg.save:
                check_save_dir(cfg.save, cfg.overwrite, cfg.sweep)
                make_writable_dir(cfg.save, "--save", created)
            run_dir = new_run_dir(cfg, created)
            save_root = cfg.save or os.path.join(run_dir, "model")
            if cfg.sweep:
                make_writable_dir(save_root, "--save", created)
                if not os.path.isfile(os.path.join(save_root, MARKER)):
                    with open(os.path.join(save_root, MARKER), "w") as f:
                        json.dump({"written_by": "memn2n.py", "tasks": True}, f)
            created.clear()                                        # from here on the run owns them
        else:
            run_dir = save_root = None
        if cfg.sweep:
            errors = run_tasks(cfg, data_dir, run_dir, save_root, cfg.load)
        else:
            load_tf(cfg)
            try:
                errors, _ = run(cfg, cfg.tasks, data_dir, run_dir, save_root, cfg.load)
            except Interrupted as e:
                print("memn2n.py: interrupted: " + (f"saved the model trained so far to {e.saved}" if e.saved
                      else "nothing was saved"), file=sys.stderr, flush=True)
                raise
    except (ArgumentError, DataError) as e:
        print(f"memn2n.py: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as e:
        if not isinstance(e, Interrupted):
            print("memn2n.py: interrupted; nothing was saved", file=sys.stderr, flush=True)
        return SIGNALS.exit_status()
    finally:
        SIGNALS.uninstall()
        for path in reversed(created):                             # made, then never used
            with contextlib.suppress(OSError):
                os.rmdir(path)
    wall = time.time() - t_start
    protocol = (f" runs={cfg.runs} select={cfg.select}" + (" val_folds=1" if cfg.val_folds else "")
                if cfg.runs > 1 and not cfg.load else "")
    if len(errors) == 1:
        (t, e), = errors.items()
        print(f"RESULT task={t} test_acc={1 - e / 100:.3f} test_error={e:.1f} wall_s={wall:.1f}{protocol}")
    else:
        failed = print_table(errors, cfg.joint)
        print(f"RESULT tasks={len(errors)} mean_error={np.mean(list(errors.values())):.1f} "
              f"failed={failed} wall_s={wall:.1f}{protocol}")
    return 1 if SAVE_FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
