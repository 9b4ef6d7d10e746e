"""memn2n.py with several tasks (--task all, or a list): one independent model per task, trained in a
pool of --jobs processes, the longest tasks first; a progress line with an ETA as tasks finish; Ctrl-C or
SIGTERM stops them all, each saving what it trained. And the RESULT line, with the table of errors against
the paper's."""
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import numpy as np

import babi_data
import memn2n_models
from cli import fmt_time
from interrupts import SIGNALS
from tf_setup import load_tf1

# Table 1, bAbI 1k, PE LS RN column (test error %), for the table printed after --task all.
PAPER_PE_LS_RN = [0.0, 8.3, 40.3, 2.8, 13.1, 7.6, 17.3, 10.0, 13.2, 15.1,
                  0.9, 0.2, 0.4, 1.7, 0.0, 1.3, 51.0, 11.1, 82.8, 0.0]
PAPER_JOINT = (12.4, 11)  # joint PE LS RN: mean error, failed tasks (its per-task column is not kept here)


def worker_init():
    """A task process: signals are noted while idle and interrupt only a task in progress."""
    SIGNALS.install(active=False)


def task_worker(one_model, args, t, data_dir, log_dir, save_dir, load_dir):
    """One task of several, in a process of its own (it inherits main's environment)."""
    if SIGNALS.received:                                           # the pool is stopping
        return dict(task=t, status="not started")
    memn2n_models.SAVE_FAILED.clear()
    load_tf1(xla_auto_jit=args.xla)
    SIGNALS.active = True
    try:
        if SIGNALS.received:
            return dict(task=t, status="not started")
        errors, wall = one_model(args, [t], data_dir, log_dir, save_dir, load_dir, prefix=f"task={t} ")
    except memn2n_models.Interrupted as e:
        return dict(task=t, status="interrupted", saved=e.saved)
    except KeyboardInterrupt:
        return dict(task=t, status="interrupted", saved=None)
    finally:
        SIGNALS.active = False
    print(f"task={t} test_error={errors[t]:.1f} wall_s={wall:.1f}", flush=True)
    return dict(task=t, status="done", errors=errors, save_failed=bool(memn2n_models.SAVE_FAILED))


def task_cost(data_dir, t, args):
    """Training questions x memory slots x sentence length: the training cost of a task, roughly."""
    train, test = babi_data.load_task(data_dir, t)
    sentence_size, mem_slots = babi_data.array_sizes(train + test, args.mem_size, args.noise if args.rn else 0.0)
    return len(train) * mem_slots * sentence_size


def train_each_task(one_model, args, data_dir, log_root, save_root):
    """Several tasks, independent: --jobs processes train them at once (one_model(args, [t], ...) each),
    the longest first so that the last to finish is a short one. Returns {task: test error}."""
    cost = {t: task_cost(data_dir, t, args) for t in args.tasks}
    order = sorted(args.tasks, key=lambda t: -cost[t])
    sub = lambda root, t: os.path.join(root, f"task{t}") if root else None  # noqa: E731
    pool = ProcessPoolExecutor(min(args.jobs, len(order)), multiprocessing.get_context("spawn"),
                               initializer=worker_init)
    futures = {t: pool.submit(task_worker, one_model, args, t, data_dir, sub(log_root, t), sub(save_root, t),
                              sub(args.load, t)) for t in order}
    t0, done_cost, pending = time.time(), 0, set(futures.values())
    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for t in [t for t, f in futures.items() if f in finished]:
                if futures[t].result().get("status") == "done":    # re-raises a task's error here
                    done_cost += cost[t]
            if pending:                                            # the ETA weighs each task by its cost
                eta = (time.time() - t0) * (sum(cost.values()) - done_cost) / max(done_cost, 1)
                print(f"tasks_done={len(futures) - len(pending)}/{len(futures)} "
                      f"progress={100 * done_cost / sum(cost.values()):.1f}% elapsed={fmt_time(time.time() - t0)} "
                      f"eta={fmt_time(eta)}", flush=True)
        results = {t: f.result() for t, f in futures.items()}
    except BaseException as e:
        stop_all(pool, futures, args.tasks, e)                     # raises Interrupted, or re-raises the error
    pool.shutdown()
    if any(r.get("save_failed") for r in results.values()):
        memn2n_models.SAVE_FAILED.append(True)
    return {t: results[t]["errors"][t] for t in args.tasks}


def stop_all(pool, futures, tasks, e):
    """Ctrl-C / SIGTERM (or a task's error `e`, raised again): stop every task, each saving what it trained,
    and say which tasks finished, which saved what, and which stopped without a model."""
    for p in multiprocessing.active_children():                   # SIGTERM reaches only us: pass it on
        os.kill(p.pid, signal.SIGINT)
    with SIGNALS.held():
        pool.shutdown(wait=True, cancel_futures=True)
    if not SIGNALS.received:
        raise e
    done = {t: f.result() for t, f in futures.items() if f.done() and not f.cancelled() and not f.exception()}
    finished = [t for t in tasks if done.get(t, {}).get("status") == "done"]
    saved = [f"{t} ({done[t]['saved']})" for t in tasks if done.get(t, {}).get("saved")]
    rest = [t for t in tasks if t not in finished and not done.get(t, {}).get("saved")]
    print(f"memn2n.py: interrupted: finished tasks: {' '.join(map(str, finished)) or 'none'}; saved what "
          f"they had trained: {', '.join(saved) or 'none'}; stopped without a model: "
          f"{' '.join(map(str, rest)) or 'none'}", file=sys.stderr, flush=True)
    raise memn2n_models.Interrupted(reported=True) from None


def print_table(errors, joint):
    """Each task's test error beside the paper's (Table 1, PE LS RN); returns the failed tasks (> 5 %)."""
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


def print_result(errors, args, wall):
    """The RESULT line (after the table against the paper's, for several tasks); --runs adds its protocol."""
    protocol = "" if args.runs == 1 or args.load else f" runs={args.runs} select={args.select}"
    protocol += " val_folds=1" if protocol and args.val_folds else ""
    if len(errors) == 1:
        (t, e), = errors.items()
        print(f"RESULT task={t} test_acc={1 - e / 100:.3f} test_error={e:.1f} wall_s={wall:.1f}{protocol}")
    else:
        failed = print_table(errors, args.joint)
        print(f"RESULT tasks={len(errors)} mean_error={np.mean(list(errors.values())):.1f} "
              f"failed={failed} wall_s={wall:.1f}{protocol}")
