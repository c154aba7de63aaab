"""The operator dashboard: a static page under `/dashboard` that drives the admin API."""
