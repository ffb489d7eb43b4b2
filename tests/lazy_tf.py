"""`from lazy_tf import tf`: TensorFlow imported on first use, not at collection,
so test modules marked `tf` can be collected (then deselected with -m "not tf")
on an interpreter without TensorFlow (the Python 3.8 host run, see README)."""


class _LazyTensorFlow(object):
    def __getattr__(self, name):
        import tensorflow

        return getattr(tensorflow, name)


tf = _LazyTensorFlow()
