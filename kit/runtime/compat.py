"""Can this TensorFlow load this SavedModel? Asked before loading it.

A SavedModel records the TensorFlow that wrote it (meta_info_def
.tensorflow_version) and the ops its graphs use. A newer TensorFlow may write
ops an older one has never heard of: TF 2.17 saves variables with
DisableCopyOnRead, which TF 2.3.1 (JetPack 4.4.1's, and the twin's) lacks, so
tf.saved_model.load fails there with "Op type not registered". The optimizer
and the server check first, and say which ops, which versions, and the fix.

Python 3.6; TensorFlow is the caller's (imported already).
"""


class ModelTooNew(Exception):
    """The SavedModel uses ops this TensorFlow does not have."""

    def __init__(self, message, hint, missing):
        Exception.__init__(self, message)
        self.message = message
        self.hint = hint
        self.missing = list(missing)


def used_ops(meta_graph):
    """Every op type the meta graph's graph and function library use (calls to its own functions excluded)."""
    ops = set(op.name for op in meta_graph.meta_info_def.stripped_op_list.op)
    graph = meta_graph.graph_def
    functions = set(f.signature.name for f in graph.library.function)
    ops.update(node.op for node in graph.node)
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    return sorted(op for op in ops if op and op not in functions)


def missing_ops(meta_graph):
    """The op types the meta graph uses that this process's TensorFlow has not registered."""
    from tensorflow.python.framework import op_def_registry  # noqa: lazy on purpose

    return [op for op in used_ops(meta_graph) if op_def_registry.get(op) is None]


def check(tf_version, model_dir, meta_graph):
    """Raise ModelTooNew when this TensorFlow lacks ops the model uses."""
    missing = missing_ops(meta_graph)
    if not missing:
        return
    saved_by = meta_graph.meta_info_def.tensorflow_version or "an unrecorded version"
    message = ("the SavedModel in %s uses %s that TensorFlow %s does not have: %s; it was saved by TensorFlow %s"
               % (model_dir, "ops" if len(missing) > 1 else "an op", tf_version, ", ".join(missing), saved_by))
    hint = ("save the model again with TensorFlow %s, the version it will run on (a SavedModel from an older "
            "TensorFlow loads on newer ones, not the other way round)" % tf_version)
    raise ModelTooNew(message, hint, missing)
