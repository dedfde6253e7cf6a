"""The Ray backend: the front end's side, the driver process, their link, and the task on a node."""
