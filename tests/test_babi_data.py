"""babi_data.py: parsing, vectorising, validation folds, the download."""
import functools
import hashlib
import http.server
import io
import os
import re
import tarfile
import threading
import time

import numpy as np
import pytest

import babi_data


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
    data = babi_data.Data([1, 2], tiny_dir, 50, 0.1)
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
    assert babi_data.main(["--bogus"]) == 2
    assert babi_data.main(["--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err and "babi_data.py: error: data folder" in err
