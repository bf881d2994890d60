"""The pure-ASGI middlewares, one per module. Each works alone or inside a Gate."""
