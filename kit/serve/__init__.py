"""kit serve --local and kit bench: the in-image server and benchmark, run on this host or in the runtime image."""
