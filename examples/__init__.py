"""Runnable Foreman examples; ``foreman-worker --app examples.order_pipeline`` runs one."""
