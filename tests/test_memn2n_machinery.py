"""memn2n.py's machinery: variants, protocols, several tasks, --ask, bad input, model folders, signals."""
import io
import json
import os
import re
import shutil
import signal
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import babi_data
import memn2n
import memn2n_log
import memn2n_models
import memn2n_checks
from helpers import Lines, PLACES, start_script, TINY, assert_one_line_error, memn2n_main, result_of, run_script, tree, write_task1_like


def _config(folder):
    return memn2n_models.read_model(folder)[1]


def _variables(folder):
    sub, meta = memn2n_models.read_model(folder)
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
    sub, meta = memn2n_models.read_model(str(tmp_path / "m"))
    cfg = memn2n_checks.finish(memn2n.parse_args([]), [1])
    data = babi_data.Data([1], gen_dir, cfg.mem_size, cfg.noise, meta)
    sess, model, V = memn2n.open_model(cfg, meta)
    memn2n_models.restore(sess, model, sub, "model")
    split = data.splits[select]
    kept = 100 * (1 - (memn2n.evaluate(sess, model, split, V)[2] == split.answers).mean())
    assert kept == pytest.approx(min(printed), abs=0.051)               # the kept run is the best one


@pytest.mark.parametrize("flag,folds", [([], [0, 1, 2]), (["--no-val-folds"], [0, 0, 0])])
def test_an_ensembles_runs_hold_out_their_own_tenths(flag, folds, tiny_dir, tmp_path, capsys, monkeypatch):
    used, real = [], babi_data.Data.hold_out
    monkeypatch.setattr(babi_data.Data, "hold_out", lambda self, fold: (used.append(fold), real(self, fold))[1])
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--runs", 3, "--select",
                               "ensemble", "--logdir", tmp_path, *flag)
    assert rc == 0, err
    assert used == [0] + folds                                          # Data() sets fold 0, then each run its own


def test_ensemble_averages_the_runs_answer_distributions(tiny_dir, tmp_path, capsys):
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--runs", 3, "--select",
                               "ensemble", "--save", tmp_path / "m", "--logdir", tmp_path)
    assert rc == 0, err
    assert out.rstrip().endswith("runs=3 select=ensemble val_folds=1")   # each run held out its own tenth
    sub, meta = memn2n_models.read_model(str(tmp_path / "m"))
    assert meta["members"] == ["model-1", "model-2", "model-3"]
    cfg = memn2n_checks.finish(memn2n.parse_args([]), [1])
    data = babi_data.Data([1], tiny_dir, cfg.mem_size, cfg.noise, meta)
    sess, model, V = memn2n.open_model(cfg, meta)
    test = data.splits["test"]
    each = []
    for member in meta["members"]:                                       # the runs differ ...
        memn2n_models.restore(sess, model, sub, member)
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
                              "--save", str(save), "--logdir", str(tmp_path), "--no-xla", quiet_tf=False)
    assert rc == 0, err
    assert err == ""                                   # none of TensorFlow's start-up lines, from any process
    assert re.search(r"^tasks_done=1/2 progress=\d+\.\d% elapsed=\d+m\d\ds eta=\d+m\d\ds$", out, re.M), out
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
    sub, meta = memn2n_models.read_model(folder)
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
    old_sub = memn2n_models.read_model(str(model))[0]
    (model / "notes.txt").write_text("mine")                             # the user's file inside the folder
    for sibling in ("m.tmp", "m.old"):                                   # earlier versions deleted these
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "keep").write_text("x")
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--save", model, "--overwrite",
                               "--logdir", tmp_path / "runs")
    assert rc == 0, err
    new_sub, meta = memn2n_models.read_model(str(model))
    assert new_sub != old_sub and not os.path.exists(old_sub)            # the old model is gone, the new one complete
    assert (model / "notes.txt").read_text() == "mine"
    assert (tmp_path / "m.tmp" / "keep").exists() and (tmp_path / "m.old" / "keep").exists()
    assert sorted(os.listdir(model)) == sorted(["memn2n.json", "notes.txt", os.path.basename(new_sub)])


def test_model_saved_by_earlier_versions_loads_and_is_replaced(trained, gen_dir, tiny_dir, tmp_path, capsys):
    sub, meta = memn2n_models.read_model(trained[0])
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
    new_sub, _ = memn2n_models.read_model(str(legacy))
    assert sorted(os.listdir(legacy)) == ["memn2n.json", os.path.basename(new_sub)]


def test_failed_final_save_says_where_the_model_went(tiny_dir, tmp_path, capsys, monkeypatch):
    real, calls = memn2n_models.save_model, []

    def disk_full_once(sess, model, folder, *a):
        calls.append(folder)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(sess, model, folder, *a)
    monkeypatch.setattr(memn2n_models, "save_model", disk_full_once)
    rc, out, err = memn2n_main(capsys, "--task", 1, "--data-dir", tiny_dir, *TINY, "--save", tmp_path / "m",
                               "--logdir", tmp_path / "runs")
    assert_one_line_error(rc, err, f"could not save the model to {tmp_path / 'm'} (No space left on device)",
                          f"it was saved to {calls[1]} instead", status=1)
    assert "RESULT task=1" in out                                        # and it was still evaluated
    memn2n_models.read_model(calls[1])
    shutil.rmtree(calls[1])


def _open_saved(folder, *flags):
    """The subfolder, config, flags and a session holding the model saved in `folder`, its run restored."""
    sub, meta = memn2n_models.read_model(str(folder))
    cfg = memn2n_checks.finish(memn2n.parse_args(list(flags)), [1])
    sess, model, V = memn2n.open_model(cfg, meta)
    memn2n_models.restore(sess, model, sub, "model")
    return sub, meta, cfg, sess, model


@pytest.mark.parametrize("crash_at", ["saver", "config", "pointer"])
def test_crashed_save_keeps_old_model_and_no_temp_folder(crash_at, trained, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    shutil.copytree(trained[0], folder)
    old_sub, meta, _, sess, model = _open_saved(folder)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    if crash_at == "saver":
        monkeypatch.setattr(model.saver, "save", boom)
    elif crash_at == "config":
        monkeypatch.setattr(memn2n_models.json, "dump", boom)
    else:
        monkeypatch.setattr(memn2n_models.os, "replace", boom)
    with pytest.raises(OSError):
        memn2n_models.save_model(sess, model, str(folder), meta, [sess.run(model.params)])
    monkeypatch.undo()
    assert memn2n_models.read_model(str(folder))[0] == old_sub                  # the old model, complete
    memn2n_models.restore(sess, model, old_sub, "model")
    assert sorted(os.listdir(folder)) == ["memn2n.json", os.path.basename(old_sub)]   # no .tmp-* left


def test_second_ctrl_c_during_save_waits_until_the_model_is_complete(trained, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(trained[0], folder)
    sub, meta, _, sess, model = _open_saved(folder)
    real_save = model.saver.save

    def save_then_ctrl_c(*a, **k):
        path = real_save(*a, **k)
        os.kill(os.getpid(), signal.SIGINT)                              # in the middle of the save
        time.sleep(0.05)
        return path
    memn2n.SIGNALS.install()
    try:
        model.saver.save = save_then_ctrl_c
        new = memn2n_models.save_model(sess, model, str(folder), meta, [sess.run(model.params)])  # no KeyboardInterrupt
        assert memn2n.SIGNALS.received == signal.SIGINT
    finally:
        memn2n.SIGNALS.uninstall()
    assert memn2n_models.read_model(str(folder))[0] == new and not os.path.exists(sub)
    memn2n_models.restore(sess, model, new, "model")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")   # the dropped KeyboardInterrupt
def test_a_signal_whose_interrupt_python_dropped_still_stops_training(trained, gen_dir):
    """Python drops an exception raised in a __del__; if the signal handler's KeyboardInterrupt fires
    there, training must stop anyway, at its next batch, not after --epochs."""
    sub, meta, cfg, sess, model = _open_saved(trained[0], "--epochs", "300", "--no-xla")
    data = babi_data.Data([1], gen_dir, cfg.mem_size, 0.0, meta)

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
            memn2n.train(sess, model, data, cfg, np.random.RandomState(0), memn2n_log.EpochLog(None, 1),
                         lambda: memn2n.SIGNALS.received)
        assert time.time() - t0 < 5
    finally:
        memn2n.SIGNALS.uninstall()
        sess.close()
    assert memn2n.SIGNALS.received is None                               # uninstall leaves no stale signal behind


# --------------------------------------------------------------------------- signals
def test_signal_saves_model_and_exits(gen_dir, tmp_path):
    """SIGINT (ignored at the start, as in a background job) and SIGTERM: the two runs side by side."""
    runs = []
    for sig, ignored, status in [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)]:
        (tmp_path / sig.name).mkdir()
        save = tmp_path / sig.name / "model"
        p = start_script("memn2n.py", ["--task", 1, "--data-dir", gen_dir, "--epochs", 1000, "--save", save, "--logdir",
                                       tmp_path / sig.name, "--no-xla"], ignore_sigint=ignored)
        runs.append((sig, status, save, p, Lines(p)))
    for sig, status, save, p, lines in runs:
        lines.until(lambda line: line.startswith("epoch=3 "))           # training is under way
        p.send_signal(sig)
        _, err = lines.rest(p)
        assert_one_line_error(p.returncode, err, "interrupted: saved the model trained so far to", str(save),
                              status=status)
        memn2n_models.read_model(str(save))


@pytest.mark.parametrize("sig,ignored,status", [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)])
def test_signal_stops_every_task_and_says_which_saved(sig, ignored, status, tiny_dir, tmp_path):
    save = tmp_path / "tasks"
    p = start_script("memn2n.py", ["--task", "all", "--jobs", 2, "--data-dir", tiny_dir, "--epochs", 10000, "--log-every", 1,
                "--save", save, "--logdir", tmp_path, "--no-xla"], ignore_sigint=ignored)
    lines, training = Lines(p), set()

    def two_tasks_training(line):                                        # two tasks training, 18 waiting
        m = re.match(r"task=(\d+) epoch=", line)
        if m:
            training.add(m.group(1))
        return len(training) == 2
    lines.until(two_tasks_training)
    t0 = time.time()
    p.send_signal(sig)                                                   # to the main process only
    _, err = lines.rest(p)
    assert time.time() - t0 < 30, err[-3000:]                            # promptly, not after 10000 epochs
    assert_one_line_error(p.returncode, err, "interrupted: finished tasks: none", "stopped without a model: ",
                          status=status)
    saved = re.findall(r"(\d+) \(([^)]*)\)", err.split("saved what they had trained:")[1])
    assert len(saved) == 2 and all(memn2n_models.read_model(path) for _, path in saved)
    assert len(err.split("stopped without a model: ")[1].split()) == 18
    assert sorted(os.listdir(save)) == sorted(["memn2n.json"] + [f"task{t}" for t, _ in saved])
