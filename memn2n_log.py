"""What memn2n.py's training reports after each epoch: one key=value line on stdout (every --log-every
epochs, and after the last) and, for the first run of a model, TensorBoard scalars (losses/, charts/)."""


class EpochLog:
    def __init__(self, writer, every, prefix=""):
        self.writer, self.every, self.prefix = writer, every, prefix

    def __call__(self, epoch, stats, last=False):
        """stats: lr, train_loss, train_acc, val_loss, val_acc, examples_per_sec of epoch `epoch`."""
        if epoch % self.every == 0 or last:
            s = stats
            print(f"{self.prefix}epoch={epoch} lr={s['lr']:g} train_loss={s['train_loss']:.4f} "
                  f"train_acc={s['train_acc']:.3f} val_loss={s['val_loss']:.4f} "
                  f"val_acc={s['val_acc']:.3f} examples_per_sec={s['examples_per_sec']:.0f}", flush=True)
        if self.writer is not None:
            import tensorflow.compat.v1 as tf
            for k, v in stats.items():
                tag = ("losses/" if "loss" in k else "charts/") + k
                self.writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=v)]), epoch)

    def line(self, text):
        print(f"{self.prefix}{text}", flush=True)


def run_logs(writer, every, prefix, runs):
    """r -> the EpochLog of run r of `runs`: its lines prefixed run=r+1 when there are several, and
    TensorBoard scalars for the first run only."""
    def log_of(r):
        return EpochLog(writer if r == 0 else None, every, prefix + (f"run={r + 1} " if runs > 1 else ""))
    return log_of


def open_writer(log_dir, graph):
    """A TensorBoard writer for `log_dir`, with the graph."""
    import tensorflow.compat.v1 as tf
    return tf.summary.FileWriter(log_dir, graph)
