"""memn2n.py --ask: a user's own story in, the model's answers with each hop's attention out; and --show's
test stories with their attention.

The story comes from a file or stdin, in bAbI form or as plain sentences (babi_data.parse_user_story);
a bad story fails before TensorFlow loads. Words the model never saw, stories longer than its memory
and sentences longer than it reads are said in one warning line each."""
import json
import sys

import numpy as np

import babi_data
import cli
import memn2n_models
from tf_setup import load_tf1


def read(args):
    """(the model's subfolder, its config, the story's questions as examples) of --load and --ask."""
    folder, meta = memn2n_models.read_model(args.load)
    name = "stdin" if args.ask == "-" else args.ask
    if args.ask == "-":
        lines = babi_data.decode_lines(sys.stdin.buffer.read(), name)
    else:
        lines = babi_data.read_lines(args.ask)
    return folder, meta, babi_data.parse_user_story(lines, name)


def vectorize(examples, meta):
    """The questions as a Split in the model's vocabulary and sizes, with a warning for what it cannot read."""
    word_idx, S, M = meta["word_idx"], meta["sentence_size"], meta["mem_slots"]
    unseen = {w for ex in examples for s in ex["story"] + [ex["question"]] for w in s} - set(word_idx)
    if unseen:
        cli.warn("memn2n.py", f"words the model never saw are left out, as if they were the nil word: "
                 f"{' '.join(sorted(unseen))}")
    long = [str(i + 1) for i, ex in enumerate(examples) if len(ex["story"]) > M]
    if long:
        cli.warn("memn2n.py", f"the model's memory holds {M} sentences: for question {', '.join(long)} only the "
                 f"{M} most recent sentences before it are used")
    if any(len(s) > S for ex in examples for s in ex["story"] + [ex["question"]]):
        cli.warn("memn2n.py", f"the model reads at most {S} words per sentence; the words past that are dropped")
    for ex in examples:
        ex["answer"] = ex["answer"] or ""
    arrays = babi_data.vectorize(examples, word_idx, S, M)
    return babi_data.Split(*arrays, np.zeros(len(examples)), examples)


def print_answers(split, meta, a_hat, prediction, attention, print_attention):
    """One line per question (its answer, the answer's probability, the true answer if the file gave
    one), then its story with each hop's attention (print_attention, as --show prints them)."""
    words = {i: w for w, i in meta["word_idx"].items()}
    for j, ex in enumerate(split.examples):
        true = f" true={ex['answer']}" if ex["answer"] else ""
        print(f"question={json.dumps(ex['question_text'])} answer={words.get(int(prediction[j]), '<nil>')} "
              f"p={a_hat[j, prediction[j]]:.2f}{true}")
        print_attention(ex, int(split.lengths[j]), attention, j, ex["story_text"])


def ask(args, open_model, predict, print_attention):
    """--ask FILE: answer the questions of the user's story with the model of --load, built and run by
    memn2n.py's own open_model and predict; each hop's attention printed by its print_attention."""
    folder, meta, examples = read(args)                            # a bad story fails before TF loads
    load_tf1(xla_auto_jit=args.xla)
    sess, model, V = open_model(args, meta)
    memn2n_models.restore(sess, model, folder, meta["members"][0])  # a damaged model fails here, first
    split = vectorize(examples, meta)
    a_hat, prediction, attention = predict(sess, model, folder, meta["members"], split, V, fetch_attention=True)
    print_answers(split, meta, a_hat, prediction, attention, print_attention)
    sess.close()
    return 0


def show_attention(data, n_show, a_hat, prediction, attention, print_attention):
    """--show N: the first N test stories with each hop's attention (print_attention), then the answer."""
    split, words = data.splits["test"], {i: w for w, i in data.word_idx.items()}
    for j in range(min(n_show, len(split.answers))):
        ex = split.examples[j]
        print(f"\nstory {j + 1}")
        print_attention(ex, int(split.lengths[j]), attention, j, [" ".join(s) for s in ex["story"]])
        print(f"   question: {' '.join(ex['question'])}?  predicted: {words.get(int(prediction[j]), '<nil>')}"
              f" p={a_hat[j, prediction[j]]:.2f}  true: {ex['answer']}")
