"""HTTP: the views, the page, sign-in, owners, errors and the connection helpers."""
