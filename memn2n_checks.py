"""memn2n.py's flags, checked: the flags of where output goes and how a run is carried out, the range of
every number, the combinations that make no sense, --task's list, the defaults that depend on --joint
and on the tasks, and the data-dependent limit of --batch-size. Each problem is one UserError line."""
import argparse
import math
import os

import babi_data
import memn2n_models
from cli import Parser, UserError

# the range of every integer flag, (lowest, highest)
INT_RANGES = {"hops": (1, 10), "embedding_size": (1, 1000), "mem_size": (1, 1000), "ls_epochs": (0, 10000),
              "epochs": (1, 10000), "anneal_every": (1, 10000), "batch_size": (1, 100000), "runs": (1, 100),
              "seed": (0, 2 ** 31 - 101), "show": (0, 1000), "log_every": (1, 10000), "jobs": (1, 256)}


def parser(doc):
    """memn2n.py's argparse: --help shows the docstring as written; a bad flag is one UserError line."""
    return Parser(prog="memn2n.py", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                  error_suffix="; see --help")


def add_output_flags(p):
    """The flags that say where a run's output goes and how it is carried out (not the model's)."""
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
                   "after a 1-2 s compile (default on; docs/memn2n-results.md, speed)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="several tasks: tasks trained at once, one process each (default: cores)")


def check_args(p, args, joint_defaults):
    """Ranges and combinations of the parsed flags; --task as a list; the defaults that differ with
    --joint (`joint_defaults`: name -> (one task, joint)). Returns args, completed."""
    for name, (lo, hi) in INT_RANGES.items():
        value = getattr(args, name)
        if value is not None and not lo <= value <= hi:
            raise UserError(f"--{name.replace('_', '-')} {value} is out of range; use {lo} to {hi}")
    for name in ("lr", "ls_lr", "init_std", "max_grad_norm"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--{name.replace('_', '-')} {value} must be a positive number; "
                            f"the default is {p.get_default(name)}")
    if not (0 <= args.noise < 1):
        raise UserError(f"--noise {args.noise} is out of range; use a fraction in [0, 1), e.g. 0.1")
    if args.ask and not args.load:
        raise UserError("--ask needs a trained model; add --load DIR (a folder written by --save)")
    if args.load and (args.save or args.overwrite):
        raise UserError("--load only evaluates, it writes nothing; drop --save/--overwrite")
    if args.overwrite and not args.save:
        raise UserError("--overwrite applies to --save DIR; add --save, or drop --overwrite "
                        "(the default folder is always new)")
    if args.val_folds and args.runs < 2:
        raise UserError("--val-folds gives each of several runs its own validation tenth; add --runs N "
                        "(N >= 2), or drop --val-folds")
    if args.val_folds is None:
        args.val_folds = args.select == "ensemble" and args.runs > 1
    if args.joint and args.task is not None:
        raise UserError("--joint trains one model on all 20 tasks; drop --task")
    args.tasks = parse_tasks(args)
    for name, (one_task, joint) in joint_defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, joint if args.joint else one_task)
    args.d = args.embedding_size
    return args


def parse_tasks(args):
    """--task as a list of task numbers; None with --load and no --task (the checkpoint says)."""
    if args.joint or args.task == "all":
        return list(range(1, 21))
    if args.task is None:
        return None if args.load else [1]
    tasks = []
    for t in args.task.split(","):
        if not (t.strip().isdigit() and 1 <= int(t) <= 20):
            raise UserError(f"unknown task {args.task!r}: choose a number from 1 to 20, a list such "
                            f"as 2,3,16, or 'all'")
        if int(t) not in tasks:
            tasks.append(int(t))
    return tasks


def finish(args, tasks):
    """The defaults that depend on the tasks, once they are known (with --load, from the checkpoint)."""
    args.tasks = tasks
    args.per_task = len(tasks) > 1 and not args.joint  # several independent models, one per task
    args.log_every = args.log_every or (20 if args.per_task else 1)
    return args


def check_data(args, folds):
    """--load's tasks (checked against --task), the data folder and every task's files (bad data fails
    here, before TensorFlow loads), and --batch-size against the smallest training split among the
    validation tenths `folds` the runs hold out. Returns the data folder."""
    if args.load:
        memn2n_models.resolve_load(args, finish)
    else:
        finish(args, args.tasks)
    data_dir = babi_data.resolve_data_dir(args.data_dir)
    for t in args.tasks:
        babi_data.load_task(data_dir, t)
    if args.load:
        return data_dir
    n_train = {t: min(babi_data.train_size(data_dir, t, k) for k in folds) for t in args.tasks}
    if args.per_task:
        groups = [(f"task {t}", n_train[t]) for t in args.tasks]
    else:
        groups = [("the tasks" if args.joint else f"task {args.tasks[0]}", sum(n_train.values()))]
    for what, n in groups:
        if n < args.batch_size:
            raise UserError(f"--batch-size {args.batch_size} is more than the {n} training questions "
                            f"of {what}; use --batch-size {max(n, 1)} or less")
    return data_dir
