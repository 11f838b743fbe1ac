"""Reports: the renderer of every system's ``report.md.j2`` (``render``) and the project report
over all systems (``index``, ``templates/index.md.j2``)."""
