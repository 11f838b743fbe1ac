"""Reports: Jinja markdown templates per system and the renderer that fills them from the
saved artifacts (metrics.json, training_log.json, config.json, array shapes)."""
