"""Deploying a finished run: the bundle, prediction on new radiographs, out-of-distribution flags,
the ``hrnet-cxr`` command."""
