"""hrnet-cxr helpers: the logic behind the notebooks.

Each module names the paper section it implements. Notebooks call these functions and show the
results; nothing here keeps state between calls.
"""
__version__ = "0.1.0"
