"""Jobs: their store and files, intake, queue and runner, finishing, cache, clean-up, metrics and waits."""
