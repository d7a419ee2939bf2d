"""On-box runtime: install, rollback, status, watch-folder daemon, audit log, metrics."""
