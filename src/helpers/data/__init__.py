"""Data: the manifest schema, source adapters, generated phantoms, folds and duplicate checks."""
