"""Reports: the tables and figures a reader sees, one number-formatting module (``formats``), and the
summary and the model card, written from jinja2 templates (``render``, ``templates/``)."""
