"""Evidence: metrics, training dynamics, the claims ledger, shortcut audits, trivial floors and the
tables recomputed from a run's stored predictions."""
