"""Reports: the tables and figures a reader sees, one number formatter, the summary and the model card."""
