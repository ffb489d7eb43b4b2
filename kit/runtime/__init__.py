"""Code that runs inside the L4T images: Python 3.6, TensorFlow >= 2.3 API,
numpy and the standard library only. Checked by `vermin -t=3.6-` in the tests."""
