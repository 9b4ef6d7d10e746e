"""TensorFlow's start-up for memn2n.py and a3c.py: TF1-style graphs, and none of its C++ chatter.

TF 2.21 prints lines such as oneDNN notices, `cudart_stub` and `failed call to cuInit` on a
machine without a GPU before any Python log level applies. They are hidden by pointing file
descriptor 2 at /dev/null while TensorFlow loads and while a session starts; errors raised
after that show as usual."""
import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """Hide file descriptor 2 (C++ code writes there directly) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_tf1(xla_auto_jit=False):
    """Import tensorflow.compat.v1 quietly, in graph mode; XLA's CPU auto-clustering flags must be
    set before TensorFlow loads. Returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for flag in ("--tf_xla_auto_jit=2", "--tf_xla_cpu_global_jit") if xla_auto_jit else ():
        if flag not in os.environ.get("TF_XLA_FLAGS", "").split():  # once, however often main() runs
            os.environ["TF_XLA_FLAGS"] = f"{os.environ.get('TF_XLA_FLAGS', '')} {flag}".strip()
    with quiet_stderr():
        import tensorflow.compat.v1 as tf
    tf.get_logger().setLevel("ERROR")                              # partial_run & co. are "deprecated" but present
    tf.disable_v2_behavior()                                       # placeholders, Session, v1 optimizers: the slides'
    return tf
