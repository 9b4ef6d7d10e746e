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
import os
import sys
import time

import numpy as np

import babi_data
import memn2n_checks  # machinery (flag checks, logs, model folders, --ask and --show's text, the --task pool,
import memn2n_log  # signals, TensorFlow's start-up): a reader need not open these modules to follow the paper
import memn2n_models
import memn2n_story
import memn2n_tasks
from interrupts import SIGNALS
from tf_session import single_thread_session
from tf_setup import load_tf1

# the defaults that differ for joint training on all 20 tasks (Sec. 4.2): (one task, joint)
JOINT_DEFAULTS = dict(embedding_size=(20, 50), epochs=(100, 60), ls_epochs=(20, 30), anneal_every=(25, 15))


def parse_args(argv=None):
    p = memn2n_checks.parser(__doc__)                              # argparse whose errors are one line
    on_off = argparse.BooleanOptionalAction                        # --pe / --no-pe
    p.add_argument("--task", help="bAbI task 1-20, a list such as 2,3,16, or 'all' (default 1; --load: the model's)")
    p.add_argument("--joint", action="store_true", help="train one model on all 20 tasks (Sec. 4.2)")
    p.add_argument("--data-dir", help="bAbI's en or en-10k folder; default $BABI_DIR, else ~/.cache/babi (downloaded)")
    p.add_argument("--hops", type=int, default=3, help="memory hops K, 1-10 (default 3)")
    p.add_argument("--embedding-size", "-d", type=int, help="d, 1-1000 (default 20, 50 with --joint)")
    p.add_argument("--mem-size", type=int, default=50, help="most recent sentences kept in memory (default 50)")
    p.add_argument("--tying", choices=["adjacent", "layerwise"], default="adjacent",
                   help="weight tying (Sec. 2.2): adjacent A^{k+1}=C^k, or layer-wise with u^{k+1} = H u^k + o^k")
    p.add_argument("--pe", action=on_off, default=True, help="position encoding; --no-pe: bag of words (default on)")
    p.add_argument("--pe-formula", choices=["paper", "matlab"], default="matlab", help="'matlab' (default): the "
                   "official code's 1+4(k-(d+1)/2)(j-(J+1)/2)/(dJ), J = longest sentence; 'paper': the printed "
                   "(1-j/J)-(k/d)(1-2j/J), J = words in the sentence, half as large (fails tasks 15, 16 here)")
    p.add_argument("--te", action=on_off, default=True, help="temporal encoding T_A, T_C (default on)")
    p.add_argument("--ls", action=on_off, default=True, help="linear start: no memory softmax at first (default on)")
    p.add_argument("--ls-epochs", type=int, help="linear-start epochs, as the official code (default 20, 30 with "
                   "--joint); 0: the paper's rule, until the validation loss stops falling (too early: docs/memn2n.md)")
    p.add_argument("--rn", action=on_off, default=True, help="random noise: empty memories in training (default on)")
    p.add_argument("--noise", type=float, default=0.1, help="fraction of empty memories that --rn adds (default 0.1)")
    p.add_argument("--epochs", type=int, help="epochs after linear start (default 100, 60 with --joint)")
    p.add_argument("--anneal-every", type=int, help="halve lr every N epochs (default 25, 15 with --joint)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate with --no-ls (default 0.01)")
    p.add_argument("--ls-lr", type=float, default=0.005, help="learning rate with --ls, both phases (default 0.005)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32, at most the training set")
    p.add_argument("--init-std", type=float, default=0.1, help="weights drawn from N(0, std) (default 0.1)")
    p.add_argument("--max-grad-norm", type=float, default=40.0, help="clip each gradient matrix to this l2 norm")
    p.add_argument("--runs", type=int, default=1, help="training runs per model, each from a fresh "
                   "initialisation (seeds --seed, --seed+1, ...); --select says what is kept (paper: 10)")
    p.add_argument("--select", choices=["train", "val", "ensemble"], default="train", help="with --runs N: keep the "
                   "run of lowest training error (paper), of lowest validation error, or all N, averaged (ensemble)")
    p.add_argument("--val-folds", action=on_off, help="with --runs N: run i validates on "
                   "tenth i-1 (mod 10) of the training set, not the paper's one tenth, so ten runs learn from all of it"
                   " (default: on for --select ensemble; off for train and val, which compare runs on one tenth)")
    p.add_argument("--seed", type=int, default=1, help="seeds numpy and TensorFlow (default 1)")
    memn2n_checks.add_output_flags(p)                             # --save, --load, --ask, --show, --logdir, ...
    return memn2n_checks.check_args(p, p.parse_args(argv), JOINT_DEFAULTS)  # ranges; --task's list; defaults


# --------------------------------------------------------------------------- data
# babi_data.Data(tasks, ...).splits["train" | "val" | "test"]: stories [n, M, S] word ids (slot 0 the newest
# sentence), questions [n, S], answers [n], lengths [n] memories used, ...; hold_out(fold): the validation tenth
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
    """Table [sentence_size + 1, sentence_size, d]: row J holds l_j for a sentence of J words. Paper (Sec. 4.1):
    l_kj = (1 - j/J) - (k/d)(1 - 2j/J), j, k 1-based, J = words in THIS sentence. The official Matlab code (the
    default): 1 + 4(k - (d+1)/2)(j - (J+1)/2)/(dJ), J = the longest sentence, twice as large (docs/memn2n.md)."""
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


# build_graph's placeholders, schedule variables, outputs (a_hat of eq. (3), its argmax, each hop's p), update
Model = collections.namedtuple("Model", "sentences question answer lr linear loss losses a_hat prediction "
                                        "attention train_op params init saver")


def build_graph(args, vocab_size, sentence_size, mem_slots):
    """Placeholders, variables A, B, C, W (+ T_A, T_C, H), the loss and the clipped optimizer."""
    import tensorflow.compat.v1 as tf
    d, K, V, M, S = args.d, args.hops, vocab_size, mem_slots, sentence_size
    tf.set_random_seed(args.seed)

    # --- placeholders: the slides' three
    sentences = tf.placeholder(tf.int32, [None, M, S], name="sentences")  # x_ij, [b, M, S]; x_1 newest
    question = tf.placeholder(tf.int32, [None, S], name="question")        # q, [b, S]
    answer = tf.placeholder(tf.float32, [None, V], name="answer")          # one-hot a, [b, V]
    lr = tf.Variable(0.0, trainable=False, name="lr")              # set by train() every epoch
    linear = tf.Variable(bool(args.ls), trainable=False, name="linear_start")

    # --- variables, N(0, 0.1) (Sec. 4.2). The nil word (id 0) has a zero embedding: its row
    # starts at zero and its gradient is masked below, so padding never adds to m_i, c_i or u.
    normal = tf.random_normal_initializer(stddev=args.init_std)

    def nil_zero(shape, dtype=tf.float32, partition_info=None):
        return tf.concat([tf.zeros([1, shape[1]], dtype), normal(shape, dtype)[1:]], 0)

    def embedding(name):
        return tf.get_variable(name, [V, d], initializer=nil_zero)

    def temporal(name):
        return tf.get_variable(name, [M, d], initializer=normal)

    H = None
    if args.tying == "adjacent":  # A^{k+1} = C^k, B = A^1, W^T = C^K (Sec. 2.2): K + 1 matrices
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

    pe = position_encoding(S, d, args.pe_formula) if args.pe else np.ones((S + 1, S, d), np.float32)
    # only the paper's l_j depends on the sentence's own length J; with the code's formula (or
    # none) one row serves every sentence, since the words past J are nil, with zero embedding
    by_length = args.pe and args.pe_formula == "paper"
    pe = tf.constant(pe if by_length else pe[S])                   # [S + 1, S, d] or [S, d]

    def encode(E, x):
        """sum_j l_j * A x_ij: [..., S] word ids -> [..., d] (position encoding, Sec. 4.1)."""
        l = tf.gather(pe, tf.reduce_sum(tf.cast(x > 0, tf.int32), -1)) if by_length else pe  # l_j of J words
        return tf.reduce_sum(tf.nn.embedding_lookup(E, x) * l, -2)

    mask = tf.cast(tf.reduce_any(sentences > 0, -1), tf.float32)   # [b, M], 1 where a sentence is
    te = float(args.te)

    def memory(E, T):
        """m_i = sum_j l_j * A x_ij + T_A(i) (or c_i with C, T_C), [b, M, d]; empty slots stay zero vectors."""
        return encode(E, sentences) + te * T * mask[..., None]

    u = encode(B, question)                                        # u^1 = B q, [b, d]
    attention, c = [], None
    for k in range(K):
        # adjacent tying makes m^{k+1} = c^k exactly (A^{k+1} = C^k, T_A^{k+1} = T_C^k): reuse it
        m = c if args.tying == "adjacent" and c is not None else memory(A[k], T_A[k])
        c = memory(C[k], T_C[k])
        scores = tf.matmul(u[:, None, :], m, adjoint_b=True)[:, 0]   # u^T m_i, [b, M]
        # p_i = softmax(u^T m_i) (1); linear start removes the softmax. Empty slots (m_i = 0,
        # score 0) stay in the softmax, as in the official code: the yes/no tasks need them (docs/memn2n.md)
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
        clipped.append((tf.clip_by_norm(g, args.max_grad_norm), v))
    train_op = opt.apply_gradients(clipped)

    params = tf.trainable_variables()
    return Model(sentences, question, answer, lr, linear, loss, losses, a_hat, prediction, attention, train_op,
                 params, tf.global_variables_initializer(), tf.train.Saver(params, max_to_keep=None))


# --------------------------------------------------------------------------- training
def feed(model, stories, questions, answers, V):
    one_hot = np.zeros((len(answers), V), np.float32)
    one_hot[np.arange(len(answers)), answers] = 1.0
    return {model.sentences: stories, model.question: questions, model.answer: one_hot}


def train(sess, model, data, args, rng, log, should_stop):
    """One training run (Sec. 4.2): linear start, then --epochs epochs with the softmaxes back in and
    the learning rate halved every --anneal-every epochs. Returns (training error, validation error).
    log(epoch, stats, last) reports each epoch; should_stop() is asked before every batch."""
    split, V = data.splits["train"], data.vocab_size
    n = len(split.answers)
    linear_start, linear_epochs, prev_val_loss, epoch, main_epoch = args.ls, 0, np.inf, 0, 0
    while main_epoch < args.epochs:
        epoch += 1
        if linear_start:
            linear_epochs += 1
        else:
            main_epoch += 1
        # "In LS training, the initial learning rate is set to 0.005" (Sec. 4.2), kept after the linear
        # phase as in the official code (0.01 without LS); halved every --anneal-every epochs after it
        lr = (args.ls_lr if args.ls else args.lr) * 0.5 ** (max(main_epoch - 1, 0) // args.anneal_every)
        model.lr.load(lr, sess)
        stories = add_random_noise(split.stories, split.lengths, rng, args.noise)[0] if args.rn else split.stories
        order, t0, total_loss, correct = rng.permutation(n), time.time(), 0.0, 0
        # batches without replacement, the last partial one left for the next shuffle (official code: with replacement)
        for i in range(0, n - args.batch_size + 1, args.batch_size):
            if should_stop():
                raise KeyboardInterrupt
            b = order[i:i + args.batch_size]
            _, loss, pred = sess.run([model.train_op, model.loss, model.prediction],
                                     feed(model, stories[b], split.questions[b], split.answers[b], V))
            total_loss += loss
            correct += int((pred == split.answers[b]).sum())
        seen = n - n % args.batch_size
        speed = seen / (time.time() - t0)
        val = evaluate(sess, model, data.splits["val"], V)
        val_acc = (val.prediction == data.splits["val"].answers).mean()
        stats = dict(lr=lr, train_loss=total_loss / seen, train_acc=correct / seen, val_loss=val.loss,
                     val_acc=val_acc, examples_per_sec=speed)
        log(epoch, stats, last=main_epoch == args.epochs)
        # linear start ends when the validation loss stops falling (the paper's rule, --ls-epochs 0),
        # after --ls-epochs epochs (the official code's), or at the latest after --epochs linear epochs;
        # then the softmaxes go back in and training recommences with the full schedule
        fixed_end = args.ls_epochs and linear_epochs >= args.ls_epochs
        paper_end = not args.ls_epochs and val.loss >= prev_val_loss
        if linear_start and (fixed_end or paper_end or linear_epochs >= args.epochs):
            linear_start = False
            model.linear.load(False, sess)
            log.line(f"linear_start_end epoch={epoch}")
        prev_val_loss = val.loss
    train_pred = evaluate(sess, model, split, V).prediction
    return 1.0 - (train_pred == split.answers).mean(), 1.0 - val_acc


def val_fold(args, r):
    """The validation tenth run r holds out: its own with --val-folds, else the paper's (fold 0)."""
    return r if args.val_folds else 0


Trained = collections.namedtuple("Trained", "train_error val_error params")  # one of the --runs


def train_runs(sess, model, data, args, logs, should_stop):
    """--runs fresh initialisations, each on its validation tenth; returns them and whether should_stop() did."""
    trained = []
    for r in range(args.runs):
        rng = np.random.RandomState(args.seed + r)
        data.hold_out(val_fold(args, r))                           # this run's validation tenth
        sess.run(model.init)                                       # each run draws fresh N(0, 0.1) weights
        log = logs(r)
        try:
            errors = train(sess, model, data, args, rng, log, should_stop)
        except KeyboardInterrupt:
            if not trained:                                        # stopped during the first run: keep it
                trained.append(Trained(np.nan, np.nan, sess.run(model.params)))
            return trained, True
        trained.append(Trained(*errors, sess.run(model.params)))
        if args.runs > 1:
            log.line(f"train_error={100 * errors[0]:.1f} val_error={100 * errors[1]:.1f}")
    return trained, False


# --------------------------------------------------------------------------- evaluation
Evaluation = collections.namedtuple("Evaluation", "loss a_hat prediction attention")


def evaluate(sess, model, split, V, batch=100, fetch_attention=False):
    """Mean loss, a_hat [n, V], prediction [n] over a split, and the attention [K, n, M] if asked (else None), in
    chunks of one size (the last one padded with repeats), so that XLA compiles a single shape."""
    n = len(split.answers)
    idx = np.arange(n + (-n % batch)) % n
    fetches = [model.losses, model.a_hat, model.prediction] + (model.attention if fetch_attention else [])
    outs = [sess.run(fetches, feed(model, split.stories[b], split.questions[b], split.answers[b], V))
            for b in np.split(idx, len(idx) // batch)]
    losses, a_hat, prediction, *attention = [np.concatenate(column)[:n] for column in zip(*outs)]
    return Evaluation(losses.mean(), a_hat, prediction, attention if fetch_attention else None)


def predict(sess, model, folder, members, split, V, fetch_attention=False):
    """A saved model's a_hat on `split` (an ensemble's: the mean of its runs' a_hat), its argmax, the attention."""
    a_hat, attention = 0.0, None
    for i, member in enumerate(members):
        memn2n_models.restore(sess, model, folder, member)
        out = evaluate(sess, model, split, V, fetch_attention=fetch_attention and i == 0)
        a_hat = a_hat + out.a_hat / len(members)
        attention = attention or out.attention                     # the first run's
    prediction = out.prediction if len(members) == 1 else np.argmax(a_hat, 1)
    return a_hat, prediction, attention


def print_attention(example, n, attention, j, lines):
    """The paper's Figure 2 as text: the story's last n memory lines, oldest first (* marks a supporting
    fact), with p_i of every hop; memory slot 0 holds the newest sentence, hence the reversal."""
    first = len(example["story"]) - n
    support = [s - first for s in example["support"]]
    print((" " * 49 + "".join(f"hop{k + 1:<3}" for k in range(len(attention)))).rstrip())
    for s, text in enumerate(lines[first:]):
        row = "".join(f"{p[j, :n][::-1][s]:<6.2f}" for p in attention)
        print((f" {'*' if s in support else ' '} {text[:44]:<46}" + row).rstrip())


# --------------------------------------------------------------------------- one model: train or load, then test
def open_model(args, meta):
    """A session holding the graph of a model with `meta`'s sizes."""
    import tensorflow.compat.v1 as tf
    for k in memn2n_models.MODEL_KEYS:                             # d, hops, tying, pe, ...: a checkpoint fixes them
        setattr(args, k, meta[k])
    V = len(meta["word_idx"]) + 1
    graph = tf.Graph()
    with graph.as_default():
        model = build_graph(args, V, meta["sentence_size"], meta["mem_slots"])
    return single_thread_session(graph, args.xla), model, V


def one_model(args, tasks, data_dir, log_dir=None, save_dir=None, load_dir=None, prefix=""):
    """Train (or load) one model on `tasks`, then test it; returns ({task: test error in %}, wall seconds)."""
    t0 = time.time()
    folder, meta = memn2n_models.read_model(load_dir) if load_dir else (None, None)
    data = babi_data.Data(tasks, data_dir, args.mem_size, args.noise if args.rn else 0.0, meta)
    meta = meta or memn2n_models.new_meta(args, tasks, data)
    sess, model, V = open_model(args, meta)
    if not load_dir:
        writer = memn2n_log.open_writer(log_dir, sess.graph)        # TensorBoard
        logs = memn2n_log.run_logs(writer, args.log_every, prefix, args.runs)  # run r's: stdout, TensorBoard for r = 0
        with SIGNALS.held():                                       # machinery: a signal only sets a flag now
            trained, stopped = train_runs(sess, model, data, args, logs, lambda: SIGNALS.received)
            runs = len(trained)
            writer.close()
            if args.select != "ensemble":                          # the run of lowest training (or val) error
                trained = [min(trained, key=lambda t: t.train_error if args.select == "train" else t.val_error)]
            # machinery: an atomic save (a fallback folder if it fails); raises Interrupted if stopped
            folder, meta = memn2n_models.save_kept(sess, model, save_dir, meta, args, runs, trained, stopped)
    test = data.splits["test"]
    try:
        a_hat, prediction, attention = predict(sess, model, folder, meta["members"], test, V, args.show > 0)
        if args.show:                                              # --show N: Figure 2 for N test stories
            memn2n_story.show_attention(data, args.show, a_hat, prediction, attention, print_attention)
    except KeyboardInterrupt:
        raise memn2n_models.Interrupted(None if load_dir else os.path.dirname(folder)) from None
    correct = prediction == test.answers
    errors = {t: 100.0 * (1.0 - correct[test.task_ids == t].mean()) for t in tasks}
    sess.close()
    return errors, time.time() - t0


@memn2n_models.guarded  # machinery: bad input is one line (exit 2); Ctrl-C / SIGTERM save, exit 130 / 143
def main(argv=None, created=None):
    t_start = time.time()
    args = parse_args(argv)
    if args.ask:                                                   # answer the questions of the user's story
        return memn2n_story.ask(args, open_model, predict, print_attention)
    data_dir = memn2n_checks.check_data(args, {val_fold(args, r) for r in range(args.runs)})  # --batch-size too
    log_dir, save_dir = memn2n_models.prepare_dirs(args, created)  # None, None with --load
    if args.per_task:                                              # one model per task, --jobs processes
        errors = memn2n_tasks.train_each_task(one_model, args, data_dir, log_dir, save_dir)
    else:
        load_tf1(xla_auto_jit=args.xla)
        errors, _ = one_model(args, args.tasks, data_dir, log_dir, save_dir, args.load)
    memn2n_tasks.print_result(errors, args, time.time() - t_start)  # RESULT, after the table against Table 1
    return memn2n_models.exit_status()                             # 1 if a model went to a fallback folder


if __name__ == "__main__":
    sys.exit(main())
