"""bAbI QA tasks v1.2: download, parse and vectorise; Data hands memn2n.py its ready splits.

Weston et al., "Towards AI-Complete Question Answering" (arXiv 1502.05698). The data set is
20 tasks of short stories; a question line is `question<TAB>answer<TAB>supporting ids`.

    python babi_data.py                      # download + verify into the cache, print where
    python babi_data.py --data-dir DIR       # check an extracted `en` / `en-10k` folder
"""
import argparse
import collections
import functools
import hashlib
import os
import re
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

import cli

URL = os.environ.get("BABI_URL", "http://www.thespermwhale.com/jaseweston/babi/tasks_1-20_v1-2.tar.gz")
ARCHIVE_DIR = "tasks_1-20_v1-2/en"  # the 1k set the paper's Table 1 uses
CACHE_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "babi")
TASK_NAMES = {1: "single-supporting-fact", 2: "two-supporting-facts", 3: "three-supporting-facts",
              4: "two-arg-relations", 5: "three-arg-relations", 6: "yes-no-questions", 7: "counting",
              8: "lists-sets", 9: "simple-negation", 10: "indefinite-knowledge",
              11: "basic-coreference", 12: "conjunction", 13: "compound-coreference",
              14: "time-reasoning", 15: "basic-deduction", 16: "basic-induction",
              17: "positional-reasoning", 18: "size-reasoning", 19: "path-finding",
              20: "agents-motivations"}
MAX_WORDS = 100                   # per sentence (bAbI's longest has 11): the arrays grow with it
DEADLINE_S = 600                  # the whole download, however slowly the server sends
MAX_ARCHIVE_BYTES = 64 * 2 ** 20  # the v1.2 archive is about 15 MB
MAX_FILE_BYTES = 8 * 2 ** 20      # each extracted file (the largest `en` file is 0.5 MB)


class DataError(cli.UserError):
    """A problem with the data that the user can fix; printed as one line, no traceback."""


HOW_TO_GET = (f"pass --data-dir pointing at an extracted tasks_1-20_v1-2/en (or en-10k) folder, "
              f"or set BABI_DIR; the archive is at {URL}")


# --------------------------------------------------------------------------- download + cache
def _safe_members(tar, prefix, manifest):
    """The members named in `manifest` under `prefix`; refuse the whole archive if any member
    could escape the folder it is extracted into. Files the manifest does not list are skipped."""
    keep = []
    for m in tar.getmembers():
        parts = m.name.replace("\\", "/").split("/")
        if m.name.startswith("/") or ".." in parts or m.issym() or m.islnk() or m.isdev():
            raise DataError(f"unsafe member {m.name!r} in the archive (absolute path, '..' or link): "
                            f"refusing to extract; nothing was kept")
        if m.isfile() and m.name.startswith(prefix + "/") and m.name[len(prefix) + 1:] in manifest:
            if m.size > MAX_FILE_BYTES:
                raise DataError(f"{m.name} in the archive is {m.size} bytes, more than the "
                                f"{MAX_FILE_BYTES} a bAbI file can be; nothing was kept")
            keep.append(m)
    return keep


def _remove_stale_partials(cache_dir, deadline_s):
    """A download killed before its cleanup leaves a .partial-* folder; one that nothing has
    touched for longer than a download may take is dead (a live one is younger) and goes."""
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        if not name.startswith(".partial-") or not os.path.isdir(path) or os.path.islink(path):
            continue
        newest = os.path.getmtime(path)
        for root, dirs, files in os.walk(path):
            for f in dirs + files:
                newest = max(newest, os.lstat(os.path.join(root, f)).st_mtime)
        if time.time() - newest > deadline_s + 60:
            shutil.rmtree(path, ignore_errors=True)


def _fetch(url, dest, timeout, deadline_s, max_bytes):
    """Stream `url` into `dest`, giving up after `deadline_s` in all or past `max_bytes`."""
    give_up = time.monotonic() + deadline_s
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
            size = int(r.headers.get("Content-Length") or 0)
            if size > max_bytes:
                raise DataError(f"the download from {url} would be {size} bytes, more than the "
                                f"{max_bytes} the bAbI archive can be; nothing was kept")
            got = 0
            while True:
                if time.monotonic() > give_up:
                    raise DataError(f"the download from {url} took longer than {deadline_s:g} s "
                                    f"({got} bytes so far); nothing was kept. {HOW_TO_GET}")
                chunk = r.read1(1 << 16)  # returns what has arrived: a trickle cannot pass the deadline
                if not chunk:
                    return
                got += len(chunk)
                if got > max_bytes:
                    raise DataError(f"the download from {url} passed {max_bytes} bytes, more than "
                                    f"the bAbI archive can be; nothing was kept")
                f.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataError(f"cannot download the bAbI data from {url} ({getattr(e, 'reason', e)}); "
                        f"no network? {HOW_TO_GET}") from None


def download(url=URL, cache_dir=CACHE_DIR, manifest=None, prefix=ARCHIVE_DIR, timeout=60,
             deadline_s=DEADLINE_S, max_bytes=MAX_ARCHIVE_BYTES):
    """Fetch the archive, extract the files `manifest` lists under `prefix`, verify them and move
    the folder into place atomically.

    Everything happens in a temporary folder inside `cache_dir`; only a complete, verified
    folder is renamed into place, so a failed or interrupted download leaves nothing behind."""
    manifest = EN_SHA256 if manifest is None else manifest
    final = os.path.join(cache_dir, prefix)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        _remove_stale_partials(cache_dir, deadline_s)
        tmp = tempfile.mkdtemp(prefix=".partial-", dir=cache_dir)
    except OSError as e:
        raise DataError(f"cannot write the download cache {cache_dir} ({e.strerror or e}); set "
                        f"XDG_CACHE_HOME to a writable folder, or {HOW_TO_GET}") from None
    try:
        archive = os.path.join(tmp, "archive.tar.gz")
        print(f"downloading {url} -> {cache_dir}", flush=True)
        _fetch(url, archive, timeout, deadline_s, max_bytes)
        folder = os.path.join(tmp, "x", prefix)
        os.makedirs(folder)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for m in _safe_members(tar, prefix, manifest):
                    name = m.name[len(prefix) + 1:]
                    digest = hashlib.sha256()
                    with tar.extractfile(m) as src, open(os.path.join(folder, name), "wb") as dst:
                        while chunk := src.read(1 << 16):
                            digest.update(chunk)
                            dst.write(chunk)
                    if digest.hexdigest() != manifest[name]:
                        raise DataError(f"checksum mismatch for {prefix}/{name} from {url}: corrupt or "
                                        f"not the official v1.2 archive; nothing was kept")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"the download from {url} is not a valid .tar.gz ({e}); nothing was kept") from None
        for name in manifest:
            if not os.path.isfile(os.path.join(folder, name)):
                raise DataError(f"the archive from {url} lacks {prefix}/{name}; nothing was kept")
        if not os.path.isdir(final):
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(folder, final)  # atomic: the cache holds the whole folder or none of it
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_data_dir(data_dir=None, cache_dir=None, url=None):
    """--data-dir, else $BABI_DIR, else the cache (downloading into it on first use)."""
    data_dir = data_dir or os.environ.get("BABI_DIR")
    if data_dir:
        if not os.path.isdir(data_dir):
            what = "is not a folder" if os.path.exists(data_dir) else "does not exist"
            raise DataError(f"data folder {data_dir} {what}; {HOW_TO_GET}")
        return data_dir
    cache_dir = cache_dir or CACHE_DIR
    cached = os.path.join(cache_dir, ARCHIVE_DIR)
    return cached if os.path.isdir(cached) else download(url or URL, cache_dir)


def task_files(data_dir, task):
    """(train, test) paths of task `task` (1-20) in an extracted en / en-10k folder."""
    paths = []
    for split in ("train", "test"):
        path = os.path.join(data_dir, f"qa{task}_{TASK_NAMES[task]}_{split}.txt")
        if not os.path.isfile(path):
            raise DataError(f"missing data file {path}; {HOW_TO_GET}")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- parsing
def tokenize(sentence):
    """'Where is Mary?' -> ['where', 'is', 'mary']: lower case, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", sentence.lower())


def read_lines(path):
    """The lines of a UTF-8 text file, or one DataError naming the file (and line) at fault."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e}); check that it is a readable file") from None
    return decode_lines(raw, path)


def decode_lines(raw, name):
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        lineno = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{name}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x}); pass a plain text "
                        f"file (the bAbI files are UTF-8)") from None


def _words(text, where):
    words = tokenize(text)
    if len(words) > MAX_WORDS:
        raise DataError(f"{where}: a sentence of {len(words)} words, more than the {MAX_WORDS} "
                        f"allowed (bAbI's longest has 11); split it into shorter sentences")
    return words


def parse_stories(path):
    """Parse one bAbI file into examples (story, question, answer, support).

    story: the statements before the question, oldest first, each a token list;
    answer: one word, list answers of tasks 8 and 19 kept whole ('milk,apple' is one answer
    word, as in the paper); support: indices into `story` of the supporting statements."""
    examples, story, line_to_idx, prev = [], [], {}, 0
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        num, _, text = line.partition(" ")
        if not num.isdigit() or not text:
            raise DataError(f"{where}: expected '<line number> <text>', got {line[:40]!r}")
        num = int(num)
        if num == 1:  # a line numbered 1 starts a new story
            story, line_to_idx = [], {}
        elif num != prev + 1:
            raise DataError(f"{where}: line number {num} after {prev}; a story starts at 1 and "
                            f"counts up by one")
        prev = num
        if "\t" in text:
            fields = text.split("\t")
            if len(fields) != 3 or not fields[1].strip():
                raise DataError(f"{where}: a question line must be "
                                f"'question<TAB>answer<TAB>supporting ids'")
            question, answer, support = fields
            try:
                support = [line_to_idx[int(s)] for s in support.split()]
            except (ValueError, KeyError):
                raise DataError(f"{where}: supporting ids {fields[2]!r} must be numbers of "
                                f"earlier statements in the same story") from None
            examples.append({"story": list(story), "question": _words(question, where),
                             "answer": answer.strip().lower(), "support": support})
        else:
            line_to_idx[num] = len(story)
            story.append(_words(text, where))
    if not examples:
        raise DataError(f"{path}: no question lines (question<TAB>answer<TAB>ids) found")
    return examples


def parse_user_story(lines, name):
    """A user's own story, for memn2n.py --ask: bAbI form (numbered lines, a line numbered 1
    starts a story; a question ends with '?', optionally followed by <TAB>answer<TAB>ids) or
    plain sentences, one per line, with the questions (ending in '?') among them (a blank line
    starts a new story). Each question is asked about the statements before it.

    Returns examples as parse_stories does, plus the text: story_text, question_text, and
    answer / support where the file gives them (else None / [])."""
    rows = [(i, l.strip()) for i, l in enumerate(lines, 1)]
    numbered = all(re.match(r"\d+ ", l) for _, l in rows if l)
    examples, story, story_text, line_to_idx = [], [], [], {}
    for lineno, line in rows:
        where = f"{name}:{lineno}"
        if not line:
            if not numbered:
                story, story_text, line_to_idx = [], [], {}
            continue
        num = None
        if numbered:
            num, line = line.split(" ", 1)
            num, line = int(num), line.strip()
            if num == 1:
                story, story_text, line_to_idx = [], [], {}
        text, *fields = line.split("\t")
        if fields or text.rstrip().endswith("?"):
            answer = fields[0].strip().lower() if fields and fields[0].strip() else None
            support = []
            if len(fields) > 1 and num is not None:
                support = [line_to_idx[int(s)] for s in fields[1].split()
                           if s.isdigit() and int(s) in line_to_idx]
            examples.append({"story": list(story), "story_text": list(story_text),
                             "question": _words(text, where), "question_text": text.strip(),
                             "answer": answer, "support": support})
        else:
            if num is not None:
                line_to_idx[num] = len(story)
            story.append(_words(text, where))
            story_text.append(text.strip())
    if not examples:
        raise DataError(f"{name}: no questions found; a question is a line ending in '?', asked about "
                        f"the lines before it")
    return examples


@functools.lru_cache(maxsize=None)
def load_task(data_dir, task):
    """(train, test) example lists of one task (parsed once per process; do not modify)."""
    return tuple(parse_stories(p) for p in task_files(data_dir, task))


def validation_indices(n, fraction=0.1, seed=0, fold=0):
    """Deterministic hold-out of n training examples, (train, val) sorted index arrays, the same
    whatever --seed the model uses (Sec. 4.2). Fold 0 holds out the first tenth of one fixed
    shuffle, the paper's single validation set; folds 1-9 split the rest evenly, so that folds
    0-9 hold out every example once (fold k + 10 is fold k)."""
    order = np.random.RandomState(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    folds = [order[:n_val]] + np.array_split(order[n_val:], round(1 / fraction) - 1)
    val = folds[fold % len(folds)]
    if not len(val):                                               # fewer examples than folds
        val = folds[0]
    return np.setdiff1d(order, val), np.sort(val)


def split_validation(examples, fraction=0.1, seed=0, fold=0):
    """(train, val) example lists, as validation_indices splits them."""
    train, val = validation_indices(len(examples), fraction, seed, fold)
    return [examples[i] for i in train], [examples[i] for i in val]


# --------------------------------------------------------------------------- vectorising
def build_vocab(*example_lists):
    """word -> id, ids from 1; 0 is the nil word (padding), whose embedding stays zero."""
    words = set()
    for examples in example_lists:
        for ex in examples:
            words.update(w for s in ex["story"] for w in s)
            words.update(ex["question"])
            words.add(ex["answer"])
    return {w: i for i, w in enumerate(sorted(words), 1)}


def vectorize(examples, word_idx, sentence_size, mem_size):
    """Fixed-size int arrays; keeps the `mem_size` most recent sentences of each story.

    Returns stories [n, mem_size, sentence_size] with stories[:, 0] the MOST RECENT sentence
    (the paper indexes memories in reverse, Sec. 4.1), questions [n, sentence_size], answers
    [n] word ids, and lengths [n], the number of memories used (the rest are nil padding).
    Each sentence's words come first, then nil. Words missing from `word_idx` (a loaded
    model's vocabulary) are left out, as if they were the nil word; such an answer is 0."""
    n = len(examples)
    stories = np.zeros((n, mem_size, sentence_size), np.int32)
    questions = np.zeros((n, sentence_size), np.int32)
    answers = np.zeros(n, np.int32)
    lengths = np.zeros(n, np.int32)
    for i, ex in enumerate(examples):
        recent = ex["story"][::-1][:mem_size]  # newest first, truncated to the memory size
        for slot, sentence in enumerate(recent):
            ids = [word_idx[w] for w in sentence if w in word_idx][:sentence_size]
            stories[i, slot, :len(ids)] = ids
        q = [word_idx[w] for w in ex["question"] if w in word_idx][:sentence_size]
        questions[i, :len(q)] = q
        answers[i] = word_idx.get(ex["answer"], 0)
        lengths[i] = len(recent)
    return stories, questions, answers, lengths


# --------------------------------------------------------------------------- the splits memn2n.py trains on
# one split, vectorised: stories [n, M, S] word ids with slot 0 the newest sentence, questions
# [n, S], answers [n] word ids, lengths [n] memories used, task_ids [n], examples (the parsed text)
Split = collections.namedtuple("Split", "stories questions answers lengths task_ids examples")


def array_sizes(examples, mem_size, noise):
    """(sentence_size, mem_slots) of the arrays that hold `examples`: the longest sentence or question,
    and as many memory slots as the longest story needs plus room for the random-noise memories, at most
    `mem_size` (the official code sizes its memory to the data too; the empty slots take part in the
    attention softmax, so this is part of the model)."""
    longest = max(len(e["story"]) for e in examples)
    sentence_size = max(max([len(s) for s in e["story"]] + [len(e["question"])]) for e in examples)
    return sentence_size, min(mem_size, longest + int(np.ceil(noise * longest)))


def train_size(data_dir, task, fold):
    """How many training questions of `task` remain when validation tenth `fold` is held out."""
    return len(validation_indices(len(load_task(data_dir, task)[0]), fold=fold)[0])


class Data:
    """The train / val / test splits of `tasks`, vectorised, and the sizes the model needs
    (vocab_size V with the nil word, sentence_size, mem_slots, word_idx). train_val holds each task's
    whole training file, which hold_out(fold) splits into train and val. `saved`: a loaded model's
    config, which fixes the vocabulary and the array sizes."""

    def __init__(self, tasks, data_dir, mem_size, noise, saved=None):
        train_file, test, vocab_lists = {}, {}, []
        for t in tasks:
            train_file[t], test[t] = load_task(data_dir, t)        # train + val, parsed
            vocab_lists += [train_file[t], test[t]]
        every = [e for examples in (train_file, test) for t in tasks for e in examples[t]]
        self.word_idx = build_vocab(*vocab_lists)
        self.sentence_size, self.mem_slots = array_sizes(every, mem_size, noise)
        if saved:
            unseen = sorted(set(self.word_idx) - set(saved["word_idx"]))
            if unseen:
                cli.warn("memn2n.py", f"{len(unseen)} words of the data are not in the model's vocabulary and "
                         f"are left out: {' '.join(unseen[:10])}{' ...' if len(unseen) > 10 else ''}")
            self.word_idx = saved["word_idx"]
            self.sentence_size, self.mem_slots = saved["sentence_size"], saved["mem_slots"]
        self.vocab_size = len(self.word_idx) + 1                   # V, with the nil word 0
        # every question once, and the training questions a second time in their train / val splits
        n_arrays = len(every) + sum(len(train_file[t]) for t in tasks)
        size = 4 * n_arrays * self.mem_slots * self.sentence_size
        if size > 4 * 2 ** 30:
            raise DataError(f"the stories would take {size / 2 ** 30:.1f} GiB as arrays ({n_arrays} questions x "
                            f"{self.mem_slots} memories x {self.sentence_size} words); lower --mem-size")
        self.train_val = {t: self._split(t, train_file[t]) for t in tasks}
        self.splits = {"test": concat([self._split(t, test[t]) for t in tasks])}
        self.hold_out(0)

    def _split(self, t, examples):
        arrays = vectorize(examples, self.word_idx, self.sentence_size, self.mem_slots)
        return Split(*arrays, np.full(len(examples), t), examples)

    def hold_out(self, fold):
        """Set the train and val splits: each task's fold-th tenth of its training questions is
        held out for validation (fold 0 for every run is the paper's protocol; see --val-folds)."""
        parts = {"train": [], "val": []}
        for split in self.train_val.values():
            train_idx, val_idx = validation_indices(len(split.answers), fold=fold)
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


# --------------------------------------------------------------------------- command line
def main(argv=None):
    p = cli.Parser(prog="babi_data.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                   error_suffix="; see --help")
    p.add_argument("--data-dir", help="extracted en / en-10k folder (default: $BABI_DIR or the cache)")
    p.add_argument("--cache-dir", default=CACHE_DIR, help="where the download is kept (default %(default)s)")
    try:
        args = p.parse_args(argv)
    except cli.UserError as e:
        cli.error("babi_data.py", e)
        return 2
    # explicit handlers: a background job starts with SIGINT ignored; a killed download cleans up
    old = {s: signal.signal(s, signal.default_int_handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        d = resolve_data_dir(args.data_dir, args.cache_dir)
        n = {t: sum(len(x) for x in load_task(d, t)) for t in TASK_NAMES}
    except DataError as e:
        cli.error("babi_data.py", e)
        return 2
    except KeyboardInterrupt:
        print("babi_data.py: interrupted; nothing half-downloaded was kept", file=sys.stderr)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print(f"data_dir={d} tasks={len(n)} questions={sum(n.values())}")
    return 0


# SHA-256 of every file download() keeps (the archive's `en` folder, v1.2). Verifying the content,
# not the archive bytes, means a re-packed mirror with identical files is accepted too.
EN_SHA256 = {
    "qa1_single-supporting-fact_test.txt": "55acf66cef2f6d798e2aa1d056e1ec8f24e910ea9215b639450574321132959b",
    "qa1_single-supporting-fact_train.txt": "c64ba9b1a49bbb111ffc4cd2ae4f129d25c012399dd7ade9679eea464b9afb05",
    "qa2_two-supporting-facts_test.txt": "eff93fb9cd81ba02eb765772cf7cc269769ed44ec71cbbbc19cfb16ee5eba0f6",
    "qa2_two-supporting-facts_train.txt": "a4978af5bc0dc30191810e7c9949aaa6eae939ed0f6beb9fcb5f4330c2a27860",
    "qa3_three-supporting-facts_test.txt": "17795c977100baf8188f386522ae301b62d6c1a13efc01b3aea781e588b4d57f",
    "qa3_three-supporting-facts_train.txt": "a6e78019f36a02a7ed71fe6aaded0b563ff09c8deec392931801fcd9c6af4d60",
    "qa4_two-arg-relations_test.txt": "07f0ca18ddeea9eed4ba6d59e162adcb0ce44815721114b3540d92825509331e",
    "qa4_two-arg-relations_train.txt": "c9370502d85fa382f32d1fea2111e817f81ae9e3e79eb2924a1a5392a90417fa",
    "qa5_three-arg-relations_test.txt": "ec825c1c8a76e63a31f0d7a7763cd63740e98332fa9bdf246a19068949bd5f97",
    "qa5_three-arg-relations_train.txt": "086cd59c3ca9677bfac3d6a22ca5853c76a5c1fbae3159c7c4a6aef759a74ec0",
    "qa6_yes-no-questions_test.txt": "b108b16f1eccbd1c24df6dca2649079a7b2f10af7fd12d4c45a3393802de59e3",
    "qa6_yes-no-questions_train.txt": "5a133115ee35d475776df703ff605d145b11effbcdbf7e74861f9d5639246a5a",
    "qa7_counting_test.txt": "a74d1f2b91329b2bae814d41cdac2fbdfdf0328562b7d8afa9a0fa576d461e27",
    "qa7_counting_train.txt": "dca03bd91876951c49f1c971c83c9dd55404de60201b7b6435451cf7ddb4751c",
    "qa8_lists-sets_test.txt": "362a653c821a580fa315a85243b4f03bfa06fa7e0269b6f8e596f8fe6911646a",
    "qa8_lists-sets_train.txt": "058604df6f9440458317e8ae685d2b7b84261e1a80b4d6410a9140d16f81bf06",
    "qa9_simple-negation_test.txt": "63590aff3f89993db409f0e9a9eb39c2a5b9d5efff99b255d800a891b0044d9f",
    "qa9_simple-negation_train.txt": "0c3b89921af0caea1c4059ee3f7b7f2a88869f924195a428da37820446b8c49f",
    "qa10_indefinite-knowledge_test.txt": "fde8f20ed0b3ba979058ed391a566af34653f23baab5b2793ee37f87ef4e88b7",
    "qa10_indefinite-knowledge_train.txt": "0b7691689447bab05476c5b48c44999b41e747c3978df69c18fdd87b60d6e8b3",
    "qa11_basic-coreference_test.txt": "46f3290d0158ce1285a40cd2d793f5a65f86ae5000226e165cbc85a3dfeb2f6f",
    "qa11_basic-coreference_train.txt": "9468de9a1f256f43dfda693a5d07182d21149a82b65f7c2451c64e9cff5eb138",
    "qa12_conjunction_test.txt": "6437718f8f9801ce345869e910b896836cdc6fd2d01dc7b4d2df49730703b4b1",
    "qa12_conjunction_train.txt": "45c2764bb2d3c8f699d35e9d9aa7958fcd96379c6e907116cdf74526c108bb25",
    "qa13_compound-coreference_test.txt": "76a25b684f23c9cc473d8cd1465506168b9a1ec8891cfc59d0bbd87e6a064990",
    "qa13_compound-coreference_train.txt": "533a391edbda743e4c99504de88b40cdded5b1d5ef454d1390f0863f748a4cc9",
    "qa14_time-reasoning_test.txt": "e3f0b19858ffbec3ed1e49076cc4d1295a89ce146c50318b862f13f202b3caf2",
    "qa14_time-reasoning_train.txt": "b7561cbc624205c9c2fdbb8c843cfa8ad90edd65e78bb223fc6dea8113662df8",
    "qa15_basic-deduction_test.txt": "32b77e117fe9acf5f94906684e3b5206de0108e646c76e1da3e022896ec7ee94",
    "qa15_basic-deduction_train.txt": "e856ebfdcce4dd7d617c1d10f985e96a0850c0ca18e9a19a017cb710d135ed3d",
    "qa16_basic-induction_test.txt": "4a11e55366f2a5a859b5a81f683ee23801bdbe71ef984e51adb976bd053e8dcf",
    "qa16_basic-induction_train.txt": "20121005137e3d4b061a086eb177a456303d5742b764eb8da2d0e480b6af4d28",
    "qa17_positional-reasoning_test.txt": "9e1e0250ed4ec1831757fab26c04138f81ea557ebf6976a220db879cbed04bac",
    "qa17_positional-reasoning_train.txt": "20083bf56ff74f0e7cf5e3e2f8c3905cdb8ef09293c3e8cf7a96ed8b45ae2277",
    "qa18_size-reasoning_test.txt": "d34f70eb7228a276fcb3a7854174fe562c5634f4fb454a39fc3d1ad9934be3ef",
    "qa18_size-reasoning_train.txt": "18b7dcf52c9a0e87e4e7dd3d65b7e5a630de039645f52a1294197af7481d739d",
    "qa19_path-finding_test.txt": "023e391f0d7f79c9e6ae1c46c093e2d0dbd50ab8fbd8965e037a75e3614c20e5",
    "qa19_path-finding_train.txt": "dcb788352a56effb7bea1449128f31cc9c342c8c327b6df2caeee0e379e6ad3a",
    "qa20_agents-motivations_test.txt": "bd3bde3788ac14ba0ae095078f7b820fbd2bfa6a34dba9d1d46a34afde9c2729",
    "qa20_agents-motivations_train.txt": "29580ad55fb7b4b29ba014696056cc68f8f347dac3be88470fd692ad60150398",
}


if __name__ == "__main__":
    sys.exit(main())
