"""TF1 sessions: one for many Python threads that each run small graphs (a3c.py's actor-learners), and one
that runs a small graph in the calling thread only (memn2n.py)."""
from tf_setup import quiet_stderr


def session(threads, target="", config=None):
    """Every run() executes its graph in the calling thread (RunOptions.inter_op_thread_pool = -1):
    for these small graphs the hand-over to TF's own pool cost more CPU than the ops (docs/a3c-results.md, speed).
    One op is never split over cores (intra-op 1): the `threads` Python threads keep the cores busy."""
    import tensorflow.compat.v1 as tf                      # loaded already by the caller (tf_setup.load_tf1)

    class Session(tf.Session):
        def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
            return super().run(fetches, feed_dict, options or tf.RunOptions(inter_op_thread_pool=-1), run_metadata)

    config = config or tf.ConfigProto()
    config.intra_op_parallelism_threads = 1
    config.inter_op_parallelism_threads = max(2, threads + 1)
    with quiet_stderr():                                   # "failed call to cuInit" on machines without a GPU
        return Session(target, config=config)


def single_thread_session(graph, xla):
    """memn2n.py's session: every op in the calling thread, one op never spread over cores (the --task
    pool runs one process per core), XLA fusing the graph's many small ops if `xla`."""
    import tensorflow.compat.v1 as tf                      # loaded already by the caller (tf_setup.load_tf1)
    # a negative inter-op count runs every op in the calling thread: for a graph this small the hand-over
    # to TF's pool cost about 0.1 ms of a 0.4-1.1 ms training step
    config = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=-1)
    if xla:  # fuses the many small ops of this model; per-op overhead dominates otherwise
        config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
        # with XLA fusing the graph, grappler's rewrites only add to each new run signature's set-up
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    with quiet_stderr():                                   # "failed call to cuInit" on machines without a GPU
        return tf.Session(graph=graph, config=config)
