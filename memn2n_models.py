"""memn2n.py's model folders: their format, the atomic save, the checks that a run replaces only what
memn2n.py wrote, restoring, and where a run's TensorBoard logs and model go.

A model folder DIR holds memn2n.json, {"written_by": "memn2n.py", "model": "<subfolder>"}, and that
subfolder: config.json (sizes, vocabulary, runs) and the TensorFlow checkpoint of each kept run. A new
save writes a new subfolder, then replaces memn2n.json with os.replace: a crash at any point leaves the
old model or the new one, complete. The folder of several tasks (--task all) holds memn2n.json
{"written_by": "memn2n.py", "tasks": true} and task<t>/."""
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import time

import babi_data
import cli
from cli import UserError
from interrupts import SIGNALS
from safe_files import remove_empty, staged_dir, write_json_atomic, writable_dir

MARKER = "memn2n.json"
MODEL_KEYS = ("d", "hops", "tying", "pe", "pe_formula", "te")  # what a checkpoint fixes
SAVE_FAILED = []  # where models went whose --save folder could not be written (exit status 1)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; `saved` is where its model went (None: nowhere). `reported`:
    the --task pool has said already which tasks saved what."""

    def __init__(self, saved=None, reported=False):
        super().__init__(saved)
        self.saved, self.reported = saved, reported


def guarded(main):
    """memn2n.py's main(argv, created) under the machinery: SIGINT and SIGTERM handled (interrupts.Signals), a
    UserError printed as one line with its exit status (2), an interrupt said in one line with 130 or 143, and
    the folders in `created` removed if the run made them and never used them (they are empty)."""
    def interrupted(e):
        say_interrupted(e)
        return SIGNALS.exit_status()

    @functools.wraps(main)
    def run(argv=None):
        created = []
        SAVE_FAILED.clear()                                        # an in-process caller's earlier run is not this one's
        return cli.run_main("memn2n.py", SIGNALS, lambda: main(argv, created), interrupted,
                            lambda: remove_empty(created))
    return run


def say_interrupted(e):
    """The one line that says what an interrupted run saved."""
    if getattr(e, "reported", False):
        return
    if isinstance(e, Interrupted):
        what = f"saved the model trained so far to {e.saved}" if e.saved else "nothing was saved"
        print(f"memn2n.py: interrupted: {what}", file=sys.stderr, flush=True)
    else:
        print("memn2n.py: interrupted; nothing was saved", file=sys.stderr, flush=True)


def exit_status():
    """1 if a model could not be saved where asked (it went to a fallback folder), else 0."""
    return 1 if SAVE_FAILED else 0


def new_meta(args, tasks, data):
    """A new model's config.json: its tasks, vocabulary and array sizes, and what fixes its graph."""
    return dict(tasks=tasks, joint=args.joint, word_idx=data.word_idx, sentence_size=data.sentence_size,
                mem_slots=data.mem_slots, **{k: getattr(args, k) for k in MODEL_KEYS})


def restore(sess, model, folder, member):
    """Load one saved run (an ensemble has several) into the graph's variables."""
    import tensorflow.compat.v1 as tf
    try:
        model.saver.restore(sess, os.path.join(folder, member))
    except (tf.errors.OpError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {folder} is damaged or does not match its config.json ({first}); "
                        f"train the model again with --save") from None
    # a restored model answers with the softmaxes: linear start is not saved, so a model saved by
    # Ctrl-C during linear start is evaluated with its softmaxes in too
    model.linear.load(False, sess)


def save_kept(sess, model, save_dir, meta, args, n_runs, kept, stopped):
    """Save the runs --select kept (save_model); if --save cannot be written, into a new temporary
    folder instead, saying where (exit status 1). Returns (the model's subfolder, its config);
    raises Interrupted, naming where the model went, if a signal stopped the training."""
    import tensorflow.compat.v1 as tf
    meta = dict(meta, runs=n_runs, select=args.select, val_folds=args.val_folds,
                members=["model"] if len(kept) == 1 else [f"model-{i + 1}" for i in range(len(kept))])
    try:
        folder = save_model(sess, model, save_dir, meta, [r.params for r in kept])
    except (OSError, tf.errors.OpError) as e:  # say where the model can still be found
        fallback = tempfile.mkdtemp(prefix="memn2n-model-")
        folder = save_model(sess, model, fallback, meta, [r.params for r in kept])
        cli.error("memn2n.py", f"could not save the model to {save_dir} ({getattr(e, 'strerror', None) or e}); "
                  f"it was saved to {fallback} instead")
        SAVE_FAILED.append(fallback)
        save_dir = fallback
    if stopped or SIGNALS.received:
        raise Interrupted(save_dir)
    return folder, meta


CONFIG_TYPES = {"tasks": list, "word_idx": dict, "sentence_size": int, "mem_slots": int, "d": int, "hops": int,
                "tying": str, "pe": bool, "pe_formula": str, "te": bool, "members": list}


def read_marker(folder):
    """memn2n.json of `folder` as a dict, None if there is none; UserError if it is damaged."""
    path = os.path.join(folder, MARKER)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            marker = json.load(f)
        assert isinstance(marker, dict) and marker.get("written_by") == "memn2n.py"
    except (OSError, ValueError, AssertionError):
        raise UserError(f"{path} is damaged (not the JSON that memn2n.py writes); train the model again "
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
    """(the subfolder holding the checkpoint, its config) of a model folder; one UserError
    naming what is wrong with a damaged one."""
    damaged = f"checkpoint {folder} is damaged or incomplete"
    if not os.path.isdir(folder):
        raise UserError(f"no checkpoint at {folder}; train one with --save DIR")
    marker = read_marker(folder)
    if marker is not None and marker.get("tasks"):
        raise UserError(f"{folder} holds one model per task; pass --load {os.path.join(folder, 'task<t>')}")
    if marker is None:
        if not is_old_layout(folder):
            raise UserError(f"no checkpoint at {folder} (no {MARKER}); train one with --save DIR")
        sub = folder                                              # the layout of earlier versions
    else:
        name = marker.get("model")
        if not (isinstance(name, str) and re.fullmatch(r"model-[\w.-]+", name)):
            raise UserError(f"{damaged} ({MARKER} names no model subfolder); train it again with --save")
        sub = os.path.join(folder, name)
    try:
        with open(os.path.join(sub, "config.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{damaged} (config.json: {getattr(e, 'strerror', None) or e}); train it again "
                        f"with --save") from None
    if not isinstance(meta, dict):
        raise UserError(f"{damaged} (config.json is not a JSON object); train it again with --save")
    meta.setdefault("members", ["model"])
    meta.setdefault("joint", len(meta.get("tasks") or []) > 1)
    for key, kind in CONFIG_TYPES.items():
        if not isinstance(meta.get(key), kind) or (kind is int and isinstance(meta[key], bool)):
            raise UserError(f"{damaged} (config.json: {key!r} missing or not a {kind.__name__}); train it "
                            f"again with --save")
    ids = sorted(meta["word_idx"].values()) if all(isinstance(i, int) for i in meta["word_idx"].values()) else None
    sane = (ids == list(range(1, len(ids) + 1)) and meta["tasks"] and set(meta["tasks"]) <= set(range(1, 21))
            and 1 <= meta["d"] <= 1000 and 1 <= meta["hops"] <= 10 and 1 <= meta["sentence_size"] <= babi_data.MAX_WORDS
            and 1 <= meta["mem_slots"] <= 1000 and meta["tying"] in ("adjacent", "layerwise")
            and meta["pe_formula"] in ("paper", "matlab") and meta["members"]
            and all(isinstance(m, str) and re.fullmatch(r"model(-\d+)?", m) for m in meta["members"]))
    if not sane:
        raise UserError(f"{damaged} (config.json holds impossible values); train it again with --save")
    for m in meta["members"]:
        if not os.path.isfile(os.path.join(sub, m + ".index")):
            raise UserError(f"{damaged} ({m}.index is missing); train it again with --save")
    return sub, meta


def save_model(sess, model, folder, meta, members):
    """Write the kept runs' weights and config.json into a new subfolder of `folder`, then point
    memn2n.json at it (os.replace, atomic), then remove the subfolder it pointed at before.
    Signals wait until it is done, so a second Ctrl-C cannot leave half a model."""
    with SIGNALS.held():
        os.makedirs(folder, exist_ok=True)
        old, old_layout = read_marker(folder), is_old_layout(folder)
        with staged_dir(folder) as tmp:                            # removed again if anything below fails
            for name, params in zip(meta["members"], members):
                for v, value in zip(model.params, params):
                    v.load(value, sess)
                model.saver.save(sess, os.path.join(tmp, name), write_meta_graph=False, write_state=False)
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(meta, f)
            sub = "model-" + time.strftime("%Y%m%d-%H%M%S-") + os.path.basename(tmp)[len(".tmp-"):]
            os.rename(tmp, os.path.join(folder, sub))
        try:                                                       # the moment the new model replaces the old
            write_json_atomic(os.path.join(folder, MARKER), {"written_by": "memn2n.py", "model": sub})
        except BaseException:
            shutil.rmtree(os.path.join(folder, sub), ignore_errors=True)
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
        raise UserError(f"--save {path} is a file, not a folder; choose another path")
    if not os.path.isdir(path) or not os.listdir(path):
        return
    kind, want = folder_kind(path), "tasks" if tasks_folder else "model"
    what = {"model": "a memn2n model", "tasks": "the models of several tasks"}
    if kind is None:
        raise UserError(f"--save {path} exists and was not written by memn2n.py; choose another folder "
                        f"(--overwrite only replaces a memn2n model)")
    if kind != want:
        raise UserError(f"--save {path} holds {what[kind]}, not {what[want]}; choose another folder")
    if not overwrite:
        raise UserError(f"--save {path} already holds {what[kind]}; pass --overwrite to replace it, or "
                        f"choose another folder")
    if tasks_folder:
        for name in os.listdir(path):
            sub = os.path.join(path, name)
            foreign = os.path.isdir(sub) and os.listdir(sub) and folder_kind(sub) != "model"
            if re.fullmatch(r"task\d+", name) and foreign:
                raise UserError(f"--save {path}: {sub} was not written by memn2n.py; choose another folder")


def resolve_load(args, finish):
    """--load DIR: the tasks it covers (checked against --task) and each task's model folder;
    finish(args, tasks) sets the defaults that depend on the tasks."""
    kind = folder_kind(args.load) if os.path.isdir(args.load) else None
    if kind == "tasks":
        present = sorted(int(n[4:]) for n in os.listdir(args.load) if re.fullmatch(r"task\d+", n)
                         and 1 <= int(n[4:]) <= 20 and os.path.isdir(os.path.join(args.load, n)))
        tasks = args.tasks or present
        missing = [t for t in tasks if t not in present]
        if missing:
            raise UserError(f"{args.load} has no model for task {missing[0]}; it holds tasks "
                            f"{','.join(map(str, present)) or 'none'}")
        for t in tasks:
            read_model(os.path.join(args.load, f"task{t}"))
        if len(tasks) == 1:                                        # one of them: load it as one model
            args.load = os.path.join(args.load, f"task{tasks[0]}")
        return finish(args, tasks)
    _, meta = read_model(args.load)
    if args.tasks and args.tasks != meta["tasks"]:
        raise UserError(f"checkpoint {args.load} was trained on tasks {','.join(map(str, meta['tasks']))}, not "
                        f"{','.join(map(str, args.tasks))}; drop --task or pass a matching one")
    args.joint = meta["joint"]
    finish(args, meta["tasks"])
    args.per_task = False                                          # one model, whatever its tasks
    return args


def new_log_dir(args, created):
    """A fresh folder for this run's TensorBoard logs (and, by default, its model)."""
    what = "joint" if args.joint else f"task{args.tasks[0]}" if len(args.tasks) == 1 else "tasks"
    writable_dir(args.logdir, "--logdir", created)
    base = os.path.join(args.logdir, f"memn2n_{what}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}")
    for i in range(1, 1000):
        path = base if i == 1 else f"{base}-{i}"
        try:
            os.mkdir(path)
            created.append(os.path.abspath(path))
            return path
        except FileExistsError:
            continue
    raise UserError(f"cannot make a new run folder under --logdir {args.logdir}; pass another --logdir")


def prepare_dirs(args, created):
    """Before any training: --save is a folder this run may write (checked, created, probed), and a new
    TensorBoard folder. Returns (the TensorBoard folder, where the model goes); (None, None) with --load.
    `created` lists the folders made, which main removes if the run ends before using them."""
    if args.load:
        return None, None
    if args.save:
        check_save_dir(args.save, args.overwrite, args.per_task)
        writable_dir(args.save, "--save", created)
    log_dir = new_log_dir(args, created)
    save_dir = args.save or os.path.join(log_dir, "model")
    if args.per_task:
        writable_dir(save_dir, "--save", created)
        if not os.path.isfile(os.path.join(save_dir, MARKER)):
            write_json_atomic(os.path.join(save_dir, MARKER), {"written_by": "memn2n.py", "tasks": True})
    created.clear()                                                # from here on the run owns them
    return log_dir, save_dir
